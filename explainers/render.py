"""The one render pipeline: raw attribution + a :class:`View` -> map, colour image and overlay.

Methods return raw attributions and never colour anything. Every surface (Explore, Compare, both exports, the
CLI) calls :func:`render` or :func:`render_for_image`, so the same settings give the same pixels everywhere, and
a view change never recomputes an attribution. The steps, in order:

1. sign, per channel: absolute |a|, positive max(a, 0), negative max(-a, 0) (the magnitude of negative
   evidence), or signed a;
2. channel reduction of the signed-selected channels: max (the channel of largest magnitude, its sign kept),
   sum, or l2 (the norm, carrying the sign of the sum when signed). A 1-channel map has nothing to reduce;
3. range: a robust percentile clip of this map (own) or a range shared by several maps (linked);
4. placement onto the picture: the model's view, or the original image with the crop box the model saw;
5. colour from a matplotlib colour table, and the overlay;
6. a region method's superpixels (``regions``, integer labels) outlined on the overlay, so the segmentation the
   scores belong to shows on the image.

Colour tables come from matplotlib (a kept library); nothing here builds figures.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from functools import cache
from typing import Any

import numpy as np
from PIL import Image

from .errors import ParameterError

SIGNS = ("absolute", "positive", "negative", "signed")
REDUCTIONS = ("max", "sum", "l2")
DEFAULT_CLIP_PERCENTILE = 99.5
LUT_SIZE = 256

# matplotlib's colour tables, perceptually uniform ones first (Smith & van der Walt 2015, the viridis family;
# Nuñez et al. 2018, cividis). Diverging maps run from negative (first colour) to positive (last).
PERCEPTUAL_COLORMAPS = ("inferno", "viridis", "magma", "plasma", "cividis")
SEQUENTIAL_COLORMAPS = PERCEPTUAL_COLORMAPS + (
    "hot", "afmhot", "gist_heat", "gray", "bone", "copper", "Greys", "Reds", "Oranges", "YlOrRd", "OrRd",
    "Purples", "Blues", "Greens", "YlGnBu",
)
# Rainbow maps: common in papers and in TorchCAM, but their uneven lightness invents edges and hides detail.
RAINBOW_COLORMAPS = ("jet", "turbo")
DIVERGING_COLORMAPS = (
    "RdBu_r", "coolwarm", "bwr", "seismic", "berlin", "managua", "vanimo", "PiYG", "PRGn", "BrBG", "PuOr_r", "RdGy_r",
    "RdYlBu_r", "Spectral_r",
)
COLORMAPS = SEQUENTIAL_COLORMAPS + RAINBOW_COLORMAPS + DIVERGING_COLORMAPS
DEFAULT_SEQUENTIAL = "inferno"
DEFAULT_DIVERGING = "RdBu_r"
RAINBOW_NOTE = ("Rainbow colormaps (jet, turbo) vary unevenly in lightness: they draw edges that are not in the "
                "map and hide others. Prefer a perceptually uniform one (inferno, viridis) for reading values.")
OUTSIDE_GREY = 128  # heatmap colour where the model saw nothing (outside a centre crop)
# Region outlines: light on dark pixels and dark on light ones, so a line reads on the photo and on any colormap
# without adding a hue the colour scale could be mistaken for.
OUTLINE_LIGHT, OUTLINE_DARK = 255, 0
OUTLINE_OPACITY = 0.8


def _check(value: str, options: tuple[str, ...], what: str) -> str:
    if value not in options:
        raise ParameterError(f"unknown {what} {value!r}; valid options: {', '.join(options)}")
    return value


def colormap_group(name: str) -> str:
    """"perceptual", "sequential", "rainbow" or "diverging"."""
    _check(name, COLORMAPS, "colormap")
    if name in PERCEPTUAL_COLORMAPS:
        return "perceptual"
    if name in RAINBOW_COLORMAPS:
        return "rainbow"
    return "diverging" if name in DIVERGING_COLORMAPS else "sequential"


def is_diverging(colormap: str) -> bool:
    """True for colormaps centred at zero (they expect values in [-1, 1])."""
    return colormap_group(colormap) == "diverging"


def suggested_colormap(sign: str) -> str:
    """Diverging for signed maps (zero must look neutral), a perceptual sequential map otherwise."""
    return DEFAULT_DIVERGING if _check(sign, SIGNS, "sign") == "signed" else DEFAULT_SEQUENTIAL


@dataclass(frozen=True)
class View:
    """How to show an attribution: every choice a user can make without recomputing it.

    ``colormap=None`` takes the suggestion for the sign; ``original_aspect`` places the map on the original image
    (with the box the model saw) rather than on the model's square view.
    """

    sign: str = "absolute"
    reduction: str = "max"
    clip: float = DEFAULT_CLIP_PERCENTILE
    colormap: str | None = None
    alpha: float = 0.5
    original_aspect: bool = True

    def __post_init__(self) -> None:
        _check(self.sign, SIGNS, "sign")
        _check(self.reduction, REDUCTIONS, "reduction")
        if self.colormap is not None:
            _check(self.colormap, COLORMAPS, "colormap")
        _check_percentile(self.clip)
        if not 0.0 <= float(self.alpha) <= 1.0:
            raise ParameterError(f"alpha must be in [0, 1], got {self.alpha!r}")

    @property
    def signed(self) -> bool:
        return self.sign == "signed"

    @property
    def cmap(self) -> str:
        return self.colormap or suggested_colormap(self.sign)

    def as_dict(self) -> dict[str, Any]:
        """The settings with the colormap resolved: what manifests record."""
        return {**asdict(self), "colormap": self.cmap}


def difference_view(view: View) -> View:
    """The view of a difference of two maps: signed, on the default diverging colormap."""
    return replace(view, sign="signed", colormap=DEFAULT_DIVERGING if not is_diverging(view.cmap) else view.cmap)


def difference(first: Any, second: Any, view: View) -> np.ndarray:
    """[1, H, W]: the map ``view`` shows of ``first`` minus that of ``second`` (e.g. predicted − runner-up), in raw
    units; render it with :func:`difference_view` so both directions show."""
    return (to_map(first, view.sign, view.reduction) - to_map(second, view.sign, view.reduction))[None]


# ---------------------------------------------------------------------------------------------------------
# Steps 1-3: sign, reduction, range
# ---------------------------------------------------------------------------------------------------------


def _to_numpy(x: Any) -> np.ndarray:
    """NumPy view of an array or torch tensor (duck-typed so this module does not import torch)."""
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x)


def _finite(a: np.ndarray) -> np.ndarray:
    """float32 copy with NaN/inf replaced by 0, so one bad pixel can neither poison nor dominate the map."""
    a = np.asarray(a, dtype=np.float32)
    return np.where(np.isfinite(a), a, np.float32(0)).astype(np.float32)


def _as_chw(attribution: Any) -> np.ndarray:
    a = _finite(_to_numpy(attribution))
    if a.ndim == 2:
        return a[None]
    if a.ndim == 4:
        if a.shape[0] != 1:
            raise ParameterError(f"expected a batch of one [1,C,H,W], got shape {tuple(a.shape)}")
        return a[0]
    if a.ndim == 3:
        return a
    raise ParameterError(f"expected an attribution of shape [C,H,W], [1,C,H,W] or [H,W], got {tuple(a.shape)}")


def apply_sign(values: Any, sign: str) -> np.ndarray:
    """Select which evidence to show, element-wise; "negative" gives the magnitude of negative evidence (≥ 0)."""
    _check(sign, SIGNS, "sign")
    a = _finite(_to_numpy(values))
    if sign == "absolute":
        return np.abs(a)
    if sign == "positive":
        return np.maximum(a, 0)
    if sign == "negative":
        return np.maximum(-a, 0)
    return a


def to_map(attribution: Any, sign: str = "absolute", reduction: str = "max") -> np.ndarray:
    """The raw [H, W] map a view shows: the sign applied to each channel, then the channels reduced.

    With sign="absolute" and reduction="max" this is Simonyan et al. 2013's max_c |g_c| (arXiv:1312.6034). A
    1-channel map is only signed: there is nothing to reduce.
    """
    _check(reduction, REDUCTIONS, "reduction")
    a = apply_sign(_as_chw(attribution), sign)
    if a.shape[0] == 1:
        return np.ascontiguousarray(a[0], dtype=np.float32)
    if reduction == "max":
        # the channel of largest magnitude, with its sign (all values are ≥ 0 unless signed)
        pick = np.abs(a).argmax(axis=0)
        out = np.take_along_axis(a, pick[None], axis=0)[0]
    elif reduction == "sum":
        out = a.sum(axis=0)
    else:  # l2; float64 so squaring large gradients cannot overflow float32
        out = np.sqrt(np.square(a, dtype=np.float64).sum(axis=0))
        if sign == "signed":
            out = out * np.sign(a.sum(axis=0))
    return np.ascontiguousarray(out, dtype=np.float32)


def _check_percentile(clip: float) -> float:
    p = float(clip)
    if not 0 < p <= 100:
        raise ParameterError(f"clip percentile must be in (0, 100], got {clip!r}")
    return p


def value_range(maps: Any, clip: float = DEFAULT_CLIP_PERCENTILE, signed: bool = False) -> tuple[float, float]:
    """(lo, hi) in raw units for a map, or for several maps at once (a list): the robust percentile clip.

    Unsigned: lo = min, hi = the percentile. Signed: ±(percentile of |m|), centred at zero. The top is a
    percentile rather than the max so one outlier pixel does not turn the rest black.
    """
    p = _check_percentile(clip)
    if isinstance(maps, (list, tuple)):
        a = np.concatenate([_finite(_to_numpy(m)).ravel() for m in maps]) if maps else np.zeros(0, np.float32)
    else:
        a = _finite(_to_numpy(maps))
    if a.size == 0:
        return 0.0, 0.0
    if signed:
        magnitude = np.abs(a)
        s = float(np.percentile(magnitude, p))
        if s <= 0:  # a sparse map whose percentile is 0 would otherwise vanish; fall back to the max
            s = float(magnitude.max())
        return -s, s
    lo = float(a.min())
    hi = float(np.percentile(a, p))
    if hi <= lo:
        hi = float(a.max())
    return lo, hi


def linked_range(attributions: list, view: View) -> tuple[float, float]:
    """One raw-unit range for several attributions shown with ``view``: what a linked colour scale uses."""
    return value_range([to_map(a, view.sign, view.reduction) for a in attributions], view.clip, view.signed)


def scale_to_range(values: Any, lo: float, hi: float, signed: bool = False) -> np.ndarray:
    """Raw values to [0, 1] (or [-1, 1] if signed) with a given (lo, hi); a degenerate range gives zeros.

    NaN (where the model saw nothing) stays NaN.
    """
    a = np.asarray(_to_numpy(values), dtype=np.float32)
    if hi <= lo:  # constant map (all-zero included): nothing to show
        return np.where(np.isnan(a), np.nan, 0).astype(np.float32)
    if signed:
        return np.clip(a / hi, -1, 1).astype(np.float32)
    return np.clip((a - lo) / (hi - lo), 0, 1).astype(np.float32)


def percentile_of(values: Any, v: Any) -> Any:
    """Percentile rank (0-100) of raw value(s) v within a map: the share of pixels ≤ v, for hover text."""
    flat = np.asarray(_to_numpy(values), dtype=np.float32).ravel()
    flat = np.sort(flat[np.isfinite(flat)])
    if flat.size == 0:
        return 0.0 if np.ndim(v) == 0 else np.zeros(np.shape(v))
    ranks = 100.0 * np.searchsorted(flat, np.asarray(v, dtype=np.float32), side="right") / flat.size
    return float(ranks) if np.ndim(ranks) == 0 else ranks


# ---------------------------------------------------------------------------------------------------------
# Step 4: placement
# ---------------------------------------------------------------------------------------------------------


def resize(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A float map bilinearly resized to size = (width, height), float32 throughout."""
    width, height = (max(1, int(s)) for s in size)
    a = np.ascontiguousarray(values, dtype=np.float32)
    if a.shape == (height, width):
        return a.copy()
    return np.array(Image.fromarray(a).resize((width, height), Image.Resampling.BILINEAR), dtype=np.float32)


def place(values: Any, size: tuple[int, int], box: tuple[int, int, int, int] | None = None,
          fill: float = np.nan) -> np.ndarray:
    """A model-space [H, W] map on a picture of size = (width, height).

    ``box`` = (left, top, right, bottom) is where the model's input lies on the picture (it may reach past the
    edges); the map is stretched onto it and the rest gets ``fill``. Without a box the map covers the picture.
    """
    a = np.asarray(_to_numpy(values), dtype=np.float32)
    if a.ndim != 2:
        raise ParameterError(f"expected a [H, W] map, got shape {list(a.shape)}")
    width, height = size
    if box is None or tuple(box) == (0, 0, width, height):
        return resize(a, (width, height))
    left, top, right, bottom = box
    region = resize(a, (right - left, bottom - top))
    canvas = np.full((height, width), fill, dtype=np.float32)
    src_left, src_top = max(0, -left), max(0, -top)
    dst_left, dst_top = max(0, left), max(0, top)
    w = min(region.shape[1] - src_left, width - dst_left)
    h = min(region.shape[0] - src_top, height - dst_top)
    if w > 0 and h > 0:
        canvas[dst_top : dst_top + h, dst_left : dst_left + w] = region[src_top : src_top + h, src_left : src_left + w]
    return canvas


# ---------------------------------------------------------------------------------------------------------
# Step 5: colour
# ---------------------------------------------------------------------------------------------------------


def _lut_positions(diverging: bool) -> np.ndarray:
    """Where on the [0, 1] colour table each LUT entry is sampled."""
    i = np.arange(LUT_SIZE, dtype=np.float64)
    if diverging:
        # 256 entries have no middle one, so pin entry 128 to the table's centre: v=-1 -> 0, v=0 -> exactly
        # 0.5 (the neutral colour), v=+1 -> 1. The positive side has one step fewer, which is invisible.
        c = LUT_SIZE // 2
        return np.where(i <= c, 0.5 * i / c, 0.5 + 0.5 * (i - c) / (LUT_SIZE - 1 - c))
    return i / (LUT_SIZE - 1)


@cache
def colormap_lut(name: str) -> np.ndarray:
    """A read-only [256, 3] uint8 lookup table sampled from matplotlib's colour table (cached)."""
    # deferred: matplotlib costs a noticeable import, and only a colour table needs it (the CLI's --help and
    # every non-rendering use of the backend never pay it)
    from matplotlib import colormaps

    _check(name, COLORMAPS, "colormap")
    rgba = colormaps[name](_lut_positions(is_diverging(name)))
    lut = np.clip(np.rint(rgba[:, :3] * 255), 0, 255).astype(np.uint8)
    lut.setflags(write=False)  # cached and shared: nobody may mutate it
    return lut


def _lut_index(v: np.ndarray, diverging: bool) -> np.ndarray:
    if diverging:
        v = np.clip(v, -1, 1)
        c = LUT_SIZE // 2
        # Same piecewise mapping as _lut_positions, so 0 lands on the exact centre entry.
        idx = np.where(v <= 0, c + c * v, c + (LUT_SIZE - 1 - c) * v)
    else:
        idx = np.clip(v, 0, 1) * (LUT_SIZE - 1)
    return np.floor(idx + 0.5).astype(np.intp)


def colorize(normalized: Any, colormap: str) -> np.ndarray:
    """Colour a normalised map, [0, 1] for sequential colormaps and [-1, 1] for diverging ones: uint8 [H, W, 3].

    NaN (where the model saw nothing) is grey.
    """
    v = np.asarray(_to_numpy(normalized), dtype=np.float32)
    outside = np.isnan(v)
    rgb = colormap_lut(colormap)[_lut_index(np.where(outside, 0, v), is_diverging(colormap))]
    if outside.any():
        rgb[outside] = OUTSIDE_GREY
    return rgb


def _display(normalized: np.ndarray, signed: bool, colormap: str) -> np.ndarray:
    """Normalised values as the colour table expects them."""
    diverging = is_diverging(colormap)
    if signed and not diverging:
        return (normalized + 1) / 2  # a sequential map shown signed spans -s..+s end to end
    if not signed and diverging:
        return normalized  # magnitudes on a diverging map use its zero-to-positive half
    return normalized


def colour_scale(colormap: str, signed: bool, steps: int = LUT_SIZE) -> np.ndarray:
    """uint8 [steps, 3]: the colours from the range's low end (first) to its high end (last), as the heatmap
    uses them, so a colorbar or an interactive figure shows exactly the PNG's colours."""
    ramp = np.linspace(-1 if signed else 0, 1, steps, dtype=np.float32)
    return colorize(_display(ramp, signed, colormap), colormap)


def _as_rgb_uint8(image: Any) -> np.ndarray:
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"), dtype=np.uint8)
    a = _to_numpy(image)
    if a.dtype != np.uint8:
        raise ParameterError(f"expected a PIL image or uint8 array, got dtype {a.dtype}")
    if a.ndim == 2:
        a = np.stack([a] * 3, axis=-1)
    if a.ndim != 3 or a.shape[2] not in (3, 4):
        raise ParameterError(f"expected an image of shape [H,W,3], got {tuple(a.shape)}")
    return a[..., :3]


def overlay(image: Any, heat_rgb: Any, alpha: float = 0.5, outside: np.ndarray | None = None,
            weight: np.ndarray | None = None) -> np.ndarray:
    """(1 - a) * image + a * heat with a = alpha (times ``weight``, a per-pixel [H, W] opacity in [0, 1], where
    given), the heat and weight resized bilinearly to the image; pixels in ``outside`` (a boolean mask: the model
    never saw them) are the image dimmed to half instead."""
    alpha = float(alpha)
    if not 0.0 <= alpha <= 1.0:
        raise ParameterError(f"alpha must be in [0, 1], got {alpha!r}")
    img = _as_rgb_uint8(image)
    heat = _as_rgb_uint8(heat_rgb)
    h, w = img.shape[:2]
    if heat.shape[:2] != (h, w):
        heat = np.asarray(Image.fromarray(np.ascontiguousarray(heat)).resize((w, h), Image.BILINEAR), dtype=np.uint8)
    a: Any = alpha
    if weight is not None:
        weight = np.clip(np.nan_to_num(np.asarray(weight, dtype=np.float32)), 0.0, 1.0)
        a = alpha * (resize(weight, (w, h)) if weight.shape != (h, w) else weight)[..., None]
    blended = np.clip(np.rint((1.0 - a) * img.astype(np.float32) + a * heat.astype(np.float32)), 0, 255)
    blended = blended.astype(np.uint8)
    if outside is not None and outside.any():
        blended[outside] = img[outside] // 2
    return blended


def to_pil(array: Any) -> Image.Image:
    """PIL image from a uint8 [H,W,3] / [H,W] array; float arrays are taken as [0,1] and scaled."""
    a = _to_numpy(array)
    if a.dtype != np.uint8:
        a = np.floor(np.clip(_finite(a), 0, 1) * 255 + 0.5).astype(np.uint8)
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
        raise ParameterError(f"expected [H,W] or [H,W,3] array, got shape {tuple(a.shape)}")
    return Image.fromarray(np.ascontiguousarray(a))


# ---------------------------------------------------------------------------------------------------------
# Step 6: region outlines
# ---------------------------------------------------------------------------------------------------------


def _labels(regions: Any) -> np.ndarray:
    """[h, w] integer labels from an array or tensor ([1, h, w] accepted)."""
    if hasattr(regions, "detach"):
        regions = regions.detach().cpu().numpy()
    labels = np.asarray(regions)
    if labels.ndim == 3 and labels.shape[0] == 1:
        labels = labels[0]
    if labels.ndim != 2 or labels.size == 0:
        raise ParameterError(f"expected region labels of shape [H, W], got shape {list(labels.shape)}")
    return labels.astype(np.int64, copy=False)


def _nearest(count: int, start: int, span: int, cells: int) -> np.ndarray:
    """For each of ``count`` picture pixels, the model cell (of ``cells``) that a ``span``-pixel stretch starting
    at ``start`` shows there, by nearest neighbour; -1 outside the stretch."""
    offset = np.arange(count) - start
    index = np.floor((offset + 0.5) * cells / max(span, 1)).astype(np.int64)
    return np.where((offset >= 0) & (offset < span), np.clip(index, 0, cells - 1), -1)


def _cell_edges(cells: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """The picture pixels (of ``inside``) whose next pixel shows another model cell, also inside."""
    current = inside[:-1]
    following = cells[current + 1]
    return current[(following >= 0) & (following != cells[current])]


def _shifted(mask: np.ndarray, shift: int, axis: int) -> np.ndarray:
    """``mask`` moved by ``shift`` pixels along ``axis``, False where it came from beyond the edge (no wrap)."""
    out = np.zeros_like(mask)
    source = [slice(None)] * 2
    target = [slice(None)] * 2
    source[axis] = slice(0, -shift) if shift > 0 else slice(-shift, None)
    target[axis] = slice(shift, None) if shift > 0 else slice(0, shift)
    out[tuple(target)] = mask[tuple(source)]
    return out


def region_boundaries(regions: Any, size: tuple[int, int] | None = None,
                      box: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """bool [H, W] on a picture of ``size`` = (width, height) (default: the labels' own): the pixels where the
    region label changes, the labels placed like the map (stretched onto ``box``, nearest neighbour).

    A line is about one model pixel wide on the picture (at least one picture pixel), so it stays thin however
    large the picture; the edge of the model's view is not outlined.
    """
    labels = _labels(regions)
    h, w = labels.shape
    width, height = (w, h) if size is None else (max(1, int(s)) for s in size)
    left, top, right, bottom = (0, 0, width, height) if box is None else box
    cols = _nearest(width, left, right - left, w)
    rows = _nearest(height, top, bottom - top, h)
    mask = np.zeros((height, width), dtype=bool)
    inside_rows, inside_cols = np.flatnonzero(rows >= 0), np.flatnonzero(cols >= 0)
    # the label can change only where the model cell does: a few hundred picture lines, compared as bands
    xs, ys = _cell_edges(cols, inside_cols), _cell_edges(rows, inside_rows)
    if xs.size and inside_rows.size:
        band = labels[rows[inside_rows]]
        mask[np.ix_(inside_rows, xs)] = band[:, cols[xs]] != band[:, cols[xs + 1]]
    if ys.size and inside_cols.size:
        band = labels[:, cols[inside_cols]]
        mask[np.ix_(ys, inside_cols)] |= band[rows[ys]] != band[rows[ys + 1]]
    thickness = max(1, int(round(min((right - left) / w, (bottom - top) / h))))
    if thickness > 1:  # widen the one-pixel line to about one model pixel, around the edge
        line = mask.copy()
        for shift in range(-(thickness // 2), thickness - thickness // 2):
            if shift:
                mask |= _shifted(line, shift, 0) | _shifted(line, shift, 1)
        mask &= (rows >= 0)[:, None] & (cols >= 0)[None, :]
    return mask


def _local_mean(values: np.ndarray, radius: int, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """The mean of ``values`` over a (2·radius+1)² window (clipped at the edges) around each pixel (ys, xs), read
    off an integral image."""
    h, w = values.shape
    integral = np.zeros((h + 1, w + 1), dtype=np.float64)
    np.cumsum(values, axis=0, out=integral[1:, 1:])
    np.cumsum(integral[1:, 1:], axis=1, out=integral[1:, 1:])
    y0, y1 = np.clip(ys - radius, 0, h), np.clip(ys + radius + 1, 0, h)
    x0, x1 = np.clip(xs - radius, 0, w), np.clip(xs + radius + 1, 0, w)
    total = integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0]
    return (total / ((y1 - y0) * (x1 - x0))).astype(np.float32)


def outline_regions(picture: Any, regions: Any, box: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """uint8 [H, W, 3]: ``picture`` with the boundaries of ``regions`` (integer labels in the model's space, placed
    onto ``box`` as the map is) drawn in a neutral ink: light where the picture around the line is dark, dark where
    it is light (judged over a small window, so a line over fine texture does not flicker between the two)."""
    image = _as_rgb_uint8(picture)
    height, width = image.shape[:2]
    mask = region_boundaries(regions, (width, height), box)
    out = image.copy()
    if not mask.any():
        return out
    luminance = image @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    ys, xs = np.nonzero(mask)
    around = _local_mean(luminance, max(2, round(max(height, width) / 100)), ys, xs)
    ink = np.where(around > 127.5, OUTLINE_DARK, OUTLINE_LIGHT).astype(np.float32)[:, None]
    under = image[ys, xs].astype(np.float32)
    out[ys, xs] = np.clip(np.rint((1 - OUTLINE_OPACITY) * under + OUTLINE_OPACITY * ink), 0, 255).astype(np.uint8)
    return out


TARGET_INK = np.array([0, 229, 255], dtype=np.uint8)  # the explained box or region: cyan, off every colormap's ends


def outline_target(picture: Any, mask: Any, box: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """uint8 [H, W, 3]: ``picture`` with the edge of ``mask`` (bool [H, W] in the model's space: the detected box
    or the segmented region being explained, placed onto ``box`` as the map is) drawn in TARGET_INK, at least two
    picture pixels wide so it reads on any heatmap."""
    image = _as_rgb_uint8(picture)
    height, width = image.shape[:2]
    labels = np.pad(np.asarray(mask, dtype=np.int32), 1)  # a mask touching the view's edge still gets its line
    h, w = labels.shape
    left, top, right, bottom = (0, 0, width, height) if box is None else box
    sx, sy = (right - left) / (w - 2), (bottom - top) / (h - 2)
    padded_box = (round(left - sx), round(top - sy), round(right + sx), round(bottom + sy))
    edge = region_boundaries(labels, (width, height), padded_box)
    line = edge.copy()
    for shift in (-1, 1):
        edge |= _shifted(line, shift, 0) | _shifted(line, shift, 1)
    out = image.copy()
    out[edge] = TARGET_INK
    return out


# ---------------------------------------------------------------------------------------------------------
# The pipeline
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rendered:
    """A rendered attribution.

    ``values``: the raw map (signed, reduced) in the output geometry, NaN where the model saw nothing;
    ``normalized``: the values scaled by (lo, hi); ``rgb``: the heatmap as uint8 [H, W, 3]; ``overlay``: the
    heatmap blended over the picture (None without a picture); ``scale``: the colours from ``lo`` to ``hi``
    (uint8 [256, 3]) for colorbars and interactive figures.
    """

    values: np.ndarray
    normalized: np.ndarray
    rgb: np.ndarray
    overlay: np.ndarray | None
    lo: float
    hi: float
    view: View
    scale: np.ndarray = field(repr=False)

    @property
    def colormap(self) -> str:
        return self.view.cmap

    @property
    def signed(self) -> bool:
        return self.view.signed

    @property
    def empty(self) -> bool:
        """True when the map is constant (all zero included): the picture shows nothing."""
        return not self.hi > self.lo

    @property
    def image(self) -> np.ndarray:
        """The picture the view asks for: the overlay when there is a picture to overlay on, else the heatmap."""
        return self.overlay if self.overlay is not None else self.rgb


def render(
    attribution: Any,
    view: View = View(),
    *,
    backdrop: Any = None,
    box: tuple[int, int, int, int] | None = None,
    fixed_range: tuple[float, float] | None = None,
    regions: Any = None,
    target: Any = None,
) -> Rendered:
    """Sign, reduce, range, place, colour and overlay one attribution ([C,H,W], [1,C,H,W] or [H,W]).

    ``backdrop`` is the picture to overlay on (PIL or uint8 array); the map is stretched onto its ``box``
    (left, top, right, bottom), or onto all of it. ``fixed_range=(lo, hi)`` fixes the colour range in raw units
    (a scale linked across panels, from :func:`linked_range`); by default the map gets its own robust range,
    measured in the model's space so it does not depend on the picture's size. A signed view's overlay is as
    opaque as the value is large (``view.alpha`` at the range's end, transparent at zero). ``regions``, a region
    method's integer labels [H, W] in the model's space (``ExplanationRecord.regions``), outlines its superpixels
    on the overlay (:func:`outline_regions`). ``target``, the explained box or region of a dense model (bool
    [H, W] in the model's space), is outlined in TARGET_INK (:func:`outline_target`).
    """
    values = to_map(attribution, view.sign, view.reduction)
    lo, hi = value_range(values, view.clip, view.signed) if fixed_range is None else map(float, fixed_range)
    picture = None
    if backdrop is not None:
        picture = _as_rgb_uint8(backdrop)
        values = place(values, (picture.shape[1], picture.shape[0]), box)
    normalized = scale_to_range(values, lo, hi, view.signed)
    rgb = colorize(_display(normalized, view.signed, view.cmap), view.cmap)
    blended = None
    if picture is not None:
        # signed: the opacity follows |value|, so zero (the diverging map's white midpoint) leaves the photo as
        # it is instead of greying all of it
        weight = np.abs(normalized) if view.signed else None
        blended = overlay(picture, rgb, view.alpha, outside=np.isnan(values), weight=weight)
        if regions is not None:
            blended = outline_regions(blended, regions, box)
        if target is not None:
            blended = outline_target(blended, target, box)
    return Rendered(values, normalized, rgb, blended, lo, hi, view, colour_scale(view.cmap, view.signed))


def render_for_image(
    attribution: Any,
    view: View,
    *,
    image: Image.Image,
    bundle: Any,
    preprocessing: str,
    fixed_range: tuple[float, float] | None = None,
    regions: Any = None,
    target: Any = None,
) -> Rendered:
    """:func:`render` on the picture ``view.original_aspect`` asks for: the original ``image`` with the box the
    model saw, or the model's own square view of it; ``regions`` and ``target`` outlined as :func:`render` does."""
    if view.original_aspect:
        return render(attribution, view, backdrop=image, box=bundle.crop_geometry(image.size, preprocessing),
                      fixed_range=fixed_range, regions=regions, target=target)
    return render(attribution, view, backdrop=bundle.model_view(image, preprocessing), fixed_range=fixed_range,
                  regions=regions, target=target)


__all__ = [
    "COLORMAPS",
    "DEFAULT_CLIP_PERCENTILE",
    "DEFAULT_DIVERGING",
    "DEFAULT_SEQUENTIAL",
    "DIVERGING_COLORMAPS",
    "LUT_SIZE",
    "PERCEPTUAL_COLORMAPS",
    "RAINBOW_COLORMAPS",
    "RAINBOW_NOTE",
    "REDUCTIONS",
    "SEQUENTIAL_COLORMAPS",
    "SIGNS",
    "Rendered",
    "View",
    "apply_sign",
    "colorize",
    "colormap_group",
    "colormap_lut",
    "colour_scale",
    "difference",
    "difference_view",
    "is_diverging",
    "linked_range",
    "outline_regions",
    "overlay",
    "percentile_of",
    "place",
    "region_boundaries",
    "render",
    "render_for_image",
    "resize",
    "scale_to_range",
    "suggested_colormap",
    "to_map",
    "to_pil",
    "value_range",
]
