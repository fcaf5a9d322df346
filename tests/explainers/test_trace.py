"""Inside the gradient: per-layer activations and gradients of one forward and backward pass."""

from __future__ import annotations

import pytest
import torch

from explainers import ParameterError, explain
from explainers.trace import Stats, trace_gradient, traced_modules

from .helpers import small_convnet


def test_the_trace_ends_in_the_vanilla_gradient_and_starts_from_a_one_hot_seed():
    model = small_convnet()
    x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trace = trace_gradient(model, x, target=2, scope="leaves")
    vanilla = explain(model, x, "vanilla", target=2).attribution
    assert trace.input_gradient.minimum == pytest.approx(float(vanilla.min()), abs=1e-7)
    assert trace.input_gradient.maximum == pytest.approx(float(vanilla.max()), abs=1e-7)
    assert trace.input_gradient.mean == pytest.approx(float(vanilla.double().mean()), abs=1e-7)
    last = trace.layers[-1]  # the logits: d score / d logits is the one-hot vector of the target
    classes = model(x).shape[-1]
    assert last.shape == (1, classes) and last.gradient.minimum == 0 and last.gradient.maximum == 1
    assert last.gradient.mean == pytest.approx(1 / classes)
    assert trace.target == (2,) and trace.score == pytest.approx(float(model(x)[0, 2].detach()), rel=1e-5)
    assert [layer.name for layer in trace.layers] == [name for name, _ in traced_modules(model, "leaves")
                                                      if name in {layer.name for layer in trace.layers}]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not any(m._forward_hooks for m in model.modules())


def test_a_relu_output_has_zeros_and_the_histogram_counts_every_element():
    model = small_convnet()
    trace = trace_gradient(model, torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(1)), 0,
                           scope="leaves", bins=10)
    relu = next(layer for layer in trace.layers if layer.kind == "ReLU")
    assert relu.activation.minimum == 0 and relu.activation.zeros > 0
    assert sum(relu.activation.counts) == torch.Size(relu.shape).numel()
    assert len(relu.activation.edges) == 11


def test_stats_and_scopes():
    stats = Stats.of(torch.tensor([0.0, 0.0, 1.0, 3.0]), bins=3)
    assert (stats.minimum, stats.maximum, stats.mean, stats.zeros) == (0.0, 3.0, 1.0, 0.5)
    assert stats.counts == [2, 1, 1] and stats.edges == [0.0, 1.0, 2.0, 3.0]  # bins [0,1) [1,2) [2,3]
    with pytest.raises(ParameterError, match="scope must be one of blocks, leaves"):
        traced_modules(small_convnet(), "all")
    with pytest.raises(ParameterError, match="one image"):
        trace_gradient(small_convnet(), torch.randn(2, 3, 16, 16), 0)


def test_blocks_open_the_default_models_block_list(default_bundle):
    names = [name for name, _ in traced_modules(default_bundle.model, "blocks")]
    assert names[:3] == ["_conv_stem", "_bn0", "_stem_act"]
    assert [n for n in names if n.startswith("_blocks.")] == [f"_blocks.{i}" for i in range(16)]


def _execution_order(model: torch.nn.Module, x: torch.Tensor, scope: str) -> list[str]:
    """The traced modules in the order a plain forward pass calls them, recorded by this test's own hooks."""
    order: list[str] = []
    handles = [module.register_forward_hook(lambda m, a, o, name=name: order.append(name))
               for name, module in traced_modules(model, scope)]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return order


@pytest.mark.parametrize("scope", ["blocks", "leaves"])
def test_the_trace_follows_the_forward_pass_on_the_digits_model(scope):
    from explainers.digits.model import load_lenet

    model = load_lenet(rgb=True)  # declares its first step, gray, last
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    order = _execution_order(model, x, scope)
    declared = [name for name, _ in traced_modules(model, scope)]
    assert order[0] == "gray" and declared.index("gray") > 0  # the case that was plotted last
    trace = trace_gradient(model, x, 0, scope=scope)
    names = [layer.name for layer in trace.layers]
    assert [name.split(" (call ")[0] for name in names] == order
    assert len(set(names)) == len(names)  # a module called twice has one entry per call, each named apart


def test_the_trace_follows_the_forward_pass_on_the_default_model(default_bundle):
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    order = _execution_order(default_bundle.model, x, "blocks")
    trace = trace_gradient(default_bundle, x, 0, scope="blocks")
    assert [layer.name for layer in trace.layers] == order
    assert trace.layers[-1].shape == (1, 1000)  # the logits come last


def test_a_module_called_twice_is_traced_at_each_call_in_order():
    class Shared(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.head = torch.nn.Linear(4, 3)  # declared first, called last
            self.act = torch.nn.Tanh()
            self.body = torch.nn.Linear(4, 4)

        def forward(self, x):
            return self.head(self.act(self.body(self.act(x.flatten(1)[:, :4]))))

    trace = trace_gradient(Shared(), torch.randn(1, 1, 2, 2), 0, scope="leaves")
    assert [layer.name for layer in trace.layers] == ["act", "body", "act (call 2)", "head"]
    assert trace.layers[2].shape == (1, 4) and trace.layers[2].gradient is not None
