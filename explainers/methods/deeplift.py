"""DeepLIFT with the Rescale rule, and DeepLIFT-SHAP (DeepLIFT averaged over a distribution of baselines).

DeepLIFT (Shrikumar, Greenside & Kundaje 2017, arXiv:1704.02685) explains the difference f(x) − f(x′) between
the input and a baseline. Its multipliers follow the chain rule (Ancona et al. 2018, arXiv:1711.06104), except
that each nonlinearity's derivative is replaced by its secant slope between the two activations (the Rescale
rule), so linear layers, convolutions, eval-mode BatchNorm, average pools and residual adds keep their gradient.

How it is computed here: each pass runs the baselines without a graph, keeping every activation and max-pool
module call's input and output, then the inputs, where forward hooks on the same modules replace each call's
output by the same values carrying the Rescale multiplier back, built from that call and the baselines' call of
the same rank. So a module called twice in one forward (torchvision ResNet's shared ``relu``) gets each call's
own rule, and the backward runs over the inputs' rows only (half the rows of one batch [inputs; baselines], the
way Captum's DeepLift runs; that batch remains the fallback for a network whose two passes do not pair up).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..baselines import BASELINES, DISTRIBUTIONS, RANDOM_BASELINES, make_baseline, sample_baselines
from ..batching import forward
from ..core import Attribution, Call, as_logits, completeness, same_input
from ..errors import SaliencyError
from ..hooks import HookSet, model_lock, submodules
from ..registry import Cost, Param, Reference, Sanity, register
from .expected import LUNDBERG  # one reference for the SHAP family

SHRIKUMAR = Reference(
    "Shrikumar, Greenside & Kundaje", 2017, "Learning Important Features Through Propagating Activation Differences",
    "1704.02685",
)

# Activations whose pieces copy their input or are constant (nn.ReLU6 is a Hardtanh): y − y′ is then exact in float
# arithmetic, and so is the secant slope (y − y′)/(z − z′) wherever z ≠ z′; only z = z′ needs the gradient.
COPYING = (nn.ReLU, nn.Hardtanh, nn.Threshold, nn.Hardshrink)
# Every other activation: f(z) carries a rounding error of about eps·|f|, so the secant's error grows as
# eps/|z − z′| while the gradient's (its Taylor error) grows as |z − z′|; below √eps of relative difference the
# gradient is the better estimate of the slope, above it the secant.
ROUNDING = (nn.LeakyReLU, nn.PReLU, nn.RReLU, nn.Softshrink, nn.Sigmoid, nn.Tanh, nn.SiLU, nn.GELU, nn.Mish,
            nn.Hardswish, nn.Hardsigmoid, nn.ELU, nn.SELU, nn.CELU, nn.Softplus, nn.Softsign, nn.LogSigmoid,
            nn.Tanhshrink)
ACTIVATIONS = COPYING + ROUNDING
# Max-pools (they copy values, so their secants are exact too): the change of each window's maximum goes to the
# position of the larger of the two maxima (the input's argmax when its maximum is the larger, else the
# baseline's), as Captum's DeepLift does; the positions' own differences then divide it into multipliers.
# Overlapping windows add up (a scatter-add, as the gradient does; an unpool would overwrite).
MAX_POOLS: dict[type, Callable[..., Any]] = {
    nn.MaxPool1d: lambda m, x: F.max_pool1d(x, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode, True),
    nn.MaxPool2d: lambda m, x: F.max_pool2d(x, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode, True),
    nn.MaxPool3d: lambda m, x: F.max_pool3d(x, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode, True),
    nn.AdaptiveMaxPool1d: lambda m, x: F.adaptive_max_pool1d(x, m.output_size, True),
    nn.AdaptiveMaxPool2d: lambda m, x: F.adaptive_max_pool2d(x, m.output_size, True),
    nn.AdaptiveMaxPool3d: lambda m, x: F.adaptive_max_pool3d(x, m.output_size, True),
}
# Linear in their input (in eval mode): the gradient is already DeepLIFT's multiplier there.
LINEAR = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
          nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
          nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.Dropout, nn.Dropout1d, nn.Dropout2d,
          nn.Dropout3d, nn.AlphaDropout, nn.Identity, nn.Flatten, nn.Unflatten, nn.ZeroPad2d, nn.ConstantPad1d,
          nn.ConstantPad2d, nn.ConstantPad3d, nn.ReflectionPad1d, nn.ReflectionPad2d, nn.ReflectionPad3d,
          nn.ReplicationPad1d, nn.ReplicationPad2d, nn.ReplicationPad3d, nn.Upsample, nn.PixelShuffle,
          nn.PixelUnshuffle)

BASELINE_DRAWS = 1  # generator offsets: DeepLIFT's random baseline (as integrated gradients')
SHAP_DRAWS = 2  # DeepLIFT-SHAP's baseline distribution (tests draw the same baselines for the oracle)
# a completeness error above this share of f(x) − f(x′) gets a note saying where the rule stopped
INCOMPLETE_SHARE = 0.01


def _has_rule(module: nn.Module) -> bool:
    if isinstance(module, ACTIVATIONS):
        return True
    return type(module) in MAX_POOLS and not module.return_indices  # a tuple output: left to its gradient


def uncovered_modules(model: nn.Module) -> list[str]:
    """Type names of the model's leaf modules that are neither linear nor given a Rescale rule (LayerNorm,
    Softmax, custom modules): DeepLIFT falls back to their gradient, and the sum stops matching f(x) − f(x′)."""
    names = [type(m).__name__ for m in model.modules()
             if isinstance(m, nn.MultiheadAttention)  # softmax and products in its own forward, beside its children
             or (not any(True for _ in m.children()) and not isinstance(m, LINEAR) and not _has_rule(m))]
    return list(dict.fromkeys(names))


def model_check(model: nn.Module) -> str | None:
    """Why DeepLIFT cannot run on ``model``, or None."""
    if getattr(model, "supports_hooks", True) is False:
        return ("DeepLIFT needs module hooks on the activations, and this model refuses them (a TorchScript "
                "module); gradient and perturbation methods work")
    if not any(_has_rule(m) for m in model.modules()):
        return ("DeepLIFT applies its Rescale rule to activation modules (nn.ReLU, nn.GELU, nn.Sigmoid, ...) and "
                "max-pools, and this model has none (activations called as functions?): it would be the gradient "
                "times (x − x′); pick integrated gradients instead")
    return None


def _near(a: torch.Tensor, b: torch.Tensor, tolerance: float) -> torch.Tensor:
    """Elementwise: |a − b| ≤ tolerance · (1 + |a|), a relative tolerance that never falls under ``tolerance``."""
    return (a - b).abs() <= tolerance * (1 + a.abs())


class _Unpaired(Exception):
    """The inputs' pass did not call the rule's modules as the baselines' pass did (see :class:`_Pairs`)."""


class _Pairs:
    """The pass in flight: how many (input, baseline) pairs it holds, and how the rule meets them.

    ``split`` (the default): the baselines run first in a pass of their own without a graph ("record": each rule
    module's call keeps its input and output), then the inputs ("replay": each call meets the baselines' call of
    the same rank and takes its secant from the two), so the backward runs over the inputs' rows only. Should the
    inputs' pass call other modules, in another order or shape, or the network write in place into a kept tensor
    (its version moves), the pass is redone as one batch [inputs; baselines] ("joint") for the rest of the call.
    """

    def __init__(self) -> None:
        self.count = 0
        self.split = True
        self.mode = "joint"
        self.recorded: list[tuple[nn.Module, torch.Tensor, torch.Tensor, int, int]] = []
        self.at = 0

    def record(self, module: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
        self.recorded.append((module, x, y, x._version, y._version))

    def twin(self, module: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The baselines' (input, output) of the call that pairs with this one of the inputs' pass."""
        if self.at >= len(self.recorded):
            raise _Unpaired
        twin, x_ref, y_ref, x_version, y_version = self.recorded[self.at]
        self.at += 1
        if (twin is not module or x_ref.shape != x.shape or y_ref.shape != y.shape or x_ref._version != x_version
                or y_ref._version != y_version):
            raise _Unpaired
        return x_ref, y_ref


def _halves(module: nn.Module, tensor: torch.Tensor, pairs: _Pairs) -> tuple[torch.Tensor, torch.Tensor]:
    if tensor.shape[0] != 2 * pairs.count:
        raise SaliencyError(
            f"DeepLIFT pairs each input with its baseline along the batch dimension, and {type(module).__name__} "
            f"received {tensor.shape[0]} rows where {2 * pairs.count} were run: this model moves the batch "
            "dimension inside its forward; use integrated gradients instead")
    return tensor[: pairs.count], tensor[pairs.count :]


def _copying_derivative(module: nn.Module, weights: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``weights`` ⊙ f′(x) for a copying activation, by its own native backward (one pass, PyTorch's values at the
    kinks: ReLU′(0) = 0, and 0 at a Hardtanh's bounds)."""
    if isinstance(module, nn.ReLU):
        return torch.ops.aten.threshold_backward(weights, x, 0)
    if isinstance(module, nn.Hardtanh):
        return torch.ops.aten.hardtanh_backward(weights, x, module.min_val, module.max_val)
    if isinstance(module, nn.Threshold):
        return torch.ops.aten.threshold_backward(weights, x, module.threshold)
    return torch.ops.aten.hardshrink_backward(weights, x, module.lambd)


def _derivative(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """f′(x) of an elementwise activation that is not a copying one, by autograd on the module's own forward."""
    with torch.enable_grad():  # module.forward runs no hooks; the clone takes an in-place activation's write
        leaf = x.detach().requires_grad_(True)
        return torch.autograd.grad(module.forward(leaf.clone()).sum(), leaf)[0]


class _Rescaled(torch.autograd.Function):
    """The module's output y (passed detached, so its own graph is dropped; returned as a new tensor on y's memory,
    no copy, which the network may still write into in place), whose backward multiplies the gradient by ``slope``
    [P, ...]. In a joint pass (y holds both halves) both halves' gradients are multiplied: the input half's is
    DeepLIFT's; the baseline half's is never read (only the input half's scores are explained, and rows do not
    mix), so it is left to the same broadcast product instead of a zero-filled copy."""

    @staticmethod
    def forward(ctx, x, y, slope):
        ctx.save_for_backward(slope)
        return y.detach()

    @staticmethod
    def backward(ctx, grad):
        (slope,) = ctx.saved_tensors
        if len(grad) == len(slope):
            return grad * slope, None, None
        return (grad.unflatten(0, (2, -1)) * slope).flatten(0, 1), None, None


def _secant(module, x_in, x_ref, y_in, y_ref) -> torch.Tensor:
    """The Rescale multiplier (y − y′)/(x − x′), the derivative where the two inputs are (nearly) equal."""
    step = x_in - x_ref
    slope = torch.sub(y_in, y_ref).div_(step)
    if isinstance(module, COPYING):
        # the secant is exact wherever the inputs differ at all, and finite there: 0/0, NaN, marks exactly the nil
        # steps, where the derivative goes instead. Often there are none, and a sum says so in one pass (a bool
        # mask's any() costs ten times as much on a CPU); the mask stays in floats where it can for the same reason
        if bool(slope.sum().isnan()):
            if isinstance(module, (nn.ReLU, nn.Hardtanh)):  # monotone and 1-Lipschitz: every secant is in [0, 1]
                nil = slope.nan_to_num(nan=2.0).sub_(1).clamp_(min=0)  # 1 at the nil steps, 0 elsewhere
            else:
                nil = slope.isnan().to(slope.dtype)
            slope.nan_to_num_(0.0).add_(_copying_derivative(module, nil, x_in))
        return slope
    # rounding noise where the step is nil or nearly: the derivative is the better estimate there
    close = _near(x_in, x_ref, torch.finfo(x_in.dtype).eps ** 0.5)
    if bool(close.any()):
        slope = torch.where(close, _derivative(module, x_in), slope)
    return slope


def _rescale_activation(module, x, y, pairs: _Pairs) -> torch.Tensor:
    with torch.no_grad():
        if pairs.mode == "replay":
            x_ref, y_ref = pairs.twin(module, x, y)
            slope = _secant(module, x, x_ref, y, y_ref)
        else:
            x_in, x_ref = _halves(module, x, pairs)
            y_in, y_ref = _halves(module, y, pairs)
            slope = _secant(module, x_in, x_ref, y_in, y_ref)
    return _Rescaled.apply(x, y.detach(), slope)


class _MaxPoolRescaled(torch.autograd.Function):
    """The pool's output y; backward: each window's share of y − y′ (``gains`` [2, P, C, L′], for the input's and
    the baseline's argmax, ``argmax`` [2, P, C, L′] flat positions) scatter-added to its position and divided by
    that position's x − x′ (``inverse``); where x = x′ (``own``) the pool's own gradient instead. In a joint pass
    the baseline half's gradient is zero."""

    @staticmethod
    def forward(ctx, x, y, argmax, gains, inverse, own):
        ctx.save_for_backward(argmax, gains, inverse, own)
        return y.detach()

    @staticmethod
    def backward(ctx, grad):
        argmax, gains, inverse, own = ctx.saved_tensors
        count = len(inverse)
        g = grad[:count].reshape(gains.shape[1:])
        routed = torch.zeros_like(inverse).flatten(2)
        routed.scatter_add_(2, argmax[0], g * gains[0]).scatter_add_(2, argmax[1], g * gains[1])
        natural = torch.zeros_like(routed).scatter_add_(2, argmax[0], g)
        grad_in = routed.view_as(inverse) * inverse + natural.view_as(own) * own
        if len(grad) == count:
            return grad_in, None, None, None, None, None
        return torch.cat([grad_in, torch.zeros_like(grad_in)]), None, None, None, None, None


def _rescale_max_pool(module, x, y, pairs: _Pairs) -> torch.Tensor:
    with torch.no_grad():
        if pairs.mode == "replay":
            x_in, y_in = x, y
            x_ref, y_ref = pairs.twin(module, x, y)
            at = torch.stack([MAX_POOLS[type(module)](module, half.detach())[1] for half in (x_in, x_ref)])
        else:
            x_in, x_ref = _halves(module, x, pairs)
            y_in, y_ref = _halves(module, y, pairs)
            _, argmax = MAX_POOLS[type(module)](module, x.detach())
            at = torch.stack(_halves(module, argmax, pairs))
        larger = torch.maximum(y_in, y_ref)
        gains = torch.stack([larger - y_ref, y_in - larger]).flatten(3)  # they add up to y − y′
        own = x_in == x_ref  # the pool copies values: its secant is exact wherever they differ
        inverse = torch.where(own, torch.zeros_like(x_in), 1 / torch.where(own, torch.ones_like(x_in), x_in - x_ref))
    return _MaxPoolRescaled.apply(x, y.detach(), at.flatten(3), gains, inverse.contiguous(),
                                  own.to(x.dtype).contiguous())


@contextlib.contextmanager
def rescale_rule(model: nn.Module) -> Iterator[_Pairs]:
    """Inside the block, forward passes of ``model`` back-propagate DeepLIFT's Rescale multipliers: one on
    [inputs; baselines] (``pairs.count`` rows each, set before the pass) with ``pairs.mode`` "joint", or a pass
    of the baselines ("record") followed by one of the inputs ("replay"), see :class:`_Pairs`.

    In-place activations run out of place inside the block (their ``inplace`` flag is restored after), so each
    forward hook sees the call's own input beside its output: cheaper than cloning every input in a pre-hook.
    """
    pairs = _Pairs()
    hooks = HookSet()
    in_place = []

    def hook(module, args, output):
        if pairs.mode == "record":
            pairs.record(module, args[0], output)
            return None
        if isinstance(module, ACTIVATIONS):
            return _rescale_activation(module, args[0], output, pairs)
        return _rescale_max_pool(module, args[0], output, pairs)

    with model_lock(model):  # the hooks sit on shared modules (explain() already holds the lock; this re-enters)
        try:
            for module in submodules(model):
                if _has_rule(module):
                    if getattr(module, "inplace", False):
                        in_place.append(module)
                        module.inplace = False
                    hooks.add(module.register_forward_hook(hook))
            yield pairs
        finally:
            hooks.remove()
            pairs.recorded.clear()
            for module in in_place:
                module.inplace = True


Consume = Callable[[int, int, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], None]


def run_pairs(call: Call, total: int, make_pairs: Callable[[int, int], tuple], consume: Consume) -> None:
    """DeepLIFT contributions (x − x′) ⊙ m of every target for ``total`` (input, baseline) pairs.

    ``make_pairs(first, last)`` returns (inputs, baselines, rows) of pairs first..last−1, ``rows`` giving each
    pair's target row; ``consume(first, last, contributions [T, P, ...], logits [P, K], scores [T, P],
    baseline_scores [T, P])``. ``batch_size`` counts rows through the model, two per pair: the batches walk the
    2·total rows and each takes the pairs whose input row falls in it, so a pass holds one row more than
    ``batch_size`` only where a batch boundary splits a pair (odd sizes). Each pass is a forward of the baselines
    without a graph and one of the inputs (see :class:`_Pairs`); the targets share them, one backward each, over
    the inputs' rows only.
    """
    count = len(call.targets)

    def gradients(batch, scores, keep):
        return [torch.autograd.grad(scores[t].sum(), batch, retain_graph=t < count - 1)[0][:keep]
                for t in range(count)]

    def split_pass(inputs, baselines, rows):
        try:
            pairs.mode, pairs.at = "record", 0
            with torch.no_grad():
                baseline_logits = as_logits(forward(call.model, baselines))
            pairs.mode = "replay"
            batch = inputs.detach().requires_grad_(True)
            with torch.enable_grad():
                logits = as_logits(forward(call.model, batch))
                if pairs.at != len(pairs.recorded):
                    raise _Unpaired
                pairs.recorded.clear()  # the slopes are taken: the baselines' tensors can go before the backward
                scores = call.scores(logits, rows)
                grads = gradients(batch, scores, len(inputs))
        finally:
            pairs.mode = "joint"
            pairs.recorded.clear()
        with torch.no_grad():
            baseline_scores = call.scores(baseline_logits, rows)
        return logits.detach(), scores.detach(), baseline_scores, grads

    def joint_pass(inputs, baselines, rows):
        batch = torch.cat([inputs, baselines]).detach().requires_grad_(True)
        with torch.enable_grad():
            logits = as_logits(forward(call.model, batch))
            scores = call.scores(logits[: len(inputs)], rows)
            grads = gradients(batch, scores, len(inputs))
        with torch.no_grad():
            baseline_scores = call.scores(logits[len(inputs) :], rows)
        return logits[: len(inputs)].detach(), scores.detach(), baseline_scores, grads

    def compute(start, stop):
        first, last = (start + 1) // 2, (stop + 1) // 2
        if first == last:
            return None
        inputs, baselines, rows = make_pairs(first, last)
        pairs.count = len(inputs)
        passed = None
        if pairs.split:
            try:
                passed = split_pass(inputs, baselines, rows)
            except _Unpaired:
                pairs.split = False  # this model's passes do not pair call by call: one batch from now on
        if passed is None:
            passed = joint_pass(inputs, baselines, rows)
        logits, scores, baseline_scores, grads = passed
        delta = torch.where(same_input(inputs, baselines), torch.zeros_like(inputs), inputs - baselines)
        return first, last, delta.unsqueeze(0) * torch.stack(grads), logits, scores, baseline_scores

    with rescale_rule(call.model) as pairs:
        for start, stop, value in call.batches.run(2 * total, compute):
            if value is not None:
                consume(*value)
            done = (stop + 1) // 2 - (start + 1) // 2  # the pairs: one backward row each
            if done:  # (a batch of one row whose pair the batch before took holds none)
                call.progress.advance(done)


def _completeness(attribution: torch.Tensor, score: torch.Tensor, baseline_score: torch.Tensor,
                  exact: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Integrated gradients' completeness keys for one target: sum(A) − (S(x) − S(x′)), S(x) − S(x′) and their
    ratio. ``exact`` marks rows whose baseline is the input itself: their gap is 0, not rounding noise."""
    score_gap = score - baseline_score
    if exact is not None:
        score_gap = torch.where(exact, torch.zeros_like(score_gap), score_gap)
    return completeness(attribution, score_gap)


def _incomplete_notes(call: Call, extras: list[dict[str, torch.Tensor]]) -> list[list[tuple[str, ...]]] | None:
    """Per target and row, why the attributions do not add up to the score difference, where they miss it by more
    than INCOMPLETE_SHARE."""
    if not any((e["completeness_relative"].abs() > INCOMPLETE_SHARE).any() for e in extras):
        return None
    uncovered = uncovered_modules(call.model)
    notes = []
    for target, e in zip(call.targets, extras):
        if target.objective != "logit":
            why = (f"the score is a {target.objective.replace('_', ' ')}, and the softmax over the classes is not "
                   "an activation module, so its plain gradient is used")
        elif uncovered:
            why = (f"the Rescale rule covers activation modules and max-pools, and this model also has "
                   f"{', '.join(uncovered)}, where the plain gradient is used")
        else:
            why = ("the model has nonlinear operations that are not modules (activations called as functions, "
                   "products of activations), where the plain gradient is used")
        notes.append([(f"the attributions miss f(x) − f(x′) by {abs(share):.1%} of it: {why}",)
                      if abs(share) > INCOMPLETE_SHARE else ()
                      for share in e["completeness_relative"].tolist()])
    return notes


BASELINE_PARAM = Param(
    "choice", "black",
    "The reference the input is compared with: a black image, a blurred copy, uniform noise, the image's mean "
    "colour, or zeros in the model's input space.",
    choices=BASELINES, allow_tensor=True,
)
COMMON_WEAKNESS = (
    "Exact (the attributions add up to the score difference) only where every nonlinearity is an activation "
    "module or a max-pool: LayerNorm, attention, squeeze-excitation products and activations called as functions "
    "keep their plain gradient, and the completeness error shows by how much the sum is off. The Rescale rule "
    "assigns a neuron's change in proportion to its input's change, ignoring cancelling positive and negative "
    "parts (the paper's RevealCancel rule, not implemented here)."
)
SANITY_NOTE = (
    "Adebayo et al. 2018 (arXiv:1810.03292) did not test DeepLIFT: they tested gradients, integrated gradients, "
    "guided backprop, SmoothGrad, VarGrad and Guided GradCAM. DeepLIFT's multipliers are the model's weights "
    "chained with secant slopes, so, like integrated gradients, it is expected to change when the weights are "
    "randomised; run the sanity check to see it on this model."
)


@register(
    "deeplift",
    display_name="DeepLIFT",
    family="Propagation",
    reference=SHRIKUMAR,
    summary=(
        "Compares every activation on the input with its value on a baseline and propagates the differences back "
        "with the Rescale rule (each activation's slope taken between baseline and input). One forward and "
        "backward pass over the input and its baseline, and the attributions add up to f(x) − f(baseline)."
    ),
    weaknesses=(
        "Depends on the baseline, as integrated gradients does (a black baseline cannot credit black pixels). "
        + COMMON_WEAKNESS
    ),
    formula=("A = (x − x′) ⊙ m, m = ∂S/∂x with each activation's f′ replaced by (f(z) − f(z′))/(z − z′); "
             "ΣA = S(x) − S(x′)"),
    sanity=Sanity.UNTESTED,
    sanity_note=SANITY_NOTE,
    stochastic_params={"baseline": RANDOM_BASELINES},
    params={"baseline": BASELINE_PARAM},
    cost=Cost(fixed=(2, 1)),  # forwards of the input and its baseline, a backward of the input only
    attribution_channels=None,
    smoothgrad_base=True,
    model_check=model_check,
)
def deeplift(call, inputs, baseline="black"):
    """Shrikumar et al. 2017, arXiv:1704.02685 (Rescale rule). Reports the completeness delta in ``extras``:
    sum(A) − (S(x) − S(x′)), and the same as a share of S(x) − S(x′)."""
    reference = make_baseline(baseline, inputs, call.bundle, call.generator(offset=BASELINE_DRAWS))
    targets, count = len(call.targets), len(inputs)
    attribution = torch.empty((targets, *inputs.shape), dtype=inputs.dtype, device=inputs.device)
    logits: list[torch.Tensor] = []
    scores = torch.empty((2, targets, count), dtype=inputs.dtype, device=inputs.device)

    def make_pairs(first, last):
        return inputs[first:last], reference[first:last], torch.arange(first, last)

    def consume(first, last, contributions, batch_logits, batch_scores, baseline_scores):
        attribution[:, first:last] = contributions
        logits.append(batch_logits)
        scores[0, :, first:last], scores[1, :, first:last] = batch_scores, baseline_scores

    run_pairs(call, count, make_pairs, consume)
    no_path = same_input(inputs, reference).flatten(1).all(dim=1)
    extras = [_completeness(attribution[t], scores[0, t], scores[1, t], no_path) for t in range(targets)]
    named = f"the {baseline} baseline" if isinstance(baseline, str) else "the baseline"
    empty = [(f"the map is all zero: {named} equals this input, so there is no difference to explain; pick another "
              "baseline",) if equal else () for equal in no_path.tolist()]
    incomplete = _incomplete_notes(call, extras)
    target_notes = None
    if incomplete is not None:
        target_notes = [[e + n for e, n in zip(empty, per_target)] for per_target in incomplete]
    return Attribution(attribution, extras=extras, logits=torch.cat(logits), notes=empty, target_notes=target_notes)


def shap_baselines(call: Call, inputs: torch.Tensor, distribution: str, n_baselines: int,
                   references: str = "") -> torch.Tensor:
    """DeepLIFT-SHAP's baselines for ``inputs``: [N, n_baselines, C, H, W], drawn from the call's seed."""
    return sample_baselines(distribution, inputs, n_baselines, call.generator(SHAP_DRAWS), bundle=call.bundle,
                            folder=references)


@register(
    "deeplift_shap",
    display_name="DeepLIFT-SHAP",
    family="Propagation",
    reference=LUNDBERG,
    summary=(
        "DeepLIFT averaged over many baselines drawn from a distribution (blurred copies, uniform noise or your "
        "own reference images): an approximation of SHAP values. The attributions add up to f(x) minus the mean "
        "score of the baselines."
    ),
    weaknesses=(
        "Costs n_baselines times DeepLIFT and depends on the distribution the baselines come from; treats the "
        "input features as independent, as SHAP's approximations do. " + COMMON_WEAKNESS
    ),
    formula="A = 1/K Σ_k DeepLIFT(x; b_k), b_k ~ D; ΣA = S(x) − 1/K Σ_k S(b_k)",
    sanity=Sanity.UNTESTED,
    sanity_note=SANITY_NOTE,
    stochastic=True,
    params={
        "distribution": Param(
            "choice", "blur",
            "Where the baselines come from: blurred copies of the input at random widths, uniform noise in the "
            "input's range, or images from a folder of references.",
            choices=DISTRIBUTIONS,
        ),
        "n_baselines": Param("int", 16, "Baselines drawn per image; each costs one DeepLIFT pass.", minimum=1,
                             maximum=256),
        "references": Param("folder", "", "A folder of reference images (e.g. typical images of your data).",
                            only_when=("distribution", ("references",))),
    },
    # forwards of the input and one baseline per image and baseline, a backward of the input only
    cost=Cost(fixed=(0, 0), per_step=(2, 1), steps="n_baselines"),
    attribution_channels=None,
    model_check=model_check,
)
def deeplift_shap(call, inputs, distribution="blur", n_baselines=16, references=""):
    """Lundberg & Lee 2017, arXiv:1705.07874: DeepLIFT (Shrikumar et al. 2017, arXiv:1704.02685) averaged over
    baselines b_k drawn from ``distribution``; completeness against f(x) − mean_k f(b_k) in ``extras``."""
    draws = shap_baselines(call, inputs, distribution, n_baselines, references)
    targets, count = len(call.targets), len(inputs)
    # float64 sums: the contributions of different baselines cancel a lot, and float32 sums lose digits there
    total = torch.zeros((targets, *inputs.shape), dtype=torch.float64, device=inputs.device)
    baseline_total = torch.zeros((targets, count), dtype=torch.float64, device=inputs.device)
    scores = torch.empty((targets, count), dtype=inputs.dtype, device=inputs.device)
    logits: dict[int, torch.Tensor] = {}

    def split(first, last):
        pair = torch.arange(first, last, device=inputs.device)
        return pair // n_baselines, pair % n_baselines

    def make_pairs(first, last):
        row, draw = split(first, last)
        return inputs[row], draws[row, draw], row

    def consume(first, last, contributions, batch_logits, batch_scores, baseline_scores):
        row, draw = split(first, last)
        for t in range(targets):
            total[t].index_add_(0, row, contributions[t].double())
            baseline_total[t].index_add_(0, row, baseline_scores[t].double())
        firsts = (draw == 0).nonzero().flatten()
        for i in firsts.tolist():  # each row's own score and logits, from its pair with the first baseline
            logits[int(row[i])] = batch_logits[i]
        scores[:, row[firsts]] = batch_scores[:, firsts]

    run_pairs(call, count * n_baselines, make_pairs, consume)
    attribution = (total / n_baselines).to(inputs.dtype)
    extras = [_completeness(attribution[t], scores[t], (baseline_total[t] / n_baselines).to(inputs.dtype))
              for t in range(targets)]
    return Attribution(attribution, extras=extras, logits=torch.stack([logits[r] for r in range(count)]),
                       target_notes=_incomplete_notes(call, extras))
