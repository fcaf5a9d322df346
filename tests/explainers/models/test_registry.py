"""The model registry (explainers.models): which models exist, in which order, what each needs before it loads,
and unknown names with close ones suggested."""

from __future__ import annotations

import os

import pytest
import torchvision

from explainers.errors import ModelUnavailableError
from explainers.models import (
    CURATED,
    DEFAULT_MODEL,
    DENSE_CURATED,
    DIGITS_MODEL,
    DIGITS_MODELS,
    ensure_weights,
    list_models,
    load_model,
    model_info,
)
from explainers.models.dense_zoo import architectures

DENSE_ARCHITECTURES = architectures()


def test_unknown_model_names_close_matches():
    with pytest.raises(ModelUnavailableError, match="resnet18") as caught:
        load_model("resnet-18")
    assert "'resnet-18'" in str(caught.value)
    with pytest.raises(ModelUnavailableError, match="unknown model"):
        model_info("no_such_net")
    with pytest.raises(ModelUnavailableError, match="expected a model name"):
        load_model(None)
    with pytest.raises(ModelUnavailableError, match="unknown model"):
        ensure_weights("resnet1800")



def test_list_models_order_and_coverage():
    names = list_models()
    torchvision_names = torchvision.models.list_models(module=torchvision.models)
    offline = [DEFAULT_MODEL, *DIGITS_MODELS]
    assert names[: len(offline)] == offline  # the shipped offline models first
    assert DIGITS_MODEL in DIGITS_MODELS and "vit_digits" in DIGITS_MODELS
    assert tuple(names[len(offline) : len(offline) + len(CURATED)]) == CURATED
    dense = {*torchvision.models.list_models(module=torchvision.models.detection),
             *torchvision.models.list_models(module=torchvision.models.segmentation)}
    after = names[len(offline) + len(CURATED) :]
    assert tuple(after[: len(DENSE_CURATED)]) == DENSE_CURATED  # the detectors and segmenters' shortlist
    assert set(after[: len(dense)]) == dense  # then every other one, before the remaining classifiers
    rest = after[len(dense) :]
    assert rest == sorted(rest)
    assert len(names) == len(set(names))
    assert set(names) == {*offline, *torchvision_names, *dense}


def test_model_info_without_building(monkeypatch):
    monkeypatch.setattr(torchvision.models, "get_model", lambda *a, **k: pytest.fail("model_info built a model"))
    for name in list_models():
        if name in DIGITS_MODELS:  # ten digits at 32x32, tested in test_digits.py and test_vit_digits.py
            continue
        if name in DENSE_ARCHITECTURES:  # COCO's classes (VOC's for segmenters); loading: tests/explainers/dense
            info = model_info(name)
            assert info["name"] == name and info["kind"] in ("detection", "segmentation")
            assert info["categories"] >= 2 and info["weights_url"].startswith("https://")  # keypoints: 2
            continue
        info = model_info(name)
        assert info["name"] == name
        assert info["categories"] == 1000
        assert isinstance(info["offline"], bool)
        assert info["input_size"] >= 224
        if name != DEFAULT_MODEL:
            assert isinstance(info["download_mb"], float) and info["download_mb"] > 1
            assert os.path.basename(info["weights_file"]) == os.path.basename(info["weights_url"])
    assert model_info("vit_h_14")["input_size"] == 518
