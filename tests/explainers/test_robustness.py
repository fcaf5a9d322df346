"""Long and awkward runs: out-of-memory batches, a memory soak, and inputs that leave nothing to explain."""

from __future__ import annotations

import gc

import psutil
import pytest
import torch
from torch import nn

from explainers import SaliencyError, explain, hooks

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
