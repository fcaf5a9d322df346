"""KernelSHAP (Lundberg & Lee 2017) and LIME (Ribeiro et al. 2016) on superpixels: exact Shapley values against a
brute-force sum, a model linear in the segments recovered, Captum's KernelShap and Lime and shap's KernelExplainer
on the same features, seeding and batching, notes and errors."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from torch import nn

from explainers import METHODS, ParameterError, SaliencyError, explain, explain_many
from explainers.baselines import make_baseline
from explainers.methods.surrogate import POOR_FIT_R2, kernel_shap_design, lime_design
from explainers.superpixels import segment, segment_counts

from ..helpers import assert_cancel_stops_cleanly, imagenet_input, small_convnet

SIZE = 32


@pytest.fixture(scope="module")
def net():
    return small_convnet()


@pytest.fixture(scope="module")
def cat():
    """A real picture (smooth regions, so SLIC finds real segments), 32 px, ImageNet-normalised."""
    return imagenet_input("cat.png", SIZE)


def masked(x: torch.Tensor, reference: torch.Tensor, labels: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """[K, C, H, W]: one copy of ``x`` [1, C, H, W] per coalition ``keep`` [K, M], the rest from ``reference``.
    Written here, apart from the method's own masking, so the test does not check the code with itself."""
    pixel_kept = torch.stack([k[labels] for k in keep.bool()])  # [K, H, W]
    return torch.where(pixel_kept.unsqueeze(1), x, reference)


def brute_force_shapley(model, x, reference, labels, target) -> torch.Tensor:
    """φ_i = Σ_{S ⊆ N∖{i}} |S|! (M − |S| − 1)! / M! (v(S ∪ {i}) − v(S)), from all 2^M coalitions' scores."""
    m = int(labels.max()) + 1
    coalitions = torch.tensor(list(itertools.product((0, 1), repeat=m)))
    with torch.no_grad():
        values = model(masked(x, reference, labels, coalitions))[:, target].double()
    index = {tuple(c.tolist()): k for k, c in enumerate(coalitions)}
    phi = torch.zeros(m, dtype=torch.float64)
    for coalition, k in index.items():
        size = sum(coalition)
        for i in range(m):
            if coalition[i] == 0:
                with_i = list(coalition)
                with_i[i] = 1
                weight = math.factorial(size) * math.factorial(m - size - 1) / math.factorial(m)
                phi[i] += weight * (values[index[tuple(with_i)]] - values[k])
    return phi


def segment_weights(attribution: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per segment [M], the value the map holds on it (checked constant over the segment)."""
    values = attribution.reshape(labels.shape).double()
    out = []
    for j in range(int(labels.max()) + 1):
        inside = values[labels == j]
        assert torch.all(inside == inside[0]), "a superpixel's pixels hold different weights"
        out.append(inside[0])
    return torch.stack(out)


# ---------------------------------------------------------------------------------------------------------
# Registration
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["kernel_shap", "lime"])
def test_registration_and_cost(name):
    info = METHODS[name]
    assert info.family == "Surrogate" and info.attribution_channels == 1 and info.stochastic
    assert info.passes({}, (224, 224)) == (1001, 0)  # the clean pass, then one per sample
    assert info.passes({"n_samples": 40}, (64, 64)) == (41, 0)
    assert info.params["compactness"].applies({"segmentation": "slic"})
    assert not info.params["compactness"].applies({"segmentation": "grid"})
    assert info.params["n_segments"].applies({"segmentation": "grid"})
    assert not info.params["scale"].applies({"segmentation": "slic"})
    assert info.params["kernel_size"].applies({"segmentation": "quickshift"})
    with pytest.raises(ParameterError, match="segmentation"):
        info.validate({"segmentation": "watershed"})


# ---------------------------------------------------------------------------------------------------------
# KernelSHAP: exact Shapley values, efficiency, the sampled estimate
# ---------------------------------------------------------------------------------------------------------


def test_every_coalition_enumerated_gives_the_exact_shapley_values_for_every_target(net, cat):
    """2 × 3 grid: 2^6 − 1 = 63 coalitions besides the full one fit in n_samples = 63, so the fit is exact."""
    params = {"segmentation": "grid", "n_segments": 6, "n_samples": 63, "baseline": "mean"}
    results = explain_many(net, cat, ["kernel_shap"], [0, 3], params={"kernel_shap": params}, seed=0)
    labels = segment(cat, "grid", n_segments=6)[0]
    reference = make_baseline("mean", cat)
    for target in (0, 3):
        result = results[("kernel_shap", target)]
        ours = segment_weights(result.attribution[0, 0], labels)
        exact = brute_force_shapley(net, cat, reference, labels, target)
        assert float((ours - exact).abs().max()) <= 1e-5 * max(1.0, float(exact.abs().max()))
        with torch.no_grad():
            gap = float(net(cat)[0, target] - net(reference)[0, target])
        assert float(ours.sum()) == pytest.approx(gap, rel=1e-5, abs=1e-6)  # efficiency
        assert abs(float(result.extras["efficiency_gap"][0])) <= 1e-9 * max(1.0, abs(gap))
        assert bool(result.extras["exact"][0]) and int(result.extras["n_segments"][0]) == 6
        assert torch.equal(result.regions[0], labels.cpu())


def test_exact_enumeration_does_not_depend_on_the_seed(net, cat):
    params = {"segmentation": "grid", "n_segments": 4, "n_samples": 15}
    first = explain(net, cat, "kernel_shap", target=1, seed=0, **params).attribution
    other = explain(net, cat, "kernel_shap", target=1, seed=9, **params).attribution
    torch.testing.assert_close(first, other, rtol=1e-6, atol=1e-7)


def test_the_design_enumerates_whole_sizes_first_and_weights_like_the_shapley_kernel():
    m, n_samples = 10, 300
    coalitions, weights = kernel_shap_design(m, n_samples, torch.Generator().manual_seed(0))
    assert len(coalitions) == n_samples and not coalitions[0].any() and weights[0] == 0
    assert len({tuple(c.tolist()) for c in coalitions}) == n_samples  # no coalition scored twice
    sizes = coalitions.sum(dim=1)
    assert not (sizes == m).any()  # the full coalition is the clean pass
    assert int((sizes == 1).sum()) == m and int((sizes == m - 1).sum()) == m  # enumerated whole
    kernel = (m - 1) / (math.comb(m, 1) * 1 * (m - 1))
    total = sum((m - 1) / (math.comb(m, s) * s * (m - s)) * math.comb(m, s) for s in range(1, m))
    assert float(weights[sizes == 1][0]) == pytest.approx(kernel / total)
    assert float(weights.sum()) == pytest.approx(1.0)


def _segment_game(model, x, reference, labels, target):
    """The segment-level function shap's KernelExplainer explains: binary patterns [K, M] -> scores [K]."""

    def game(patterns):
        with torch.no_grad():
            keep = torch.as_tensor(np.asarray(patterns), dtype=torch.long)
            return model(masked(x, reference, labels, keep))[:, target].double().numpy()

    return game


def test_shap_kernel_explainer_agrees_exactly_when_enumerating_and_closely_when_sampling(net, cat):
    shap = pytest.importorskip("shap")  # an oracle: a test-only dependency
    reference = make_baseline("mean", cat)
    for n_segments, n_samples in ((6, 63), (10, 400)):
        labels = segment(cat, "grid", n_segments=n_segments)[0]
        m = int(labels.max()) + 1
        ours = segment_weights(explain(net, cat, "kernel_shap", target=2, seed=0, segmentation="grid",
                                       n_segments=n_segments, n_samples=n_samples).attribution[0, 0], labels)
        np.random.seed(0)  # shap draws from NumPy's global generator
        explainer = shap.KernelExplainer(_segment_game(net, cat, reference, labels, 2), np.zeros((1, m)))
        theirs = torch.as_tensor(np.asarray(explainer.shap_values(np.ones((1, m)), nsamples=n_samples - 1,
                                                                  l1_reg=False, silent=True))).reshape(-1)
        exact = brute_force_shapley(net, cat, reference, labels, 2)
        if 2**m - 1 <= n_samples:
            assert float((ours - theirs).abs().max()) <= 1e-5 * float(exact.abs().max())
        else:  # both estimate: ours must be as close to the exact values as shap's (with some slack)
            error = float((ours - exact).norm() / exact.norm())
            shap_error = float((theirs - exact).norm() / exact.norm())
            assert error <= max(2 * shap_error, 0.05), (error, shap_error)
            assert spearmanr(ours, theirs).statistic >= 0.9


# ---------------------------------------------------------------------------------------------------------
# A model linear in the segment means: both methods recover its coefficients
# ---------------------------------------------------------------------------------------------------------


class LinearInSegmentMeans(nn.Module):
    """logits[k] = Σ_j Σ_c W[k, j, c] · (mean of channel c over segment j) + bias[k]."""

    def __init__(self, labels: torch.Tensor, classes: int = 3, channels: int = 3, seed: int = 0):
        super().__init__()
        m = int(labels.max()) + 1
        one_hot = torch.nn.functional.one_hot(labels.flatten(), m).double()
        self.register_buffer("averaging", one_hot / one_hot.sum(dim=0))  # [H*W, M]
        generator = torch.Generator().manual_seed(seed)
        self.weight = nn.Parameter(torch.randn(classes, m, channels, generator=generator, dtype=torch.float64))
        self.bias = nn.Parameter(torch.randn(classes, generator=generator, dtype=torch.float64))

    def segment_means(self, x):
        return x.double().flatten(2) @ self.averaging  # [B, C, M]

    def forward(self, x):
        return (torch.einsum("bcm,kmc->bk", self.segment_means(x), self.weight) + self.bias).float()


def test_both_methods_recover_a_model_linear_in_the_segment_means(cat):
    """With z_j = 1 segment j keeps the image (mean m_j), with z_j = 0 it shows the baseline (mean b_j), so
    logit_k = const + Σ_j z_j θ_kj with θ_kj = Σ_c W_kjc (m_jc − b_jc): the scaling of the binary encoding is
    the gap between the image's and the baseline's segment means. A linear game's Shapley values are its
    coefficients, whatever coalitions KernelSHAP samples; LIME's unpenalised (α = 0) weighted least squares
    fits it exactly too, and lime's default ridge (α = 1) only shrinks a little."""
    labels = segment(cat, "slic", n_segments=16)
    m = segment_counts(labels)[0]
    assert m >= 8
    model = LinearInSegmentMeans(labels[0]).eval()
    reference = make_baseline("blur", cat)
    target = 1
    with torch.no_grad():
        theta = torch.einsum("cm,mc->m", model.segment_means(cat)[0] - model.segment_means(reference)[0],
                             model.weight[target])
    common = {"segmentation": "slic", "n_segments": 16, "baseline": "blur", "n_samples": 200}
    shap_values = explain(model, cat, "kernel_shap", target=target, seed=0, **common)
    assert not bool(shap_values.extras["exact"][0])  # sampled, and still exact on a linear game
    for result, tolerance in ((shap_values, 1e-4),
                              (explain(model, cat, "lime", target=target, seed=0, alpha=0.0, **common), 1e-4)):
        ours = segment_weights(result.attribution[0, 0], labels[0])
        assert float((ours - theta).abs().max()) <= tolerance * float(theta.abs().max())
        assert float(result.extras["fit_r2"][0]) == pytest.approx(1.0, abs=1e-6)
    # ridge: (ZᵀWZ + αI)⁻¹ ZᵀWZ θ, pulled towards 0 by α against the kernel weights' total, which grows with the
    # samples: a few percent at 200, less with four times as many
    errors = []
    for n_samples in (200, 800):
        ridge = explain(model, cat, "lime", target=target, seed=0, **{**common, "n_samples": n_samples})
        ours = segment_weights(ridge.attribution[0, 0], labels[0])
        errors.append(float((ours - theta).abs().max() / theta.abs().max()))
        assert spearmanr(ours, theta).statistic >= 0.98
    assert errors[1] < errors[0] <= 0.1


# ---------------------------------------------------------------------------------------------------------
# Captum's KernelShap and Lime on the same feature mask and baseline
# ---------------------------------------------------------------------------------------------------------


def _uniform_count_subset(original_inp, **kwargs):
    """Ribeiro et al.'s sampling for Captum's Lime: a kept count uniform in 0..M−1, then a uniform subset."""
    m = kwargs["num_interp_features"]
    kept = int(torch.randint(0, m, (1,)))
    z = torch.zeros(1, m, dtype=torch.long)
    z[0, torch.randperm(m)[:kept]] = 1
    return z


def _cosine_kernel(width):
    """lime_image's kernel on the interpretable pattern (Captum's default compares the perturbed images)."""

    def similarity(original, perturbed, interpretable, **kwargs):
        m = interpretable.numel()
        d = 1 - math.sqrt(float(interpretable.sum()) / m)
        return math.exp(-(d**2) / (2 * width**2))

    return similarity


@pytest.mark.slow
def test_rank_correlation_with_captum_kernel_shap_and_lime(net, cat):
    captum = pytest.importorskip("captum.attr")
    from captum._utils.models.linear_model import SkLearnRidge

    labels = segment(cat, "slic", n_segments=16)
    reference = make_baseline("mean", cat)
    mask = labels.unsqueeze(1)  # [1, 1, H, W]: every channel of a pixel in its superpixel
    common = {"segmentation": "slic", "n_segments": 16, "baseline": "mean", "n_samples": 2000}
    target = 4
    torch.manual_seed(0)
    captum_shap = captum.KernelShap(net).attribute(cat, baselines=reference, target=target, feature_mask=mask,
                                                   n_samples=2000, perturbations_per_eval=64)
    ours_shap = explain(net, cat, "kernel_shap", target=target, seed=0, **common).attribution
    lime = captum.Lime(net, interpretable_model=SkLearnRidge(alpha=1.0), similarity_func=_cosine_kernel(0.25),
                       perturb_func=_uniform_count_subset)
    captum_lime = lime.attribute(cat, baselines=reference, target=target, feature_mask=mask, n_samples=2000,
                                 perturbations_per_eval=64)
    ours_lime = explain(net, cat, "lime", target=target, seed=0, **common).attribution
    for ours, theirs in ((ours_shap, captum_shap), (ours_lime, captum_lime)):
        a = segment_weights(ours[0, 0], labels[0])
        b = segment_weights(theirs[0, 0], labels[0])
        assert spearmanr(a, b).statistic >= 0.9, (a, b)


# ---------------------------------------------------------------------------------------------------------
# Seeds, batches, rows
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_images(cat):
    """The cat and a flipped, darker copy: different segmentations and segment counts."""
    other = imagenet_input("cat.png", SIZE).flip(-1) * 0.7
    return torch.cat([cat, other])


PROPERTY_PARAMS = {
    "kernel_shap": {"n_samples": 60, "segmentation": "slic", "n_segments": 12},
    "lime": {"n_samples": 60, "segmentation": "slic", "n_segments": 12},
}


@pytest.mark.parametrize("name", ["kernel_shap", "lime"])
def test_same_seed_same_map_other_seed_other_map(net, cat, name):
    params = PROPERTY_PARAMS[name]
    first = explain(net, cat, name, target=0, seed=7, **params).attribution
    again = explain(net, cat, name, target=0, seed=7, **params).attribution
    other = explain(net, cat, name, target=0, seed=8, **params).attribution
    assert torch.equal(first, again)
    assert not torch.allclose(first, other)


@pytest.mark.parametrize("name", ["kernel_shap", "lime"])
def test_batch_size_and_the_other_rows_do_not_change_a_row(net, two_images, name):
    params = PROPERTY_PARAMS[name]
    counts = segment_counts(segment(two_images, "slic", n_segments=12))
    assert counts[0] != counts[1]  # rows of different segment counts share batches
    maps = [explain(net, two_images, name, target=2, seed=3, batch_size=b, **params) for b in (1, 7, 64)]
    scale = float(maps[0].attribution.abs().max())
    for other in maps[1:]:
        torch.testing.assert_close(other.attribution, maps[0].attribution, rtol=1e-5, atol=1e-5 * scale)
    for row in range(2):
        alone = explain(net, two_images[row : row + 1], name, target=2, seed=3, **params)
        torch.testing.assert_close(alone.attribution[0], maps[0].attribution[row], rtol=1e-5, atol=1e-5 * scale)
        assert torch.equal(alone.regions[0], maps[0].regions[row])


def test_rows_with_the_same_segment_count_draw_the_same_coalitions():
    for m in (5, 12):
        draws = [lime_design(m, 50, torch.Generator().manual_seed(3 + m)) for _ in range(2)]
        assert torch.equal(*draws)
        kept = draws[0].sum(dim=1)
        assert int(kept.min()) >= 0 and int(kept.max()) <= m - 1  # Ribeiro's counts: 0..M−1 kept


def test_progress_counts_every_pass_and_cancel_leaves_the_model_untouched(net, two_images):
    seen = []
    explain(net, two_images, "lime", target=0, n_samples=20, batch_size=6, segmentation="grid", n_segments=9,
            progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (2 * 21, 2 * 21)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    for name in ("kernel_shap", "lime"):
        assert_cancel_stops_cleanly(net, two_images, name, n_samples=40, batch_size=4, segmentation="grid",
                                    n_segments=9)


# ---------------------------------------------------------------------------------------------------------
# Notes and errors
# ---------------------------------------------------------------------------------------------------------


class Oscillating(nn.Module):
    """sin(k · ⟨v, x⟩) for a fixed random pattern v: each superpixel moves the projection by its own amount, and
    the sine of a sum of many such moves is far from additive in which superpixels are present."""

    def __init__(self, k: float = 10.0):
        super().__init__()
        self.register_buffer("v", torch.randn(3, SIZE, SIZE, generator=torch.Generator().manual_seed(0)) / SIZE)
        self.k = k

    def forward(self, x):
        score = torch.sin(self.k * (x * self.v).sum(dim=(1, 2, 3)))
        return torch.stack([score, -score], dim=1)


def test_a_poor_fit_is_said_with_its_r2():
    x = imagenet_input("cat.png", SIZE)
    common = {"segmentation": "grid", "n_segments": 16, "n_samples": 300, "seed": 0}
    lime = explain(Oscillating(), x, "lime", target=0, **common)
    r2 = float(lime.extras["fit_r2"][0])
    assert r2 < POOR_FIT_R2
    assert any(note.startswith(f"LIME's linear surrogate explains only R² = {r2:.2f}") for note in lime.notes[0])
    shap_values = explain(Oscillating(), x, "kernel_shap", target=0, **common)
    assert float(shap_values.extras["fit_r2"][0]) < POOR_FIT_R2
    assert any("far from additive" in note for note in shap_values.notes[0])
    good = explain(small_convnet(), x, "lime", target=0, **common)
    assert float(good.extras["fit_r2"][0]) >= POOR_FIT_R2 and not good.notes[0]


@pytest.mark.parametrize("name", ["kernel_shap", "lime"])
def test_superpixels_where_the_baseline_is_the_image_get_exactly_zero(net, cat, name):
    """A baseline equal to the image on the right half: switching those superpixels off changes nothing, so
    their weight is 0 by definition, not rounding noise; all of the image equal gives an all-zero map, said."""
    labels = segment(cat, "grid", n_segments=16)[0]
    reference = cat.clone()
    reference[..., : SIZE // 2] = 0.0  # grid cells never straddle the middle of a 4 × 4 grid
    result = explain(net, cat, name, target=1, seed=0, baseline=reference, segmentation="grid", n_segments=16,
                     n_samples=100)
    weights = segment_weights(result.attribution[0, 0], labels)
    right = labels[0, SIZE // 2 :].unique()
    assert torch.all(weights[right] == 0) and weights[labels[0, : SIZE // 2].unique()].abs().min() > 0
    flat = explain(net, cat, name, target=1, seed=0, baseline=cat, segmentation="grid", n_segments=16,
                   n_samples=40)
    assert not flat.attribution.any()
    assert any(note.startswith("the map is all zero: the baseline equals this image") for note in flat.notes[0])


def test_a_lime_run_with_one_superpixel_says_how_to_get_more(net, cat):
    with pytest.raises(ParameterError, match=r"LIME needs at least 2 superpixels; got 1 \(row 0\): raise n_segments"):
        explain(net, cat, "lime", target=0, segmentation="grid", n_segments=1)
    assert issubclass(ParameterError, SaliencyError)  # the pages show these as a message, not a traceback


def test_too_few_kernel_shap_samples_for_the_segments_is_refused_before_any_pass(cat):
    calls = []

    class Counting(nn.Module):
        def forward(self, x):
            calls.append(len(x))
            return x.mean(dim=(2, 3))

    x = torch.nn.functional.interpolate(cat, size=(64, 128), mode="bilinear")  # a 5 × 10 grid
    with pytest.raises(ParameterError, match=r"n_samples 20 < 50 segments \(row 0\): the regression is "
                                             r"underdetermined; give at least n_samples=51"):
        explain(Counting(), x, "kernel_shap", target=0, n_samples=20, segmentation="grid", n_segments=50,
                batch_size=8)  # a given batch size: no memory probe, so any pass would be the method's
    assert calls == []
    # one segment is a trivial game, exact with a single pass: no error
    assert explain(Counting(), x, "kernel_shap", target=0, n_samples=1, segmentation="grid", n_segments=1)


def test_black_needs_the_preprocessing(net, cat):
    with pytest.raises(SaliencyError, match="black"):
        explain(net, cat, "lime", target=0, baseline="black", n_samples=10, segmentation="grid", n_segments=4)
