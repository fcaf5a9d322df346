"""Blur IG, Guided IG and XRAI: the same numbers as PAIR's ``saliency`` (the papers' code) on a seeded model, and
the call contract (batches, rows alone, targets, completeness, regions, bad parameters)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from explainers import METHODS, ParameterError, Sanity, explain, explain_many
from explainers.errors import PreprocessingNeeded
from explainers.methods import integrated
from explainers.methods import xrai as xrai_module
from explainers.superpixels import felzenszwalb_masks, to_pixels
from explainers.targets import target_key

from ..helpers import assert_cancel_stops_cleanly, hook_counts, relative_max_difference, small_convnet, tiny_bundle

saliency_core = pytest.importorskip("saliency.core")
saliency_xrai = pytest.importorskip("saliency.core.xrai")
saliency_guided = pytest.importorskip("saliency.core.guided_ig")

SIZE = 32
TARGET = 2
NAMES = ("blur_ig", "guided_ig", "xrai")


def softplus_net(dtype=torch.float64) -> nn.Module:
    """A small seeded CNN with smooth activations (gradients change along every path), in ``dtype``."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.Softplus(), nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.Softplus(),
        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 5),
    )
    with torch.no_grad():
        model[-1].weight.mul_(20)  # scores that move by whole units
    return model.eval().to(dtype)


@pytest.fixture(scope="module")
def images():
    """Two smooth random pictures (blobs, so the segmentations find regions), float64."""
    noise = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    return torch.nn.functional.avg_pool2d(noise, 5, 1, 2)


def model_function(model: nn.Module, target: int):
    """``saliency``'s call_model_function around a torch model: channel-last NumPy in, the target's input
    gradients out (computed in the model's dtype)."""
    dtype = next(model.parameters()).dtype

    def call(batch, call_model_args=None, expected_keys=None):
        x = torch.from_numpy(np.asarray(batch)).permute(0, 3, 1, 2).to(dtype).requires_grad_(True)
        (grad,) = torch.autograd.grad(model(x)[:, target].sum(), x)
        return {saliency_core.base.INPUT_OUTPUT_GRADIENTS: grad.permute(0, 2, 3, 1).double().numpy()}

    return call


def channel_last(x: torch.Tensor) -> np.ndarray:
    return x.permute(1, 2, 0).double().numpy()


class _QuantileLower:
    """NumPy as ``saliency``'s Guided IG sees it: its np.quantile(..., interpolation='lower') predates NumPy 2,
    which names that argument ``method``; everything else is NumPy itself."""

    def __getattr__(self, name):
        return getattr(np, name)

    @staticmethod
    def quantile(a, q, interpolation="linear", **kwargs):
        return np.quantile(a, q, method=interpolation, **kwargs)


@pytest.fixture
def paper_guided_ig(monkeypatch):
    monkeypatch.setattr(saliency_guided, "np", _QuantileLower())
    return saliency_core.GuidedIG()


# ---------------------------------------------------------------------------------------------------------
# registration
# ---------------------------------------------------------------------------------------------------------


def test_registration():
    blur, guided, xrai = (METHODS[name] for name in NAMES)
    assert {info.family for info in (blur, guided, xrai)} == {"Gradient"}
    assert blur.attribution_channels is None and guided.attribution_channels is None and xrai.attribution_channels == 1
    assert {blur.reference.arxiv, guided.reference.arxiv, xrai.reference.arxiv} == {"2004.03383", "2106.09788",
                                                                                     "1906.02825"}
    for info in (blur, guided, xrai):
        assert info.sanity is Sanity.UNTESTED and not info.smoothgrad_base and info.formula and info.summary
    # the input and the path's end point, then one forward+backward per step; XRAI two paths and the clean pass
    assert blur.passes({"n_steps": 10}) == (12, 10) and guided.passes({"n_steps": 10}) == (12, 10)
    assert xrai.passes({"n_steps": 10}) == (21, 20)
    assert guided.is_stochastic({"baseline": "uniform_noise"}) and not guided.is_stochastic()
    assert not blur.is_stochastic() and not xrai.is_stochastic()


# ---------------------------------------------------------------------------------------------------------
# the papers' code as the oracle
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype, tolerance", [(torch.float64, 1e-9), (torch.float32, 1e-4)])
def test_blur_ig_matches_saliency(images, dtype, tolerance):
    """The same widths, blur (zero padding, 4σ kernels), finite difference and Riemann sum: float64 agrees to
    rounding, float32 (ours batched, theirs one width at a time) within 1e-4 of the map's scale."""
    model = softplus_net(dtype)
    ours = explain(model, images, "blur_ig", target=TARGET, n_steps=24, max_sigma=6.0, grad_step=0.02, batch_size=7)
    for row in range(len(images)):
        theirs = saliency_core.BlurIG().GetMask(channel_last(images[row]), model_function(model, TARGET),
                                                max_sigma=6.0, steps=24, grad_step=0.02, batch_size=24)
        ours_row = ours.attribution[row].permute(1, 2, 0)
        assert relative_max_difference(ours_row, torch.from_numpy(theirs)) <= tolerance


@pytest.mark.parametrize("dtype, tolerance", [(torch.float64, 1e-9), (torch.float32, 1e-4)])
@pytest.mark.parametrize("fraction, max_dist", [(0.25, 0.02), (0.1, 1.0)])
def test_guided_ig_matches_saliency(images, paper_guided_ig, dtype, tolerance, fraction, max_dist):
    """The same path, step for step (selection, band, L1 targets), from a tensor baseline: float64 to rounding,
    float32 within 1e-4 of the map's scale."""
    model = softplus_net(dtype)
    baseline = images.flip(-1) * 0.5
    ours = explain(model, images, "guided_ig", target=TARGET, n_steps=25, fraction=fraction, max_dist=max_dist,
                   baseline=baseline, batch_size=3)
    for row in range(len(images)):
        theirs = paper_guided_ig.GetMask(channel_last(images[row]), model_function(model, TARGET),
                                         x_baseline=channel_last(baseline[row]), x_steps=25, fraction=fraction,
                                         max_dist=max_dist)
        ours_row = ours.attribution[row].permute(1, 2, 0)
        assert relative_max_difference(ours_row, torch.from_numpy(theirs)) <= tolerance


def test_xrai_segments_are_saliencys(images):
    """The candidate regions are the paper code's Felzenszwalb masks (its scales, sigma, minimum size, 224 px
    resize and dilation), less the empty ones its resize back leaves."""
    for picture in to_pixels(images).permute(0, 2, 3, 1).double().numpy():
        theirs = [mask for mask in saliency_xrai._get_segments_felzenszwalb(picture) if mask.any()]
        ours = felzenszwalb_masks(picture)
        assert len(ours) == len(theirs) > 20
        assert all(np.array_equal(a, b) for a, b in zip(ours, theirs))


@pytest.mark.parametrize("area_threshold, algorithm", [(1.0, "full"), (0.4, "full"), (1.0, "fast")])
def test_xrai_selection_matches_saliency(images, area_threshold, algorithm):
    """Given the same pixel attribution and regions, the same picks, densities and ranks, to the last bit."""
    picture = to_pixels(images[:1]).permute(0, 2, 3, 1)[0].double().numpy()
    masks = felzenszwalb_masks(picture)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    attribution = rng.standard_normal((SIZE, SIZE)) + np.sin(xx / 4) * np.cos(yy / 6)
    parameters = saliency_core.XRAIParameters(area_threshold=area_threshold, algorithm=algorithm,
                                              return_xrai_segments=True)
    parameters.experimental_params["min_pixel_diff"] = 20
    theirs = saliency_core.XRAI().GetMaskWithDetails(picture, None, segments=list(masks),
                                                     base_attribution=np.repeat(attribution[..., None], 3, -1),
                                                     extra_parameters=parameters)
    ours_map, ours_ranks = xrai_module.rank_regions(attribution, masks, area_threshold, 20, algorithm == "fast")
    assert np.array_equal(ours_ranks, theirs.segments) and ours_ranks.max() > 3
    assert np.array_equal(ours_map, theirs.attribution_mask)


@pytest.mark.slow
def test_xrai_matches_saliency_end_to_end(images):
    """Integrated gradients from the image's lowest and highest value (the code's default baselines), the same
    regions: the same ranking of regions; the densities differ only by the two quadratures (Gauss-Legendre
    here, 200 evenly spaced points there)."""
    model = softplus_net()
    ours = explain(model, images, "xrai", target=TARGET, baselines="min_max", n_steps=32, min_pixel_diff=20,
                   batch_size=64)
    pictures = to_pixels(images).permute(0, 2, 3, 1).double().numpy()
    for row in range(len(images)):
        parameters = saliency_core.XRAIParameters(steps=200, return_xrai_segments=True)
        parameters.experimental_params["min_pixel_diff"] = 20
        theirs = saliency_core.XRAI().GetMaskWithDetails(
            channel_last(images[row]), model_function(model, TARGET), batch_size=100, extra_parameters=parameters,
            segments=list(felzenszwalb_masks(pictures[row])))
        assert np.array_equal(ours.regions[row].numpy() + 1, theirs.segments) and theirs.segments.max() > 5
        assert relative_max_difference(ours.attribution[row, 0], torch.from_numpy(theirs.attribution_mask)) <= 1e-4


# ---------------------------------------------------------------------------------------------------------
# properties
# ---------------------------------------------------------------------------------------------------------

CHEAP = {
    "blur_ig": {"n_steps": 12, "max_sigma": 4.0},
    "guided_ig": {"n_steps": 12, "baseline": "zero"},
    "xrai": {"n_steps": 6, "baselines": "min_max", "min_pixel_diff": 20, "scales": "250,500,1200"},
}


@pytest.mark.parametrize("name", ["blur_ig", "guided_ig", pytest.param("xrai", marks=pytest.mark.slow)])
def test_batch_size_rows_and_targets_do_not_change_a_map(images, name):
    """Any batch size, a row alone or beside another, one target or two in one call: the same map (to float32
    rounding: a smooth model, where rounding cannot flip a ReLU and jump a gradient)."""
    model = softplus_net(torch.float32)
    x = images.float()
    reference = explain(model, x, name, target=1, batch_size=5, **CHEAP[name]).attribution
    assert reference.abs().max() > 0
    for batch_size in (1, 64):
        again = explain(model, x, name, target=1, batch_size=batch_size, **CHEAP[name]).attribution
        torch.testing.assert_close(again, reference, rtol=1e-4, atol=1e-6 * float(reference.abs().max()))
    alone = explain(model, x[1:], name, target=1, batch_size=5, **CHEAP[name]).attribution
    torch.testing.assert_close(alone[0], reference[1], rtol=1e-4, atol=1e-6 * float(reference.abs().max()))
    both = explain_many(model, x, [name], [1, 4], params={name: CHEAP[name]}, batch_size=5, seed=0)
    torch.testing.assert_close(both[(name, target_key(1))].attribution, reference, rtol=1e-4,
                               atol=1e-6 * float(reference.abs().max()))
    other = explain(model, x, name, target=4, batch_size=5, **CHEAP[name]).attribution
    torch.testing.assert_close(both[(name, target_key(4))].attribution, other, rtol=1e-4,
                               atol=1e-6 * float(other.abs().max()))
    assert hook_counts(model) == 0


def test_blur_ig_adds_up_to_the_score_gap_to_the_blurred_image(images):
    """sum(A) ≈ S(x) − S(x blurred at max_sigma): the finite difference, the Riemann sum and the paper code's
    truncated kernels (a tap appears whenever 4σ passes a half pixel: a jump of e⁻⁸ of the path) the only error."""
    model = softplus_net()
    result = explain(model, images, "blur_ig", target=TARGET, n_steps=200, max_sigma=30.0, grad_step=0.001)
    gap = result.extras["score_gap"]
    assert (gap.abs() > 0.03).all()
    assert (result.extras["completeness_relative"].abs() < 0.01).all()
    torch.testing.assert_close(result.attribution.sum(dim=(1, 2, 3)), gap, rtol=0.01, atol=0)


def test_guided_ig_adds_up_and_is_ig_without_room_to_leave_the_path(images):
    """Guided IG is a path method: sum(A) ≈ S(x) − S(x′); with max_dist 0 its path is the straight line, walked in
    n equal steps with the gradient at each step's start: integrated gradients' left Riemann sum."""
    model = softplus_net()
    guided = explain(model, images, "guided_ig", target=TARGET, n_steps=60, baseline="zero")
    assert (guided.extras["completeness_relative"].abs() < 0.05).all()
    straight = explain(model, images, "guided_ig", target=TARGET, n_steps=20, max_dist=0.0, baseline="zero")
    ig = explain(model, images, "integrated_gradients", target=TARGET, n_steps=20, rule="riemann_left",
                 baseline="zero")
    assert relative_max_difference(straight.attribution, ig.attribution) < 1e-6


def test_xrai_map_is_one_density_per_ranked_region_and_regions_outline_them(images):
    """Each ranked region holds one value, its density; ranks go with decreasing density; with two targets each
    ranks its own regions, so no shared outline is given."""
    model = softplus_net()
    result = explain(model, images, "xrai", target=TARGET, **CHEAP["xrai"])
    assert result.regions is not None and result.regions.shape == (2, SIZE, SIZE)
    for row in range(2):
        labels, values = result.regions[row], result.attribution[row, 0]
        densities = [values[labels == label] for label in range(int(labels.max()) + 1)]
        assert all(len(d) and torch.all(d == d[0]) for d in densities)
        firsts = torch.stack([d[0] for d in densities])
        covered = firsts[:-1] if bool((firsts[1:] > firsts[:-1]).any()) else firsts  # the rest, if any, is last
        assert torch.all(covered[1:] <= covered[:-1])
    many = explain_many(model, images, ["xrai"], [TARGET, 0], params={"xrai": CHEAP["xrai"]})
    assert all(e.regions is None for e in many.values())


def test_xrai_black_and_white_baselines_need_the_preprocessing(images):
    model = small_convnet()
    with pytest.raises(PreprocessingNeeded, match="min_max"):
        explain(model, images.float(), "xrai", target=0, n_steps=2)
    bundle = tiny_bundle(small_convnet(), size=SIZE)
    result = explain(bundle, bundle.normalize(images.float()), "xrai", target=0, n_steps=4, min_pixel_diff=20)
    assert result.regions.max() > 0 and torch.isfinite(result.attribution).all()


@pytest.mark.parametrize("name, params", [
    ("blur_ig", {"n_steps": 0}),
    ("blur_ig", {"max_sigma": 0}),
    ("blur_ig", {"grad_step": -1}),
    ("guided_ig", {"fraction": 1.5}),
    ("guided_ig", {"max_dist": -0.1}),
    ("guided_ig", {"baseline": "white"}),
    ("xrai", {"scales": "7"}),
    ("xrai", {"algorithm": "greedy"}),
    ("xrai", {"area_threshold": 2}),
    ("xrai", {"min_pixel_diff": 0}),
    ("xrai", {"baselines": "black"}),
])
def test_bad_parameters_are_refused(images, name, params):
    with pytest.raises(ParameterError):
        explain(small_convnet(), images.float(), name, target=0, **params)


def test_guided_ig_cancel_stops_cleanly(images):
    assert_cancel_stops_cleanly(small_convnet(), images.float(), "guided_ig", n_steps=10, baseline="zero",
                                batch_size=1)


def test_blur_matrices_are_scipys_gaussian_filter():
    """The blur is scipy.ndimage.gaussian_filter with zero padding (the paper code's), widths 0 to past the side."""
    from scipy import ndimage

    image = torch.rand(1, 2, 9, 13, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for sigma in (0.0, 0.01, 0.2, 1.3, 4.0, 30.0):
        ours = integrated.blur(image, torch.tensor([sigma], dtype=torch.float64))[0]
        theirs = image[0].numpy() if sigma == 0 else ndimage.gaussian_filter(image[0].numpy(), [0, sigma, sigma],
                                                                             mode="constant")
        np.testing.assert_allclose(ours.numpy(), theirs, rtol=0, atol=1e-14)


def test_xrai_says_when_no_region_is_large_enough(images):
    model = softplus_net()
    result = explain(model, images[:1], "xrai", target=TARGET, n_steps=2, baselines="min_max",
                     min_pixel_diff=SIZE * SIZE + 1)
    assert not result.regions.any() and torch.all(result.attribution == result.attribution.flatten()[0])
    assert any("min_pixel_diff" in note for note in result.notes[0])
