"""Compare: a grid of methods × targets, with differences, method agreement and a layer sweep."""

import streamlit as st

from explainers import METHODS
from ui.compare import (
    agreement_figure,
    compare_controls,
    draw_grid,
    draw_layer_sweep,
    export_zip,
    sweep_layers,
)
from ui.errors import guard
from ui.predictions import probabilities
from ui.sidebar import sidebar

st.title("Compare")
selection = sidebar()
if selection is None:
    st.stop()

with guard():
    probs = probabilities(selection.model, selection.image_hash, selection.preprocessing, selection.bundle,
                          selection.inputs)
    settings = compare_controls(selection, probs)
    if not settings.methods:
        st.info("Pick at least one method.")
        st.stop()
    results = draw_grid(selection, settings)

    st.subheader("Method agreement")
    st.caption(f"Between every pair of methods in the grid, for the predicted class "
               f"({settings.labels[settings.targets[0]]}), on absolute maps.")
    if len(settings.methods) < 2:
        st.info("Add a second method to compare their maps.")
    else:
        spearman_tab, iou_tab = st.tabs(["Spearman rank correlation", "Top-10% IoU"])
        with spearman_tab:
            st.plotly_chart(agreement_figure(results, settings.methods, settings.targets[0], settings.view,
                                             "spearman"), key="agreement_spearman")
        with iou_tab:
            st.plotly_chart(agreement_figure(results, settings.methods, settings.targets[0], settings.view, "iou"),
                            key="agreement_iou")
    st.download_button("Export all panels (.zip: PNG + .npy + manifest)",
                       lambda: export_zip(results, selection, settings),
                       f"compare_{selection.image_name.rsplit('.', 1)[0]}.zip", "application/zip", key="export_zip",
                       on_click="ignore")

    st.subheader("Layer sweep")
    cam_methods = [n for n, info in METHODS.items() if info.needs_layer and n not in ("scorecam",)]
    left, middle, right = st.columns([2, 2, 1])
    method = left.selectbox("CAM method", cam_methods, format_func=lambda n: METHODS[n].display_name,
                            key="sweep.method")
    layers_all = sweep_layers(selection, "every layer")
    scope = middle.radio("Layers", ["blocks", "every layer"], horizontal=True, key="sweep.scope",
                         format_func=lambda s: f"{s} ({len(sweep_layers(selection, s))})")
    if right.toggle("Run sweep", key="sweep.run", help=f"One {METHODS[method].display_name} per layer; "
                    f"{len(layers_all)} layers in the catalogue."):
        draw_layer_sweep(selection, method, settings.targets[0], sweep_layers(selection, scope), settings.view)
