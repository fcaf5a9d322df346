"""The engine: inside ``with lrp_rules(model, rules):`` the ordinary autograd backward of the model computes LRP.

How: each covered layer's forward returns its usual value, but built from autograd operations whose backward
is the layer's rule (zennit instead re-runs a modified forward inside backward hooks). The ε rule costs nothing
beyond a gradient: the input's gradient is multiplied by the input on its way in (``_Lift``) and the output's
divided by the stabilised output on its way out, and the layer's own backward does the rest. Other rules add
their modified layers (W⁺, W + γW⁺, ...) beside the layer's own value (``_Combine``). Operations outside modules
(residual sums, functional activations and pooling) are caught by a ``TorchFunctionMode`` while the model's
forward runs; one that no rule covers (two branches multiplied, attention, a functional linear layer) raises a
SaliencyError naming it and the layer it follows, instead of drawing a wrong map.

Hooks live only inside the block and are removed, and the parameters' ``requires_grad`` restored, in ``finally``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves

from ..errors import SaliencyError
from ..hooks import HookSet, model_lock
from .canonizers import BATCH_NORMS, batch_norm_pairs, leaves, merged
from .composites import CONVOLUTIONS
from .rules import DEFAULT_STABILIZER, Group, Rule, stabilize

ADDS = frozenset({"add", "add_", "__add__", "__radd__", "__iadd__"})
ACTIVATIONS = frozenset({
    "relu", "relu_", "relu6", "hardtanh", "hardtanh_", "leaky_relu", "leaky_relu_", "elu", "elu_", "selu", "selu_",
    "celu", "celu_", "gelu", "silu", "mish", "sigmoid", "sigmoid_", "tanh", "tanh_", "hardswish", "hardsigmoid",
    "softplus", "softsign", "tanhshrink", "logsigmoid", "prelu", "rrelu", "rrelu_", "threshold", "threshold_",
})
# averages and sums (functional pooling such as ``x.mean([2, 3])``) and one branch scaled or shifted by constants
# (``x * c + d``, e.g. a model's own input transform): the proportional (Norm) rule, R_x = x ∂z/∂x R_z / z, which
# passes the relevance whole through a scaling and lets a shift absorb its share, as a bias does
AVERAGES = frozenset({"avg_pool1d", "avg_pool2d", "avg_pool3d", "adaptive_avg_pool1d", "adaptive_avg_pool2d",
                      "adaptive_avg_pool3d", "mean", "sum", "nansum", "nanmean",
                      "add", "__add__", "__radd__", "sub", "__sub__", "__rsub__", "mul", "__mul__", "__rmul__", "div",
                      "__truediv__"})
# the same operations in place: they would write into the tensor the rule reads, so they are refused on one branch
IN_PLACE_AFFINE = frozenset({"add_", "__iadd__", "sub_", "__isub__", "mul_", "__imul__", "div_", "__itruediv__"})
JOINS = frozenset({"cat", "concat", "concatenate", "stack", "hstack", "vstack"})  # the gradient routes relevance
# single-input operations that need a rule of their own when called outside a covered module
REFUSED = frozenset({"linear", "bilinear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
                     "conv_transpose3d", "batch_norm", "layer_norm", "group_norm", "instance_norm", "rms_norm",
                     "softmax", "log_softmax", "scaled_dot_product_attention", "matmul", "mm", "bmm", "einsum",
                     "multi_head_attention_forward"})
BASE_FORWARDS = {nn.Conv1d.forward, nn.Conv2d.forward, nn.Conv3d.forward}


class _Lift(torch.autograd.Function):
    """Forward: ``value``. Backward: the gradient, times ``factor`` and over ``divisor`` where given, to ``source``."""

    @staticmethod
    def forward(ctx, source, value, factor, divisor):
        ctx.kinds = (factor is not None, divisor is not None)
        ctx.save_for_backward(*(t for t in (factor, divisor) if t is not None))
        return value.view_as(value)

    @staticmethod
    def backward(ctx, grad):
        saved = list(ctx.saved_tensors)
        if ctx.kinds[0]:
            grad = grad * saved.pop(0)
        if ctx.kinds[1]:
            grad = grad / saved.pop(0)
        return grad, None, None, None


class _Combine(torch.autograd.Function):
    """Forward: ``value`` (the layer's true output). Backward: the gradient times each group's scale, to that
    group's sum of modified layers."""

    @staticmethod
    def forward(ctx, value, count, *rest):
        ctx.count = count
        ctx.save_for_backward(*rest[count:])
        return value.view_as(value)

    @staticmethod
    def backward(ctx, grad):
        scales = ctx.saved_tensors
        return (None, None, *(grad * scale for scale in scales), *(None for _ in scales))


class _Sum(torch.autograd.Function):
    """a + b, whose backward shares the relevance in proportion to each summand (zennit's Sum with Norm)."""

    @staticmethod
    def forward(ctx, a, b, stabilizer):
        ctx.stabilizer = stabilizer
        ctx.save_for_backward(a, b)
        return a + b

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved_tensors
        share = grad / stabilize(a + b, ctx.stabilizer)
        return a * share, b * share, None


def lift(source, value, factor=None, divisor=None):
    return _Lift.apply(source, value, factor, divisor)


@dataclass
class Unit:
    """A covered layer, with the BatchNorm merged into it (if any) and its rule."""

    layer: nn.Module
    name: str
    rule: Rule
    norm: nn.Module | None = None
    norm_name: str | None = None
    groups: tuple[Group, ...] = ()
    cache: dict = field(default_factory=dict)

    @property
    def shown(self) -> str:
        return f"{self.name} + {self.norm_name}" if self.norm is not None else self.name

    def parameters(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        if "merged" not in self.cache:  # per call: the model's parameters are constant while it runs
            self.cache["merged"] = merged(self.layer, self.norm)
        return self.cache["merged"]

    def modified(self, key, fn, tensor):
        if key not in self.cache:
            self.cache[key] = fn(tensor)
        return self.cache[key]


def _name(func) -> str:
    return getattr(func, "__name__", "") or str(func)


def _in_place(name: str, args, kwargs) -> bool:
    return (bool(kwargs.get("inplace")) or (name.endswith("_") and not name.endswith("__"))
            or any(a is True for a in args[1:]))


class Watch(TorchFunctionMode):
    """Hands every torch operation of the model's forward outside covered layers to the session."""

    def __init__(self, session: Session):
        super().__init__()
        self.session = session

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        session = self.session
        if session.active and not session.internal and session.depth == 0 and torch.is_grad_enabled():
            return session.functional(func, args, kwargs)
        return func(*args, **kwargs)


class Session:
    """The state of one ``lrp_rules`` block: the units, what each layer call saw, the residual sums met."""

    # what the refusals say is covered, and what to pick instead
    covers = ("LRP covers convolutions, linear layers, BatchNorm right after them, pooling, residual sums and "
              "elementwise activations")
    advice = "pick a gradient or CAM method for this model"

    def __init__(self, model: nn.Module, rules: dict[nn.Module, Rule], stabilizer: float = DEFAULT_STABILIZER):
        self.model = model
        self.stabilizer = stabilizer
        names = {module: name for name, module in model.named_modules()}
        pairs = {layer: (norm, norm_name) for norm, (layer, _, norm_name) in batch_norm_pairs(model).items()}
        self.units: dict[nn.Module, Unit] = {}
        self.norms: dict[nn.Module, Unit] = {}
        for layer, rule in rules.items():
            norm, norm_name = pairs.get(layer, (None, None))
            unit = Unit(layer, names.get(layer, type(layer).__name__), rule, norm, norm_name, rule.groups())
            self.units[layer] = unit
            if norm is not None:
                self.norms[norm] = unit
        self.active = False
        self.internal = False
        self.depth = 0
        self.last = "the input"
        self.inputs: dict[nn.Module, list[torch.Tensor]] = {}
        self.pending: dict[int, tuple[torch.Tensor, Unit, torch.Tensor]] = {}
        self.sums = 0

    # ---- the model's forward ---------------------------------------------------------------------------------

    def start(self) -> None:
        self.active, self.internal, self.depth, self.last = True, False, 0, "the input"
        self.inputs.clear()
        self.pending.clear()

    def stop(self) -> None:
        self.active = False
        self.inputs.clear()
        self.pending.clear()

    def refuse(self, what: str) -> None:
        raise SaliencyError(
            f"this model {what} after {self.last!r}, which no LRP rule covers, so its relevance map would be "
            f"wrong; {self.covers}; {self.advice}"
        )

    def _check_pending(self, tensors, consumer: str) -> None:
        for tensor in tensors:
            entry = self.pending.get(id(tensor))
            if entry is not None and entry[0] is tensor:
                unit = entry[1]
                raise SaliencyError(
                    f"the output of {unit.name!r} goes to {consumer} as well as to its BatchNorm {unit.norm_name!r}, "
                    "so the BatchNorm cannot be merged into it for LRP; pick a gradient or CAM method for this model"
                )

    def functional(self, func, args, kwargs):
        name = _name(func)
        tensors = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        if self.pending:
            self._check_pending(tensors, f"an operation ({name})")
        dependent = [t for t in tensors if t.requires_grad]
        if not dependent:
            return func(*args, **kwargs)
        if name in ADDS and len(dependent) == 2:
            a, b = args[0], args[1] if len(args) > 1 else kwargs.get("other")
            if (a is dependent[0] and b is dependent[1] and a.shape == b.shape and kwargs.get("alpha", 1) == 1
                    and len(args) <= 2):
                self.sums += 1
                return _Sum.apply(a, b, self.stabilizer)
            self.refuse(f"adds two branches of different shapes or with a factor ({name})")
        if name in ACTIVATIONS and len(dependent) == 1 and args and args[0] is dependent[0]:
            x = args[0]
            with torch.no_grad():
                source = x.detach().clone() if _in_place(name, args, kwargs) else x.detach()
                value = func(source, *args[1:], **kwargs)
            return lift(x, value)
        if name in AVERAGES and len(dependent) == 1 and args and any(a is dependent[0] for a in args[:2]):
            x = dependent[0]
            if self.last == "the input":
                # the model's own input transform, before any layer (LeNet's gray mean, Inception's per-channel
                # scale and shift): the relevance reaches the pixels whole, a mean shares it equally
                value = func(*args, **kwargs)
                if name in ("mean", "nanmean"):
                    return value
                return lift(x, value.detach()) if value.shape == x.shape else value
            lifted = [lift(x, x.detach(), x.detach()) if a is x else a for a in args]
            out = func(*lifted, **kwargs)
            return lift(out, out.detach(), None, stabilize(out.detach(), self.stabilizer))
        if name in IN_PLACE_AFFINE and len(dependent) == 1:
            self.refuse(f"changes one branch in place with {name!r} (outside a layer LRP knows)")
        if len(dependent) >= 2 and name not in JOINS:
            self.refuse(f"combines two branches with {name!r} (outside a layer LRP knows)")
        if name in REFUSED:
            self.refuse(f"calls {name!r} outside a layer LRP knows")
        return func(*args, **kwargs)

    # ---- layers -------------------------------------------------------------------------------------------------

    def layer_pre(self, module, args):
        if self.internal or not self.active:
            return None
        x = args[0]
        if self.pending:
            self._check_pending([x], f"{self.units[module].name!r}")
        self.depth += 1
        self.inputs.setdefault(module, []).append(x)
        unit = self.units[module]
        self.internal = True
        try:
            if unit.rule.plain:  # ε: the layer's own backward is the rule, once the input's gradient is scaled
                return (lift(x, x.detach(), x.detach()), *args[1:])
            return (x.detach(), *args[1:])  # the layer's value only: the rule builds its own graph
        finally:
            self.internal = False

    def layer_post(self, module, args, output):
        if self.internal or not self.active:
            return None
        self.depth -= 1
        x = self.inputs[module].pop()
        unit = self.units[module]
        if unit.norm is not None:
            self.pending[id(output)] = (output, unit, x)
            return None
        return self.apply(unit, x, output)

    def norm_pre(self, module, args):
        if self.internal or not self.active:
            return None
        unit = self.norms[module]
        if module.training:
            raise SaliencyError(f"BatchNorm {unit.norm_name!r} is in training mode; LRP merges its running "
                                "statistics, so put the model in eval mode (model.eval())")
        entry = self.pending.pop(id(args[0]), None)
        if entry is None or entry[0] is not args[0] or entry[1] is not unit:
            raise SaliencyError(
                f"BatchNorm {unit.norm_name!r} does not take the output of {unit.name!r} directly, so LRP cannot "
                "merge it into that layer; pick a gradient or CAM method for this model"
            )
        self.depth += 1
        self.inputs.setdefault(module, []).append(entry[2])
        return None

    def norm_post(self, module, args, output):
        if self.internal or not self.active:
            return None
        self.depth -= 1
        return self.apply(self.norms[module], self.inputs[module].pop(), output)

    def leaf_post(self, name):
        def hook(module, args, output):
            if self.active and not self.internal:
                self.last = name

        return hook

    def root_post(self, module, args, output):
        if not self.active:
            return None
        if self.pending:
            unit = next(iter(self.pending.values()))[1]
            raise SaliencyError(f"the output of {unit.name!r} never reached its BatchNorm {unit.norm_name!r}, so "
                                "LRP cannot merge them; pick a gradient or CAM method for this model")
        self.stop()
        if not isinstance(output, torch.Tensor):
            raise SaliencyError(f"LRP needs a model that returns one tensor of logits; it returned "
                                f"{type(output).__name__}")
        self.internal = True
        try:  # the relevance put into each logit: the score's gradient there times the logit
            return lift(output, output.detach(), output.detach())
        finally:
            self.internal = False

    def apply(self, unit: Unit, x: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        """The layer's value ``output`` with ``unit``'s rule as its backward (x: the layer's input)."""
        rule = unit.rule
        self.internal = True
        try:
            value = output.detach()
            if rule.plain:  # output carries the layer's (and BatchNorm's) own graph from the scaled input
                return lift(output, value, None, stabilize(value, rule.stabilizer))
            weight, bias = unit.parameters()
            plain_x = x.detach()
            sums, scales = [], []
            for g, group in enumerate(unit.groups):
                total = None
                for t, term in enumerate(group.terms):
                    modified = unit.modified((g, t, "w"), term.weight, weight)
                    factor = None if term.factor is None else term.factor(plain_x)
                    out = self.layer(unit.layer, lift(x, term.value(plain_x), factor), modified)
                    if term.bias is not None and bias is not None:
                        shift = unit.modified((g, t, "b"), term.bias, bias)
                        out = out + (shift.view(1, -1, *([1] * (out.dim() - 2)))
                                     if isinstance(unit.layer, CONVOLUTIONS) else shift)
                    total = out if total is None else total + out
                scale = group.coefficient / stabilize(total.detach(), rule.stabilizer)
                if group.mask == "positive":
                    scale = scale * (value > 0)
                elif group.mask == "negative":
                    scale = scale * (value < 0)
                sums.append(total)
                scales.append(scale)
            return _Combine.apply(value, len(sums), *sums, *scales)
        finally:
            self.internal = False

    @staticmethod
    def layer(module: nn.Module, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """``module``'s forward with ``weight`` and no bias (the caller adds the rule's bias)."""
        if isinstance(module, nn.Linear) and type(module).forward is nn.Linear.forward:
            return F.linear(x, weight)
        if isinstance(module, CONVOLUTIONS) and type(module).forward in BASE_FORWARDS:
            return module._conv_forward(x, weight, None)
        # a subclass with its own forward (e.g. TensorFlow SAME padding): run it with the weights swapped in
        swapped = {"weight": weight}
        if module.bias is not None:
            swapped["bias"] = torch.zeros_like(module.bias)
        return torch.func.functional_call(module, swapped, (x,))


@contextlib.contextmanager
def lrp_rules(model: nn.Module, rules: dict[nn.Module, Rule], stabilizer: float = DEFAULT_STABILIZER,
              ) -> Iterator[Session]:
    """Inside the block, the gradient of a score with respect to the model's input is its LRP relevance under
    ``rules`` ({layer: rule}; see ``composites.py``), with the relevance at the logits = the score's gradient there
    times the logits. The model's values (and logits) are unchanged; the model is left as found."""
    with running(model, Session(model, rules, stabilizer)) as session:
        yield session


@contextlib.contextmanager
def running(model: nn.Module, session: Session) -> Iterator[Session]:
    """Installs ``session`` on ``model`` (hooks and the function mode) for the block; removes it in ``finally``."""
    hooks = HookSet()
    flags = [(p, p.requires_grad) for p in model.parameters()]
    with model_lock(model):
        try:
            for p, _ in flags:  # so that "requires grad" means "depends on the input" inside the forward
                p.requires_grad_(False)
            hooks.add(model.register_forward_pre_hook(lambda module, args: session.start()))
            for name, module in leaves(model):
                hooks.add(module.register_forward_hook(session.leaf_post(name)))
            for layer in session.units:
                hooks.add(layer.register_forward_pre_hook(session.layer_pre))
                hooks.add(layer.register_forward_hook(session.layer_post))
            for norm in session.norms:
                if isinstance(norm, BATCH_NORMS):
                    hooks.add(norm.register_forward_pre_hook(session.norm_pre))
                    hooks.add(norm.register_forward_hook(session.norm_post))
            hooks.add(model.register_forward_hook(session.root_post))
            with Watch(session):
                yield session
        finally:
            session.stop()
            hooks.remove()
            for p, requires_grad in flags:
                p.requires_grad_(requires_grad)
