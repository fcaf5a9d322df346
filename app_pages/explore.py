"""Explore: one image, one method, one target — predictions, heatmap and overlay."""

import streamlit as st

from ui import state
from ui.controls import layer_picker, method_picker, on_prediction_click, show_cost, target_picker, view_controls
from ui.dense_panel import dense_predictions
from ui.errors import guard
from ui.explanations import canonical, explain_cancellable, request_seconds
from ui.figures import predictions_figure
from ui.outputs import show_result
from ui.predictions import outside_caption, selection_scores, top_k
from ui.sidebar import require_selection
from ui.trust import trust_panel

st.title("Explore")
selection = require_selection()
bundle = selection.bundle


@st.fragment
def view_and_result(request, outcome, channels: int | None) -> None:
    """View controls and the output: a view change reruns only this fragment, from the cached attribution."""
    with st.expander("View", expanded=True):
        view = view_controls(channels=channels)
    if outcome is not None:
        show_result(*outcome, view=view, selection=selection)
        trust_panel(selection, outcome[0], request)


info = request = outcome = None
with guard():
    probs = selection_scores(selection)  # a detector's box scores, a segmenter's pixel shares
    top = top_k(probs, stable=selection.dense is not None)
    left, right = st.columns([2, 3])
    with right:
        st.subheader("Explain")
        target = target_picker(bundle, probs, selection.target_scope)
        info, params = method_picker(bundle)
        layer = layer_picker(bundle, info)
        if target is not None:
            request = canonical(selection, info.name, params, target.value, layer)
        show_cost(bundle, info, params, layer, request_seconds(selection, request) if request else None)
    with left:
        st.subheader("Predictions")
        selected = target.indices[0] if target is not None and len(target.indices) == 1 else None
        if selection.dense is not None:  # the boxes, or the segmentation, on the picture the model sees
            dense_predictions(selection, selected)
        else:
            st.plotly_chart(
                predictions_figure([bundle.categories[i] for i in top], [float(probs[i]) for i in top], top,
                                   selected),
                key=state.PREDICTIONS_CHART, on_select=on_prediction_click, selection_mode="points",
                config={"displayModeBar": False},
            )
            outside = outside_caption(bundle.categories, probs, target.indices if target is not None else (), top)
            if outside:  # a target below the top 5 is on no bar: say its probability here
                st.caption(outside)
    if request is not None:
        outcome = explain_cancellable(selection, request)

if info is not None:
    with guard():
        view_and_result(request, outcome, info.attribution_channels)
