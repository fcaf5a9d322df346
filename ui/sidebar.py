"""The shared selection, on every page: image (samples, uploads, camera), model and preprocessing.

Widgets keep their values across pages (``persist_state="session"``), and the model and sample are bound to
the URL's query string so a link restores them.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import streamlit as st
import torch
from PIL import Image

from explainers.images import image_hash, open_image
from explainers.models import CENTER_CROP, DEFAULT_MODEL, RESIZE, ModelBundle

from .errors import guard
from .models import describe_model, get_bundle, model_choices

SAMPLES_DIR = Path(__file__).resolve().parents[1] / "assets" / "samples"
IMAGE_TYPES = ["png", "jpg", "jpeg", "webp", "bmp", "gif"]
SOURCES = ("Samples", "Upload", "Camera")
PREPROCESSING_LABELS = {RESIZE: "Whole image (resized)", CENTER_CROP: "Centre crop (canonical)"}


@dataclass
class Selection:
    image: Image.Image
    image_name: str
    image_hash: str
    model: str
    preprocessing: str
    bundle: ModelBundle
    inputs: torch.Tensor  # [1, 3, H, W] on the model's device


def sample_names() -> list[str]:
    return sorted(p.name for p in SAMPLES_DIR.iterdir() if p.suffix.lower().lstrip(".") in IMAGE_TYPES)


@st.cache_data(show_spinner=False, max_entries=64)
def _decode(data: bytes, name: str) -> Image.Image:
    return open_image(data, name=name)


@st.cache_data(show_spinner=False)
def _thumbnail(name: str) -> bytes:
    """PNG bytes, cached: st.image would otherwise re-encode the gallery on every rerun."""
    image = open_image(SAMPLES_DIR / name)
    image.thumbnail((160, 160))
    return _png(image)


@st.cache_data(show_spinner=False, max_entries=64)
def _model_view_png(model: str, image_hash: str, preprocessing: str, _bundle, _image) -> bytes:
    return _png(_bundle.model_view(_image, preprocessing))


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _pick_image() -> tuple[Image.Image, str] | None:
    source = st.segmented_control("Image", SOURCES, default=SOURCES[0], key="image_source",
                                  persist_state="session", required=True)
    if source == "Upload":
        files = st.file_uploader("Drop images here", type=IMAGE_TYPES, accept_multiple_files=True, key="uploads",
                                 help="Several files become a strip to pick from.")
        if not files:
            st.info("Upload an image, or switch to Samples.")
            return None
        if len(files) > 1:
            names = [f.name for f in files]
            chosen = st.radio("Uploaded images", names, key="upload_pick", horizontal=True)
            file = files[names.index(chosen)]
            st.image([_safe_thumb(f) for f in files], caption=names, width=70)
        else:
            file = files[0]
        return _decode(file.getvalue(), file.name), file.name
    if source == "Camera":
        shot = st.camera_input("Take a photo", key="camera")
        if shot is None:
            st.info("Allow the camera and take a photo, or switch to Samples.")
            return None
        return _decode(shot.getvalue(), "camera photo"), "camera.jpg"
    names = sample_names()
    name = st.selectbox("Sample", names, key="sample", bind="query-params", persist_state="session")
    st.image([_thumbnail(n) for n in names], caption=names, width=70)
    return open_image(SAMPLES_DIR / name), name


def _safe_thumb(file) -> Image.Image:
    try:
        image = _decode(file.getvalue(), file.name).copy()
    except Exception:  # noqa: BLE001 - a bad file shows as a grey tile; its error appears when picked
        return Image.new("RGB", (70, 70), (128, 128, 128))
    image.thumbnail((140, 140))
    return image


def sidebar() -> Selection | None:
    """Draw the shared sidebar and return the current selection, or None (with a message shown) if incomplete."""
    with st.sidebar:
        picked = None
        with guard():
            picked = _pick_image()
        choices = model_choices()
        model = st.selectbox(
            "Model", choices, index=choices.index(DEFAULT_MODEL), format_func=describe_model, key="model",
            bind="query-params", persist_state="session",
            help="efficientnet_lite0 works offline. Zoo models download their ImageNet weights once.",
        )
        preprocessing = st.radio(
            "Preprocessing", list(PREPROCESSING_LABELS), format_func=PREPROCESSING_LABELS.get, key="preprocessing",
            persist_state="session", horizontal=True,
            help="Whole image: the heatmap covers everything you uploaded. Centre crop: the model's canonical "
            "evaluation transform.",
        )
        if picked is None:
            return None
        image, name = picked
        bundle = None
        with guard():
            bundle = get_bundle(model)
        if bundle is None:
            return None
        digest = image_hash(image)
        view = _model_view_png(model, digest, preprocessing, bundle, image)
        st.image(view, caption=f"What the model sees ({bundle.input_size}×{bundle.input_size})", width=180)
    inputs = bundle.preprocess(image, preprocessing)
    return Selection(image, name, digest, model, preprocessing, bundle, inputs)
