"""The Faithfulness page's pieces: maps from the shared explanation cache, curves computed on demand (kept per
session), their figures, the note shown when the random control ranks best, and the pointing game's box (sliders,
or one drawn by hand on the picture). The numbers come from explainers.trust (faithfulness, road, pointing,
benchmark)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from explainers import METHODS
from explainers import render as rnd
from explainers.models.dense import ScoredBundle
from explainers.trust.faithfulness import (
    SAMEK,
    TRUSTED_SUBSTRATE,
    control_ranks_best,
    faithfulness_curves,
    grid_region,
)
from explainers.trust.road import RONG, road_curves

from . import state
from .dense import adds_iou, is_detection, score_axis, score_meaning, target_noun
from .explanations import canonical, explain_cached
from .runs import ProgressReporter

DEFAULT_METHODS = ["vanilla", "gradcam", "guided_backprop", "random"]
CONTROL = "random"
KIND_NAMES = {"deletion": "deletion", "insertion": "insertion", "road_morf": "ROAD MoRF", "road_lerf": "ROAD LeRF"}
PALETTE = ["#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2", "#ff9da6", "#9d755d", "#bab0ac"]
EVALUATIONS = Path(os.environ.get("SALIENCY_EVALUATIONS", Path(__file__).resolve().parents[1] / "bench" / "results"
                                  / "evaluate"))


def maps_for(selection, methods: list[str], sign: str) -> dict[str, object]:
    """Each method's [H, W] map of the current image for its predicted class, from the shared explanation cache
    (default parameters: the same panels as Compare's, and Explore's at the defaults), reduced the way the view
    shows it."""
    maps = {}
    for method in methods:
        record, _ = explain_cached(selection, canonical(selection, method, {}, "top1"))
        maps[method] = rnd.to_map(record.attribution, sign, "max")
    return maps


def curves(selection, methods: list[str], sign: str, steps: int, substrates: dict[str, str], road: bool,
           region: int = 1):
    """Deletion and insertion curves (and ROAD when asked) of every method, computed once per settings."""
    key = (selection.cache_id, selection.image_hash, selection.preprocessing, tuple(methods), sign, steps,
           tuple(sorted(substrates.items())), road, region)

    def compute():
        maps = maps_for(selection, methods, sign)
        reporter = ProgressReporter("Faithfulness curves")
        try:
            result = {"curves": faithfulness_curves(selection.bundle, selection.inputs, maps, "top1", steps=steps,
                                                    substrate=substrates, region=region, progress=reporter)}
            if road:
                result["road"] = road_curves(selection.bundle, selection.inputs, maps, "top1", progress=reporter)
        finally:
            reporter.close()
        return result

    return state.remembered(state.FAITH_CURVES, key, compute)


@dataclass(frozen=True)
class Scale:
    """What the page's numbers are: a classifier's softmax probability of the class, or, for a detector's box or a
    segmenter's region, that target's own score (the backend's curves follow it: a softmax across boxes would make
    one box's curve depend on the others). ``target`` the explained target in words ("box #1 red"), ``axis`` the
    curves' y title, ``span`` their y range (None: fitted to the scores, a region's logit sum has no bound)."""

    probability: bool
    target: str
    axis: str
    span: tuple[float, float] | None
    digits: str = ".3f"

    def value(self, number: float) -> str:
        return f"{number:.1%}" if self.probability else f"{number:{self.digits}}"

    def change(self, number: float) -> str:
        return f"{number:+.1%}" if self.probability else f"{number:+{self.digits}}"

    @property
    def metric(self) -> str:
        return f"p({self.target})" if self.probability else f"score of {self.target}"


CLASS_AXIS = "probability of the class"


def short_name(bundle, index: int) -> str:
    """Target ``index`` without the clean score a box's name carries ("#1 red"; a region's class, "red"), or a
    classifier's class name."""
    if isinstance(bundle, ScoredBundle):
        return bundle.dense_targets[index].short_name
    return bundle.categories[index]


def target_words(selection, index: int) -> str:
    """Target ``index`` of the selection in words: "box #1 red", "region red (40% of pixels)", or a class name."""
    name = selection.bundle.categories[index]
    if getattr(selection, "dense", None) is None:
        return name
    noun = target_noun(selection)
    return f"{noun} {short_name(selection.bundle, index)}" if is_detection(selection) else f"{noun} {name}"


def scale_of(selection, index: int) -> Scale:
    """The Scale of target ``index`` (the one the page explains: "top1")."""
    words = target_words(selection, index)
    if getattr(selection, "dense", None) is None:
        return Scale(True, words, CLASS_AXIS, (0.0, 1.02))
    axis = score_axis(selection.bundle, index)
    if is_detection(selection):
        return Scale(False, words, axis, (0.0, 2.04) if adds_iou(selection.bundle) else (0.0, 1.02))
    return Scale(False, words, axis, None, ".4g")


def scale_note(selection, index: int) -> str:
    """The line under the page's intro for a dense selection: what the curves and the mask follow."""
    scale = scale_of(selection, index)
    return (f"Here the curves and the mask follow the score of {scale.target}, the best-scoring target "
            f"({score_meaning(selection.bundle, index)}), as it is: not a probability, and not a softmax across "
            "the other targets, which would make one target's curve move with the others.")


def curve_figure(curve_set, kind: str, title: str, scale: Scale | None = None):
    """The curves of one kind, one line per method (the control dashed); ``scale`` names the y axis (a class's
    probability by default)."""
    figure = go.Figure()
    methods = list(dict.fromkeys(c.method for c in curve_set.curves if c.kind == kind))
    for i, method in enumerate(methods):
        curve = curve_set.curve(kind, method)
        control = METHODS[method].family == "Control"
        figure.add_trace(go.Scatter(
            x=curve.fractions.tolist(), y=curve.probability[0].tolist(), mode="lines",
            name=f"{METHODS[method].display_name} (AUC {curve.mean_auc:.3f})",
            line=dict(color=PALETTE[i % len(PALETTE)], dash="dash" if control else "solid", width=2),
        ))
    figure.update_layout(title=dict(text=title, font=dict(size=13)), height=320, margin=dict(l=0, r=0, t=30, b=0),
                         xaxis=dict(title="share of pixels", tickformat=".0%"),
                         yaxis=dict(title=scale.axis if scale else CLASS_AXIS,
                                    range=list(scale.span) if scale and scale.span else
                                    None if scale else [0, 1.02]),
                         legend=dict(orientation="h", y=-0.3))
    return figure


def auc_rows(curve_sets: list) -> list[dict]:
    rows = {}
    for curve_set in curve_sets:
        for row in curve_set.table():
            line = rows.setdefault(row["method"], {"method": METHODS[row["method"]].display_name})
            line[f"{row['kind']} AUC"] = round(row["auc"], 4)
    return list(rows.values())


def control_note(curve_sets: list, region: int, substrates: dict[str, str], hw) -> str | None:
    """One line when the random control ranks best on any curve (control_ranks_best), with the reason: the
    perturbation, not the map, moves the model. None when a real method ranks first on every curve.
    ``substrates``: the fill of each deletion/insertion kind; ``region``: their region side; ``hw``: the input's."""
    kinds = control_ranks_best(curve_sets, CONTROL)
    if not kinds:
        return None
    plain = [kind for kind in kinds if kind in substrates]
    fills = " / ".join(sorted({substrates[kind] for kind in plain}))
    reasons = []
    if plain and region == 1:
        reasons.append(f"scattered single pixels ({fills} fill) take the image off the data distribution, which a "
                       "ranking scattered like noise exploits")
    elif plain:
        reasons.append(f"{region}×{region} px regions with {fills} fill move the model as much as the evidence "
                       "they remove: on this image these curves do not tell the maps from noise")
    if len(plain) < len(kinds):
        reasons.append("ROAD removes single pixels, and scattered ones are imputed almost exactly from their "
                       "neighbours, which a ranking scattered like noise exploits")
    cell = grid_region(hw)
    trusted = region == cell and all(substrates[kind] == TRUSTED_SUBSTRATE for kind in plain)
    advice = f" Try {cell}×{cell} px regions with {TRUSTED_SUBSTRATE} fill." if plain and not trusted else ""
    named = " and ".join(KIND_NAMES[kind] for kind in kinds)
    why = "; ".join(reasons)
    return f"The random control ranks best at {named}, an artefact: {why} ({_short(SAMEK)}; {_short(RONG)}).{advice}"


def _short(reference) -> str:
    return f"{reference.authors.split(',')[0]} et al. {reference.year}, arXiv:{reference.arxiv}"


def drawn_box(place) -> tuple[int, int, int, int] | None:
    """The box drawn by hand on the pointing game's picture of ``place`` (model, image, preprocessing), if any."""
    kept = st.session_state.get(state.FAITH_DRAWN)
    return kept[1] if kept and kept[0] == place else None


def keep_drawn_box(place, size: int) -> None:
    """on_select of the pointing game's picture: keep the box just drawn (the chart's own selection is gone once
    the figure, now showing that box, is drawn again)."""
    box = selected_box(st.session_state.get(state.FAITH_BOX), size)
    if box is not None:
        st.session_state[state.FAITH_DRAWN] = (place, box)


def reset_box_sliders(place, start: tuple[int, int, int, int]) -> None:
    """Set the box sliders to ``start`` (x0, y0, x1, y1) when they were set on another image (a box belongs to the
    objects of one picture: a digit's ground-truth box, or the centre half) or were never set."""
    if st.session_state.get(state.FAITH_BOX_FOR) != place or state.FAITH_BOX_X not in st.session_state:
        st.session_state[state.FAITH_BOX_X] = (start[0], start[2])
        st.session_state[state.FAITH_BOX_Y] = (start[1], start[3])
        st.session_state[state.FAITH_BOX_FOR] = place


def explained_box(selection, index: int) -> tuple[int, int, int, int] | None:
    """Where the pointing game's box starts on a dense selection: the bounding box (x0, y0, x1, y1, x1 and y1
    exclusive, model pixels, as the sliders and the pointing game count them) of target ``index``'s pixels: the
    detector's box, or the segmenter's region. None for a classifier or an empty mask."""
    if getattr(selection, "dense", None) is None:
        return None
    size = selection.bundle.input_size
    x0, y0, x1, y1 = (min(max(int(round(v)), 0), size) for v in selection.bundle.dense_targets[index].bounds())
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def clear_drawn_box() -> None:
    st.session_state.pop(state.FAITH_DRAWN, None)


def pointing_figure(picture, box: tuple[int, int, int, int] | None):
    """The model's view as a figure to draw a box on (plotly's box select)."""
    figure = go.Figure(go.Image(z=np.asarray(picture)))
    if box is not None:
        x0, y0, x1, y1 = box
        figure.add_shape(type="rect", x0=x0 - 0.5, y0=y0 - 0.5, x1=x1 - 0.5, y1=y1 - 0.5,
                         line=dict(color="#00e5ff", width=2))
    figure.update_layout(height=360, margin=dict(l=0, r=0, t=0, b=0), dragmode="select")
    figure.update_xaxes(visible=False)
    figure.update_yaxes(visible=False)
    return figure


def selected_box(event, size: int) -> tuple[int, int, int, int] | None:
    """The box a user drew (plotly selection event) in the model's pixels, or None."""
    boxes = (getattr(getattr(event, "selection", None), "box", None) or
             ((event or {}).get("selection", {}) or {}).get("box", []))
    if not boxes:
        return None
    box = boxes[-1]
    xs, ys = box.get("x", []), box.get("y", [])
    if len(xs) < 2 or len(ys) < 2:
        return None
    x0, x1 = sorted(int(round(v + 0.5)) for v in xs[:2])
    y0, y1 = sorted(int(round(v + 0.5)) for v in ys[:2])
    x0, y0 = max(0, x0), max(0, y0)
    x1, y1 = min(size, x1), min(size, y1)
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None
