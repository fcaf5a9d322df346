"""The Models page's upload form: what loads, the file checks, the preprocessing fields, and loading an upload with
the backend's safe loader into this session's store (ui/user_models.py)."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass

import streamlit as st

from explainers.errors import ModelLoadError
from explainers.models import ModelBundle
from explainers.models.architectures import architectures, preprocessing_defaults
from explainers.models.inputs import MAX_MODEL_BYTES, MAX_MODEL_MB
from explainers.models.signatures import ArchitectureMismatchError
from explainers.models.user import is_torchscript, load_user_model, trust_enabled

from . import state, user_models
from .errors import show_error
from .models import pick_device

MODEL_TYPES = ["safetensors", "pt", "pth", "bin", "onnx", "zip"]
# MAX_MODEL_MB is the backend's limit (load_user_model enforces it); server.maxUploadSize in .streamlit/config.toml
# matches it, and too_large says it here before the upload reaches the loader.
ACCEPTED = (  # (file, loaded as, notes): the Models page's table
    ("`.safetensors`", "a state dict for the architecture you pick", "preferred: plain tensors, nothing to execute"),
    ("`.pt` / `.pth` / `.bin` state dict", "the same, read with `torch.load(weights_only=True)`",
     "only tensors and containers are read"),
    ("`.zip` of a Hugging Face folder", "`AutoModelForImageClassification`, offline",
     "`config.json` + `model.safetensors`; labels from `id2label`, preprocessing from its processor config"),
    ("`.onnx`", "converted to PyTorch (onnx2torch)", "gradients and hooks work; an unsupported operator is named"),
    ("A detector's or segmenter's state dict", "for the torchvision architecture you pick (`fasterrcnn_…`, "
     "`retinanet_…`, `ssd…`, `deeplabv3_…`, `fcn_…`, `lraspp_…`)",
     "class names optional (COCO's where the class count is COCO's); explain its boxes or regions on every page"),
    ("TorchScript `.pt`", "refused unless the server trusts code",
     "a classifier, or a detector or segmenter in torchvision's output convention; it runs code; hooks do not work "
     "on it, so CAMs and guided methods are not offered"),
    ("A full pickled model (`torch.save(model)`)", "**never loaded**",
     "unpickling can run any code. Export the weights: `torch.save(model.state_dict(), 'weights.pt')` or "
     "`safetensors.torch.save_file(model.state_dict(), 'weights.safetensors')`"),
)
# a list, not a table: three columns of prose overflow a 900 px window
ACCEPTED_HELP = "\n".join(
    [*(f"- {a}: {b}. {c[0].upper()}{c[1:]}." for a, b, c in ACCEPTED), "",
     "The class count comes from the last layer's weights; class names (optional) must match it. Weights that do "
     "not fit the architecture you picked are compared with every torchvision architecture: the one they fit is "
     f"named and offered. Files over {MAX_MODEL_MB} MB are refused."]
)


TORCH_SUFFIXES = ("pt", "pth", "bin")
TORCHSCRIPT = "torchscript"


def file_kind(name: str, upload=None) -> str:
    """"state_dict", "torchscript", "onnx" or "huggingface", from the file name and, for a ``.pt``/``.pth``/
    ``.bin`` ``upload``, the names inside its zip archive: a TorchScript archive is told apart by its content, as
    the loader does it (``torch.jit.save`` writes ``<root>/code/…`` and ``<root>/constants.pkl``, ``torch.save``
    neither), so it needs no architecture. The loader checks the content again."""
    suffix = name.rsplit(".", 1)[-1].lower()
    if suffix in TORCH_SUFFIXES and upload is not None and _is_torchscript_archive(upload):
        return TORCHSCRIPT
    return {"onnx": "onnx", "zip": "huggingface"}.get(suffix, "state_dict")


def _is_torchscript_archive(upload) -> bool:
    """Whether the uploaded file (seekable) is a zip archive holding TorchScript code; only its directory is
    read, and the file is left at its start."""
    try:
        upload.seek(0)
        if not zipfile.is_zipfile(upload):
            return False
        upload.seek(0)
        with zipfile.ZipFile(upload) as archive:
            names = archive.namelist()
    except (OSError, zipfile.BadZipFile):
        return False
    finally:
        upload.seek(0)
    return is_torchscript(names)


def too_large(upload) -> str | None:
    size = getattr(upload, "size", None) or len(upload.getvalue())
    if size > MAX_MODEL_BYTES:
        return f"{upload.name} is {size / 2**20:.0f} MB; model files up to {MAX_MODEL_MB} MB are accepted."
    return None


@st.cache_data(show_spinner=False)
def architecture_choices() -> list[str]:
    return architectures()


def _numbers(text: str, name: str) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in text.replace(";", ",").split(","))
    except ValueError:
        values = ()
    if len(values) != 3:
        raise ModelLoadError(f"{name} must be three numbers separated by commas, one per channel (R, G, B); got "
                             f"{text!r}")
    return values


def preprocessing_fields(kind: str | None, architecture: str | None) -> dict:
    """Input size, mean and std the user may set; {} keeps the model's own defaults (architecture, timm or
    Hugging Face config, ONNX input shape)."""
    if not st.toggle("Set the input size, mean and std myself", key=state.MODELS_CUSTOM,
                     help="By default they come from the architecture (torchvision weights, timm config), the "
                     "Hugging Face processor config, or the ONNX input shape."):
        return {}
    defaults = preprocessing_defaults(architecture) if kind == "state_dict" and architecture else \
        preprocessing_defaults("resnet18")
    suffix = architecture or kind or ""
    a, b, c = st.columns(3)
    size = a.number_input("Input size (px)", 8, 1024, int(defaults["input_size"]), key=f"{state.MODELS_SIZE}.{suffix}")
    mean = b.text_input("Mean (R, G, B)", ", ".join(f"{v:.4g}" for v in defaults["mean"]),
                        key=f"{state.MODELS_MEAN}.{suffix}")
    std = c.text_input("Std (R, G, B)", ", ".join(f"{v:.4g}" for v in defaults["std"]),
                       key=f"{state.MODELS_STD}.{suffix}")
    return {"input_size": int(size), "mean": _numbers(mean, "mean"), "std": _numbers(std, "std")}


@dataclass(frozen=True)
class KeptLabels:
    """The class-names file as the session keeps it: Streamlit drops an uploader's file when its page is left."""

    name: str
    data: bytes


def _labels_changed() -> None:
    """The user added or removed the class-names file: keep the new one, or forget it."""
    file = st.session_state.get(state.MODELS_LABELS)
    if file is None:
        st.session_state.pop(state.MODELS_KEPT_LABELS, None)
    else:
        st.session_state[state.MODELS_KEPT_LABELS] = KeptLabels(file.name, file.getvalue())


def _forget_labels() -> None:
    st.session_state.pop(state.MODELS_KEPT_LABELS, None)


def labels_field() -> tuple[bytes, str] | None:
    """The class-names uploader; its file outlives a page switch (kept in the session), shown by name once the
    uploader comes back empty. Returns (bytes, file name) or None."""
    file = st.file_uploader("Class names (optional)", type=["txt", "json"], key=state.MODELS_LABELS,
                            on_change=_labels_changed,
                            help="A .txt with one name per line, or JSON: a list, or a dict from index to name. "
                            "Without it, classes are 'class 0', 'class 1', …")
    if file is not None:
        st.session_state[state.MODELS_KEPT_LABELS] = KeptLabels(file.name, file.getvalue())
    kept = st.session_state.get(state.MODELS_KEPT_LABELS)
    if kept is None:
        return None
    if file is None:  # back from another page: the uploader cannot show it again
        text, button = st.columns([4, 1], vertical_alignment="center")
        text.caption(f"Class names: **{kept.name}** (kept from before)")
        button.button("Forget", key=state.MODELS_FORGET_LABELS, on_click=_forget_labels, icon=":material/delete:",
                      help="Load without class names, or upload another file above.")
    return kept.data, kept.name


def load_upload(upload, architecture: str | None, labels: tuple[bytes, str] | None,
                preprocessing: dict) -> user_models.UserModel | None:
    """Load the uploaded file with the backend's safe loader and keep it in this session. Weights that fit
    another architecture than the one picked are remembered (``offer_guesses`` shows them) and None returned."""
    st.session_state.pop(state.MODELS_MISMATCH, None)
    try:
        bundle = load_user_model(
            upload.getvalue(), architecture, filename=upload.name, labels=labels,
            trust_code=trust_enabled(), device=pick_device(), **preprocessing,
        )
    except ArchitectureMismatchError as exc:
        if not exc.guesses:
            raise
        st.session_state[state.MODELS_MISMATCH] = (upload.file_id, architecture, exc)
        return None
    return user_models.add(bundle, upload.name, getattr(bundle, "notes", []),
                           architecture if file_kind(upload.name, upload) == "state_dict" else None)


def _use_guess(architecture: str) -> None:
    st.session_state[state.MODELS_ARCH] = architecture
    st.session_state[state.MODELS_LOAD_NOW] = True


def offer_guesses(upload, architecture: str | None) -> None:
    """The last load's mismatch, while the same file and architecture are picked: the error, and a button per
    architecture the weights fit that loads them as that one."""
    found = st.session_state.get(state.MODELS_MISMATCH)
    if found is None:
        return
    file_id, picked, exc = found
    if upload is None or upload.file_id != file_id or architecture != picked:
        st.session_state.pop(state.MODELS_MISMATCH, None)
        return
    show_error(exc)
    for guess in exc.guesses[:3]:
        st.button(f"Load as {guess}", key=f"{state.MODELS_USE_GUESS}.{guess}", type="primary",
                  on_click=_use_guess, args=(guess,), icon=":material/auto_fix_high:")


def load_now() -> bool:
    """Whether a guess was just picked: the page loads with it at once."""
    return bool(st.session_state.pop(state.MODELS_LOAD_NOW, False))


def describe_bundle(bundle: ModelBundle) -> str:
    names = ", ".join(bundle.categories[:5]) + (" …" if len(bundle.categories) > 5 else "")
    return (f"{len(bundle.categories)} classes ({names}) · input {bundle.input_size}×{bundle.input_size} · "
            f"default layer {bundle.default_layer or 'none'} · {len(bundle.layers)} spatial layers")
