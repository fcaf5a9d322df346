"""Faithfulness: does removing what a map calls important change the prediction? Deletion, insertion, ROAD, a live
mask slider and the pointing game, on the current image and model."""

import streamlit as st

from explainers.digits import gallery
from explainers.methods.cam import WANG
from explainers.methods.rise import PETSIUK
from explainers.models import DIGITS_MODELS
from explainers.trust.benchmark import latest_evaluation
from explainers.trust.faithfulness import SAMEK, SUBSTRATES, TRUSTED_SUBSTRATE, grid_region, mask_top, region_choices
from explainers.trust.pointing import ZHANG, pointing_game
from explainers.trust.road import RONG
from ui import state
from ui.controls import method_label, offered_methods
from ui.errors import guard
from ui.faithfulness import (
    DEFAULT_METHODS,
    EVALUATIONS,
    auc_rows,
    clear_drawn_box,
    control_note,
    curve_figure,
    curves,
    drawn_box,
    explained_box,
    keep_drawn_box,
    maps_for,
    pointing_figure,
    reset_box_sliders,
    scale_note,
    scale_of,
    short_name,
)
from ui.predictions import selection_scores, top_k
from ui.sidebar import require_selection

st.title("Faithfulness")
st.caption(
    "A faithful map names the pixels the model needs. Deletion removes the most salient pixels first and watches "
    "the class probability fall (low AUC is faithful); insertion starts from an image with nothing in it (the "
    f"substrate) and puts them back (high AUC is faithful) ({PETSIUK}). ROAD fills removed pixels by noisy linear "
    f"imputation so the removal itself leaks no shape ({RONG}). The random control is the yardstick: a map that "
    "does no better than it is not shown to be faithful."
)
selection = require_selection()
bundle = selection.bundle
dense = selection.dense is not None

with guard():
    # "top1": the class, box or region every map explains
    explained = top_k(selection_scores(selection), 1, stable=dense)[0]
    scale = scale_of(selection, explained)
    if dense:
        st.caption(scale_note(selection, explained))
    names = offered_methods(bundle)
    st.session_state.setdefault(state.FAITH_METHODS, [m for m in DEFAULT_METHODS if m in names])
    methods = st.multiselect("Methods", names, key=state.FAITH_METHODS, format_func=method_label,
                             persist_state=state.KEEP,
                             help="Each with its default parameters, for the "
                             + (f"best-scoring target, {scale.target}" if dense else "predicted class")
                             + " (shared with Explore).")
    if not methods:
        st.info("Pick at least one method.")
        st.stop()
    a, b, c, d = st.columns(4)
    sign = a.selectbox("Map", ["absolute", "positive"], key=state.FAITH_SIGN, persist_state=state.KEEP,
                       help="Pixels are ranked by |map| or by positive evidence only.")
    steps = b.number_input("Steps", 5, 100, value=20, key=state.FAITH_STEPS, persist_state=state.KEEP)
    # The defaults are the setting the random control cannot win by artefact: regions of the CAM grid, mean fill.
    trusted = SUBSTRATES.index(TRUSTED_SUBSTRATE)
    deletion = c.selectbox("Deletion substrate", SUBSTRATES, index=trusted, key=state.FAITH_DEL,
                           persist_state=state.KEEP, help="What removed pixels become (Petsiuk et al.: black).")
    insertion = d.selectbox("Insertion substrate", SUBSTRATES, index=trusted, key=state.FAITH_INS,
                            persist_state=state.KEEP, help="What the image starts from (Petsiuk et al.: blur).")
    e, f = st.columns([1, 3], vertical_alignment="bottom")
    hw = selection.inputs.shape[-2:]
    sides = region_choices(hw)
    region = e.selectbox("Removed in", sides, index=sides.index(grid_region(hw)), key=state.FAITH_REGION,
                         persist_state=state.KEEP,
                         format_func=lambda side: "single pixels" if side == 1 else f"{side}×{side} px regions",
                         help="Single pixels (Petsiuk et al.) or square regions ranked by their mean (region "
                         f"perturbation, {SAMEK}). Scattered single pixels read to a CNN "
                         "as noise, which hits the random control hardest; regions remove evidence instead.")
    road = f.toggle("Also ROAD (MoRF and LeRF)", key=state.FAITH_ROAD, persist_state=state.KEEP,
                    help="Nine fractions per order, single pixels; the imputation solves a sparse linear system "
                    "per image.")

    st.subheader("Mask the most salient pixels")
    left, right = st.columns([1, 2])
    masked_method = left.selectbox("Map of", methods, key=state.FAITH_MASK_METHOD, format_func=method_label)
    fraction = left.slider("Share of pixels masked", 0.0, 1.0, 0.1, 0.01, key=state.FAITH_FRACTION)
    substrate = left.selectbox("Masked with", SUBSTRATES, key=state.FAITH_MASK_SUBSTRATE)
    mask_map = maps_for(selection, [masked_method], sign)[masked_method]
    masked = mask_top(bundle, selection.inputs, mask_map, fraction, substrate, target="top1")
    right.image(masked.pixels[0], width=300,
                caption=f"{fraction:.0%} most salient pixels of {method_label(masked_method)} masked")
    before, after = float(masked.original_probability[0]), float(masked.target_probability[0])
    left.metric(scale.metric, scale.value(after), delta=scale.change(after - before),
                help=None if not dense else f"Clean: {scale.value(before)}. {scale_note(selection, explained)}")
    if dense:  # each target's own score, never ranked against the others as if they were classes
        clean = selection_scores(selection)
        others = [i for i in top_k(clean, 4, stable=True) if i != int(masked.classes[0])][:3]
        if others:
            left.caption("Other targets' scores after masking (clean in brackets): " + ", ".join(
                f"{short_name(bundle, i)} {scale.value(masked.probabilities[0][i])} "
                f"({scale.value(clean[i])})" for i in others))
    else:
        left.caption("Now predicted: " + ", ".join(f"{bundle.categories[i]} {masked.probabilities[0][i]:.1%}"
                                                   for i in top_k(masked.probabilities[0], 3)))

    st.subheader("Curves")
    if not st.toggle("Compute the curves", key=state.FAITH_RUN, help="Steps × methods forward passes, batched."):
        st.info("Turn on **Compute the curves** for deletion and insertion on this image.",
                icon=":material/play_arrow:")
    else:
        result = curves(selection, methods, sign, int(steps), {"deletion": deletion, "insertion": insertion}, road,
                        int(region))
        left, right = st.columns(2)
        unit = "" if region == 1 else f", {region}×{region} px regions"
        left.plotly_chart(curve_figure(result["curves"], "deletion", f"Deletion (substrate: {deletion}{unit})",
                                       scale),
                          key=state.FAITH_DELETION)
        right.plotly_chart(curve_figure(result["curves"], "insertion", f"Insertion (substrate: {insertion}{unit})",
                                        scale),
                           key=state.FAITH_INSERTION)
        sets = [result["curves"]]
        if "road" in result:
            left, right = st.columns(2)
            left.plotly_chart(curve_figure(result["road"], "road_morf", "ROAD, most relevant first", scale),
                              key=state.FAITH_ROAD_MORF)
            right.plotly_chart(curve_figure(result["road"], "road_lerf", "ROAD, least relevant first", scale),
                               key=state.FAITH_ROAD_LERF)
            sets.append(result["road"])
        st.dataframe(auc_rows(sets), hide_index=True)
        note = control_note(sets, int(region), {"deletion": deletion, "insertion": insertion}, hw)
        if note:
            st.info(note, icon=":material/warning:")
        st.caption(("AUC: the area under the curve of " + scale.axis + " (not a probability). " if dense else "")
                   + "Deletion: lower is more faithful; insertion, ROAD LeRF: higher is. "
                   f"{result['curves'].model_passes} images through the model, shared by every method.")

    st.subheader("Pointing game")
    size = bundle.input_size
    box = None
    if selection.model in DIGITS_MODELS:
        item = next((g for g in gallery() if g.name == selection.image_name), None)
        if item is not None:
            box = tuple(int(v) for v in item.box)
            st.caption(f"The digit's ground-truth ink box: {box}.")
    # The picture is drawn once the box is known (the sliders below it, or a box drawn by hand), so it shows the
    # box that is scored.
    picture = st.container()
    place = (selection.cache_id, selection.image_hash, selection.preprocessing)
    drawn = drawn_box(place)
    if drawn is None:
        left, right = st.columns(2)
        target_box = explained_box(selection, explained)
        start = box or target_box or (size // 4, size // 4, 3 * size // 4, 3 * size // 4)
        reset_box_sliders(place, start)
        # kept while a drawn box hides them (persist_state), so Clear box gives back the box they held
        xs = left.slider("Box, left to right (model pixels)", 0, size, key=state.FAITH_BOX_X, persist_state=state.KEEP)
        ys = right.slider("Box, top to bottom (model pixels)", 0, size, key=state.FAITH_BOX_Y, persist_state=state.KEEP)
        box = (xs[0], ys[0], xs[1], ys[1]) if xs[1] > xs[0] and ys[1] > ys[0] else None
        st.caption(("It starts on the bounding box of " + scale.target + f" {target_box}. " if target_box else "")
                   + "Draw a box on the picture (box select), or set it with the sliders.")
    else:
        box = drawn
        left, right = st.columns([3, 1], vertical_alignment="center")
        left.caption(f"Box drawn by hand: {box}. Draw another, or clear it to set the box with sliders.")
        right.button("Clear box", key=state.FAITH_BOX_CLEAR, on_click=clear_drawn_box, icon=":material/close:")
    picture.plotly_chart(pointing_figure(selection.model_view, box), key=state.FAITH_BOX,
                         on_select=lambda: keep_drawn_box(place, size), selection_mode="box",
                         config={"displaylogo": False})
    if box is None:
        st.info("The box is empty: widen it to score each map's pointing game.")
    else:
        maps = maps_for(selection, methods, sign)
        rows = []
        for method, values in maps.items():
            scored = pointing_game(values, [box])
            rows.append({"method": method_label(method), "hit (max inside)": int(scored.hit[0]),
                         "energy inside": round(scored.energy_share, 3), "chance (box area)": round(scored.chance, 3)})
        # short headers (their meaning in the help and the caption) keep every column in view at 900 px
        st.dataframe(rows, hide_index=True, column_config={
            "hit (max inside)": st.column_config.NumberColumn("hit", help="1: the map's maximum lies in the box"),
            "energy inside": st.column_config.NumberColumn("energy in box", help="Share of positive map mass"),
            "chance (box area)": st.column_config.NumberColumn("chance", help="The box's share of the image: what "
                                                               "noise scores on both games"),
        })
        st.caption(f"Box {box} in the model's {size}×{size} pixels. Hit: the map's maximum lies in the box "
                   f"({ZHANG}); energy: the share of positive map mass inside ({WANG}).")

    if selection.model in DIGITS_MODELS:
        st.subheader("Benchmark on held-out digits")
        evaluation = latest_evaluation(EVALUATIONS)
        if evaluation is None:
            st.info(f"No benchmark yet. Run `python -m explainers evaluate --model lenet_digits --n 500 --out "
                    f"{EVALUATIONS}` and reload.")
        else:
            st.dataframe(evaluation.summary(), hide_index=True)
            st.caption(f"{evaluation.path} · {evaluation.created}")
