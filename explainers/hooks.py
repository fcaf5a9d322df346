"""Everything that touches a model temporarily lives here, and every hook is removed in ``finally``.

Hooks exist only inside a call: nothing is registered in a constructor and left for a destructor.

Thread safety: hooks live on the shared modules (they fire for every thread's forward pass) and the train/eval
flags are shared too, so one model serves one call at a time. ``model_guard`` takes the model's re-entrant
lock, and every backend entry point that registers hooks or changes module state runs inside it; calls on
different models run in parallel, and nested calls on one thread (a sanity check calling explain) re-enter.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Iterator

import torch
from torch import nn

_LOCKS: weakref.WeakKeyDictionary[nn.Module, threading.RLock] = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()  # two threads asking for a new model's lock must get the same one


def lock_for(model: nn.Module) -> threading.RLock:
    """The model's own re-entrant lock, created on first use and dropped with the model. A module that shares
    another's submodules (a dense model's scoring wrapper, :class:`explainers.dense.DenseScores`) names that
    module as ``lock_owner`` and takes its lock: their hooks land on the same modules."""
    model = getattr(model, "lock_owner", model)
    with _LOCKS_GUARD:
        lock = _LOCKS.get(model)
        if lock is None:
            lock = _LOCKS[model] = threading.RLock()
        return lock


def adopt_modules(wrapper: nn.Module, net: nn.Module) -> None:
    """Make ``net``'s children, own parameters and buffers ``wrapper``'s, under their own names, and hold ``net``
    as ``wrapper.net`` without registering it: a layer named on the network (``backbone.body.layer4``,
    ``bert.encoder.layer.1``) is the same module on the wrapper, and randomising or moving the wrapper's weights
    moves the network's. ``net`` is also the wrapper's ``lock_owner`` (see :func:`lock_for`): their hooks land on
    the same modules, so they share one lock. Used by the scoring wrappers of dense and text models."""
    object.__setattr__(wrapper, "net", net)  # not registered: its modules are the wrapper's own already
    object.__setattr__(wrapper, "lock_owner", net)
    for name, child in net.named_children():
        wrapper.add_module(name, child)
    for name, param in net.named_parameters(recurse=False):
        wrapper.register_parameter(name, param)
    for name, buffer in net.named_buffers(recurse=False):
        wrapper.register_buffer(name, buffer)


@contextlib.contextmanager
def model_lock(model: nn.Module) -> Iterator[None]:
    """Hold ``model``'s lock for the block: no other thread's call touches the model meanwhile."""
    with lock_for(model):
        yield


def submodules(model: nn.Module) -> list[nn.Module]:
    """``model`` and every module below it, each once, in no particular order: ``model.modules()`` without the
    dotted names that ``named_modules`` builds on the way (a fifth of a millisecond on a 150-module network, paid
    on every call)."""
    found, seen, stack = [], set(), [model]
    while stack:
        module = stack.pop()
        if module is None or id(module) in seen:
            continue
        seen.add(id(module))
        found.append(module)
        stack.extend(module._modules.values())
    return found


@contextlib.contextmanager
def model_guard(model: nn.Module) -> Iterator[None]:
    """Run the block holding the model's lock, with the model in eval mode; restore every submodule's
    train/eval flag and the parameters' requires_grad on exit, however it exits.

    Eval mode because an explanation must not change the model: in train mode BatchNorm would update its running
    statistics on every pass and dropout would make each pass a different network. The lock because both the
    flags and the hooks a method registers are shared with every other thread using this model.
    """
    with model_lock(model):
        # One walk records each module's flag and each parameter's; Module.eval() walks the tree again and sets
        # every flag through nn.Module.__setattr__, most of this guard's cost, so it runs only when some module is
        # in train mode (a loaded model usually is not), and the exit writes back only the flags that changed.
        modules = submodules(model)
        modes = [(module, module.training) for module in modules]
        flags = [(param, param.requires_grad) for module in modules for param in module._parameters.values()
                 if param is not None]
        try:
            if any(training for _, training in modes):
                model.eval()
            yield
        finally:
            for module, training in modes:
                if module.training != training:
                    module.training = training
            for param, requires_grad in flags:
                if param.requires_grad != requires_grad:
                    param.requires_grad_(requires_grad)


class HookSet:
    """Handles registered during one call, all removed together."""

    def __init__(self) -> None:
        self.handles: list[torch.utils.hooks.RemovableHandle] = []

    def add(self, handle: torch.utils.hooks.RemovableHandle) -> None:
        self.handles.append(handle)

    def remove(self) -> None:
        while self.handles:
            self.handles.pop().remove()


RULES = ("guided", "deconvnet")


class BackwardRule:
    """Which rule the rectified activations apply on the next backward pass: ``None`` for the plain gradient
    (as nn.ReLU / nn.ReLU6 themselves), "guided" or "deconvnet". One forward pass can so serve a plain backward
    and a rectified one: set ``rule`` before each ``torch.autograd.grad``."""

    def __init__(self, rule: str | None = None):
        self.rule = rule


class _RectifiedActivation(torch.autograd.Function):
    """Clamp to [low, high] forward; backward by the rule ``rule_now()`` names when the backward runs. The
    fallback of :func:`rectified_backward` for an activation that leaves no native node of a known mask to hook
    (a subclass with its own ``forward``, an in-place one applied to a view).

    guided backprop (Springenberg 2015, arXiv:1412.6806): relu(grad) where the input was in (low, high);
    deconvnet (Zeiler & Fergus 2014, arXiv:1311.2901): relu(grad) whatever the forward input was; no rule: the
    activation's own gradient, grad where the input was in (low, high) and 0 elsewhere (boundaries included, as
    ReLU's and ReLU6's backward have it).
    """

    @staticmethod
    def forward(ctx, x, low, high, rule_now):
        ctx.rule_now = rule_now
        ctx.save_for_backward((x > low) & (x < high))
        return x.clamp(min=low, max=high)

    @staticmethod
    def backward(ctx, grad):
        (inside,) = ctx.saved_tensors
        rule = ctx.rule_now()
        if rule is None:
            return torch.where(inside, grad, torch.zeros_like(grad)), None, None, None
        grad = grad.clamp(min=0)
        if rule == "guided":
            grad = grad * inside
        return grad, None, None, None


def _clamp_range(module: nn.Module) -> tuple[float, float] | None:
    if isinstance(module, nn.ReLU):
        return (0.0, float("inf"))
    if isinstance(module, nn.ReLU6):
        return (0.0, 6.0)
    return None


# The autograd nodes nn.ReLU's and nn.ReLU6's own forward leave (in place or not): each passes the output's
# gradient where the input was strictly inside the clamp range (ReLU: x > 0; ReLU6, a Hardtanh: 0 < x < 6) and 0
# elsewhere, the mask the rules need.
_NATIVE_NODES = frozenset({"ReluBackward0", "HardtanhBackward0"})
_NATIVE_FORWARDS = (nn.ReLU.forward, nn.ReLU6.forward)


@contextlib.contextmanager
def rectified_backward(model: nn.Module, rule: BackwardRule) -> Iterator[int]:
    """Inside the block every nn.ReLU / nn.ReLU6 of ``model`` back-propagates with whatever rule ``rule`` holds
    when each backward runs (see :class:`BackwardRule`). Yields the count of activations changed; functional
    relus (F.relu in a forward method) cannot be reached this way.

    The activation itself stays native: a forward hook puts a hook on the autograd node its output came from,
    which rewrites the gradient that node passes back. The node computes m ⊙ g (g the output's gradient, m the
    mask of inputs strictly inside the clamp range), so guided backprop's relu(g) ⊙ m is relu(m ⊙ g), one clamp of
    the node's result, and deconvnet's relu(g) is one clamp of the gradient the node received; no rule leaves the
    node's result as it is. In-place activations work as they are (the node then keeps the output, whose mask is
    the input's). An in-place one applied to a view leaves a view's node, and a subclass with its own forward an
    unknown one: these get a copy of their input first (when in place) and the rule through
    :class:`_RectifiedActivation`.
    """
    hooks = HookSet()
    inputs: dict[nn.Module, torch.Tensor] = {}
    live = [True]  # a graph kept past the block back-propagates plainly

    def rule_now() -> str | None:
        return rule.rule if live[0] else None

    def node_hook(grad_inputs, grad_outputs):
        current = rule_now()
        result, received = grad_inputs[0], grad_outputs[0]
        if current is None or result is None or received is None:
            return None
        if result.requires_grad:  # a double backward (create_graph): leave the graph's tensors as they are
            return ((result if current == "guided" else received).clamp(min=0),)
        # the node's result is a fresh tensor of its own: overwrite it rather than allocate another (the
        # gradient received may be shared with the output's other consumers, so it is only read)
        if current == "guided":
            result.clamp_(min=0)
        else:
            torch.clamp(received, min=0, out=result)
        return None

    def pre_hook(module, args):
        if args[0]._is_view() or type(module).forward not in _NATIVE_FORWARDS:
            inputs[module] = args[0]  # the in-place op writes into a copy; the rule needs the input it was given
            return (args[0].clone(),)
        return None

    def post_hook(module, args, output):
        original = inputs.pop(module, None)
        node = output.grad_fn
        if original is None:
            if node is None:
                return None  # no graph (inference): nothing to change
            if type(node).__name__ in _NATIVE_NODES and type(module).forward in _NATIVE_FORWARDS:
                node.register_hook(node_hook)
                return None
        low, high = _clamp_range(module)
        return _RectifiedActivation.apply(args[0] if original is None else original, low, high, rule_now)

    count = 0
    # the hooks sit on shared modules: hold the model's lock (explain() already does; this re-enters)
    with model_lock(model):
        try:
            for module in submodules(model):
                if isinstance(module, (nn.ReLU, nn.ReLU6)):
                    if getattr(module, "inplace", False):
                        hooks.add(module.register_forward_pre_hook(pre_hook))
                    # first of the forward hooks, so that it sees the activation's own output (capture_layer's
                    # hook hands the network a clone)
                    hooks.add(module.register_forward_hook(post_hook, prepend=True))
                    count += 1
            yield count
        finally:
            live[0] = False
            hooks.remove()
            inputs.clear()


class _LayerOutput:
    """What ``capture_layer`` saw on the last forward pass."""

    def __init__(self) -> None:
        self.output: torch.Tensor | None = None


@contextlib.contextmanager
def capture_layer(module: nn.Module) -> Iterator[_LayerOutput]:
    """Inside the block, ``.output`` is ``module``'s output on the latest forward pass (part of the graph).
    Call it inside ``model_guard`` of the model that owns ``module``: the hook fires for every forward through it.

    The network continues on a clone, so an in-place op downstream (a ReLU(inplace=True) after a conv) cannot
    overwrite the captured map; gradients still flow back through it.
    """
    seen = _LayerOutput()

    def hook(mod, args, output):
        if not isinstance(output, torch.Tensor):
            raise TypeError(f"expected the layer to output one tensor, got {type(output).__name__}")
        seen.output = output
        return output.clone()

    handle = module.register_forward_hook(hook)
    try:
        yield seen
    finally:
        handle.remove()
        seen.output = None
