"""explainers.load_user_model (explainers.models.user): state dicts for known architectures, TorchScript only when
trusted, and every refusal (unsafe pickles, damaged files, wrong architectures, wrong labels). Every file is made
here; the checks of the settings given with a file are in test_inputs.py."""

from __future__ import annotations

import io
import json
import pathlib
import pickle
import warnings
import zipfile

import pytest
import safetensors.torch
import torch
import torchvision
from PIL import Image
from torch import nn

import explainers
from explainers import ModelBundle, ModelLoadError, SaliencyError, load_user_model
from explainers.layers import layer_catalogue
from explainers.models import default as default_model
from explainers.models import foreign, user
from explainers.models.base import affine_normalizer
from explainers.models.efficientnet_lite import EfficientNetLite0

from ...conftest import sample_path

pytestmark = [
    pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning"),
    pytest.mark.filterwarnings("ignore:Detected pickle protocol 4:UserWarning"),
]


def _input(bundle: ModelBundle) -> torch.Tensor:
    return bundle.preprocess(Image.open(sample_path("cat.png")))


def _reference(module: nn.Module, bundle: ModelBundle) -> ModelBundle:
    """A bundle around the original module with the loaded bundle's preprocessing and layer."""
    size = bundle.input_size
    return ModelBundle(name="reference", model=module.eval(), categories=bundle.categories, input_size=size,
                       normalize=bundle.normalize, denormalize=bundle.denormalize,
                       layers=layer_catalogue(module, (1, 3, size, size)), default_layer=bundle.default_layer)


def _assert_same_model(bundle: ModelBundle, module: nn.Module) -> None:
    x = _input(bundle)
    with torch.no_grad():
        torch.testing.assert_close(bundle.model(x), module.eval()(x), atol=1e-4, rtol=0)
    ours = explainers.explain(bundle, x, "gradcam", 0)
    theirs = explainers.explain(_reference(module, bundle), x, "gradcam", 0, layer=bundle.default_layer)
    assert ours.layer == theirs.layer == bundle.default_layer
    torch.testing.assert_close(ours.attribution, theirs.attribution, atol=1e-5, rtol=0)


@pytest.fixture(scope="module")
def resnet18_10():
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None, num_classes=10).eval()


@pytest.fixture(scope="module")
def resnet18_file(resnet18_10, tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "resnet18.pt"
    torch.save(resnet18_10.state_dict(), path)
    return path


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_a_torchvision_state_dict_loads_into_the_same_model(resnet18_10, tmp_path, suffix):
    path = tmp_path / f"my resnet{suffix}"
    if suffix == ".safetensors":
        safetensors.torch.save_file(resnet18_10.state_dict(), path)
    else:
        torch.save(resnet18_10.state_dict(), path)
    bundle = load_user_model(path, "resnet18", device="cpu")
    assert bundle.categories == [f"class {i}" for i in range(10)]  # the class count comes from fc.weight
    assert (bundle.input_size, bundle.resize_size, bundle.default_layer) == (224, 256, "layer4")
    assert bundle.name.startswith("user:my resnet:") and not bundle.model.training
    assert any("No labels" in note for note in bundle.notes)
    _assert_same_model(bundle, resnet18_10)


@pytest.mark.parametrize("architecture", ["squeezenet1_1", "regnet_x_400mf"])
def test_heads_that_are_convolutions_and_builders_that_need_real_tensors(architecture, tmp_path):
    torch.manual_seed(4)  # squeezenet's head is a 1x1 conv; regnet's builder cannot run on the meta device
    module = torchvision.models.get_model(architecture, weights=None, num_classes=6).eval()
    torch.save(module.state_dict(), tmp_path / "w.pt")
    bundle = load_user_model(tmp_path / "w.pt", architecture, input_size=96)
    x = torch.rand(1, 3, 96, 96)
    assert len(bundle.categories) == 6
    with torch.no_grad():
        torch.testing.assert_close(bundle.model(x), module(x), atol=1e-4, rtol=0)


def test_bytes_file_objects_wrappers_and_prefixes_load_too(resnet18_10, tmp_path):
    state = resnet18_10.state_dict()
    buffer = io.BytesIO()
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}, buffer)
    data = buffer.getvalue()
    from_bytes = load_user_model(data, "resnet18", filename="checkpoint.pth")
    upload = io.BytesIO(safetensors.torch.save(state))
    upload.name = "upload.safetensors"
    from_file = load_user_model(upload, "resnet18", labels=[f"c{i}" for i in range(10)])
    x = _input(from_bytes)
    with torch.no_grad():
        torch.testing.assert_close(from_bytes.model(x), resnet18_10(x), atol=1e-4, rtol=0)
        torch.testing.assert_close(from_file.model(x), resnet18_10(x), atol=1e-4, rtol=0)
    assert from_file.categories[9] == "c9" and from_file.notes == []
    # the name follows the content: the same bytes give the same name, other weights another one
    assert load_user_model(data, "resnet18", filename="checkpoint.pth").name == from_bytes.name
    other = {k: v + 1 if k == "fc.bias" else v for k, v in state.items()}
    assert load_user_model(safetensors.torch.save(other), "resnet18", filename="checkpoint.safetensors").name \
        != from_bytes.name
    # a safetensors file under a .pth name is read as safetensors, not handed to the unpickler
    renamed = load_user_model(safetensors.torch.save(state), "resnet18", filename="renamed.pth")
    with torch.no_grad():
        torch.testing.assert_close(renamed.model(x), resnet18_10(x), atol=1e-4, rtol=0)
    with pytest.raises(ModelLoadError, match="filename="):
        load_user_model(data, "resnet18")


def test_a_timm_model_loads_with_timms_preprocessing(tmp_path):
    timm = pytest.importorskip("timm")
    torch.manual_seed(1)
    module = timm.create_model("resnet10t", pretrained=False, num_classes=5).eval()
    path = tmp_path / "tiny.safetensors"
    safetensors.torch.save_file(module.state_dict(), path)
    bundle = load_user_model(path, "resnet10t")
    config = timm.get_pretrained_cfg("resnet10t").to_dict()
    assert len(bundle.categories) == 5
    assert bundle.input_size == config["input_size"][-1] == module.pretrained_cfg["input_size"][-1]
    assert bundle.interpolation == Image.Resampling[config["interpolation"].upper()]
    assert bundle.resize_size == int(config["input_size"][-1] / config["crop_pct"])
    pixels = torch.rand(1, 3, 4, 4)
    mean, std = torch.tensor(config["mean"]).view(1, 3, 1, 1), torch.tensor(config["std"]).view(1, 3, 1, 1)
    torch.testing.assert_close(bundle.normalize(pixels), (pixels - mean) / std)
    _assert_same_model(bundle, module)


def test_the_default_architecture_loads_from_its_state_dict(tmp_path):
    torch.manual_seed(2)
    module = EfficientNetLite0(num_classes=7).eval()
    path = tmp_path / "lite.safetensors"
    safetensors.torch.save_file(module.state_dict(), path)
    bundle = load_user_model(path, "efficientnet_lite0", input_size=192)
    assert len(bundle.categories) == 7 and bundle.input_size == 192
    assert bundle.interpolation == Image.Resampling.BICUBIC
    pixels = torch.rand(1, 3, 2, 2)
    normalize, _ = affine_normalizer(default_model.MEAN, default_model.STD)
    torch.testing.assert_close(bundle.normalize(pixels), normalize(pixels))
    x = _input(bundle)
    with torch.no_grad():
        torch.testing.assert_close(bundle.model(x), module(x), atol=1e-4, rtol=0)


def test_overrides_are_used(resnet18_file):
    bundle = load_user_model(resnet18_file, "resnet18", input_size=128, mean=(0.5, 0.5, 0.5), std=[0.25] * 3)
    assert (bundle.input_size, bundle.resize_size) == (128, 146)
    torch.testing.assert_close(bundle.normalize(torch.full((1, 3, 1, 1), 0.75)), torch.ones(1, 3, 1, 1))
    assert load_user_model(resnet18_file, "resnet18", input_size=(96, 96), mean=0.5, std=0.25).input_size == 96


# ------------------------------------------------------------------------------------------------- refusals


class _CreatesFile:
    """Unpickling this creates ``target``: what a hostile model file would do instead."""

    def __init__(self, target: pathlib.Path):
        self.target = target

    def __reduce__(self):
        return (open, (str(self.target), "w"))


def _torch_zip_with(payload: bytes) -> bytes:
    """A torch.save zip archive whose data.pkl is ``payload``."""
    buffer = io.BytesIO()
    torch.save({"w": torch.zeros(1)}, buffer)
    source, out = zipfile.ZipFile(io.BytesIO(buffer.getvalue())), io.BytesIO()
    with zipfile.ZipFile(out, "w") as target:
        for item in source.infolist():
            target.writestr(item, payload if item.filename.endswith("/data.pkl") else source.read(item))
    return out.getvalue()


def test_a_pickle_that_would_run_code_is_refused_and_never_runs(tmp_path):
    control = tmp_path / "control.txt"
    pickle.loads(pickle.dumps(_CreatesFile(control), protocol=2)).close()  # the payload works when unpickled
    assert control.exists()

    target = tmp_path / "pwned.txt"
    payload = pickle.dumps(_CreatesFile(target), protocol=2)
    legacy = io.BytesIO()
    torch.save(_CreatesFile(target), legacy, _use_new_zipfile_serialization=False)
    variants = [("zip.pt", _torch_zip_with(payload)), ("legacy.pth", legacy.getvalue()), ("plain.pt", payload),
                ("protocol4.pt", pickle.dumps(_CreatesFile(target), protocol=4))]
    for name, data in variants:
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ModelLoadError, match="never loaded") as caught:
            load_user_model(tmp_path / name, "resnet18")
        assert "arbitrary code" in str(caught.value) and "state_dict()" in str(caught.value)
        assert not target.exists(), name


def test_a_whole_pickled_model_is_refused_with_how_to_export(resnet18_10, tmp_path):
    path = tmp_path / "whole.pt"
    torch.save(resnet18_10, path)
    with pytest.raises(ModelLoadError, match="torch.save\\(model\\)") as caught:
        load_user_model(path, "resnet18")
    assert "ResNet" in str(caught.value) and "safetensors.torch.save_file" in str(caught.value)


def test_damaged_empty_and_unknown_files_are_refused(resnet18_10, tmp_path):
    data = safetensors.torch.save(resnet18_10.state_dict())
    for name, content in [("truncated.safetensors", data[:40]), ("header.safetensors", data[:8] + b"#" * 64),
                          ("garbage.pt", b"not a torch file at all")]:
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ModelLoadError, match="damaged"):
            load_user_model(tmp_path / name, "resnet18")
    (tmp_path / "empty.safetensors").write_bytes(b"")
    with pytest.raises(ModelLoadError, match="empty"):
        load_user_model(tmp_path / "empty.safetensors", "resnet18")
    (tmp_path / "weights.h5").write_bytes(b"\x89HDF")
    with pytest.raises(ModelLoadError, match="'.h5'"):
        load_user_model(tmp_path / "weights.h5", "resnet18")
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_user_model(tmp_path / "missing.pt", "resnet18")
    torch.save([torch.zeros(2)], tmp_path / "list.pt")
    with pytest.raises(ModelLoadError, match="state dict"):
        load_user_model(tmp_path / "list.pt", "resnet18")


def test_weights_for_another_architecture_are_listed_key_by_key(resnet18_10, resnet18_file, tmp_path):
    with pytest.raises(ModelLoadError, match="missing key") as caught:
        load_user_model(resnet18_file, "resnet34")
    assert "layer1.2.bn1.bias" in str(caught.value) and "looks like 'resnet18' (all 122 keys" in str(caught.value)

    state = dict(resnet18_10.state_dict(), **{"conv1.weight": torch.zeros(64, 3, 5, 5), "extra.bias": torch.zeros(2)})
    torch.save(state, tmp_path / "odd.pt")
    with pytest.raises(ModelLoadError, match=r"conv1\.weight \(expected \[64,3,7,7\], got \[64,3,5,5\]\)") as caught:
        load_user_model(tmp_path / "odd.pt", "resnet18")
    assert "unexpected key(s): extra.bias" in str(caught.value)

    with pytest.raises(ModelLoadError, match="'resnet18'"):  # an unknown name suggests close ones
        load_user_model(resnet18_file, "resnt18")
    with pytest.raises(ModelLoadError, match="architecture="):
        load_user_model(resnet18_file)


def test_labels_from_lists_and_files_must_match_the_class_count(resnet18_file, tmp_path):
    (tmp_path / "names.txt").write_text("\n".join(f"kind {i}" for i in range(10)) + "\n\n\n")
    assert load_user_model(resnet18_file, "resnet18", labels=tmp_path / "names.txt").categories[-1] == "kind 9"
    (tmp_path / "names.json").write_text(json.dumps({str(i): f"n{i}" for i in reversed(range(10))}))
    assert load_user_model(resnet18_file, "resnet18", labels=tmp_path / "names.json").categories[:2] == ["n0", "n1"]
    listed = json.dumps([f"x{i}" for i in range(10)]).encode()
    assert load_user_model(resnet18_file, "resnet18", labels=listed).categories[3] == "x3"
    as_uploaded = ("\n".join(f"u{i}" for i in range(10)).encode(), "names.txt")  # (content, name), as the UI passes
    assert load_user_model(resnet18_file, "resnet18", labels=as_uploaded).categories[0] == "u0"

    with pytest.raises(ModelLoadError, match="expected 10 class names.*got 3 labels"):
        load_user_model(resnet18_file, "resnet18", labels=["a", "b", "c"])
    (tmp_path / "gap.json").write_text(json.dumps({"0": "a", "1": "b", "3": "d"}))
    with pytest.raises(ModelLoadError, match="index 2 is missing"):
        load_user_model(resnet18_file, "resnet18", labels=tmp_path / "gap.json")


# ----------------------------------------------------------------------------------------------- TorchScript


class _SmallNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2))
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        return self.fc(self.features(x).mean(dim=(2, 3)))


@pytest.fixture(scope="module")
def scripted_file(tmp_path_factory):
    torch.manual_seed(3)
    module = _SmallNet().eval()
    path = tmp_path_factory.mktemp("script") / "scripted.pt"
    with warnings.catch_warnings():  # torch deprecates TorchScript (FutureWarning) but still loads it
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.script(module), path)
    return module, path


def test_torchscript_is_refused_unless_trusted(scripted_file, monkeypatch):
    module, path = scripted_file
    monkeypatch.delenv(user.TRUST_ENV, raising=False)
    assert not user.trust_enabled()
    with pytest.raises(ModelLoadError, match="TorchScript") as caught:
        load_user_model(path)
    assert "trust_code=True" in str(caught.value) and user.TRUST_ENV in str(caught.value)
    monkeypatch.setenv(user.TRUST_ENV, "1")
    assert user.trust_enabled()
    with pytest.warns(user.TrustedCodeWarning, match="runs code"):
        assert len(load_user_model(path, input_size=32).categories) == 3


def test_trusted_torchscript_offers_gradient_methods_but_no_cams(scripted_file, monkeypatch):
    module, path = scripted_file
    monkeypatch.delenv(user.TRUST_ENV, raising=False)
    with pytest.warns(user.TrustedCodeWarning, match="runs code"):
        bundle = load_user_model(path, trust_code=True, input_size=32, labels=["a", "b", "c"])
    assert bundle.layers == [] and bundle.default_layer is None and bundle.model.supports_hooks is False
    assert any("Hooks do not work" in note for note in bundle.notes)
    offered = explainers.available_methods(bundle.model)
    assert "vanilla" in offered and "integrated_gradients" in offered and "occlusion" in offered
    assert not {"gradcam", "layercam", "guided_backprop", "guided_gradcam", "attention_rollout"} & set(offered)
    assert "gradcam" in explainers.available_methods(module)  # the plain module keeps them
    x = torch.rand(1, 3, 32, 32)
    ours = explainers.explain(bundle, x, "vanilla", 1)
    theirs = explainers.explain(module, x, "vanilla", 1)
    torch.testing.assert_close(ours.attribution, theirs.attribution, atol=1e-5, rtol=0)
    with pytest.raises(SaliencyError):
        explainers.explain(bundle, x, "gradcam", 1)


# ------------------------------------------------------------------------------- Hugging Face / ONNX dispatch


def test_onnx_files_and_hugging_face_folders_go_to_the_foreign_loaders(monkeypatch, tmp_path):
    calls = []

    def fake(kind):
        def load(path, **options):
            calls.append((kind, pathlib.Path(path), pathlib.Path(path).exists(), options))
            normalize, denormalize = affine_normalizer((0.5,) * 3, (0.5,) * 3)
            return ModelBundle(name="foreign", model=nn.Linear(2, 2), categories=["a", "b"], input_size=32,
                               normalize=normalize, denormalize=denormalize)

        return load

    monkeypatch.setattr(foreign, "load_hf_classifier", fake("hf"))
    monkeypatch.setattr(foreign, "load_onnx_classifier", fake("onnx"))
    bundle = load_user_model(b"onnx bytes", filename="net.onnx", labels=["a", "b"], input_size=64)
    kind, path, existed, options = calls[-1]
    assert (kind, path.name, existed) == ("onnx", "net.onnx", True) and not path.exists()  # a temporary copy
    assert options["labels"] == ["a", "b"] and options["input_size"] == 64
    assert bundle.name.startswith("user:net:")

    folder = tmp_path / "hf-model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    load_user_model(folder)
    assert calls[-1][:2] == ("hf", folder)
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as out:
        out.writestr("hf-model/config.json", "{}")
    load_user_model(archive.getvalue(), filename="hf-model.zip")
    assert calls[-1][0] == "hf" and calls[-1][1].suffix == ".zip"

    (folder / "config.json").unlink()
    with pytest.raises(ModelLoadError, match="config.json"):
        load_user_model(folder)


def test_trust_comes_from_the_config_file_unless_the_environment_says(tmp_path, monkeypatch):
    monkeypatch.delenv(user.TRUST_ENV, raising=False)
    config = tmp_path / "saliency.toml"
    monkeypatch.setenv(user.CONFIG_ENV, str(config))
    assert not user.trust_enabled()  # no file: off
    config.write_text("trust_code = true\n")
    assert user.trust_enabled()
    monkeypatch.setenv(user.TRUST_ENV, "0")
    assert not user.trust_enabled()  # the environment wins both ways
    monkeypatch.setenv(user.TRUST_ENV, "1")
    config.write_text("trust_code = false\n")
    assert user.trust_enabled()
    monkeypatch.delenv(user.TRUST_ENV)
    assert not user.trust_enabled()
    config.write_text('trust_code = "yes"\n')
    with pytest.raises(ModelLoadError, match="must be true or false"):
        user.trust_enabled()


def test_the_shipped_config_does_not_trust_code(monkeypatch):
    monkeypatch.delenv(user.TRUST_ENV, raising=False)
    monkeypatch.delenv(user.CONFIG_ENV, raising=False)
    assert user.config_path().is_file() and not user.trust_enabled()
