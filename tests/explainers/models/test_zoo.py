"""torchvision's zoo (explainers.models.zoo) against a cache the tests fill: exact weights, torchvision's own
builders, damaged and mismatched files, offline mode, and downloads (progress, hash, cancel) that leave nothing
half-written.

No test reaches the network: ``urlopen`` in the zoo module is replaced by a fake (or by one that fails).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
from urllib.error import URLError

import pytest
import torch
import torchvision
from PIL import Image

from explainers.errors import Cancelled, ModelUnavailableError
from explainers.models import CENTER_CROP, ensure_weights, load_model, model_info, zoo

from ...conftest import sample_path

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESNET18_FILE = "resnet18-f37072fd.pth"


pytestmark = pytest.mark.usefixtures("no_downloads")  # any real download fails the test


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
