"""The architectures a user's weights load into, and their preprocessing defaults (no model built, nothing
downloaded)."""

from __future__ import annotations

import math

import pytest
import timm
import torchvision
from PIL import Image

from explainers.errors import ModelLoadError
from explainers.models import default
from explainers.models.architectures import architectures, family, preprocessing_defaults, split


def test_every_family_is_offered_once():
    names = architectures()
    assert names[0] == "efficientnet_lite0" and len(names) == len(set(names))
    assert set(torchvision.models.list_models(module=torchvision.models)) <= set(names)
    assert "resnet10t" in names and "timm:resnet18" in names  # timm's own; timm's twin of a torchvision name
    assert family("resnet18") == "torchvision" and split("timm:resnet18") == ("timm", "resnet18")
    assert family("efficientnet_lite0") == "default" and family("resnet10t") == "timm"
    assert split("timm:efficientnet_lite0") == ("timm", "efficientnet_lite0")  # timm's own, not ours


def test_defaults_come_from_the_libraries():
    weights = torchvision.models.get_model_weights("convnext_tiny").DEFAULT.transforms()
    found = preprocessing_defaults("convnext_tiny")
    assert found["input_size"] == weights.crop_size[0] and found["resize_size"] == weights.resize_size[0]
    assert found["mean"] == tuple(weights.mean) and found["std"] == tuple(weights.std)
    config = timm.get_pretrained_cfg("vit_base_patch16_224").to_dict()
    vit = preprocessing_defaults("vit_base_patch16_224")
    assert vit["mean"] == tuple(config["mean"]) == (0.5, 0.5, 0.5) and vit["input_size"] == config["input_size"][-1]
    assert vit["interpolation"] == Image.Resampling.BICUBIC
    assert vit["resize_size"] == math.floor(224 / config["crop_pct"])  # as timm's eval transform
    lite = preprocessing_defaults("efficientnet_lite0")
    assert lite["mean"] == default.MEAN and lite["std"] == default.STD and lite["input_size"] == default.INPUT_SIZE


def test_unknown_architecture_names_close_ones():
    with pytest.raises(ModelLoadError, match=r"unknown architecture 'resnet19x'.*did you mean 'resnet18'"):
        family("resnet19x")
