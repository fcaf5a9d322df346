"""Reference inputs ("what absence looks like") shared by integrated gradients and occlusion.

Sturmfels, Lundberg & Lee 2020 (Distill, "Visualizing the Impact of Feature Attribution Baselines") show that
the choice changes the map; offering several makes that dependence visible.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F

from .errors import ParameterError, PreprocessingNeeded
from .images import IMAGE_SUFFIXES, load_image
from .registry import Param

BASELINES = ("black", "blur", "uniform_noise", "mean", "zero")
# Baselines of the text methods, in the embedding space (``explainers.text.bundle.TokenBundle.baseline``): every
# content token replaced by the tokenizer's pad token, its mask token, or a zero vector; special tokens ([CLS],
# [SEP]) stay where they are (the model always sees them, so a baseline without them would measure their absence).
TEXT_BASELINES = ("pad", "mask", "zero")
# the baseline parameter of every method that takes one, on text (``TextUse.params``)
TEXT_BASELINE = Param(
    "choice", "pad", "What a removed token becomes: the tokenizer's [PAD] token, its [MASK] token, or a zero "
    "embedding ([CLS] and [SEP] always kept).", choices=TEXT_BASELINES, allow_tensor=True)
RANDOM_BASELINES = frozenset({"uniform_noise"})  # drawn from the call's seeded generator
# Distributions of baselines, for the methods that average over many (GradientSHAP, expected gradients,
# DeepLIFT-SHAP): blurred copies of the input at random widths, uniform noise images in the input's range, or
# reference images from a folder the user gives (Erion et al. 2021, arXiv:1906.10670, draw them from the data).
DISTRIBUTIONS = ("blur", "uniform_noise", "references")
# the blur widths drawn, as fractions of the image side: from a slight softening to the colour layout only
BLUR_SIGMAS = (0.005, 0.1)
# reference images read from a folder, at most: a distribution, not a dataset
MAX_REFERENCES = 256


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
    if getattr(bundle, "modality", None) == "text":
        if kind not in TEXT_BASELINES:
            raise ParameterError(f"on text the baseline is one of {', '.join(TEXT_BASELINES)} (token embeddings) or a "
                                 f"tensor; got {kind!r}")
        return bundle.baseline(kind).to(device=inputs.device, dtype=inputs.dtype).expand_as(inputs).contiguous()
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


def reference_images(folder: str | Path, bundle) -> torch.Tensor:
    """The images of ``folder`` (sorted by name, at most ``MAX_REFERENCES``), preprocessed as the model expects:
    [K, C, H, W]. ParameterError when the folder is missing, holds no image, or there is no preprocessing."""
    if bundle is None or not hasattr(bundle, "preprocess"):
        raise PreprocessingNeeded("reference images need the model's preprocessing; pass a ModelBundle "
                                  "(explainers.load_model) instead of a bare nn.Module")
    where = Path(str(folder)).expanduser()
    if not str(folder).strip():
        raise ParameterError("the 'references' distribution needs a folder of reference images; give one "
                             "(parameter 'references') or pick 'blur' or 'uniform_noise'")
    if not where.is_dir():
        raise ParameterError(f"the reference folder {str(folder)!r} does not exist or is not a folder; give a "
                             "folder of images on this machine, or pick 'blur' or 'uniform_noise'")
    files = sorted(p for p in where.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ParameterError(f"the reference folder {str(folder)!r} holds no images ({', '.join(IMAGE_SUFFIXES)}); "
                             "add images to it, or pick 'blur' or 'uniform_noise'")
    return torch.cat([bundle.preprocess(load_image(path)) for path in files[:MAX_REFERENCES]])


def sample_baselines(kind: str, inputs: torch.Tensor, count: int, generator: torch.Generator, bundle=None,
                     folder: str | Path = "") -> torch.Tensor:
    """``count`` baselines per row drawn from distribution ``kind`` (one of ``DISTRIBUTIONS``): [N, count, C, H, W].

    Every draw comes from ``generator`` in a fixed order and every row gets the same draws (the same blur widths,
    noise images or reference picks), so a row's baselines do not depend on the other rows of its batch.
    """
    if kind not in DISTRIBUTIONS:
        raise ParameterError(f"baseline distribution must be one of {', '.join(DISTRIBUTIONS)}; got {kind!r}")
    if count < 1:
        raise ParameterError(f"at least one baseline must be drawn; got {count}")
    rows = len(inputs)
    if kind == "blur":
        side = max(inputs.shape[-2:])
        low, high = BLUR_SIGMAS
        fractions = low + (high - low) * torch.rand(count, generator=generator, dtype=torch.float64)
        copies = [gaussian_blur(inputs, sigma=max(0.5, float(f) * side)) for f in fractions]
        return torch.stack(copies, dim=1)
    if kind == "uniform_noise":
        low = inputs.amin(dim=(1, 2, 3), keepdim=True).unsqueeze(1)
        high = inputs.amax(dim=(1, 2, 3), keepdim=True).unsqueeze(1)
        noise = torch.rand((count, *inputs.shape[1:]), generator=generator, dtype=inputs.dtype).to(inputs.device)
        return low + noise.unsqueeze(0) * (high - low)
    references = reference_images(folder, bundle).to(device=inputs.device, dtype=inputs.dtype)
    if tuple(references.shape[1:]) != tuple(inputs.shape[1:]):
        raise ParameterError(f"the reference images preprocess to {list(references.shape[1:])}, and the inputs are "
                             f"{list(inputs.shape[1:])}; the references must be preprocessed like the inputs")
    picks = torch.randint(0, len(references), (count,), generator=generator).to(inputs.device)
    return references[picks].unsqueeze(0).expand(rows, -1, -1, -1, -1).contiguous()
