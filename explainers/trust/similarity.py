"""How alike two saliency maps are: the four similarities of Adebayo et al. 2018's sanity checks.

Adebayo, Gilmer, Muelly, Goodfellow, Hardt & Kim 2018, "Sanity Checks for Saliency Maps", arXiv:1810.03292,
compare a map with its counterpart after randomising the model by

- the Spearman rank correlation of the absolute map and of the signed map (computed on the raw values, as
  Quantus' ``correlation_spearman`` does);
- SSIM (Wang, Bovik, Sheikh & Simoncelli 2004, doi:10.1109/TIP.2003.819861) and the Pearson correlation of HOG
  descriptors (Dalal & Triggs 2005, doi:10.1109/CVPR.2005.177), both on the absolute map scaled to [0, 1] by its
  99th percentile and clipped, as the paper's figures normalise maps.

Everything is NumPy, in float64. A map with no variation has no ranks, so its Spearman (and its HOG correlation)
is undefined: the result is ``Similarity(None, "undefined: constant map")``, never NaN.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ParameterError

CONSTANT_MAP = "undefined: constant map"
# A map whose range is below this share of its magnitude varies by float rounding only (about 8 float32 ulps):
# the fully randomised network's "maps" are of that kind, and ranking rounding noise measures nothing.
CONSTANT_RTOL = 1e-6
NORMALISE_PERCENTILE = 99.0
METRICS = ("spearman_abs", "spearman", "ssim", "hog")
METRIC_LABELS = {
    "spearman_abs": "Spearman |map|",
    "spearman": "Spearman signed",
    "ssim": "SSIM",
    "hog": "HOG similarity",
}
# What each similarity sees, for sentences that explain why the measures disagree.
METRIC_MEANING = {
    "spearman_abs": "the ranking of |map|",
    "spearman": "the signed ranking (where the map is positive and where negative)",
    "ssim": "the local structure of |map| (SSIM)",
    "hog": "the edge layout of |map| (HOG)",
}


@dataclass(frozen=True)
class Similarity:
    """A similarity in [-1, 1], or None with the reason it is undefined (e.g. "undefined: constant map")."""

    value: float | None
    reason: str | None = None

    @property
    def defined(self) -> bool:
        return self.value is not None

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "reason": self.reason}


def _as_map(values: Any, name: str = "map") -> np.ndarray:
    a = np.asarray(values, dtype=np.float64)
    if a.ndim != 2:
        raise ParameterError(f"expected a [H, W] {name}, got shape {list(a.shape)}")
    if not np.isfinite(a).all():
        raise ParameterError(f"the {name} contains NaN or infinite values")
    return a


def _pair(a: Any, b: Any) -> tuple[np.ndarray, np.ndarray]:
    a, b = _as_map(a, "first map"), _as_map(b, "second map")
    if a.shape != b.shape:
        raise ParameterError(f"expected two maps of the same shape, got {list(a.shape)} and {list(b.shape)}")
    return a, b


def is_constant(values: Any) -> bool:
    """True when a map does not vary beyond float rounding: max − min ≤ 1e-6 · max |value| (or all equal)."""
    a = np.asarray(values, dtype=np.float64)
    if a.size == 0:
        return True
    spread = float(a.max() - a.min())
    return spread == 0.0 or spread <= CONSTANT_RTOL * float(np.abs(a).max())


def rank(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n of a flat array, ties given their average rank (what scipy.stats.rankdata calls "average")."""
    flat = np.asarray(values, dtype=np.float64).ravel()
    order = np.argsort(flat)  # any sort keeps equal values together, which is all tie-averaging needs
    sorted_values = flat[order]
    # runs of equal values share the mean of the positions they occupy
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], len(flat)]
    average = (starts + ends + 1) / 2.0  # mean of the 1-based positions start+1 .. end
    ranks = np.empty(len(flat), dtype=np.float64)
    ranks[order] = np.repeat(average, ends - starts)
    return ranks


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two flat arrays (both must vary)."""
    x = a.ravel() - a.mean()
    y = b.ravel() - b.mean()
    # element-wise sums, not np.dot: BLAS threads stall behind torch's on a 2-core machine (22 ms for one dot)
    value = float((x * y).sum() / np.sqrt((x * x).sum() * (y * y).sum()))
    return float(np.clip(value, -1.0, 1.0))


def unit_scale(values: Any, percentile: float = NORMALISE_PERCENTILE) -> np.ndarray:
    """|map| divided by its ``percentile``-th percentile and clipped to [0, 1] (by the max where that is 0);
    a map that is zero everywhere stays zero."""
    a = np.abs(_as_map(values))
    top = float(np.percentile(a, percentile))
    if top <= 0:
        top = float(a.max())
    return np.zeros_like(a) if top <= 0 else np.clip(a / top, 0.0, 1.0)


def _box_mean(values: np.ndarray, size: int) -> np.ndarray:
    """Mean over every size x size window that lies inside the array ("valid" positions), via an integral image."""
    integral = np.zeros((values.shape[0] + 1, values.shape[1] + 1), dtype=np.float64)
    integral[1:, 1:] = values.cumsum(axis=0).cumsum(axis=1)
    total = integral[size:, size:] - integral[:-size, size:] - integral[size:, :-size] + integral[:-size, :-size]
    return total / (size * size)


def ssim_index(a: Any, b: Any, data_range: float = 1.0, win_size: int = 7, k1: float = 0.01,
               k2: float = 0.03) -> float:
    """Mean SSIM of two [H, W] arrays (Wang et al. 2004, doi:10.1109/TIP.2003.819861), with a uniform
    ``win_size`` window and sample covariances, averaged over the windows that fit inside the image.

    SSIM = (2 μa μb + C1)(2 σab + C2) / ((μa² + μb² + C1)(σa² + σb² + C2)), C1 = (k1 R)², C2 = (k2 R)².
    The same numbers as scikit-image's ``structural_similarity`` with its defaults: it filters the whole image
    with reflected borders and then crops the border windows, so only these windows count.
    """
    a, b = _pair(a, b)
    if win_size < 3 or win_size % 2 == 0:
        raise ParameterError(f"win_size must be an odd integer ≥ 3, got {win_size}")
    if min(a.shape) < win_size:
        raise ParameterError(f"SSIM needs maps of at least {win_size}x{win_size} pixels, got {list(a.shape)}")
    if not data_range > 0:
        raise ParameterError(f"data_range must be positive, got {data_range}")
    count = win_size * win_size
    cov_norm = count / (count - 1)
    mean_a, mean_b = _box_mean(a, win_size), _box_mean(b, win_size)
    var_a = cov_norm * (_box_mean(a * a, win_size) - mean_a * mean_a)
    var_b = cov_norm * (_box_mean(b * b, win_size) - mean_b * mean_b)
    cov = cov_norm * (_box_mean(a * b, win_size) - mean_a * mean_b)
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    index = ((2 * mean_a * mean_b + c1) * (2 * cov + c2)) / ((mean_a**2 + mean_b**2 + c1) * (var_a + var_b + c2))
    return float(index.mean())


def _gradients(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Central differences along rows and columns, zero on the outermost rows/columns."""
    g_row = np.zeros_like(image)
    g_col = np.zeros_like(image)
    g_row[1:-1, :] = image[2:, :] - image[:-2, :]
    g_col[:, 1:-1] = image[:, 2:] - image[:, :-2]
    return g_row, g_col


def hog_descriptor(image: Any, orientations: int = 9, pixels_per_cell: tuple[int, int] = (8, 8),
                   cells_per_block: tuple[int, int] = (3, 3)) -> np.ndarray:
    """Histogram of oriented gradients (Dalal & Triggs 2005, doi:10.1109/CVPR.2005.177) of a [H, W] array.

    Unsigned orientations (0-180°) in ``orientations`` equal bins; each pixel votes its gradient magnitude into
    its bin of its cell (no interpolation); every block of cells is L2-Hys normalised (L2, clip at 0.2, L2 again,
    ε = 1e-5) and the blocks are concatenated. The layout and the numbers are scikit-image's ``hog`` defaults.
    """
    image = _as_map(image, "image")
    cell_rows, cell_cols = pixels_per_cell
    block_rows, block_cols = cells_per_block
    n_rows, n_cols = image.shape[0] // cell_rows, image.shape[1] // cell_cols
    if n_rows < block_rows or n_cols < block_cols:
        raise ParameterError(
            f"HOG needs an image of at least {block_rows * cell_rows}x{block_cols * cell_cols} pixels for "
            f"{cells_per_block} cells of {pixels_per_cell} pixels, got {list(image.shape)}"
        )
    g_row, g_col = _gradients(image)
    magnitude = np.hypot(g_col, g_row)
    orientation = np.arctan2(g_row, g_col) * (180 / np.pi) % 180
    # bin i holds edge_i ≤ θ < edge_{i+1}; the edges are float32 values, as scikit-image compares them
    edges = (np.float32(180.0 / orientations) * np.arange(orientations, dtype=np.float32)).astype(np.float64)
    bins = np.searchsorted(edges, orientation, side="right") - 1
    used = (slice(0, n_rows * cell_rows), slice(0, n_cols * cell_cols))
    row_cell = np.arange(n_rows * cell_rows)[:, None] // cell_rows
    cell = row_cell * n_cols + np.arange(n_cols * cell_cols)[None] // cell_cols  # each used pixel's cell index
    histogram = np.bincount(
        (cell * orientations + bins[used]).ravel(), weights=magnitude[used].ravel(),
        minlength=n_rows * n_cols * orientations,
    ).reshape(n_rows, n_cols, orientations)
    windows = np.lib.stride_tricks.sliding_window_view(histogram, (block_rows, block_cols), axis=(0, 1))
    blocks = windows.transpose(0, 1, 3, 4, 2)  # [blocks_r, blocks_c, cells_r, cells_c, orientations]
    eps = 1e-5
    norm = np.sqrt((blocks**2).sum(axis=(2, 3, 4), keepdims=True) + eps**2)
    clipped = np.minimum(blocks / norm, 0.2)
    normalised = clipped / np.sqrt((clipped**2).sum(axis=(2, 3, 4), keepdims=True) + eps**2)
    return normalised.ravel()


class PreparedMap:
    """A [H, W] map with what its similarities need, computed once and kept: ranks of the map and of |map|, the
    [0, 1]-scaled |map| (:func:`unit_scale`) and its HOG descriptor. Comparing one map with many (a cascade, the
    random-logit test) then ranks and describes each map once."""

    def __init__(self, values: Any):
        self.values = _as_map(values)
        self.absolute = np.abs(self.values)
        self.constant = is_constant(self.values)
        self.constant_abs = is_constant(self.absolute)
        self._cache: dict[str, Any] = {}

    def _get(self, key: str, make: Callable[[], Any]) -> Any:
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    @property
    def ranks(self) -> np.ndarray:
        return self._get("ranks", lambda: rank(self.values))

    @property
    def ranks_abs(self) -> np.ndarray:
        return self._get("ranks_abs", lambda: rank(self.absolute))

    @property
    def unit(self) -> np.ndarray:
        return self._get("unit", lambda: unit_scale(self.values))

    @property
    def hog(self) -> np.ndarray:
        return self._get("hog", lambda: hog_descriptor(self.unit))

    def spearman(self, other: PreparedMap, absolute: bool = False) -> Similarity:
        """Spearman's rank correlation: the Pearson correlation of the average ranks (of |map| if ``absolute``,
        Adebayo et al.'s absolute-value comparison). Undefined for a constant map."""
        if (self.constant_abs or other.constant_abs) if absolute else (self.constant or other.constant):
            return Similarity(None, CONSTANT_MAP)
        if absolute:
            return Similarity(pearson(self.ranks_abs, other.ranks_abs))
        return Similarity(pearson(self.ranks, other.ranks))

    def ssim(self, other: PreparedMap) -> Similarity:
        """SSIM of the two maps' absolute values, each scaled to [0, 1] by :func:`unit_scale` (data range 1)."""
        h, w = self.values.shape
        if min(h, w) < 7:
            return Similarity(None, f"undefined: SSIM needs maps of at least 7x7 pixels, got {h}x{w}")
        return Similarity(ssim_index(self.unit, other.unit, data_range=1.0))

    def hog_similarity(self, other: PreparedMap) -> Similarity:
        """Pearson correlation of the HOG descriptors of the two maps' absolute values scaled to [0, 1], as
        Adebayo et al. 2018 (arXiv:1810.03292) compare maps; undefined for a constant map (no gradients)."""
        h, w = self.values.shape
        if self.constant_abs or other.constant_abs:
            return Similarity(None, CONSTANT_MAP)
        if min(h, w) < 24:
            return Similarity(None, f"undefined: HOG needs maps of at least 24x24 pixels, got {h}x{w}")
        if is_constant(self.hog) or is_constant(other.hog):
            return Similarity(None, "undefined: a HOG descriptor is constant")
        return Similarity(pearson(self.hog, other.hog))

    def compare(self, other: PreparedMap, metrics: Sequence[str] = METRICS) -> dict[str, Similarity]:
        """Every similarity of ``metrics`` (see :data:`METRICS`) between this map and ``other``, by name."""
        if self.values.shape != other.values.shape:
            raise ParameterError(f"expected two maps of the same shape, got {list(self.values.shape)} and "
                                 f"{list(other.values.shape)}")
        unknown = [m for m in metrics if m not in METRICS]
        if unknown:
            raise ParameterError(f"unknown similarity {unknown[0]!r}; valid: {', '.join(METRICS)}")
        out = {}
        for metric in metrics:
            if metric == "spearman_abs":
                out[metric] = self.spearman(other, absolute=True)
            elif metric == "spearman":
                out[metric] = self.spearman(other)
            elif metric == "ssim":
                out[metric] = self.ssim(other)
            else:
                out[metric] = self.hog_similarity(other)
        return out


def _prepared(a: Any, b: Any) -> tuple[PreparedMap, PreparedMap]:
    first, second = PreparedMap(_as_map(a, "first map")), PreparedMap(_as_map(b, "second map"))
    if first.values.shape != second.values.shape:
        raise ParameterError(f"expected two maps of the same shape, got {list(first.values.shape)} and "
                             f"{list(second.values.shape)}")
    return first, second


def spearman(a: Any, b: Any, absolute: bool = False) -> Similarity:
    """Spearman's rank correlation of two [H, W] maps (of |a| and |b| if ``absolute``); see
    :meth:`PreparedMap.spearman`."""
    first, second = _prepared(a, b)
    return first.spearman(second, absolute)


def ssim(a: Any, b: Any) -> Similarity:
    """SSIM of two [H, W] maps' absolute values scaled to [0, 1]; see :meth:`PreparedMap.ssim`."""
    first, second = _prepared(a, b)
    return first.ssim(second)


def hog_similarity(a: Any, b: Any) -> Similarity:
    """HOG similarity of two [H, W] maps; see :meth:`PreparedMap.hog_similarity`."""
    first, second = _prepared(a, b)
    return first.hog_similarity(second)


def compare(a: Any, b: Any, metrics: Sequence[str] = METRICS) -> dict[str, Similarity]:
    """Every similarity of ``metrics`` between two [H, W] maps, by name (see :data:`METRICS`)."""
    first, second = _prepared(a, b)
    return first.compare(second, metrics)


__all__ = [
    "CONSTANT_MAP",
    "METRICS",
    "METRIC_LABELS",
    "METRIC_MEANING",
    "PreparedMap",
    "Similarity",
    "compare",
    "hog_descriptor",
    "hog_similarity",
    "is_constant",
    "pearson",
    "rank",
    "spearman",
    "ssim",
    "ssim_index",
    "unit_scale",
]
