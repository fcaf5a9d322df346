"""Superpixels (explainers.superpixels): labels numbered 0..K-1 per row, computed on the picture, row by row."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from explainers import SaliencyError
from explainers.superpixels import SEGMENTATIONS, grid_labels, segment, segment_counts, to_pixels

from .helpers import sample_pixels, tiny_bundle

PARAMS = {"slic": {"n_segments": 20}, "felzenszwalb": {"scale": 50, "min_size": 10},
          "quickshift": {"kernel_size": 2, "max_dist": 20}, "grid": {"n_segments": 20}}


@pytest.fixture(scope="module")
def pixels():
    """Two real pictures in [0, 1], 40 px: the cat and the cat mirrored and darkened."""
    cat = sample_pixels("cat.png", 40)
    return torch.cat([cat, cat.flip(-1) * 0.6])


@pytest.mark.parametrize("kind", SEGMENTATIONS)
def test_labels_are_numbered_from_zero_in_order_of_appearance_every_label_used(pixels, kind):
    labels = segment(pixels, kind, **PARAMS[kind])
    assert labels.shape == (2, 40, 40) and labels.dtype == torch.int64
    for row, count in zip(labels, segment_counts(labels)):
        assert torch.equal(row.unique(), torch.arange(count))
        first = [int(v) for v in dict.fromkeys(row.flatten().tolist())]  # labels in row-major order of appearance
        assert first == list(range(count))
    assert min(segment_counts(labels)) >= 2


@pytest.mark.parametrize("kind", SEGMENTATIONS)
def test_a_row_is_segmented_alone_as_in_its_batch(pixels, kind):
    together = segment(pixels, kind, **PARAMS[kind])
    for row in range(2):
        assert torch.equal(segment(pixels[row : row + 1], kind, **PARAMS[kind])[0], together[row])


@pytest.mark.parametrize("kind", ["slic", "felzenszwalb", "quickshift"])
def test_segments_follow_the_picture_not_the_normalisation(pixels, kind):
    """With a bundle the picture is recovered by its denormalize: the same segments as on the pixels themselves.
    Two flat halves of different colour are never joined in one segment (but for the edge's own pixels)."""
    bundle = tiny_bundle()
    pixels = to_pixels(pixels)  # each row stretched to [0, 1]: what a bare module's min-max scaling leaves alone
    on_pixels = segment(pixels, kind, **PARAMS[kind])
    normalised = bundle.normalize(pixels)
    assert torch.equal(segment(normalised, kind, bundle, **PARAMS[kind]), on_pixels)

    halves = torch.zeros(1, 3, 24, 24)
    halves[..., :12] = torch.tensor([0.9, 0.2, 0.1]).view(1, 3, 1, 1)
    halves[..., 12:] = torch.tensor([0.1, 0.3, 0.8]).view(1, 3, 1, 1)
    labels = segment(bundle.normalize(halves), kind, bundle, **PARAMS[kind])[0]
    # one pixel of slack each side: SLIC's pre-smoothing (SLIC_SIGMA) blurs the edge by about that much
    assert not set(labels[:, :11].unique().tolist()) & set(labels[:, 13:].unique().tolist())


def test_without_a_bundle_each_row_is_min_max_scaled_on_its_own():
    spread = torch.tensor([1.0, 5.0, 0.1]).view(3, 1, 1, 1)
    x = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * spread
    x[2] = 4.0  # a constant row
    picture = to_pixels(x)
    for row in range(2):
        assert float(picture[row].min()) == 0.0 and float(picture[row].max()) == pytest.approx(1.0)
    assert torch.all(picture[2] == 0.5)
    torch.testing.assert_close(to_pixels(x[1:2])[0], picture[1])  # its own range, not the batch's


def test_the_grid_has_near_square_cells_close_to_the_count_asked():
    for (height, width), asked in [((224, 224), 50), ((64, 128), 50), ((10, 30), 3), ((5, 5), 100), ((7, 9), 1)]:
        labels = grid_labels((height, width), asked)
        count = int(labels.max()) + 1
        assert np.array_equal(np.unique(labels), np.arange(count))
        assert count <= height * width and (asked > height * width or abs(count - asked) <= max(2, 0.2 * asked))
        rows = len(np.unique(labels[:, 0]))
        cols = count // rows
        assert 0.5 <= (height / rows) / (width / cols) <= 2  # near-square cells
    assert int(grid_labels((64, 128), 50).max()) + 1 == 50  # 5 × 10


@pytest.mark.parametrize("kind", SEGMENTATIONS)
def test_a_grey_picture_is_segmented_too(kind):
    grey = sample_pixels("cat.png", 32).mean(dim=1, keepdim=True)
    labels = segment(grey, kind, **PARAMS[kind])
    assert labels.shape == (1, 32, 32) and segment_counts(labels)[0] >= 1


def test_an_unknown_segmentation_is_a_clear_error(pixels):
    with pytest.raises(SaliencyError, match="segmentation must be one of slic, felzenszwalb, quickshift, grid; "
                                            "got 'watershed'"):
        segment(pixels, "watershed")
