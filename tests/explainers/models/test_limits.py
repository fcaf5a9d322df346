"""The limits every model loader enforces (issue 17): a zip member capped by its kind and its compression ratio
before anything is extracted, one size limit for every way a model arrives, and outputs that must be finite.

Every bomb and oversized file is built here, in tmp_path: zeros deflate about 1000:1, and a sparse file has a
size without its bytes."""

from __future__ import annotations

import io
import time
import zipfile
from pathlib import Path

import pytest
import safetensors.torch
import torch
import torchvision

from explainers import ModelLoadError, load_user_model
from explainers.models import foreign
from explainers.models.foreign import MAX_COMPRESSION_RATIO, MAX_TEXT_MEMBER_MB, load_hf_classifier
from explainers.models.inputs import MAX_MODEL_BYTES, MAX_MODEL_MB

from ..helpers import save_tiny_vit

MB = 2**20


@pytest.fixture(scope="module")
def hf_vit(tmp_path_factory):
    folder, _ = save_tiny_vit(tmp_path_factory.mktemp("hf") / "tiny-vit")
    return folder


def _zip(path: Path, folder: Path, replace: dict[str, bytes]) -> Path:
    """``folder`` zipped under model/, with the members of ``replace`` (name -> content) swapped in."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for file in sorted(folder.iterdir()):
            zf.writestr(f"model/{file.name}", replace.get(file.name, file.read_bytes()))
    return path


@pytest.fixture
def no_extraction(monkeypatch):
    """Fails the test if any member of any zip is opened for reading: the refusal must come first."""

    opened = zipfile.ZipFile.open

    def refuse(self, name, mode="r", *args, **kwargs):
        if mode == "r":
            raise AssertionError(f"a member of {self.filename} was opened before the zip was refused")
        return opened(self, name, mode, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "open", refuse)


def test_a_json_member_over_its_cap_is_refused_before_extraction_naming_the_member_and_the_limit(
        hf_vit, tmp_path, no_extraction):
    # 50 MB of zeros deflate to ~50 KB: over the JSON cap (checked first, so named) and over the ratio
    bomb = _zip(tmp_path / "bomb.zip", hf_vit, {"config.json": bytes(50 * MB)})
    assert bomb.stat().st_size < MB
    with pytest.raises(ModelLoadError) as caught:
        load_hf_classifier(bomb)
    message = str(caught.value)
    assert "'model/config.json'" in message and f"{MAX_TEXT_MEMBER_MB} MB limit for a JSON or text file" in message
    assert "50.0 MB" in message
    with pytest.raises(ModelLoadError, match=r"'model/config.json'.*MB limit for a JSON or text file"):
        load_user_model(bomb.read_bytes(), filename="bomb.zip")  # the upload path refuses it too, unread


def test_a_member_with_an_extreme_compression_ratio_is_refused_before_extraction(hf_vit, tmp_path, no_extraction):
    weights = bytes(5 * MB)  # under the weights cap, over the ratio floor, ~1000:1
    bomb = _zip(tmp_path / "ratio.zip", hf_vit, {"model.safetensors": weights})
    with pytest.raises(ModelLoadError) as caught:
        load_hf_classifier(bomb)
    message = str(caught.value)
    assert "'model/model.safetensors'" in message and f"over the {MAX_COMPRESSION_RATIO}:1 compression limit" in message
    with pytest.raises(ModelLoadError, match=r"'model/model.safetensors'.*compression limit"):
        load_user_model(bomb.read_bytes(), filename="ratio.zip")


def test_a_weights_member_over_the_model_limit_is_refused_from_its_declared_size(tmp_path, no_extraction):
    info = zipfile.ZipInfo("model/model.safetensors")
    info.file_size, info.compress_size = MAX_MODEL_BYTES + 1, MAX_MODEL_BYTES // 2
    with pytest.raises(ModelLoadError, match=rf"'model/model.safetensors' unpacks to .*{MAX_MODEL_MB} MB limit for a "
                                             "weights file"):
        foreign.check_zip_member(info, "big.zip", foreign.member_limit(info.filename))


def test_a_genuine_small_hugging_face_zip_still_loads(hf_vit, tmp_path):
    archive = _zip(tmp_path / "tiny-vit.zip", hf_vit, {})
    for source in (archive, archive.read_bytes()):
        bundle = load_user_model(source, filename="tiny-vit.zip")
        assert bundle.categories == ["apple", "banana", "cherry", "damson"]


def test_a_file_over_the_model_limit_is_refused_from_its_size_by_every_way_in(tmp_path):
    sparse = tmp_path / "huge.safetensors"
    with open(sparse, "wb") as handle:
        handle.truncate(222 * MB)  # 222 MB on paper, nothing written
    started = time.perf_counter()
    with pytest.raises(ModelLoadError, match=rf"at most {MAX_MODEL_MB} MB, but huge.safetensors is 222 MB"):
        load_user_model(sparse, "resnet18")
    with open(sparse, "rb") as handle, pytest.raises(ModelLoadError, match=rf"at most {MAX_MODEL_MB} MB"):
        load_user_model(handle, "resnet18")
        assert handle.tell() == 0  # refused from its size, nothing read
    onnx = sparse.rename(tmp_path / "huge.onnx")
    with pytest.raises(ModelLoadError, match=rf"at most {MAX_MODEL_MB} MB, but huge.onnx is 222 MB"):
        foreign.load_onnx_classifier(onnx)
    assert time.perf_counter() - started < 5  # no 222 MB was read


def test_an_upload_that_says_its_size_is_refused_before_it_is_read():
    class Upload(io.BytesIO):  # Streamlit's UploadedFile: .name, .size, getvalue()
        name, size = "weights.pt", 201 * MB

        def getvalue(self):
            raise AssertionError("the upload was read before its size was checked")

    with pytest.raises(ModelLoadError, match=rf"at most {MAX_MODEL_MB} MB, but weights.pt is 201 MB"):
        load_user_model(Upload(), "resnet18")


# ---------------------------------------------------------------------------------------------- finite outputs


@pytest.fixture(scope="module")
def resnet18_10():
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None, num_classes=10).eval()


def test_a_state_dict_with_one_nan_bias_is_refused_naming_the_tensor(resnet18_10, tmp_path):
    state = {k: v.clone() for k, v in resnet18_10.state_dict().items()}
    state["fc.bias"][3] = float("nan")
    path = tmp_path / "nan.safetensors"
    safetensors.torch.save_file(state, str(path))
    with pytest.raises(ModelLoadError, match=r"finite weights in nan.safetensors.*fc.bias \(1 of 10 values\)"):
        load_user_model(path, "resnet18")


def test_finite_weights_whose_output_overflows_are_refused_by_the_dry_run(resnet18_10, tmp_path):
    state = {k: v.clone() for k, v in resnet18_10.state_dict().items()}
    state["fc.weight"][[2, 5]] = 3e38  # finite weights, but the sum of 512 features times 3e38 overflows
    path = tmp_path / "overflow.pt"
    torch.save(state, path)
    with pytest.raises(ModelLoadError, match=r"finite logits from the 'resnet18' with overflow.pt on a plain image, "
                                             r"but its output is infinite for rows 0, 1, classes 2, 5 \(2 of 10\)"):
        load_user_model(path, "resnet18")
