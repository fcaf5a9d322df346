"""Sanity checks (Adebayo et al. 2018; Kindermans et al. 2019) on the current image and model, one click away."""

import streamlit as st

from explainers.methods.controls import ADEBAYO
from explainers.models import DIGITS_MODEL
from explainers.trust.sanity import KINDERMANS, cascade_blocks, filmstrip
from explainers.trust.similarity import METRIC_LABELS
from ui import state
from ui.controls import method_label, offered_methods, target_noun
from ui.errors import guard
from ui.models import twin_bundle
from ui.sanity import (
    CASCADE_PARAMS,
    DEFAULT_METHODS,
    TABLE_NOTE,
    curves_figure,
    flag_lines,
    mixed_lines,
    other_rows,
    rules,
    run_report,
    step_names,
    undefined_notes,
    verdict_rows,
)
from ui.sidebar import require_selection

st.title("Sanity checks")
st.caption(
    "Does the map depend on what the model learned? Cascading model randomisation re-initialises the network "
    f"from the output down, one block at a time, and compares each method's map with the original ({ADEBAYO}); "
    "the random-logit test compares the maps of other classes; input invariance shifts "
    f"the input by a constant that the first layer absorbs, so the outputs are identical ({KINDERMANS}). "
    "The sobel (edge detector, no model) and random controls run alongside."
)
selection = require_selection()

with guard():
    names = [m for m in offered_methods(selection.bundle) if m not in ("random", "sobel")]
    st.session_state.setdefault(state.SANITY_METHODS, [m for m in DEFAULT_METHODS if m in names])
    left, right = st.columns([3, 1], vertical_alignment="bottom")
    methods = left.multiselect("Methods", names, key=state.SANITY_METHODS, format_func=method_label,
                               persist_state=state.KEEP, wrap=True,
                               help="The sobel and random controls are always added.")
    blocks = len(cascade_blocks(selection.bundle.model))
    steps = right.number_input("Cascade steps (from the top)", 1, blocks, value=blocks, key=state.SANITY_STEPS,
                               help=f"This model has {blocks} blocks to re-initialise.")
    cheaper = [f"{m} with {', '.join(f'{k}={v}' for k, v in p.items())}" for m, p in CASCADE_PARAMS.items()
               if m in methods]
    st.caption((f"Lighter settings for a cascade: {'; '.join(cheaper)}. " if cheaper else "")
               + ("The target is the predicted class, held fixed at every step." if selection.dense is None else
                  f"The target is the best-scoring {target_noun(selection.bundle).lower()} (the sidebar's list), "
                  "held fixed at every step; the random-logit test compares it with the others."))
    if not methods:
        st.info("Pick at least one method.")
        st.stop()
    randomised = twin_bundle() if selection.model == DIGITS_MODEL else None
    if not st.toggle("Run the checks", key=state.SANITY_RUN, help="One cascade per method: minutes on a CPU."):
        st.info("Turn on **Run the checks** to compute them for this image.", icon=":material/play_arrow:")
        st.stop()
    report = run_report(selection, methods, int(steps), randomised)
    if report is None:  # cancelled: its Run button is on the page
        st.stop()
    cascade = report.cascade

    verdict = report.verdict
    st.subheader("Verdict")
    st.markdown("**Model randomisation**, judged on each similarity measure over the cascade, beside what "
                f"{ADEBAYO} found:")
    st.table(verdict_rows(verdict), hide_index=True)  # a static table wraps its cells: nothing clipped at 900 px
    st.caption(TABLE_NOTE)
    for line in flag_lines(verdict):
        st.warning(line, icon=":material/error:")
    others = other_rows(verdict)
    if others:
        st.markdown("**Other checks** (pass count over the similarity measures):")
        st.dataframe(others, hide_index=True, width="stretch")
    for line in mixed_lines(verdict):
        st.caption(line)
    for line in rules(verdict):
        st.caption(line)
    for note in report.notes:
        st.caption(note)

    st.subheader("Cascading model randomisation")
    metric = st.segmented_control("Similarity to the original map", cascade.metrics, key=state.SANITY_METRIC,
                                  format_func=METRIC_LABELS.get, default=cascade.metrics[0], required=True,
                                  persist_state=state.KEEP)
    st.plotly_chart(curves_figure(cascade, metric, verdict.thresholds.model_below[metric]), key=state.SANITY_CURVES)
    st.caption(f"Steps: {step_names(cascade)}. Dotted: the threshold the curve's mean (over steps 1 to "
               f"{cascade.steps[-1].index}) is held against.")
    for note in undefined_notes(cascade):
        st.caption(note)
    st.image(filmstrip(cascade), caption="Each method's |map| after each step (step 0: the original model), "
             "each tile on its own range so a collapsed map still shows its shape.")
    last = cascade.steps[-1]
    if last.logit_range is not None:
        st.caption(f"After step {last.index} the logits differ across images by {last.logit_range:.2g}.")
    st.caption(" · ".join(cascade.shared) + f" · {report.elapsed_s:.1f} s in all")

    if report.data_randomisation is not None:
        st.subheader("Data randomisation")
        data = report.data_randomisation
        st.dataframe([{"method": key, **{METRIC_LABELS[m]: data.mean(key, m) for m in METRIC_LABELS}}
                      for key in data.methods], hide_index=True)
        st.caption("Similarity of each map from the model to the map from the same network trained on shuffled "
                   "labels: a method that draws the same picture for both does not explain what was learned.")
