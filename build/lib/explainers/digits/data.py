"""A procedural digit dataset: DejaVu glyphs under random affine maps, on noisy, cluttered grayscale canvases.

Every sample draws from its own random stream, seeded by ``(seed, index)``, so :func:`sample` gives sample ``i``
without generating the ones before it and :func:`make_digits` is just the stack of samples ``0 .. n-1``. Each sample
records the digit's ink mask and the bounding box of that ink: ground truth for checking where a saliency map points,
as in the pointing game (Zhang et al. 2016, arXiv:1608.00507) and its energy variant, the share of a map's mass
inside the box (Wang et al. 2020, arXiv:1910.01279). :func:`gallery` picks samples for the dashboard's picker.

Identical arrays for a seed need the same Pillow/FreeType and the same DejaVu fonts (:data:`FONT_DIR`, Debian's
fonts-dejavu-core).
"""

from __future__ import annotations

import math
import multiprocessing
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
# The six faces of Debian's fonts-dejavu-core, so any machine with that one package makes the same set. Obliques and
# condensed faces (fonts-dejavu-extra) would add little: the random shear and aspect of each sample cover them.
FONTS = (
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSansMono.ttf",
    "DejaVuSansMono-Bold.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSerif-Bold.ttf",
)
STROKE_WIDTHS = (0, 1, 2, 3)  # in template pixels (font size 64); about 0 to 1 canvas pixel of extra weight

# Pixel statistics of make_digits(20000, seed=0) scaled to [0, 1]; fixed so every model sees the same transform.
MEAN = 0.2818
STD = 0.2212

SUPERSAMPLE = 2  # draw at twice the size, then average 2x2 blocks: antialiased strokes without blurring
INK_THRESHOLD = 0.5  # a pixel belongs to the digit's mask when its ink coverage is at least this


@dataclass
class DigitSample:
    """One sample: uint8 image [H, W], label, ink box (x0, y0, x1, y1) half-open, ink mask bool [H, W]."""

    image: np.ndarray
    label: int
    box: tuple[int, int, int, int]
    mask: np.ndarray


@dataclass
class DigitSet:
    """A stack of samples: images uint8 [n, H, W], labels int64 [n], boxes int64 [n, 4], masks bool [n, H, W].

    A box is ``(x0, y0, x1, y1)`` with ``x1``, ``y1`` exclusive, so ``mask[i, y0:y1, x0:x1]`` holds all of the ink.
    """

    images: np.ndarray
    labels: np.ndarray
    boxes: np.ndarray
    masks: np.ndarray
    seed: int

    def __len__(self) -> int:
        return len(self.labels)


@cache
def _font(name: str, size: int) -> ImageFont.FreeTypeFont:
    path = FONT_DIR / name
    if not path.exists():
        raise FileNotFoundError(f"digit font {path} not found; install the DejaVu fonts (Debian: fonts-dejavu-core)")
    return ImageFont.truetype(str(path), size)


@cache
def _template(font: str, digit: int, stroke: int, size: int) -> np.ndarray:
    """A glyph's coverage in [0, 1], cropped to its ink, rendered once per (font, digit, stroke, size)."""
    face = _font(font, size)
    pad = size // 4 + stroke
    canvas = Image.new("L", (size * 2, size * 2), 0)
    ImageDraw.Draw(canvas).text((pad, pad), str(digit), fill=255, font=face, stroke_width=stroke, stroke_fill=255)
    array = np.asarray(canvas, dtype=np.float32) / 255.0
    rows = np.flatnonzero(array.max(axis=1) > 0)
    cols = np.flatnonzero(array.max(axis=0) > 0)
    return np.ascontiguousarray(array[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1])


@cache
def _template_image(font: str, digit: int, stroke: int, size: int) -> Image.Image:
    # A 1-pixel empty border keeps bilinear sampling from smearing the crop's edge pixels outwards.
    template = np.pad(_template(font, digit, stroke, size), 1)
    return Image.fromarray(template.astype(np.float32))


def _rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(index)]))


def _digit_layer(rng: np.random.Generator, digit: int, canvas: int) -> np.ndarray:
    """The digit's coverage on the supersampled canvas, float32 in [0, 1]."""
    big = canvas * SUPERSAMPLE
    font = FONTS[rng.integers(len(FONTS))]
    stroke = int(STROKE_WIDTHS[rng.integers(len(STROKE_WIDTHS))])
    template_size = max(64, 2 * big)
    glyph = _template_image(font, digit, stroke, template_size)
    width, height = glyph.size
    cx, cy = width / 2.0, height / 2.0

    # Glyph height 45-80% of the canvas; rotation +-15 degrees; shear and aspect jitter vary the letterform.
    target = rng.uniform(0.45, 0.80) * big
    angle = math.radians(rng.uniform(-15.0, 15.0))
    shear = rng.uniform(-0.25, 0.25)
    aspect = rng.uniform(0.8, 1.2)
    scale = target / (height - 2)
    cos, sin = math.cos(angle), math.sin(angle)
    # forward = scale * rotation @ shear @ diag(aspect, 1): template offsets from the centre -> canvas offsets.
    a, b = aspect * scale * cos, scale * (shear * cos - sin)
    c, d = aspect * scale * sin, scale * (shear * sin + cos)
    corners = np.array([[-cx, -cy], [cx, -cy], [-cx, cy], [cx, cy]])
    mapped = corners @ np.array([[a, c], [b, d]])
    lo, hi = mapped.min(axis=0), mapped.max(axis=0)
    extent = hi - lo
    margin = SUPERSAMPLE
    shrink = min(1.0, (big - 2 * margin) / max(extent.max(), 1e-6))
    if shrink < 1.0:  # a wide, rotated glyph that would not fit: scale the whole map down
        a, b, c, d = a * shrink, b * shrink, c * shrink, d * shrink
        lo, hi = lo * shrink, hi * shrink
    # Rounding may leave a fitted glyph a hair too wide; the max() keeps the range of positions non-negative.
    slack = np.maximum(0.0, (big - 2 * margin) - (hi - lo))
    tx, ty = margin - lo + rng.random(2) * slack

    # PIL wants the inverse map: output pixel -> template pixel.
    det = a * d - b * c
    ia, ib, ic, id_ = d / det, -b / det, -c / det, a / det
    coeffs = (ia, ib, cx - ia * tx - ib * ty, ic, id_, cy - ic * tx - id_ * ty)
    out = glyph.transform((big, big), Image.Transform.AFFINE, coeffs, resample=Image.Resampling.BILINEAR)
    return np.clip(np.asarray(out, dtype=np.float32), 0.0, 1.0)


def _clutter_item(rng: np.random.Generator, big: int) -> Image.Image:
    """One non-digit mark on a blank supersampled layer: a short line, a small blob or a short arc."""
    layer = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(layer)
    unit = big / 32  # sizes below are in pixels of a 32-pixel canvas
    kind = rng.integers(3)
    x, y = rng.uniform(0, big, size=2)
    if kind == 0:
        length = rng.uniform(3, 12) * unit
        theta = rng.uniform(0, math.pi)
        dx, dy = length * math.cos(theta) / 2, length * math.sin(theta) / 2
        draw.line([(x - dx, y - dy), (x + dx, y + dy)], fill=255, width=round(int(rng.integers(1, 3)) * unit))
    elif kind == 1:
        rx, ry = rng.uniform(0.6, 2.5, size=2) * unit
        draw.ellipse([x - rx, y - ry, x + rx, y + ry], fill=255)
    else:
        radius = rng.uniform(2.0, 6.0) * unit
        start = rng.uniform(0, 360)
        extent = rng.uniform(40, 160)  # well short of a closed loop, so it never reads as a 0
        draw.arc(
            [x - radius, y - radius, x + radius, y + radius],
            start,
            start + extent,
            fill=255,
            width=round(int(rng.integers(1, 3)) * unit),
        )
    return layer


def _grow(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation by a (2 radius + 1) square, done as two separable running maxima."""
    grown = mask.copy()
    for shift in range(1, radius + 1):
        grown[shift:] |= mask[:-shift]
        grown[:-shift] |= mask[shift:]
    rows = grown.copy()
    for shift in range(1, radius + 1):
        grown[:, shift:] |= rows[:, :-shift]
        grown[:, :-shift] |= rows[:, shift:]
    return grown


def _clutter_layer(rng: np.random.Generator, digit: np.ndarray, big: int) -> np.ndarray:
    """Coverage of 0-6 clutter marks, each kept only if at most 20% of it overlaps the (slightly grown) digit."""
    layer = np.zeros((big, big), dtype=np.float32)
    count = int(rng.choice(7, p=[0.08, 0.12, 0.2, 0.2, 0.16, 0.14, 0.1]))
    if count:
        zone = _grow(digit > 0.05, SUPERSAMPLE)
    for _ in range(count):
        for _attempt in range(4):
            item = np.asarray(_clutter_item(rng, big), dtype=np.float32) / 255.0
            ink = item > 0.5
            if ink.sum() and (ink & zone).sum() <= 0.2 * ink.sum():
                layer = np.maximum(layer, item * rng.uniform(0.6, 1.0))
                break
    return layer


def _downsample(layer: np.ndarray, canvas: int) -> np.ndarray:
    return layer.reshape(canvas, SUPERSAMPLE, canvas, SUPERSAMPLE).mean(axis=(1, 3))


def sample(index: int, seed: int = 0, canvas: int = 32) -> DigitSample:
    """Sample ``index`` of the set with this seed; the same (index, seed, canvas) always gives the same arrays."""
    if canvas < 16:
        raise ValueError(f"canvas must be at least 16 pixels, got {canvas}")
    rng = _rng(seed, index)
    big = canvas * SUPERSAMPLE
    label = int(rng.integers(10))
    digit_big = _digit_layer(rng, label, canvas)
    clutter = _downsample(_clutter_layer(rng, digit_big, big), canvas)
    digit = _downsample(digit_big, canvas)

    # Random contrast: dark background, brighter ink; clutter as bright as the ink at times, so brightness alone
    # never tells digit from clutter.
    background = rng.uniform(0, 100)
    ink = rng.uniform(background + 60, 255)
    mark = rng.uniform(background + 0.5 * (ink - background), ink)
    gradient = rng.uniform(-20, 20, size=2)  # a faint illumination slope across the canvas
    ramp = np.linspace(-0.5, 0.5, canvas, dtype=np.float32)
    image = background + gradient[0] * ramp[None, :] + gradient[1] * ramp[:, None]
    image = image + (mark - image) * clutter
    image = image + (ink - image) * digit
    image = image + rng.normal(0.0, rng.uniform(3, 28), size=image.shape)
    image = np.clip(np.rint(image), 0, 255).astype(np.uint8)

    threshold = min(INK_THRESHOLD, 0.5 * float(digit.max()))  # thin serif strokes may never reach full coverage
    mask = digit >= threshold
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    box = (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)
    return DigitSample(image=image, label=label, box=box, mask=mask)


def _stack(samples: list[DigitSample], canvas: int, seed: int) -> DigitSet:
    n = len(samples)
    images = np.empty((n, canvas, canvas), dtype=np.uint8)
    masks = np.empty((n, canvas, canvas), dtype=bool)
    labels = np.empty(n, dtype=np.int64)
    boxes = np.empty((n, 4), dtype=np.int64)
    for i, s in enumerate(samples):
        images[i], masks[i], labels[i], boxes[i] = s.image, s.mask, s.label, s.box
    return DigitSet(images=images, labels=labels, boxes=boxes, masks=masks, seed=seed)


def _chunk(args: tuple[int, int, int, int]) -> DigitSet:
    start, stop, seed, canvas = args
    return _stack([sample(i, seed, canvas) for i in range(start, stop)], canvas, seed)


def make_digits(n: int, seed: int = 0, canvas: int = 32, start: int = 0, workers: int = 1) -> DigitSet:
    """Samples ``start .. start + n - 1`` of the set with this seed, stacked.

    ``workers > 1`` draws chunks in forked processes (about 1 ms per sample each); each sample has its own random
    stream, so the arrays are the same for any number of workers. Without ``fork`` (not Linux) it runs serially.
    """

    if n < 0:
        raise ValueError(f"n must be a count of samples (>= 0), got {n}")
    if workers <= 1 or n < 2 * workers or "fork" not in multiprocessing.get_all_start_methods():
        return _chunk((start, start + n, seed, canvas))
    # Fork, not spawn: a spawned child would re-import torch and the whole package (seconds) before drawing.
    # The children only run NumPy and Pillow, so the parent's torch threads do not matter to them.
    bounds = np.linspace(start, start + n, 4 * workers + 1).round().astype(int)
    jobs = [(int(a), int(b), seed, canvas) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        parts = pool.map(_chunk, jobs)
    return DigitSet(
        images=np.concatenate([p.images for p in parts]),
        labels=np.concatenate([p.labels for p in parts]),
        boxes=np.concatenate([p.boxes for p in parts]),
        masks=np.concatenate([p.masks for p in parts]),
        seed=seed,
    )


class GalleryItem(NamedTuple):
    """One gallery sample: file name, RGB picture, true label, ink box (x0, y0, x1, y1) half-open, in pixels."""

    name: str
    image: Image.Image
    label: int
    box: tuple[int, int, int, int]


GALLERY_SEED = 20_000  # apart from the training (0) and held-out (10 000) seeds of ``train``


def gallery(n: int = 12, seed: int = GALLERY_SEED, canvas: int = 32) -> list[GalleryItem]:
    """``n`` samples for a sample picker, labels cycling 0, 1, ..., 9, 0, ...: the same list for the same seed.

    Item ``i`` is the first sample of the set (after the previous item's) whose label is ``i % 10``, as an RGB image
    (gray in all three channels) named ``digit_<i>_label<label>.png``; its ``box`` is the ground-truth ink box.
    """
    items: list[GalleryItem] = []
    index = 0
    for i in range(n):
        wanted = i % 10
        while (drawn := sample(index, seed, canvas)).label != wanted:
            index += 1
        index += 1
        items.append(
            GalleryItem(
                name=f"digit_{i:02d}_label{wanted}.png",
                image=Image.fromarray(drawn.image).convert("RGB"),
                label=wanted,
                box=drawn.box,
            )
        )
    return items


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 images [n, H, W] (or one [H, W]) -> normalised float32 tensor [n, 1, H, W]."""
    array = np.asarray(images)
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3:
        raise ValueError(f"expected images of shape [n, H, W] or [H, W], got {array.shape}")
    return normalize(torch.from_numpy(array.astype(np.float32) / 255.0)[:, None])


def normalize(pixels: torch.Tensor) -> torch.Tensor:
    """Pixels in [0, 1], shape [n, 1, H, W] -> the model's input space."""
    return (pixels - MEAN) / STD


def denormalize(inputs: torch.Tensor) -> torch.Tensor:
    """The model's input space -> pixels in [0, 1]."""
    return inputs * STD + MEAN
