"""Occlusion (Zeiler & Fergus 2014): Captum as an oracle where its windows tile the image, properties elsewhere."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from torch import nn

import explainers.methods.occlusion  # noqa: F401  (registers "occlusion" until the package imports it)
from explainers import METHODS, ParameterError, explain
from explainers.baselines import make_baseline
from explainers.methods.occlusion import window_positions

from ...conftest import sample_path
from ..helpers import (
    MaxBatch,
    assert_cancel_stops_cleanly,
    hook_counts,
    imagenet_input,
    relative_max_difference,
    small_convnet,
)

TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def cat_imagenet():
    return imagenet_input("cat.png", 224)


@pytest.fixture(scope="module")
def cat_default(default_bundle):
    return default_bundle.preprocess(Image.open(sample_path("cat.png"))).contiguous()


@pytest.fixture
def net():
    return small_convnet()


@pytest.fixture
def images():
    torch.manual_seed(3)
    return torch.randn(2, 3, 20, 20)


class PixelSum(nn.Module):
    """Class 0 scores the sum of all inputs: a window's drop is the sum it hides, > 0 for positive inputs."""

    def forward(self, x):
        total = x.sum(dim=(1, 2, 3))
        return torch.stack([total, -total], dim=1)


def _captum_occlusion(model, x, target, window, stride, baseline):
    from captum.attr import Occlusion

    return Occlusion(model).attribute(
        x.clone(), sliding_window_shapes=(3, window, window), strides=(3, stride, stride), baselines=baseline,
        target=target, perturbations_per_eval=16,
    )


def test_window_positions_cover_the_edge():
    assert window_positions(224, 32, 16) == list(range(0, 193, 16))  # tiles exactly: nothing added
    assert window_positions(224, 40, 24) == [0, 24, 48, 72, 96, 120, 144, 168, 184]  # 168 + 40 < 224
    assert window_positions(10, 10, 3) == [0]
    assert window_positions(11, 10, 3) == [0, 1]


def test_cost_counts_windows_and_the_clean_pass():
    info = METHODS["occlusion"]
    assert info.attribution_channels == 1 and info.family == "Perturbation"
    assert info.passes({"window": 32, "stride": 16}, (224, 224)) == (13 * 13 + 1, 0)
    assert info.passes({"window": 40, "stride": 24}, (224, 224)) == (9 * 9 + 1, 0)
    assert info.passes({"window": 32, "stride": 16}, (224, 160)) == (13 * 9 + 1, 0)
    assert info.passes({"window": 300, "stride": 16}, (224, 224)) == (2, 0)  # the method itself refuses it


captum_cases = [("zero", 56, 28), ("mean", 56, 28), ("blur", 56, 28)]


@pytest.mark.parametrize("baseline, window, stride", captum_cases)
def test_resnet18_matches_captum(seeded_resnet18, cat_imagenet, baseline, window, stride):
    pytest.importorskip("captum")
    reference = 0 if baseline == "zero" else make_baseline(baseline, cat_imagenet)
    expected = _captum_occlusion(seeded_resnet18, cat_imagenet, 281, window, stride, reference)
    result = explain(seeded_resnet18, cat_imagenet, "occlusion", target=281, batch_size=16,
                     window=window, stride=stride, baseline=baseline)
    assert result.attribution.shape == (1, 1, 224, 224)
    assert relative_max_difference(result.attribution[:, 0], expected[:, 0]) <= TOLERANCE
    assert hook_counts(seeded_resnet18) == 0


@pytest.mark.parametrize("baseline, window, stride", [("zero", 32, 16), ("blur", 56, 28)])
def test_default_model_matches_captum(default_bundle, cat_default, baseline, window, stride):
    pytest.importorskip("captum")
    reference = 0 if baseline == "zero" else make_baseline(baseline, cat_default, default_bundle)
    result = explain(default_bundle, cat_default, "occlusion", target="top1", batch_size=16,
                     window=window, stride=stride, baseline=baseline)
    target = int(result.target[0])
    expected = _captum_occlusion(default_bundle.model, cat_default, target, window, stride, reference)
    assert relative_max_difference(result.attribution[:, 0], expected[:, 0]) <= TOLERANCE
    assert hook_counts(default_bundle.model) == 0


def test_tensor_baseline_is_used(net, images):
    gray = torch.full((1, 3, 1, 1), 0.3)
    as_tensor = explain(net, images, "occlusion", target=1, window=8, stride=4, baseline=gray).attribution
    zero = explain(net, images, "occlusion", target=1, window=8, stride=4, baseline="zero").attribution
    assert not torch.allclose(as_tensor, zero)


def test_non_tiling_windows_match_a_per_pixel_brute_force(net, images):
    """window 6, stride 4 on 20 px: windows at 0, 4, 8, 12 stop at 18, so one more sits at 14."""
    window, target = 6, 3
    ours = explain(net, images, "occlusion", target=target, window=window, stride=4, batch_size=5).attribution
    starts = [0, 4, 8, 12, 14]
    with torch.no_grad():
        clean = net(images)[:, target]
        drops = {}
        for y in starts:
            for x in starts:
                occluded = images.clone()
                occluded[:, :, y:y + window, x:x + window] = 0
                drops[y, x] = clean - net(occluded)[:, target]
    expected = torch.zeros(2, 1, 20, 20)
    for i in range(20):
        for j in range(20):
            covering = [d for (y, x), d in drops.items() if y <= i < y + window and x <= j < x + window]
            assert covering, (i, j)
            expected[:, 0, i, j] = torch.stack(covering).mean(dim=0)
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))


def test_every_pixel_is_covered_when_windows_do_not_tile():
    """(224 - 40) % 24 != 0: without the edge-aligned window the last 16 rows and columns would get nothing."""
    torch.manual_seed(4)
    x = torch.rand(1, 3, 224, 224) + 0.1
    attribution = explain(PixelSum(), x, "occlusion", target=0, window=40, stride=24, batch_size=32).attribution
    assert torch.isfinite(attribution).all()
    assert (attribution > 0).all()


def test_batch_size_does_not_change_the_result(net, images):
    maps = []
    for batch_size in (1, 7, 64):
        counted = MaxBatch(net)
        maps.append(explain(counted, images, "occlusion", target=0, window=8, stride=4, batch_size=batch_size)
                    .attribution)
        assert 0 < counted.largest <= batch_size
    for other in maps[1:]:
        torch.testing.assert_close(other, maps[0], rtol=1e-5, atol=1e-5 * float(maps[0].abs().max()))


def test_rows_and_rank_targets_are_explained_separately(net, images):
    both = explain(net, images, "occlusion", target="top1", window=8, stride=4)
    for row in range(2):
        alone = explain(net, images[row:row + 1], "occlusion", target=int(both.target[row]), window=8, stride=4)
        torch.testing.assert_close(both.attribution[row:row + 1], alone.attribution, rtol=1e-5, atol=1e-5)
    assert not both.attribution.is_inference()


def test_progress_and_cancel_leave_the_model_untouched(net, images):
    seen = []
    explain(net, images, "occlusion", target=0, window=8, stride=4, batch_size=7,
            progress=lambda done, total: seen.append((done, total)))
    total = 2 * (4 * 4 + 1)  # windows at 0, 4, 8, 12 per side, plus the clean pass, for 2 images
    assert seen[-1] == (total, total)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen) and len(seen) >= 2 * 16 // 7

    assert_cancel_stops_cleanly(net, images, "occlusion", window=8, stride=4, batch_size=4)


def test_window_larger_than_image_and_stride_past_window_are_clear_errors(net, images):
    with pytest.raises(ParameterError, match="20×20"):
        explain(net, images, "occlusion", target=0, window=32, stride=16)
    with pytest.raises(ParameterError, match="stride"):
        explain(net, images, "occlusion", target=0, window=4, stride=8)
    with pytest.raises(ParameterError, match="baseline"):
        explain(net, images, "occlusion", target=0, window=4, stride=4, baseline="black")
