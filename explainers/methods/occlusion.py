"""Occlusion: slide a patch of baseline over the image and record how much the score drops."""

from __future__ import annotations

import torch

from ..baselines import make_baseline
from ..batching import forward
from ..core import Attribution, as_logits, same_input
from ..errors import ParameterError
from ..registry import Cost, Param, Sanity, register
from .guided import ZEILER  # one paper, two methods: deconvnet and occlusion

OCCLUSION_BASELINES = ("zero", "mean", "blur")


def window_positions(size: int, window: int, stride: int) -> list[int]:
    """Start offsets along one side: 0, stride, 2*stride, ... while the window fits, plus one window flush with
    the far edge when the last regular one stops short of it, so every pixel is covered at least once."""
    positions = list(range(0, size - window + 1, stride))
    if positions and positions[-1] + window < size:
        positions.append(size - window)
    return positions


def _check(hw: tuple[int, int], window: int, stride: int) -> None:
    height, width = hw
    if window > min(height, width):
        raise ParameterError(
            f"occlusion window {window} is larger than the image ({height}×{width}); use a window ≤ {min(hw)}"
        )
    if stride > window:
        raise ParameterError(
            f"occlusion stride {stride} is larger than the window {window}: pixels between windows would never be "
            "occluded; use a stride ≤ the window"
        )


def window_count(p, hw) -> int:
    """Windows per image; a window too large for the image is counted as the whole image."""
    window = min(p["window"], *hw)
    stride = min(p["stride"], window)
    return len(window_positions(hw[0], window, stride)) * len(window_positions(hw[1], window, stride))


def _cover(size: int, positions: list[int], window: int, device) -> torch.Tensor:
    """[len(positions), size] boolean: which pixels along one side each window covers."""
    pixel = torch.arange(size, device=device)
    start = torch.as_tensor(positions, device=device).view(-1, 1)
    return (pixel >= start) & (pixel < start + window)


@register(
    "occlusion",
    display_name="Occlusion",
    family="Perturbation",
    attribution_channels=1,
    reference=ZEILER,
    summary=(
        "Covers the image with a square patch of baseline, one position at a time, and records how much the "
        "class score drops; each pixel gets the average drop of the patches that covered it."
    ),
    weaknesses=(
        "Resolution and map change with window and stride; the patch itself is an unnatural input, and its "
        "colour (baseline) changes the result; evidence present in two places is missed because one patch "
        "never removes both. One forward pass per window position."
    ),
    formula="A(p) = mean over windows W ∋ p of S_c(x) − S_c(x with W set to the baseline)",
    sanity=Sanity.UNTESTED,
    sanity_note="reads only the model's outputs, so it follows its weights",
    params={
        "window": Param("int", 32, "Side of the square occluding patch, in pixels.", minimum=2, maximum=512),
        "stride": Param(
            "int", 16, "Step between patch positions, in pixels (≤ window; smaller is finer and slower).",
            minimum=1, maximum=512,
        ),
        "baseline": Param(
            "choice",
            "zero",
            "What fills the patch: zeros in the model's input space, the image's mean colour, or a blurred copy.",
            choices=OCCLUSION_BASELINES,
            allow_tensor=True,
        ),
    },
    # the clean pass, then one pass per window position
    cost=Cost(fixed=(1, 0), per_step=(1, 0), steps=window_count),
)
def occlusion(call, inputs, window=32, stride=16, baseline="zero"):
    """Zeiler & Fergus 2014, arXiv:1311.2901.

    attribution(pixel) = mean over the windows covering it of f(x) - f(x with that window set to the baseline),
    all channels occluded together. Windows start at 0, stride, 2*stride, ...; when the last one stops short of
    the right/bottom edge one more, flush with the edge, is added (nothing is added when (H - window) % stride
    == 0). Perturbed copies are built batch by batch, so memory grows with ``batch_size``, not the window
    count.
    """
    height, width = inputs.shape[-2:]
    _check((height, width), window, stride)
    device = inputs.device
    reference = make_baseline(baseline, inputs, call.bundle, call.generator(offset=1))

    logits = call.predict(inputs)
    clean = call.scores(logits, slice(None)).double()  # [T, N]
    call.progress.advance(len(inputs))

    cover_y = _cover(height, window_positions(height, window, stride), window, device)
    cover_x = _cover(width, window_positions(width, window, stride), window, device)
    n_y, n_x = len(cover_y), len(cover_x)
    per_row = n_y * n_x
    count = len(call.targets)
    drops = torch.empty((count, len(inputs) * per_row), dtype=torch.float64, device=device)
    # where the baseline is the input (a flat region under the mean or blur fill) a window changes nothing,
    # and its drop is 0 by definition, not the model's rounding noise between two batches
    unchanged = ~same_input(inputs, reference)

    def occluded_scores(start, stop):
        with torch.inference_mode():
            index = torch.arange(start, stop, device=device)
            row, position = index // per_row, index % per_row
            covered = cover_y[position // n_x].unsqueeze(2) & cover_x[position % n_x].unsqueeze(1)  # [B, H, W]
            batch = torch.where(covered.unsqueeze(1), reference[row], inputs[row])
            scores = call.scores(as_logits(forward(call.model, batch)), row)  # every target from the same pass
            changed = (covered.unsqueeze(1) & unchanged[row]).flatten(1).any(dim=1)
            return torch.where(changed, clean[:, row] - scores.double(), 0.0)

    for start, stop, batch_drops in call.batches.run(len(inputs) * per_row, occluded_scores):
        drops[:, start:stop] = batch_drops
        call.progress.advance(stop - start)

    # windows are products of a row band and a column band, so the sum over windows is D[y, x] -> Y^T D X
    cover_y, cover_x = cover_y.double(), cover_x.double()
    total = torch.einsum("tnij,ih,jw->tnhw", drops.view(count, -1, n_y, n_x), cover_y, cover_x)
    coverage = cover_y.sum(0).view(-1, 1) * cover_x.sum(0).view(1, -1)
    return Attribution((total / coverage).unsqueeze(2).to(inputs.dtype), logits=logits)
