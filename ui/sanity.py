"""The Sanity checks page's pieces: running the checks with a progress bar (cached), and their figures and tables.

The numbers all come from explainers.trust.sanity; here they only become charts and rows.
"""

from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st

from explainers import METHODS
from explainers.trust.sanity import CHECK_NAMES, run_sanity
from explainers.trust.similarity import METRIC_LABELS

from . import state
from .runs import ProgressReporter, RunControl

DEFAULT_METHODS = ["vanilla", "smoothgrad", "integrated_gradients", "guided_backprop", "gradcam", "guided_gradcam"]
# Cheaper settings than the methods' defaults, so a whole cascade stays interactive (stated on the page).
CASCADE_PARAMS = {"smoothgrad": {"n_samples": 10}, "integrated_gradients": {"n_steps": 16}}
PALETTE = ["#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2", "#ff9da6", "#9d755d", "#bab0ac"]


def method_specs(methods: list[str]) -> list[tuple[str, dict]]:
    return [(m, dict(CASCADE_PARAMS.get(m, {}))) for m in methods]


SANITY_RUN = RunControl(cancel_button=state.SANITY_CANCEL, run_button=state.SANITY_RUN_BUTTON,
                        cancelled=state.SANITY_CANCELLED, started=state.SANITY_STARTED)


def run_report(selection, methods: list[str], steps: int | None, randomised=None):
    """The checks for the current image, computed once per (model, image, methods, steps) in this session, with
    a progress bar and a Cancel button (:class:`~ui.runs.RunControl`, as on Explore and Compare: cancelled checks
    wait for Run). None while they wait."""
    specs = method_specs(methods)
    key = (selection.model, selection.image_hash, selection.preprocessing,
           tuple((m, tuple(sorted(p.items()))) for m, p in specs), steps)
    done = st.session_state.get(state.SANITY_REPORTS, {})
    if key in done:
        return done[key]
    if not SANITY_RUN.may_run(key, st.empty(), "Press Run to compute the checks for this image."):
        return None

    def compute():
        slot = st.empty()
        with slot.container():
            SANITY_RUN.cancel(st, help="Stop the checks now: the model is left as it was, nothing is kept.")
            reporter = ProgressReporter("Sanity checks")
        try:
            return run_sanity(selection.bundle, selection.inputs, specs, steps=steps, randomised=randomised,
                              progress=reporter)
        finally:
            slot.empty()

    return state.remembered(state.SANITY_REPORTS, key, compute)


def curves_figure(cascade, metric: str):
    """Similarity to the original map over the cascade, one line per method; controls dashed."""
    names = [f"{step.index}: {step.name}" for step in cascade.steps]
    figure = go.Figure()
    for i, (key, result) in enumerate(cascade.methods.items()):
        control = METHODS[result.method].family == "Control"
        figure.add_trace(go.Scatter(
            x=names, y=result.mean_curve(metric), mode="lines+markers", name=key, connectgaps=False,
            line=dict(color=PALETTE[i % len(PALETTE)], dash="dash" if control else "solid", width=2),
            hovertemplate="%{x}<br>%{y:.3f}<extra>" + key + "</extra>",
        ))
    figure.update_layout(height=380, margin=dict(l=0, r=0, t=10, b=0), yaxis=dict(range=[-1.05, 1.05],
                         title=METRIC_LABELS[metric]), xaxis=dict(title="re-initialised, from the output down"),
                         legend=dict(orientation="h", y=-0.45))
    return figure


def verdict_rows(verdict) -> list[dict]:
    checks = [c for c in CHECK_NAMES if any(c in row for row in verdict.rows.values())]
    rows = []
    for key, row in verdict.rows.items():
        line = {"method": key}
        for name in checks:
            check = row.get(name)
            if check is None:
                line[CHECK_NAMES[name]] = "—"
                continue
            value = "undefined: constant map" if check.value is None else f"{check.value:.3f}"
            word = {True: "pass", False: "FAIL", None: "undecided"}[check.passed]
            line[CHECK_NAMES[name]] = f"{word} ({value})"
        line["published verdict"] = verdict.expected(key)
        rows.append(line)
    return rows


def rules(verdict) -> list[str]:
    seen = {}
    for row in verdict.rows.values():
        for name, check in row.items():
            seen.setdefault(name, check.rule)
    return [f"**{CHECK_NAMES[name]}**: {rule}" for name, rule in seen.items()]


def undefined_notes(cascade) -> list[str]:
    """Where a similarity is undefined, the reason, once per method (never NaN on screen)."""
    notes = []
    for key, result in cascade.methods.items():
        steps = [s for s, row in enumerate(result.similarity) if any(not c["spearman_abs"].defined for c in row)]
        if steps:
            cells = result.similarity[steps[0]]
            reason = next(c["spearman_abs"].reason for c in cells if not c["spearman_abs"].defined)
            notes.append(f"{key}: {reason} from step {steps[0]}")
    return notes
