"""XRAI: regions ranked by the density of their integrated-gradients attribution (Kapishnikov, Bolukbasi, Viégas &
Terry 2019, arXiv:1906.02825).

Integrated gradients from a black and a white baseline, averaged, and at each pixel the largest of its channels;
Felzenszwalb segmentations of the picture at several scales give overlapping candidate regions; the regions are
picked greedily, each time the one whose not-yet-covered pixels have the highest mean attribution. The map holds,
at each pixel, the density of the region that covered it, so its values rank the regions. The segmentation and
selection follow the paper's code (PAIR's ``saliency``) step for step.
"""

from __future__ import annotations

import numpy as np
import torch

from ..baselines import black
from ..core import Attribution
from ..errors import PreprocessingNeeded
from ..registry import Cost, Param, Reference, Sanity, register
from ..superpixels import felzenszwalb_masks, to_pixels
from .integrated import RULES, path_integral

KAPISHNIKOV_2019 = Reference(
    "Kapishnikov, Bolukbasi, Viégas & Terry", 2019, "XRAI: Better Attributions Through Regions", "1906.02825",
)
# Felzenszwalb scales as the paper's code sweeps them; the choice is the list itself, so it says what it does.
SCALES = ("50,100,150,250,500,1200", "100,250,500,1200", "250,500,1200", "50,100,150")
BASELINE_PAIRS = ("black_white", "min_max")


def rank_regions(attribution: np.ndarray, masks: np.ndarray, area_threshold: float = 1.0, min_pixel_diff: int = 50,
                 fast: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """XRAI's greedy selection on one pixel attribution [H, W] (float64) and candidate regions [M, H, W]:
    (map [H, W], ranks [H, W]). A region's gain is the mean attribution of its pixels not covered yet; a region
    adding fewer than ``min_pixel_diff`` new pixels is dropped. ``fast`` orders the regions once by their whole
    density (the paper code's fast variant) instead of re-picking the best after every pick. The map holds the
    gain of the pick that covered each pixel; ranks number the picks 1.. by decreasing gain (ties: the earlier
    pick first); the pixels no pick covered (``area_threshold`` < 1, or regions too small) share their mean and
    the last rank."""
    height, width = attribution.shape
    values = attribution.reshape(-1)
    flat = masks.reshape(len(masks), -1)
    covered = np.zeros(height * width, dtype=bool)
    output = np.full(height * width, -np.inf)
    picks: list[tuple[np.ndarray, float]] = []  # (pixels newly covered, gain), in the order picked

    def mean_of(pixels: np.ndarray) -> float:
        # the mean over the pixels in row-major order, the same summation as the paper's code, so equal gains
        # compare equal and the picks (ties included) are the same
        return attribution[pixels.reshape(height, width)].mean()

    def cover(region: int, gain: float) -> None:
        new = flat[region] & ~covered
        picks.append((new, gain))
        output[new] = gain
        covered[new] = True

    if fast:
        whole = [mean_of(mask) for mask in flat]
        for region in sorted(range(len(flat)), key=lambda i: -whole[i]):  # stable: ties keep their order
            new = flat[region] & ~covered
            if new.sum() >= min_pixel_diff:
                cover(region, mean_of(new))
    else:
        # Each region's uncovered pixel count and attribution sum, updated as pixels get covered (the paper's code
        # recounts every region against the covered area at every pick); gains within rounding of the best are
        # recomputed exactly before one is chosen.
        counts = flat.sum(axis=1).astype(np.int64)
        sums = np.array([values[mask].sum() for mask in flat], dtype=np.float64)
        alive = np.ones(len(flat), dtype=bool)
        scale = float(np.abs(values).max()) if values.size else 0.0
        while covered.mean() <= area_threshold:
            alive &= counts >= min_pixel_diff
            if not alive.any():
                break
            gains = np.where(alive, sums / np.maximum(counts, 1), -np.inf)
            best = gains.max()
            near = np.flatnonzero(alive & (gains >= best - 1e-9 * (abs(best) + scale)))
            exact = [mean_of(flat[i] & ~covered) for i in near]
            choice = int(np.argmax(exact))  # the first of equal gains, as the code's strict comparison
            region, gain = int(near[choice]), exact[choice]
            new = np.flatnonzero(flat[region] & ~covered)
            cover(region, gain)
            alive[region] = False
            touched = flat[:, new]
            counts -= touched.sum(axis=1)
            sums -= touched @ values[new]
    uncovered = output == -np.inf
    if uncovered.any():
        output[uncovered] = values[uncovered].mean()
    ranks = np.zeros(height * width, dtype=np.int64)
    ordered = [pixels for pixels, _ in sorted(picks, key=lambda pick: -pick[1])]
    if uncovered.any():
        ordered.append(uncovered)
    for rank, pixels in enumerate(ordered, start=1):
        ranks[pixels] = rank
    return output.reshape(height, width), ranks.reshape(height, width)


def baseline_pair(kind: str, inputs: torch.Tensor, bundle) -> tuple[torch.Tensor, torch.Tensor]:
    """The two baselines of each row: a black and a white picture (the paper), or constant images at the row's
    lowest and highest input value (the paper code's default, which needs no preprocessing)."""
    if kind == "min_max":
        low = inputs.amin(dim=(1, 2, 3), keepdim=True).expand_as(inputs).contiguous()
        high = inputs.amax(dim=(1, 2, 3), keepdim=True).expand_as(inputs).contiguous()
        return low, high
    if bundle is None or getattr(bundle, "normalize", None) is None:
        raise PreprocessingNeeded(
            "XRAI's black and white baselines are pictures and need the model's preprocessing; pass a ModelBundle "
            "(explainers.load_model) instead of a bare nn.Module, or use baselines='min_max'"
        )
    white = bundle.normalize(torch.ones_like(inputs[:1])).to(device=inputs.device, dtype=inputs.dtype)
    return black(inputs, bundle), white.expand_as(inputs).contiguous()


@register(
    "xrai",
    display_name="XRAI",
    family="Gradient",
    reference=KAPISHNIKOV_2019,
    summary=(
        "Ranks image regions instead of pixels: integrated gradients (from a black and a white image) summed "
        "over overlapping Felzenszwalb segments at several scales, the regions picked greedily by attribution "
        "density. The map's value in a region is its density, so its levels rank the regions; the picture "
        "outlines them."
    ),
    weaknesses=(
        "Inherits integrated gradients' passes (twice: two baselines) and its noise inside a region; region "
        "edges are the segmentation's, not the model's, and a thin object may share a region with background. "
        "Not tested by Adebayo et al. 2018."
    ),
    formula=("A(p) = mean_{q ∈ R_i ∖ (R_1 ∪ … ∪ R_{i−1})} a(q) for the pick R_i covering p, R_i = argmax_R that mean; "
             "a = max_channels ½(IG_black + IG_white)"),
    params={
        "n_steps": Param("int", 50, "Points on each integrated-gradients path.", minimum=1, maximum=1000),
        "rule": Param("choice", "gausslegendre", "Quadrature rule of the integrated gradients.", choices=RULES),
        "baselines": Param(
            "choice", "black_white", "The two integrated-gradients baselines: a black and a white picture (the "
            "paper), or constant images at the input's lowest and highest value (no preprocessing needed).",
            choices=BASELINE_PAIRS,
        ),
        "scales": Param("choice", SCALES[0], "Felzenszwalb scales of the candidate segmentations (larger, "
                        "larger segments), on the picture resized to 224 px.", choices=SCALES),
        "min_size": Param("int", 150, "Smallest segment, in pixels of the 224 px picture.", minimum=1,
                          maximum=10000),
        "dilation_radius": Param("int", 5, "Pixels each segment grows by, so regions take in their edges (0: "
                                 "none).", minimum=0, maximum=50),
        "area_threshold": Param("float", 1.0, "Share of the image to rank region by region; the rest becomes one "
                                "last region (faster below 1).", minimum=0.0, maximum=1.0),
        "min_pixel_diff": Param("int", 50, "Fewest new pixels a region must add to be picked.", minimum=1,
                                maximum=100000),
        "algorithm": Param("choice", "full", "full: re-pick the densest region after every pick (the paper); "
                           "fast: order the regions once by their whole density.", choices=("full", "fast")),
    },
    # two integrated-gradients paths (black and white) of n_steps each; the clean pass gives the logits
    cost=Cost(fixed=(1, 0), per_step=(2, 2), steps="n_steps"),
    attribution_channels=1,
    sanity=Sanity.UNTESTED,
    sanity_note=(
        "built on integrated gradients, which passes; its own verdict is not published. Measured here on "
        "efficientnet_lite0 (cat.png, all 19 cascade steps, `python -m explainers sanity`): "
        "passes model randomisation on Spearman (0.38), not on SSIM (0.59) or HOG (0.52): the regions follow "
        "the image's segmentation; class-sensitive (4/4); input invariant"
    ),
)
def xrai(call, inputs, n_steps=50, rule="gausslegendre", baselines="black_white", scales=SCALES[0], min_size=150,
         dilation_radius=5, area_threshold=1.0, min_pixel_diff=50, algorithm="full"):
    """Kapishnikov et al. 2019, arXiv:1906.02825. Both paths of every row share batched passes; each row is
    segmented once for all targets. ``regions`` holds the ranked regions (0 the best) when one target is asked;
    with several, each target ranks its own regions, which ``Attribution.regions`` (one labelling for every
    target) cannot hold, so none are given."""
    count = len(inputs)
    low, high = baseline_pair(baselines, inputs, call.bundle)
    pictures = to_pixels(inputs, call.bundle).permute(0, 2, 3, 1).cpu().double().numpy()
    candidates = [felzenszwalb_masks(picture, tuple(int(s) for s in scales.split(",")), min_size, dilation_radius)
                  for picture in pictures]
    rows = torch.arange(count, device=inputs.device).repeat(2)
    both = path_integral(call.take(rows), inputs[rows], torch.cat([low, high]), n_steps, rule)
    # the mean of the two baselines' maps, then the strongest channel at each pixel (the paper's code)
    pixel = ((both[:, :count] + both[:, count:]) / 2).amax(dim=2).double().cpu().numpy()
    maps = np.zeros((len(call.targets), count, 1, *inputs.shape[-2:]))
    ranked = np.zeros((count, *inputs.shape[-2:]), dtype=np.int64)
    notes = []
    for row in range(count):
        for t in range(len(call.targets)):
            maps[t, row, 0], ranks = rank_regions(pixel[t, row], candidates[row], area_threshold, min_pixel_diff,
                                                  algorithm == "fast")
            ranked[row] = ranks - 1
        flat = candidates[row].reshape(len(candidates[row]), -1)
        alone = not bool((flat.sum(axis=1) >= min_pixel_diff).any())
        notes.append((f"no segment has min_pixel_diff={min_pixel_diff} pixels at this image size: the map is one "
                      "region, the mean attribution; lower min_pixel_diff",) if alone else ())
    attribution = torch.from_numpy(maps).to(device=inputs.device, dtype=inputs.dtype)
    regions = torch.from_numpy(ranked).to(inputs.device) if len(call.targets) == 1 else None
    return Attribution(attribution, regions=regions, notes=notes)
