"""The options that pick a detector's box or a segmenter's region (``--box``, ``--region-class``, ...), and the one
function that turns them into targets for an image: what ``explain``, ``sanity`` and ``faithfulness`` share.

    python -m explainers explain scene.png --model MODEL --method gradcam --box 8,10,24,26
    python -m explainers explain scene.png --model MODEL --list-boxes
    python -m explainers explain street.png --model MODEL --method gradcam --region-class road
    python -m explainers sanity scene.png --model MODEL --methods gradcam --box 8,10,24,26
    python -m explainers faithfulness scene.png --model MODEL --out DIR --box-label red
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..dense.outputs import DETECTION
from ..dense.records import describe_target, format_box, to_model_box, to_original_box
from ..dense.targets import IOU_THRESHOLD, REDUCTIONS
from ..errors import ParameterError, TargetError
from ..models import RESIZE
from ..models.dense import SCORE_THRESHOLD, DenseBundle, Prediction, ScoredBundle
from ..targets import class_index as class_named

DENSE_OPTIONS = ("box", "box_label", "region_class", "list_boxes")


def box_corners(text: str) -> tuple[float, float, float, float]:
    """``"8,10,24,26"`` -> (8.0, 10.0, 24.0, 26.0), with x0 < x1 and y0 < y1."""
    try:
        values = tuple(float(part) for part in text.replace(" ", "").split(","))
    except ValueError:
        values = ()
    if len(values) != 4 or not (values[0] < values[2] and values[1] < values[3]):
        raise argparse.ArgumentTypeError(f"expected a box x0,y0,x1,y1 with x0 < x1 and y0 < y1 (the original "
                                         f"image's pixels), got {text!r}")
    return values


def iou_fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"expected an IoU in [0, 1), got {text!r}")
    return value


def add_dense_options(parser: argparse.ArgumentParser, listing: bool = True) -> None:
    """The options of a detector's or segmenter's target (ignored by classifiers, where giving one is an error)."""
    group = parser.add_argument_group("detectors and segmenters")
    group.add_argument("--box", action="append", default=None, type=box_corners, metavar="X0,Y0,X1,Y1",
                       help="explain the detected box that matches this one (original image pixels; repeatable; "
                       "default: the top-scoring box)")
    group.add_argument("--box-label", default=None, metavar="NAME",
                       help="the class of the --box to match (a name or index; default: any)")
    group.add_argument("--region-class", action="append", default=None, metavar="NAME|INDEX",
                       help="explain the predicted region of this class (repeatable; default: the largest)")
    group.add_argument("--region-reduction", default="sum", choices=REDUCTIONS,
                       help="a region's score: the sum or the mean of its class's logits (default: %(default)s)")
    group.add_argument("--score-threshold", default=None, type=float, metavar="F",
                       help=f"lowest score of a listed detection (default: the model's, {SCORE_THRESHOLD})")
    group.add_argument("--iou-threshold", default=IOU_THRESHOLD, type=iou_fraction, metavar="F",
                       help="IoU a re-detection needs to count as the same box (default: %(default)s)")
    group.add_argument("--with-iou", action="store_true",
                       help="a box's score adds the IoU of its re-detection (pytorch-grad-cam's box score)")
    if listing:
        group.add_argument("--list-boxes", action="store_true",
                           help="print the detections (index, label, score, box in original pixels) and exit")


# options of a detector only, of a segmenter only, and the parser's value when they are not given
DETECTOR_ONLY = {"box": None, "box_label": None, "list_boxes": False, "score_threshold": None,
                 "iou_threshold": IOU_THRESHOLD, "with_iou": False}
SEGMENTER_ONLY = {"region_class": None, "region_reduction": "sum"}


def check_dense_options(args: argparse.Namespace, bundle: Any) -> Any:
    """The bundle the command runs on: a dense one with ``--score-threshold`` applied (a copy: the loaded bundle is
    not changed). An option of a detector or segmenter given to a classifier, or to the other kind of model, is a
    clear error, never silently ignored."""
    detector = isinstance(bundle, DenseBundle) and bundle.kind == DETECTION
    segmenter = isinstance(bundle, DenseBundle) and not detector
    for options, applies in ((DETECTOR_ONLY, detector), (SEGMENTER_ONLY, segmenter)):
        given = [name for name, unset in options.items() if getattr(args, name, unset) != unset]
        if given and not applies:
            flag = "--" + given[0].replace("_", "-")
            if not isinstance(bundle, DenseBundle):
                raise ParameterError(f"{flag} applies to a detector or segmenter; {bundle.name} is a classifier "
                                     "(use --target)")
            raise ParameterError(f"{flag} does not apply to {bundle.name}, a {bundle.kind} model; use "
                                 + ("--box" if detector else "--region-class"))
    return bundle.with_threshold(getattr(args, "score_threshold", None)) if detector else bundle


def class_index(bundle: DenseBundle, text: str, option: str) -> int:
    """A class given by index or by name (any case; an ambiguous or unknown name is an error that helps)."""
    text = str(text).strip()
    try:
        if text.lstrip("-").isdigit():
            index = int(text)
            if not 0 <= index < max(len(bundle.categories), 1):
                raise TargetError(f"the model has classes 0..{len(bundle.categories) - 1}")
            return index
        return class_named(text, bundle.categories)
    except TargetError as exc:
        raise TargetError(f"{option} {text}: {exc}") from None


@dataclass
class Picked:
    """The targets picked for one image and what was said about the pick (a default, for stderr)."""

    targets: list
    notice: str = ""


def pick_targets(args: argparse.Namespace, bundle: DenseBundle, prediction, geometry: Sequence[float]) -> Picked:
    """The targets ``--box`` / ``--region-class`` name on this image's ``prediction`` (boxes given in the original
    image's pixels are mapped through ``geometry``), or the default: the top-scoring box, the largest region."""
    side = int(bundle.input_size)
    if bundle.kind == DETECTION:
        if not prediction.detections:
            raise TargetError(bundle.nothing_found().replace("the score threshold", "--score-threshold"))
        label = None if args.box_label is None else class_index(bundle, args.box_label, "--box-label")
        if not args.box:
            if label is not None:
                found = [d for d in prediction.detections if d.label == label]
                if not found:
                    raise TargetError(f"no {bundle.label_name(label)} box is detected on this image")
                top = bundle.box_target(found[0].box, prediction, label, args.iou_threshold)
            else:
                top = bundle.targets(prediction)[0]
            return Picked([top], f"no --box given: explaining the top-scoring box {top.name} "
                          f"{format_box(to_original_box(top.box, geometry, side))}")
        return Picked([_match_box(bundle, box, prediction, label, geometry, args.iou_threshold)
                       for box in args.box])
    if not prediction.shares:
        raise TargetError(bundle.nothing_found())
    regions = {t.label: t for t in bundle.targets(prediction, args.region_reduction)}
    if not args.region_class:
        # the largest region that is not the background (torchvision's segmenters name class 0 so), if any
        first = next((t for t in regions.values() if not bundle.label_name(t.label).startswith("__")),
                     next(iter(regions.values())))
        return Picked([first], f"no --region-class given: explaining the largest region, {first.name}")
    picked = []
    for text in args.region_class:
        label = class_index(bundle, text, "--region-class")
        if label not in regions:
            present = ", ".join(t.name for t in regions.values())
            raise TargetError(f"--region-class {text}: the model predicts no {bundle.label_name(label)} pixel on "
                              f"this image; it predicts {present}")
        picked.append(regions[label])
    return Picked(picked)


@dataclass
class DenseImage:
    """One image as a dense model sees it: ``inputs`` [1, 3, S, S] on the model's device, ``geometry`` the part of
    the original it shows (for boxes in the original's pixels), ``prediction`` its detections or classes."""

    inputs: Any
    geometry: tuple
    prediction: Prediction


def dense_image(bundle: DenseBundle, image, preprocessing: str = RESIZE) -> DenseImage:
    """``image`` (PIL) preprocessed and predicted: what :func:`pick_targets` picks from."""
    inputs = bundle.preprocess(image, preprocessing).to(bundle.device)
    return DenseImage(inputs, tuple(bundle.crop_geometry(image.size, preprocessing)), bundle.predict(inputs))


def scored_targets(args: argparse.Namespace, bundle: DenseBundle, targets: Sequence, inputs) -> ScoredBundle:
    """The picked ``targets`` as a bundle whose output column t scores target t, with ``--iou-threshold`` and
    ``--with-iou`` (every box checked to be re-detected on the clean ``inputs``)."""
    return bundle.scored(list(targets), inputs, iou_threshold=args.iou_threshold, with_iou=args.with_iou)


def refuse_class_target(bundle: DenseBundle, given: bool) -> None:
    """``--target`` (a classifier's class) given to a dense model: the one-line error that names the options that
    pick its boxes or regions."""
    if given:
        raise ParameterError(f"--target picks a class of a classifier; {bundle.name} is a {bundle.kind} model: pick "
                             "a box with --box or a region with --region-class")


def describe(target_record: dict[str, Any]) -> str:
    """A :func:`target_manifest` record in a few words: "box red 0.97 [16,20,48,52]" or "region red (256 px,
    sum)"."""
    if target_record["kind"] == "box":
        return f"box {target_record['label_name']} {target_record['score']:.2f} {format_box(target_record['box'])}"
    return (f"region {target_record['class_name']} ({target_record['pixels']} px, "
            f"{target_record['reduction']})")


def file_part(target_record: dict[str, Any], index: int) -> str:
    """A target as a part of a file name: "box2" (its rank among the detections) or the region's class."""
    if target_record["kind"] == "box":
        return f"box{target_record.get('rank') or index + 1}"
    text = str(target_record["class_name"])
    return "".join(c if c.isalnum() or c in "-." else "_" for c in text).strip("_") or "region"


def _match_box(bundle: DenseBundle, box: Sequence[float], prediction, label: int | None,
               geometry: Sequence[float], iou_threshold: float):
    """The detection a ``--box`` (original pixels) matches; the error says both spaces, as the backend's names
    the model input's pixels."""
    side = int(bundle.input_size)
    try:
        return bundle.box_target(to_model_box(box, geometry, side), prediction, label, iou_threshold)
    except TargetError as exc:
        raise TargetError(f"--box {format_box(box)} (original pixels; the model sees {side}x{side}): {exc} "
                          "(model-input pixels); `explain --list-boxes` prints the detections") from None


def print_boxes(bundle: DenseBundle, prediction, geometry: Sequence[float], path: str) -> None:
    """One line per detection: index, label, score and box in the original image's pixels."""
    side = int(bundle.input_size)
    if not prediction.detections:
        print(f"{path}: no detection at or above score {bundle.score_threshold:g}")
    for index, detection in enumerate(prediction.detections, start=1):
        print(f"{path}  #{index}  {bundle.label_name(detection.label)}  {detection.score:.3f}  "
              f"{format_box(to_original_box(detection.box, geometry, side))}")


def target_manifest(bundle: DenseBundle, target, geometry: Sequence[float]) -> dict[str, Any]:
    """The manifest's ``dense_target``: :func:`~explainers.dense.records.describe_target` in the original image's
    pixels."""
    return describe_target(bundle, target, geometry)


def say(text: str) -> None:
    """A default the command chose (which box, which region): on stderr, so stdout stays the list of files."""
    if text:
        print(text, file=sys.stderr)
