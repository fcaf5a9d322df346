"""This session's own models: kept in the session's state only, so another session never sees them and they are
freed when the session ends. The form that loads them is ui/model_upload.py.

A user model's id is unique to the session that loaded it (``user:<file>:<token>``), so the process-wide caches
keyed by model id (explanations, predictions) can never hand one session's results to another.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

import streamlit as st

from explainers.models import ModelBundle
from explainers.models.dense import DenseBundle
from explainers.models.user import ScriptedClassifier, ScriptedDense

from . import state
from .dense import scored_bundle
from .explanations import explanation_cache

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


FORMATS = {"onnx": "ONNX", "zip": "Hugging Face"}  # anything else is a state dict (TorchScript is told apart)


def model_format(source: str, bundle: ModelBundle, architecture: str | None = None) -> str:
    """What the picker says the file holds: "resnet18 state dict", "ONNX", "Hugging Face", "TorchScript"."""
    if isinstance(bundle.model, ScriptedClassifier | ScriptedDense):
        return "TorchScript"
    suffix = source.rsplit(".", 1)[-1].lower() if "." in source else "zip"  # no suffix: a Hugging Face folder
    return FORMATS.get(suffix) or (f"{architecture} state dict" if architecture else "state dict")


def _short(source: str, room: int = 40) -> str:
    """The file name, its middle elided when long: the extension stays (it tells two exports apart)."""
    return source if len(source) <= room else f"{source[: room - 12]}…{source[-11:]}"


def add(bundle: ModelBundle, source: str, notes: list[str] | None = None,
        architecture: str | None = None) -> UserModel:
    """Keep ``bundle`` in this session under a new id, and select it on the next run. Its label names the file
    and the format, so a safetensors file and its ONNX export are told apart; the same file loaded twice gets
    " (2)"."""
    stem = source.rsplit(".", 1)[0][:40] or "model"
    model_id = f"{PREFIX}{stem}:{secrets.token_hex(4)}"
    what = {"detection": "your detector", "segmentation": "your segmenter"}.get(
        bundle.kind if isinstance(bundle, DenseBundle) else "", "your model")
    label = (f"{_short(source)} · {model_format(source, bundle, architecture)} · {what} "
             f"({len(bundle.categories)} classes)")
    taken = {entry.label for entry in user_models()}
    count = 1
    while (label if count == 1 else f"{label} ({count})") in taken:
        count += 1
    entry = UserModel(model_id, label if count == 1 else f"{label} ({count})", bundle, source, list(notes or []))
    _store()[model_id] = entry
    select_next_run(model_id)
    return entry


def remove(model_id: str) -> None:
    """Forget a model and its cached explanations; the sidebar falls back to the default model if it was
    selected."""
    _store().pop(model_id, None)
    explanation_cache().forget_model(model_id)
    # the scored bundles (process-wide) hold the network: drop them, so the removed model's memory goes with it
    scored_bundle.clear()


def select_next_run(model_id: str) -> None:
    """The sidebar's picker is drawn before any page, so a page cannot set it directly: ask, then rerun."""
    st.session_state[state.PENDING_MODEL] = model_id


def take_pending() -> str | None:
    return st.session_state.pop(state.PENDING_MODEL, None)
