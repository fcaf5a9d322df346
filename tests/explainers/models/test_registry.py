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
    DIGITS_MODEL,
    DIGITS_MODELS,
    ensure_weights,
    list_models,
    load_model,
    model_info,
)


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
    rest = names[len(offline) + len(CURATED) :]
    assert rest == sorted(rest)
    assert len(names) == len(set(names))
    assert set(names) == {*offline, *torchvision_names}


def test_model_info_without_building(monkeypatch):
    monkeypatch.setattr(torchvision.models, "get_model", lambda *a, **k: pytest.fail("model_info built a model"))
    for name in list_models():
        if name in DIGITS_MODELS:  # ten digits at 32x32, tested in test_digits.py and test_vit_digits.py
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
