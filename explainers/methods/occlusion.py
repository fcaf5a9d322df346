"""Occlusion: slide a patch of baseline over the image and record how much the score drops."""

from __future__ import annotations

import torch

from ..baselines import TEXT_BASELINE, make_baseline
from ..batching import forward
from ..core import Attribution, Call, as_logits, same_input
from ..errors import ParameterError
from ..folding import FLOAT32, clean_scores, fast_call, precision_param
from ..registry import TEXT, Cost, Param, Sanity, TextUse, modality_of, register
from ..superpixels import TEXT_UNIT, paint_features, text_features
from .guided import ZEILER  # one paper, two methods: deconvnet and occlusion

OCCLUSION_BASELINES = ("zero", "mean", "blur")
# What bfloat16 passes cost the map (the default window and stride), measured with bfloat16 emulated on a CPU
# without bfloat16 units.
OCCLUSION_BFLOAT16 = ("correlation 0.9908 on efficientnet_lite0, the largest difference 20.8% of the map's largest "
                      "value; 0.9941 and 13.2% on a seeded ResNet-50 at 128 px: a window's drop is a small "
                      "difference of two scores, which bfloat16 rounds coarsely.")


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
    """Windows per image; a window too large for the image is counted as the whole image. On text (a ``unit``
    parameter) the features instead: at most one per token of the 1 × L strip (a word holds one token or more,
    and [CLS]/[SEP] are never occluded, so the passes run are this or fewer)."""
    if "unit" in p:
        return hw[1]
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
        "precision": precision_param(OCCLUSION_BFLOAT16),
    },
    # the clean pass, then one pass per window position (on text: per word or token)
    cost=Cost(fixed=(1, 0), per_step=(1, 0), steps=window_count),
    text=TextUse(
        params={"unit": TEXT_UNIT, "baseline": TEXT_BASELINE}, hidden=frozenset({"window", "stride", "precision"}),
        reduction="map",
        note="Each word (or token) in turn replaced by the baseline token, [CLS] and [SEP] kept: its score is how "
             "much the class score drops, shared equally among a word's tokens. One forward pass per word: by "
             "default a word is the unit, so a model never sees half a word (\"un [PAD] ##ble\")."),
)
def occlusion(call, inputs, window=32, stride=16, baseline="zero", unit=None, precision=FLOAT32):
    """Zeiler & Fergus 2014, arXiv:1311.2901.

    attribution(pixel) = mean over the windows covering it of f(x) - f(x with that window set to the baseline),
    all channels occluded together. Windows start at 0, stride, 2*stride, ...; when the last one stops short of
    the right/bottom edge one more, flush with the edge, is added (nothing is added when (H - window) % stride
    == 0). Perturbed copies are built batch by batch, so memory grows with ``batch_size``, not the window
    count. The occluded passes, and the clean score they are compared with, run on the model's folded copy
    (``explainers.folding``) in ``precision``.
    """
    if modality_of(call.model) == TEXT:
        return occlude_features(call, inputs, text_features(call.bundle, unit or TEXT_UNIT.default, len(inputs)),
                                make_baseline(baseline, inputs, call.bundle), precision)
    height, width = inputs.shape[-2:]
    _check((height, width), window, stride)
    device = inputs.device
    reference = make_baseline(baseline, inputs, call.bundle, call.generator(offset=1))

    cover_y = _cover(height, window_positions(height, window, stride), window, device)
    cover_x = _cover(width, window_positions(width, window, stride), window, device)
    n_y, n_x = len(cover_y), len(cover_x)
    per_row = n_y * n_x
    fast = fast_call(call, inputs, len(inputs) * per_row, precision)
    logits, clean = clean_scores(call, fast, inputs)
    call.progress.advance(len(inputs))
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
            scores = call.scores(as_logits(forward(fast.model, batch)), row)  # every target from the same pass
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


def occlude_features(call: Call, inputs: torch.Tensor, labels: torch.Tensor, reference: torch.Tensor,
                     precision: str = FLOAT32) -> Attribution:
    """Occlusion by feature: each feature of ``labels`` [N, H, W] (0..M−1 per row; −1 never occluded) replaced by
    ``reference`` [N, C, H, W] once, in batched forward passes; its score is the drop f(x) − f(x with it
    replaced), shared equally among its positions (a word's tokens add up to the word's drop). Every target
    from the same passes; a feature where the reference equals the input scores exactly 0.

    On text: Zeiler & Fergus's occlusion with a word (or a token) as the window, as Captum's FeatureAblation
    with a word mask computes it."""
    device = inputs.device
    counts = [int(row.max()) + 1 for row in labels]
    offsets = torch.tensor([0, *counts], device=device).cumsum(0)
    total = int(offsets[-1])
    fast = fast_call(call, inputs, total, precision)
    logits, clean = clean_scores(call, fast, inputs)
    call.progress.advance(len(inputs))
    owner = torch.repeat_interleave(torch.arange(len(inputs), device=device), torch.tensor(counts, device=device))
    feature = torch.arange(total, device=device) - offsets[owner]  # each pass's feature within its row
    unchanged = same_input(inputs, reference).all(dim=1)  # [N, H, W]
    drops = torch.zeros((len(call.targets), total), dtype=torch.float64, device=device)

    def occluded_scores(start, stop):
        with torch.inference_mode():
            row, which = owner[start:stop], feature[start:stop]
            covered = labels[row] == which.view(-1, 1, 1)  # [B, H, W]
            batch = torch.where(covered.unsqueeze(1), reference[row], inputs[row])
            scores = call.scores(as_logits(forward(fast.model, batch)), row)
            changed = (covered & ~unchanged[row]).flatten(1).any(dim=1)
            return torch.where(changed, clean[:, row] - scores.double(), 0.0)

    for start, stop, batch_drops in call.batches.run(total, occluded_scores):
        drops[:, start:stop] = batch_drops
        call.progress.advance(stop - start)
    maps = [paint_features(labels[n], drops[:, int(offsets[n]):int(offsets[n + 1])], share=True)
            for n in range(len(inputs))]
    return Attribution(torch.stack(maps, dim=1).unsqueeze(2).to(inputs.dtype), logits=logits, regions=labels)
