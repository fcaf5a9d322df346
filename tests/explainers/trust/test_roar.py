"""ROAR (Hooker et al. 2019, arXiv:1806.10758) on the digits: the removal step exactly, ROAR's claim for Grad-CAM
against the random control, and its refusals. The ``roar`` command is tests/explainers/cli/test_faithfulness.py's."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from explainers import ParameterError
from explainers.trust.roar import remove_top, roar


def test_remove_top_replaces_exactly_the_top_pixels():
    images = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).view(2, 1, 4, 4)
    maps = np.random.default_rng(0).random((2, 4, 4)).astype(np.float32)
    out = remove_top(images, maps, 0.25, torch.tensor([-1.0]).view(1, 1, 1, 1))
    for row in range(2):
        changed = (out[row, 0] != images[row, 0]).numpy()
        assert changed.sum() == 4 and (out[row, 0][torch.from_numpy(changed)] == -1).all()
        assert maps[row][changed].min() > maps[row][~changed].max()
    per_image = remove_top(images, maps, 0.5, images.mean(dim=(2, 3), keepdim=True))
    assert torch.equal(per_image[1][per_image[1] != images[1]].unique(), images[1].mean().view(1))


# Measured with the settings below (1 thread): the mean over k = 20 % and 30 % of random's retrained accuracy minus
# Grad-CAM's was 0.045, 0.047, 0.071, 0.056, 0.042, 0.038, 0.083 for seeds 0-6 (the smallest single gap 0.024);
# the bound asks for less than half the smallest mean.
ROAR_MIN_GAP = 0.02


@pytest.mark.slow
def test_removing_gradcams_top_pixels_costs_more_accuracy_than_removing_random_ones():
    """ROAR's claim: LeNet-5 retrained and tested on digits whose top-k % Grad-CAM pixels were removed loses more
    accuracy than retrained on digits with k % random pixels removed. It holds at the default sizes too (0.871 against
    0.918 at k = 30 %, see explainers.trust.roar), so this is the small end of a measured effect; swapped maps, or a
    removal that ignored them, would fail it. 4000 training and 1000 test digits, 4 epochs: about 30 s on one thread."""
    result = roar(("gradcam", "random"), (0.2, 0.3), n_train=4000, n_test=1000, epochs=4, batch_size=64)
    gradcam, random = np.array(result.accuracy["gradcam"]), np.array(result.accuracy["random"])
    gaps = (result.baseline - gradcam) - (result.baseline - random)
    print(f"\nROAR on the digits (k = 20 %, 30 %): baseline {result.baseline:.3f}, Grad-CAM {gradcam.round(3)}, "
          f"random {random.round(3)}; {result.elapsed_s:.1f} s")
    assert result.original_accuracy > 0.95 and result.baseline > 0.85  # the retrained models learned the digits
    assert (gaps > 0).all() and gaps.mean() >= ROAR_MIN_GAP
    assert [row["method"] for row in result.table()] == ["gradcam", "random"]
    assert set(result.table()[0]) == {"method", "k=0%", "k=20%", "k=30%"}
    json.dumps(result.to_dict(), allow_nan=False)


@pytest.mark.parametrize("options", [{"fractions": (0.0,)}, {"fill": "zero"}, {"methods": ()}])
def test_roar_refuses_bad_options(options):
    kwargs = {"methods": ("random",), "fractions": (0.5,), "n_train": 10, "n_test": 10, "epochs": 1, **options}
    with pytest.raises(ParameterError):
        roar(**kwargs)
