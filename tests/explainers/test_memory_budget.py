"""IG-200 on a ResNet-152-sized model fits a memory budget by the automatic batch size: the free memory is
patched to a budget, and the process's measured peak resident memory during the call must stay within it.

The peak is the kernel's own high-water mark (VmHWM in /proc/self/status), reset just before the call through
/proc/self/clear_refs, so a short peak between two samples cannot be missed; glibc's freed-but-kept heap is handed
back first (malloc_trim), so the growth counts what the call allocates rather than what earlier tests left free.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import re
from pathlib import Path

import pytest
import torch
from torchvision.models import resnet152
from torchvision.models.resnet import Bottleneck, ResNet

from explainers import batching, explain
from explainers.hooks import model_guard

pytestmark = pytest.mark.slow

SIZE = 32  # px: ResNet-152's activations per row shrink with the pixels, its depth and widths do not
STEPS = 200
STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_bytes(field: str) -> int:
    return int(re.search(rf"^{field}:\s+(\d+) kB", STATUS.read_text(), re.MULTILINE).group(1)) * 1024


def _trim_heap() -> None:
    name = ctypes.util.find_library("c")
    trim = getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None
    if trim is not None:  # glibc only; elsewhere the growth is measured from a fuller heap, which only lowers it
        trim(0)


def peak_growth(run):
    """(run(), how far the resident memory rose above its level before the call, at its highest during it)."""
    _trim_heap()
    before = _status_bytes("VmRSS")
    CLEAR_REFS.write_text("5")  # resets VmHWM to the current resident size (Linux 4.0+)
    result = run()
    return result, _status_bytes("VmHWM") - before


@pytest.fixture(scope="module")
def peak_readable():
    try:
        CLEAR_REFS.write_text("5")
        _status_bytes("VmHWM")
    except (OSError, AttributeError):
        pytest.skip("the peak resident memory needs Linux's /proc/self/clear_refs and VmHWM")


@pytest.fixture(scope="module")
def resnet152_shape():
    """torchvision's ResNet-152 layout: the stem, Bottleneck blocks 3, 8, 36, 3 (152 layers) and the outer widths
    256-2048, with the bottlenecks' inner widths at 1/8 (width_per_group=8) and 10 classes: 6.6 M parameters
    instead of 60 M, and 3/4 of ResNet-152's bytes per row of a gradient pass (row_bytes at 32 px: 3.1 MiB against
    4.0). Below 16 rows on one thread PyTorch runs 1x1 convolutions as one matrix product per row, whose time grows
    with the weights: the full widths take minutes of IG-200 here, for the same test of the same estimate."""
    torch.manual_seed(0)
    return ResNet(Bottleneck, [3, 8, 36, 3], width_per_group=8, num_classes=10).eval()


def test_integrated_gradients_200_steps_fit_the_budget_by_the_automatic_batch_size(monkeypatch, peak_readable,
                                                                                   resnet152_shape):
    model = resnet152_shape
    torch.manual_seed(1)
    x = torch.randn(1, 3, SIZE, SIZE)
    with model_guard(model):
        per_row = batching.row_bytes(model, x)  # the estimate the automatic batch size divides the budget by

    def integrated_gradients(**kwargs):
        return explain(model, x, "integrated_gradients", target=0, n_steps=STEPS, baseline="zero", **kwargs)

    runs = {}
    for rows in (8, 4):  # budgets whose share fits 8 and 4 estimated rows: the second is the tighter
        budget = int(rows * per_row / batching.MEMORY_SHARE["cpu"])
        monkeypatch.setattr(batching, "free_memory", lambda device, budget=budget: budget)
        explanation, peak = peak_growth(integrated_gradients)
        assert explanation.batch_size_used == rows < batching.CPU_BATCH_SIZE  # the budget, not the speed, chose
        assert peak <= budget, (f"IG-{STEPS} at {rows} rows a pass rose {peak / 2**20:.1f} MiB over a budget of "
                                f"{budget / 2**20:.1f} MiB")
        assert torch.isfinite(explanation.attribution).all()
        runs[rows] = explanation, peak, budget

    (roomy, roomy_peak, _), (tight, tight_peak, tight_budget) = runs[8], runs[4]
    assert tight_peak < roomy_peak  # fewer rows a pass hold less at once
    assert torch.allclose(tight.attribution, roomy.attribution, atol=1e-6, rtol=1e-4)  # and give the same map

    # the measurement can fail: the same call made to run 64 rows a pass goes far past the tight budget
    forced, forced_peak = peak_growth(lambda: integrated_gradients(batch_size=64))
    assert forced.batch_size_used == 64
    assert forced_peak > 2 * tight_budget, f"64 rows a pass rose only {forced_peak / 2**20:.1f} MiB"


def test_resnet152_at_224_px_fits_the_budget_too(monkeypatch, peak_readable):
    """The full model at full size, where a row of a gradient pass holds about 200 MB: a few steps (what a pass
    holds does not depend on how many passes follow) on a budget whose share fits two rows."""
    torch.manual_seed(0)
    model = resnet152(weights=None).eval()
    x = torch.randn(1, 3, 224, 224)
    with model_guard(model):
        per_row = batching.row_bytes(model, x)
    budget = int(2 * per_row / batching.MEMORY_SHARE["cpu"])
    monkeypatch.setattr(batching, "free_memory", lambda device: budget)
    explanation, peak = peak_growth(
        lambda: explain(model, x, "integrated_gradients", target=0, n_steps=4, baseline="zero"))
    assert explanation.batch_size_used == 2
    assert peak <= budget, f"a pass of 2 rows rose {peak / 2**20:.0f} MiB over a budget of {budget / 2**20:.0f} MiB"
    assert peak > per_row  # the two rows were really held: the measurement sees a pass of this model
