"""Turn raw attributions into pictures: channel reduction, sign, normalisation, colour, overlay.

Methods return raw attributions and never colour anything; every colour decision lives here, so changing
the colormap, sign or clip in the UI never recomputes an attribution.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
import plotly.colors as pcolors
from PIL import Image

from explainers.errors import ParameterError

REDUCTIONS = ("max_abs", "max_positive", "sum", "sum_abs", "l2")
SIGNS = ("absolute", "positive", "negative", "signed")
SEQUENTIAL_COLORMAPS = ("hot", "inferno", "viridis", "gray")
DIVERGING_COLORMAPS = ("rdbu",)
COLORMAPS = SEQUENTIAL_COLORMAPS + DIVERGING_COLORMAPS
LUT_SIZE = 256
DEFAULT_CLIP_PERCENTILE = 99.5

# Our names -> plotly's. "rdbu" uses the reversed scale so that, with zmin=-s and zmax=+s in a plotly
# figure, negative is blue and positive is red, matching the PNG.
_PLOTLY_NAMES = {
    "hot": "Hot",
    "inferno": "Inferno",
    "viridis": "Viridis",
    "gray": "gray",
    "rdbu": "RdBu_r",
}


def _check(value: str, options: tuple[str, ...], what: str) -> str:
    if value not in options:
        raise ParameterError(f"unknown {what} {value!r}; valid options: {', '.join(options)}")
    return value


def _to_numpy(x: Any) -> np.ndarray:
    """NumPy view of an array or torch tensor (duck-typed so this module does not import torch)."""
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x)


def _finite(a: np.ndarray) -> np.ndarray:
    """float32 copy with NaN/inf replaced by 0, so one bad pixel can neither poison nor dominate the map."""
    a = np.asarray(a, dtype=np.float32)
    return np.where(np.isfinite(a), a, np.float32(0)).astype(np.float32)


def _as_map(m: Any) -> np.ndarray:
    a = _finite(_to_numpy(m))
    if a.ndim != 2:
        raise ParameterError(f"expected a 2-D map [H,W], got shape {tuple(a.shape)}")
    return a


# ---------------------------------------------------------------------------------------------------------
# Reduction, sign, normalisation
# ---------------------------------------------------------------------------------------------------------


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


def reduce_channels(attribution: Any, reduction: str = "max_abs") -> np.ndarray:
    """Collapse channels of an attribution ([C,H,W], [1,C,H,W] or [H,W]) to a float32 [H,W] map."""
    _check(reduction, REDUCTIONS, "reduction")
    a = _as_chw(attribution)
    if reduction == "max_abs":  # Simonyan et al. 2013 (arXiv:1312.6034), section 3.1
        out = np.abs(a).max(axis=0)
    elif reduction == "max_positive":
        out = np.maximum(a, 0).max(axis=0)
    elif reduction == "sum":
        out = a.sum(axis=0)
    elif reduction == "sum_abs":
        out = np.abs(a).sum(axis=0)
    else:  # l2; float64 so squaring large gradients cannot overflow float32
        out = np.sqrt(np.square(a, dtype=np.float64).sum(axis=0))
    return np.ascontiguousarray(out, dtype=np.float32)


def apply_sign(m: Any, sign: str) -> np.ndarray:
    """Select which evidence to show; "negative" gives the magnitude of negative evidence (>= 0)."""
    _check(sign, SIGNS, "sign")
    a = _finite(_to_numpy(m))
    if sign == "absolute":
        return np.abs(a)
    if sign == "positive":
        return np.maximum(a, 0)
    if sign == "negative":
        return np.maximum(-a, 0)
    return a


def _check_percentile(clip_percentile: float) -> float:
    p = float(clip_percentile)
    if not 0 < p <= 100:
        raise ParameterError(f"clip_percentile must be in (0, 100], got {clip_percentile!r}")
    return p


def value_range(m: Any, clip_percentile: float = DEFAULT_CLIP_PERCENTILE, signed: bool = False) -> tuple[float, float]:
    """(lo, hi) in raw units for a map, or for several maps at once (a list): the robust percentile clip.

    Unsigned: lo = min, hi = the percentile. Signed: ±(percentile of |m|), centred at zero. The top is a
    percentile rather than the max so one outlier pixel does not turn the rest black.
    """
    p = _check_percentile(clip_percentile)
    if isinstance(m, (list, tuple)):
        a = np.concatenate([_finite(_to_numpy(x)).ravel() for x in m]) if m else np.zeros(0, np.float32)
    else:
        a = _finite(_to_numpy(m))
    if a.size == 0:
        return 0.0, 0.0
    if signed:
        mag = np.abs(a)
        s = float(np.percentile(mag, p))
        if s <= 0:  # a sparse map whose percentile is 0 would otherwise vanish; fall back to the max
            s = float(mag.max())
        return -s, s
    lo = float(a.min())
    hi = float(np.percentile(a, p))
    if hi <= lo:
        hi = float(a.max())
    return lo, hi


def scale_to_range(m: Any, lo: float, hi: float, signed: bool = False) -> np.ndarray:
    """Map raw values to [0,1] (or [-1,1] if signed) with a given (lo, hi); a degenerate range gives zeros."""
    a = _finite(_to_numpy(m))
    if hi <= lo:  # constant map (all-zero included): nothing to show
        return np.zeros_like(a, dtype=np.float32)
    if signed:
        return np.clip(a / hi, -1, 1).astype(np.float32)
    return np.clip((a - lo) / (hi - lo), 0, 1).astype(np.float32)


def normalize(
    m: Any, clip_percentile: float = DEFAULT_CLIP_PERCENTILE, signed: bool = False
) -> tuple[np.ndarray, float, float]:
    """Robustly scale a map to [0,1] (or [-1,1] if signed); returns (normalized, lo, hi) with lo/hi in raw units.

    Zero-safe: a constant map (all-zero included) gives zeros, never NaN.
    """
    lo, hi = value_range(m, clip_percentile, signed)
    return scale_to_range(m, lo, hi, signed), lo, hi


def percentile_of(values: Any, v: Any) -> Any:
    """Percentile rank (0-100) of raw value(s) v within a map: the share of pixels <= v, for hover text."""
    flat = np.sort(_finite(_to_numpy(values)).ravel())
    if flat.size == 0:
        return 0.0 if np.ndim(v) == 0 else np.zeros(np.shape(v))
    ranks = 100.0 * np.searchsorted(flat, np.asarray(v, dtype=np.float32), side="right") / flat.size
    return float(ranks) if np.ndim(ranks) == 0 else ranks


# ---------------------------------------------------------------------------------------------------------
# Colour
# ---------------------------------------------------------------------------------------------------------


def plotly_colorscale(name: str) -> list[list]:
    """The plotly colour scale behind a colormap, as [[pos, "rgb(r, g, b)"], ...] for plotly figures."""
    _check(name, COLORMAPS, "colormap")
    scale = pcolors.get_colorscale(_PLOTLY_NAMES[name])
    # Plotly mixes hex and rgb() strings across scales; normalise to rgb() so callers see one format.
    return [[float(pos), _rgb_string(col)] for pos, col in scale]


def _rgb_string(col: str) -> str:
    if col.startswith("#"):
        r, g, b = pcolors.hex_to_rgb(col)
    else:
        r, g, b = (round(c) for c in pcolors.unlabel_rgb(col))
    return f"rgb({r}, {g}, {b})"


def _lut_positions(name: str) -> np.ndarray:
    """Where on the [0,1] plotly scale each LUT entry is sampled."""
    i = np.arange(LUT_SIZE, dtype=np.float64)
    if name in DIVERGING_COLORMAPS:
        # 256 entries have no middle one, so pin entry 128 to the scale's centre: v=-1 -> 0, v=0 -> exactly
        # 0.5 (white), v=+1 -> 1. The positive side has one step fewer, which is invisible.
        c = LUT_SIZE // 2
        return np.where(i <= c, 0.5 * i / c, 0.5 + 0.5 * (i - c) / (LUT_SIZE - 1 - c))
    return i / (LUT_SIZE - 1)


@cache
def colormap_lut(name: str) -> np.ndarray:
    """A read-only [256,3] uint8 lookup table sampled from the colormap's plotly scale (cached)."""
    _check(name, COLORMAPS, "colormap")
    samples = pcolors.sample_colorscale(plotly_colorscale(name), _lut_positions(name).tolist(), colortype="rgb")
    # Parse plotly's "rgb(r, g, b)" strings (0-255, possibly fractional) rather than trusting a tuple scale.
    rgb = np.asarray([pcolors.unlabel_rgb(c) for c in samples], dtype=np.float64)
    lut = np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
    lut.setflags(write=False)  # cached and shared: nobody may mutate it
    return lut


def is_diverging(colormap: str) -> bool:
    """True for colormaps centred at zero (they expect values in [-1,1])."""
    return _check(colormap, COLORMAPS, "colormap") in DIVERGING_COLORMAPS


def _lut_index(v: np.ndarray, diverging: bool) -> np.ndarray:
    if diverging:
        v = np.clip(v, -1, 1)
        c = LUT_SIZE // 2
        # Same piecewise mapping as _lut_positions, so 0 lands on the exact centre entry.
        idx = np.where(v <= 0, c + c * v, c + (LUT_SIZE - 1 - c) * v)
    else:
        idx = np.clip(v, 0, 1) * (LUT_SIZE - 1)
    return np.floor(idx + 0.5).astype(np.intp)


def colorize(normalized_map: Any, colormap: str) -> np.ndarray:
    """Colour a normalised map: [0,1] for sequential colormaps, [-1,1] for diverging ones. Returns uint8 [H,W,3]."""
    lut = colormap_lut(colormap)
    v = _as_map(normalized_map)
    return lut[_lut_index(v, colormap in DIVERGING_COLORMAPS)]


def suggested_colormap(sign: str) -> str:
    """Diverging for signed maps (zero must look neutral), a perceptual sequential map otherwise."""
    return "rdbu" if _check(sign, SIGNS, "sign") == "signed" else "inferno"


def _half_colorscale(name: str, n: int = 11) -> list[list]:
    """The upper (zero-to-positive) half of a diverging scale, rescaled to [0,1]."""
    pos = np.linspace(0.5, 1.0, n).tolist()
    cols = pcolors.sample_colorscale(plotly_colorscale(name), pos)
    return [[float(i / (n - 1)), _rgb_string(c)] for i, c in enumerate(cols)]


# ---------------------------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------------------------


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


def overlay(image: Any, heat_rgb: Any, alpha: float = 0.5) -> np.ndarray:
    """Blend a heatmap over an image: (1-alpha)*image + alpha*heat, heat resized bilinearly to the image."""
    alpha = float(alpha)
    if not 0.0 <= alpha <= 1.0:
        raise ParameterError(f"alpha must be in [0, 1], got {alpha!r}")
    img = _as_rgb_uint8(image)
    heat = _as_rgb_uint8(heat_rgb)
    h, w = img.shape[:2]
    if heat.shape[:2] != (h, w):
        heat = np.asarray(Image.fromarray(np.ascontiguousarray(heat)).resize((w, h), Image.BILINEAR), dtype=np.uint8)
    out = (1.0 - alpha) * img.astype(np.float32) + alpha * heat.astype(np.float32)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def coloured_gradient(attribution: Any, clip_percentile: float = DEFAULT_CLIP_PERCENTILE) -> np.ndarray:
    """Show a [3,H,W] gradient as an RGB image: 0.5 + g/(2s), s a percentile of |g|; zero is mid-grey."""
    p = _check_percentile(clip_percentile)
    a = _as_chw(attribution)
    if a.shape[0] != 3:
        raise ParameterError(f"coloured gradient needs 3 channels [3,H,W], got shape {tuple(a.shape)}")
    mag = np.abs(a)
    s = float(np.percentile(mag, p)) if a.size else 0.0
    if s <= 0:
        s = float(mag.max()) if a.size else 0.0
    v = np.full_like(a, 0.5) if s <= 0 else np.clip(0.5 + a / (2 * s), 0, 1)
    # floor(x+0.5) rather than rint so exact zero gives 128 regardless of round-half-even.
    return np.floor(v.transpose(1, 2, 0) * 255 + 0.5).astype(np.uint8)


def resize_map(m: Any, size: tuple[int, int]) -> np.ndarray:
    """Bilinearly resize a float map to size=(width, height), keeping float32 values (no uint8 quantisation)."""
    a = _as_map(m)
    w, h = (int(x) for x in size)
    if w <= 0 or h <= 0:
        raise ParameterError(f"size must be positive (width, height), got {size!r}")
    if a.shape == (h, w):
        return a.copy()
    # Mode "F" is inferred from the float32 dtype (Pillow 13 dropped fromarray's mode argument).
    return np.asarray(Image.fromarray(np.ascontiguousarray(a)).resize((w, h), Image.BILINEAR), dtype=np.float32)


def to_pil(array: Any) -> Image.Image:
    """PIL image from a uint8 [H,W,3] / [H,W] array; float arrays are taken as [0,1] and scaled."""
    a = _to_numpy(array)
    if a.dtype != np.uint8:
        a = np.floor(np.clip(_finite(a), 0, 1) * 255 + 0.5).astype(np.uint8)
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
        raise ParameterError(f"expected [H,W] or [H,W,3] array, got shape {tuple(a.shape)}")
    return Image.fromarray(np.ascontiguousarray(a))


# ---------------------------------------------------------------------------------------------------------
# One call for the UI and CLI
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RenderedMap:
    """A rendered attribution. `values` are raw (reduced + signed); `rgb` is what the PNG shows.

    `colorscale` is the plotly scale that, spread from `lo` to `hi`, reproduces `rgb`, so an interactive
    figure and the PNG agree.
    """

    values: np.ndarray
    normalized: np.ndarray
    rgb: np.ndarray
    lo: float
    hi: float
    colormap: str
    signed: bool
    colorscale: list


def render(
    attribution: Any,
    *,
    reduction: str = "max_abs",
    sign: str = "absolute",
    colormap: str | None = None,
    clip_percentile: float = DEFAULT_CLIP_PERCENTILE,
    fixed_range: tuple[float, float] | None = None,
) -> RenderedMap:
    """Reduce channels, apply the sign mode, normalise and colour an attribution.

    ``fixed_range=(lo, hi)`` fixes the colour scale in raw units (a scale linked across panels, from
    ``value_range(list_of_maps)``); by default each map gets its own robust range.
    """
    _check(reduction, REDUCTIONS, "reduction")
    _check(sign, SIGNS, "sign")
    cmap = suggested_colormap(sign) if colormap is None else _check(colormap, COLORMAPS, "colormap")
    signed = sign == "signed"
    values = apply_sign(reduce_channels(attribution, reduction), sign)
    if fixed_range is None:
        normalized, lo, hi = normalize(values, clip_percentile, signed=signed)
    else:
        lo, hi = (float(v) for v in fixed_range)
        normalized = scale_to_range(values, lo, hi, signed=signed)
    diverging = cmap in DIVERGING_COLORMAPS
    if signed and not diverging:
        # A sequential map shown signed spans -s..+s end to end, so shift [-1,1] onto [0,1].
        rgb = colorize((normalized + 1) / 2, cmap)
        scale = plotly_colorscale(cmap)
    elif not signed and diverging:
        # Magnitudes on a diverging map use its zero-to-positive half (white -> red), not blue for "small".
        rgb = colorize(normalized, cmap)
        scale = _half_colorscale(cmap)
    else:
        rgb = colorize(normalized, cmap)
        scale = plotly_colorscale(cmap)
    return RenderedMap(values, normalized, rgb, lo, hi, cmap, signed, scale)


__all__ = [
    "COLORMAPS",
    "DEFAULT_CLIP_PERCENTILE",
    "DIVERGING_COLORMAPS",
    "LUT_SIZE",
    "REDUCTIONS",
    "SEQUENTIAL_COLORMAPS",
    "SIGNS",
    "RenderedMap",
    "apply_sign",
    "colorize",
    "colormap_lut",
    "coloured_gradient",
    "is_diverging",
    "normalize",
    "overlay",
    "percentile_of",
    "plotly_colorscale",
    "reduce_channels",
    "scale_to_range",
    "value_range",
    "render",
    "resize_map",
    "to_pil",
]
