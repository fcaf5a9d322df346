"""Inside the gradient: the vanilla gradient's one backward pass, layer by layer, for the current image."""

import streamlit as st

from explainers import render as rnd
from explainers.models import DIGITS_MODEL
from ui import state
from ui.controls import class_label, target_noun
from ui.dense import score_meaning
from ui.errors import guard
from ui.faithfulness import short_name
from ui.gradient import (
    cached_side_by_side,
    cached_trace,
    histogram_figure,
    ranges_figure,
    stats_line,
    steps_table,
    vector_figure,
)
from ui.method_docs import md_escape
from ui.predictions import selection_scores, top_k
from ui.sidebar import require_selection

st.title("Inside the gradient")
st.caption("A vanilla gradient (Simonyan et al. 2013) is one forward pass and one backward pass of the class score. "
           "Here is that pass layer by layer: what range the values have on the way forward, and what the "
           "gradient of the score looks like on the way back to the input pixels.")
selection = require_selection()
bundle = selection.bundle

if not getattr(bundle.model, "supports_hooks", True):
    st.info("This model is TorchScript: its layers cannot be hooked, so the pass cannot be followed layer by layer "
            "here. Explore's gradient methods (vanilla, integrated gradients, …) still run on it; load its weights "
            "as a state dict with their architecture to see inside.", icon=":material/visibility_off:")
    st.stop()

with guard():
    probs = selection_scores(selection)
    top = top_k(probs, 10, stable=selection.dense is not None)
    left, right = st.columns([3, 2])
    if selection.dense is None:
        target = left.selectbox("Class whose score is differentiated", top, key=state.GRADIENT_TARGET,
                                format_func=lambda i: f"{class_label(bundle, i)} · p = {probs[i]:.1%}",
                                help="The top 10 predictions of the current image.")
    else:  # a detector's boxes, a segmenter's regions: their scores are not probabilities
        noun = target_noun(bundle).lower()
        target = left.selectbox(f"{target_noun(bundle)} whose score is differentiated", top,
                                key=state.GRADIENT_TARGET,
                                format_func=lambda i: f"{short_name(bundle, i)} · score {probs[i]:.4g}",
                                help=f"The {noun} targets the sidebar lists, best score first (at most 10).")
    scope = right.radio("Layers", ["blocks", "leaves"], key=state.GRADIENT_SCOPE, horizontal=True,
                        format_func={"blocks": "blocks", "leaves": "every module"}.get)
    trace = cached_trace(selection.cache_id, selection.image_hash, selection.preprocessing, int(target), scope,
                         bundle, selection.inputs)
    if selection.dense is None:
        st.markdown(f"Score (logit) of **{bundle.categories[target]}**: {trace.score:.4g}. The backward pass "
                    "starts from the one-hot vector of that class at the logits.")
    else:
        st.markdown(f"Score of **{md_escape(bundle.categories[target])}**: {trace.score:.4g} ("
                    + score_meaning(bundle) + "). The backward pass starts from that one score.")
    st.plotly_chart(ranges_figure(trace), key=state.GRADIENT_RANGES)

    names = [layer.name for layer in trace.layers]
    picked = st.select_slider("Layer", names, value=names[-1], key=state.GRADIENT_LAYER)
    layer = trace.layers[names.index(picked)]
    st.caption(f"{layer.name} · {layer.kind} · output {list(layer.shape)}")
    forward, backward = st.columns(2)
    with forward:
        st.plotly_chart(histogram_figure(layer.activation, "Forward: activation values", "#4c78a8"),
                        key=state.GRADIENT_ACTIVATION)
        st.caption(stats_line(layer.activation))
    with backward:
        if layer.gradient is None:
            st.info("The score does not depend on this output (no gradient reaches it).")
        else:
            st.plotly_chart(histogram_figure(layer.gradient, "Backward: gradient of the score", "#e4572e"),
                            key=state.GRADIENT_GRADIENT)
            st.caption(stats_line(layer.gradient))
    st.subheader("At the input")
    pixels, gradient = st.columns(2)
    with pixels:
        st.plotly_chart(histogram_figure(trace.input, "Input values (after preprocessing)", "#4c78a8"),
                        key=state.GRADIENT_INPUT)
        st.caption(stats_line(trace.input))
    with gradient:
        st.plotly_chart(histogram_figure(trace.input_gradient, "Input gradient: the vanilla saliency map",
                                         "#e4572e"), key=state.GRADIENT_INPUT_GRADIENT)
        st.caption(stats_line(trace.input_gradient) + " · Explore's vanilla map is max over colour channels of "
                   "its absolute value.")

    if selection.model == DIGITS_MODEL:
        st.subheader("The same pass by hand: a NumPy reference")
        st.caption("For LeNet-5 every step is also written out in NumPy (explainers/digits/numpy_reference.py): "
                   "convolution as im2col, max-pooling that routes the gradient to each window's argmax, the "
                   "linear layers as matrix products. Its input gradient is the vanilla map, computed without "
                   "autograd; the table shows how far its numbers are from autograd's (float64 against float32).")
        rows = cached_side_by_side(selection.model, selection.image_hash, selection.preprocessing, int(target),
                                   bundle, selection.inputs)
        st.dataframe(steps_table(rows), hide_index=True)
        step = st.select_slider("Step", [r.name for r in rows], value="conv1", key=state.GRADIENT_NUMPY_STEP)
        row = next(r for r in rows if r.name == step)
        channel = 0
        if len(row.shape) == 4 and row.shape[1] > 1:
            channel = st.slider("Channel", 0, row.shape[1] - 1, 0, key=state.GRADIENT_NUMPY_CHANNEL)
        signed = rnd.View(sign="signed", colormap="RdBu_r")
        for label, numpy_values, autograd_values in (("Forward", row.forward_numpy, row.forward_autograd),
                                                      ("Backward", row.backward_numpy, row.backward_autograd)):
            if numpy_values is None or autograd_values is None:
                continue
            if len(row.shape) == 4:
                left, right = st.columns(2)
                for column, values, source in ((left, numpy_values, "NumPy"), (right, autograd_values, "autograd")):
                    picture = rnd.render(values[0, channel], signed).rgb
                    column.image(picture, width=220, caption=f"{label} · {source} · channel {channel}")
            else:
                st.plotly_chart(vector_figure(numpy_values[0], autograd_values[0], f"{label} · {step}"),
                                key=f"gradient.vector.{label}")
