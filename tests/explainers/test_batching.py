"""The automatic batch size: the speed optimum, capped by a measured per-row cost and the free memory."""

from __future__ import annotations

import pytest
import torch

from explainers import batching, explain
from explainers.core import method_batches
from explainers.hooks import model_guard

from .helpers import small_convnet

SIZE = 96  # 3x96x96 rows: a pass of the small net needs about a megabyte per row, so budgets are a few MB


@pytest.fixture
def net():
    return small_convnet()


@pytest.fixture
def images():
    torch.manual_seed(1)
    return torch.randn(2, 3, SIZE, SIZE)


def one_row_budget(net, images, forward_only):
    """Free bytes that fit exactly one row of a pass (a few MB here), on the CPU's share."""
    with model_guard(net):
        per_row = batching.row_bytes(net, images, forward_only)
    return int(1.5 * per_row / batching.MEMORY_SHARE["cpu"])


def test_row_bytes_is_measured_and_cached(net):
    small, large = torch.zeros(1, 3, 32, 32), torch.zeros(1, 3, 128, 128)
    calls = []
    handle = net.register_forward_hook(lambda *args: calls.append(1))
    try:
        with model_guard(net):
            forward_small = batching.row_bytes(net, small, forward_only=True)
            forward_large = batching.row_bytes(net, large, forward_only=True)
            backward_large = batching.row_bytes(net, large, forward_only=False)
            measured = len(calls)
            assert batching.row_bytes(net, large, forward_only=False) == backward_large
    finally:
        handle.remove()
    assert measured == 3 and len(calls) == 3, "one measuring pass per (shape, kind), then the cache"
    assert forward_large > 8 * forward_small  # 16x the pixels
    assert backward_large > forward_large  # autograd keeps every activation for the backward
    # the first conv's output alone, 8 x 128 x 128 float32, is held during a forward pass
    assert forward_large >= 8 * 128 * 128 * 4


def test_free_memory_is_read_on_the_cpu():
    free = batching.free_memory(torch.device("cpu"))
    assert free is None or free > 0


def test_cuda_budget_comes_from_mem_get_info(monkeypatch, net, images):
    asked = []

    def mem_get_info(device=None):
        asked.append(device)
        return 40 * 2**20, 80 * 2**30

    monkeypatch.setattr(torch.cuda, "mem_get_info", mem_get_info)
    monkeypatch.setattr(batching, "row_bytes", lambda model, inputs, forward_only=False, after=None: 2**20)
    cuda = torch.device("cuda", 0)
    assert batching.free_memory(cuda) == 40 * 2**20
    # half of 40 MB at 1 MB a row: 20 rows, below the GPU's speed optimum of 64
    assert batching.default_batch_size(cuda, model=net, inputs=images) == 20
    assert asked and all(torch.device(d) == cuda for d in asked)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (80 * 2**30, 80 * 2**30))
    assert batching.default_batch_size(cuda, model=net, inputs=images) == batching.CUDA_BATCH_SIZE


def test_free_memory_caps_the_batch(monkeypatch, net, images):
    """Fails if the free memory is ignored: the same call asks for fewer rows when less memory is free."""
    plenty = batching.default_batch_size(torch.device("cpu"), model=net, inputs=images, preferred=512)
    monkeypatch.setattr(batching, "free_memory", lambda device: one_row_budget(net, images, False))
    tight = batching.default_batch_size(torch.device("cpu"), model=net, inputs=images, preferred=512)
    assert tight == 1 < plenty
    monkeypatch.setattr(batching, "free_memory", lambda device: 0)
    assert batching.default_batch_size(torch.device("cpu"), model=net, inputs=images) == 1  # never 0
    # without a model and inputs only the speed optimum (what callers without them got before)
    assert batching.default_batch_size(torch.device("cpu")) == batching.CPU_BATCH_SIZE
    assert batching.default_batch_size(torch.device("cpu"), forward_only=True) == min(
        batching.CPU_FORWARD_MAX_ROWS, batching.CPU_FORWARD_ROWS_PER_THREAD * torch.get_num_threads())


@pytest.mark.parametrize("method, params, layer", [
    ("integrated_gradients", {"n_steps": 6, "baseline": "zero"}, None),
    ("smoothgrad", {"n_samples": 6}, None),
    ("occlusion", {"window": 32, "stride": 32}, None),
    ("scorecam", {}, "features.5"),
])
def test_tiny_budget_gives_a_smaller_batch_and_the_same_result(monkeypatch, net, images, method, params, layer):
    kwargs = {"target": "top1", "seed": 3, "layer": layer, **params}
    reference = explain(net, images, method, **kwargs)
    forward_only = method in ("occlusion", "scorecam")
    assert reference.batch_size_used == batching.preferred_batch_size(torch.device("cpu"), forward_only)
    monkeypatch.setattr(batching, "free_memory", lambda device: one_row_budget(net, images, forward_only))
    tight = explain(net, images, method, **kwargs)
    assert tight.batch_size_used == 1 < reference.batch_size_used
    assert torch.allclose(tight.attribution, reference.attribution, atol=1e-6, rtol=1e-4)
    assert torch.equal(tight.target, reference.target)


def test_an_explicit_batch_size_is_kept(monkeypatch, net, images):
    monkeypatch.setattr(batching, "free_memory", lambda device: 0)
    assert explain(net, images, "occlusion", target=0, batch_size=3, window=32, stride=32).batch_size_used == 3


def test_cpu_gradient_batches_keep_every_tensor_below_the_allocators_mapping_size(net):
    """Fails if the cap is gone: a row whose first activation is 8 MiB gets 3 rows a gradient pass on a CPU (24 MiB),
    not the 16 the speed optimum asks for (CUDA is not capped this way)."""
    big = torch.zeros(1, 3, 512, 512)  # the first conv's output: 8 channels x 512 x 512 float32 = 8 MiB a row
    with model_guard(net):
        largest = batching.largest_tensor_bytes(net, big)
        size = batching.default_batch_size(torch.device("cpu"), model=net, inputs=big)
    assert largest >= 8 * 512 * 512 * 4
    assert size == batching.CPU_LARGEST_TENSOR // largest < batching.CPU_BATCH_SIZE
    small = torch.zeros(1, 3, 32, 32)
    with model_guard(net):
        assert batching.default_batch_size(torch.device("cpu"), model=net, inputs=small) == batching.CPU_BATCH_SIZE


def test_cpu_forward_batches_keep_every_tensor_below_the_allocators_mapping_size(net):
    """The same bound for forward-only passes (a batch's largest tensor mapped afresh each pass cost Score-CAM and
    occlusion a third of their CPU time in system time): fails if forward-only batches escape it."""
    big = torch.zeros(1, 3, 512, 512)
    with model_guard(net):
        largest = batching.largest_tensor_bytes(net, big, forward_only=True)
        size = batching.default_batch_size(torch.device("cpu"), forward_only=True, model=net, inputs=big)
    assert largest >= 8 * 512 * 512 * 4
    assert size == batching.CPU_LARGEST_TENSOR // largest < batching.preferred_batch_size("cpu", forward_only=True)


def test_a_pass_entered_after_a_module_is_measured_from_there(net):
    """Ablation-CAM's copies enter the pass after its layer: only what follows it is counted, and it is less."""
    big = torch.zeros(1, 3, 256, 256)
    layer = net.features[5]  # the last conv: after it only its ReLU, the pooling and the head
    with model_guard(net):
        whole = batching.row_bytes(net, big, True), batching.largest_tensor_bytes(net, big, True)
        after = (batching.row_bytes(net, big, True, after=layer),
                 batching.largest_tensor_bytes(net, big, True, after=layer))
        size = batching.default_batch_size(torch.device("cpu"), True, model=net, inputs=big, after=layer)
    assert after[0] < whole[0] and after[1] < whole[1]
    assert after[1] <= 16 * 128 * 128 * 4  # the last conv's output, 16 x 128 x 128 float32, is the largest left
    assert size > batching.default_batch_size(torch.device("cpu"), True, model=net, inputs=big)


def test_batches_say_whether_their_size_was_chosen_or_asked_for(net, images):
    with model_guard(net):
        chosen = method_batches(net, images, None, True)
        asked = method_batches(net, images, chosen.size, True)
    assert chosen.automatic and batching.Batches(None).automatic
    assert not asked.automatic and not batching.Batches(7).automatic
