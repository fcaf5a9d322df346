"""Composites: which rule each layer gets, by its type and position (the presets of zennit 0.5.1, Anders et al.
2021, arXiv:2106.13200, by the same names).

Every composite gives average pooling and residual sums the :class:`~.rules.Norm` rule, elementwise activations
:class:`~.rules.Pass` and max pooling the gradient, as zennit's ``layer_map_base`` does; BatchNorm is merged into
the layer before it (``canonizers.py``). "First layer" is the first convolution (or linear layer, where the
composite says so) in the model's module order, as zennit's ``SpecialFirstLayerMapComposite`` counts it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .rules import DEFAULT_STABILIZER, AlphaBeta, Epsilon, Flat, Gamma, Rule, ZBox, ZPlus

CONVOLUTIONS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
WEIGHTED = (*CONVOLUTIONS, nn.Linear)  # the layers the rules cover


@dataclass(frozen=True)
class Composite:
    """A rule per layer kind: ``first`` for the first layer of the ``first_kinds`` ("conv" or "any" weighted
    layer), ``conv`` for the other convolutions, ``dense`` for linear layers. ``summary`` is the one line the
    picker shows."""

    name: str
    summary: str
    conv: str
    dense: str = "epsilon"
    first: str | None = None
    first_kinds: str = "conv"

    def rule(self, kind: str, *, epsilon: float, gamma: float, low=None, high=None,
             stabilizer: float = DEFAULT_STABILIZER) -> Rule:
        if kind == "epsilon":
            return Epsilon(epsilon)
        if kind == "gamma":
            return Gamma(gamma, stabilizer)
        if kind == "zplus":
            return ZPlus(stabilizer)
        if kind == "alpha2_beta1":
            return AlphaBeta(2.0, 1.0, stabilizer)
        if kind == "flat":
            return Flat(stabilizer)
        if kind == "zbox":
            return ZBox(low, high, stabilizer)
        raise ValueError(f"unknown rule kind {kind!r}")

    def assign(self, model: nn.Module, *, epsilon: float, gamma: float, low: torch.Tensor | None = None,
               high: torch.Tensor | None = None) -> dict[nn.Module, Rule]:
        """{layer: rule} for every convolution and linear layer of ``model``."""
        options = dict(epsilon=epsilon, gamma=gamma, low=low, high=high)
        rules: dict[nn.Module, Rule] = {}
        first_done = self.first is None
        for module in model.modules():
            if not isinstance(module, WEIGHTED) or module in rules:
                continue
            fits_first = isinstance(module, CONVOLUTIONS) or self.first_kinds == "any"
            if not first_done and fits_first:
                rules[module] = self.rule(self.first, **options)
                first_done = True
            elif isinstance(module, CONVOLUTIONS):
                rules[module] = self.rule(self.conv, **options)
            else:
                rules[module] = self.rule(self.dense, **options)
        return rules


COMPOSITES = {
    "epsilon_plus_flat": Composite(
        "epsilon_plus_flat",
        "flat for the first layer, z⁺ for convolutions, ε for dense layers: robust, positive maps for "
        "ReLU networks (zennit's EpsilonPlusFlat)",
        conv="zplus", first="flat", first_kinds="any",
    ),
    "epsilon_gamma_box": Composite(
        "epsilon_gamma_box",
        "z^B for the first layer (the input's pixel range), γ for convolutions, ε for dense layers: the "
        "overview's recommendation for image classifiers, signed maps (zennit's EpsilonGammaBox)",
        conv="gamma", first="zbox",
    ),
    "epsilon_alpha2_beta1": Composite(
        "epsilon_alpha2_beta1",
        "α2β1 for every convolution, ε for dense layers: shows negative evidence beside the positive, the "
        "setting of Bach et al. 2015 (zennit's EpsilonAlpha2Beta1)",
        conv="alpha2_beta1",
    ),
}
