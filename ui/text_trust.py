"""Trust on the Text page, for the same text, target and methods: the sanity checks (the model-randomisation
cascade and the random-logit test, ``explainers.trust.text.text_sanity``) and faithfulness (ERASER's
comprehensiveness and sufficiency, deletion and insertion curves beside a random ranking,
``text_faithfulness``). The numbers are the backend's; here they become charts, tables and coloured text."""

from __future__ import annotations

import math
from typing import Any

import plotly.graph_objects as go
import streamlit as st

from explainers import METHODS
from explainers.registry import Sanity
from explainers.text import TokenBundle, TokenView
from explainers.trust.text import DEYOUNG, RANDOM, REMOVAL_SAID, REMOVALS, text_faithfulness, text_sanity

from . import state
from .controls import TargetChoice
from .method_docs import md_escape
from .runs import ProgressReporter, RunControl
from .sanity import PALETTE
from .text import OBJECTIVE_LABELS, SEED, TextRequest, canonical, digest, draw_scores, maps_cancellable, sentence
from .text_models import TextModel

SANITY, FAITHFULNESS = "Sanity checks", "Faithfulness"
CHECKS = (SANITY, FAITHFULNESS)
TRUST_RUN = RunControl(cancel_button=state.TEXT_TRUST_CANCEL, run_button=state.TEXT_TRUST_RUN,
                       cancelled=state.TEXT_TRUST_CANCELLED, started=state.TEXT_TRUST_STARTED)
RANDOM_LABEL = "random (control)"
SIMILAR = 0.9  # a rank correlation this high: the map barely changed (the cascade) or ignores the class


def requests_of(methods: list[str], params: dict[str, dict[str, Any]], target: TargetChoice, objective: str
                ) -> list[TextRequest]:
    """The checks' maps in canonical form (``ui.text.canonical``: parameters validated, defaults filled in): what
    their results are kept under, so that one request spelled two ways is one check."""
    return [canonical(m, params.get(m), target.value, objective) for m in methods]


def is_control(method: str) -> bool:
    """A control (the random map): drawn dashed, grey, beside the methods."""
    return METHODS[method].sanity is Sanity.CONTROL


def remembered_check(key: tuple, label: str, compute) -> Any | None:
    """A check's result, computed once per key in this session with a progress bar and a Cancel button (a
    cancelled check waits for Run); None while it waits."""
    done = st.session_state.get(state.TEXT_TRUST_RESULTS, {})
    if key in done:
        return done[key]
    if not TRUST_RUN.may_run(key, st.empty(), f"Press Run to compute the {label.lower()} for this text."):
        return None

    def run():
        slot = st.empty()
        with slot.container():
            TRUST_RUN.cancel(st, help="Stop the checks now: the model is left as it was, nothing is kept.")
            reporter = ProgressReporter(label)
        try:
            return compute(reporter)
        finally:
            slot.empty()

    return state.remembered(state.TEXT_TRUST_RESULTS, key, run)


def method_name(method: str) -> str:
    return RANDOM_LABEL if method == RANDOM else METHODS[method].display_name


def _number(value: float) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else round(float(value), 3)


# ---- sanity ---------------------------------------------------------------------------------------------------


def cascade_figure(report) -> go.Figure:
    """Similarity to the original map after each step of the cascade, one line per method."""
    labels = ["original"] + [step.label for step in report.steps]
    figure = go.Figure()
    for i, method in enumerate(report.original):
        values = [1.0] + [step.similarity.get(method, math.nan) for step in report.steps]
        control = is_control(method)
        figure.add_trace(go.Scatter(x=list(range(len(labels))), y=values, mode="lines+markers",
                                    name=method_name(method), customdata=labels,
                                    line=dict(color="#888" if control else PALETTE[i % len(PALETTE)],
                                              dash="dash" if control else "solid", width=2),
                                    hovertemplate="%{customdata}: %{y:.3f}<extra></extra>"))
    figure.add_hline(y=SIMILAR, line=dict(color="#666", dash="dot", width=1),
                     annotation_text=f"{SIMILAR:g}: barely changed", annotation_position="bottom right")
    figure.update_layout(
        height=360, margin=dict(l=0, r=0, t=40, b=0),
        yaxis=dict(range=[-1.05, 1.05], title="Spearman ρ of |scores| to the original"),
        xaxis=dict(title="blocks re-initialised, from the output down", tickmode="array",
                   tickvals=list(range(len(labels))), ticktext=labels, range=[-0.5, len(labels) - 0.5],
                   automargin=True),
        legend=dict(orientation="h", yanchor="bottom", y=1.02, x=0, xanchor="left"),
    )
    return figure


def random_logit_rows(report, categories) -> list[dict]:
    return [{"Method": method_name(method), "ρ to a random class's map": _number(value),
             "Reading": "ignores the class" if value is not None and value >= SIMILAR else "depends on the class"}
            for method, value in report.random_logit.items()]


def sanity_section(model: TextModel, scored: TokenBundle, target: TargetChoice, objective: str, methods: list[str],
                   params: dict[str, dict[str, Any]], view: TokenView) -> None:
    bundle = model.bundle
    requests = requests_of(methods, params, target, objective)
    key = ("sanity", model.id, digest(scored.encoded.text), tuple(requests))
    report = remembered_check(key, SANITY, lambda reporter: text_sanity(
        bundle, scored.encoded, methods, target.value, objective=objective, seed=SEED,
        params={r.method: r.kwargs for r in requests}, progress=reporter))
    if report is None:
        return
    st.markdown("**Model randomisation** (Adebayo et al. 2018, arXiv:1810.03292): the classifier's blocks are "
                f"re-initialised from the output down, and each method explains the target's "
                f"{OBJECTIVE_LABELS.get(objective, objective)} on the same text again. A map that stays the same "
                "(ρ near 1) shows the text, not what the model learned"
                + (": the random control, dashed, is what that looks like." if RANDOM in methods else "."))
    st.plotly_chart(cascade_figure(report), key=f"{state.TEXT_TRUST_CHART}.cascade")
    if report.steps:
        labels = [step.label for step in report.steps]
        st.session_state.setdefault(state.TEXT_TRUST_STEP, labels[-1])
        if st.session_state[state.TEXT_TRUST_STEP] not in labels:
            st.session_state[state.TEXT_TRUST_STEP] = labels[-1]
        label = st.select_slider("Maps after step", labels, key=state.TEXT_TRUST_STEP, persist_state=state.KEEP,
                                 help="The maps each method gives once these blocks are random, beside the "
                                 "original ones (each on its own colour range).")
        step = report.steps[labels.index(label)]
        kwargs = {r.method: r.kwargs for r in requests}
        for method in report.original:
            original, randomised = st.columns(2)
            name = method_name(method)
            with original:
                draw_scores(scored.encoded, report.original[method], view, f"{name} · original model",
                            method=method, params=kwargs.get(method))
            with randomised:
                similarity = step.similarity.get(method, math.nan)
                draw_scores(scored.encoded, step.maps[method], view, f"{name} · after {label} (ρ {similarity:.2f})",
                            method=method, params=kwargs.get(method))
    st.markdown("**Random logit** (Sixt et al. 2020, arXiv:1912.09818): the map of the target against the map of "
                "another class drawn at random. Near 1: the map barely depends on which class is explained.")
    if report.random_logit:
        st.dataframe(random_logit_rows(report, bundle.categories), hide_index=True)
    for note in report.notes:
        st.caption(sentence(note))


# ---- faithfulness ---------------------------------------------------------------------------------------------


def faithfulness_rows(result) -> list[dict]:
    return [{"Method": method_name(row.method),
             "Comprehensiveness ↑": _number(row.comprehensiveness),
             "Sufficiency ↓": _number(row.sufficiency),
             "Deletion AUC ↓": _number(row.deletion_auc),
             "Insertion AUC ↑": _number(row.insertion_auc)} for row in result.rows]


def curves_figure(result, kind: str) -> go.Figure:
    """Deletion or insertion curves, one line per method, the random control dashed grey."""
    figure = go.Figure()
    for i, row in enumerate(result.rows):
        control = row.method == RANDOM
        values = row.deletion if kind == "deletion" else row.insertion
        auc = row.deletion_auc if kind == "deletion" else row.insertion_auc
        figure.add_trace(go.Scatter(
            x=result.curve_fractions.tolist(), y=[float(v) for v in values], mode="lines+markers",
            name=f"{method_name(row.method)} (AUC {auc:.3f})",
            line=dict(color="#888" if control else PALETTE[i % len(PALETTE)], dash="dash" if control else "solid",
                      width=2)))
    verb = "removed" if kind == "deletion" else "kept"
    figure.update_layout(
        title=dict(text=f"{kind.capitalize()}: the top tokens {verb}", font=dict(size=13)), height=320,
        margin=dict(l=0, r=0, t=30, b=0), legend=dict(orientation="h", y=-0.3),
        xaxis=dict(title=f"share of the tokens {verb}, highest scores first", tickformat=".0%"),
        yaxis=dict(title=OBJECTIVE_LABELS.get(result.objective, result.objective)))
    return figure


def faithfulness_section(model: TextModel, scored: TokenBundle, target: TargetChoice, objective: str,
                         methods: list[str], params: dict[str, dict[str, Any]]) -> None:
    bundle = model.bundle
    st.session_state.setdefault(state.TEXT_TRUST_REMOVAL, REMOVALS[0])
    removal = st.segmented_control("Removed tokens are", REMOVALS, key=state.TEXT_TRUST_REMOVAL, required=True,
                                   persist_state=state.KEEP,
                                   help=" · ".join(f"{name}: {said}" for name, said in REMOVAL_SAID.items()))
    # the random control is always in the table (the backend adds it, and refuses it asked for)
    requests = requests_of([m for m in methods if m != RANDOM], params, target, objective)
    maps = maps_cancellable(model, scored, requests, "Explaining")  # the maps Explain shows: one cache
    if maps is None:
        return
    scores = {request.method: maps[request].scores for request in requests}
    key = ("faithfulness", model.id, digest(scored.encoded.text), tuple(requests), target.value, objective, removal)
    result = remembered_check(key, FAITHFULNESS, lambda reporter: text_faithfulness(
        bundle, scored.encoded, scores, target.value, removal=removal, seed=SEED, progress=reporter))
    if result is None:
        return
    st.markdown(f"**ERASER** ({DEYOUNG.authors.split(',')[0]} et al. {DEYOUNG.year}, arXiv:{DEYOUNG.arxiv}) on the "
                f"maps shown under Explain ({OBJECTIVE_LABELS.get(objective, objective)} objective), scored by the "
                f"target's {OBJECTIVE_LABELS.get(result.objective, result.objective)}: comprehensiveness is how "
                "much it drops without the top tokens (higher: more faithful), sufficiency how much it drops with "
                "them alone (lower: more faithful). A faithful map beats the random ranking, the control always "
                "included (dashed grey).")
    st.table(faithfulness_rows(result), hide_index=True)  # a static table wraps its headers in a narrow window
    left, right = st.columns(2)
    left.plotly_chart(curves_figure(result, "deletion"), key=f"{state.TEXT_TRUST_CHART}.deletion")
    right.plotly_chart(curves_figure(result, "insertion"), key=f"{state.TEXT_TRUST_CHART}.insertion")
    for note in result.notes:
        st.caption(sentence(note))


def trust_view(model: TextModel, scored: TokenBundle, target: TargetChoice, objective: str, methods: list[str],
               params: dict[str, dict[str, Any]], view: TokenView) -> None:
    """The sanity checks or faithfulness of these methods' maps, for the page's text and target."""
    st.session_state.setdefault(state.TEXT_TRUST_CHECK, SANITY)
    check = st.segmented_control("Check", CHECKS, key=state.TEXT_TRUST_CHECK, required=True,
                                 persist_state=state.KEEP,
                                 help="Sanity checks: do the maps change when the model's weights are random, "
                                 "and with the class? Faithfulness: do the top tokens carry the prediction?")
    st.caption(f"For **{md_escape(target.label)}** on this text, its {OBJECTIVE_LABELS.get(objective, objective)} "
               f"(the objective picked above), with the methods picked above (seed {SEED}).")
    if check == FAITHFULNESS:
        faithfulness_section(model, scored, target, objective, methods, params)
    else:
        sanity_section(model, scored, target, objective, methods, params, view)
