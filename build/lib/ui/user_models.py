"""This session's own models (the Models page): kept in the session's state only, so another session never sees
them and they are freed when the session ends.

A user model's id is unique to the session that loaded it (``user:<file>:<token>``), so the process-wide caches
keyed by model id (explanations, predictions) can never hand one session's results to another.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

import streamlit as st

from explainers.models import ModelBundle

from . import state

PREFIX = "user:"


@dataclass
class UserModel:
    id: str
    label: str  # what the model picker shows
    bundle: ModelBundle
    source: str  # the uploaded file's name
    notes: list[str] = field(default_factory=list)  # warnings to show beside it (e.g. methods it cannot run)


def is_user_model(model_id: str | None) -> bool:
    return isinstance(model_id, str) and model_id.startswith(PREFIX)


def _store() -> dict[str, UserModel]:
    return st.session_state.setdefault(state.USER_MODELS, {})


def user_models() -> list[UserModel]:
    return list(_store().values())


def get(model_id: str) -> UserModel | None:
    return _store().get(model_id)


def add(bundle: ModelBundle, source: str, notes: list[str] | None = None) -> UserModel:
    """Keep ``bundle`` in this session under a new id, and select it on the next run."""
    stem = source.rsplit(".", 1)[0][:40] or "model"
    model_id = f"{PREFIX}{stem}:{secrets.token_hex(4)}"
    entry = UserModel(model_id, f"{stem} · your model ({len(bundle.categories)} classes)", bundle, source,
                      list(notes or []))
    _store()[model_id] = entry
    select_next_run(model_id)
    return entry


def remove(model_id: str) -> None:
    """Forget a model; the sidebar falls back to the default model if it was selected."""
    from .explanations import explanation_cache

    _store().pop(model_id, None)
    explanation_cache().forget_model(model_id)


def select_next_run(model_id: str) -> None:
    """The sidebar's picker is drawn before any page, so a page cannot set it directly: ask, then rerun."""
    st.session_state[state.PENDING_MODEL] = model_id


def take_pending() -> str | None:
    return st.session_state.pop(state.PENDING_MODEL, None)


# ---- the Models page ----------------------------------------------------------------------------------------

MODEL_TYPES = ["safetensors", "pt", "pth", "onnx", "zip"]
MAX_MODEL_MB = 200  # matches server.maxUploadSize in .streamlit/config.toml; checked here too
ACCEPTED = (  # (file, loaded as, notes): the Models page's table
    ("`.safetensors`", "a state dict for the architecture you pick", "preferred: plain tensors, nothing to execute"),
    ("`.pt` / `.pth` state dict", "the same, read with `torch.load(weights_only=True)`",
     "only tensors and containers are read"),
    ("`.zip` of a Hugging Face folder", "`AutoModelForImageClassification`, offline",
     "`config.json` + `model.safetensors`; labels from `id2label`, preprocessing from its processor config"),
    ("`.onnx`", "converted to PyTorch (onnx2torch)", "gradients and hooks work; an unsupported operator is named"),
    ("TorchScript `.pt`", "refused unless the server trusts code",
     "it runs code; hooks do not work on it, so CAMs and guided methods are not offered"),
    ("A full pickled model (`torch.save(model)`)", "**never loaded**",
     "unpickling can run any code. Export the weights: `torch.save(model.state_dict(), 'weights.pt')` or "
     "`safetensors.torch.save_file(model.state_dict(), 'weights.safetensors')`"),
)
# a list, not a table: three columns of prose overflow a 900 px window
ACCEPTED_HELP = "\n".join(
    [*(f"- {a}: {b}. {c[0].upper()}{c[1:]}." for a, b, c in ACCEPTED), "",
     "The class count comes from the last layer's weights; class names (optional) must match it. Wrong keys or "
     f"shapes are listed. Files over {MAX_MODEL_MB} MB are refused."]
)


def file_kind(name: str) -> str:
    """"state_dict", "onnx" or "huggingface", from the file name (the loader checks the content)."""
    suffix = name.rsplit(".", 1)[-1].lower()
    return {"onnx": "onnx", "zip": "huggingface"}.get(suffix, "state_dict")


def too_large(upload) -> str | None:
    size = getattr(upload, "size", None) or len(upload.getvalue())
    if size > MAX_MODEL_MB * 2**20:
        return f"{upload.name} is {size / 2**20:.0f} MB; model files up to {MAX_MODEL_MB} MB are accepted."
    return None


@st.cache_data(show_spinner=False)
def architecture_choices() -> list[str]:
    from explainers.models.architectures import architectures

    return architectures()


def _numbers(text: str, name: str) -> tuple[float, float, float]:
    from explainers.errors import ModelLoadError

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
    from explainers.models.architectures import preprocessing_defaults

    if not st.toggle("Set the input size, mean and std myself", key="models.custom_preprocessing",
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


def load_upload(upload, architecture: str | None, labels, preprocessing: dict) -> UserModel:
    """Load the uploaded file with the backend's safe loader and keep it in this session."""
    from explainers.models.user import load_user_model, trust_enabled

    from .models import pick_device

    bundle = load_user_model(
        upload.getvalue(), architecture, filename=upload.name,
        labels=None if labels is None else (labels.getvalue(), labels.name),
        trust_code=trust_enabled(), device=pick_device(), **preprocessing,
    )
    return add(bundle, upload.name, getattr(bundle, "notes", []))


def describe_bundle(bundle: ModelBundle) -> str:
    names = ", ".join(bundle.categories[:5]) + (" …" if len(bundle.categories) > 5 else "")
    return (f"{len(bundle.categories)} classes ({names}) · input {bundle.input_size}×{bundle.input_size} · "
            f"default layer {bundle.default_layer or 'none'} · {len(bundle.layers)} spatial layers")
