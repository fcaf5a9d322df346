"""A dense target in the user's terms: the one mapping of boxes between the original image and the model's input,
what a manifest or a table row records of a box or region, how a box is written, and what a run explains on an
image. The CLI's commands, the batch rows and the model's own messages share them.

A box the user gives (``--box``) and a box a run records are in the original image's pixels; the detector sees
the model's view of the image (``ModelBundle.crop_geometry``: the whole image squeezed, or the centre crop), so
each box goes through that geometry once, here, both ways.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .outputs import DETECTION
from .targets import BoxTarget, RegionTarget

Box = tuple[float, float, float, float]


def format_box(box: Sequence[float]) -> str:
    """``[8, 10, 24, 26]``: a box's corners to the pixel, as every message and listing writes them."""
    return "[" + ", ".join(f"{float(v):.0f}" for v in box) + "]"


def to_model_box(box: Sequence[float], geometry: Sequence[float], side: int) -> Box:
    """A box (x0, y0, x1, y1) in the original image's pixels -> the model input's pixels (``side`` square), through
    ``geometry`` = (left, top, right, bottom), the part of the original the model sees."""
    left, top, right, bottom = (float(v) for v in geometry)
    sx, sy = side / (right - left), side / (bottom - top)
    x0, y0, x1, y1 = (float(v) for v in box)
    return ((x0 - left) * sx, (y0 - top) * sy, (x1 - left) * sx, (y1 - top) * sy)


def to_original_box(box: Sequence[float], geometry: Sequence[float], side: int) -> Box:
    """The inverse of :func:`to_model_box`: model-input pixels -> the original image's pixels."""
    left, top, right, bottom = (float(v) for v in geometry)
    sx, sy = (right - left) / side, (bottom - top) / side
    x0, y0, x1, y1 = (float(v) for v in box)
    return (left + x0 * sx, top + y0 * sy, left + x1 * sx, top + y1 * sy)


def run_targets(bundle, prediction, max_boxes: int, reduction: str = "sum") -> list:
    """What a run explains on one image: the detections at or above the bundle's score threshold, best first, at
    most ``max_boxes``; or one region per class the segmenter predicts (largest first)."""
    targets = bundle.targets(prediction, reduction)
    return targets[:max_boxes] if prediction.kind == DETECTION else targets


def dense_predictions(bundle, prediction, geometry: Sequence[float] | None = None) -> list[dict[str, Any]]:
    """A manifest's ``predictions`` of a dense model (the CLI's and the dashboard's): its detections
    (:func:`describe_target` of each, the box in the original image's pixels with ``geometry``), or its predicted
    classes with their share of the pixels, largest first."""
    if prediction.kind == DETECTION:
        return [describe_target(bundle, target, geometry) for target in bundle.targets(prediction)]
    return [{"class": int(label), "class_name": bundle.label_name(label), "share": float(share)}
            for label, share in prediction.shares.items()]


def describe_target(bundle, target: BoxTarget | RegionTarget, geometry: Sequence[float] | None = None,
                    rank: int | None = None) -> dict[str, Any]:
    """What a manifest or a table row says of a dense target. A box: its corners in the original image's pixels
    (with ``geometry``) and the model's, label, name and score, its rank among the detections (1 = best; the
    target's own unless ``rank`` says). A region: its class, pixel count, share of the image and reduction."""
    side = int(bundle.input_size)
    if isinstance(target, BoxTarget):
        described = {"kind": "box", "box_model": [round(float(v), 2) for v in target.box],
                     "label": int(target.label), "label_name": bundle.label_name(target.label),
                     "score": None if target.score is None else float(target.score), "name": target.name}
        if geometry is not None:
            described["box"] = [round(v, 2) for v in to_original_box(target.box, geometry, side)]
        rank = rank if rank is not None else target.rank
        if rank is not None:
            described["rank"] = int(rank)
        return described
    pixels = np.asarray(target.mask_pixels, dtype=bool)
    described = {"kind": "region", "class": int(target.label), "class_name": bundle.label_name(target.label),
                 "pixels": int(pixels.sum()), "share": float(pixels.mean()), "reduction": target.reduction,
                 "drawn": bool(target.drawn), "name": target.name}
    if rank is not None:
        described["rank"] = int(rank)
    return described
