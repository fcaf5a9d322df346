"""The explanation cache shared by sessions: identical requests at the same moment share one computation."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from explainers import Cancelled
from ui.explanations import ExplanationCache


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
