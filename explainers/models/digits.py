"""The bundled digits models, trained by this project on its procedural digits (``explainers.digits``).

- ``lenet_digits``: LeNet-5 (LeCun, Bottou, Bengio & Haffner 1998, doi:10.1109/5.726791). The dashboard feeds RGB
  images; the network is :class:`~explainers.digits.model.LeNet5RGB`, whose first step (``gray``) averages the
  three normalised channels to the gray input LeNet-5 was trained on.
- ``vit_digits``: a small ViT (Dosovitskiy et al. 2020, arXiv:2010.11929), a plain torchvision
  ``VisionTransformer`` whose patch embedding reads a colour picture as the mean of its channels
  (:mod:`explainers.digits.vit`): a real transformer for the attention methods, offline.

The weights ship in ``assets/digits`` with the JSON record of the command that made them, so the models work
offline. Every channel is normalised with the digit set's pixel mean and std, so a gray picture reaches the
network exactly as in training. The shuffled-label LeNet (data randomisation, Adebayo et al. 2018,
arXiv:1810.03292) is not in the model picker; load it with ``load_digits_bundle("shuffled")``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from PIL import Image

from ..digits import vit
from ..digits.data import MEAN, STD
from ..digits.model import CLASSES, INPUT_SIZE, TRAIN_COMMANDS, VARIANTS, load_lenet
from ..digits.model import weights_path as lenet_weights_path
from ..errors import ModelUnavailableError
from ..layers import default_layer, layer_catalogue
from .base import ModelBundle, affine_normalizer

NAME = VARIANTS["real"]  # "lenet_digits"
VIT_NAME = vit.NAME  # "vit_digits"
# Variant -> model name: LeNet-5 with real or shuffled labels, and the ViT.
NAMES = {**VARIANTS, "vit": VIT_NAME}
COMMANDS = {**TRAIN_COMMANDS, "vit": vit.TRAIN_COMMAND}
# The rectified output of the last convolution, 16 x 16 x 16, before its pooling: the layer Grad-CAM's paper
# takes (the last convolutional maps), at twice the resolution of the pooled 8 x 8 grid.
DEFAULT_LAYER = "features.relu2"
DESCRIPTION = {
    "real": "LeNet-5 (LeCun et al. 1998) trained by this project on procedural digits with ground-truth boxes; "
    "32 x 32 gray input; works offline",
    "shuffled": "LeNet-5 trained on the procedural digits with shuffled labels (data randomisation, Adebayo et al. "
    "2018, arXiv:1810.03292); held-out accuracy near chance",
    "vit": "A small vision transformer (ViT, Dosovitskiy et al. 2020; torchvision's VisionTransformer: 4 blocks, "
    "width 64, 4 heads) trained by this project on procedural digits with ground-truth boxes; 32 x 32 gray input "
    "in an 8 x 8 grid of 4-pixel patches plus a class token; works offline",
}


def _variant(variant: str) -> str:
    if variant not in NAMES:
        raise ModelUnavailableError(f"digits model variant must be one of {sorted(NAMES)}, got {variant!r}")
    return variant


def weights_path(variant: str = "real") -> Path:
    """Where a digits model's safetensors file lives (``assets/digits``)."""
    return vit.weights_path() if _variant(variant) == "vit" else lenet_weights_path(variant)


def training_record(variant: str = "real") -> dict | None:
    """The JSON written next to the weights by ``python -m explainers.digits train`` (None when missing)."""
    path = weights_path(_variant(variant)).with_suffix(".json")
    return json.loads(path.read_text()) if path.is_file() else None


def info(variant: str = "real") -> dict:
    """What the UI needs to know about a digits model, without building it (same keys as the other models)."""
    path = weights_path(_variant(variant))
    record = training_record(variant)
    return {
        "name": NAMES[variant],
        "offline": path.is_file(),
        "download_mb": None,
        "weights_file": str(path),
        "weights_url": None,
        "categories": len(CLASSES),
        "input_size": INPUT_SIZE,
        "resize_size": INPUT_SIZE,
        "interpolation": "bilinear",
        "description": DESCRIPTION[variant],
        "held_out_accuracy": record.get("held_out_accuracy") if record else None,
        "train_command": record.get("command") if record else COMMANDS[variant],
    }


def ensure_weights(variant: str = "real"):
    """The path of the shipped weights; raises ModelUnavailableError (with the command that rebuilds them)."""
    path = weights_path(_variant(variant))
    if not path.is_file():
        raise ModelUnavailableError(
            f"the digits model {NAMES[variant]!r} needs {path}, which is missing; "
            f"rebuild it with `{COMMANDS[variant]}`"
        )
    return path


def load_digits_bundle(variant: str = "real", *, device: str | torch.device | None = None) -> ModelBundle:
    """A digits model as a ModelBundle in eval mode, on ``device`` (default: where the weights load, the CPU).

    ``variant`` is ``"real"`` (``lenet_digits``, in ``list_models()``), ``"shuffled"`` (LeNet-5 trained on permuted
    labels, for data randomisation) or ``"vit"`` (``vit_digits``, in ``list_models()``).
    ``bundle.preprocess(image)`` gives [1, 3, 32, 32]; ``default_layer`` is LeNet's ``features.relu2``, or the
    ViT's last block's first norm (``encoder.layers.encoder_layer_3.ln_1``, see ``explainers.layers.default_layer``).
    """
    ensure_weights(variant)
    model = vit.load_vit() if variant == "vit" else load_lenet(_variant(variant), rgb=True)
    if device is not None:
        model.to(torch.device(device))
    model.eval()
    normalize, denormalize = affine_normalizer((MEAN,) * 3, (STD,) * 3)
    bundle = ModelBundle(
        name=NAMES[variant],
        model=model,
        categories=list(CLASSES),
        input_size=INPUT_SIZE,
        normalize=normalize,
        denormalize=denormalize,
        # Resize the short side to 32 before the centre crop: a 32 x 32 sample passes unchanged either way.
        resize_size=INPUT_SIZE,
        interpolation=Image.Resampling.BILINEAR,
        description=DESCRIPTION[variant],
    )
    bundle.layers = layer_catalogue(model, (1, 3, INPUT_SIZE, INPUT_SIZE))
    bundle.default_layer = default_layer(model, bundle.layers) if variant == "vit" else DEFAULT_LAYER
    return bundle
