"""Long and awkward runs: out-of-memory batches, a memory soak, and inputs that leave nothing to explain."""

from __future__ import annotations

import gc

import numpy as np
import psutil
import pytest
import torch
from torch import nn

from explainers import METHODS, SaliencyError, available_methods, explain, hooks
from explainers.core import CONSTANT_NOTE
from explainers.models.base import ModelBundle, affine_normalizer

from .helpers import assert_untouched, hook_counts, imagenet_input, small_convnet, snapshot


class OutOfMemoryAbove(nn.Module):
    """Wraps a model and raises CUDA's out-of-memory error for any batch larger than ``limit`` rows."""

    def __init__(self, inner: nn.Module, limit: int | None = None):
        super().__init__()
        self.inner = inner
        self.limit = limit
        self.sizes: list[int] = []

    def forward(self, x):
        if self.limit is not None and len(x) > self.limit:
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory (injected: {len(x)} rows > {self.limit})")
        self.sizes.append(len(x))
        return self.inner(x)


# a gradient method with many passes, a wrapper of it, a layer method, and three forward-only methods
OOM_CASES = [
    ("smoothgrad", {"n_samples": 10, "seed": 2}),
    ("integrated_gradients", {"n_steps": 9, "baseline": "zero", "target": "top1"}),
    ("gradcam", {"layer": "inner.features.5"}),
    ("occlusion", {"window": 8, "stride": 4}),
    ("rise", {"n_masks": 20, "seed": 4}),
    ("scorecam", {"layer": "inner.features.5"}),
]


@pytest.mark.parametrize(("method", "params"), OOM_CASES, ids=[case[0] for case in OOM_CASES])
def test_out_of_memory_halves_the_batch_and_gives_the_same_map(method, params):
    params = {"target": 1, **params}
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    model = OutOfMemoryAbove(small_convnet()).eval()
    free = explain(model, x, method, batch_size=8, **params)
    assert free.batch_size_used == 8 and not any(free.notes[0])

    model.limit, model.sizes = 2, []
    before = snapshot(model)
    with pytest.warns(RuntimeWarning, match="out of GPU memory"):
        tight = explain(model, x, method, batch_size=8, **params)
    assert tight.batch_size_used <= 2
    assert max(model.sizes) <= 2
    scale = float(free.attribution.abs().max())
    assert torch.allclose(tight.attribution, free.attribution, rtol=1e-5, atol=1e-6 * max(scale, 1.0))
    assert torch.allclose(tight.logits, free.logits, rtol=1e-5, atol=1e-5)
    record = tight.record(0)
    assert record.batch_size_used == tight.batch_size_used
    assert any("batch size 8" in note and f"batch size {tight.batch_size_used}" in note for note in record.notes)
    assert_untouched(model, before)


def test_out_of_memory_even_at_one_row_is_a_clear_error():
    model = OutOfMemoryAbove(small_convnet(), limit=0).eval()
    x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    before = snapshot(model)
    with pytest.warns(RuntimeWarning), pytest.raises(SaliencyError, match="one row per batch"):
        explain(model, x, "smoothgrad", target=0, n_samples=4, batch_size=4, seed=0)
    assert hook_counts(model) == 0
    assert_untouched(model, before)


@pytest.mark.slow
def test_two_hundred_explanations_keep_memory_flat_and_leave_no_hooks(default_bundle):
    """200 explanations in a row on the default model (about 0.15 s each here): after a warm-up that fills the
    allocator's pools and the layer catalogue, the process's RSS grows by at most 5%."""
    x = imagenet_input("cat.png", default_bundle.input_size)
    before = snapshot(default_bundle.model)
    process = psutil.Process()
    methods = ("vanilla", "gradcam", "guided_backprop", "gradcam_pp")
    for i in range(20):
        explain(default_bundle, x, methods[i % len(methods)], target="top1", batch_size=1).record(0)
    gc.collect()
    warm = process.memory_info().rss
    for i in range(200):
        explain(default_bundle, x, methods[i % len(methods)], target="top1", batch_size=1).record(0)
    gc.collect()
    grown = process.memory_info().rss / warm - 1
    assert grown <= 0.05, f"RSS grew by {grown:.1%} over 200 explanations"
    assert hook_counts(default_bundle.model) == 0
    assert_untouched(default_bundle.model, before)


def test_model_locks_go_with_their_models():
    """The per-model locks are weakly keyed: explaining many short-lived models leaves none behind."""
    x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    gc.collect()
    held = len(hooks._LOCKS)
    for seed in range(5):
        explain(small_convnet(seed), x, "vanilla", target=0)
    gc.collect()
    assert len(hooks._LOCKS) == held


# ---------------------------------------------------------------------------------------------------------
# Degenerate inputs: a constant image, a model whose gradients vanish
# ---------------------------------------------------------------------------------------------------------

FAST = {
    "integrated_gradients": {"n_steps": 4},
    "smoothgrad": {"n_samples": 3},
    "smoothgrad_sq": {"n_samples": 3},
    "vargrad": {"n_samples": 3},
    "occlusion": {"window": 8, "stride": 8},
    "rise": {"n_masks": 16},
    "expected_gradients": {"n_samples": 3},
    "gradient_shap": {"n_samples": 3},
    "deeplift_shap": {"n_baselines": 3},
    "kernel_shap": {"n_samples": 12, "segmentation": "grid", "n_segments": 9},
    "lime": {"n_samples": 12, "segmentation": "grid", "n_segments": 9},
    "extremal_perturbation": {"max_iter": 5},
    "blur_ig": {"n_steps": 4, "max_sigma": 4.0},
    "guided_ig": {"n_steps": 4},
    "xrai": {"n_steps": 2, "scales": "250,500,1200"},
}
# maps that do not read the score: a control and the class-agnostic principal component of the activations
SCORE_FREE = {"random", "sobel", "eigencam"}


def tiny_bundle(zero_gradients: bool = False) -> ModelBundle:
    """The small CNN behind an ImageNet normalisation; with ``zero_gradients`` its classifier weights are 0, so
    every logit is its bias and no gradient reaches the input."""
    model = small_convnet()
    if zero_gradients:
        with torch.no_grad():
            model.fc.weight.zero_()
    normalize, denormalize = affine_normalizer((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    return ModelBundle(name="tiny", model=model, categories=[f"c{i}" for i in range(7)], input_size=24,
                       normalize=normalize, denormalize=denormalize)


def _assert_finite(result, label):
    assert torch.isfinite(result.attribution).all(), f"{label}: non-finite map"
    if result.layer_attribution is not None:
        assert torch.isfinite(result.layer_attribution).all(), f"{label}: non-finite layer map"
    for key, value in result.extras.items():
        if isinstance(value, torch.Tensor):
            assert torch.isfinite(value).all(), f"{label}: non-finite {key}"
    record = result.record(0)
    assert np.isfinite(record.attribution).all()
    assert record.notes == result.notes[0]


def _zero_noted(result) -> bool:
    return any(note.startswith("the map is all zero") for note in result.notes[0])


def _methods(bundle):
    return [name for name in METHODS if name in available_methods(bundle.model)]


def test_a_constant_image_gives_finite_maps_and_says_so_for_every_method():
    bundle = tiny_bundle()
    x = bundle.normalize(torch.full((1, 3, 24, 24), 0.5))
    for method in _methods(bundle):
        result = explain(bundle, x, method, target=1, seed=0, **FAST.get(method, {}))
        _assert_finite(result, method)
        assert CONSTANT_NOTE in result.notes[0], method
        if not result.attribution.any():
            assert _zero_noted(result), method


@pytest.mark.parametrize(("method", "params"), [
    ("integrated_gradients", {"baseline": "blur", "n_steps": 4}),
    ("integrated_gradients", {"baseline": "mean", "n_steps": 4}),
    ("occlusion", {"baseline": "mean", "window": 8, "stride": 8}),
    ("occlusion", {"baseline": "blur", "window": 8, "stride": 8}),
    ("sobel", {}),
])
@pytest.mark.parametrize("pixel", [0.0, 0.5])
def test_a_constant_image_compared_with_itself_gives_exactly_zero(method, params, pixel):
    """Baselines built from the image (its blur, its mean) equal a constant image up to rounding: the map is
    exactly 0 with a note, not float noise that a renderer would stretch to full contrast."""
    bundle = tiny_bundle()
    x = bundle.normalize(torch.full((1, 3, 24, 24), pixel))
    for objective in ("logit", "probability"):
        result = explain(bundle, x, method, target=1, objective=objective, **params)
        _assert_finite(result, method)
        assert not result.attribution.any()
        assert _zero_noted(result)
        if method == "integrated_gradients":
            for key in ("completeness_delta", "score_gap", "completeness_relative"):
                assert float(result.extras[key].abs().max()) == 0, key


def test_vanishing_gradients_give_all_zero_maps_with_a_notice_for_every_method():
    bundle = tiny_bundle(zero_gradients=True)
    x = torch.rand(1, 3, 24, 24, generator=torch.Generator().manual_seed(0))
    for method in _methods(bundle):
        result = explain(bundle, bundle.normalize(x), method, target=1, seed=0, **FAST.get(method, {}))
        _assert_finite(result, method)
        if method in SCORE_FREE:
            continue
        assert not result.attribution.any(), f"{method}: {float(result.attribution.abs().max()):.3g}"
        assert _zero_noted(result), method
        assert all(note.startswith("the map is all zero") for note in result.record(0).notes)


def test_a_single_valued_input_gets_no_noise_and_says_so():
    model = small_convnet()
    x = torch.zeros(2, 3, 16, 16)
    x[1] = torch.randn(3, 16, 16, generator=torch.Generator().manual_seed(0))
    result = explain(model, x, "vargrad", target=0, n_samples=5, seed=0)
    assert not result.attribution[0].any()  # identical copies: variance exactly 0, no rounding residue
    assert result.attribution[1].any()
    assert any("noise" in note for note in result.notes[0]) and not any("noise" in n for n in result.notes[1])


class _RootOfAbs(nn.Module):
    """sqrt(|x|) pooled: at x = 0 the gradient is inf · 0, NaN, whatever the class."""

    def forward(self, x):
        return x.abs().sqrt().mean(dim=(2, 3))


def test_non_finite_values_never_reach_the_map():
    result = explain(_RootOfAbs(), torch.zeros(1, 3, 8, 8), "vanilla", target=0)
    assert torch.isfinite(result.attribution).all() and not result.attribution.any()
    assert any("non-finite" in note for note in result.notes[0])
    # the map is zero because its NaN were set to 0, not because the gradient vanished: one note, not two that
    # contradict each other
    assert not any(note.startswith("the map is all zero") for note in result.notes[0]), result.notes[0]


@pytest.mark.slow
def test_a_constant_image_on_the_default_model_gives_finite_maps(default_bundle):
    x = default_bundle.normalize(torch.full((1, 3, default_bundle.input_size, default_bundle.input_size), 0.5))
    cheap = {**FAST, "occlusion": {"window": 56, "stride": 56}, "rise": {"n_masks": 8}}
    for method in _methods(default_bundle):
        result = explain(default_bundle, x, method, target="top1", seed=0, **cheap.get(method, {}))
        _assert_finite(result, method)
        assert CONSTANT_NOTE in result.notes[0], method
        if not result.attribution.any():
            assert _zero_noted(result), method
