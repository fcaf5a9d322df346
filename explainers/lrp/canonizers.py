"""Canonizers: what turns a model into one the rules apply to, without changing the model.

- BatchNorm after a convolution or linear layer is merged into it (Montavon et al. 2019, sec. 10.3.2; zennit's
  ``SequentialMergeBatchNorm``): the rules use W' = W·γ/σ and b' = (b − μ)·γ/σ + β, computed per call as new
  tensors; the model's own parameters are never written.
- Residual sums (torchvision's BasicBlock and Bottleneck ``out += identity``, EfficientNet-Lite's ``out + x``)
  distribute relevance in proportion to each summand, as zennit's ``ResNetCanonizer`` does with its ``Sum``
  module; the engine catches the addition itself (``engine.py``), so no forward method is swapped either.
- :func:`uncovered` names the layer types no rule covers, without a forward pass (the pickers' ``model_check``).
"""

from __future__ import annotations

import torch
from torch import nn

from ..dense.outputs import DETECTION
from .composites import WEIGHTED

BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
# elementwise activations: relevance passes (zennit's Activation types, attention aside)
ACTIVATIONS = (
    nn.ELU, nn.Hardshrink, nn.Hardsigmoid, nn.Hardtanh, nn.Hardswish, nn.LeakyReLU, nn.LogSigmoid, nn.PReLU, nn.ReLU,
    nn.ReLU6, nn.RReLU, nn.SELU, nn.CELU, nn.GELU, nn.Sigmoid, nn.SiLU, nn.Softplus, nn.Softshrink, nn.Softsign,
    nn.Tanh, nn.Tanhshrink, nn.Threshold, nn.Mish,
)
POOLS = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
         nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)
PASSIVE = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.Identity, nn.Flatten,
           nn.Unflatten)
COVERED = (*WEIGHTED, *BATCH_NORMS, *ACTIVATIONS, *POOLS, *PASSIVE)
# parameter-free layers that are not elementwise: no rule, and the gradient would be no LRP either
REFUSED = (nn.MultiheadAttention, nn.Softmax, nn.LogSoftmax, nn.Softmax2d, nn.LocalResponseNorm, nn.Bilinear,
           nn.Upsample, nn.PixelShuffle)
SHOWN = 4


def _squeeze_excitation() -> tuple[type, ...]:
    """torchvision's SqueezeExcitation gates channels by multiplying two branches: no rule covers that."""
    try:
        from torchvision.ops.misc import SqueezeExcitation  # optional: a model without torchvision has none
    except ImportError:  # pragma: no cover
        return ()
    return (SqueezeExcitation,)


GATES = _squeeze_excitation()


def leaves(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of every module without children, in registration order (which is usually forward order)."""
    return [(name, module) for name, module in model.named_modules() if next(module.children(), None) is None]


def batch_norm_pairs(model: nn.Module) -> dict[nn.Module, tuple[nn.Module, str, str]]:
    """{BatchNorm: (layer, layer name, BatchNorm name)} for every BatchNorm right after a convolution or linear
    layer among the leaves with as many features as that layer's outputs (zennit's SequentialMergeBatchNorm
    pairs leaves the same way). The engine checks at run time that the BatchNorm really takes that layer's output."""
    pairs = {}
    previous: tuple[str, nn.Module] | None = None
    for name, module in leaves(model):
        if isinstance(module, BATCH_NORMS) and previous is not None and isinstance(previous[1], WEIGHTED):
            layer = previous[1]
            outputs = layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels
            if outputs == module.num_features:
                pairs[module] = (layer, previous[0], name)
        previous = (name, module)
    return pairs


def merged(layer: nn.Module, norm: nn.Module | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(weight, bias) of ``layer`` with ``norm`` (eval mode: running statistics) folded in, detached new tensors;
    ``layer``'s own when ``norm`` is None."""
    weight = layer.weight.detach()
    bias = None if layer.bias is None else layer.bias.detach()
    if norm is None:
        return weight, bias
    # the same operations as zennit's MergeBatchNorm, so both round alike
    denominator = (norm.running_var.detach() + norm.eps) ** 0.5
    scale = (norm.weight.detach() if norm.weight is not None else torch.ones_like(denominator)) / denominator
    shift = norm.bias.detach() if norm.bias is not None else torch.zeros_like(scale)
    base = torch.zeros_like(scale) if bias is None else bias
    weight = weight * scale.view(-1, *([1] * (weight.dim() - 1)))
    return weight, (base - norm.running_mean.detach()) * scale + shift


def described(found: dict[str, list[str]]) -> str:
    """The layers a model check found, as "Kind ('a', 'b', ...); Other ('c')", at most SHOWN names per kind."""
    parts = []
    for kind, names in found.items():
        shown = ", ".join(repr(n) for n in names[:SHOWN]) + (", ..." if len(names) > SHOWN else "")
        parts.append(f"{kind} ({shown})")
    return "; ".join(parts)


DETECTOR_HEAD = ("LRP's rules stop short of a detector's box score: it comes out of box decoding, non-maximum "
                 "suppression and a softmax or sigmoid over the proposals, which no rule covers, so the relevance "
                 "would not sum to the score; pick a gradient, CAM or perturbation method")


def detector_head(model: nn.Module) -> str | None:
    """DETECTOR_HEAD for a scored detector (``explainers.dense.DenseScores`` of kind "detection"), else None. A
    segmenter's region score is a sum of its own logits, which the rules do cover."""
    return DETECTOR_HEAD if getattr(model, "kind", None) == DETECTION else None


def uncovered(model: nn.Module) -> str | None:
    """Why LRP cannot run on ``model``, said for a user, or None: a detector's box score (:func:`detector_head`),
    the layer types no rule covers (a module with parameters of its own that is not a convolution, linear layer or
    BatchNorm; attention, softmax, normalisation over features), and BatchNorms with no layer before them to merge
    into. Cheap: no forward pass."""
    head = detector_head(model)
    if head is not None:
        return head
    pairs = batch_norm_pairs(model)
    found: dict[str, list[str]] = {}
    for name, module in model.named_modules():
        kind = type(module).__name__
        if GATES and isinstance(module, GATES):
            found.setdefault(f"{kind} (multiplies two branches)", []).append(name)
        elif isinstance(module, BATCH_NORMS):
            if module.running_mean is None or module.running_var is None:
                found.setdefault(f"{kind} without running statistics (track_running_stats=False)", []).append(name)
            elif module not in pairs:
                found.setdefault(f"{kind} not right after a convolution or linear layer", []).append(name)
        elif isinstance(module, REFUSED):
            found.setdefault(kind, []).append(name)
        elif isinstance(module, COVERED):
            continue
        elif any(True for _ in module.parameters(recurse=False)) or any(True for _ in module.buffers(recurse=False)):
            found.setdefault(kind, []).append(name or "the model itself")
    if not found:
        return None
    return ("LRP has no rule for " + described(found) + "; its rules cover convolutions, linear layers, BatchNorm "
            "after them, pooling, residual sums and elementwise activations")
