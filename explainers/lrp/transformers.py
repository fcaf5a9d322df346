"""AttnLRP: LRP for transformers in one backward pass (Achtibat, Hatefi, Dreyer, Jain, Wiegand, Lapuschkin & Samek
2024, arXiv:2402.05602), on the engine of ``engine.py``.

Every tensor's gradient inside the block is its relevance, as in ``engine.py``; the rules of the paper (Sec. 3):

- linear layers and the patch convolution: ε (``gamma`` > 0: the γ rule, as LRP-eXplains-Transformers' ViT setup
  uses); functional ``F.linear`` (``nn.MultiheadAttention``'s projections, Swin's and BEiT's qkv) the same rule;
- LayerNorm / RMSNorm: the identity rule on the division by the standard deviation (held constant), ε on the
  centring and the affine part (Prop. 3.4);
- elementwise activations (GELU, SiLU, tanh, ...): the identity rule, relevance passes whole (eq. 9); Hugging
  Face's activation modules (``transformers.activations``: BERT's GELUActivation, gelu_new, quick_gelu, ...) as
  one unit, whatever arithmetic they are written in (gelu_new's pow and tanh, quick_gelu's x · sigmoid(1.702 x),
  which the product rule would otherwise take for two factors);
- softmax: R_i = x_i (R_i − s_i Σ_j R_j) (Prop. 3.1);
- products of two tensors that both depend on the input (Q Kᵀ, A·V, gated MLPs): ε on the sum, then half to
  each factor (the uniform rule, Prop. 3.3);
- residual sums: in proportion to each summand (as ``engine.py`` does); constant shifts and scales (position
  embeddings, LayerScale, the attention's scale and relative position bias): the proportional rule.

On BERT (Hugging Face's ``BertForSequenceClassification``, eager or sdpa attention) that covers every module: the
word embeddings are the input (the relevance is read there); the sum with the position and token-type embeddings,
constants, is proportional (they keep their share, as a bias does); LayerNorm, the query/key/value/output
``nn.Linear``, the GELU module, Q·Kᵀ, the softmax and A·V, the residual sums, and the pooler's ``dense`` (ε) and
tanh (identity) as above; dropout is the identity in eval mode.

``attention_rule="cp"`` treats the attention probabilities as constants instead (CP-LRP, Ali, Schnake, Eberle,
Montavon, Müller & Wolf 2022, arXiv:2202.07304): A·V hands all its relevance to the values, none reaches queries and
keys. Attention is always computed explicitly (``explainers.attention.explicit_attention`` / ``explicit_multi_head``
with these rules as softmax, products and projections). An operation no rule covers raises a SaliencyError naming it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._pytree import tree_leaves, tree_map

from ..attention import explicit_attention, explicit_multi_head
from ..hooks import HookSet
from .canonizers import BATCH_NORMS, GATES, batch_norm_pairs, described, detector_head
from .composites import WEIGHTED
from .engine import ACTIVATIONS as ACTIVATION_NAMES
from .engine import ADDS, AVERAGES, JOINS, Session, Unit, Watch, lift, running
from .rules import DEFAULT_STABILIZER, Epsilon, Gamma, Rule, stabilize

ATTENTION_RULES = ("attnlrp", "cp")
SOFTMAX_NAMES = frozenset({"softmax", "_softmax"})
PRODUCTS = frozenset({"matmul", "__matmul__", "__rmatmul__", "bmm", "mm", "einsum", "mul", "__mul__", "__rmul__"})
# operations that only move, copy or select values (or are the identity in eval mode): the gradient routes the
# relevance unchanged. Anything else that depends on the input and has no rule is refused.
ROUTES = frozenset({
    "view", "view_as", "reshape", "reshape_as", "permute", "transpose", "transpose_", "t", "flatten", "unflatten",
    "squeeze", "unsqueeze", "contiguous", "expand", "expand_as", "__getitem__", "select", "narrow", "unbind",
    "chunk", "split", "split_with_sizes", "tensor_split", "movedim", "moveaxis", "swapaxes", "roll", "pad", "to",
    "type_as", "float", "double", "half", "bfloat16", "clone", "detach", "dropout", "dropout1d", "dropout2d",
    "alpha_dropout", "feature_alpha_dropout", "identity", "flip", "index_select", "gather", "repeat",
    "repeat_interleave", "masked_fill", "unfold", "fold", "__setitem__", "cat", "concat", "stack", "requires_grad_",
    "__get__", "size", "dim", "numel", "__len__", "__iter__", "__format__", "__repr__", "__bool__", "__index__",
    "__int__", "__float__", "__contains__", "dtype", "device", "shape", "is_floating_point", "data_ptr", "stride",
    "storage_offset", "is_contiguous", "element_size", "layout", "item", "tolist", "new_zeros", "new_ones",
    "new_empty", "new_full", "new_tensor", "zeros_like", "ones_like", "empty_like", "full_like", "__eq__", "__ne__",
    "__lt__", "__le__", "__gt__", "__ge__", "isinf", "isnan", "isfinite", "sign",
} | JOINS)
NORMS = frozenset({"layer_norm", "rms_norm"})
LINEARS = frozenset({"linear"})
ATTENTIONS = frozenset({"scaled_dot_product_attention", "multi_head_attention_forward"})


class TransformerSession(Session):
    """A ``lrp_rules`` session that also knows attention, normalisation and products (see the module docstring).

    The attention probabilities A are the one place where the backward signal is relevance / value (gradient ×
    input form) instead of relevance: ``A * grad_A`` is the relevance at A, so a caller keeping them (with
    ``explainers.attention.attention_probabilities``) reads it as it would a gradient × input."""

    covers = ("AttnLRP covers linear layers, convolutions, LayerNorm and RMSNorm, elementwise activations, softmax, "
              "products such as attention's Q·Kᵀ and A·V, residual sums, pooling and constant shifts and scales")
    advice = "pick a gradient method or attention rollout for this model"

    def __init__(self, model: nn.Module, rules: dict[nn.Module, Rule], linear_rule: Rule, attention_rule: str,
                 stabilizer: float = DEFAULT_STABILIZER):
        super().__init__(model, rules, stabilizer)
        self.linear_rule = linear_rule
        self.attention_rule = attention_rule
        self.probabilities: dict[int, torch.Tensor] = {}  # the softmax outputs, whose gradient is R / A
        self.attentions = 0
        self.activation_inputs: list[torch.Tensor | None] = []  # inputs of the activation modules running now

    def start(self) -> None:
        super().start()
        self.probabilities.clear()
        self.activation_inputs.clear()

    def stop(self) -> None:
        super().stop()
        self.probabilities.clear()
        self.activation_inputs.clear()

    # ---- helpers ------------------------------------------------------------------------------------------------

    def _probability(self, tensor) -> bool:
        entry = self.probabilities.get(id(tensor)) if isinstance(tensor, torch.Tensor) else None
        return entry is not None and entry is tensor

    def _relevance_in(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` whose backward multiplies by x (relevance = gradient × value at an input of a rule), except for
        attention probabilities, whose gradient already is relevance / value."""
        if not x.requires_grad:
            return x
        if self._probability(x):
            return lift(x, x.detach())
        return lift(x, x.detach(), x.detach())

    def _as_relevance(self, x):
        """An attention probability handed to a rule that expects relevance as its gradient: divide by A."""
        if self._probability(x):
            value = x.detach()
            return lift(x, value, None, stabilize(value, self.stabilizer))
        return x

    def _internal(self, fn, *args, **kwargs):
        self.internal = True
        try:
            return fn(*args, **kwargs)
        finally:
            self.internal = False

    # ---- the rules ----------------------------------------------------------------------------------------------

    def softmax_rule(self, func, args, kwargs):
        """Prop. 3.1: R_x = x ⊙ (R − s Σ R), the softmax's gradient times its input when the output's gradient is
        R / s; "cp": the probabilities as constants."""
        x = args[0]

        def compute():
            if self.attention_rule == "cp":
                return func(x.detach(), *args[1:], **kwargs)
            plain = x.detach()
            finite = torch.where(torch.isneginf(plain), torch.zeros_like(plain), plain)  # masked scores: no share
            probabilities = func(lift(x, plain, finite), *args[1:], **kwargs)
            self.probabilities[id(probabilities)] = probabilities
            return probabilities

        self.attentions += 1
        return self._internal(compute)

    def product_rule(self, func, args, kwargs):
        """Prop. 3.3: ε on the sum over the shared index, then 1/n to each of the n factors that depend on the
        input (n = 1: the ε rule of a linear map with constant weights)."""

        def compute():
            dependent = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor) and t.requires_grad]
            lifted_args, lifted_kwargs = tree_map(
                lambda t: self._relevance_in(t) if isinstance(t, torch.Tensor) else t, (args, kwargs))
            out = func(*lifted_args, **lifted_kwargs)
            value = out.detach()
            return lift(out, value, None, stabilize(value, self.stabilizer) * len(dependent))

        return self._internal(compute)

    def matmul(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``torch.matmul`` under the product rule (for ``explicit_attention``)."""
        if not (a.requires_grad or b.requires_grad):
            return torch.matmul(a, b)
        return self.product_rule(torch.matmul, (a, b), {})

    def softmax(self, scores: torch.Tensor) -> torch.Tensor:
        """Softmax over the keys under the softmax rule (for ``explicit_attention``)."""
        if not scores.requires_grad:
            return scores.softmax(dim=-1)
        return self.softmax_rule(torch.softmax, (scores, -1), {})

    def linear(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """``F.linear`` outside an ``nn.Linear`` (constant weights) under the linear layers' rule."""
        if weight.requires_grad or (bias is not None and bias.requires_grad):
            self.refuse("computes a linear map whose weights depend on the input (F.linear)")
        if not x.requires_grad:
            return F.linear(x, weight, bias)
        rule = self.linear_rule

        def compute():
            if rule.plain:
                out = F.linear(self._relevance_in(x), weight, bias)
                value = out.detach()
                return lift(out, value, None, stabilize(value, rule.stabilizer))
            x_in = self._as_relevance(x)
            unit = Unit(None, "F.linear", rule, groups=rule.groups())
            unit.cache["merged"] = (weight.detach(), None if bias is None else bias.detach())
            return self.apply(unit, x_in, F.linear(x.detach(), weight, bias))

        return self._internal(compute)

    def norm_rule(self, name, args, kwargs):
        """Prop. 3.4: the normalisation's scale 1/σ held constant (identity rule), ε on the rest, which is linear."""
        x = args[0]
        shape = args[1] if len(args) > 1 else kwargs["normalized_shape"]
        rest = list(args[2:])
        weight = rest.pop(0) if rest else kwargs.get("weight")
        if name == "layer_norm":
            bias = rest.pop(0) if rest else kwargs.get("bias")
            eps = rest.pop(0) if rest else kwargs.get("eps", 1e-5)
        else:
            bias = None
            eps = rest.pop(0) if rest else kwargs.get("eps")
        if any(t is not None and t.requires_grad for t in (weight, bias)):
            self.refuse(f"normalises with a scale or shift that depends on the input ({name})")
        dims = tuple(range(-len(tuple(shape)) if not isinstance(shape, int) else -1, 0))

        def compute():
            plain = x.detach()
            lifted = self._relevance_in(x)
            if name == "layer_norm":
                centred = lifted - lifted.mean(dim=dims, keepdim=True)
                scale = torch.rsqrt(plain.var(dim=dims, unbiased=False, keepdim=True) + eps)
                value = F.layer_norm(plain, tuple(shape) if not isinstance(shape, int) else (shape,), weight, bias,
                                     eps)
            else:
                centred = lifted
                floor = torch.finfo(plain.dtype).eps if eps is None else eps
                scale = torch.rsqrt(plain.pow(2).mean(dim=dims, keepdim=True) + floor)
                value = F.rms_norm(plain, tuple(shape) if not isinstance(shape, int) else (shape,), weight, eps)
            out = centred * scale
            if weight is not None:
                out = out * weight
            if bias is not None:
                out = out + bias
            return lift(out, value, None, stabilize(value, self.stabilizer))

        return self._internal(compute)

    def attention(self, func, args, kwargs):
        """A fused attention written out with these rules; the scale, masks and biases inside it go through this
        session's other rules (the function mode is entered again for them)."""

        def compute():
            with Watch(self):
                if func is F.scaled_dot_product_attention:
                    return explicit_attention(*args, **kwargs, softmax=self.softmax, matmul=self.matmul)
                return explicit_multi_head(args, kwargs, softmax=self.softmax, matmul=self.matmul,
                                           linear=self.linear)

        return compute()

    def activation_pre(self, module, args):
        """An elementwise activation module starts: its inner operations run unwatched (depth > 0)."""
        if not self.active or self.internal or self.depth:
            self.activation_inputs.append(None)  # inside a covered layer, or not ours to rule
            return None
        self.activation_inputs.append(args[0] if args and isinstance(args[0], torch.Tensor) else None)
        self.depth += 1
        return None

    def activation_post(self, module, args, output):
        """The identity rule (eq. 9) on the module as a whole: its output's relevance goes to its input whole."""
        x = self.activation_inputs.pop() if self.activation_inputs else None
        if x is None:
            return None
        self.depth -= 1
        if not x.requires_grad or not isinstance(output, torch.Tensor):
            return None
        return self._internal(lift, x, output.detach())

    # ---- the dispatch -------------------------------------------------------------------------------------------

    def functional(self, func, args, kwargs):
        name = getattr(func, "__name__", "") or str(func)
        if self.pending:
            self._check_pending([t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)],
                                f"an operation ({name})")
        tensors = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        dependent = [t for t in tensors if t.requires_grad]
        if not dependent:
            return func(*args, **kwargs)
        if func is F.scaled_dot_product_attention or func is F.multi_head_attention_forward:
            return self.attention(func, args, kwargs)
        if name in PRODUCTS and (len(dependent) >= 2 or name not in ("mul", "__mul__", "__rmul__")
                                 or any(self._probability(t) for t in dependent)):
            return self.product_rule(func, args, kwargs)
        if name in SOFTMAX_NAMES and args and args[0] is dependent[0] and len(dependent) == 1:
            return self.softmax_rule(func, args, kwargs)
        if name in LINEARS and args and args[0] is dependent[0]:
            return self.linear(*args, **kwargs)
        if name in NORMS and args and args[0] is dependent[0] and len(dependent) == 1:
            return self.norm_rule(name, args, kwargs)
        if any(self._probability(t) for t in dependent):
            if name in ROUTES:  # the probabilities moved or cast (eval dropout, dtype): still R / A
                out = func(*args, **kwargs)
                for result in tree_leaves(out):
                    if isinstance(result, torch.Tensor) and result.requires_grad:
                        self.probabilities[id(result)] = result
                return out
            args, kwargs = tree_map(self._as_relevance, (args, kwargs))
        known = (name in ADDS or name in ACTIVATION_NAMES or name in AVERAGES or name in ROUTES)
        out = super().functional(func, args, kwargs)
        if not known and any(isinstance(t, torch.Tensor) and t.requires_grad for t in tree_leaves(out)):
            self.refuse(f"calls {name!r} outside a layer AttnLRP knows")
        return out

    def layer_pre(self, module, args):
        if self.active and not self.internal and args and self._probability(args[0]):
            # a layer's rule hands relevance back: the probabilities want relevance / A
            converted = (self._internal(self._as_relevance, args[0]), *args[1:])
            return super().layer_pre(module, converted) or converted
        return super().layer_pre(module, args)

    def root_post(self, module, args, output):
        if not self.active:
            return None
        logits = getattr(output, "logits", None)
        if not isinstance(output, torch.Tensor) and isinstance(logits, torch.Tensor):
            # a Hugging Face model output: the relevance starts at its logits
            output.logits = super().root_post(module, args, self._as_relevance(logits))
            return output
        return super().root_post(module, args, self._as_relevance(output))

    @staticmethod
    def layer(module, x, weight):
        if module is None:  # a functional linear map (see ``linear``)
            return F.linear(x, weight)
        return Session.layer(module, x, weight)


def linear_rule(epsilon: float, gamma: float) -> Rule:
    """The rule of every linear layer and convolution: ε, or γ where ``gamma`` > 0."""
    return Gamma(gamma) if gamma > 0 else Epsilon(epsilon)


@contextlib.contextmanager
def attention_lrp(model: nn.Module, *, epsilon: float = 1e-6, gamma: float = 0.0, attention_rule: str = "attnlrp",
                  stabilizer: float = DEFAULT_STABILIZER) -> Iterator[TransformerSession]:
    """AttnLRP (Achtibat et al. 2024, arXiv:2402.05602) as a block: inside it, an ordinary forward and autograd
    backward compute the relevance, ``torch.autograd.grad(score, x)`` being the relevance at the input ``x`` (the
    relevance at the logits = the score's gradient there times the logits, as in ``lrp_rules``).

    Linear layers and convolutions get the ε rule (``epsilon``), or the γ rule where ``gamma`` > 0; the other
    rules are in the module docstring. ``attention_rule`` "attnlrp" (the paper's softmax and uniform product rules)
    or "cp" (the probabilities as constants, CP-LRP, Ali et al. 2022, arXiv:2202.07304).

    Entered inside this block, ``explainers.attention.attention_probabilities()`` keeps each attention's
    probabilities A (the softmax rule's output); after the backward, the relevance at A is ``A * grad_A`` (the
    gradient there is relevance / A, gradient × input form). Under "cp" A is a constant and gets no gradient.

    The model's values and logits are unchanged; hooks go and the parameters' ``requires_grad`` is restored on exit.
    An operation no rule covers raises a SaliencyError naming it."""
    if attention_rule not in ATTENTION_RULES:
        raise ValueError(f"attention_rule must be one of {', '.join(ATTENTION_RULES)}; got {attention_rule!r}")
    rule = linear_rule(epsilon, gamma)
    rules = {module: rule for module in model.modules() if isinstance(module, WEIGHTED)}
    session = TransformerSession(model, rules, rule, attention_rule, stabilizer)
    hooks = HookSet()
    with running(model, session):
        try:
            for module in model.modules():
                if elementwise_module(module):
                    hooks.add(module.register_forward_pre_hook(session.activation_pre))
                    hooks.add(module.register_forward_hook(session.activation_post))
            yield session
        finally:
            hooks.remove()


# the module that holds Hugging Face's activation modules (ACT2FN: GELUActivation, NewGELUActivation, ...): every
# class there computes an elementwise function of its input, whatever arithmetic it is written in
HF_ACTIVATIONS = "transformers.activations"


def elementwise_module(module: nn.Module) -> bool:
    """Whether ``module`` is an elementwise activation that AttnLRP rules as one unit (identity rule). Named by
    its module path, not imported: transformers need not be installed for images."""
    return type(module).__module__ == HF_ACTIVATIONS


# layers with no rule; every other module is left to the forward, whose operations the session checks
_REFUSED = (nn.LogSoftmax, nn.Softmax2d, nn.LocalResponseNorm, nn.Bilinear, nn.Upsample, nn.PixelShuffle,
            nn.GroupNorm, nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)


def transformer_uncovered(model: nn.Module) -> str | None:
    """Why AttnLRP cannot run on ``model``, said for a user, or None: layer types known to have no rule and
    BatchNorms with nothing to merge into. Cheap (no forward); what the forward does beyond is checked when it
    runs."""
    head = detector_head(model)
    if head is not None:
        return head
    pairs = batch_norm_pairs(model)
    found: dict[str, list[str]] = {}
    for name, module in model.named_modules():
        kind = type(module).__name__
        if GATES and isinstance(module, GATES):
            found.setdefault(f"{kind} (multiplies two branches)", []).append(name)
        elif isinstance(module, BATCH_NORMS) and (module not in pairs or module.running_mean is None):
            found.setdefault(f"{kind} not right after a convolution or linear layer", []).append(name)
        elif isinstance(module, _REFUSED):
            found.setdefault(kind, []).append(name)
    if not found:
        return None
    return f"AttnLRP has no rule for {described(found)}; {TransformerSession.covers}"
