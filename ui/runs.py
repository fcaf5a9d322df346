"""Long computations on a page: a progress bar that a rerun interrupts, and the one Cancel / Run protocol that
Explore and Compare share.

A click on Cancel makes Streamlit rerun the script, which stops the running computation inside its progress
callback: the explainer unwinds through its ``finally`` blocks and the model is left as it was. That rerun marks
the computation cancelled, and it does not start again until the user presses Run. A computation that should not
start by itself (Compare's grid over its time budget) waits behind the same Run button.
"""

from __future__ import annotations

import time
from collections.abc import Hashable
from dataclasses import dataclass

import streamlit as st

from explainers.timing import PassTimes, measure_pass_times

# A computation estimated to take longer waits for a Run button that shows the estimate (Explore's explanation,
# Compare's grid): the one budget rule of the dashboard.
AUTO_RUN_SECONDS = 30.0


@st.cache_resource(show_spinner=False)
def _measured() -> dict[tuple, PassTimes]:
    """Pass times per (model, input shape, device), shared by every session: a few floats each."""
    return {}


def pass_times(selection, measure: bool = True) -> PassTimes | None:
    """This model's measured pass times on the selection's input (``explainers.timing``), what every estimate in
    seconds is made of: measured once per process, model, input shape and device (a few warm passes). With
    ``measure=False``, None until something has measured them."""
    key = (selection.model, tuple(selection.inputs.shape), str(selection.bundle.device))
    times = _measured().get(key)
    if times is None and measure:
        with st.spinner("Timing one pass of the model…"):
            times = _measured()[key] = measure_pass_times(selection.bundle.model, selection.inputs)
    return times


class ProgressReporter:
    """``progress(done, total)`` for the backend: a Streamlit bar with done/total and an ETA, and after them what
    the method says of its current pass (``say``, e.g. an optimisation's iteration and score).

    Every update goes through Streamlit, so a click elsewhere (Cancel, or any widget) stops the script right there,
    inside the callback.
    """

    def __init__(self, label: str, container=st):
        self.label = label
        self.bar = container.progress(0.0, text=f"{label}: starting…")
        self.started = time.perf_counter()
        self.done, self.total = 0, 0
        self.said = ""

    def __call__(self, done: int, total: int) -> bool:
        self.done, self.total = done, total
        self._draw()
        return True

    def say(self, text: str) -> None:
        """Show ``text`` after the pass count until the method says something else (``Progress.say``)."""
        self.said = " ".join(str(text).split())
        self._draw()

    def text(self) -> str:
        """"Extremal perturbation: 120/300 passes, about 12 s left · iteration 120/300: score 4.2"."""
        done, total = self.done, self.total
        elapsed = time.perf_counter() - self.started
        eta = elapsed / done * (total - done) if done else float("nan")
        eta_text = f", about {eta:.0f} s left" if done and eta == eta else ""
        count = f"{done}/{total} passes{eta_text}" if total else "starting…"
        return f"{self.label}: {count}" + (f" · {self.said}" if self.said else "")

    def _draw(self) -> None:
        self.bar.progress(min(self.done / max(self.total, 1), 1.0), text=self.text())

    def close(self) -> None:
        self.bar.empty()


@dataclass(frozen=True)
class RunControl:
    """One page's Cancel / Run protocol, named by its session keys. A computation is named by a run id (Explore:
    the explanation's cache key; Compare: the grid's id), so a cancel holds for that computation only."""

    cancel_button: str  # key of the Cancel button, drawn while the computation runs
    run_button: str  # key of the Run button, offered in place of a computation that waits
    cancelled: str  # session key: the run id cancelled last
    started: str  # session key: the run id the user pressed Run for

    def may_run(self, run_id: Hashable, slot, notice: str, label: str = "Run", auto: bool = True,
                icon: str = ":material/timer:") -> bool:
        """Whether the computation ``run_id`` runs in this script run.

        A click on Cancel (this run is its rerun) first marks ``run_id`` cancelled. The computation runs when the
        user pressed Run for it, or when ``auto`` and it is not cancelled. Otherwise ``slot`` (an ``st.empty``)
        shows ``notice``, after "Cancelled. " when it was, and a Run button labelled ``label``; a click on it runs
        the computation at once, and the slot is cleared for the caller's own status line.
        """
        session = st.session_state
        if session.get(self.cancel_button):
            session[self.started], session[self.cancelled] = None, run_id
        cancelled = session.get(self.cancelled) == run_id
        if session.get(self.started) == run_id or (auto and not cancelled):
            return True
        with slot.container():
            st.info(("Cancelled. " if cancelled else "") + notice,
                    icon=":material/stop_circle:" if cancelled else icon)
            pressed = st.button(label, key=self.run_button, type="primary")
        if not pressed:
            return False
        session[self.started], session[self.cancelled] = run_id, None
        slot.empty()
        return True

    def cancel(self, container, help: str) -> None:
        """The Cancel button, drawn while the computation runs: its click's rerun stops it."""
        container.button("Cancel", key=self.cancel_button, help=help)
