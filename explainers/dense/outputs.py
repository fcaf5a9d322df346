"""The two output conventions of dense models, read and told apart.

- **Detection** (torchvision's detectors, Ren et al. 2015, arXiv:1506.01497; Lin et al. 2017, arXiv:1708.02002):
  one dict per image with ``boxes`` [D, 4] (x0, y0, x1, y1 in input pixels), ``labels`` [D] and ``scores`` [D].
  A TorchScript detector returns ``(losses, detections)``; the detections are taken.
- **Segmentation** (torchvision's FCN, DeepLabV3, LRASPP): a dict with ``out`` [N, classes, H, W], or that tensor.

Anything else is named in the error, so a user whose model returns neither learns what it did return.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import ModelOutputError

DETECTION = "detection"
SEGMENTATION = "segmentation"
CLASSIFICATION = "classification"
KINDS = (DETECTION, SEGMENTATION)
DETECTION_KEYS = ("boxes", "labels", "scores")

CONVENTIONS = ("logits [N, classes] (a classifier); a list of one dict per image with 'boxes' [D, 4], 'labels' [D] "
               "and 'scores' [D] (torchvision's detectors); or a dict with 'out' [N, classes, H, W] (torchvision's "
               "segmentation models)")


@dataclass(frozen=True)
class Detection:
    """One detected box: ``box`` (x0, y0, x1, y1) in the pixels of the model's input, ``label`` the class index,
    ``score`` the detector's confidence."""

    box: tuple[float, float, float, float]
    label: int
    score: float


def describe(output: Any, depth: int = 0) -> str:
    """A short account of what a model returned: "a tensor [1, 5, 32, 32]", "a list of 1 dict (keys: boxes)"."""
    if isinstance(output, torch.Tensor):
        return f"a tensor [{', '.join(str(int(s)) for s in output.shape)}]"
    if isinstance(output, Mapping):
        keys = ", ".join(str(k) for k in list(output)[:6])
        return f"a dict with keys {keys or '(none)'}"
    if isinstance(output, (list, tuple)):
        kind = type(output).__name__
        if not output:
            return f"an empty {kind}"
        inner = describe(output[0], depth + 1) if depth < 2 else type(output[0]).__name__
        return f"a {kind} of {len(output)} ({inner}{', ...' if len(output) > 1 else ''})"
    return f"a {type(output).__name__}"


def _detection_list(output: Any) -> list | None:
    if (isinstance(output, tuple) and len(output) == 2 and isinstance(output[0], Mapping)
            and isinstance(output[1], list)):
        output = output[1]  # TorchScript detectors return (losses, detections)
    if isinstance(output, list) and output and all(
            isinstance(item, Mapping) and all(isinstance(item.get(k), torch.Tensor) for k in DETECTION_KEYS)
            for item in output):
        return output
    return None


def segmentation_logits(output: Any) -> torch.Tensor | None:
    """[N, classes, H, W] of a segmentation output (a dict with ``out``, or the tensor itself), else None."""
    if isinstance(output, Mapping):
        output = output.get("out")
    if isinstance(output, torch.Tensor) and output.dim() == 4 and output.shape[1] >= 2:
        return output
    return None


def output_kind(output: Any) -> str:
    """DETECTION, SEGMENTATION or CLASSIFICATION; ModelOutputError naming what came for anything else."""
    if _detection_list(output) is not None:
        return DETECTION
    if segmentation_logits(output) is not None:
        return SEGMENTATION
    logits = getattr(output, "logits", output)
    if isinstance(logits, torch.Tensor) and logits.dim() == 2:
        return CLASSIFICATION
    raise ModelOutputError(f"expected the model to return {CONVENTIONS}; it returned {describe(output)}")


def detections_of(output: Any, rows: int | None = None) -> list[Mapping[str, torch.Tensor]]:
    """The per-image detection dicts of a detector's output (``rows`` of them when given)."""
    found = _detection_list(output)
    if found is None:
        raise ModelOutputError(f"expected a detector's output, a list of one dict per image with 'boxes', 'labels' "
                               f"and 'scores'; got {describe(output)}")
    if rows is not None and len(found) != rows:
        raise ModelOutputError(f"expected one detection dict per image ({rows}); got {len(found)}")
    for item in found:
        boxes = item["boxes"]
        if boxes.dim() != 2 or boxes.shape[-1] != 4 or len(item["labels"]) != len(boxes) \
                or len(item["scores"]) != len(boxes):
            raise ModelOutputError(
                f"expected 'boxes' [D, 4] with 'labels' [D] and 'scores' [D]; got boxes "
                f"{list(boxes.shape)}, labels {list(item['labels'].shape)}, scores {list(item['scores'].shape)}")
    return found
