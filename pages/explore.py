"""Explore: one image, one method, one target — predictions, heatmap and overlay."""

import streamlit as st

from explainers import Cancelled
from ui.controls import layer_picker, method_picker, on_prediction_click, target_picker, view_controls
from ui.errors import guard
from ui.explanations import explain_cached, is_cached
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
        cached = is_cached(selection, info.name, params, target, layer)
        run_id = (selection.model, selection.image_hash, selection.preprocessing, info.name, str(params), str(target),
                  layer)
        if st.session_state.get("cancel_run"):
            st.session_state["cancelled_run"] = run_id
        if not cached and st.session_state.get("cancelled_run") == run_id:
            st.info("Cancelled. Press Run to compute this explanation.")
            if not st.button("Run", key="run_again", type="primary"):
                st.stop()
            st.session_state["cancelled_run"] = None
        if not cached and sum(info.passes(params, tuple(selection.inputs.shape[-2:]))) > 2:
            st.button("Cancel", key="cancel_run", help="Stop this computation now.")
        try:
            result, from_cache = explain_cached(bundle, selection.image_hash, selection.preprocessing,
                                                selection.inputs, info.name, params, target, layer,
                                                progress_label=info.display_name)
        except Cancelled:
            st.info("Cancelled.")
            st.stop()
        show_result(result, view, selection, probs, from_cache)
