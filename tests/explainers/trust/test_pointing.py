"""The pointing games (Zhang et al. 2016, arXiv:1608.00507) and the energy pointing game (Wang et al. 2020,
arXiv:1910.01279): their rules on hand-made maps, and Grad-CAM, occlusion and the random control on 200 digits."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import explainers
from explainers.digits.data import make_digits
from explainers.trust.benchmark import DIGITS_BATCH_SIZE, digits_inputs, saliency_maps
from explainers.trust.pointing import pointing_game, region_masks


def test_pointing_game_rules():
    box = (2, 1, 5, 4)  # x0, y0, x1, y1: columns 2-4, rows 1-3
    inside, outside = np.zeros((8, 8)), np.zeros((8, 8))
    inside[2, 3], outside[6, 6] = 1.0, 1.0
    near = np.zeros((8, 8))
    near[5, 3] = 1.0  # two rows below the box
    result = pointing_game(np.stack([inside, outside, near]), box)
    assert result.hit.tolist() == [1.0, 0.0, 0.0]
    assert pointing_game(near, box, tolerance=2).hit.tolist() == [1.0]
    assert result.point.tolist() == [[2, 3], [6, 6], [5, 3]]
    np.testing.assert_allclose(result.area, 9 / 64)
    np.testing.assert_allclose(result.energy, [1.0, 0.0, 0.0])
    # ties: the share of maximal pixels inside; a constant map scores the area share on both games
    constant = pointing_game(np.ones((8, 8)), box)
    np.testing.assert_allclose([constant.hit[0], constant.energy[0]], [9 / 64, 9 / 64])
    ramp = np.arange(64, dtype=np.float64).reshape(8, 8)
    mask = region_masks(box, 1, (8, 8))[0]
    np.testing.assert_allclose(pointing_game(ramp, box).energy[0], ramp[mask].sum() / ramp.sum())
    # negative values carry no energy; a box and its mask give the same answer
    signed = ramp - 40
    np.testing.assert_allclose(pointing_game(signed, mask).energy, pointing_game(signed, box).energy)
    np.testing.assert_allclose(pointing_game(signed, box).energy[0],
                               np.maximum(signed, 0)[mask].sum() / np.maximum(signed, 0).sum())
    assert pointing_game(np.zeros((8, 8)), box).energy[0] == pytest.approx(9 / 64)
    json.dumps(result.to_dict(), allow_nan=False)


def test_pointing_game_on_200_digits():
    """Zhang et al.'s pointing game on 200 held-out digits with their ink boxes: Grad-CAM and occlusion point into
    the box at least 80% of the time; the random control (one independent map per image) scores near the chance
    level, the boxes' mean area share (within 4 binomial standard errors)."""
    bundle = explainers.load_model("lenet_digits")
    data = make_digits(200, seed=10_000)
    inputs = digits_inputs(data.images, bundle)
    maps, seconds, params = saliency_maps(bundle, inputs, ("gradcam", "occlusion", "random"),
                                          torch.from_numpy(data.labels), seed_per_image=True,
                                          batch_size=DIGITS_BATCH_SIZE)
    scores = {m: pointing_game(maps[m], data.boxes) for m in maps}
    chance = scores["random"].chance
    print("\npointing game on 200 digits (boxes): " + ", ".join(
        f"{m} {s.accuracy:.3f} (energy {s.energy_share:.3f}, {seconds[m]:.2f} s)" for m, s in scores.items())
        + f"; chance {chance:.3f}; occlusion {params['occlusion']}")
    assert scores["gradcam"].accuracy >= 0.8
    assert scores["occlusion"].accuracy >= 0.8
    assert abs(scores["random"].accuracy - chance) <= 4 * math.sqrt(chance * (1 - chance) / 200)
    assert abs(scores["random"].energy_share - chance) <= 0.02
