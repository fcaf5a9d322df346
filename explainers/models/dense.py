"""A detector or segmenter with its preprocessing (:class:`DenseBundle`), what it predicts on an image
(:class:`Prediction`), and the bundle the explainers run on once targets are picked (:class:`ScoredBundle`).

    bundle = load_model("fasterrcnn_mobilenet_v3_large_320_fpn")
    inputs = bundle.preprocess(image)
    prediction = bundle.predict(inputs)                     # boxes, labels, scores
    scored = bundle.scored(bundle.targets(prediction), inputs)  # one "class" per box
    explain(scored, inputs, "gradcam", target=0)            # the first box

The scored bundle checks each box on the clean image first: a box the detector does not find again (same class,
IoU above the threshold) is an error that names it, not an all-zero map.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torchvision.ops import box_iou

from ..dense.outputs import (
    DETECTION,
    KINDS,
    SEGMENTATION,
    Detection,
    describe,
    detections_of,
    output_kind,
    segmentation_logits,
)
from ..dense.records import format_box
from ..dense.targets import IOU_THRESHOLD, BoxTarget, DenseScores, DenseTarget, RegionTarget
from ..errors import LayerError, ModelLoadError, TargetError
from ..hooks import model_guard
from ..layers import default_layer, layer_catalogue
from .base import ModelBundle, affine_normalizer

SCORE_THRESHOLD = 0.5  # detections listed at or above this score (the detector's own threshold applies first)
REDUCTION = "sum"


@dataclass(frozen=True)
class Prediction:
    """What a dense model predicts on one image, in the pixels of its input (H, W) = ``size``.

    Detection: ``detections`` at or above the bundle's score threshold, best first. Segmentation: ``classes``
    [H, W] the predicted class of each pixel and ``shares`` {class: share of the pixels}, largest first."""

    kind: str
    size: tuple[int, int]
    detections: tuple[Detection, ...] = ()
    classes: np.ndarray | None = None
    shares: dict[int, float] = field(default_factory=dict)


def _identity(pixels: torch.Tensor) -> torch.Tensor:
    return pixels


@dataclass
class DenseBundle(ModelBundle):
    """A detector or segmenter (``model``, in eval mode) with its preprocessing and class names.

    ``kind`` is DETECTION or SEGMENTATION. A detector normalises and resizes inside its own ``transform``, so its
    ``normalize`` is the identity and it takes pixels in [0, 1]; a segmenter takes normalised pixels like a
    classifier. ``score_threshold`` is the lowest score a detection is listed with."""

    kind: str = DETECTION
    score_threshold: float = SCORE_THRESHOLD

    needs_targets = True  # explain() refuses it: a box or region must be picked first (see ``scored``)

    def label_name(self, label: int) -> str:
        label = int(label)
        if 0 <= label < len(self.categories) and self.categories[label]:
            return self.categories[label]
        return f"class {label}"

    def with_threshold(self, threshold: float | None) -> DenseBundle:
        """This bundle listing detections at or above ``threshold`` (None: as it is): a shallow copy, the same
        network, so a caller's threshold never changes the bundle others share."""
        if threshold is None or float(threshold) == self.score_threshold:
            return self
        if not 0.0 <= float(threshold) <= 1.0:
            raise TargetError(f"a score threshold is between 0 and 1; got {threshold!r}")
        copied = copy.copy(self)
        copied.score_threshold = float(threshold)
        return copied

    def detector_floor(self) -> float | None:
        """The score under which the detector itself drops a box before this bundle's threshold sees it
        (torchvision's ``roi_heads.score_thresh`` or ``score_thresh``, as ``dense_zoo.open_threshold`` sets it), or
        None where the model has none it shows (a segmenter, a TorchScript model's own)."""
        if self.kind != DETECTION:
            return None
        for owner in (getattr(self.model, "roi_heads", None), self.model):
            floor = getattr(owner, "score_thresh", None)
            if isinstance(floor, int | float) and not isinstance(floor, bool):
                return float(floor)
        return None

    def lower_threshold_helps(self) -> bool:
        """Whether a lower score threshold could list more boxes: a detector whose own floor is under this
        bundle's threshold (or unknown)."""
        floor = self.detector_floor()
        return self.kind == DETECTION and (floor is None or self.score_threshold > floor)

    def nothing_found(self) -> str:
        """What the user is told when no box or class is there to explain, and what to do about it: lower the
        threshold only where that can list more (not at or under the detector's own floor)."""
        if self.kind == DETECTION:
            found = (f"the model detects no box at or above score {self.score_threshold:g} on this image, so there "
                     "is no box to explain")
            if self.lower_threshold_helps():
                return f"{found}; lower the score threshold or pick another image"
            return (f"{found}; the detector itself drops boxes scored under {self.detector_floor():g} (its own "
                    "threshold), so a lower threshold here lists nothing more: pick another image, or load the "
                    "model with its own threshold lowered")
        return "the model predicts no class on this image, so there is no region to explain; pick another image"

    def box_target_of(self, detection: Detection, rank: int) -> BoxTarget:
        """The target of the ``rank``-th detection (1 = best), named "#rank label score"."""
        return BoxTarget(detection.box, detection.label,
                         f"#{rank} {self.label_name(detection.label)} {detection.score:.2f}", detection.score, rank,
                         self.label_name(detection.label))

    def predict(self, inputs: torch.Tensor) -> Prediction:
        """The model's prediction on the first row of ``inputs`` [N, 3, H, W] (model space)."""
        inputs = inputs[:1].to(self.device)
        with model_guard(self.model), torch.inference_mode():
            output = self.model(inputs)
        size = tuple(int(s) for s in inputs.shape[-2:])
        if self.kind == DETECTION:
            (found,) = detections_of(output, 1)
            keep = found["scores"] >= self.score_threshold
            order = found["scores"][keep].argsort(descending=True)
            boxes = found["boxes"][keep][order].float().cpu().tolist()
            labels = found["labels"][keep][order].cpu().tolist()
            scores = found["scores"][keep][order].float().cpu().tolist()
            return Prediction(DETECTION, size, tuple(Detection(tuple(b), int(label), float(s))
                                                     for b, label, s in zip(boxes, labels, scores, strict=True)))
        logits = segmentation_logits(output)
        if logits is None:
            raise TargetError(f"expected the segmentation model to return 'out' [N, classes, H, W]; got "
                              f"{describe(output)}")
        classes = logits[0].argmax(dim=0).cpu().numpy()
        if classes.shape != size:  # a coarser output: its classes laid on the input's pixels
            classes = torch.nn.functional.interpolate(torch.from_numpy(classes)[None, None].float(), size=size,
                                                      mode="nearest")[0, 0].long().numpy()
        counts = np.bincount(classes.ravel())
        shares = {int(c): float(counts[c] / classes.size) for c in np.argsort(-counts) if counts[c]}
        return Prediction(SEGMENTATION, size, classes=classes, shares=shares)

    def is_background(self, label: int) -> bool:
        """Whether class ``label`` is the background ("__background__", "background", any name starting "__")."""
        name = self.label_name(label).lower()
        return name.startswith("__") or name == "background"

    def targets(self, prediction: Prediction, reduction: str = REDUCTION) -> list[DenseTarget]:
        """One target per detection (best first), or one per predicted class (its mask; largest first, the
        background class last: it is what a user explains least often).

        This order is the columns' order of :meth:`scored` (target t = column t) and the order every list shows.
        What "top1" (the dashboard's "Predicted") picks is another matter: the target with the best clean score,
        the same in the backend and the dashboard. On a segmenter that is often the background, whose logits summed
        over most of the image are the largest; "mean" ranks regions by their average logit instead."""
        if prediction.kind == DETECTION:
            return [self.box_target_of(d, rank) for rank, d in enumerate(prediction.detections, start=1)]
        ordered = sorted(prediction.shares.items(), key=lambda item: self.is_background(item[0]))  # stable
        return [RegionTarget(label, prediction.classes == label, reduction,
                             f"{self.label_name(label)} ({100 * share:.0f}% of pixels)",
                             label_name=self.label_name(label))
                for label, share in ordered]

    def box_target(self, box: Sequence[float], prediction: Prediction, label: int | None = None,
                   iou_threshold: float = IOU_THRESHOLD) -> BoxTarget:
        """A box given by its corners (model-input pixels): the listed detection of ``label`` (any label when
        None) that overlaps it most, IoU above ``iou_threshold``; TargetError naming the nearest one otherwise."""
        if len(box) != 4 or not (box[2] > box[0] and box[3] > box[1]):
            raise TargetError(f"a box is x0,y0,x1,y1 with x1 > x0 and y1 > y0; got {list(box)}")
        candidates = [(rank, d) for rank, d in enumerate(prediction.detections, start=1)
                      if label is None or d.label == label]
        if not candidates:
            what = f" of class {self.label_name(label)}" if label is not None else ""
            raise TargetError(self.nothing_found().replace("no box", f"no box{what}", 1))
        ious = box_iou(torch.tensor([list(box)], dtype=torch.float64),
                       torch.tensor([list(d.box) for _, d in candidates], dtype=torch.float64))[0]
        best = int(ious.argmax())
        rank, found = candidates[best]
        if float(ious[best]) <= iou_threshold:
            raise TargetError(f"no detected box matches {format_box(box)} (IoU above {iou_threshold}); the nearest "
                              f"is {self.label_name(found.label)} {format_box(found.box)} (IoU "
                              f"{float(ious[best]):.2f}, score {found.score:.2f})")
        return self.box_target_of(found, rank)

    def region_target(self, label: int, mask: np.ndarray, reduction: str = REDUCTION,
                      drawn: bool = True) -> RegionTarget:
        """A region the user drew (bool [H, W] in model-input pixels) scored on class ``label``."""
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (self.input_size, self.input_size):
            raise TargetError(f"a drawn region is a mask of the model's input, [{self.input_size}, "
                              f"{self.input_size}]; got {list(mask.shape)}")
        if not 0 <= int(label) < len(self.categories):
            raise TargetError(f"class {label} is out of range: the model segments classes "
                              f"0..{len(self.categories) - 1}")
        return RegionTarget(int(label), np.asarray(mask, dtype=bool), reduction,
                            f"{self.label_name(label)} in the drawn region" if drawn else self.label_name(label),
                            drawn=drawn, label_name=self.label_name(label))

    def drawn_region(self, box: Sequence[float], prediction: Prediction, label: int | None = None,
                     reduction: str = REDUCTION) -> RegionTarget:
        """The region of a box drawn on the segmentation (x0, y0, x1, y1, model-input pixels), scored on
        ``label``; None: the class the model predicts on most of its pixels. TargetError when it covers no
        pixel."""
        mask = BoxTarget(tuple(float(v) for v in box), 0).mask(prediction.size)
        if label is None:
            if not mask.any() or prediction.classes is None:
                raise TargetError(f"the drawn region {format_box(box)} has no pixels: draw a region that covers "
                                  "part of the image")
            label = int(np.bincount(prediction.classes[mask].ravel()).argmax())
        return self.region_target(int(label), mask, reduction)

    def scored(self, targets: Sequence[DenseTarget], inputs: torch.Tensor, *, iou_threshold: float = IOU_THRESHOLD,
               with_iou: bool = False) -> ScoredBundle:
        """The bundle the explainers run on: its model scores each of ``targets`` (class t = target t).

        Every box is looked for again on the clean ``inputs`` (first row): TargetError names a box the detector
        does not find (same class, IoU above ``iou_threshold``)."""
        if not targets:
            raise TargetError(f"no target to explain: {self.nothing_found()}")
        scores = DenseScores(self.model, self.kind, targets, iou_threshold=iou_threshold, with_iou=with_iou)
        if self.kind == DETECTION:
            clean = inputs[:1].to(self.device)
            with model_guard(scores), torch.inference_mode():
                _, ious = scores.box_scores(detections_of(self.model(clean), 1), clean)
            missing = [(t, float(iou)) for t, iou in zip(targets, ious[0].tolist(), strict=True)
                       if iou <= iou_threshold]
            if missing:
                target, iou = missing[0]
                raise TargetError(
                    f"the box {target.name or self.label_name(target.label)} {format_box(target.box)} is not among "
                    f"the model's detections on this image (the best {self.label_name(target.label)} box overlaps "
                    f"it with IoU {iou:.2f}, at most {iou_threshold} needed): it cannot be explained here; pick a "
                    "box the model detects")
        return ScoredBundle(
            name=self.name, model=scores, categories=[t.name or self.label_name(t.label) for t in targets],
            input_size=self.input_size, normalize=self.normalize, denormalize=self.denormalize,
            resize_size=self.resize_size, interpolation=self.interpolation, layers=self.layers,
            default_layer=self.default_layer, description=self.description, notes=list(self.notes),
            kind=self.kind, dense_targets=tuple(targets), source=self)


@dataclass
class ScoredBundle(ModelBundle):
    """A dense model with picked targets: ``model`` is a :class:`DenseScores` whose output column t scores
    ``dense_targets[t]``; ``categories`` name them. Everything that explains a classifier explains this."""

    kind: str = DETECTION
    dense_targets: tuple[DenseTarget, ...] = ()
    source: DenseBundle | None = None

    def target_mask(self, index: int, size: tuple[int, int] | None = None) -> np.ndarray:
        """bool [H, W]: the pixels of target ``index`` (its box, or its region) at ``size`` (default: the
        model's input)."""
        return self.dense_targets[index].mask(size or (self.input_size, self.input_size))


def dense_bundle(model: nn.Module, *, input_size: int, categories: Sequence[str] | None = None,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None, name: str = "",
                 description: str = "", notes: Sequence[str] = (), score_threshold: float = SCORE_THRESHOLD,
                 hookable: bool = True, kind: str | None = None,
                 normalize: Callable | None = None) -> DenseBundle:
    """A DenseBundle of any ``model`` in torchvision's detection or segmentation convention (told apart by one
    forward of a grey ``input_size`` image unless ``kind`` says). ``mean``/``std`` normalise the pixels (a
    detector of torchvision's does that itself: give none); ``categories`` name the classes (else "class i").
    ModelLoadError when the output is neither convention (or a classifier's)."""
    model = model.eval()
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    if mean is not None and std is not None:
        normalize, denormalize = affine_normalizer(mean, std)
    else:
        normalize, denormalize = normalize or _identity, _identity
    if kind is None:
        grey = normalize(torch.full((1, 3, input_size, input_size), 0.5, device=device))
        try:
            with model_guard(model), torch.inference_mode():
                output = model(grey)
        except Exception as exc:
            raise ModelLoadError(f"expected the model to take images [1, 3, {input_size}, {input_size}], but its "
                                 f"forward raised {type(exc).__name__}: {str(exc)[:300]}") from None
        try:
            kind = output_kind(output)
        except Exception as exc:
            raise ModelLoadError(str(exc)) from None
    if kind not in KINDS:
        raise ModelLoadError("expected a detection or segmentation model, but it returns a classifier's logits; "
                             "load it as a classifier")
    classes = list(categories or [])
    if kind == SEGMENTATION and not classes:
        with model_guard(model), torch.inference_mode():
            output = model(normalize(torch.full((1, 3, input_size, input_size), 0.5, device=device)))
        logits = segmentation_logits(output)
        if logits is None:
            raise ModelLoadError(f"expected a segmenter's output, a dict with 'out' [N, classes, H, W]; it returned "
                                 f"{describe(output)}")
        classes = [f"class {i}" for i in range(int(logits.shape[1]))]
    bundle = DenseBundle(name=name, model=model, categories=classes, input_size=input_size, normalize=normalize,
                         denormalize=denormalize, description=description, notes=list(notes), kind=kind,
                         score_threshold=score_threshold)
    if hookable:
        bundle.layers = layer_catalogue(model, (1, 3, input_size, input_size))
        bundle.default_layer = dense_default_layer(model, bundle.layers)
    return bundle


def dense_default_layer(model: nn.Module, catalogue) -> str | None:
    """The layer CAMs read by default on a dense model: the backbone's last map before any feature pyramid
    (``backbone.body.layer4``, ``backbone.layer4``), where the whole image's evidence has met; else the generic
    choice (:func:`explainers.layers.default_layer`)."""
    # not the pyramid (fpn), nor SSD's extra layers (backbone.extra: 2×2 maps past the backbone proper)
    backbone = [info for info in catalogue if info.name.startswith("backbone.")
                and not any(part in ("fpn", "extra") for part in info.name.split("."))]
    if backbone:
        return backbone[-1].name
    try:
        return default_layer(model, catalogue)
    except LayerError:  # no spatial layer: CAM methods say so when asked
        return None
