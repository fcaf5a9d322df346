"""The checks of what a user gives with a model file (explainers.models.inputs): the same bad device, input size,
mean, std or class names gives the same ModelLoadError from every loader, naming what was expected and what came
instead."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from explainers.errors import ModelLoadError
from explainers.models.foreign import load_hf_classifier, load_onnx_classifier
from explainers.models.user import load_user_model

from ..helpers import VIT_LABELS, export_onnx, save_tiny_vit

CLASSES = len(VIT_LABELS)  # every model below has as many classes as the tiny ViT
BAD = [
    ({"device": "gpu:0"}, "expected a torch device such as 'cpu' or 'cuda:0', got 'gpu:0'"),
    ({"device": "cuda:99"}, "expected 'cpu' or a CUDA device this machine has"),
    ({"input_size": 4}, "expected input_size to be a whole number of pixels from 8 to 1024 (square inputs), got 4"),
    ({"input_size": 2000}, "from 8 to 1024 (square inputs), got 2000"),
    ({"input_size": 32.0}, "got 32.0"),
    ({"input_size": (32, 48)}, "got (32, 48)"),
    ({"mean": (0.5, 0.5)}, "expected mean to be 3 numbers (red, green, blue) or one for all three, got (0.5, 0.5)"),
    ({"mean": "0.5"}, "expected mean to be 3 numbers"),
    ({"mean": (123.7, 116.3, 103.5)}, "expected every mean in [0, 1], for pixels scaled to [0, 1], got (123.7, "
                                      "116.3, 103.5); values on the 0-255 scale must be divided by 255"),
    ({"std": (0.2, 0.0, 0.2)}, "expected every std in (0, 1], for pixels scaled to [0, 1], got (0.2, 0.0, 0.2)"),
    ({"std": float("nan")}, "expected std to be 3 numbers"),
    ({"labels": ["a", " "]}, "expected class 1 of labels to be a non-empty name, got ' '"),
    ({"labels": [f"c{i}" for i in range(CLASSES + 1)]},
     f"expected {CLASSES} class names, one per output of the model, got {CLASSES + 1} labels"),
    ({"labels": 7}, "expected labels as a list of names, a .txt/.json path or bytes, got int"),
]


@pytest.fixture(scope="module")
def loaders(tmp_path_factory):
    """{name: load(**settings)}: a torchvision state dict, an ONNX graph (directly and through load_user_model) and
    a Hugging Face folder, each with CLASSES classes."""
    folder = tmp_path_factory.mktemp("loaders")
    torch.manual_seed(0)
    weights = folder / "squeezenet.pt"
    torch.save(torchvision.models.squeezenet1_1(weights=None, num_classes=CLASSES).state_dict(), weights)
    small = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(8, CLASSES))
    graph = export_onnx(small, folder / "small.onnx", 32)
    vit, _ = save_tiny_vit(folder / "tiny-vit")
    return {
        "state dict": lambda **given: load_user_model(weights, "squeezenet1_1", **given),
        "ONNX": lambda **given: load_onnx_classifier(graph, **given),
        "ONNX through load_user_model": lambda **given: load_user_model(graph, **given),
        "Hugging Face": lambda **given: load_hf_classifier(vit, **given),
    }


@pytest.mark.parametrize(("bad", "message"), BAD, ids=[f"{next(iter(b))}={next(iter(b.values()))!r}" for b, _ in BAD])
def test_the_same_bad_input_gives_the_same_error_from_every_loader(loaders, bad, message):
    errors = {}
    for name, load in loaders.items():
        with pytest.raises(ModelLoadError) as caught:
            load(**bad)
        errors[name] = str(caught.value)
    assert len(set(errors.values())) == 1, errors
    assert message in errors["state dict"]


def test_good_input_loads_on_every_loader(loaders):
    for name, load in loaders.items():
        bundle = load(labels=[f"c{i}" for i in range(CLASSES)], mean=0.5, std=[0.25] * 3, device="cpu")
        assert bundle.categories[-1] == f"c{CLASSES - 1}", name
        assert torch.allclose(bundle.normalize(torch.full((1, 3, 1, 1), 0.75)), torch.ones(1, 3, 1, 1)), name
