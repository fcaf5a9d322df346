"""How much two saliency maps agree: rank correlation and overlap of their most salient pixels.

Used by the Compare page's method-agreement matrix; pure NumPy so researchers can call it on saved maps.
"""

from __future__ import annotations

import numpy as np

from .similarity import rank


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
