"""torchvision's detectors and segmenters from the zoo, against a torch hub cache the tests fill with state dicts
they generate (no network): the kind, input size, default layer and layer catalogue of the bundle, the weights
loaded exactly, model_info without building, and a missing file offline refused."""

from __future__ import annotations

import os

import pytest
import torch

from explainers.dense.outputs import DETECTION, SEGMENTATION
from explainers.errors import ModelUnavailableError
from explainers.models import DenseBundle, dense_zoo, list_models, load_model, model_info, zoo
from explainers.models.dense_zoo import OWN_SCORE_THRESHOLD

DETECTOR = "fasterrcnn_mobilenet_v3_large_320_fpn"
SEGMENTER = "lraspp_mobilenet_v3_large"


pytestmark = pytest.mark.usefixtures("no_downloads")  # any real download fails the test


@pytest.fixture
def checkpoints(tmp_path, monkeypatch):
    """An empty TORCH_HOME, offline; returns its checkpoints folder."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    monkeypatch.setenv("SALIENCY_OFFLINE", "1")
    folder = tmp_path / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    return folder


def seed_cache(folder, name: str, seed: int = 5) -> dict[str, torch.Tensor]:
    """A generated state dict of ``name`` under the file name the zoo looks for; BatchNorm statistics spread so
    a mix-up of layers would show."""
    torch.manual_seed(seed)
    state = dense_zoo.construct(name).state_dict()
    for key, value in state.items():
        if key.endswith("running_var"):
            value.uniform_(0.5, 2.0)
        elif key.endswith("running_mean"):
            value.uniform_(-0.2, 0.2)
    filename = os.path.basename(zoo.weights_url(zoo.default_weights(name)))
    torch.save(state, folder / filename)
    return state


def test_the_dense_zoo_is_listed_with_its_kinds():
    names = list_models()
    assert DETECTOR in names and SEGMENTER in names and "resnet18" in names
    assert dense_zoo.kind_of(DETECTOR) == DETECTION and dense_zoo.kind_of(SEGMENTER) == SEGMENTATION
    assert dense_zoo.kind_of("resnet18") is None


def test_a_cached_detector_loads_offline(checkpoints):
    state = seed_cache(checkpoints, DETECTOR)
    info = model_info(DETECTOR)  # builds nothing
    assert info["kind"] == DETECTION and info["offline"] and info["categories"] == 91
    assert info["weights_file"] == str(checkpoints / os.path.basename(info["weights_url"]))
    bundle = load_model(DETECTOR)
    assert isinstance(bundle, DenseBundle) and bundle.kind == DETECTION and bundle.input_size == 320
    assert len(bundle.categories) == 91 and bundle.categories[0] == "__background__"
    loaded = bundle.model.state_dict()
    assert all(torch.equal(loaded[key], value) for key, value in state.items() if key in loaded)
    names = [layer.name for layer in bundle.layers]
    assert bundle.default_layer.startswith("backbone.") and bundle.default_layer in names
    assert "fpn" not in bundle.default_layer  # the backbone's last map, before the pyramid
    assert "backbone.body.16" in names and "backbone.body.6" in names
    assert any(name.startswith("backbone.fpn.layer_blocks") for name in names)
    assert any(name.startswith("backbone.fpn.inner_blocks") for name in names)
    assert not any(name.startswith("roi_heads.box_roi_pool") for name in names)  # per-box, not the image's
    x = torch.rand(1, 3, 320, 320)
    assert torch.equal(bundle.normalize(x), x)  # a detector normalises inside its own transform
    # its own cut-off lowered: the bundle's threshold lists the boxes, and a fading box keeps its low score
    assert bundle.model.roi_heads.score_thresh == OWN_SCORE_THRESHOLD < bundle.score_threshold
    found = bundle.model(x)[0]["scores"]
    assert len(found) and float(found.min()) < 0.05  # torchvision's default cut-off would have dropped these


def test_a_cached_segmenter_loads_offline(checkpoints):
    seed_cache(checkpoints, SEGMENTER)
    assert model_info(SEGMENTER)["kind"] == SEGMENTATION
    bundle = load_model(SEGMENTER)
    assert bundle.kind == SEGMENTATION and bundle.input_size == 520 and len(bundle.categories) == 21
    names = [layer.name for layer in bundle.layers]
    assert bundle.default_layer == "backbone.16" and "classifier" in names
    weights = zoo.default_weights(SEGMENTER).transforms()
    x = torch.rand(1, 3, 4, 4)
    expected = (x - torch.tensor(weights.mean).view(1, 3, 1, 1)) / torch.tensor(weights.std).view(1, 3, 1, 1)
    torch.testing.assert_close(bundle.normalize(x), expected)


@pytest.mark.parametrize("name", [DETECTOR, SEGMENTER])
def test_a_missing_file_offline_is_refused(checkpoints, name):
    info = model_info(name)
    assert not info["offline"] and info["download_mb"] > 0
    with pytest.raises(ModelUnavailableError, match="offline"):
        load_model(name)
    assert not any(checkpoints.iterdir())  # nothing half-written
