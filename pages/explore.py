"""Explore: one image, one method, one target — predictions, heatmap and overlay."""

import streamlit as st

from explainers import Cancelled
from ui.controls import layer_picker, method_picker, on_prediction_click, target_picker, view_controls
from ui.errors import guard
from ui.explanations import ProgressReporter, cache_key, explain_cached, explanation_cache
from ui.figures import predictions_figure
from ui.outputs import show_result
from ui.predictions import probabilities, top_k
from ui.sidebar import sidebar

st.title("Explore")
selection = sidebar()
if selection is None:
    st.stop()
bundle = selection.bundle

with guard():
    probs = probabilities(selection.model, selection.image_hash, selection.preprocessing, bundle, selection.inputs)
    top = top_k(probs)
    left, right = st.columns([2, 3])
    with left:
        st.subheader("Predictions")
        st.plotly_chart(
            predictions_figure([bundle.categories[i] for i in top], [float(probs[i]) for i in top], top,
                               st.session_state.get("target_class") if st.session_state.get("target_mode") == "Class"
                               else None),
            key="predictions_chart", on_select=on_prediction_click, selection_mode="points",
            config={"displayModeBar": False},
        )
    with right:
        st.subheader("Explain")
        target = target_picker(bundle, probs)
        info, params = method_picker()
        layer = layer_picker(bundle, info)
    with st.expander("View", expanded=True):
        view = view_controls(channels=info.attribution_channels)

    if target is not None:
        key = cache_key(selection.model, selection.image_hash, selection.preprocessing, info.name, params, target,
                        layer)
        cancel_slot, run_slot = st.columns([1, 5])
        cancelled_now = st.session_state.get("cancel_run", False)
        if cancelled_now:
            st.session_state["cancelled_key"] = key
        cached = explanation_cache().get(key)
        if cached is None and st.session_state.get("cancelled_key") == key:
            st.info("Cancelled. Press Run to compute this explanation.")
            if not run_slot.button("Run", key="run_again", type="primary"):
                st.stop()
            st.session_state["cancelled_key"] = None
        reporter = None
        if cached is None and sum(info.passes(params, tuple(selection.inputs.shape[-2:]))) > 2:
            cancel_slot.button("Cancel", key="cancel_run", help="Stop this computation.")
            reporter = ProgressReporter(info.display_name)
        try:
            result, from_cache = explain_cached(bundle, selection.image_hash, selection.preprocessing,
                                                selection.inputs, info.name, params, target, layer,
                                                progress=reporter)
        except Cancelled:
            st.info("Cancelled.")
            st.stop()
        finally:
            if reporter is not None:
                reporter.close()
        show_result(result, view, selection, probs, from_cache)
