"""Cached explanations: one raw attribution per (model, image, preprocessing, method, params, target, layer).

Changing a view control re-renders from the cached raw attribution and never calls the explainer again;
returning to an earlier choice is instant. The cache is process-wide, so sessions share it.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import streamlit as st
import torch

import explainers
from explainers import METHODS, ModelBundle

from .models import model_lock

MAX_ENTRIES = 128


@dataclass(frozen=True)
class ExplanationResult:
    """What the pages keep: numpy arrays, so rendering never touches torch."""

    attribution: np.ndarray  # [C, H, W] raw
    target: tuple[int, ...]  # (class,) or (a, b) for a contrast
    logits: np.ndarray  # [K]
    method: str
    params: dict[str, Any]
    elapsed_s: float
    layer: str | None = None
    layer_attribution: np.ndarray | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def target_value(self) -> int | tuple[int, int]:
        """The class index, or the (a, b) pair of a contrast."""
        return self.target if len(self.target) > 1 else self.target[0]


class ExplanationCache:
    """A small thread-safe LRU shared by all sessions."""

    def __init__(self, max_entries: int = MAX_ENTRIES):
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple, ExplanationResult] = OrderedDict()
        self._lock = threading.Lock()
        self.calls = 0  # explainer calls made through this cache (tests count them)

    def get(self, key: tuple) -> ExplanationResult | None:
        with self._lock:
            value = self._entries.get(key)
            if value is not None:
                self._entries.move_to_end(key)
            return value

    def put(self, key: tuple, value: ExplanationResult) -> None:
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        """Forget every entry and restart the call count."""
        with self._lock:
            self._entries.clear()
            self.calls = 0


@st.cache_resource(show_spinner=False)
def explanation_cache() -> ExplanationCache:
    return ExplanationCache()


def _freeze(value: Any) -> Any:
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


def cache_key(model: str, image_hash: str, preprocessing: str, method: str, params: dict, target: Any,
              layer: str | None, objective: str = "logit") -> tuple:
    return (model, image_hash, preprocessing, method, _freeze(params), _freeze(target), layer, objective)


def _jsonable(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().tolist() if value.numel() > 1 else float(value.item())
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def explain_cached(
    bundle: ModelBundle,
    image_hash: str,
    preprocessing: str,
    inputs: torch.Tensor,
    method: str,
    params: dict,
    target: Any,
    layer: str | None = None,
    objective: str = "logit",
    progress_label: str | None = None,
) -> tuple[ExplanationResult, bool]:
    """(result, from_cache). On a miss the explainer runs under the model's lock; multi-pass methods show a
    progress bar labelled ``progress_label`` (none when it is None)."""
    info = METHODS[method]
    layer = (layer or bundle.default_layer) if info.needs_layer else None
    key = cache_key(bundle.name, image_hash, preprocessing, method, params, target, layer, objective)
    cache = explanation_cache()
    hit = cache.get(key)
    if hit is not None:
        return hit, True
    reporter = None
    if progress_label is not None and sum(info.passes(params, tuple(inputs.shape[-2:]))) > 2:
        reporter = ProgressReporter(progress_label)
    try:
        with model_lock(bundle.name):
            cache.calls += 1
            explanation = explainers.explain(
                bundle, inputs, method, target, layer=layer, objective=objective, seed=0, progress=reporter,
                **params,
            )
    finally:
        if reporter is not None:
            reporter.close()
    result = ExplanationResult(
        attribution=explanation.attribution[0].float().cpu().numpy(),
        target=tuple(int(t) for t in explanation.target[0].reshape(-1).tolist()),
        logits=explanation.logits[0].float().cpu().numpy(),
        method=method,
        params=_jsonable(explanation.params),
        elapsed_s=explanation.elapsed_s,
        layer=explanation.layer,
        layer_attribution=None
        if explanation.layer_attribution is None
        else explanation.layer_attribution[0].float().cpu().numpy(),
        extras=_jsonable(explanation.extras),
    )
    cache.put(key, result)
    return result, False


def is_cached(selection, method: str, params: dict, target: Any, layer: str | None = None,
              objective: str = "logit") -> bool:
    info = METHODS[method]
    layer = (layer or selection.bundle.default_layer) if info.needs_layer else None
    key = cache_key(selection.model, selection.image_hash, selection.preprocessing, method, params, target, layer,
                    objective)
    return explanation_cache().get(key) is not None


def explain_cancellable(selection, info, params: dict, target: Any, layer: str | None
                        ) -> tuple[ExplanationResult, bool] | None:
    """Run (or fetch) the Explore page's explanation with a Cancel button for multi-pass methods.

    Clicking Cancel makes Streamlit rerun the script, which stops it inside the progress callback: the
    explainer unwinds through its ``finally`` blocks. That rerun remembers the cancelled run and does not
    start it again until the user presses Run. Returns None when nothing is to be shown.
    """
    cached = is_cached(selection, info.name, params, target, layer)
    run_id = (selection.model, selection.image_hash, selection.preprocessing, info.name, str(params), str(target),
              layer)
    if st.session_state.get("cancel_run"):
        st.session_state["cancelled_run"] = run_id
    if not cached and st.session_state.get("cancelled_run") == run_id:
        st.info("Cancelled. Press Run to compute this explanation.")
        if not st.button("Run", key="run_again", type="primary"):
            return None
        st.session_state["cancelled_run"] = None
    if not cached and sum(info.passes(params, tuple(selection.inputs.shape[-2:]))) > 2:
        st.button("Cancel", key="cancel_run", help="Stop this computation now.")
    try:
        return explain_cached(selection.bundle, selection.image_hash, selection.preprocessing, selection.inputs,
                              info.name, params, target, layer, progress_label=info.display_name)
    except explainers.Cancelled:
        st.info("Cancelled.")
        return None


class ProgressReporter:
    """``progress(done, total)`` for explain(): a Streamlit bar with done/total and an ETA.

    Every update goes through Streamlit, so a click on Cancel (which asks for a rerun) stops the script right
    there, inside the callback: the explainer unwinds through its ``finally`` blocks and the model is left as
    it was.
    """

    def __init__(self, label: str):
        self.label = label
        self.bar = st.progress(0.0, text=f"{label}: starting…")
        self.started = time.perf_counter()

    def __call__(self, done: int, total: int) -> bool:
        elapsed = time.perf_counter() - self.started
        eta = elapsed / done * (total - done) if done else float("nan")
        eta_text = f", about {eta:.0f} s left" if done and eta == eta else ""
        self.bar.progress(min(done / max(total, 1), 1.0), text=f"{self.label}: {done}/{total} passes{eta_text}")
        return True

    def close(self) -> None:
        self.bar.empty()
