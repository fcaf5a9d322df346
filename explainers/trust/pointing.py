"""Localisation against ground truth.

- Pointing game (Zhang, Lin, Brandt, Shen & Sclaroff 2016, arXiv:1608.00507): a hit when the map's maximum falls
  inside the object's region (within ``tolerance`` pixels of it).
- Energy pointing game (Wang et al. 2020, Score-CAM, arXiv:1910.01279): the share of the map's (positive) energy
  that lies inside the region.

Both have a chance level, the region's share of the image: a map of uniform noise scores it on average.

- :func:`box_pointing`: both games for one map of a dense model's target, with the detected box (or the segmented
  region) it explains as the ground truth: does the map of "why this box?" point into that box?
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import ParameterError
from ..registry import Reference
from .faithfulness import as_maps

ZHANG = Reference("Zhang, Lin, Brandt, Shen & Sclaroff", 2016, "Top-down Neural Attention by Excitation Backprop",
                  "1608.00507")

# ---------------------------------------------------------------------------------------------------------
# Pointing games
# ---------------------------------------------------------------------------------------------------------


@dataclass
class PointingResult:
    """Pointing games of N maps: ``hit`` [N] (1 or 0; with several equal maxima, the share of them inside),
    ``energy`` [N] (share of the positive map mass inside the region), ``area`` [N] (the region's share of the
    image: the chance level of both), ``point`` [N, 2] (row, column of the first maximum)."""

    hit: np.ndarray
    energy: np.ndarray
    area: np.ndarray
    point: np.ndarray
    tolerance: int = 0

    @property
    def accuracy(self) -> float:
        """Pointing-game accuracy: the mean hit."""
        return float(self.hit.mean())

    @property
    def energy_share(self) -> float:
        """Energy pointing game: the mean share of energy inside."""
        return float(self.energy.mean())

    @property
    def chance(self) -> float:
        """The mean area share: what a map of noise scores on both games."""
        return float(self.area.mean())

    def to_dict(self) -> dict[str, Any]:
        return {
            "accuracy": self.accuracy, "energy": self.energy_share, "chance": self.chance,
            "tolerance": int(self.tolerance), "hit": self.hit.astype(float).tolist(),
            "energy_per_image": self.energy.astype(float).tolist(), "area": self.area.astype(float).tolist(),
            "point": self.point.astype(int).tolist(),
        }


def region_masks(regions: Any, n_rows: int, hw: tuple[int, int]) -> np.ndarray:
    """bool [N, H, W] from boxes (x0, y0, x1, y1), x1/y1 exclusive, as [4] or [N, 4], or from masks [H, W] or
    [N, H, W]."""
    array = np.asarray(regions)
    height, width = hw
    if array.dtype == bool or (array.ndim >= 2 and tuple(array.shape[-2:]) == tuple(hw)):
        masks = array.astype(bool)
        if masks.ndim == 2:
            masks = np.broadcast_to(masks, (n_rows, *hw))
        if masks.shape != (n_rows, height, width):
            raise ParameterError(f"expected masks [{n_rows}, {height}, {width}], got {list(array.shape)}")
        return np.ascontiguousarray(masks)
    boxes = array.reshape(-1, 4) if array.ndim == 1 else array
    if boxes.ndim != 2 or boxes.shape[1] != 4 or len(boxes) not in (1, n_rows):
        raise ParameterError(
            f"expected a box (x0, y0, x1, y1) or one per image [{n_rows}, 4], or masks [{n_rows}, {height}, {width}]; "
            f"got shape {list(array.shape)}"
        )
    boxes = np.broadcast_to(boxes, (n_rows, 4)).astype(np.float64)
    rows, cols = np.arange(height)[None, :, None], np.arange(width)[None, None, :]
    x0, y0, x1, y1 = (np.clip(np.rint(boxes[:, i]), 0, width if i % 2 == 0 else height)[:, None, None]
                      for i in range(4))
    masks = (cols >= x0) & (cols < x1) & (rows >= y0) & (rows < y1)
    if not masks.reshape(n_rows, -1).any(axis=1).all():
        raise ParameterError("a box covers no pixel of the image (give x0 < x1 and y0 < y1 inside it)")
    return masks


def _dilate(masks: np.ndarray, radius: int) -> np.ndarray:
    """Masks grown by a disc of ``radius`` pixels (Zhang et al.'s tolerance)."""
    if radius <= 0:
        return masks
    grown = torch.from_numpy(masks.astype(np.float32))[:, None]
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    disc = ((offsets.view(-1, 1) ** 2 + offsets.view(1, -1) ** 2) <= radius**2).float()[None, None]
    grown = torch.nn.functional.conv2d(grown, disc, padding=radius)
    return grown[:, 0].numpy() > 0.5


def pointing_game(maps: Any, regions: Any, tolerance: int = 0) -> PointingResult:
    """Pointing game (Zhang et al. 2016, arXiv:1608.00507) and energy pointing game (Wang et al. 2020,
    arXiv:1910.01279) of maps [N, H, W] (or one [H, W]) against boxes or masks (see :func:`region_masks`).

    hit = 1 if argmax(map) ∈ region ⊕ disc(tolerance), else 0; when several pixels share the maximum, the share
    of them that hit (a tie broken at random, in expectation), so a constant map scores the chance level rather
    than a free hit. energy = Σ_region max(map, 0) / Σ_image max(map, 0); a map with no positive mass scores the
    area share (what any constant map scores).
    """

    array = np.asarray(maps.detach().float().cpu().numpy() if isinstance(maps, torch.Tensor) else maps,
                       dtype=np.float32)
    if array.ndim == 2:
        array = array[None]
    n_rows, hw = array.shape[0], tuple(array.shape[-2:])
    values = as_maps(array, n_rows, hw)
    masks = region_masks(regions, n_rows, hw)
    tolerance = int(tolerance)
    if tolerance < 0:
        raise ParameterError(f"tolerance must be ≥ 0 pixels; got {tolerance}")
    targets = _dilate(masks, tolerance)
    flat = values.reshape(n_rows, -1)
    peak = flat.max(axis=1, keepdims=True)
    at_peak = flat == peak
    hit = (at_peak & targets.reshape(n_rows, -1)).sum(axis=1) / at_peak.sum(axis=1)
    first = flat.argmax(axis=1)
    point = np.stack([first // hw[1], first % hw[1]], axis=1)
    area = masks.reshape(n_rows, -1).mean(axis=1)
    positive = np.maximum(flat, 0).astype(np.float64)
    total = positive.sum(axis=1)
    inside = (positive * masks.reshape(n_rows, -1)).sum(axis=1)
    energy = np.where(total > 0, inside / np.where(total > 0, total, 1), area)
    return PointingResult(hit=hit.astype(np.float64), energy=energy, area=area, point=point, tolerance=tolerance)


@dataclass(frozen=True)
class BoxPointing:
    """The pointing games of one map against the box (or region) it explains: ``hit`` the map's peak falls inside
    (with several equal maxima, most of them do: :func:`pointing_game`'s tie share above one half), ``share`` the
    share of the positive map mass inside, ``area`` the mask's share of the image (the chance level of both)."""

    hit: bool
    share: float
    area: float

    def to_dict(self) -> dict[str, Any]:
        return {"hit": self.hit, "share": self.share, "area": self.area}


def box_pointing(saliency: Any, mask: Any) -> BoxPointing:
    """The pointing game (Zhang et al. 2016, arXiv:1608.00507) and its energy share (Wang et al. 2020,
    arXiv:1910.01279) of one map [H, W] against the bool mask [H, W] of the box or region it explains
    (``ScoredBundle.target_mask``): :func:`pointing_game` on one row. A map that is zero everywhere (a box the
    detector lost) has every pixel at its peak: a hit only when the mask covers most of the image."""
    values = np.asarray(saliency.detach().float().cpu().numpy() if isinstance(saliency, torch.Tensor) else saliency,
                        dtype=np.float32)
    pixels = np.asarray(mask, dtype=bool)
    if values.ndim != 2 or pixels.shape != values.shape:
        raise ParameterError(f"expected a map [H, W] and a mask of the same shape; got {list(values.shape)} and "
                             f"{list(pixels.shape)}")
    result = pointing_game(values, pixels)
    return BoxPointing(hit=bool(result.hit[0] > 0.5), share=float(result.energy[0]), area=float(result.area[0]))
