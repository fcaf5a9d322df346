"""The Sanity checks page's pieces: running the checks with a progress bar (cached), and their figures and tables.

The numbers all come from explainers.trust.sanity; here they only become charts and rows.
"""

from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st

from explainers import METHODS, Sanity
from explainers.trust.sanity import CHECK_NAMES, run_sanity
from explainers.trust.similarity import METRIC_LABELS

from . import state
from .layout import wrappable
from .method_docs import Measured, md_escape
from .runs import ProgressReporter, RunControl

DEFAULT_METHODS = ["vanilla", "smoothgrad", "integrated_gradients", "guided_backprop", "gradcam", "guided_gradcam"]
# Cheaper settings than the methods' defaults, so a whole cascade stays interactive (stated on the page).
CASCADE_PARAMS = {"smoothgrad": {"n_samples": 10}, "integrated_gradients": {"n_steps": 16}}
PALETTE = ["#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2", "#ff9da6", "#9d755d", "#bab0ac"]


def method_specs(methods: list[str]) -> list[tuple[str, dict]]:
    return [(m, dict(CASCADE_PARAMS.get(m, {}))) for m in methods]


SANITY_RUN = RunControl(cancel_button=state.SANITY_CANCEL, run_button=state.SANITY_RUN_BUTTON,
                        cancelled=state.SANITY_CANCELLED, started=state.SANITY_STARTED)


RANDOM_CLASSES = 3  # the random-logit test's other classes (the backend's default)


def random_count(bundle) -> int:
    """How many other classes the random-logit test compares with: 3, or as many as there are (a detector with two
    boxes has one other; with one box, none: the test is left out and a note says so)."""
    return max(0, min(RANDOM_CLASSES, len(bundle.categories) - 1))


def run_report(selection, methods: list[str], steps: int | None, randomised=None):
    """The checks for the current image, computed once per (model, image, methods, steps) in this session, with
    a progress bar and a Cancel button (:class:`~ui.runs.RunControl`, as on Explore and Compare: cancelled checks
    wait for Run). None while they wait."""
    specs = method_specs(methods)
    key = (selection.cache_id, selection.image_hash, selection.preprocessing,
           tuple((m, tuple(sorted(p.items()))) for m, p in specs), steps)
    done = st.session_state.get(state.SANITY_REPORTS, {})
    if key in done:
        remember_measured(selection, done[key])
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
                              random_classes_count=random_count(selection.bundle), progress=reporter)
        finally:
            slot.empty()

    report = state.remembered(state.SANITY_REPORTS, key, compute)
    remember_measured(selection, report)
    return report


def curves_figure(cascade, metric: str, threshold: float | None = None):
    """Similarity to the original map over the cascade, one line per method, controls dashed; the measure's
    threshold as a dotted line. The x axis numbers the steps (their block names are in the hover and under the
    chart), and the legend sits above the plot, clear of the axis title."""
    steps = [step.index for step in cascade.steps]
    names = [step.name for step in cascade.steps]
    figure = go.Figure()
    for i, (key, result) in enumerate(cascade.methods.items()):
        control = METHODS[result.method].family == "Control"
        figure.add_trace(go.Scatter(
            x=steps, y=result.mean_curve(metric), mode="lines+markers", name=key, connectgaps=False,
            customdata=names, line=dict(color=PALETTE[i % len(PALETTE)], dash="dash" if control else "solid", width=2),
            hovertemplate="step %{x}: %{customdata}<br>%{y:.3f}<extra>" + key + "</extra>",
        ))
    if threshold is not None:
        figure.add_hline(y=threshold, line=dict(color="#666", dash="dot", width=1),
                         annotation_text=f"threshold {threshold:g}", annotation_position="top right")
    figure.update_layout(
        height=400, margin=dict(l=0, r=0, t=40, b=0),
        yaxis=dict(range=[-1.05, 1.05], title=METRIC_LABELS[metric]),
        xaxis=dict(title="step: blocks re-initialised, from the output down", tickmode="linear", dtick=1,
                   range=[steps[0] - 0.5, steps[-1] + 0.5]),
        legend=dict(orientation="h", yanchor="bottom", y=1.02, x=0, xanchor="left"),
    )
    return figure


def step_names(cascade) -> str:
    """"1 _fc · 2 _conv_head+_bn1 · ...": what each numbered step re-initialised."""
    return " · ".join(f"{step.index} {step.name}" for step in cascade.steps[1:])


PUBLISHED_COLUMN = "Adebayo et al."
FLAG_COLUMN = "flag"
FLAG = "⚠ differs"
# Short headers and verdict words, so the table fits a narrow column (900 px with the sidebar open) unclipped.
SHORT_LABELS = {"spearman_abs": "ρ |map|", "spearman": "ρ signed", "ssim": "SSIM", "hog": "HOG"}
SHORT_PUBLISHED = {Sanity.PASSES: "passes", Sanity.FAILS: "fails", Sanity.CLASS_INSENSITIVE: "not tested",
                   Sanity.UNTESTED: "not tested", Sanity.CONTROL: "control", Sanity.AS_BASE: "as its base"}
TABLE_NOTE = ("ρ: Spearman rank correlation. Each cell is the measure's mean similarity to the original map over the "
              "cascade, pass or FAIL by the rule below; \"Adebayo et al.\" is what the paper found.")


def short_published(published) -> str:
    """"passes", "fails", "control", "not tested", or "passes (as vanilla)" for a wrapper."""
    word = SHORT_PUBLISHED.get(published.sanity, published.sanity.label)
    return word if published.source == published.method else f"{word} (as {published.source})"


def verdict_rows(verdict) -> list[dict]:
    """Model randomisation: one row per method, one column per similarity measure ("pass 0.212"), what the paper
    found, and a flag where the measurement differs from it (the reason is under the table)."""
    measures = verdict.measures("model_randomisation")
    rows = []
    for key, row in verdict.rows.items():
        check = row.get("model_randomisation")
        if check is None:
            continue
        line = {"method": wrappable(key)}
        line.update({SHORT_LABELS.get(m, m): check.measures[m].cell() if m in check.measures else "—"
                     for m in measures})
        line[PUBLISHED_COLUMN] = short_published(verdict.published[key])
        line[FLAG_COLUMN] = FLAG if verdict.disagreement(key) else ""
        rows.append(line)
    return rows


def other_rows(verdict) -> list[dict]:
    """The other checks that ran, one column each: "pass (4/4)" over the similarity measures, "mixed (2/4 pass)"
    where they disagree, or the one measure's value (input invariance)."""
    checks = [c for c in verdict.checks() if c != "model_randomisation"]
    if not checks:
        return []
    return [{"method": key, **{CHECK_NAMES[c]: row[c].cell() if c in row else "—" for c in checks}}
            for key, row in verdict.rows.items()]


def flag_lines(verdict) -> list[str]:
    """One markdown line per method whose measured verdict differs from the published one, with the reason."""
    return [f"**{md_escape(key)}** (Adebayo et al. found that it {md_escape(verdict.expected(key))}). "
            f"{md_escape(flag.reason)}" for key, flag in verdict.disagreements().items()]


def mixed_lines(verdict) -> list[str]:
    """Checks other than model randomisation whose similarity measures disagree, spelt out per measure."""
    lines = []
    for key, row in verdict.rows.items():
        for name, check in row.items():
            if name != "model_randomisation" and not check.agree:
                lines.append(f"{md_escape(key)}, {CHECK_NAMES[name]}: {md_escape(check.summary())}")
    return lines


def rules(verdict) -> list[str]:
    return [f"**{CHECK_NAMES[name]}**: {md_escape(rule)}" for name, rule in verdict.rules().items()]


def remember_measured(selection, report) -> None:
    """Hold each method's measured model-randomisation verdict on this image for the Methods page's cards (the
    latest image checked wins)."""
    if report.cascade is None:
        return
    measured = st.session_state.setdefault(state.SANITY_MEASURED, {})
    steps = len(report.cascade.steps) - 1
    for key, row in report.verdict.rows.items():
        check = row.get("model_randomisation")
        if check is not None:
            measured[report.verdict.methods[key]] = Measured(
                selection.image_name, selection.model, steps, len(report.cascade.blocks), check,
                report.verdict.disagreement(key))


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
