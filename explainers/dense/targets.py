"""Dense targets and the module that scores them.

- :class:`BoxTarget`: a detected box. Its score on any input is the class score of the detection that matches it
  again: the same label, the largest IoU, above ``iou_threshold``; 0 where none does (a perturbed image in which
  the object is gone). This is the score of pytorch-grad-cam's ``FasterRCNNBoxScoreTarget`` (Gildenblat et al.),
  with two differences: the best match is sought among the boxes of the target's own class, so a box of another
  class overlapping more does not hide it, and the IoU is added to the score only when ``with_iou`` asks for it
  (as that reference always does: the map then also explains where the box lies).
- :class:`RegionTarget`: a region of a segmentation. Its score is the sum, or the mean, of one class's logits
  over the region's pixels, as pytorch-grad-cam's ``SemanticSegmentationTarget`` sums them.

:class:`DenseScores` turns a detector or segmenter and T targets into a module with output [N, T]: to every
method it is a classifier whose class t is target t.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import box_iou

from ..core import ZERO_PREFIX
from ..errors import TargetError
from ..hooks import adopt_modules
from .outputs import DETECTION, KINDS, describe, detections_of, segmentation_logits

REDUCTIONS = ("sum", "mean")
IOU_THRESHOLD = 0.5


@dataclass(frozen=True)
class BoxTarget:
    """A detected box to explain: ``box`` (x0, y0, x1, y1) in the pixels of the model's input, ``label`` its class,
    ``name`` what the user reads, ``score`` the detector's score on the clean image, ``rank`` its place among the
    image's detections (1 = best; None for a box given otherwise), ``label_name`` its class's name."""

    box: tuple[float, float, float, float]
    label: int
    name: str = ""
    score: float | None = None
    rank: int | None = None
    label_name: str = ""

    @property
    def short_name(self) -> str:
        """The box without its score: "#1 red" (its class's name alone when it has no rank)."""
        label = self.label_name or f"class {int(self.label)}"
        return f"#{self.rank} {label}" if self.rank is not None else label

    def bounds(self) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1) in model-input pixels: the box itself."""
        return tuple(float(v) for v in self.box)

    @property
    def key(self) -> tuple:
        """What identifies the target (a cache key): the box rounded to 1/100 pixel and the label."""
        return ("box", tuple(round(float(v), 2) for v in self.box), int(self.label))

    def mask(self, size: tuple[int, int]) -> np.ndarray:
        """bool [H, W]: the pixels of a ``size`` = (H, W) input the box covers."""
        height, width = size
        x0, y0, x1, y1 = self.box
        ys, xs = np.arange(height) + 0.5, np.arange(width) + 0.5
        return ((ys >= y0) & (ys <= y1))[:, None] & ((xs >= x0) & (xs <= x1))[None, :]


@dataclass(frozen=True, eq=False)
class RegionTarget:
    """A region of a segmentation to explain: ``mask`` bool [H, W] in the pixels of the model's input, ``label``
    the class whose logits are summed (``reduction`` "sum") or averaged ("mean") over it; ``drawn`` when the user
    drew it rather than taking a predicted class's mask."""

    label: int
    mask_pixels: np.ndarray
    reduction: str = "sum"
    name: str = ""
    drawn: bool = False
    digest: str = field(init=False)
    label_name: str = ""

    @property
    def short_name(self) -> str:
        """The region's class name alone ("red"), without its share or "drawn region"."""
        return self.label_name or f"class {int(self.label)}"

    def bounds(self) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1) in model-input pixels, x1 and y1 exclusive: the region's bounding box."""
        rows = np.flatnonzero(self.mask_pixels.any(axis=1))
        cols = np.flatnonzero(self.mask_pixels.any(axis=0))
        return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1

    def __post_init__(self) -> None:
        pixels = np.asarray(self.mask_pixels, dtype=bool)
        if pixels.ndim != 2:
            raise TargetError(f"a region must be a mask [H, W]; got shape {list(pixels.shape)}")
        if self.reduction not in REDUCTIONS:
            raise TargetError(f"reduction must be one of {', '.join(REDUCTIONS)}; got {self.reduction!r}")
        if not pixels.any():
            raise TargetError(f"the region for {self.name or f'class {self.label}'} has no pixels: draw a region "
                              "that covers part of the image, or pick a class the model predicts")
        object.__setattr__(self, "mask_pixels", pixels)
        object.__setattr__(self, "digest", hashlib.sha1(np.packbits(pixels).tobytes()
                                                        + str(pixels.shape).encode()).hexdigest()[:16])

    @property
    def key(self) -> tuple:
        return ("region", int(self.label), self.reduction, self.digest)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RegionTarget) and self.key == other.key

    def __hash__(self) -> int:
        return hash(self.key)

    def mask(self, size: tuple[int, int]) -> np.ndarray:
        """bool [H, W] at ``size`` (nearest neighbour where it differs from the mask's own)."""
        if tuple(size) == self.mask_pixels.shape:
            return self.mask_pixels
        resized = F.interpolate(torch.from_numpy(self.mask_pixels)[None, None].float(), size=tuple(size),
                                mode="nearest")
        return resized[0, 0].numpy() > 0.5


DenseTarget = BoxTarget | RegionTarget


def _graph_zero(scores: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """0, but on the graph of the detector's scores (else of the inputs): a row where nothing was detected scores 0
    and its gradient is 0, not "does not require grad" when every row of a batch lost its boxes."""
    anchor = scores if scores.requires_grad else inputs
    return anchor.reshape(-1)[:0].sum().to(inputs.dtype)


class DenseScores(nn.Module):
    """[N, T]: the score of each of T targets (all boxes, or all regions) for each input row.

    The network's children are this module's children under their own names (``backbone.body.layer4``), so a layer
    a user names on the detector is the same layer here; the network itself is held, not registered. Every
    DenseScores of one network shares that network's lock (:func:`explainers.hooks.lock_for`): their hooks land on
    the same modules.
    """

    def __init__(self, net: nn.Module, kind: str, targets: Sequence[DenseTarget], *,
                 iou_threshold: float = IOU_THRESHOLD, with_iou: bool = False):
        super().__init__()
        if kind not in KINDS:
            raise TargetError(f"kind must be one of {', '.join(KINDS)}; got {kind!r}")
        wanted = BoxTarget if kind == DETECTION else RegionTarget
        wrong = [t for t in targets if not isinstance(t, wanted)]
        if wrong:
            raise TargetError(f"a {kind} model takes {wanted.__name__}s; got {type(wrong[0]).__name__}")
        shapes = {t.mask_pixels.shape for t in targets if isinstance(t, RegionTarget)}
        if len(shapes) > 1:
            raise TargetError(f"every region must be drawn on the same picture; got masks of shapes "
                              f"{', '.join(str(list(shape)) for shape in sorted(shapes))}")
        if not 0.0 <= float(iou_threshold) < 1.0:
            raise TargetError(f"iou_threshold must be in [0, 1); got {iou_threshold!r}")
        adopt_modules(self, net)
        # a net that refuses hooks (TorchScript) refuses them here too: the methods that need them are left out
        self.supports_hooks = getattr(net, "supports_hooks", True)
        self.kind = kind
        self.dense_targets = tuple(targets)
        self.iou_threshold = float(iou_threshold)
        self.with_iou = bool(with_iou)
        self._boxes = torch.tensor([t.box for t in targets] if kind == DETECTION else [],
                                   dtype=torch.float32).reshape(-1, 4)
        self._labels = torch.tensor([int(t.label) for t in targets], dtype=torch.long)
        self._max_label = int(self._labels.max()) if len(self._labels) else -1
        self._on: dict[tuple, torch.Tensor] = {}  # the tensors above (and region masks) per device, made once

    def _cached(self, name: str, device: torch.device, make) -> torch.Tensor:
        key = (name, str(device))
        if key not in self._on:
            with torch.inference_mode(False):  # made in a clean pass, used again under autograd: a plain tensor
                self._on[key] = make()
        return self._on[key]

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        self.net.training = self.training  # the children follow this module's train/eval switch; the net too
        output = self.net(inputs)
        if self.kind == DETECTION:
            return self.box_scores(detections_of(output, len(inputs)), inputs)[0]
        logits = segmentation_logits(output)
        if logits is None:
            raise TargetError(f"expected the segmentation model to return 'out' [N, classes, H, W]; got "
                              f"{describe(output)}")
        return self.region_scores(logits)

    def score_notes(self, scores: torch.Tensor, classes: torch.Tensor) -> list[tuple[str, ...]]:
        """Per row of ``scores`` [N, T] (this module's output on the explained inputs), what a user must be told
        of target ``classes`` [N] ([N, 2] for a contrast: each side): a box scoring exactly 0 was not found again on
        that input, so its map is all zero for that reason, not because nothing mattered."""
        notes = []
        picked = classes.reshape(len(scores), -1).cpu()
        values = scores.detach().cpu()
        for row in range(len(scores)):
            said = []
            for index in picked[row].tolist():
                if self.kind == DETECTION and float(values[row, index]) == 0.0:
                    target = self.dense_targets[index]
                    lost = (f"the box {target.name or target.label} was not found on this input (no detection of "
                            f"its class overlaps it by more than IoU {self.iou_threshold:g}), so its score is 0")
                    # alone, it is why the map is all zero; one side of a contrast, why that side adds nothing
                    said.append(f"{ZERO_PREFIX}: {lost}" if picked.shape[1] == 1 else lost)
            notes.append(tuple(said))
        return notes

    def box_scores(self, detections, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """([N, T] scores, [N, T] best same-class IoU) of every target box among each row's ``detections``."""
        rows, ious = [], []
        count = len(self.dense_targets)
        for found in detections:
            boxes = found["boxes"]
            zero = boxes.new_zeros(count)  # on the detections' device, whatever device ``inputs`` came on
            if len(boxes) == 0 or count == 0:
                rows.append(zero + _graph_zero(found["scores"], inputs))
                ious.append(zero)
                continue
            targets = self._cached("boxes", boxes.device, lambda d=boxes.device: self._boxes.to(d))
            labels = self._cached("labels", boxes.device, lambda d=boxes.device: self._labels.to(d))
            overlap = box_iou(targets.to(boxes.dtype), boxes)  # [T, D]
            same = found["labels"][None, :] == labels[:, None]
            overlap = torch.where(same, overlap, overlap.new_full((), -1.0))
            best, index = overlap.max(dim=1)
            score = found["scores"][index]
            if self.with_iou:
                score = score + best
            rows.append(torch.where(best > self.iou_threshold, score, zero.to(score.dtype)))
            ious.append(best.detach().clamp_min(0.0))
        return torch.stack(rows), torch.stack(ious)

    def region_scores(self, logits: torch.Tensor) -> torch.Tensor:
        """[N, T]: each target class's logits [N, classes, h, w] summed (or averaged) over its region."""
        if not self.dense_targets:
            return logits.new_zeros(len(logits), 0)
        if self._max_label >= logits.shape[1]:
            raise TargetError(f"class {self._max_label} is out of range: the model segments classes "
                              f"0..{logits.shape[1] - 1}")
        size = self.dense_targets[0].mask_pixels.shape
        if tuple(logits.shape[-2:]) != tuple(size):
            # a coarser output (a stride-8 head) is laid on the regions' pixels, as torchvision's segmenters
            # upsample their own: a small region must not vanish by being shrunk to the output's grid
            logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        device = logits.device
        masks = self._cached("masks", device, lambda: torch.from_numpy(
            np.stack([t.mask(size) for t in self.dense_targets])).to(device))
        labels = self._cached("labels", device, lambda: self._labels.to(device))
        divisor = self._cached("divisor", device, lambda: torch.tensor(
            [float(t.mask_pixels.sum()) if t.reduction == "mean" else 1.0 for t in self.dense_targets],
            device=device))
        sums = (logits[:, labels] * masks.to(logits.dtype)).sum(dim=(2, 3))
        return sums / divisor.to(logits.dtype)

