"""explain() from several threads on one shared model gives exactly the serial results and leaves no trace."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from explainers import explain, hooks

from .helpers import assert_untouched, hook_counts, imagenet_input, small_convnet, snapshot

# Methods that share the model in different ways: plain autograd, hooks on every ReLU (guided), a forward hook
# on one layer (CAMs on different layers), many batched passes (SmoothGrad, IG, RISE).
CASES = [
    ("vanilla", {}),
    ("guided_backprop", {}),
    ("gradcam", {"layer": "features.2"}),
    ("gradcam", {"layer": "features.5"}),
    ("layercam", {"layer": "features.4"}),
    ("smoothgrad", {"n_samples": 4, "seed": 3}),
    ("integrated_gradients", {"n_steps": 4, "baseline": "zero"}),
    ("rise", {"n_masks": 12, "seed": 1}),
]
REPEATS = 4


def _run(model, x, method, params):
    result = explain(model, x, method, target=1, batch_size=2, **params)
    return result.attribution, result.logits


def _hammer(model, x, cases, repeats):
    """Every case in its own thread, all released together, each repeated; returns the results per case."""
    start = threading.Barrier(len(cases))

    def worker(case):
        method, params = case
        start.wait()
        return [_run(model, x, method, params) for _ in range(repeats)]

    with ThreadPoolExecutor(len(cases)) as pool:
        return list(pool.map(worker, cases))


def _assert_same(serial, threaded, label):
    for attribution, logits in threaded:
        gap = float((attribution - serial[0]).abs().max())
        assert gap <= 1e-6 * max(float(serial[0].abs().max()), 1.0), f"{label}: map differs by {gap:.3g}"
        assert torch.allclose(logits, serial[1], rtol=0, atol=1e-6), f"{label}: logits differ"


def test_threads_on_one_small_model_get_the_serial_results():
    model = small_convnet()
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    before = snapshot(model)
    serial = [_run(model, x, method, params) for method, params in CASES]
    threaded = _hammer(model, x, CASES, REPEATS)
    for (method, params), expected, got in zip(CASES, serial, threaded, strict=True):
        _assert_same(expected, got, f"{method} {params}")
    assert_untouched(model, before)


def test_threads_on_the_default_model_get_the_serial_results(default_bundle):
    model = default_bundle.model
    x = imagenet_input("cat.png", default_bundle.input_size)
    cases = [("vanilla", {}), ("guided_backprop", {}), ("gradcam", {})]
    before = snapshot(model)
    serial = [_run(default_bundle, x, method, params) for method, params in cases]
    threaded = _hammer(default_bundle, x, cases, 2)
    for (method, _params), expected, got in zip(cases, serial, threaded, strict=True):
        _assert_same(expected, got, method)
    assert hook_counts(model) == 0
    assert_untouched(model, before)


def test_nested_calls_on_one_thread_do_not_deadlock():
    """The lock is re-entrant: a check that explains inside its own guard (as sanity checks do) still runs."""
    model = small_convnet()
    x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with hooks.model_lock(model):
        result = explain(model, x, "vanilla", target=0)
    assert torch.isfinite(result.attribution).all()


def test_different_models_do_not_wait_for_each_other():
    """The lock is per model: a call on another model runs while one model's lock is held."""
    held, other = small_convnet(0), small_convnet(1)
    x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    acquired = threading.Event()
    release = threading.Event()

    def hold():
        with hooks.model_lock(held):
            acquired.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert acquired.wait(30)
        done = []
        runner = threading.Thread(target=lambda: done.append(explain(other, x, "vanilla", target=0)))
        runner.start()
        runner.join(30)
        assert done, "a call on another model waited for the held model's lock"
    finally:
        release.set()
        holder.join(30)


@pytest.mark.parametrize("method", ["gradcam", "guided_backprop"])
def test_a_model_left_in_train_mode_keeps_it_under_threads(method):
    """model_guard's eval/restore under the lock: concurrent calls never see another's half-restored flags."""
    model = small_convnet().train()
    x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    before = snapshot(model)
    serial = _run(model, x, method, {})
    threaded = _hammer(model, x, [(method, {})] * 4, 3)
    for got in threaded:
        _assert_same(serial, got, method)
    assert_untouched(model, before, training=True)


def test_layer_catalogue_and_first_layer_while_others_explain():
    """The catalogue's dummy forward and the sanity check's first-layer probe register hooks on the shared model
    too: run beside explain() threads they give the serial answers, and explain's results stay exact."""
    from explainers.layers import layer_catalogue
    from explainers.trust.sanity import first_layer

    model = small_convnet()
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    expected_layers = [(e.name, e.shape) for e in layer_catalogue(model, (1, 3, 16, 16))]
    expected_first = first_layer(model, x)
    serial = {i: _run(model, x, *CASES[i % 3]) for i in range(3)}
    start = threading.Barrier(6)

    def catalogue(_):
        start.wait()
        return [[(e.name, e.shape) for e in layer_catalogue(model, (1, 3, 16, 16))] for _ in range(10)]

    def probe(_):
        start.wait()
        return [first_layer(model, x) for _ in range(10)]

    def explaining(i):
        start.wait()
        return [_run(model, x, *CASES[i % 3]) for _ in range(5)]

    with ThreadPoolExecutor(6) as pool:
        cats = [pool.submit(catalogue, 0), pool.submit(catalogue, 1)]
        probes = [pool.submit(probe, 0)]
        runs = {i: pool.submit(explaining, i) for i in range(3)}
        assert all(found == expected_layers for f in cats for found in f.result())
        assert all(found == expected_first for found in probes[0].result())
        for i, future in runs.items():
            for attribution, logits in future.result():
                assert torch.equal(attribution, serial[i][0]) and torch.equal(logits, serial[i][1])
    assert hook_counts(model) == 0


def test_a_scoring_wrapper_adopts_its_networks_modules_and_lock():
    """``hooks.adopt_modules``, the one step of every scoring wrapper (dense boxes, text embeddings): the net's
    modules, parameters and buffers are the wrapper's under their own names, the net itself is held, not
    registered, and both take one lock."""
    from explainers.dense.targets import DenseScores
    from explainers.text.scores import EmbeddingScores
    from tests.text_models import tiny_bert

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body = torch.nn.Linear(2, 2)
            self.scale = torch.nn.Parameter(torch.ones(1))
            self.register_buffer("shift", torch.zeros(1))

    def plain(net):
        wrapper = torch.nn.Module()
        hooks.adopt_modules(wrapper, net)
        return wrapper

    for net, wrap in [(Net(), plain), (Net(), lambda n: DenseScores(n, "detection", [])),
                      (tiny_bert(), EmbeddingScores)]:
        wrapper = wrap(net)
        assert wrapper.net is net and "net" not in dict(wrapper.named_children())
        assert dict(wrapper.named_parameters()) == dict(net.named_parameters())
        assert dict(wrapper.named_buffers()) == dict(net.named_buffers())
        assert all(dict(wrapper.named_modules())[name] is module for name, module in net.named_modules() if name)
        assert hooks.lock_for(wrapper) is hooks.lock_for(net)
