"""A small vision transformer for the procedural digits, and its shipped weights (``vit_digits``).

ViT: Dosovitskiy et al. 2020, arXiv:2010.11929. The network is torchvision's own ``VisionTransformer`` (so every
code path written for torchvision's ViT applies to it), sized for 32 x 32 digits: 4-pixel patches give an 8 x 8
grid of patch tokens after a class token, then 4 encoder blocks of width 64 with 4 heads and an MLP of 128.

It trains on the 1-channel digits with a 1-channel patch embedding; the shipped file is the plain 3-channel
``VisionTransformer``, whose ``conv_proj`` holds a third of the gray kernel in each channel. The projection is
linear, so a gray picture (R = G = B) gives the trained network's tokens exactly (to float rounding) and a colour
picture is read as the mean of its channels, as :class:`~explainers.digits.model.LeNet5RGB` reads it.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import torch
from torch import nn
from torchvision.models import VisionTransformer

from ..errors import ModelUnavailableError
from .model import ASSETS, INPUT_SIZE, load_shipped

NAME = "vit_digits"
TRAIN_COMMAND = "python -m explainers.digits train --arch vit"
# A 8 x 8 grid of 4-pixel patches: fine enough for token maps, few enough tokens (65) to train in minutes on a CPU.
CONFIG = {
    "image_size": INPUT_SIZE,
    "patch_size": 4,
    "num_layers": 4,
    "num_heads": 4,
    "hidden_dim": 64,
    "mlp_dim": 128,
    "num_classes": 10,
}


def build_vit(channels: int = 3) -> VisionTransformer:
    """The digits ViT with fresh (seeded by the caller) weights; ``channels=1`` swaps in the gray patch embedding
    used for training, initialised as torchvision initialises its own (truncated normal, std sqrt(1 / fan_in))."""
    model = VisionTransformer(**CONFIG)
    if channels != 3:
        patch, width = CONFIG["patch_size"], CONFIG["hidden_dim"]
        model.conv_proj = nn.Conv2d(channels, width, kernel_size=patch, stride=patch)
        fan_in = channels * patch * patch
        nn.init.trunc_normal_(model.conv_proj.weight, std=(1.0 / fan_in) ** 0.5)
        nn.init.zeros_(model.conv_proj.bias)
    return model


def rgb_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A gray-trained state dict made into the plain 3-channel ViT's: each channel gets a third of the gray kernel,
    so the patch embedding of [g, g, g] is that of g."""
    weight = state["conv_proj.weight"]
    if weight.shape[1] == 3:
        return dict(state)
    if weight.shape[1] != 1:
        raise ValueError(f"expected a 1- or 3-channel patch embedding, got conv_proj.weight {list(weight.shape)}")
    return {**state, "conv_proj.weight": (weight / 3).repeat(1, 3, 1, 1).contiguous()}


def weights_path(directory: Path | str | None = None) -> Path:
    """Where the ViT's safetensors file lives (``assets/digits`` unless told otherwise)."""
    return Path(directory or ASSETS) / f"{NAME}.safetensors"


def load_vit(directory: Path | str | None = None) -> VisionTransformer:
    """The shipped digits ViT, a plain torchvision ``VisionTransformer`` for [N, 3, 32, 32] input, on the CPU in
    eval mode. Raises ModelUnavailableError when the file is missing or holds something else, with the command
    that rebuilds it."""
    path = weights_path(directory)
    command = TRAIN_COMMAND + (f" --out {shlex.quote(str(directory))}" if directory is not None else "")
    if not path.is_file():
        raise ModelUnavailableError(f"digits ViT weights {path} not found; regenerate them with `{command}`")
    return load_shipped(build_vit, path, "the digits ViT", command)
