"""Reference inputs ("what absence looks like") shared by integrated gradients and occlusion.

Sturmfels, Lundberg & Lee 2020 (Distill, "Visualizing the Impact of Feature Attribution Baselines") show that
the choice changes the map; offering several makes that dependence visible.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .errors import ParameterError, PreprocessingNeeded

BASELINES = ("black", "blur", "uniform_noise", "mean", "zero")
RANDOM_BASELINES = frozenset({"uniform_noise"})  # drawn from the call's seeded generator


def gaussian_blur(inputs: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of [N, C, H, W] with reflected borders."""
    radius = max(1, int(math.ceil(3 * sigma)))
    radius = min(radius, inputs.shape[-1] - 1, inputs.shape[-2] - 1)
    offsets = torch.arange(-radius, radius + 1, dtype=inputs.dtype, device=inputs.device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    channels = inputs.shape[1]
    padded = F.pad(inputs, (radius, radius, radius, radius), mode="reflect")
    horizontal = F.conv2d(padded, kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1), groups=channels)
    return F.conv2d(horizontal, kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1), groups=channels)


def black(inputs: torch.Tensor, bundle) -> torch.Tensor:
    """A black image in pixel space, normalised as the model expects.

    "Black" is a pixel-space idea: with a bare module we do not know the preprocessing, and zeros in input space
    are mid-grey for most normalisations, so the same call would mean something else than in the dashboard.
    """
    if bundle is None or getattr(bundle, "normalize", None) is None:
        raise PreprocessingNeeded(
            "baseline 'black' is a pixel-space baseline and needs the model's preprocessing; pass a ModelBundle "
            "(explainers.load_model) instead of a bare nn.Module, or use baseline='zero' (zeros in the model's "
            "input space), 'mean', 'blur' or a tensor"
        )
    pixels = torch.zeros_like(inputs[:1])
    return bundle.normalize(pixels).to(device=inputs.device, dtype=inputs.dtype).expand_as(inputs).contiguous()


def make_baseline(
    kind, inputs: torch.Tensor, bundle=None, generator: torch.Generator | None = None
) -> torch.Tensor:
    """The baseline for each row of ``inputs``: a name from BASELINES or a tensor broadcastable to them.

    Random baselines draw one sample from ``generator`` and give it to every row, so a row's baseline (and map)
    does not depend on the other rows of its batch.
    """
    if isinstance(kind, torch.Tensor):
        baseline = kind.to(device=inputs.device, dtype=inputs.dtype)
        try:
            return baseline.expand_as(inputs).contiguous()
        except RuntimeError:
            raise ParameterError(
                f"baseline tensor of shape {list(kind.shape)} does not fit inputs {list(inputs.shape)}"
            ) from None
    if kind == "black":
        return black(inputs, bundle)
    if kind == "zero":
        return torch.zeros_like(inputs)
    if kind == "blur":
        # sigma ~ 1/20 of the image side removes object detail but keeps the colour layout
        return gaussian_blur(inputs, sigma=max(inputs.shape[-1], inputs.shape[-2]) / 20)
    if kind == "mean":
        return inputs.mean(dim=(2, 3), keepdim=True).expand_as(inputs).contiguous()
    if kind == "uniform_noise":
        low = inputs.amin(dim=(1, 2, 3), keepdim=True)
        high = inputs.amax(dim=(1, 2, 3), keepdim=True)
        noise = torch.rand(inputs.shape[1:], generator=generator, dtype=inputs.dtype).to(inputs.device)
        return low + noise.unsqueeze(0) * (high - low)
    raise ParameterError(f"baseline must be one of {', '.join(BASELINES)} or a tensor; got {kind!r}")
