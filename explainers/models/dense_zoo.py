"""torchvision's detection and segmentation models: from the zoo (COCO weights fetched once into the torch hub
cache, as :mod:`.zoo` fetches the classifiers') or with a user's own state dict for one of those architectures.

Each is served in its own preprocessing. A detector (Faster R-CNN, Ren et al. 2015, arXiv:1506.01497; RetinaNet,
Lin et al. 2017, arXiv:1708.02002; FCOS, Tian et al. 2019, arXiv:1904.01355; SSD, Liu et al. 2016,
arXiv:1512.02325) takes pixels in [0, 1] and normalises and resizes inside its ``transform``; the image is given
to it square at the transform's own size, so the transform's resize is the identity. A segmenter (FCN, Long et
al. 2015, arXiv:1411.4038; DeepLabV3, Chen et al. 2017, arXiv:1706.05587; LR-ASPP, Howard et al. 2019,
arXiv:1905.02244) takes ImageNet-normalised pixels at its weights' resize size.
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torchvision
from torch import nn

from ..dense.outputs import DETECTION, SEGMENTATION
from ..errors import ModelLoadError
from . import zoo
from .dense import DenseBundle, dense_bundle


@lru_cache(maxsize=1)
def architectures() -> dict[str, str]:
    """{name: DETECTION or SEGMENTATION} of every torchvision detection and segmentation builder."""
    found = {name: DETECTION for name in torchvision.models.list_models(module=torchvision.models.detection)}
    segmenters = torchvision.models.list_models(module=torchvision.models.segmentation)
    found.update({name: SEGMENTATION for name in segmenters})
    return dict(sorted(found.items()))


def kind_of(name: str) -> str | None:
    return architectures().get(name)


def input_size(model: nn.Module, weights=None) -> int:
    """The square side the model is fed: a detector's transform size (SSD's fixed size, else its shorter-side
    target), a segmenter's weights' resize size (520 for torchvision's)."""
    transform = getattr(model, "transform", None)
    if transform is not None:
        fixed = getattr(transform, "fixed_size", None)
        if fixed:
            return int(fixed[0])
        return int(transform.min_size[0] if isinstance(transform.min_size, (tuple, list)) else transform.min_size)
    if weights is not None:
        return int(weights.transforms().resize_size[0])
    return 520


# A torchvision detector drops its detections under its own cut-off (0.05 for Faster R-CNN, RetinaNet and FCOS,
# 0.01 for SSD) before anything sees them. Lowered to this, the bundle's score threshold alone decides which boxes
# are listed, and a box whose score falls on a perturbed copy is still matched with that low score rather than
# dropped to 0 at the cut-off (a step in every occlusion or RISE curve).
OWN_SCORE_THRESHOLD = 1e-3


def open_threshold(model: nn.Module) -> None:
    """Lower a torchvision detector's own score cut-off to OWN_SCORE_THRESHOLD (see there)."""
    for owner in (getattr(model, "roi_heads", None), model):
        if owner is not None and isinstance(getattr(owner, "score_thresh", None), float):
            owner.score_thresh = min(owner.score_thresh, OWN_SCORE_THRESHOLD)
            return


def _fit_transform(model: nn.Module, side: int) -> None:
    """Square images of ``side`` pass a detector's transform unresized (its resize becomes the identity)."""
    transform = getattr(model, "transform", None)
    if transform is not None and not getattr(transform, "fixed_size", None):
        transform.min_size = (side,)
        transform.max_size = max(int(transform.max_size), side)


def _bundle(name: str, model: nn.Module, categories, description: str, notes=(), side: int | None = None,
            weights=None) -> DenseBundle:
    kind = kind_of(name)
    side = side or input_size(model, weights)
    _fit_transform(model, side)
    if kind == DETECTION:
        open_threshold(model)
    mean = std = None
    notes = list(notes)
    if kind == DETECTION:
        notes.append(f"The picture is given to the detector as a {side}×{side} square (squeezed whole, or the centre "
                     "crop), where torchvision's own transform would keep its aspect ratio; boxes are mapped back "
                     "onto the original.")
    if kind == SEGMENTATION:
        transforms = weights.transforms() if weights is not None else None
        mean = tuple(transforms.mean) if transforms is not None else (0.485, 0.456, 0.406)
        std = tuple(transforms.std) if transforms is not None else (0.229, 0.224, 0.225)
    return dense_bundle(model, input_size=side, categories=categories, mean=mean, std=std, name=name,
                        description=description, notes=list(notes), kind=kind)


def info(name: str) -> dict:
    """What the UI needs before loading a zoo detector or segmenter; builds nothing, downloads nothing."""
    weights = zoo.default_weights(name)
    path = zoo.weights_file(name)
    size_mb = weights.meta.get("_file_size")
    metrics = weights.meta.get("_metrics", {})
    return {
        "name": name,
        "kind": kind_of(name),
        "offline": path.is_file(),
        "download_mb": float(size_mb) if size_mb is not None else None,
        "weights_file": str(path),
        "weights_url": zoo.weights_url(weights),
        "weights": str(weights),
        "categories": len(weights.meta["categories"]),
        "input_size": None,
        "resize_size": None,
        "interpolation": "bilinear",
        "num_params": weights.meta.get("num_params"),
        "description": _description(name, weights, metrics),
    }


def _description(name: str, weights, metrics: dict) -> str:
    box = next((m.get("box_map") for m in metrics.values() if "box_map" in m), None)
    miou = next((m.get("miou") for m in metrics.values() if "miou" in m), None)
    score = f", COCO box mAP {box:.1f}" if box is not None else f", mIoU {miou:.1f}" if miou is not None else ""
    return f"torchvision {kind_of(name)} model {name} with {weights}{score}"


def build(name: str, *, progress=None, offline: bool | None = None, tqdm_bar: bool = False) -> DenseBundle:
    """Zoo detector or segmenter ``name`` with its DEFAULT weights (downloaded on first use), on the CPU."""
    weights = zoo.default_weights(name)
    path = zoo.ensure_file(name, progress=progress, offline=offline, tqdm_bar=tqdm_bar)
    try:
        model = zoo.build_from_file(name, weights, path)
    except Exception as exc:
        raise ModelLoadError(
            f"expected {path} to hold the {weights} state dict of {name!r}, but loading it failed "
            f"({type(exc).__name__}: {str(exc)[:500]}); delete that file so it is downloaded again, or replace "
            f"it with {zoo.weights_url(weights)}") from exc
    return _bundle(name, model.eval(), list(weights.meta["categories"]), _description(name, weights,
                   weights.meta.get("_metrics", {})), weights=weights)


def construct(name: str, num_classes: int | None = None, aux_loss: bool = False) -> nn.Module:
    """The architecture with random weights and no download (no backbone weights either)."""
    kwargs = {"weights": None, "weights_backbone": None}
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    if kind_of(name) == SEGMENTATION and aux_loss:
        kwargs["aux_loss"] = True
    return torchvision.models.get_model(name, **kwargs)


def from_state_dict(name: str, state: dict[str, torch.Tensor], *, categories=None, side: int | None = None,
                    filename: str = "the file") -> DenseBundle:
    """Architecture ``name`` with a user's state dict: the class count read off the head's weights (it scales the
    head's output channels), loaded strictly; a mismatch lists the keys."""
    aux = any(key.startswith("aux_classifier.") for key in state)
    built = construct(name, aux_loss=aux)
    default_classes = len(zoo.default_weights(name).meta["categories"])
    expected = {key: tuple(value.shape) for key, value in built.state_dict().items()}
    differ = [key for key in expected if key in state and tuple(state[key].shape) != expected[key]]
    num_classes = default_classes
    if differ:
        key = differ[0]
        ratio = state[key].shape[0] * default_classes
        if ratio % expected[key][0]:
            raise ModelLoadError(f"{filename} does not fit {name!r}: {key} is {list(state[key].shape)}, expected "
                                 f"{list(expected[key])}")
        num_classes = ratio // expected[key][0]
        built = construct(name, num_classes, aux_loss=aux)
    try:
        built.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelLoadError(f"expected {filename} to hold a state dict of {name!r} ({num_classes} classes), but "
                             f"loading it failed: {str(exc)[:600]}") from None
    if categories and len(categories) != num_classes:
        raise ModelLoadError(f"expected {num_classes} class names for {filename} (one per output of its head"
                             f"{', the background first' if kind_of(name) == DETECTION else ''}), got "
                             f"{len(categories)}")
    names = list(categories) if categories else [f"class {i}" for i in range(num_classes)]
    notes = [] if categories else [f"No labels given: the classes are named class 0 ... class {num_classes - 1}."]
    return _bundle(name, built.eval(), names, f"torchvision's {name} with your weights from {filename} "
                   f"({num_classes} classes)", notes, side=side)
