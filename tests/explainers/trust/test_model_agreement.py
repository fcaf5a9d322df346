"""Agreement of maps from models with different inputs (issue 18's two-model grid): one grid of the image, pixels
both models saw, and a difference that does not depend on either model's raw units."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from explainers.render import View
from explainers.trust.agreement import common_grid, model_agreement, model_difference, pair_agreement


def test_common_grid_places_each_map_on_its_box_of_the_image():
    rng = np.random.default_rng(0)
    small, large = rng.random((8, 8)), rng.random((32, 32))
    # a 200 x 100 image; the second model saw only its centre square (a centre crop)
    grid = common_grid([small, large], [None, (50, 0, 150, 100)], (200, 100))
    assert [g.shape for g in grid] == [(16, 32), (16, 32)]  # the image's aspect, 32 px (largest map) long
    assert np.isfinite(grid[0]).all()
    seen = np.isfinite(grid[1])
    assert seen[:, 8:24].all() and not seen[:, :8].any() and not seen[:, 24:].any()


def test_pair_agreement_ignores_what_one_model_did_not_see():
    rng = np.random.default_rng(1)
    a = rng.random((20, 20))
    b = a.copy()
    b[:, :5] = np.nan  # unseen by the second model
    a[:, :5] = rng.random((20, 5))  # whatever the first shows there cannot count
    rho, iou = pair_agreement(a, b, 0.1)
    assert rho == pytest.approx(1.0) and iou == pytest.approx(1.0)
    c = rng.random((20, 20))
    rho, _ = pair_agreement(a, c, 0.1)
    assert rho == pytest.approx(spearmanr(a.ravel(), c.ravel()).statistic, abs=1e-9)


def test_model_agreement_of_a_map_and_its_upsampled_copy_is_high_and_of_noise_low():
    rng = np.random.default_rng(2)
    coarse = np.kron(rng.random((4, 4)), np.ones((8, 8)))[None]  # [1, 32, 32], blocky
    fine = np.kron(coarse[0], np.ones((7, 7)))[None]  # the same map at 224 px
    noise = rng.random((1, 224, 224))
    pairs = model_agreement([fine, coarse, noise], [None, None, None], (300, 300))
    assert set(pairs) == {(0, 1), (0, 2), (1, 2)}
    assert pairs[(0, 1)][0] > 0.9 and pairs[(0, 1)][1] > 0.7
    assert abs(pairs[(0, 2)][0]) < 0.1 and pairs[(0, 2)][1] < 0.2


def test_model_difference_does_not_depend_on_raw_units():
    rng = np.random.default_rng(3)
    first = rng.random((3, 16, 16)).astype(np.float32)
    second = 1000.0 * first  # another model whose logits are 1000 times larger: the same map
    for view in (View(), View(sign="signed")):
        delta = model_difference(first, second, [None, None], (16, 16), view)
        assert delta.shape == (1, 16, 16)
        np.testing.assert_allclose(delta, 0.0, atol=1e-5)
    other = rng.random((3, 16, 16)).astype(np.float32)
    assert np.abs(model_difference(first, other, [None, None], (16, 16), View())).max() > 0.1


def test_a_constant_map_has_no_agreement_not_a_perfect_one():
    """Two constant maps (e.g. occlusion with a window as large as a small model's input) rank nothing: their
    "top 10%" would be the same pixels picked by position, an IoU of 1 that means nothing."""
    flat, other = np.full((10, 10), 3.0), np.random.default_rng(4).random((10, 10))
    for a, b in ((flat, flat), (flat, other), (other, flat)):
        rho, iou = pair_agreement(a, b)
        assert np.isnan(rho) and np.isnan(iou)
