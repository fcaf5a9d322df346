"""Cached explanations: one raw attribution per (model, image, preprocessing, method, params, target, layer).

Changing a view control re-renders from the cached raw attribution and never calls the explainer again;
returning to an earlier choice is instant. The cache is process-wide, so sessions share it. ``cache_key`` is the
one place the key is made.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import streamlit as st

import explainers
from explainers import METHODS, Cancelled, ExplanationRecord
from explainers.many import target_key

from . import state
from .models import model_lock

MAX_ENTRIES = 128


@dataclass
class _Flight:
    """One computation in progress, which later callers with the same key wait for."""

    finished: threading.Event = field(default_factory=threading.Event)
    progress: tuple[int, int] = (0, 1)  # the computing caller's latest (done, total), shown to the waiting ones


class ExplanationCache:
    """A small thread-safe LRU shared by all sessions; identical requests at the same moment share one
    computation (:meth:`compute`)."""

    def __init__(self, max_entries: int = MAX_ENTRIES):
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple, ExplanationRecord] = OrderedDict()
        self._flights: dict[tuple, _Flight] = {}
        self._lock = threading.Lock()
        self.calls = 0  # explainer calls made through this cache (tests count them)
        self.records = 0  # explanations those calls computed (one explain_many call computes several)

    def compute(self, key: tuple, fn: Callable[[Callable[[int, int], object]], Any],
                progress: Callable[[int, int], object] | None = None, poll_s: float = 0.2) -> tuple[Any, bool]:
        """(value, shared): the cached value, or one computation shared by every caller asking for ``key`` at the
        same time (``compute_many`` with one key; ``fn(report)`` computes it). ``shared`` is False only for the
        caller that computed it."""
        values, computed = self.compute_many([key], lambda missing, report: {key: fn(report)}, progress, poll_s)
        return values[key], key not in computed

    def compute_many(self, keys: list[tuple], fn: Callable[[list[tuple], Callable[[int, int], object]], dict],
                     progress: Callable[[int, int], object] | None = None,
                     poll_s: float = 0.2) -> tuple[dict[tuple, Any], set[tuple]]:
        """(values, computed): a value for every key of ``keys``, and the keys this caller computed.

        Cached keys are taken as they are. The missing ones that nobody is computing are claimed and computed
        by one call ``fn(missing, report)``, which returns {key: value} for at least those keys (any others it
        returns are cached too); ``report(done, total)`` is the progress protocol. Keys that another caller is
        computing at this moment are waited for: their progress reaches ``progress``, which also lets a rerun
        stop the wait (False, or raising Cancelled; the computation goes on). A computation that fails or is
        cancelled caches nothing, and a waiting caller then computes those keys itself."""
        found: dict[tuple, Any] = {}
        computed: set[tuple] = set()
        while True:
            with self._lock:
                mine, theirs = [], []
                for key in keys:
                    if key in found:
                        continue
                    value = self._entries.get(key)
                    if value is not None:
                        self._entries.move_to_end(key)
                        found[key] = value
                    elif key in self._flights:
                        theirs.append(self._flights[key])
                    else:
                        mine.append(key)
                if mine:
                    flight = _Flight()
                    for key in mine:
                        self._flights[key] = flight
            if mine:
                def report(done: int, total: int, flight=flight) -> object:
                    flight.progress = (done, total)
                    return True if progress is None else progress(done, total)

                try:
                    values = fn(mine, report)
                    for key, value in values.items():
                        self.put(key, value)
                    found.update({key: values[key] for key in mine})
                    computed.update(mine)
                finally:
                    with self._lock:
                        for key in mine:
                            if self._flights.get(key) is flight:
                                del self._flights[key]
                    flight.finished.set()
                continue
            if not theirs:
                return {key: found[key] for key in keys}, computed
            flight = theirs[0]
            while not flight.finished.wait(poll_s):
                if progress is not None and progress(*flight.progress) is False:
                    raise Cancelled("stopped waiting for the same explanation, computing for another session")

    def get(self, key: tuple) -> ExplanationRecord | None:
        with self._lock:
            value = self._entries.get(key)
            if value is not None:
                self._entries.move_to_end(key)
            return value

    def put(self, key: tuple, value: ExplanationRecord) -> None:
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def forget_model(self, model: str) -> None:
        """Drop every entry of one model (a session's own model, when it is removed)."""
        with self._lock:
            for key in [k for k in self._entries if k[0] == model]:
                del self._entries[key]

    def clear(self) -> None:
        """Forget every entry and restart the counts."""
        with self._lock:
            self._entries.clear()
            self.calls = self.records = 0


@st.cache_resource(show_spinner=False)
def explanation_cache() -> ExplanationCache:
    return ExplanationCache()


def _freeze(value: Any) -> Any:
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


def resolved_layer(selection, method: str, layer: str | None) -> str | None:
    """The layer a method reads: None for methods without one, the model's default when none is chosen."""
    return (layer or selection.bundle.default_layer) if METHODS[method].needs_layer else None


def cache_key(selection, method: str, params: dict, target: Any, layer: str | None,
              objective: str = "logit") -> tuple:
    """The one cache key of an explanation: everything that changes the raw attribution, nothing that doesn't."""
    return (selection.model, selection.image_hash, selection.preprocessing, method, _freeze(params),
            _freeze(target), resolved_layer(selection, method, layer), objective)


def cached(selection, method: str, params: dict, target: Any, layer: str | None = None) -> ExplanationRecord | None:
    return explanation_cache().get(cache_key(selection, method, params, target, layer))


def explain_cached(selection, method: str, params: dict, target: Any, layer: str | None = None,
                   progress=None) -> tuple[ExplanationRecord, bool]:
    """(record, from_cache). On a miss the explainer runs under the model's lock, with a fixed seed so a panel is
    the same in every session; the same request from several sessions at once is computed once, the others
    waiting for it (from_cache is then True). ``progress(done, total)`` follows explain()'s protocol."""
    key = cache_key(selection, method, params, target, layer)
    cache = explanation_cache()

    def compute(report) -> ExplanationRecord:
        with model_lock(selection.model):
            cache.calls += 1
            cache.records += 1
            explanation = explainers.explain(selection.bundle, selection.inputs, method, target,
                                             layer=resolved_layer(selection, method, layer), seed=0, progress=report,
                                             **params)
        return explanation.record(0)

    return cache.compute(key, compute, progress)


def explain_many_cached(selection, methods: list[str], targets: list[Any], progress=None,
                        params: dict[str, dict] | None = None, layer: str | None = None
                        ) -> dict[tuple[str, Any], ExplanationRecord]:
    """{(method, target): record} for every method and target, each under its own ``cache_key`` (so Explore
    finds Compare's panels and the other way round). The missing ones come from one ``explain_many`` call, which
    shares passes across the methods and the targets, under the model's lock and with the fixed seed of
    ``explain_cached``; requests from several sessions at once are computed once. CAM methods use ``layer``, or
    the model's default layer."""
    params = params or {}
    keys = {(m, t): cache_key(selection, m, params.get(m, {}), t, layer) for m in methods for t in targets}
    cache = explanation_cache()

    def compute(missing: list[tuple], report) -> dict[tuple, ExplanationRecord]:
        wanted = [pair for pair, key in keys.items() if key in set(missing)]
        names = list(dict.fromkeys(m for m, _ in wanted))
        wanted_targets = list(dict.fromkeys(t for _, t in wanted))
        layers = {resolved_layer(selection, m, layer) for m in names} - {None}
        with model_lock(selection.model):
            cache.calls += 1
            results = explainers.explain_many(selection.bundle, selection.inputs, names, wanted_targets,
                                              layer=next(iter(layers), None), seed=0, progress=report,
                                              params={m: params[m] for m in names if params.get(m)})
        cache.records += len(results)
        return {keys[(m, t)]: results[(m, target_key(t))].record(0) for m in names for t in wanted_targets}

    values, _ = cache.compute_many(list(dict.fromkeys(keys.values())), compute, progress)
    return {pair: values[key] for pair, key in keys.items()}


def explain_layers_cached(selection, method: str, target: Any, layers: list[str], progress=None
                          ) -> dict[str, ExplanationRecord]:
    """{layer: record} of a layer sweep, each under its own ``cache_key`` (Explore with that layer finds it);
    the missing layers come from one ``explain_layers`` pass (one forward, every layer captured)."""
    keys = {layer: cache_key(selection, method, {}, target, layer) for layer in layers}
    cache = explanation_cache()

    def compute(missing: list[tuple], report) -> dict[tuple, ExplanationRecord]:
        wanted = [layer for layer, key in keys.items() if key in set(missing)]
        with model_lock(selection.model):
            cache.calls += 1
            results = explainers.many.explain_layers(selection.bundle, selection.inputs, method, target, wanted,
                                                     seed=0, progress=report)
        cache.records += len(results)
        return {keys[layer]: results[layer].record(0) for layer in wanted}

    values, _ = cache.compute_many(list(dict.fromkeys(keys.values())), compute, progress)
    return {layer: values[key] for layer, key in keys.items()}


def multi_pass(selection, method: str, params: dict, layer: str | None) -> bool:
    """Whether a method takes long enough to deserve a progress bar and a Cancel button."""
    info = METHODS[method]
    entry = selection.bundle.layer_entry(resolved_layer(selection, method, layer)) if info.needs_layer else None
    hw = tuple(selection.inputs.shape[-2:])
    return info.passes(params, hw, entry.channels if entry else None).total > 2


class ProgressReporter:
    """``progress(done, total)`` for explain(): a Streamlit bar with done/total and an ETA.

    Every update goes through Streamlit, so a click on Cancel (which asks for a rerun) stops the script right
    there, inside the callback: the explainer unwinds through its ``finally`` blocks and the model is left as
    it was.
    """

    def __init__(self, label: str, container=st):
        self.label = label
        self.bar = container.progress(0.0, text=f"{label}: starting…")
        self.started = time.perf_counter()

    def __call__(self, done: int, total: int) -> bool:
        elapsed = time.perf_counter() - self.started
        eta = elapsed / done * (total - done) if done else float("nan")
        eta_text = f", about {eta:.0f} s left" if done and eta == eta else ""
        self.bar.progress(min(done / max(total, 1), 1.0), text=f"{self.label}: {done}/{total} passes{eta_text}")
        return True

    def close(self) -> None:
        self.bar.empty()


def explain_cancellable(selection, info, params: dict, target: Any, layer: str | None
                        ) -> tuple[ExplanationRecord, bool] | None:
    """Run (or fetch) Explore's explanation, with a progress bar and a Cancel button for multi-pass methods.

    Clicking Cancel makes Streamlit rerun the script, which stops it inside the progress callback. That rerun
    remembers the cancelled run and does not start it again until the user presses Run. The Cancel button and
    the bar are gone once the run ends. Returns None when there is nothing to show.
    """
    hit = cached(selection, info.name, params, target, layer)
    if hit is not None:
        return hit, True
    run_id = cache_key(selection, info.name, params, target, layer)
    if st.session_state.get(state.CANCEL_BUTTON):
        st.session_state[state.CANCELLED_RUN] = run_id
    if st.session_state.get(state.CANCELLED_RUN) == run_id:
        slot = st.empty()
        with slot.container():
            st.info("Cancelled. Press Run to compute this explanation.", icon=":material/stop_circle:")
            if not st.button("Run", key=state.RUN_AGAIN, type="primary"):
                return None
        slot.empty()
        st.session_state[state.CANCELLED_RUN] = None
    if not multi_pass(selection, info.name, params, layer):
        with st.spinner(f"{info.display_name}…"):
            return explain_cached(selection, info.name, params, target, layer)
    slot = st.empty()
    with slot.container():
        st.button("Cancel", key=state.CANCEL_BUTTON, help="Stop this computation now.")
        reporter = ProgressReporter(info.display_name)
    try:
        return explain_cached(selection, info.name, params, target, layer, progress=reporter)
    finally:
        slot.empty()
