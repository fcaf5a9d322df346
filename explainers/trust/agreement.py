"""How much two saliency maps agree: rank correlation and overlap of their most salient pixels.

Used by the Compare page's method-agreement matrix and by its models mode, where the maps come from models with
different inputs (sizes, crops): :func:`common_grid` puts them on one grid of the image first, and
:func:`pair_agreement` and :func:`model_difference` compare them there. Pure NumPy so researchers can call it on
saved maps.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..render import View, place, to_map, value_range
from .similarity import rank

Box = tuple[int, int, int, int]


def _flat(saliency) -> np.ndarray:
    array = np.asarray(saliency, dtype=np.float64).ravel()
    return np.where(np.isfinite(array), array, 0.0)


def spearman(a, b) -> float:
    """Spearman's rank correlation of two maps of the same shape (0 when either is constant)."""
    ra, rb = rank(_flat(a)), rank(_flat(b))
    ra -= ra.mean()
    rb -= rb.mean()
    denominator = np.sqrt((ra * ra).sum() * (rb * rb).sum())
    return float((ra * rb).sum() / denominator) if denominator > 0 else 0.0


def top_mask(saliency, fraction: float = 0.1) -> np.ndarray:
    """The ``fraction`` most salient pixels (exactly round(fraction * size) of them; ties broken by position)."""
    values = _flat(saliency)
    count = max(1, int(round(fraction * values.size)))
    mask = np.zeros(values.size, dtype=bool)
    mask[np.argsort(-values, kind="mergesort")[:count]] = True
    return mask


def top_iou(a, b, fraction: float = 0.1) -> float:
    """Intersection over union of the two maps' top-``fraction`` pixels."""
    ma, mb = top_mask(a, fraction), top_mask(b, fraction)
    union = np.logical_or(ma, mb).sum()
    return float(np.logical_and(ma, mb).sum() / union) if union else 0.0


def agreement_matrix(maps: dict[str, np.ndarray], fraction: float = 0.1) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(names, Spearman matrix, top-fraction IoU matrix) over every pair of named maps of one shape."""
    names = list(maps)
    size = len(names)
    rho = np.eye(size)
    iou = np.eye(size)
    for i in range(size):
        for j in range(i + 1, size):
            rho[i, j] = rho[j, i] = spearman(maps[names[i]], maps[names[j]])
            iou[i, j] = iou[j, i] = top_iou(maps[names[i]], maps[names[j]], fraction)
    return names, rho, iou


# ---- maps of different models --------------------------------------------------------------------------------


def common_grid(maps: Sequence[np.ndarray], boxes: Sequence[Box | None], image_size: tuple[int, int],
                side: int | None = None) -> list[np.ndarray]:
    """[H, W] maps of models with different inputs, on one grid of the image.

    ``boxes`` are where each model's input lies on the image of ``image_size`` = (width, height)
    (``ModelBundle.crop_geometry``; None: all of it). The grid is the image scaled so that its longest side is
    ``side`` (default: the largest map's longest side); each map is stretched onto its box there with
    :func:`~explainers.render.place` (bilinear), NaN where that model saw nothing."""
    if len(maps) != len(boxes):
        raise ValueError(f"expected one box per map, got {len(boxes)} boxes for {len(maps)} maps")
    side = int(side or max(max(np.shape(m)) for m in maps))
    scale = side / max(image_size)
    size = (max(1, round(image_size[0] * scale)), max(1, round(image_size[1] * scale)))
    return [place(m, size, None if box is None else tuple(round(v * scale) for v in box))
            for m, box in zip(maps, boxes)]


def pair_agreement(a: np.ndarray, b: np.ndarray, fraction: float = 0.1) -> tuple[float, float]:
    """(Spearman, top-``fraction`` IoU) of two maps on one grid (:func:`common_grid`), over the pixels both
    models saw (finite in both); (NaN, NaN) when either map is constant there (it ranks nothing, and its "top"
    pixels would be picked by position)."""
    both = np.isfinite(a) & np.isfinite(b)
    a, b = a[both], b[both]
    if a.size == 0 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan"), float("nan")
    return spearman(a, b), top_iou(a, b, fraction)


def model_agreement(attributions: Sequence, boxes: Sequence[Box | None], image_size: tuple[int, int],
                    reduction: str = "max", fraction: float = 0.1) -> dict[tuple[int, int], tuple[float, float]]:
    """{(i, j): (Spearman, top-``fraction`` IoU)} for every pair i < j of one method's attributions on different
    models, on absolute maps (``to_map(..., "absolute", reduction)``) brought to one grid (:func:`common_grid`)."""
    maps = common_grid([to_map(a, "absolute", reduction) for a in attributions], boxes, image_size)
    return {(i, j): pair_agreement(maps[i], maps[j], fraction)
            for i in range(len(maps)) for j in range(i + 1, len(maps))}


def _unit(values: np.ndarray, view: View) -> np.ndarray:
    """A map divided by the top of its own range (what a per-panel colour scale maps to its end), so that maps
    of models whose logits have different scales can be subtracted."""
    top = max(abs(bound) for bound in value_range(values, view.clip, view.signed))
    return values / top if top > 0 else np.zeros_like(values)


def model_difference(first, second, boxes: Sequence[Box | None], image_size: tuple[int, int],
                     view: View) -> np.ndarray:
    """[1, H, W]: the map ``view`` shows of ``first`` minus that of ``second``, two models' attributions each
    divided by the top of its own range (raw units of two models are not comparable), on one grid
    (:func:`common_grid`); 0 where either model saw nothing. Render it with ``render.difference_view``."""
    maps = common_grid([to_map(a, view.sign, view.reduction) for a in (first, second)], boxes, image_size)
    delta = _unit(maps[0], view) - _unit(maps[1], view)
    return np.where(np.isfinite(delta), delta, 0.0).astype(np.float32)[None]
