"""Inside the gradient: each layer's activation on the way forward and its gradient on the way back to the input.

Vanilla gradients (Simonyan et al. 2013, arXiv:1312.6034) are one backward pass of the class score; this module
shows that pass layer by layer, so a reader develops a sense of what range the values have at each step: the
activation's range and histogram forward, and the gradient of the score with respect to that activation
backward, down to the input gradient that the saliency map is made of.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from .core import as_logits, prepare_inputs, unwrap
from .errors import ParameterError
from .hooks import HookSet, model_guard
from .targets import TargetSpec

SCOPES = ("blocks", "leaves")


@dataclass(frozen=True)
class Stats:
    """Summary of one tensor: range, mean, standard deviation, share of exact zeros and a histogram."""

    minimum: float
    maximum: float
    mean: float
    std: float
    abs_mean: float
    zeros: float  # share of elements exactly 0 (e.g. after a ReLU)
    counts: list[int]
    edges: list[float]

    @classmethod
    def of(cls, tensor: torch.Tensor, bins: int) -> Stats:
        values = tensor.detach().double().flatten()
        finite = values[torch.isfinite(values)]
        low, high = (float(finite.min()), float(finite.max())) if finite.numel() else (0.0, 0.0)
        if high <= low:
            high = low + 1e-12
        counts = torch.histc(finite, bins=bins, min=low, max=high) if finite.numel() else torch.zeros(bins)
        return cls(
            minimum=low, maximum=float(finite.max()) if finite.numel() else 0.0,
            mean=float(finite.mean()) if finite.numel() else 0.0,
            std=float(finite.std(unbiased=False)) if finite.numel() else 0.0,
            abs_mean=float(finite.abs().mean()) if finite.numel() else 0.0,
            zeros=float((values == 0).double().mean()) if values.numel() else 0.0,
            counts=[int(c) for c in counts.tolist()],
            edges=np.linspace(low, high, bins + 1).tolist(),
        )


@dataclass(frozen=True)
class LayerTrace:
    """One call of a module: its output's shape and statistics forward, and the score's gradient with respect to
    it. A module called twice in one forward pass (a shared ReLU) has one entry per call, the later ones named
    ``name (call 2)`` and so on."""

    name: str
    kind: str
    shape: tuple[int, ...]
    activation: Stats
    gradient: Stats | None  # None when the score does not depend on this output


@dataclass(frozen=True)
class GradientTrace:
    """A forward and backward pass of one image's target score, layer by layer in the order the forward pass ran
    them (not the order the modules were declared in: LeNet5RGB declares ``gray`` last and runs it first)."""

    target: tuple[int, ...]
    score: float
    input: Stats
    input_gradient: Stats
    layers: list[LayerTrace]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def traced_modules(model: nn.Module, scope: str = "blocks") -> list[tuple[str, nn.Module]]:
    """The modules a trace records: every leaf module, or the top-level blocks (a Sequential or ModuleList is
    opened one level, so efficientnet's ``_blocks`` lists ``_blocks.0`` … ``_blocks.15``)."""
    if scope not in SCOPES:
        raise ParameterError(f"scope must be one of {', '.join(SCOPES)}; got {scope!r}")
    if scope == "leaves":
        return [(name, m) for name, m in model.named_modules() if name and not any(True for _ in m.children())]
    picked = []
    for name, child in model.named_children():
        if isinstance(child, (nn.Sequential, nn.ModuleList)) and len(child):
            picked += [(f"{name}.{sub}", grandchild) for sub, grandchild in child.named_children()]
        else:
            picked.append((name, child))
    return picked


def trace_gradient(model_or_bundle: Any, inputs: torch.Tensor, target: Any = "top1", *, scope: str = "blocks",
                   bins: int = 40) -> GradientTrace:
    """One forward pass with every traced module's output kept, then one backward pass of the target's score.

    ``inputs`` is one preprocessed image [1, C, H, W]. The model runs in eval mode and is left as found; the
    hooks live only inside this call.
    """
    model, _, categories = unwrap(model_or_bundle)
    inputs = prepare_inputs(model, inputs)
    if len(inputs) != 1:
        raise ParameterError(f"trace_gradient explains one image; got {len(inputs)} rows")
    modules = traced_modules(model, scope)
    calls: list[tuple[str, nn.Module, torch.Tensor]] = []  # (name, module, output) as the forward pass ran them
    hooks = HookSet()

    def keep(name: str):
        def hook(module, args, output):
            if isinstance(output, torch.Tensor) and output.requires_grad:
                output.retain_grad()
                calls.append((name, module, output))
                return output.clone()  # an in-place op downstream (ReLU(inplace=True)) then cannot change it
            return None
        return hook

    with model_guard(model):
        try:
            for name, module in modules:
                hooks.add(module.register_forward_hook(keep(name)))
            x = inputs.detach().requires_grad_(True)
            with torch.enable_grad():
                logits = as_logits(model(x))
                spec = TargetSpec(target, 1, categories)
                resolved = spec.resolve(logits.detach(), device=logits.device)
                score = resolved.score(logits).sum()
                score.backward()
        finally:
            hooks.remove()
    layers = []
    seen: dict[str, int] = {}
    for name, module, output in calls:
        seen[name] = seen.get(name, 0) + 1
        layers.append(LayerTrace(
            name=name if seen[name] == 1 else f"{name} (call {seen[name]})", kind=type(module).__name__,
            shape=tuple(output.shape),
            activation=Stats.of(output, bins),
            gradient=None if output.grad is None else Stats.of(output.grad, bins),
        ))
    return GradientTrace(
        target=tuple(int(t) for t in resolved.indices[0].reshape(-1).tolist()),
        score=float(score.detach()),
        input=Stats.of(x, bins),
        input_gradient=Stats.of(x.grad, bins),
        layers=layers,
    )
