"""Explore: one image, one method, one target — predictions, heatmap and overlay."""

import streamlit as st

from ui.controls import layer_picker, method_picker, on_prediction_click, target_picker, view_controls
from ui.errors import guard
from ui.explanations import explain_cancellable
from ui.figures import predictions_figure
from ui.outputs import show_result
from ui.predictions import probabilities, top_k
from ui.sidebar import sidebar

st.title("Explore")
selection = sidebar()
if selection is None:
    st.stop()
bundle = selection.bundle


@st.fragment
def view_and_result(outcome, channels: int) -> None:
    """View controls and the output: a view change reruns only this fragment, from the cached attribution."""
    with st.expander("View", expanded=True):
        view = view_controls(channels=channels)
    if outcome is not None:
        show_result(*outcome, view=view, selection=selection, probabilities=probs)


info = outcome = None
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
    outcome = explain_cancellable(selection, info, params, target, layer) if target is not None else None


if info is not None:
    with guard():
        view_and_result(outcome, info.attribution_channels)
