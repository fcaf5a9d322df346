"""Models for the dashboard: loaded once per process, shared by every session, downloads with a progress bar."""

from __future__ import annotations

import os

import streamlit as st
import torch

from explainers import ModelUnavailableError
from explainers.digits.model import VARIANTS
from explainers.models import (
    CURATED,
    DEFAULT_MODEL,
    DIGITS_MODELS,
    ModelBundle,
    ensure_weights,
    list_models,
    load_digits_bundle,
    load_model,
    model_info,
)

from . import user_models


@st.cache_resource(show_spinner=False)
def configure_threads() -> int:
    """Once per process, at start (app.py calls it): leave one core to the browser and the server, because on
    small machines a thread per core stalls PyTorch. SALIENCY_THREADS overrides it."""
    wanted = os.environ.get("SALIENCY_THREADS", "")
    threads = int(wanted) if wanted.isdigit() and int(wanted) > 0 else max(1, (os.cpu_count() or 2) - 1)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads


def pick_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


@st.cache_resource(show_spinner="Loading the model (first use in this server)…", max_entries=4)
def cached_bundle(name: str, device: str) -> ModelBundle:
    """A registry model, loaded once per process and shared by every session. Sessions may explain it at the same
    moment: the backend serialises calls on one model (``explainers.hooks.model_guard``)."""
    return load_model(name, device=device)


TWIN = VARIANTS["shuffled"]  # the digits model's shuffled-label twin: not in the sidebar, Compare and Sanity use it


@st.cache_resource(show_spinner="Loading the shuffled-label digits model…")
def _twin_bundle(device: str) -> ModelBundle:
    return load_digits_bundle("shuffled", device=device)


def twin_bundle() -> ModelBundle:
    """The digits model's shuffled-label twin (data randomisation, Adebayo et al. 2018, arXiv:1810.03292), loaded
    once per process on the device the other models use."""
    return _twin_bundle(pick_device())


@st.cache_data(show_spinner=False)
def model_choices() -> list[str]:
    return list_models()


@st.cache_data(show_spinner=False, ttl=60)
def describe_model(name: str) -> str:
    """The label shown in the model picker: offline models say so, zoo models say what they download."""
    try:
        info = model_info(name)
    except ModelUnavailableError:
        return name
    if name == DEFAULT_MODEL:
        return f"{name} · offline default"
    if name in DIGITS_MODELS:
        return f"{name} · offline, digits"
    if info.get("offline"):
        return f"{name} · cached"
    size = info.get("download_mb")
    star = "★ " if name in CURATED else ""
    return f"{star}{name} · downloads {size:.0f} MB on first use" if size else f"{star}{name} · downloads on first use"


def get_bundle(name: str) -> ModelBundle:
    """The shared bundle for ``name``; a first use of a zoo model downloads it with a progress bar.

    Raises ModelUnavailableError (the page shows it) when the weights can't be had, e.g. offline.
    """
    entry = user_models.get(name) if user_models.is_user_model(name) else None
    if entry is not None:
        return entry.bundle
    info = model_info(name)
    if not info.get("offline"):
        label = f"Downloading {name} weights ({info.get('download_mb') or '?'} MB, once)…"
        bar = st.progress(0.0, text=label)

        def report(done: int, total: int) -> None:
            if total:
                bar.progress(min(done / total, 1.0), text=f"{label} {done / 2**20:.0f} of {total / 2**20:.0f} MB")

        try:
            ensure_weights(name, progress=report)
        finally:
            bar.empty()
        describe_model.clear()
    return cached_bundle(name, pick_device())
