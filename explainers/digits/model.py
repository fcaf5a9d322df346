"""LeNet-5 for the procedural digits, and its two shipped weight sets (real labels, shuffled labels).

LeNet-5: LeCun, Bottou, Bengio & Haffner 1998, doi:10.1109/5.726791. The layout is the paper's (two 5x5
convolutions with 6 and 16 maps, then 120, 84 and 10 units) with today's ReLU and max-pooling in place of its
scaled tanh and trainable subsampling, and with "same" padding (2 pixels) on both convolutions.

Why the padding: CAM methods upsample a layer's grid over the whole input. With the paper's unpadded convolutions
the second block's 10x10 grid only covers input pixels 6.5 .. 24.5 (the centres of its receptive fields), so
stretching it to 0 .. 32 moves every piece of evidence away from the centre. We measured it on 500 held-out digits
with the unpadded network (98.9% accurate): Grad-CAM put 0.43 of its mass inside the digit's box (the boxes cover
0.30 of the canvas) and its peak in the box for 0.50 of the digits; resampled at the true receptive-field centres
the same maps gave 0.78 and 0.91. Padded, each grid cell sits where upsampling puts it (the mean offset of the maps'
centroids from the digits' is under 0.7 pixel); the shipped network gives 0.55 and 0.86 on the same 500 digits. The
cost is a wider fc1 (16x8x8 inputs instead of 16x5x5): 136 586 parameters instead of 61 706.

The shuffled-label weights are the data-randomisation test of Adebayo et al. 2018, arXiv:1810.03292: a saliency
method that explains both models alike is not explaining what the model learned.
"""

from __future__ import annotations

import shlex
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from ..errors import ModelUnavailableError

CLASSES = [str(d) for d in range(10)]
INPUT_SIZE = 32
PADDING = 2  # "same" for 5x5 kernels: each conv keeps its grid registered with the input (see the module doc)
ASSETS = Path(__file__).resolve().parents[2] / "assets" / "digits"
VARIANTS = {"real": "lenet_digits", "shuffled": "lenet_digits_shuffled"}
TRAIN_COMMANDS = {
    "real": "python -m explainers.digits train",
    "shuffled": "python -m explainers.digits train --shuffled-labels",
}


class LeNet5(nn.Module):
    """LeNet-5 on a 1x32x32 input (LeCun et al. 1998, doi:10.1109/5.726791), "same" padding; returns 10 logits.

    Every ReLU is its own non-inplace ``nn.ReLU`` module so hooks (guided backpropagation, CAM) can reach it.
    Spatial layers: ``features.conv1`` 6x32x32 ... ``features.relu2`` 16x16x16, ``features.pool2`` 16x8x8.
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            OrderedDict(
                conv1=nn.Conv2d(1, 6, kernel_size=5, padding=PADDING),  # 32 -> 32
                relu1=nn.ReLU(),
                pool1=nn.MaxPool2d(2),  # 32 -> 16
                conv2=nn.Conv2d(6, 16, kernel_size=5, padding=PADDING),  # 16 -> 16
                relu2=nn.ReLU(),
                pool2=nn.MaxPool2d(2),  # 16 -> 8
            )
        )
        self.classifier = nn.Sequential(
            OrderedDict(
                fc1=nn.Linear(16 * 8 * 8, 120),
                relu3=nn.ReLU(),
                fc2=nn.Linear(120, 84),
                relu4=nn.ReLU(),
                fc3=nn.Linear(84, num_classes),
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


class ChannelMean(nn.Module):
    """[N, C, H, W] -> [N, 1, H, W], the mean over channels: an RGB input seen as gray."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=1, keepdim=True)


class LeNet5RGB(LeNet5):
    """LeNet-5 behind a ``gray`` step, so it takes the dashboard's 3-channel input [N, 3, 32, 32].

    Every channel is normalised with the same mean and std, so the mean of the normalised channels is the
    normalised mean of the pixels: a gray image (R = G = B) gives exactly the 1-channel input LeNet5 was trained
    on, and a colour image is read as its unweighted channel mean. The state dict is LeNet5's, key for key.
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__(num_classes)
        self.gray = ChannelMean()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(self.gray(x))


def weights_path(variant: str = "real", directory: Path | str | None = None) -> Path:
    """Where a variant's safetensors file lives (``assets/digits`` unless told otherwise)."""
    if variant not in VARIANTS:
        raise ModelUnavailableError(f"LeNet variant must be one of {sorted(VARIANTS)}, got {variant!r}")
    return Path(directory or ASSETS) / f"{VARIANTS[variant]}.safetensors"


def load_lenet(variant: str = "real", directory: Path | str | None = None, *, rgb: bool = False) -> LeNet5:
    """The shipped LeNet-5 on the CPU in eval mode: ``"real"`` labels or ``"shuffled"`` labels (Adebayo et al. 2018).

    ``rgb=True`` gives :class:`LeNet5RGB` (3-channel input) with the same weights. Raises ModelUnavailableError
    when the weights file is missing, naming the file and the command that rebuilds it.
    """
    path = weights_path(variant, directory)
    if not path.is_file():
        command = TRAIN_COMMANDS[variant]
        if directory is not None:
            command += f" --out {shlex.quote(str(directory))}"
        raise ModelUnavailableError(f"LeNet-5 weights {path} not found; regenerate them with `{command}`")
    return load_shipped(LeNet5RGB if rgb else LeNet5, path, "LeNet-5", TRAIN_COMMANDS[variant])


def load_shipped(build: Callable[[], nn.Module], path: Path, what: str, command: str) -> nn.Module:
    """``build()``'s network with the tensors of ``path``, on the CPU in eval mode; a file that does not hold its
    state dict raises ModelUnavailableError naming ``what`` and the ``command`` that regenerates it."""
    # Built on the meta device, then given the file's tensors: no random initialisation, so loading never moves
    # the caller's random stream.
    with torch.device("meta"):
        model = build()
    try:
        model.load_state_dict(load_file(str(path)), strict=True, assign=True)
    except Exception as exc:  # a truncated file or another network's weights
        raise ModelUnavailableError(
            f"expected {path} to hold {what}'s state dict, but loading it failed ({exc}); regenerate it with "
            f"`{command}`"
        ) from exc
    return model.eval()
