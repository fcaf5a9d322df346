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

from . import state
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
    """Forget a model and its cached explanations; the sidebar falls back to the default model if it was
    selected."""
    _store().pop(model_id, None)
    explanation_cache().forget_model(model_id)


def select_next_run(model_id: str) -> None:
    """The sidebar's picker is drawn before any page, so a page cannot set it directly: ask, then rerun."""
    st.session_state[state.PENDING_MODEL] = model_id


def take_pending() -> str | None:
    return st.session_state.pop(state.PENDING_MODEL, None)
