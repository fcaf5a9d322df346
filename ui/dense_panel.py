"""Explore's predictions panel for a detector or segmenter: the boxes (labels, scores) or the segmentation (with
its legend and class shares) on the picture the model sees. A click on a box, or on a class's bar, makes it the
target; a box dragged on the segmentation is a region of the user's own (ui/dense.py reads it)."""

from __future__ import annotations

import base64

import streamlit as st

from explainers.dense.outputs import DETECTION
from explainers.dense.records import describe_target
from explainers.dense.targets import BoxTarget, RegionTarget

from . import state
from .dense import drawn_box, on_dense_select, on_shares_select
from .figures import LABELLED_BOXES, boxes_figure, labelled_boxes, predictions_figure, segmentation_figure
from .sidebar import Selection, _model_view_png


def _picture_uri(selection: Selection) -> str:
    data = _model_view_png(selection.model, selection.image_hash, selection.preprocessing, selection.dense,
                           selection.image)
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def dense_predictions(selection: Selection, selected: int | None) -> None:
    """The panel; ``selected`` the target explained now (its box drawn thick, its bar highlighted)."""
    scored, prediction, dense = selection.bundle, selection.prediction, selection.dense
    if dense.kind == DETECTION:
        boxes = [(t.box, t.label, t.name) for t in scored.dense_targets if isinstance(t, BoxTarget)]
        st.plotly_chart(boxes_figure(_picture_uri(selection), prediction.size, boxes, selected),
                        key=state.DENSE_CHART, on_select=on_dense_select, selection_mode="points",
                        config={"displayModeBar": False})
        named = len(labelled_boxes(len(boxes), selected))
        best = min(named, LABELLED_BOXES)
        shown = (f" Labelled: the best {best}{' and the selected one' if named > best else ''}; the other "
                 f"{len(boxes) - named} are thin outlines without a label (all {len(boxes)} are listed under Target)."
                 if named < len(boxes) else "")
        st.caption(f"{len(boxes)} box{'es' if len(boxes) != 1 else ''} at or above score "
                   f"{dense.score_threshold:.2f}, on the picture the model "
                   f"sees.{shown} Click a box's centre or corner to explain it, or pick it under Target.")
        return
    background = next((i for i in range(len(dense.categories)) if dense.is_background(i)), None)
    names = {label: f"{dense.label_name(label)} {share:.0%}" for label, share in prediction.shares.items()}
    place = (selection.model, selection.image_hash, selection.preprocessing)
    predicted = {t.label: i for i, t in enumerate(scored.dense_targets) if isinstance(t, RegionTarget) and not t.drawn}
    st.plotly_chart(segmentation_figure(_picture_uri(selection), prediction.classes, names, background,
                                        drawn=drawn_box(place), targets=predicted),
                    key=state.DENSE_CHART, on_select=on_dense_select, selection_mode=("points", "box"),
                    config={"displayModeBar": False})
    st.caption("The predicted class of every pixel" + (f" ({dense.label_name(background)} left clear)"
                                                       if background is not None else "")
               + ". Drag a box on it to explain a region of your own; click a class on it, or its bar, to explain that "
               "class's mask.")
    regions = list(range(len(scored.dense_targets)))
    # a class's share of the pixels; the drawn region's share of the picture (the bars' text: not in the labels)
    shares = [describe_target(dense, t)["share"] for t in scored.dense_targets]
    st.plotly_chart(
        predictions_figure(list(scored.categories), shares, regions, selected,
                           labels=[t.name if t.drawn else t.short_name for t in scored.dense_targets],
                           hover="%{y}: %{x:.1%} of the picture"),
        key=state.DENSE_SHARES, on_select=on_shares_select, selection_mode="points",
        config={"displayModeBar": False},
    )
