"""The architectures a user's state dict can be loaded into, and each one's preprocessing defaults.

Three families: the default model (EfficientNet-Lite0), torchvision's classification models and timm's models.
Nothing here builds a model or downloads anything: names come from the libraries' registries and the defaults
from their weight and pretrained configs.
"""

from __future__ import annotations

import difflib
from functools import lru_cache

from PIL import Image

from ..errors import ModelLoadError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_ARCHITECTURE = "efficientnet_lite0"


@lru_cache(maxsize=1)
def torchvision_architectures() -> tuple[str, ...]:
    import torchvision

    return tuple(sorted(torchvision.models.list_models(module=torchvision.models)))


@lru_cache(maxsize=1)
def timm_architectures() -> tuple[str, ...]:
    try:
        import timm
    except ImportError:  # timm is a runtime requirement, but a trimmed install still loads torchvision models
        return ()
    return tuple(timm.list_models())


TIMM_PREFIX = "timm:"  # "timm:resnet18" picks timm's resnet18 where torchvision has the same name


def split(architecture: str) -> tuple[str, str]:
    """(family, bare name): family "default", "torchvision" or "timm". A bare name both libraries have (e.g.
    resnet18) is torchvision's; ``timm:NAME`` asks for timm's."""
    if architecture.startswith(TIMM_PREFIX) and architecture[len(TIMM_PREFIX):] in timm_architectures():
        return "timm", architecture[len(TIMM_PREFIX):]
    if architecture == DEFAULT_ARCHITECTURE:
        return "default", architecture
    if architecture in torchvision_architectures():
        return "torchvision", architecture
    if architecture in timm_architectures():
        return "timm", architecture
    known = dict.fromkeys((DEFAULT_ARCHITECTURE, *torchvision_architectures(), *timm_architectures()))
    close = difflib.get_close_matches(architecture.removeprefix(TIMM_PREFIX), list(known), n=4)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise ModelLoadError(f"unknown architecture {architecture!r}: not the default model, a torchvision "
                         f"classification model or a timm model{hint}")


def family(architecture: str) -> str:
    return split(architecture)[0]


def architectures() -> list[str]:
    """Every name :func:`split` accepts: the default first, then torchvision's, then timm's (``timm:NAME`` where
    the default or torchvision has the same name)."""
    taken = {DEFAULT_ARCHITECTURE, *torchvision_architectures()}  # timm has an efficientnet_lite0 of its own too
    timm_names = [f"{TIMM_PREFIX}{n}" if n in taken else n for n in timm_architectures()]
    return [DEFAULT_ARCHITECTURE, *torchvision_architectures(), *timm_names]


def _resampling(name: str | None) -> Image.Resampling:
    return getattr(Image.Resampling, str(name or "bilinear").upper(), Image.Resampling.BILINEAR)


def preprocessing_defaults(architecture: str) -> dict:
    """input_size, resize_size, interpolation (a PIL mode), mean and std the architecture was trained with.

    torchvision: its default weights' transforms; timm: its pretrained config (input_size, crop_pct,
    interpolation, mean, std); the default model: ImageNet's 224 px centre crop.
    """
    kind, architecture = split(architecture)
    if kind == "torchvision":
        import torchvision

        from .zoo import _preprocessing

        try:
            weights = torchvision.models.get_model_weights(architecture).DEFAULT
        except (ValueError, AttributeError):  # an architecture without published weights
            return {"input_size": 224, "resize_size": 256, "interpolation": Image.Resampling.BILINEAR,
                    "mean": IMAGENET_MEAN, "std": IMAGENET_STD}
        found = _preprocessing(weights)
        return {k: found[k] for k in ("input_size", "resize_size", "interpolation", "mean", "std")}
    if kind == "timm":
        import timm

        config = timm.get_pretrained_cfg(architecture)
        config = config.to_dict() if config is not None and hasattr(config, "to_dict") else (config or {})
        size = int(config.get("input_size", (3, 224, 224))[-1])
        crop = float(config.get("crop_pct") or 0.875)
        return {"input_size": size, "resize_size": int(round(size / crop)),
                "interpolation": _resampling(config.get("interpolation")),
                "mean": tuple(float(v) for v in config.get("mean", IMAGENET_MEAN)),
                "std": tuple(float(v) for v in config.get("std", IMAGENET_STD))}
    from . import default

    return {"input_size": default.INPUT_SIZE, "resize_size": round(default.INPUT_SIZE / 0.875),
            "interpolation": Image.Resampling.BILINEAR, "mean": default.MEAN, "std": default.STD}
