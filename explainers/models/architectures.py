"""The architectures a user's state dict can be loaded into, and each one's preprocessing defaults: the one place
both the loader (:mod:`explainers.models.user`) and the Models page read them.

Four families: the default model (EfficientNet-Lite0), torchvision's classification models, torchvision's
detection and segmentation models ("dense", loaded by :mod:`.dense_zoo`) and timm's models. Nothing here downloads
anything: names come from the libraries' registries and the defaults from their weight and pretrained configs
(a torchvision detector's input size from its transform, read off the architecture built once with random
weights).
"""

from __future__ import annotations

import difflib
import math
from functools import lru_cache
from typing import Any

import torch
import torchvision
from PIL import Image

from ..dense.outputs import SEGMENTATION
from ..errors import ModelLoadError
from . import default, dense_zoo
from .inputs import DEFAULT_INPUT_SIZE, IMAGENET_MEAN, IMAGENET_STD
from .zoo import weights_preprocessing

DEFAULT_ARCHITECTURE = default.NAME
DENSE = "dense"  # the family of torchvision's detectors and segmenters
TIMM_PREFIX = "timm:"  # "timm:resnet18" picks timm's resnet18 where torchvision has the same name


@lru_cache(maxsize=1)
def torchvision_architectures() -> tuple[str, ...]:
    return tuple(sorted(torchvision.models.list_models(module=torchvision.models)))


@lru_cache(maxsize=1)
def timm_architectures() -> tuple[str, ...]:
    try:
        import timm
    except ImportError:  # timm is a runtime requirement, but a trimmed install still loads torchvision models
        return ()
    return tuple(timm.list_models())


def split(architecture: Any) -> tuple[str, str]:
    """(family, name): family "default", "torchvision", "dense" (a torchvision detector or segmenter) or "timm".
    A bare name both libraries have (e.g.
    resnet18) is torchvision's; ``timm:NAME`` asks for timm's. timm names may carry a pretrained tag
    (``resnet10t.c3_in1k``) whose config gives the preprocessing."""
    if not isinstance(architecture, str) or not architecture.strip():
        raise ModelLoadError(f"expected an architecture name (e.g. 'resnet18'), got {architecture!r}")
    key = architecture.strip().lower()
    forced = key.startswith(TIMM_PREFIX)
    bare = key.removeprefix(TIMM_PREFIX)
    if not forced and bare == DEFAULT_ARCHITECTURE:
        return "default", bare
    if not forced and bare in torchvision_architectures():
        return "torchvision", bare
    if not forced and dense_zoo.kind_of(bare):
        return DENSE, bare
    if bare in timm_architectures() or bare.partition(".")[0] in timm_architectures():
        return "timm", bare
    names = list(dict.fromkeys([DEFAULT_ARCHITECTURE, *torchvision_architectures(), *dense_zoo.architectures(),
                                *timm_architectures()]))
    close = difflib.get_close_matches(bare, names, n=4, cutoff=0.6)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ModelLoadError(f"unknown architecture {architecture!r}: expected the default model "
                         f"{DEFAULT_ARCHITECTURE!r}, a torchvision classification, detection or segmentation model "
                         f"or a timm model{hint}")


def family(architecture: str) -> str:
    return split(architecture)[0]


def architectures() -> list[str]:
    """Every name the Models page offers: the default first, then torchvision's classifiers, its detectors and
    segmenters, then timm's (``timm:NAME`` where the default or torchvision has the same name)."""
    dense = tuple(dense_zoo.architectures())
    taken = {DEFAULT_ARCHITECTURE, *torchvision_architectures(), *dense}  # timm has an efficientnet_lite0 too
    timm_names = [f"{TIMM_PREFIX}{n}" if n in taken else n for n in timm_architectures()]
    return [DEFAULT_ARCHITECTURE, *torchvision_architectures(), *dense, *timm_names]


@lru_cache(maxsize=32)
def dense_input_size(name: str) -> int:
    """The square side a torchvision detector or segmenter is fed: a segmenter's weights' resize size (read off
    the weights' transforms, nothing built), a detector's transform size (the architecture built once, with
    random weights and nothing downloaded)."""
    if dense_zoo.kind_of(name) == SEGMENTATION:
        try:
            return dense_zoo.input_size(torch.nn.Module(), torchvision.models.get_model_weights(name).DEFAULT)
        except (ValueError, AttributeError, KeyError):
            return dense_zoo.input_size(torch.nn.Module())
    return dense_zoo.input_size(dense_zoo.construct(name))


def _timm_config(name: str, model: Any = None) -> dict:
    config = getattr(model, "pretrained_cfg", None)
    if not config:
        import timm  # deferred: a heavy import that only timm architectures need

        config = timm.get_pretrained_cfg(name) or timm.get_pretrained_cfg(name.partition(".")[0])
    if config is not None and hasattr(config, "to_dict"):
        config = config.to_dict()
    return dict(config or {})


def preprocessing_defaults(architecture: str, model: Any = None) -> dict:
    """input_size, resize_size, interpolation (a PIL mode), mean and std the architecture was trained with.

    A torchvision detector: its transform's size, no resize, and mean 0 / std 1 (it takes pixels in [0, 1] and
    normalises them itself); a segmenter: its weights' resize size and ImageNet's mean and std (the square image
    is fed whole, not cropped). torchvision's classifiers: their default weights' transforms; timm: the built
    model's pretrained config (or the registry's for the name), resize = floor(size / crop_pct) as timm's eval
    transform; the default model: its own.
    """
    kind, name = split(architecture)
    if kind == "default":
        return {"input_size": default.INPUT_SIZE, "resize_size": None, "interpolation": Image.Resampling.BICUBIC,
                "mean": default.MEAN, "std": default.STD}
    if kind == DENSE:
        segmenter = dense_zoo.kind_of(name) == SEGMENTATION
        return {"input_size": dense_input_size(name), "resize_size": None, "interpolation": Image.Resampling.BILINEAR,
                "mean": IMAGENET_MEAN if segmenter else (0.0, 0.0, 0.0),
                "std": IMAGENET_STD if segmenter else (1.0, 1.0, 1.0)}
    if kind == "torchvision":
        try:
            weights = torchvision.models.get_model_weights(name).DEFAULT
        except (ValueError, AttributeError, KeyError):  # an architecture without published weights
            return {"input_size": DEFAULT_INPUT_SIZE, "resize_size": 256, "interpolation": Image.Resampling.BILINEAR,
                    "mean": IMAGENET_MEAN, "std": IMAGENET_STD}
        found = weights_preprocessing(weights)
        return {k: found[k] for k in ("input_size", "resize_size", "interpolation", "mean", "std")}
    config = _timm_config(name, model)
    size = int(tuple(config.get("input_size") or (3, DEFAULT_INPUT_SIZE, DEFAULT_INPUT_SIZE))[-1])
    crop = float(config.get("crop_pct") or 0.875)
    mode = str(config.get("interpolation") or "bilinear").upper()
    return {"input_size": size, "resize_size": int(math.floor(size / crop)),
            "interpolation": getattr(Image.Resampling, mode, Image.Resampling.BILINEAR),
            "mean": tuple(float(v) for v in config.get("mean") or IMAGENET_MEAN),
            "std": tuple(float(v) for v in config.get("std") or IMAGENET_STD)}
