"""Detectors and segmenters in the dashboard: their controls in the sidebar, their prediction on the image, and
the targets (boxes, regions) every page explains.

A detector or segmenter (``explainers.models.dense.DenseBundle``) cannot be explained until targets are picked:
the sidebar lists what the model predicts (one target per detected box, or per predicted class), adds the region
the user drew on the segmentation, and hands the pages a ``ScoredBundle`` whose "class" t is target t. Every page
then runs on it as on a classifier; the target's box or region is outlined on each overlay
(:func:`target_outline`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import streamlit as st

from explainers.dense.outputs import DETECTION
from explainers.dense.records import format_box
from explainers.dense.targets import IOU_THRESHOLD, REDUCTIONS, DenseScores, RegionTarget
from explainers.models.dense import REDUCTION, DenseBundle, Prediction, ScoredBundle

from . import state

DETECTION_HELP = (
    "A detector lists the boxes it finds with their scores; each box is a target (its class score, from the same "
    "detection found again on every perturbed input). Click a box on Explore, or pick it under Target."
)
SEGMENTATION_HELP = (
    "A segmenter paints each pixel with a class; each predicted class's mask is a target (the sum, or mean, of that "
    "class's logits over the mask). Click a class on Explore's segmentation (or its bar) to explain its mask; drag a "
    "box on it to explain a region of your own."
)


@dataclass(frozen=True)
class DenseSettings:
    """The sidebar's dense controls: ``threshold`` the lowest detection score listed, ``with_iou`` and ``iou`` the
    box score's (pytorch-grad-cam's FasterRCNNBoxScoreTarget), ``reduction`` a region's score."""

    threshold: float
    with_iou: bool
    iou: float
    reduction: str


@st.cache_data(show_spinner="Running the model on the image…", max_entries=64)
def dense_prediction(model: str, image_hash: str, preprocessing: str, threshold: float, _bundle: DenseBundle,
                     _inputs) -> Prediction:
    """What the model predicts on the image, cached per (model, image, preprocessing, score threshold). The shared
    bundle is never changed: a shallow copy (the same network) carries this session's threshold."""
    return _bundle.with_threshold(threshold).predict(_inputs)


@st.cache_resource(show_spinner="Checking the targets on the image…", max_entries=16)
def scored_bundle(model: str, image_hash: str, preprocessing: str, threshold: float, keys: tuple, iou: float,
                  with_iou: bool, _bundle: DenseBundle, _targets: tuple, _inputs) -> ScoredBundle:
    """The bundle the explainers run on, one per target set (``keys``, the targets' own keys) and score settings.
    A TargetError (no box, a box not found again) is not cached: the page shows it."""
    return _bundle.with_threshold(threshold).scored(list(_targets), _inputs, iou_threshold=iou, with_iou=with_iou)


def dense_controls(bundle: DenseBundle) -> DenseSettings:
    """The dense model's controls (drawn in the sidebar, under the model). They keep their values as every other
    control does (``persist_state``): while a classifier is selected they are not drawn, and come back as they
    were."""
    detector = bundle.kind == DETECTION
    st.caption(DETECTION_HELP if detector else SEGMENTATION_HELP)
    if detector:
        threshold = st.slider("Detection score threshold", 0.0, 1.0, float(bundle.score_threshold), step=0.01,
                              key=state.DENSE_SCORE, persist_state=state.KEEP,
                              help="Boxes scored at or above this are listed as targets. Lower it when the model "
                              "detects nothing on your image.")
        with_iou = st.checkbox("Add IoU to the box score (pytorch-grad-cam's target)", False,
                               key=state.DENSE_WITH_IOU, persist_state=state.KEEP,
                               help="Off: a box's score is the class score of its re-detection. On: plus the IoU "
                               "of that re-detection with the box, as pytorch-grad-cam's FasterRCNNBoxScoreTarget.")
        iou = st.slider("IoU threshold", 0.05, 0.95, float(IOU_THRESHOLD), step=0.05, key=state.DENSE_IOU,
                        persist_state=state.KEEP,
                        help="On a perturbed input a box counts as found again when a detection of the same class "
                        "overlaps it by more than this; otherwise its score is 0.")
        return DenseSettings(float(threshold), bool(with_iou), float(iou), REDUCTION)
    reduction = st.radio("Region score", REDUCTIONS, REDUCTIONS.index(REDUCTION), key=state.DENSE_REDUCTION,
                         horizontal=True, persist_state=state.KEEP,
                         help="sum: the class's logits added over the region (pytorch-grad-cam's "
                         "SemanticSegmentationTarget). mean: their average, so a large region does not weigh more.")
    return DenseSettings(float(bundle.score_threshold), False, float(IOU_THRESHOLD), str(reduction))


def nothing_fix(bundle: DenseBundle) -> str:
    """The fix shown under "nothing to explain" (``bundle`` at the session's threshold): where the sidebar's
    threshold can list more, that control; otherwise another image (the message itself says why)."""
    if bundle.lower_threshold_helps():
        return "Lower the Detection score threshold in the sidebar, or pick another image."
    return "Pick another image."


# ---- the region drawn on the segmentation ------------------------------------------------------------------------


def _place(model: str, image_hash: str, preprocessing: str) -> tuple:
    return model, image_hash, preprocessing


def drawn_box(place: tuple) -> tuple[float, float, float, float] | None:
    """The box drawn on this image's segmentation (model-input pixels), or None."""
    drawn = st.session_state.get(state.DENSE_REGION)
    return drawn[1] if drawn and drawn[0] == place else None


def clear_region() -> None:
    st.session_state.pop(state.DENSE_REGION, None)


def region_class_key(box: tuple[float, ...]) -> str:
    """The key of the drawn region's class picker: one per box drawn."""
    return f"{state.DENSE_REGION_CLASS}.{'-'.join(f'{float(v):.1f}' for v in box)}"


def region_controls(bundle: DenseBundle, prediction: Prediction, place: tuple, reduction: str) -> RegionTarget | None:
    """The drawn region's class and its Clear button (sidebar), and the region as a target; None when none is
    drawn. An empty region raises TargetError (the page says so; Clear is still here)."""
    box = drawn_box(place)
    if box is None:
        return None
    classes = list(range(len(bundle.categories)))
    st.caption(f"Drawn region: {format_box(box)} (x0, y0, x1, y1, model pixels)")
    st.button("Clear drawn region", key=state.DENSE_CLEAR_REGION, on_click=clear_region, icon=":material/close:")
    majority = bundle.drawn_region(box, prediction, None, reduction)  # TargetError when it covers no pixel
    # one picker per drawn box: a new box starts at its own majority class
    label = st.selectbox("Class scored in the drawn region", classes, majority.label,
                         key=region_class_key(box), format_func=bundle.label_name,
                         help="The region's score is this class's logits over the region; it starts at the class "
                         "the model predicts most inside it.")
    return majority if int(label) == majority.label else bundle.drawn_region(box, prediction, int(label), reduction)


def on_dense_select() -> None:
    """Callback of Explore's boxes or segmentation figure: a clicked box (or class) becomes the target; a box
    dragged on the segmentation becomes the drawn region (and the target)."""
    event = st.session_state.get(state.DENSE_CHART) or {}
    chosen = event.get("selection", {}) if isinstance(event, dict) else getattr(event, "selection", {}) or {}
    boxes = chosen.get("box") or []
    place = st.session_state.get(state.DENSE_PLACE)
    if boxes and place is not None:
        xs, ys = sorted(boxes[-1]["x"][:2]), sorted(boxes[-1]["y"][:2])
        st.session_state[state.DENSE_REGION] = (place, (xs[0], ys[0], xs[1], ys[1]))
        st.session_state[state.DENSE_PICK_DRAWN] = True
        return
    _pick_point(chosen.get("points") or [])


def on_shares_select() -> None:
    """Callback of the segmentation's class bars: the clicked class's mask becomes the target."""
    event = st.session_state.get(state.DENSE_SHARES) or {}
    chosen = event.get("selection", {}) if isinstance(event, dict) else getattr(event, "selection", {}) or {}
    _pick_point(chosen.get("points") or [])


def _pick_point(points: list) -> None:
    for point in points:
        custom = point.get("customdata")
        index = custom[0] if isinstance(custom, (list, tuple)) else custom
        if index is not None and int(index) >= 0:
            st.session_state[state.TARGET_MODE] = "Class"
            st.session_state[state.TARGET_CLASS] = int(index)
            return


# ---- the selection's targets -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DenseChoice:
    """What the sidebar made of a dense model on this image: its prediction, the targets, the scored bundle."""

    source: DenseBundle
    prediction: Prediction
    scored: ScoredBundle
    key: tuple  # the target set and score settings: part of every cache key of this selection


def dense_choice(model: str, image_hash: str, preprocessing: str, bundle: DenseBundle, inputs,
                 settings: DenseSettings) -> DenseChoice:
    """The prediction, the targets (and the drawn region's controls, for a segmenter) and the scored bundle.
    Raises TargetError when there is nothing to explain (no box above the threshold, an empty drawn region)."""
    prediction = dense_prediction(model, image_hash, preprocessing, settings.threshold, bundle, inputs)
    targets = list(bundle.targets(prediction, settings.reduction))
    if bundle.kind != DETECTION:
        place = _place(model, image_hash, preprocessing)
        st.session_state[state.DENSE_PLACE] = place
        drawn = region_controls(bundle, prediction, place, settings.reduction)
        if drawn is not None:
            targets.append(drawn)
            if st.session_state.pop(state.DENSE_PICK_DRAWN, False):  # just drawn: explain it
                st.session_state[state.TARGET_MODE] = "Class"
                st.session_state[state.TARGET_CLASS] = len(targets) - 1
    keys = tuple(t.key for t in targets)
    scored = scored_bundle(model, image_hash, preprocessing, settings.threshold, keys, settings.iou,
                           settings.with_iou, bundle, tuple(targets), inputs)
    return DenseChoice(bundle, prediction, scored, (keys, settings.iou, settings.with_iou))


def key_digest(key: tuple) -> str:
    """A short, stable id of a target set (what a cache id of the selection appends to the model's)."""
    return hashlib.sha1(repr(key).encode()).hexdigest()[:16]


def dense_kind(thing) -> str | None:
    """DETECTION or SEGMENTATION for a dense selection or a ScoredBundle; None for a classifier's."""
    dense = getattr(thing, "dense", None)
    if dense is not None:
        return dense.kind
    return thing.kind if isinstance(thing, ScoredBundle) else None


def is_detection(thing) -> bool:
    return dense_kind(thing) == DETECTION


def target_noun(thing) -> str:
    """What one target of a selection (or bundle) is to the user: "box", "region" or "class"."""
    kind = dense_kind(thing)
    return "class" if kind is None else "box" if kind == DETECTION else "region"


def plural(noun: str) -> str:
    """ "boxes", "classes", "regions"."""
    return noun + ("es" if noun.endswith(("x", "s")) else "s")


def adds_iou(scored: ScoredBundle) -> bool:
    """Whether a box's score includes the IoU of its re-detection (the sidebar's checkbox)."""
    return isinstance(scored.model, DenseScores) and bool(scored.model.with_iou)


def _reduction(scored: ScoredBundle, index: int | None) -> str:
    target = scored.dense_targets[index or 0]
    return target.reduction if isinstance(target, RegionTarget) else REDUCTION


def score_meaning(scored: ScoredBundle, index: int | None = None) -> str:
    """What a target's score is, in words (target ``index``'s reduction for a region; the first's by default)."""
    if scored.kind == DETECTION:
        iou = " plus its IoU with the box" if adds_iou(scored) else ""
        return f"the class score of the same box found again by the detector{iou}"
    how = "averaged" if _reduction(scored, index) == "mean" else "summed"
    return f"the class's logits {how} over the region"


def score_axis(scored: ScoredBundle, index: int | None = None) -> str:
    """A target's score as an axis title: "box score", "box score + IoU", "region score (logit sum)"."""
    if scored.kind == DETECTION:
        return "box score" + (" + IoU" if adds_iou(scored) else "")
    return f"region score (logit {_reduction(scored, index)})"


def score_title(selection) -> str:
    """What a curve of the selection's target follows, capitalised: a class's probability, or the target's own
    score."""
    if getattr(selection, "dense", None) is None:
        return "Probability of the class"
    return "The box's own score" if is_detection(selection) else "The region's own score (logits)"


def target_outline(bundle, target: tuple[int, ...]) -> np.ndarray | None:
    """bool [H, W] (the model's input) of the box or region a record explains (a contrast: its first side), or
    None for a classifier."""
    if not isinstance(bundle, ScoredBundle) or not target:
        return None
    return bundle.target_mask(int(target[0]))
