"""The similarity metrics of the sanity checks against their oracles: Spearman and average ranks against SciPy,
SSIM and HOG against scikit-image; a constant map is undefined, never NaN."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import scipy.stats
from skimage.feature import hog as skimage_hog
from skimage.metrics import structural_similarity

from explainers.trust import similarity


def _maps(seed: int, shape=(48, 40)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.normal(size=shape)
    b = 0.6 * a + 0.8 * rng.normal(size=shape)
    return a, b


@pytest.mark.parametrize("absolute", [False, True])
def test_spearman_equals_scipy_with_and_without_ties(absolute):
    a, b = _maps(0)
    tied_a, tied_b = np.round(a * 2) / 2, np.round(b)  # many ties: average ranks must match
    for x, y in ((a, b), (tied_a, tied_b)):
        ours = similarity.spearman(x, y, absolute=absolute).value
        rx, ry = (np.abs(x), np.abs(y)) if absolute else (x, y)
        theirs = scipy.stats.spearmanr(rx.ravel(), ry.ravel())[0]
        assert ours == pytest.approx(theirs, abs=1e-12)
    assert similarity.spearman(a, -a).value == pytest.approx(-1.0)
    assert similarity.spearman(a, -a, absolute=True).value == pytest.approx(1.0)


def test_ranks_average_ties_like_scipy():
    values = np.array([3.0, 1.0, 3.0, 2.0, 3.0, 1.0])
    np.testing.assert_array_equal(similarity.rank(values), scipy.stats.rankdata(values))


def test_constant_map_is_undefined_never_nan():
    a, _ = _maps(1)
    for constant in (np.zeros_like(a), np.full_like(a, 3.5), 3.5 + 1e-9 * a):
        result = similarity.compare(a, constant)
        for metric in ("spearman_abs", "spearman", "hog"):
            assert result[metric].value is None and result[metric].reason == "undefined: constant map"
        assert result["ssim"].value is not None and math.isfinite(result["ssim"].value)
        encoded = json.dumps({k: v.to_dict() for k, v in result.items()}, allow_nan=False)
        assert "NaN" not in encoded


@pytest.mark.parametrize("shape", [(224, 224), (33, 47), (7, 9)])
def test_ssim_index_equals_scikit_image(shape):
    rng = np.random.default_rng(2)
    a = rng.random(shape)
    b = np.clip(a + 0.3 * rng.normal(size=shape), 0, 1)
    for data_range in (1.0, 2.5):
        ours = similarity.ssim_index(a, b, data_range=data_range)
        theirs = structural_similarity(a, b, data_range=data_range)  # float64 in, float64 out
        assert ours == pytest.approx(theirs, abs=1e-12)


def test_ssim_compares_percentile_scaled_absolute_maps():
    a, b = _maps(3)
    expected = structural_similarity(similarity.unit_scale(a), similarity.unit_scale(b), data_range=1.0)
    assert similarity.ssim(a, b).value == pytest.approx(expected, abs=1e-12)
    assert similarity.ssim(a, 1e-6 * a).value == pytest.approx(1.0)  # a scale change is not a change
    assert similarity.ssim(a[:5, :5], b[:5, :5]).value is None


@pytest.mark.parametrize("shape", [(224, 224), (32, 32), (50, 61)])
def test_hog_descriptor_equals_scikit_image(shape):
    image = np.random.default_rng(4).random(shape)
    image[10:20, 5:25] = 0.7  # flat patches: zero gradients, ties at the orientation bin edges
    ours = similarity.hog_descriptor(image)
    theirs = skimage_hog(image)
    assert ours.shape == theirs.shape
    # scikit-image sums each cell's magnitudes in a C float (float32); we sum in float64
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-6)


def test_hog_similarity_is_the_pearson_of_the_descriptors():
    a, b = _maps(5, (64, 64))
    first = skimage_hog(similarity.unit_scale(a))
    second = skimage_hog(similarity.unit_scale(b))
    expected = np.corrcoef(first, second)[0, 1]
    assert similarity.hog_similarity(a, b).value == pytest.approx(expected, abs=1e-5)
    assert similarity.hog_similarity(a, a).value == pytest.approx(1.0)
    assert similarity.hog_similarity(a[:20, :20], b[:20, :20]).value is None  # smaller than one block


def test_prepared_maps_give_the_functions_numbers():
    a, b = _maps(6, (40, 40))
    prepared = similarity.PreparedMap(a).compare(similarity.PreparedMap(b))
    for metric, value in similarity.compare(a, b).items():
        assert prepared[metric] == value
