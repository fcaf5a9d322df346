"""RISE (Petsiuk, Das & Saenko 2018): seeding, batching, memory and where it puts the mass on a known model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import explainers.methods.rise  # noqa: F401  (registers "rise" until the package imports it)
from explainers import METHODS, ParameterError, explain
from explainers.methods.rise import DRAW_CHUNK

from ..helpers import MaxBatch, assert_cancel_stops_cleanly, hook_counts, small_convnet

BOX = (slice(8, 16), slice(8, 24))  # 8 x 16 of 32 x 32: 12.5% of the image


class BoxModel(nn.Module):
    """Class 0 scores 10 x the mean of the input inside BOX; nothing outside it matters."""

    def forward(self, x):
        score = 10 * x[:, :, BOX[0], BOX[1]].mean(dim=(1, 2, 3))
        return torch.stack([score, torch.zeros_like(score)], dim=1)


@pytest.fixture
def net():
    return small_convnet()


@pytest.fixture
def images():
    torch.manual_seed(5)
    return torch.randn(2, 3, 16, 16)


def test_metadata_and_cost():
    info = METHODS["rise"]
    assert info.attribution_channels == 1 and info.family == "Perturbation"
    assert info.passes({}, (224, 224)) == (2001, 0)
    assert info.passes({"n_masks": 50}, (64, 32)) == (51, 0)
    with pytest.raises(ParameterError, match="p"):
        info.validate({"p": 0.0})


def test_same_seed_same_map_other_seed_other_map(net, images):
    first = explain(net, images, "rise", target=0, seed=7, n_masks=40, grid=4).attribution
    again = explain(net, images, "rise", target=0, seed=7, n_masks=40, grid=4).attribution
    other = explain(net, images, "rise", target=0, seed=8, n_masks=40, grid=4).attribution
    assert torch.equal(first, again)
    assert not torch.allclose(first, other)


def test_batch_size_does_not_change_the_map(net, images):
    # more masks than one draw chunk, so batches straddle a chunk boundary
    n_masks = DRAW_CHUNK + 37
    maps = [
        explain(net, images, "rise", target=1, seed=3, n_masks=n_masks, grid=5, batch_size=b).attribution
        for b in (1, 7, 64)
    ]
    for other in maps[1:]:
        torch.testing.assert_close(other, maps[0], rtol=1e-6, atol=1e-6 * float(maps[0].abs().max()))


def test_mass_falls_in_the_region_the_model_reads():
    """RISE's map is E[score | pixel kept]: the mean score everywhere plus what the pixel adds. With the
    constant removed (its mean), most of the positive mass must sit in the box, and the peak inside it."""
    x = torch.ones(1, 3, 32, 32)
    attribution = explain(BoxModel(), x, "rise", target=0, seed=0, n_masks=2000, grid=8, batch_size=64).attribution
    saliency = attribution[0, 0]
    inside = torch.zeros(32, 32, dtype=torch.bool)
    inside[BOX] = True
    positive = (saliency - saliency.mean()).clamp(min=0)
    assert positive[inside].sum() / positive.sum() >= 0.6  # the box is 12.5% of the area
    peak = int(saliency.argmax())
    assert inside[peak // 32, peak % 32]
    assert saliency[inside].mean() > saliency[~inside].mean() + 0.5


def test_keeping_everything_gives_the_clean_score_everywhere(net, images):
    """p = 1 keeps every cell, so every mask is all ones and the map is f(x) at every pixel."""
    result = explain(net, images, "rise", target=2, n_masks=5, p=1.0)
    clean = result.logits[:, 2].view(-1, 1, 1, 1).expand(-1, 1, 16, 16)
    torch.testing.assert_close(result.attribution, clean, rtol=1e-5, atol=1e-5)


def test_memory_is_bounded_by_batch_size_not_n_masks(net, images):
    counted = MaxBatch(net)
    explain(counted, images, "rise", target=0, n_masks=300, grid=3, batch_size=8)
    assert counted.largest <= 8
    assert counted.calls >= 2 * 300 // 8


def test_progress_and_cancel_leave_the_model_untouched(net, images):
    seen = []
    explain(net, images, "rise", target=0, n_masks=20, batch_size=6, progress=lambda d, t: seen.append((d, t)))
    assert seen[-1] == (2 * 21, 2 * 21)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen) and len(seen) >= 2 * 20 // 6

    assert_cancel_stops_cleanly(net, images, "rise", n_masks=100, batch_size=4)


def test_bare_module_odd_size_and_objective(net):
    torch.manual_seed(6)
    x = torch.randn(3, 3, 20, 27)  # cells of ceil(20/6) x ceil(27/6) pixels
    result = explain(net, x, "rise", target="top1", n_masks=30, grid=6, p=0.3, seed=1)
    assert result.attribution.shape == (3, 1, 20, 27)
    assert torch.isfinite(result.attribution).all()
    assert not result.attribution.is_inference()
    assert hook_counts(net) == 0
    probabilities = explain(net, x, "rise", target="top1", n_masks=30, grid=6, p=0.3, seed=1,
                            objective="probability").attribution
    assert 0 <= float(probabilities.min()) and float(probabilities.max()) <= 1 / 0.3
