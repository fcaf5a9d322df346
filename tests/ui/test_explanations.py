"""The explanation cache shared by sessions and pages: a request is keyed in its canonical form, so every page finds
what another computed; identical requests at the same moment share one computation; sessions explain one shared
model at once without a lock of the UI's own."""

from __future__ import annotations

import dataclasses
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from explainers import METHODS, Cancelled, Contrast, explain, explain_many
from tests.explainers.helpers import hook_counts
from tests.ui.helpers import COMPARE, EXPLORE, heatmap, start, texts
from ui import state
from ui.explanations import ExplanationCache, cache_key, cached_records, canonical, explanation_cache

CAT_TOP, CAT_SECOND, TABBY = 285, 282, 281
FAITHFULNESS = "app_pages/faithfulness.py"


def _slow(calls: list, seconds: float = 0.4, steps: int = 4):
    def fn(report):
        calls.append(threading.get_ident())
        for step in range(steps):
            time.sleep(seconds / steps)
            if report(step + 1, steps) is False:
                raise Cancelled("stopped")
        return object()

    return fn


def test_eight_identical_requests_compute_once_and_share_the_result():
    cache, calls, seen = ExplanationCache(), [], []
    start = threading.Barrier(8)

    def ask(_):
        start.wait()
        return cache.compute(("k",), _slow(calls), progress=lambda done, total: seen.append((done, total)))

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(ask, range(8)))
    assert len(calls) == 1
    values = {id(value) for value, _ in results}
    assert len(values) == 1  # the very same record for everyone
    assert sorted(shared for _, shared in results) == [False] + [True] * 7
    assert (4, 4) in seen and any(done < 4 for done, _ in seen)  # the waiting callers saw the progress too
    assert cache.compute(("k",), _slow(calls))[1] is True and len(calls) == 1  # then it is simply cached


def test_different_requests_do_not_wait_for_each_other():
    cache, calls = ExplanationCache(), []
    with ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(cache.compute, (i,), _slow(calls)) for i in range(3)]
        assert all(not f.result()[1] for f in futures)
    assert len(calls) == 3


def test_a_cancelled_computation_is_not_cached_and_a_waiting_caller_takes_over():
    cache, calls = ExplanationCache(), []
    owner_started = threading.Event()

    def cancelled(report):
        calls.append("owner")
        owner_started.set()
        time.sleep(0.3)
        raise Cancelled("the user changed a widget")

    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(cache.compute, ("k",), cancelled)
        owner_started.wait()
        second = pool.submit(cache.compute, ("k",), _slow(calls))
        with pytest.raises(Cancelled):
            first.result()
        value, shared = second.result()
    assert calls[0] == "owner" and len(calls) == 2 and shared is False and value is not None


def test_a_waiting_caller_can_stop_waiting_while_the_computation_goes_on():
    cache, calls = ExplanationCache(), []
    owner_started = threading.Event()

    def owner_fn(report):
        owner_started.set()
        return _slow(calls, seconds=0.6)(report)

    with ThreadPoolExecutor(2) as pool:
        owner = pool.submit(cache.compute, ("k",), owner_fn)
        owner_started.wait()
        waiter = pool.submit(cache.compute, ("k",), _slow(calls), progress=lambda done, total: False, poll_s=0.05)
        with pytest.raises(Cancelled, match="stopped waiting"):
            waiter.result()
        assert owner.result()[1] is False
    assert len(calls) == 1 and cache.get(("k",)) is not None


def test_overlapping_key_sets_compute_each_key_once():
    """A grid asking for keys {1, 2} and another for {2, 3} at once: 2 is computed once, by whoever claimed it."""
    cache, computed = ExplanationCache(), []
    first_started = threading.Event()

    def many(missing, report):
        computed.append(sorted(key[0] for key in missing))
        first_started.set()
        time.sleep(0.3)
        report(1, 1)
        return {key: ("value", key) for key in missing}

    with ThreadPoolExecutor(2) as pool:
        a = pool.submit(cache.compute_many, [(1,), (2,)], many)
        first_started.wait()
        b = pool.submit(cache.compute_many, [(2,), (3,)], many, poll_s=0.05)
        (values_a, mine_a), (values_b, mine_b) = a.result(), b.result()
    assert computed == [[1, 2], [3]]
    assert values_a == {(1,): ("value", (1,)), (2,): ("value", (2,))}
    assert values_b == {(2,): ("value", (2,)), (3,): ("value", (3,))}
    assert values_b[(2,)] is values_a[(2,)]  # taken from the first computation
    assert mine_a == {(1,), (2,)} and mine_b == {(3,)}
    assert cache.compute_many([(1,), (3,)], many)[1] == set()  # all cached now


# ---- the canonical request -----------------------------------------------------------------------------------


def _shown_defaults(method: str) -> dict:
    """What Explore's parameter widgets pass for a method left at its defaults: every parameter that applies."""
    values: dict = {}
    for name, param in METHODS[method].params.items():
        if param.applies(values):
            values[name] = param.default
    return values


def test_every_spelling_of_one_request_has_one_key(cat_selection):
    sel = cat_selection
    same = [
        canonical(sel, "gradcam", {}, CAT_TOP),  # Compare: no parameters, the class index, no layer
        canonical(sel, "gradcam", {"relu": True}, CAT_TOP, sel.bundle.default_layer),  # Explore: every widget
        canonical(sel, "gradcam", {}, "top1"),  # Faithfulness: the rank
        canonical(sel, "gradcam", {"relu": 1}, "Egyptian cat"),  # any other spelling explain() accepts
    ]
    assert len({cache_key(sel, request) for request in same}) == 1
    assert same[0].target == CAT_TOP and same[0].layer == sel.bundle.default_layer
    assert dict(same[0].params) == {"relu": True}  # the defaults are filled in
    # what changes the map changes the key
    assert canonical(sel, "gradcam", {"relu": False}, CAT_TOP) != same[0]
    assert canonical(sel, "gradcam", {}, "top2") == canonical(sel, "gradcam", {}, CAT_SECOND) != same[0]
    assert canonical(sel, "gradcam", {}, CAT_TOP, "_blocks.15").layer == "_blocks.15"
    assert canonical(sel, "vanilla", {}, CAT_TOP, "_blocks.15").layer is None  # a method without a layer reads none
    assert canonical(sel, "vanilla", {}, Contrast("top1", "top2")).target == Contrast(CAT_TOP, CAT_SECOND)
    assert canonical(sel, "vanilla", {}, "tabby vs top2") == canonical(sel, "vanilla", {}, Contrast(TABBY, CAT_SECOND))


@pytest.mark.parametrize("method", ["gradcam", "smoothgrad", "integrated_gradients", "occlusion"])
def test_explores_widget_values_at_their_defaults_are_the_grids_request(cat_selection, method):
    """The methods of Compare's default grid that have parameters: Explore's request at the defaults is the grid's
    request (no parameters), so neither page computes what the other did."""
    assert _shown_defaults(method)  # the premise: Explore passes values where Compare passes none
    assert canonical(cat_selection, method, _shown_defaults(method), CAT_TOP) == canonical(
        cat_selection, method, {}, CAT_TOP)


def test_explore_finds_the_panels_compare_computed():
    """Compare computes Grad-CAM with no parameters, Explore asks with every widget value: computed once."""
    at = start(session={state.COMPARE_METHODS: ["vanilla", "gradcam"]}, page=COMPARE)
    cache = explanation_cache()
    assert cache.records == 4  # the premise: both rows, for both targets
    calls = cache.calls
    at.switch_page(EXPLORE).run()
    at.selectbox(key=state.METHOD).set_value("gradcam").run()
    assert not at.exception and not at.error
    assert heatmap(at).title == "Grad-CAM · Egyptian cat · _head_act"
    assert cache.calls == calls  # nothing computed the second time
    assert any("· cached" in text for text in texts(at))


def test_faithfulness_finds_the_maps_explore_computed():
    """Explore asks for the predicted class by its index, Faithfulness by its rank ("top1"): computed once."""
    at = start(session={state.FAITH_METHODS: ["vanilla", "gradcam"]})
    at.selectbox(key=state.METHOD).set_value("gradcam").run()
    assert not at.exception and heatmap(at).title == "Grad-CAM · Egyptian cat · _head_act"
    cache = explanation_cache()
    calls = cache.calls
    assert calls == 2  # the premise: vanilla, then Grad-CAM
    at.switch_page(FAITHFULNESS).run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.title[0].value == "Faithfulness" and at.dataframe  # the mask and the pointing game used both maps
    assert cache.calls == calls


# ---- one model, several sessions at once ----------------------------------------------------------------------


def test_sessions_explaining_one_shared_model_at_once_get_what_serial_calls_get(cat_selection):
    """No lock in ui/: the backend serialises calls on one model (``model_guard``). Threads asking the cached-records
    function for one panel (``explain``) and for a grid (``explain_many``) on the shared model at the same moment,
    guided backprop's backward hooks beside a Grad-CAM capture, get exactly what serial calls get and leave no hook
    behind."""
    bundle, x = cat_selection.bundle, cat_selection.inputs
    methods = ["guided_backprop", "vanilla", "gradcam"]
    serial = {m: explain(bundle, x, m, target=CAT_TOP, seed=0).attribution[0].numpy() for m in methods}
    grid = {key: e.attribution[0].numpy()
            for key, e in explain_many(bundle, x, methods, [CAT_TOP, CAT_SECOND], seed=0).items()}
    explanation_cache().clear()
    start_together = threading.Barrier(len(methods) + 2)

    def panel(method: str, session: int):
        selection = dataclasses.replace(cat_selection, image_hash=f"{method}-{session}")  # its own key: it runs
        request = canonical(selection, method, {}, CAT_TOP)
        start_together.wait()
        records, computed = cached_records(selection, [request])
        assert computed == {request}
        return records[request].attribution

    def whole_grid(session: int):
        selection = dataclasses.replace(cat_selection, image_hash=f"grid-{session}")
        requests = {(m, t): canonical(selection, m, {}, t) for m in methods for t in (CAT_TOP, CAT_SECOND)}
        start_together.wait()
        records, _ = cached_records(selection, list(requests.values()))
        return {pair: records[request].attribution for pair, request in requests.items()}

    with ThreadPoolExecutor(len(methods) + 2) as pool:
        panels = {m: pool.submit(panel, m, 0) for m in methods}
        grids = [pool.submit(whole_grid, session) for session in range(2)]
        for method, future in panels.items():
            np.testing.assert_allclose(future.result(), serial[method], rtol=1e-5, atol=1e-7)
        for future in grids:
            for pair, attribution in future.result().items():
                np.testing.assert_allclose(attribution, grid[pair], rtol=1e-5, atol=1e-7)
    assert hook_counts(bundle.model) == 0
    assert explanation_cache().calls == len(methods) + 2
