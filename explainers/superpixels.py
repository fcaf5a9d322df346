"""Superpixels: the features LIME and KernelSHAP switch on and off; on text, words or tokens (``text_features``).

Each segmentation runs on the picture the user sees (pixels in [0, 1]), not on the model's normalised input,
and returns integer labels [N, H, W] numbered 0..K-1 per row. Rows are segmented one by one, so a row's
segments never depend on the other rows of its batch.

SLIC (Achanta et al. 2012), Felzenszwalb & Huttenlocher 2004 and quick shift (Vedaldi & Soatto 2008) come from
scikit-image; ``grid`` is a plain grid of near-square cells and needs nothing.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from .errors import SaliencyError
from .registry import Param

SEGMENTATIONS = ("slic", "felzenszwalb", "quickshift", "grid")
# SLIC's Gaussian pre-smoothing (width in pixels), as lime's tutorials use it: without it a noisy picture breaks
# into scattered fragments that the connectivity step merges back into one segment (a 64 px noise image gave 1
# segment of 50 asked, 24 with it); on photographs it changes little (the 224 px cat: 38 segments, 39 with it).
SLIC_SIGMA = 1.0
# Felzenszwalb's Gaussian pre-smoothing (scikit-image's default): fixed, the scale and min_size are the knobs.
FELZENSZWALB_SIGMA = 0.8
# A one-channel picture is stretched to [0, 100], the range of CIELAB lightness, so that SLIC's compactness and
# quick shift's max_dist mean on it what they mean on a colour picture (which scikit-image converts to CIELAB).
LIGHTNESS_RANGE = 100.0


def to_pixels(inputs: torch.Tensor, bundle: Any = None) -> torch.Tensor:
    """The picture behind ``inputs`` [N, C, H, W], in [0, 1]: the bundle's ``denormalize`` where there is one,
    else each row min-max scaled on its own (a constant row is 0.5)."""
    denormalize = getattr(bundle, "denormalize", None)
    inputs = inputs.detach().float()
    if denormalize is not None:
        return denormalize(inputs).clamp(0, 1)
    low = inputs.amin(dim=(1, 2, 3), keepdim=True)
    high = inputs.amax(dim=(1, 2, 3), keepdim=True)
    span = high - low
    return torch.where(span > 0, (inputs - low) / span.clamp_min(1e-30), torch.full_like(inputs, 0.5))


def grid_labels(hw: tuple[int, int], n_segments: int) -> np.ndarray:
    """[H, W] labels of a grid of about ``n_segments`` near-square cells (rows × cols, row-major)."""
    height, width = hw
    rows = min(height, max(1, round(math.sqrt(n_segments * height / width))))
    cols = min(width, max(1, round(n_segments / rows)))
    row_of = np.arange(height) * rows // height
    col_of = np.arange(width) * cols // width
    return (row_of[:, None] * cols + col_of[None, :]).astype(np.int64)


def _skimage_segmentation():
    # Deferred on purpose: scikit-image imports SciPy, which changes the warning filters and costs about half a
    # second; importing the backend must do neither, and the grid segmentation needs neither.
    try:
        from skimage import segmentation
    except ImportError:
        raise SaliencyError(
            "this segmentation needs scikit-image, which is not installed; install it (pip install scikit-image) "
            "or use segmentation='grid'"
        ) from None
    return segmentation


def _segment_one(picture: np.ndarray, kind: str, params: dict[str, Any]) -> np.ndarray:
    """Labels [H, W] of one picture [H, W, C] in [0, 1]."""
    if kind == "grid":
        return grid_labels(picture.shape[:2], int(params.get("n_segments", 50)))
    segmentation = _skimage_segmentation()
    colour = picture.shape[2] == 3
    if not colour:  # grey (or an unusual channel count): its lightness, on CIELAB's scale
        picture = picture.mean(axis=2, keepdims=True) * LIGHTNESS_RANGE
    if kind == "slic":
        return segmentation.slic(picture, n_segments=int(params.get("n_segments", 50)),
                                 compactness=float(params.get("compactness", 10.0)), sigma=SLIC_SIGMA, start_label=0,
                                 convert2lab=colour, channel_axis=-1)
    if kind == "felzenszwalb":
        image = picture if colour else picture[..., 0] / LIGHTNESS_RANGE
        return segmentation.felzenszwalb(image, scale=float(params.get("scale", 100.0)), sigma=FELZENSZWALB_SIGMA,
                                         min_size=int(params.get("min_size", 50)),
                                         channel_axis=-1 if colour else None)
    if kind == "quickshift":
        image = picture if colour else np.repeat(picture, 3, axis=2)  # quick shift wants three channels
        return segmentation.quickshift(image, kernel_size=float(params.get("kernel_size", 4.0)),
                                       max_dist=float(params.get("max_dist", 200.0)),
                                       ratio=float(params.get("ratio", 0.2)), convert2lab=colour)
    raise SaliencyError(f"segmentation must be one of {', '.join(SEGMENTATIONS)}; got {kind!r}")


def segment(inputs: torch.Tensor, kind: str = "slic", bundle: Any = None, **params: Any) -> torch.Tensor:
    """Superpixel labels [N, H, W] (int64, on ``inputs``' device) of each row of ``inputs`` [N, C, H, W], each
    row's labels numbered 0..K-1 in order of first appearance in the row-major scan.

    ``kind`` is one of ``SEGMENTATIONS``; ``params`` its parameters: ``n_segments`` (slic, grid),
    ``compactness`` (slic), ``scale`` and ``min_size`` (felzenszwalb), ``kernel_size``, ``max_dist`` and
    ``ratio`` (quickshift). The picture comes from ``bundle.denormalize`` or, without a bundle, a per-row
    min-max scaling (see :func:`to_pixels`).
    """
    if kind not in SEGMENTATIONS:
        raise SaliencyError(f"segmentation must be one of {', '.join(SEGMENTATIONS)}; got {kind!r}")
    if kind == "grid":  # no picture needed: the same grid for every row
        labels = grid_labels(tuple(inputs.shape[-2:]), int(params.get("n_segments", 50)))
        return torch.from_numpy(labels).to(inputs.device).expand(len(inputs), -1, -1).contiguous()
    pictures = to_pixels(inputs, bundle).permute(0, 2, 3, 1).cpu().double().numpy()
    rows = []
    for picture in pictures:
        raw = np.asarray(_segment_one(np.ascontiguousarray(picture), kind, params))
        # numbered by first appearance: the same segments get the same numbers whatever labels the library chose
        _, first, inverse = np.unique(raw.ravel(), return_index=True, return_inverse=True)
        order = np.argsort(np.argsort(first))
        rows.append(order[inverse].reshape(raw.shape).astype(np.int64))
    return torch.from_numpy(np.stack(rows)).to(inputs.device)


def segment_counts(labels: torch.Tensor) -> list[int]:
    """Segments per row of ``labels`` [N, H, W] numbered 0..K-1."""
    return [int(row.max()) + 1 for row in labels]


# The side the picture is resized to before it is segmented, and the value range it is scaled to: the scales and
# the minimum size were tuned there (the paper's code), so they mean the same at any input size.
SEGMENT_SIDE = 224
SEGMENT_RANGE = (-1.0, 1.0)


def felzenszwalb_masks(picture: np.ndarray, scales: tuple[int, ...] = (50, 100, 150, 250, 500, 1200),
                       min_size: int = 150, dilation_radius: int = 5) -> np.ndarray:
    """Candidate regions [M, H, W] (bool) of one picture [H, W, C]: every segment of a Felzenszwalb segmentation
    at each of ``scales`` (scale by scale, segments in label order), grown by a disk of ``dilation_radius``
    pixels so regions overlap their edges. The picture is min-max scaled to SEGMENT_RANGE and resized to
    SEGMENT_SIDE² (bicubic) for the segmentation, whose labels come back at the picture's size (nearest); a
    segment that the way back loses is dropped."""
    # deferred, as in _skimage_segmentation: scikit-image imports SciPy
    from skimage import morphology, segmentation, transform

    picture = np.asarray(picture, dtype=np.float64)
    height, width = picture.shape[:2]
    low, high = picture.min(), picture.max()
    scaled = (picture - low) / (high - low) if high > low else np.zeros_like(picture)
    scaled = scaled * (SEGMENT_RANGE[1] - SEGMENT_RANGE[0]) + SEGMENT_RANGE[0]
    resized = transform.resize(scaled, (SEGMENT_SIDE, SEGMENT_SIDE), order=3, mode="constant", preserve_range=True,
                               anti_aliasing=True)
    footprint = morphology.disk(dilation_radius) if dilation_radius else np.ones((1, 1), dtype=bool)
    offsets = np.argwhere(footprint) - dilation_radius if dilation_radius else np.zeros((1, 2), dtype=int)
    masks = []
    for scale in scales:
        labels = segmentation.felzenszwalb(resized, scale=scale, sigma=FELZENSZWALB_SIGMA, min_size=min_size,
                                           channel_axis=-1)
        labels = transform.resize(labels, (height, width), order=0, preserve_range=True, mode="constant",
                                  anti_aliasing=False).astype(np.int64)
        labels -= labels.min()
        grown = np.zeros((int(labels.max()) + 1, height, width), dtype=bool)
        # a dilation by the disk, every segment at once: pixel p joins the segment of each pixel p + d, d in the
        # disk (symmetric, so this is the usual dilation; past the border there is nothing to join)
        for dy, dx in offsets:
            rows = np.arange(max(0, -dy), min(height, height - dy))
            cols = np.arange(max(0, -dx), min(width, width - dx))
            grown[labels[np.ix_(rows + dy, cols + dx)], rows[:, None], cols[None, :]] = True
        masks.extend(mask for mask in grown if mask.any())
    return np.stack(masks) if masks else np.zeros((0, height, width), dtype=bool)


# ---------------------------------------------------------------------------------------------------------
# Text: the features of occlusion, LIME and KernelSHAP are words or tokens
# ---------------------------------------------------------------------------------------------------------

TEXT_UNITS = ("word", "token")  # what one feature is: a word (its subword tokens together) or each token alone
TEXT_UNIT = Param(
    "choice", "word", "What is switched off at once: a word (all its subword tokens together: no half-word is "
    "ever shown to the model) or each token alone. [CLS] and [SEP] are never switched off.", choices=TEXT_UNITS)


def text_features(bundle: Any, unit: str, rows: int) -> torch.Tensor:
    """Feature labels [rows, 1, L] of a text (``explainers.text.TokenBundle.regions``): 0..M−1 by word or by
    token, −1 on special tokens, which are never switched off; the same for every row (copies of one text)."""
    regions = getattr(bundle, "regions", None)
    if regions is None:
        raise SaliencyError("words and tokens are features of a text: explain a scored text (TextBundle.scored)")
    labels = regions(unit)
    return labels.reshape(1, 1, -1).expand(rows, -1, -1).contiguous()


def feature_sizes(labels: torch.Tensor, count: int) -> torch.Tensor:
    """float [count]: the tokens (or pixels) of each feature 0..count−1 in one row's ``labels`` (−1 left out)."""
    flat = labels.flatten()
    flat = flat[flat >= 0]
    return torch.zeros(count, dtype=torch.float64, device=labels.device).index_add_(
        0, flat, torch.ones_like(flat, dtype=torch.float64))


def paint_features(labels: torch.Tensor, weights: torch.Tensor, share: bool = False) -> torch.Tensor:
    """[T, H, W]: each position of one row's ``labels`` [H, W] holds its feature's weight (``weights`` [T, M]);
    −1 positions (special tokens) hold 0. ``share``: a feature's weight is split equally among its positions, so
    that the tokens of a word add up to the word's weight (text: sums over tokens, as the word grouping, the
    Shapley efficiency and the share of attribution on evidence words take them, stay right)."""
    count = weights.shape[1]
    weights = weights.to(labels.device)
    if share:
        weights = weights / feature_sizes(labels, count).clamp_min(1).to(weights.dtype)
    padded = torch.cat([weights, torch.zeros_like(weights[:, :1])], dim=1)  # column M: the special tokens
    return padded[:, torch.where(labels >= 0, labels, count)]
