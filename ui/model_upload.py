"""The Models page's upload form: what loads, the file checks, the preprocessing fields, and loading an upload with
the backend's safe loader into this session's store (ui/user_models.py)."""

from __future__ import annotations

import streamlit as st

from explainers.errors import ModelLoadError
from explainers.models import ModelBundle
from explainers.models.architectures import architectures, preprocessing_defaults
from explainers.models.inputs import MAX_MODEL_BYTES, MAX_MODEL_MB
from explainers.models.user import load_user_model, trust_enabled

from . import state, user_models
from .models import pick_device

MODEL_TYPES = ["safetensors", "pt", "pth", "onnx", "zip"]
# MAX_MODEL_MB is the backend's limit (load_user_model enforces it); server.maxUploadSize in .streamlit/config.toml
# matches it, and too_large says it here before the upload reaches the loader.
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


def load_upload(upload, architecture: str | None, labels, preprocessing: dict) -> user_models.UserModel:
    """Load the uploaded file with the backend's safe loader and keep it in this session."""
    bundle = load_user_model(
        upload.getvalue(), architecture, filename=upload.name,
        labels=None if labels is None else (labels.getvalue(), labels.name),
        trust_code=trust_enabled(), device=pick_device(), **preprocessing,
    )
    return user_models.add(bundle, upload.name, getattr(bundle, "notes", []))


def describe_bundle(bundle: ModelBundle) -> str:
    names = ", ".join(bundle.categories[:5]) + (" …" if len(bundle.categories) > 5 else "")
    return (f"{len(bundle.categories)} classes ({names}) · input {bundle.input_size}×{bundle.input_size} · "
            f"default layer {bundle.default_layer or 'none'} · {len(bundle.layers)} spatial layers")
