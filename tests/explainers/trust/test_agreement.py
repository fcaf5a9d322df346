"""Agreement metrics against definitions (and SciPy's Spearman, a test-only check)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats

from explainers.trust.agreement import agreement_matrix, spearman, top_iou, top_mask


def test_spearman_matches_scipy_with_ties():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 5, size=(12, 12)).astype(float)  # many ties
    b = a + rng.normal(scale=2.0, size=a.shape)
    assert spearman(a, b) == pytest.approx(scipy.stats.spearmanr(a.ravel(), b.ravel()).statistic, abs=1e-12)


def test_spearman_is_rank_based_and_bounded():
    x = np.arange(50.0)
    assert spearman(x, x**3) == pytest.approx(1.0)
    assert spearman(x, -np.exp(x / 10)) == pytest.approx(-1.0)
    assert spearman(x, np.zeros_like(x)) == 0.0


def test_top_iou():
    a = np.zeros((10, 10))
    a[:2] = 1  # top 20% = the first two rows
    b = np.zeros((10, 10))
    b[1:3] = 1
    assert top_mask(a, 0.2).sum() == 20
    assert top_iou(a, a, 0.2) == 1.0
    assert top_iou(a, b, 0.2) == pytest.approx(10 / 30)
    assert top_iou(a, -a + 5, 0.2) < 1.0


def test_matrix_is_symmetric_with_unit_diagonal():
    rng = np.random.default_rng(1)
    maps = {name: rng.random((8, 8)) for name in "abc"}
    names, rho, iou = agreement_matrix(maps)
    assert names == ["a", "b", "c"]
    assert np.allclose(rho, rho.T) and np.allclose(np.diag(rho), 1)
    assert np.allclose(iou, iou.T) and np.allclose(np.diag(iou), 1)
