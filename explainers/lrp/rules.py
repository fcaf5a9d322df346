"""LRP rules, one class each, as data: which modified layers a rule runs and how it weighs their gradients.

Bach et al. 2015 (doi:10.1371/journal.pone.0130140); Montavon et al. 2019, "Layer-Wise Relevance Propagation: An
Overview" (LNCS 11700). Every rule of a linear layer z = W x + b has the form

    R_in = Σ_groups c_g · Σ_terms f_t(x) ⊙ ρ_t(W)ᵀ (m_g ⊙ R_out / stab(Σ_terms ρ_t(W) v_t(x) + ρ_t(b)))

so a rule is a tuple of :class:`Group` of :class:`Term` (input v, factor f, weight map ρ, bias map), a
coefficient c and an optional mask m on the sign of z. The engine (``engine.py``) turns a rule into autograd
operations whose ordinary backward pass computes it; the rules here only say what to compute.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

Tensor = torch.Tensor
DEFAULT_STABILIZER = 1e-6  # zennit 0.5.1's default: a guard against 0/0, not a parameter of the rule


def stabilize(z: Tensor, epsilon: float) -> Tensor:
    """``z + ε·sign(z)`` with sign(0) = +1: the denominator never reaches 0 and keeps its sign."""
    return z + torch.where(z >= 0, epsilon, -epsilon).to(z.dtype)


def _same(t: Tensor) -> Tensor:
    return t


def _positive(t: Tensor) -> Tensor:
    return t.clamp(min=0)


def _negative(t: Tensor) -> Tensor:
    return t.clamp(max=0)


def _ones(t: Tensor) -> Tensor:
    return torch.ones_like(t)


@dataclass(frozen=True)
class Term:
    """One modified layer: it sees ``value(x)`` through weights ``weight(W)`` and bias ``bias(b)`` (None: no bias);
    its gradient at the input is multiplied by ``factor(x)`` (None: the gradient as it is, as flat and w² have it).
    """

    value: Callable[[Tensor], Tensor] = _same
    factor: Callable[[Tensor], Tensor] | None = _same
    weight: Callable[[Tensor], Tensor] = _same
    bias: Callable[[Tensor], Tensor] | None = _same


@dataclass(frozen=True)
class Group:
    """Terms that share one denominator, the sum of their outputs; ``mask`` keeps only the outputs whose original
    value is "positive" (> 0) or "negative" (< 0), None keeps all."""

    terms: tuple[Term, ...]
    coefficient: float = 1.0
    mask: str | None = None


class Rule:
    """A rule for layers with a weight (convolutions, linear layers); ``stabilizer`` guards the division."""

    name = "rule"

    def __init__(self, stabilizer: float = DEFAULT_STABILIZER):
        self.stabilizer = float(stabilizer)

    def groups(self) -> tuple[Group, ...]:
        raise NotImplementedError

    @property
    def plain(self) -> bool:
        """Whether the rule is the ε rule itself: then the layer's own forward and backward compute it."""
        return False

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.stabilizer:g})"


class Epsilon(Rule):
    """ε rule (Bach et al. 2015): R_j = Σ_k a_j w_jk / (z_k + ε·sign(z_k)) R_k; ε absorbs weak or contradictory
    relevance. ε → 0 is LRP-0, which is gradient × input."""

    name = "ε"

    def groups(self):
        return (Group((Term(),)),)

    @property
    def plain(self) -> bool:
        return True


class Gamma(Rule):
    """γ rule (Montavon et al. 2019, generalised to signed inputs as zennit does): weights W + γW⁺ for the positive
    outputs' positive inputs, W + γW⁻ for their negative inputs, and the reverse where the output is negative;
    γ favours positive contributions."""

    name = "γ"

    def __init__(self, gamma: float = 0.25, stabilizer: float = DEFAULT_STABILIZER):
        super().__init__(stabilizer)
        self.gamma = float(gamma)

    def groups(self):
        g = self.gamma

        def up(w):
            return w + g * w.clamp(min=0)

        def down(w):
            return w + g * w.clamp(max=0)

        return (
            Group((Term(_positive, _positive, up, up), Term(_negative, _negative, down, None)), mask="positive"),
            Group((Term(_positive, _positive, down, down), Term(_negative, _negative, up, None)), mask="negative"),
        )

    def __repr__(self) -> str:
        return f"Gamma({self.gamma:g})"


class AlphaBeta(Rule):
    """αβ rule (Bach et al. 2015): positive contributions (W⁺x⁺ + W⁻x⁻ + b⁺) weighted α, negative ones
    (W⁻x⁺ + W⁺x⁻ + b⁻) weighted β, each normalised by its own sum; α − β = 1 keeps relevance conserved."""

    name = "αβ"

    def __init__(self, alpha: float = 2.0, beta: float = 1.0, stabilizer: float = DEFAULT_STABILIZER):
        if alpha < 0 or beta < 0 or abs(alpha - beta - 1) > 1e-12:
            raise ValueError(f"the αβ rule needs α, β ≥ 0 and α − β = 1; got α={alpha}, β={beta}")
        super().__init__(stabilizer)
        self.alpha, self.beta = float(alpha), float(beta)

    def groups(self):
        positive = Group((Term(_positive, _positive, _positive, _positive),
                          Term(_negative, _negative, _negative, None)), self.alpha)
        if self.beta == 0:
            return (positive,)
        negative = Group((Term(_positive, _positive, _negative, _negative),
                          Term(_negative, _negative, _positive, None)), -self.beta)
        return positive, negative

    def __repr__(self) -> str:
        return f"AlphaBeta({self.alpha:g}, {self.beta:g})"


class ZPlus(AlphaBeta):
    """z⁺ rule (Montavon et al. 2017, arXiv:1512.02479): α1β0, only positive contributions."""

    name = "z⁺"

    def __init__(self, stabilizer: float = DEFAULT_STABILIZER):
        super().__init__(1.0, 0.0, stabilizer)

    def __repr__(self) -> str:
        return "ZPlus()"


class Flat(Rule):
    """Flat rule (Lapuschkin et al. 2019): relevance spread evenly over each output's receptive field, whatever
    the input and the weights."""

    name = "flat"

    def groups(self):
        return (Group((Term(_ones, None, _ones, None),)),)


class WSquare(Rule):
    """w² rule (Montavon et al. 2017, arXiv:1512.02479): relevance spread in proportion to the squared weights,
    whatever the input (biases squared too, as zennit has it)."""

    name = "w²"

    def groups(self):
        def square(t):
            return t * t

        return (Group((Term(_ones, None, square, square),)),)


class ZBox(Rule):
    """z^B rule (Montavon et al. 2017, arXiv:1512.02479) for a first layer whose input lies in [low, high]:
    R_i = Σ_j (x_i w_ij − l_i w⁺_ij − h_i w⁻_ij) / Σ_i (…) R_j. ``low`` and ``high`` are tensors that broadcast to
    the input ([1, C, 1, 1] per channel) or None for each row's own minimum and maximum."""

    name = "z^B"

    def __init__(self, low: Tensor | None = None, high: Tensor | None = None,
                 stabilizer: float = DEFAULT_STABILIZER):
        super().__init__(stabilizer)
        self.low, self.high = low, high

    def _bound(self, x: Tensor, which: str) -> Tensor:
        bound = self.low if which == "low" else self.high
        if bound is None:  # each row's own range: a row's map does not depend on the rest of its batch
            dims = tuple(range(1, x.dim()))
            bound = x.amin(dim=dims, keepdim=True) if which == "low" else x.amax(dim=dims, keepdim=True)
        else:
            bound = bound.to(device=x.device, dtype=x.dtype)
            if bound.dim() >= 2 and bound.shape[1] not in (1, x.shape[1]):
                # the first layer sees fewer channels than the image has (a gray step first): the widest box
                bound = bound.amin(dim=1, keepdim=True) if which == "low" else bound.amax(dim=1, keepdim=True)
        return bound.expand_as(x)

    def groups(self):
        def low(x):
            return self._bound(x, "low")

        def high(x):
            return self._bound(x, "high")

        def minus_positive(w):
            return -w.clamp(min=0)

        def minus_negative(w):
            return -w.clamp(max=0)

        # zennit adds b, b⁺ and b⁻ to the three terms, which cancel: the rule is bias-free
        return (Group((Term(), Term(low, low, minus_positive, minus_positive),
                       Term(high, high, minus_negative, minus_negative))),)


class Norm:
    """The rule of layers without weights that average their inputs (average pooling) and of residual sums:
    R_i = x_i · ∂z/∂x_i · R / stab(z), relevance in proportion to each input's share of the output."""

    name = "norm"

    def __init__(self, stabilizer: float = DEFAULT_STABILIZER):
        self.stabilizer = float(stabilizer)

    def __repr__(self) -> str:
        return "Norm()"


class Pass:
    """Elementwise activations: the relevance passes through unchanged (zennit's convention)."""

    name = "pass"

    def __repr__(self) -> str:
        return "Pass()"


class Gradient:
    """Max pooling, dropout, reshapes, concatenations: the gradient routes the relevance (max pooling: the winner
    takes all)."""

    name = "gradient"

    def __repr__(self) -> str:
        return "Gradient()"
