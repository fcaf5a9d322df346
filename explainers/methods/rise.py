"""RISE: average random smooth masks, each weighted by the score of the input it leaves visible."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..batching import forward
from ..core import Attribution, as_logits
from ..folding import FLOAT32, fast_call, precision_param
from ..registry import Cost, Param, Reference, Sanity, register

PETSIUK = Reference(
    "Petsiuk, Das & Saenko", 2018, "RISE: Randomized Input Sampling for Explanation of Black-box Models", "1806.07421",
)
# Masks are drawn this many at a time, a fixed number, so the random stream (and the map) never depends on
# batch_size, and the small grids held at once stay bounded however large n_masks is.
DRAW_CHUNK = 512
# What bfloat16 passes cost the map, measured with bfloat16 emulated on a CPU without bfloat16 units.
RISE_BFLOAT16 = ("correlation 0.9999 on efficientnet_lite0 (500 masks), the largest difference 0.5% of the map's "
                 "largest value; 1.0000 and 0.4% on a seeded ResNet-50 at 128 px (200 masks).")


class MaskSampler:
    """The paper's masks: a random binary grid×grid (1 with probability p), bilinearly upsampled to
    (grid + 1) * cell with cell = ceil(side / grid), cropped to the image at a random shift in [0, cell)."""

    def __init__(self, n_masks: int, grid: int, p: float, hw: tuple[int, int], generator: torch.Generator):
        self.n_masks, self.grid, self.p, self.hw = n_masks, grid, p, hw
        self.cell = tuple(math.ceil(side / grid) for side in hw)
        self.generator = generator
        self.chunks: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.drawn = 0  # chunks drawn so far, in order, from the one generator

    def _chunk(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        while self.drawn <= k:
            count = min(DRAW_CHUNK, self.n_masks - self.drawn * DRAW_CHUNK)
            grids = torch.rand((count, self.grid, self.grid), generator=self.generator) < self.p
            shifts = torch.stack(
                [torch.randint(0, c, (count,), generator=self.generator) for c in self.cell], dim=1
            )
            self.chunks[self.drawn] = (grids, shifts)
            self.drawn += 1
        return self.chunks[k]

    def masks(self, index: torch.Tensor, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """Masks number ``index`` (a CPU LongTensor, non-decreasing), [len(index), H, W] on ``device``."""
        parts = []
        chunks = torch.unique_consecutive(index // DRAW_CHUNK).tolist()
        # masks are asked for in increasing order, and a batch retried after out-of-memory asks again from the
        # same first mask: only chunks before this batch's first are done with
        for old in [j for j in self.chunks if j < chunks[0]]:
            del self.chunks[old]
        for k in chunks:
            grids, shifts = self._chunk(k)
            local = index[index // DRAW_CHUNK == k] - k * DRAW_CHUNK
            parts.append((grids[local], shifts[local]))
        grids = torch.cat([g for g, _ in parts]).to(device=device, dtype=dtype)
        shifts = torch.cat([s for _, s in parts]).to(device)
        size = tuple((self.grid + 1) * c for c in self.cell)
        upsampled = F.interpolate(grids.unsqueeze(1), size=size, mode="bilinear", align_corners=False)[:, 0]
        height, width = self.hw
        ys = shifts[:, :1] + torch.arange(height, device=device)  # [B, H]
        xs = shifts[:, 1:] + torch.arange(width, device=device)  # [B, W]
        batch = torch.arange(len(index), device=device).view(-1, 1, 1)
        return upsampled[batch, ys.unsqueeze(2), xs.unsqueeze(1)]


@register(
    "rise",
    display_name="RISE",
    family="Perturbation",
    attribution_channels=1,
    reference=PETSIUK,
    summary=(
        "Shows the model many copies of the image, each with random smooth regions hidden, and averages the "
        "masks weighted by the class score each copy gets: pixels whose presence keeps the score high light up."
    ),
    weaknesses=(
        "Stochastic: the map varies with the seed and needs thousands of forward passes to settle; blurry, with "
        "resolution set by the grid; hidden regions are zeros in the model's input space, an unnatural input; "
        "every pixel carries a baseline of about the mean masked score, so read the map's relative values."
    ),
    formula="A = 1/(n·p) Σ_i S_c(x ⊙ M_i) M_i",
    sanity=Sanity.UNTESTED,
    sanity_note="reads only the model's outputs, so it follows its weights",
    stochastic=True,
    params={
        "n_masks": Param(
            "int", 2000, "Random masks (one forward pass each); more gives a smoother, more stable map.",
            minimum=1, maximum=50000,
        ),
        "grid": Param(
            "int", 7, "Cells per side of the random grid before upsampling; larger gives finer, noisier masks.",
            minimum=2, maximum=64,
        ),
        "p": Param(
            "float", 0.5, "Probability that a grid cell is kept (visible).", minimum=0.01, maximum=1.0,
        ),
        "precision": precision_param(RISE_BFLOAT16),
    },
    # the clean pass, then one pass per mask
    cost=Cost(fixed=(1, 0), per_step=(1, 0), steps="n_masks"),
)
def rise(call, inputs, n_masks=2000, grid=7, p=0.5, precision=FLOAT32):
    """Petsiuk, Das & Saenko 2018, arXiv:1806.07421.

    saliency = sum_i score(x ⊙ M_i) M_i / (n_masks * p), the masks multiplying the input in the model's input
    space. The score follows explain()'s ``objective``; the paper uses class probabilities
    (objective="probability"). All masks come from the call's seeded generator in a fixed order and are built
    batch by batch, so memory grows with ``batch_size`` and not with ``n_masks``, and the map is independent of
    it. Every row sees the same masks, and every target is scored from the same masked passes, which run on the
    model's folded copy (``explainers.folding``) in ``precision``.
    """
    device, count = inputs.device, len(inputs)
    fast = fast_call(call, inputs, n_masks * count, precision)
    height, width = inputs.shape[-2:]
    logits = call.predict(inputs)
    call.progress.advance(count)
    sampler = MaskSampler(n_masks, grid, p, (height, width), call.generator())
    saliency = torch.zeros((len(call.targets), count, height, width), dtype=torch.float64, device=device)
    # each (target, row)'s lowest and highest masked score: equal means the score ignores the masks
    lowest = torch.full((len(call.targets), count), torch.inf, dtype=torch.float64, device=device)
    highest = torch.full_like(lowest, -torch.inf)

    def masked_scores(start, stop):
        # pairs (mask, row) in mask-major order: every row of a batch shares the masks already drawn
        with torch.inference_mode():
            index = torch.arange(start, stop)
            masks = sampler.masks(index // count, inputs.dtype, device)
            row = (index % count).to(device)
            scores = call.scores(as_logits(forward(fast.model, inputs[row] * masks.unsqueeze(1))), row)  # [T, B]
            return row, scores.double(), scores.double().view(*scores.shape, 1, 1) * masks.double().unsqueeze(0)

    for start, stop, (row, scores, weighted) in call.batches.run(n_masks * count, masked_scores):
        for t in range(len(weighted)):
            saliency[t].index_add_(0, row, weighted[t])
        rows = row.expand(len(scores), -1)
        lowest.scatter_reduce_(1, rows, scores, "amin")
        highest.scatter_reduce_(1, rows, scores, "amax")
        call.progress.advance(stop - start)
    # a score that no mask moves explains nothing: the weighted sum would only draw the masks' sampling noise
    # one mask has nothing to compare with, and with p = 1 every mask keeps everything: the map is f(x) itself
    flat = (lowest == highest) & (n_masks > 1) & (p < 1)
    saliency[flat] = 0
    note = ("the map is all zero: every masked copy got the same score, so no region matters to it",)
    notes = [[note if empty else () for empty in rows] for rows in flat.tolist()]  # [T][N]
    return Attribution((saliency / (n_masks * p)).unsqueeze(2).to(inputs.dtype), logits=logits, target_notes=notes)
