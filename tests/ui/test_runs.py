"""The one Cancel / Run protocol of Explore and Compare (ui/runs.py): a cancelled computation waits for Run, and only
that computation; one over its budget waits for Run too; a computation the user ran keeps running."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest


def _page():
    """A page with one cancellable computation, named by the session's "id"; "auto" says whether it may start by
    itself (Compare: under its time budget; Explore: always)."""
    import streamlit as st

    from ui.runs import RunControl

    control = RunControl(cancel_button="cancel", run_button="run", cancelled="cancelled", started="started")
    run_id = st.session_state.get("id", "a")
    if control.may_run(run_id, st.empty(), "Press Run.", label="Run it", auto=st.session_state.get("auto", True)):
        control.cancel(st, help="Stop it now.")
        st.session_state.setdefault("ran", []).append(run_id)


def _open(**session) -> AppTest:
    at = AppTest.from_function(_page)
    for key, value in session.items():
        at.session_state[key] = value
    at.run()
    assert not at.exception, at.exception
    return at


def _notice(at) -> list[str]:
    return [i.value for i in at.info]


def test_cancel_holds_until_run_and_only_for_that_computation():
    at = _open()
    assert at.session_state["ran"] == ["a"] and not _notice(at)
    at.button(key="cancel").click().run()  # the click's rerun: the computation it interrupted is cancelled
    assert at.session_state["ran"] == ["a"]
    assert _notice(at) == ["Cancelled. Press Run."] and at.button(key="run").label == "Run it"
    assert not [b for b in at.button if b.key == "cancel"]
    at.run()  # any other rerun: still cancelled
    assert at.session_state["ran"] == ["a"] and _notice(at) == ["Cancelled. Press Run."]
    at.session_state["id"] = "b"  # another computation is not cancelled
    at.run()
    assert at.session_state["ran"] == ["a", "b"] and not _notice(at)
    at.session_state["id"] = "a"
    at.run()
    assert _notice(at) == ["Cancelled. Press Run."]
    at.button(key="run").click().run()  # Run: it runs at once, the notice gone
    assert at.session_state["ran"] == ["a", "b", "a"] and not _notice(at)
    assert [b for b in at.button if b.key == "cancel"]


def test_a_computation_that_may_not_start_by_itself_waits_for_run_then_keeps_running():
    at = _open(auto=False)
    assert "ran" not in at.session_state and _notice(at) == ["Press Run."]
    at.button(key="run").click().run()
    assert at.session_state["ran"] == ["a"] and not _notice(at)
    at.run()  # the user asked for it: later reruns (a widget change mid-way) carry on
    assert at.session_state["ran"] == ["a", "a"]
    at.button(key="cancel").click().run()
    assert at.session_state["ran"] == ["a", "a"] and _notice(at) == ["Cancelled. Press Run."]
