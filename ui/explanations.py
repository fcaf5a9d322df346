"""Cached explanations: one raw attribution per (model, image, preprocessing, method, params, target, layer).

Changing a view control re-renders from the cached raw attribution and never calls the explainer again;
returning to an earlier choice is instant. The cache is process-wide, so sessions share it.

Every page asks in its own spelling (Explore passes every widget value, Compare none; Faithfulness "top1" where
the others pass the class index), so a request is made canonical first (:func:`canonical`: parameters validated
with their defaults filled in, the target resolved to class indices on this image, the layer resolved) and
``cache_key`` keys on that: the same explanation is computed once, whichever page asks first.
:func:`cached_records` is the one way to an explanation, for one panel, a grid or a layer sweep.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import streamlit as st

from explainers import (
    METHODS,
    Cancelled,
    Contrast,
    ExplanationRecord,
    TargetSpec,
    explain,
    explain_many,
    resolve_target,
)
from explainers.many import estimated_seconds, explain_layers
from explainers.targets import target_key

from . import state
from .caches import ByteLRU
from .predictions import selection_scores
from .runs import AUTO_RUN_SECONDS, ProgressReporter, RunControl, pass_times
from .widgets import seconds_text

# Raw attributions are small (a [3, 224, 224] float32 map is 0.6 MB; a 40-layer sweep a few MB): 256 MB keeps
# hundreds, and no run of requests, however large its maps, can take more.
MAX_BYTES = 256 * 2**20


@dataclass
class _Flight:
    """One computation in progress, which later callers with the same key wait for."""

    finished: threading.Event = field(default_factory=threading.Event)
    progress: tuple[int, int] = (0, 1)  # the computing caller's latest (done, total), shown to the waiting ones
    said: str = ""  # what the computation said last (Progress.say: an optimisation's iteration), shown likewise


class ExplanationCache:
    """A thread-safe LRU shared by all sessions, bounded by the bytes of its records (their attributions, layer
    attributions, logits and extras: :func:`ui.caches.nbytes`); identical requests at the same moment share one
    computation (:meth:`compute`)."""

    def __init__(self, max_bytes: int = MAX_BYTES):
        self._entries = ByteLRU(max_bytes)
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

                def say(text: str, flight=flight) -> None:
                    flight.said = text
                    if hasattr(progress, "say"):
                        progress.say(text)

                report.say = say

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
                if flight.said and hasattr(progress, "say"):
                    progress.say(flight.said)
                if progress is not None and progress(*flight.progress) is False:
                    raise Cancelled("stopped waiting for the same explanation, computing for another session")

    @property
    def max_bytes(self) -> int:
        return self._entries.max_bytes

    @property
    def bytes(self) -> int:
        """The bytes its records hold now."""
        return self._entries.bytes

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: tuple) -> ExplanationRecord | None:
        return self._entries.get(key)

    def put(self, key: tuple, value: ExplanationRecord) -> None:
        """Keep ``value``, dropping the least recently used records past the byte budget."""
        self._entries.put(key, value)

    def forget_model(self, model: str) -> None:
        """Drop every entry of one model (a session's own model, when it is removed), its target sets' included."""
        self._entries.drop(lambda key: key[0] != model and not str(key[0]).startswith(f"{model}#"))

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


@dataclass(frozen=True)
class Request:
    """One explanation in its canonical form (made by :func:`canonical`): what the cache keys on, and what the
    explainer is asked for."""

    method: str
    params: tuple[tuple[str, Any], ...]  # validated, every default filled in, sorted by name
    target: int | Contrast  # a class index, or a contrast of two class indices
    layer: str | None  # the layer's name; None for a method that reads no layer
    objective: str = "logit"

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.params)


def resolved_layer(selection, method: str, layer: str | None) -> str | None:
    """The layer a method reads: None for methods without one, the model's default when none is chosen."""
    return (layer or selection.bundle.default_layer) if METHODS[method].needs_layer else None


def resolved_target(selection, target: Any) -> int | Contrast:
    """The class index a target names on this image, or a contrast of two: a rank ("top1") is read from the image's
    prediction, a class name is looked up, an index is checked."""
    needs_ranking = TargetSpec(target, 1, selection.bundle.categories).needs_logits
    scores = selection_scores(selection) if needs_ranking else None
    return resolve_target(target, selection.bundle.categories, scores)


def canonical(selection, method: str, params: dict | None = None, target: Any = "top1",
              layer: str | None = None) -> Request:
    """The request as the cache knows it, however a page spelled it."""
    return Request(method, _freeze(METHODS[method].validate(params or {})), resolved_target(selection, target),
                   resolved_layer(selection, method, layer))


def cache_key(selection, request: Request) -> tuple:
    """The one cache key of an explanation: everything that changes the raw attribution, nothing that doesn't (a
    dense model's target set is in its ``cache_id``: target t of one set is not target t of another)."""
    return selection.cache_id, selection.image_hash, selection.preprocessing, request


def cached(selection, request: Request) -> ExplanationRecord | None:
    return explanation_cache().get(cache_key(selection, request))


def _calls(requests: list[Request]) -> list[list[Request]]:
    """The explain_many calls of ``requests``: one per layer, the methods without a layer joining the first, and
    another wherever one method is asked with two parameter sets."""
    calls: list[list[Request]] = []
    layers: list[str | None] = []
    for request in sorted(requests, key=lambda r: r.layer is None):
        for layer, call in zip(layers, calls):
            params = {r.method: r.params for r in call}
            if request.layer in (None, layer) and params.get(request.method, request.params) == request.params:
                call.append(request)
                break
        else:
            calls.append([request])
            layers.append(request.layer)
    return calls


def compute_records(selection, requests: list[Request], report) -> tuple[dict[Request, ExplanationRecord], int]:
    """(records, backend calls): ``requests`` computed with the fixed seed, so a panel is the same in every
    session. One request is one ``explain``; one method, target and parameter set at several layers is one
    ``explain_layers`` pass (every layer captured at once); anything else goes to ``explain_many``, which shares
    passes across the methods and the targets (and returns every method × target pair of its call)."""
    bundle, inputs, first = selection.bundle, selection.inputs, requests[0]
    options = {"seed": 0, "progress": report, "objective": first.objective}
    if len(requests) == 1:
        explanation = explain(bundle, inputs, first.method, first.target, layer=first.layer, **options,
                              **first.kwargs)
        return {first: explanation.record(0)}, 1
    if METHODS[first.method].sweepable and len({(r.method, r.params, r.target, r.objective) for r in requests}) == 1:
        layers = explain_layers(bundle, inputs, first.method, first.target, [r.layer for r in requests], **options,
                                **first.kwargs)
        return {r: layers[r.layer].record(0) for r in requests}, 1
    records: dict[Request, ExplanationRecord] = {}
    calls = _calls(requests)
    for call in calls:
        params = {r.method: r.params for r in call}
        targets = {target_key(r.target): r.target for r in call}
        layer = next((r.layer for r in call if r.layer is not None), None)
        results = explain_many(bundle, inputs, list(params), list(targets.values()), layer=layer, **options,
                               params={method: dict(values) for method, values in params.items()})
        for (method, key), explanation in results.items():
            request = Request(method, params[method], targets[key], layer if METHODS[method].needs_layer else None,
                              first.objective)
            records[request] = explanation.record(0)
    return records, len(calls)


def cached_records(selection, requests: Sequence[Request], progress=None
                   ) -> tuple[dict[Request, ExplanationRecord], set[Request]]:
    """(records, computed): a record for every request, and the requests this caller computed.

    Cached requests are taken as they are; the missing ones are computed together (:func:`compute_records`), and
    requests from several sessions at once are computed once, the others waiting for that computation
    (``ExplanationCache.compute_many``). ``progress(done, total)`` follows the backend's protocol. The backend
    serialises calls on one model (``explainers.hooks.model_guard``), so sessions need no lock of their own."""
    cache = explanation_cache()
    keys = {request: cache_key(selection, request) for request in requests}

    def compute(missing: list[tuple], report) -> dict[tuple, ExplanationRecord]:
        wanted = set(missing)
        records, calls = compute_records(selection, [r for r, key in keys.items() if key in wanted], report)
        cache.calls += calls
        cache.records += len(records)
        return {cache_key(selection, request): record for request, record in records.items()}

    values, computed = cache.compute_many(list(dict.fromkeys(keys.values())), compute, progress)
    return {r: values[key] for r, key in keys.items()}, {r for r, key in keys.items() if key in computed}


def explain_cached(selection, request: Request, progress=None) -> tuple[ExplanationRecord, bool]:
    """(record, from_cache) of one request (:func:`cached_records`); from_cache is also True when another session
    computed it while this one waited."""
    records, computed = cached_records(selection, [request], progress)
    return records[request], request not in computed


def _channels(selection, request: Request) -> int | None:
    entry = selection.bundle.layer_entry(request.layer) if request.layer else None
    return entry.channels if entry else None


def multi_pass(selection, request: Request) -> bool:
    """Whether a request takes long enough to deserve a progress bar and a Cancel button."""
    hw = tuple(selection.inputs.shape[-2:])
    return METHODS[request.method].passes(request.kwargs, hw, _channels(selection, request)).total > 2


def request_seconds(selection, request: Request, measure: bool | None = None) -> float | None:
    """About how many seconds ``request`` takes on this machine: its passes at this model's measured pass times
    (``ui.runs.pass_times``, the same estimate as Compare's grid). A multi-pass request measures them if nobody
    has yet; a one- or two-pass request (``measure`` left None) only reads them, and is None until then."""
    times = pass_times(selection, measure=multi_pass(selection, request) if measure is None else measure)
    if times is None:
        return None
    return estimated_seconds(times, [request.method], 1, tuple(selection.inputs.shape[-2:]),
                             _channels(selection, request), params={request.method: request.kwargs})


def over_budget(seconds: float | None) -> bool:
    """Whether an estimate is past the budget under which a computation starts by itself."""
    return seconds is not None and seconds > AUTO_RUN_SECONDS


EXPLORE_RUN = RunControl(cancel_button=state.CANCEL_BUTTON, run_button=state.RUN_AGAIN,
                         cancelled=state.CANCELLED_RUN, started=state.STARTED_RUN)


def explain_cancellable(selection, request: Request) -> tuple[ExplanationRecord, bool] | None:
    """Run (or fetch) Explore's explanation, with a progress bar and a Cancel button for multi-pass methods
    (:class:`~ui.runs.RunControl`: a cancelled explanation waits for Run). One estimated past AUTO_RUN_SECONDS
    waits for Run too, its button showing the estimate. Returns None when there is nothing to show."""
    hit = cached(selection, request)
    if hit is not None:
        return hit, True
    name = METHODS[request.method].display_name
    multi = multi_pass(selection, request)
    seconds = request_seconds(selection, request) if multi else None
    if over_budget(seconds):
        notice = (f"{name} takes {seconds_text(seconds)} on this machine: explanations estimated over "
                  f"{AUTO_RUN_SECONDS:.0f} s wait for Run (lower its parameters under Parameters to make it quicker).")
        label = f"Run {name} ({seconds_text(seconds)})"
    else:
        notice, label = "Press Run to compute this explanation.", "Run"
    if not EXPLORE_RUN.may_run(cache_key(selection, request), st.empty(), notice, label=label,
                               auto=not over_budget(seconds)):
        return None
    if not multi:
        with st.spinner(f"{name}…"):
            return explain_cached(selection, request)
    slot = st.empty()
    with slot.container():
        EXPLORE_RUN.cancel(st, help="Stop this computation now.")
        reporter = ProgressReporter(name)
    try:
        return explain_cached(selection, request, progress=reporter)
    finally:
        slot.empty()
