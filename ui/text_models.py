"""The Text page's models and its sidebar: the shipped text classifier (loaded once per process), the session's
own zipped Hugging Face classifiers, and the sidebar drawn in place of the image one on the Text page.

On the Text page the sidebar shows the text model only; the image pages' choices (image source, sample, model,
preprocessing, detection settings) are not drawn there but kept (``ui.sidebar.hold_image_choices``), and the
uploads live in the session's own store, so they are all there again on the image pages.
"""

from __future__ import annotations

import hashlib
import secrets
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import streamlit as st

from explainers.models.inputs import MAX_MODEL_BYTES, MAX_MODEL_MB
from explainers.models.text import DEFAULT_TEXT_MODEL, list_text_models, load_text_model
from explainers.text import TextBundle

from . import state
from .errors import TEXT_FIXES, show_error
from .method_docs import md_escape
from .models import pick_device
from .sidebar import Problem, hold_image_choices, reset_button
from .text_cache import text_cache

USER_PREFIX = "text-user:"


@dataclass
class TextModel:
    """A text model as the page uses it: ``id`` (what every cache keys on: a shipped model's name, or a session
    model's id, unique to its session), the picker's ``label``, the bundle and what to tell about it; a session
    model's ``file`` (the zip's name, what the page calls it) and ``sha256`` (its content: loaded once)."""

    id: str
    label: str
    bundle: TextBundle
    notes: list[str] = field(default_factory=list)
    file: str = ""
    sha256: str = ""

    @property
    def own(self) -> bool:
        return is_own(self.id)


@st.cache_resource(show_spinner="Loading the text model (first use in this server)…", max_entries=4)
def shipped_text_model(name: str, device: str) -> TextBundle:
    """A shipped text model, loaded once per process and shared by every session (the backend serialises calls on
    one model)."""
    return load_text_model(name, device=device)


@st.cache_data(show_spinner=False)
def text_model_names() -> list[str]:
    return list(list_text_models())


def _store() -> dict[str, TextModel]:
    return st.session_state.setdefault(state.TEXT_MODELS, {})


def own_text_models() -> list[TextModel]:
    return list(_store().values())


def is_own(model_id: str | None) -> bool:
    return isinstance(model_id, str) and model_id.startswith(USER_PREFIX)


def describe(model_id: str) -> str:
    """The picker's label of a shipped model."""
    return f"{model_id} · offline default" if model_id == DEFAULT_TEXT_MODEL else f"{model_id} · offline"


def picked_model_id() -> str:
    """The id of the Text page's model (the shipped default until one is picked there)."""
    return st.session_state.get(state.TEXT_MODEL) or DEFAULT_TEXT_MODEL


def text_model_label(model_id: str) -> str:
    """What the page calls ``model_id``, without loading it: a session model's label, or a shipped model's."""
    own = _store().get(model_id)
    return own.label if own is not None else describe(model_id)


def get_text_model(model_id: str) -> TextModel:
    """The model ``model_id`` names: the session's own, or a shipped one (loaded once per process)."""
    own = _store().get(model_id)
    if own is not None:
        return own
    bundle = shipped_text_model(model_id, pick_device())
    return TextModel(model_id, describe(model_id), bundle, list(bundle.notes))


def too_large(upload) -> str | None:
    size = getattr(upload, "size", None) or len(upload.getvalue())
    if size > MAX_MODEL_BYTES:
        return f"{upload.name} is {size / 2**20:.0f} MB; model files up to {MAX_MODEL_MB} MB are accepted."
    return None


def already_loaded(data: bytes) -> TextModel | None:
    """This session's model loaded from the same bytes, or None."""
    sha = hashlib.sha256(data).hexdigest()
    return next((model for model in own_text_models() if model.sha256 == sha), None)


def load_zip(name: str, data: bytes) -> TextModel:
    """A zipped Hugging Face sequence classifier (``save_pretrained``'s folder with its tokenizer), loaded offline
    by the backend's loader into this session's store and made the next run's model; the uploader is emptied (it
    gets a new key). The same bytes twice are loaded once: the model already there is picked again. The loader's
    errors (a bad zip, a missing tokenizer, an image model) reach the caller, who shows them."""
    file = Path(name).name or "model.zip"
    sha = hashlib.sha256(data).hexdigest()
    model = already_loaded(data)
    if model is None:
        with tempfile.TemporaryDirectory(prefix="text-model-") as folder:
            path = Path(folder) / file
            path.write_bytes(data)
            bundle = load_text_model(str(path), device=pick_device())
        model_id = f"{USER_PREFIX}{file}:{secrets.token_hex(4)}"  # unique to this session
        model = TextModel(model_id, f"{file} · yours", bundle, list(bundle.notes), file=file, sha256=sha)
        _store()[model_id] = model
    st.session_state[state.TEXT_PENDING_MODEL] = model.id
    st.session_state[state.TEXT_UPLOADS_DONE] = st.session_state.get(state.TEXT_UPLOADS_DONE, 0) + 1
    return model


def remove(model_id: str) -> None:
    """Forget one of this session's text models (the shipped default is picked again)."""
    _store().pop(model_id, None)
    text_cache().forget_model(model_id)
    if st.session_state.get(state.TEXT_MODEL) == model_id:
        st.session_state[state.TEXT_PENDING_MODEL] = DEFAULT_TEXT_MODEL


@dataclass
class TextChoice:
    """What the text sidebar chose: the model (the text itself is the page's)."""

    model: TextModel


def text_sidebar() -> TextChoice | Problem:
    """The sidebar of the Text page, drawn by app.py in place of the image one: the text model, and the reset
    button. The image pages' choices are kept, not drawn. Returns the choice, or the Problem to show."""
    hold_image_choices()
    pending = st.session_state.pop(state.TEXT_PENDING_MODEL, None)
    if pending is not None:
        st.session_state[state.TEXT_MODEL] = pending
    own = {model.id: model.label for model in own_text_models()}
    choices = list(own) + [name for name in text_model_names() if name not in own]
    if st.session_state.get(state.TEXT_MODEL) not in choices:
        st.session_state[state.TEXT_MODEL] = DEFAULT_TEXT_MODEL if DEFAULT_TEXT_MODEL in choices else choices[0]
    with st.sidebar:
        model_id = st.selectbox("Text model", choices, key=state.TEXT_MODEL, persist_state=state.KEEP,
                                format_func=lambda model_id: own.get(model_id) or describe(model_id),
                                help="The shipped classifier works offline. Load your own Hugging Face sequence "
                                "classifier (a zipped save_pretrained folder) on this page, under “Your own text "
                                "classifier”: it stays in this session only.")
        st.caption("The image pages' image, uploads and model are kept: they are there again on those pages.")
        reset_button(state.TEXT_PAGE)
    try:
        return TextChoice(get_text_model(model_id))
    except Exception as exc:  # noqa: BLE001 - shown by the page, in the main area
        return Problem("error", str(exc), exc)


def upload_form() -> None:
    """“Your own text classifier”: a zipped Hugging Face sequence classifier, loaded offline into this session
    (the loader's message shown on a bad zip), and this session's models with a Remove button each."""
    with st.expander("Your own text classifier (a zipped Hugging Face folder)"):
        st.caption("Zip the folder that `save_pretrained` wrote for an `AutoModelForSequenceClassification` and its "
                   "fast tokenizer (`config.json`, `model.safetensors`, `tokenizer.json`); class names come from "
                   f"`id2label`. Loaded offline; up to {MAX_MODEL_MB} MB; it stays in this session only.")
        upload = st.file_uploader("Zipped model folder", type=["zip"], key=state.text_upload_key(),
                                  max_upload_size=MAX_MODEL_MB)
        if upload is not None and st.button("Load this classifier", key=state.TEXT_LOAD, type="primary",
                                            icon=":material/upload:"):
            problem = too_large(upload)
            twin = None if problem else already_loaded(upload.getvalue())
            if problem:
                st.error(problem, icon="⚠️")
            elif twin is not None:  # the same zip again: picked, not loaded twice
                load_zip(upload.name, upload.getvalue())
                st.session_state[state.TEXT_LOADED_NOTE] = (f"{upload.name} holds the classifier already loaded "
                                                            f"in this session ({twin.file}): picked again, not "
                                                            "loaded twice.")
                st.rerun()
            else:
                try:
                    with st.spinner(f"Loading {upload.name}…"):
                        load_zip(upload.name, upload.getvalue())
                except Exception as exc:  # noqa: BLE001 - every failure to load is said, with what is expected
                    show_error(exc, fixes=TEXT_FIXES)
                else:
                    st.rerun()
        note = st.session_state.pop(state.TEXT_LOADED_NOTE, None)
        if note:
            st.info(md_escape(note), icon=":material/content_copy:")
        for model in own_text_models():
            left, right = st.columns([4, 1], vertical_alignment="center")
            left.markdown(f"Loaded in this session: **{md_escape(model.label)}**")
            right.button("Remove", key=f"{state.TEXT_LOAD}.remove.{model.id}", on_click=remove, args=(model.id,))
