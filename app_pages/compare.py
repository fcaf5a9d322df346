"""Compare: a grid of methods × targets or methods × models, with differences, agreement and a layer sweep."""

import streamlit as st

from ui import state
from ui.compare import (
    COLUMN_KINDS,
    MODELS,
    Agreement,
    compare_controls,
    draw_grid,
    draw_layer_sweep,
    export_zip,
    fill_grid,
    grid_id,
    may_fill,
    sweep_methods,
    sweep_scope_label,
    sweep_seconds,
)
from ui.compare_models import (
    IOU,
    SPEARMAN,
    agreement_table,
    draw_model_grid,
    fill_model_grid,
    may_fill_models,
    model_controls,
)
from ui.controls import LAYER_SCOPES, layer_choices, method_label
from ui.dense import is_detection, plural, target_noun
from ui.errors import guard
from ui.predictions import selection_scores
from ui.sidebar import require_selection

st.title("Compare")
selection = require_selection()

with guard():
    probs = selection_scores(selection)
    if st.session_state.get(state.COMPARE_COLUMNS) not in COLUMN_KINDS:
        st.session_state[state.COMPARE_COLUMNS] = COLUMN_KINDS[0]
    if selection.dense is not None:  # a detector's boxes (a segmenter's regions) are its columns
        columns = COLUMN_KINDS[0]
        st.caption(f"Columns: this model's {plural(target_noun(selection))}"
                   + (" (detected)" if is_detection(selection) else " (predicted classes, and the region you drew)")
                   + ", each explained as its own target, best first; add others with “Add a target column”.")
    else:
        columns = st.segmented_control("Columns", COLUMN_KINDS, key=state.COMPARE_COLUMNS, required=True,
                                       persist_state=state.KEEP,
                                       help="Classes: one model, several target classes. Models: the same methods "
                                       "and target on two or three models, each with its own preprocessing.")
    if columns == MODELS:
        settings = model_controls(selection)
        if not settings.methods:
            st.info("Pick at least one method that every model can run.")
            st.stop()
        if len(settings.columns) < 2:
            st.info("Pick a model to compare with the sidebar's: its column appears beside it.",
                    icon=":material/add:")
        notice = st.empty()
        grid = draw_model_grid(settings)
        if grid.plan and may_fill_models(grid, notice):
            fill_model_grid(grid)
            notice.empty()
        if len(settings.columns) > 1:
            st.subheader("Model agreement")
            pair = " and ".join(c.name for c in settings.columns) if len(settings.columns) == 2 else \
                "every pair of models"
            st.caption(f"Per method, between {pair}: Spearman rank correlation of |map| and the overlap (IoU) of the "
                       "top 10% pixels, on one grid of the image (each model's map placed where that model saw "
                       "it). None: a constant map, which has no ranking to compare.")
            st.dataframe(agreement_table(grid), hide_index=True, key=state.COMPARE_MODEL_AGREEMENT,
                         column_config={name: st.column_config.NumberColumn(format="%.2f")
                                        for name in (SPEARMAN, IOU)})
        target, view, linked = settings.columns[0].target, settings.view, settings.linked
    else:
        settings = compare_controls(selection, probs)
        if not settings.methods:
            st.info("Pick at least one method.")
            st.stop()

        notice = st.empty()  # above the grid: the estimate and the Run button, once the quick rows are drawn
        grid = draw_grid(selection, settings)
        agreement = Agreement(settings)  # under the grid; drawn while the grid computes, and once it is done
        if grid.plan and may_fill(grid_id(selection, settings), grid, notice):
            agreement.draw(grid.results)  # the rows of the shared pass, already there
            fill_grid(selection, grid, on_step=lambda: agreement.draw(grid.results))
            notice.empty()  # the "Computing" line is a status of the run: gone once the grid is done
        results = grid.results
        agreement.draw(results, final=True)
        if results:
            st.download_button("Export all panels (.zip: PNG as shown + raw .npy + manifest)",
                               lambda: export_zip(results, selection, settings),
                               f"compare_{selection.image_name.rsplit('.', 1)[0]}.zip", "application/zip",
                               key=state.EXPORT_ZIP, on_click="ignore")
        target, view, linked = settings.targets[0], settings.view, settings.linked

    st.subheader("Layer sweep")
    methods = sweep_methods(selection)
    if not methods:
        st.info("No layer method can run on this model.")
        st.stop()
    left, middle, right = st.columns([2, 2, 1], vertical_alignment="bottom")
    method = left.selectbox("Method", methods, format_func=method_label, key=state.SWEEP_METHOD,
                            persist_state=state.KEEP)
    scope = middle.radio("Layers", LAYER_SCOPES, horizontal=True, key=state.SWEEP_SCOPE, persist_state=state.KEEP,
                         format_func=lambda s: sweep_scope_label(selection, s))
    layers = layer_choices(selection.bundle, scope)
    sweep_s = sweep_seconds(selection, method, layers)
    if right.toggle("Run sweep", key=state.SWEEP_RUN, help=f"{method_label(method)} at every layer, from one "
                    f"pass with every layer captured: {len(layers)} layers, about {sweep_s:.1f} s."):
        draw_layer_sweep(selection, method, target, layers, view, linked)
    else:
        st.caption(f"{len(layers)} layers in one pass, about {sweep_s:.1f} s, on {selection.model}; the first "
                   "column's target, the default layer first.")
