"""The method registry: every method declares its parameters, cost, capabilities and paper, and registers by name.

The UI, the CLI and the docs are all generated from ``METHODS``: pickers filter on the capability flags, cost
captions come from the declared :class:`Cost`, the Methods page from the rest. Adding a method never touches a page.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch import nn

from .attention import has_attention
from .errors import ParameterError, UnknownMethodError


@dataclass(frozen=True)
class Param:
    """One declared parameter. ``kind`` is "int", "float", "bool", "choice" or "folder" (a path to a folder of
    files, "" for none; the method checks what it finds there)."""

    kind: str
    default: Any
    help: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    allow_tensor: bool = False  # e.g. IG's baseline may also be a tensor
    # Shown only when another parameter has a given value, e.g. SmoothGrad's n_steps only with base=IG.
    only_when: tuple[str, tuple[Any, ...]] | None = None

    def coerce(self, name: str, value: Any) -> Any:
        """Return ``value`` converted to this parameter's type, or raise ParameterError naming the rule."""
        if self.allow_tensor and isinstance(value, torch.Tensor):
            return value
        try:
            if self.kind == "int":
                if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                    raise ValueError
                value = int(value)
            elif self.kind == "float":
                if isinstance(value, bool):
                    raise ValueError
                value = float(value)
            elif self.kind == "bool":
                if isinstance(value, str):
                    lowered = value.strip().lower()
                    if lowered not in ("true", "false", "1", "0", "yes", "no"):
                        raise ValueError
                    value = lowered in ("true", "1", "yes")
                else:
                    value = bool(value)
            elif self.kind == "folder":
                if value is None:
                    value = ""
                if not isinstance(value, (str, bytes)) and not hasattr(value, "__fspath__"):
                    raise ValueError
                value = os.fsdecode(value).strip()
            elif self.kind == "choice":
                value = str(value)
                if value not in self.choices:
                    raise ParameterError(
                        f"parameter {name!r} must be one of {', '.join(self.choices)}; got {value!r}"
                    )
        except (TypeError, ValueError) as exc:
            if isinstance(exc, ParameterError):
                raise
            kind = {"int": "an integer", "float": "a number", "bool": "true or false",
                    "folder": "a folder path"}.get(self.kind, self.kind)
            raise ParameterError(f"parameter {name!r} must be {kind}; got {value!r}") from None
        if self.kind in ("int", "float"):
            if value != value:  # NaN
                raise ParameterError(f"parameter {name!r} must be a number; got NaN")
            if self.minimum is not None and value < self.minimum:
                raise ParameterError(f"parameter {name!r} must be ≥ {self.minimum}; got {value}")
            if self.maximum is not None and value > self.maximum:
                raise ParameterError(f"parameter {name!r} must be ≤ {self.maximum}; got {value}")
        return value

    def applies(self, params: dict[str, Any]) -> bool:
        """Whether this parameter matters given the others (always, unless ``only_when`` says otherwise)."""
        if self.only_when is None:
            return True
        other, values = self.only_when
        return params.get(other) in values


@dataclass(frozen=True)
class Reference:
    authors: str
    year: int
    title: str
    arxiv: str | None = None
    url: str | None = None

    @property
    def link(self) -> str | None:
        return self.url or (f"https://arxiv.org/abs/{self.arxiv}" if self.arxiv else None)

    def __str__(self) -> str:
        arxiv = f", arXiv:{self.arxiv}" if self.arxiv else ""
        return f"{self.authors} {self.year}{arxiv}"


class Sanity(enum.Enum):
    """A method's verdict under Adebayo et al. 2018's model-randomisation test (arXiv:1810.03292)."""

    PASSES = "passes model randomisation"
    FAILS = "fails model randomisation"
    CLASS_INSENSITIVE = "class-insensitive"
    AS_BASE = "as its base method"
    UNTESTED = "not tested by Adebayo et al. 2018"
    CONTROL = "control, not an explanation"

    @property
    def label(self) -> str:
        return self.value

    @property
    def expects_pass(self) -> bool | None:
        """What the paper found under model randomisation: True (the map changes), False (it survives), None
        where it made no such finding (untested, a control, a class-sensitivity verdict, or a wrapper's own)."""
        return {Sanity.PASSES: True, Sanity.FAILS: False}.get(self)


@dataclass(frozen=True)
class PublishedVerdict:
    """The published model-randomisation verdict that applies to a method with given parameters: ``sanity`` is
    ``source``'s verdict, the method itself or, for a wrapper (``Sanity.AS_BASE``), the base it wraps."""

    sanity: Sanity
    method: str
    source: str

    @property
    def label(self) -> str:
        inherited = f" (as {self.source})" if self.source != self.method else ""
        return f"{self.sanity.label}{inherited}"


class Passes(NamedTuple):
    """Passes per image: forward and backward."""

    forward: int
    backward: int

    @property
    def total(self) -> int:
        return self.forward + self.backward

    def __str__(self) -> str:
        parts = [f"{self.forward} forward"] if self.forward or not self.backward else []
        if self.backward:
            parts.append(f"{self.backward} backward")
        last = self.backward if self.backward else self.forward
        return " + ".join(parts) + (" pass" if last == 1 else " passes")


Steps = Callable[[dict[str, Any], tuple[int, int]], int]


@dataclass(frozen=True)
class Cost:
    """What one image costs, as data: ``fixed`` passes, plus ``per_step`` passes for each of ``steps`` (the
    name of a count parameter such as ``n_steps``, or a function of the parameters and input size, such as
    occlusion's window count), plus ``per_channel`` passes for each channel of the layer. A wrapper repeats
    the cost of the method named by its ``base`` parameter ``repeats`` times (SmoothGrad's ``n_samples``).
    Each pair is (forward, backward).
    """

    fixed: tuple[int, int] = (1, 0)
    per_step: tuple[int, int] = (0, 0)
    steps: str | Steps | None = None
    per_channel: tuple[int, int] = (0, 0)
    repeats: str | None = None
    base: str | None = None

    @property
    def depends_on_channels(self) -> bool:
        return self.per_channel != (0, 0)

    def step_count(self, params: dict[str, Any], hw: tuple[int, int]) -> int:
        if self.steps is None:
            return 0
        return int(params[self.steps]) if isinstance(self.steps, str) else int(self.steps(params, hw))

    def passes(self, params: dict[str, Any], hw: tuple[int, int], channels: int | None) -> Passes:
        if self.base is not None:
            base = get_method(params[self.base])
            base_params = {k: v for k, v in params.items() if k in base.params}
            # the wrapper validated these already (for its modality): only the counts matter here
            inner = base.cost.passes({**base.defaults(), **base_params}, hw, channels)
            times = int(params[self.repeats]) if self.repeats else 1
            return Passes(inner.forward * times + self.fixed[0], inner.backward * times + self.fixed[1])
        if self.depends_on_channels and channels is None:
            raise ParameterError("this method's cost depends on the layer's channel count; resolve the layer first")
        steps = self.step_count(params, hw)
        forward = self.fixed[0] + self.per_step[0] * steps + self.per_channel[0] * (channels or 0)
        backward = self.fixed[1] + self.per_step[1] * steps + self.per_channel[1] * (channels or 0)
        return Passes(forward, backward)


ONE_PASS = Cost(fixed=(1, 1))  # one forward and one backward
FORWARD_ONLY = Cost(fixed=(1, 0))


# Requirements a model must meet for a method to run, checked by ``MethodInfo.unavailable_reason``.
NEEDS_LAYER = "layer"  # a spatial layer to capture (CAMs)
NEEDS_ATTENTION = "attention"  # attention blocks (vision transformers), as ``attention.has_attention`` finds them
NEEDS_RELU_MODULES = "relu_modules"  # nn.ReLU / nn.ReLU6 modules whose backward can be replaced
NEEDS_MODEL = "model"  # everything but model-free controls
# what a model that refuses hooks (``supports_hooks = False``, e.g. TorchScript) cannot run
HOOK_NEEDS = frozenset({NEEDS_LAYER, NEEDS_RELU_MODULES, NEEDS_ATTENTION})


TEXT = "text"
IMAGE = "image"
MODALITIES = (IMAGE, TEXT)
# How a method's per-dimension attribution over a token's embedding [D] becomes the token's one score
# (see ``explainers.text.render.token_scores``): "sum" keeps the sign (x ⊙ ∇ summed: a contribution), "l2" the
# gradient's length (a sensitivity), "map" when the method already gives one value per token, "base" as the
# method named by its ``base`` parameter (SmoothGrad).
TOKEN_REDUCTIONS = ("sum", "l2", "map", "base")


@dataclass(frozen=True)
class TextUse:
    """How a method runs on a text classifier, whose input is the token embeddings laid out as [N, D, 1, L]
    (``explainers.text``). ``params`` replaces image parameters of the same name (IG's baseline becomes pad,
    mask or zero embeddings) or adds text-only ones (occlusion by token or by word); ``hidden`` names image
    parameters that mean nothing on text (superpixel settings), left at the method's own defaults;
    ``reduction`` is one of ``TOKEN_REDUCTIONS``; ``note`` what the Methods page says of the method on text."""

    params: dict[str, Param] = field(default_factory=dict)
    hidden: frozenset[str] = frozenset()
    reduction: str = "map"
    note: str = ""

    def __post_init__(self) -> None:
        if self.reduction not in TOKEN_REDUCTIONS:
            raise ValueError(f"reduction must be one of {TOKEN_REDUCTIONS}; got {self.reduction!r}")


def modality_of(model_or_bundle: Any) -> str:
    """"text" for a text bundle or its token-embedding scorer (they say ``modality = "text"``), else "image"."""
    return TEXT if getattr(model_or_bundle, "modality", IMAGE) == TEXT else IMAGE


@dataclass(frozen=True)
class MethodInfo:
    """Metadata of one method, and the function that computes it.

    ``fn(call, inputs, **params) -> Attribution`` receives a :class:`explainers.core.Call` whose targets and
    layer are already resolved, and returns one attribution per target (see ``explainers.core``).
    """

    name: str
    display_name: str
    family: str
    reference: Reference
    summary: str
    weaknesses: str
    params: dict[str, Param]
    cost: Cost
    fn: Callable[..., Any] = field(repr=False, compare=False)
    attribution_channels: int | None = 3  # None: as many as the input (gradient methods); 1 for maps
    sanity: Sanity = Sanity.UNTESTED
    sanity_note: str = ""
    requires: frozenset[str] = frozenset({NEEDS_MODEL})
    class_sensitive: bool = True  # False: the target does not change the map (Eigen-CAM, rollout)
    smoothgrad_base: bool = False  # a gradient method SmoothGrad/VarGrad may wrap
    sweepable: bool = False  # cheap enough to run once per layer in a layer sweep
    stochastic: bool = False  # depends on the seed
    stochastic_params: dict[str, frozenset] = field(default_factory=dict)  # values that make it depend on the seed
    formula: str = ""  # one line that makes the code checkable against the paper
    # what the method's authors declare about patents or licences on the method itself, with where they say it
    licence_note: str = ""
    # the method's own check of a model, beyond the ``requires`` flags (e.g. LRP's rules cover every layer type):
    # ``model_check(model) -> str | None``, why it cannot run, said for a user; cheap (no forward pass)
    model_check: Callable[[nn.Module], str | None] | None = field(default=None, repr=False, compare=False)
    # how it runs on a text classifier's token embeddings; None: it does not apply to text (a CAM needs a
    # spatial layer, superpixels need pixels)
    text: TextUse | None = None
    image: bool = True  # False: a text-only method

    @property
    def needs_layer(self) -> bool:
        return NEEDS_LAYER in self.requires

    def is_stochastic(self, params: dict[str, Any] | None = None) -> bool:
        """Whether the result depends on the seed with these parameters (defaults for those not given): always
        for SmoothGrad or RISE, and for integrated gradients only with a random baseline."""
        resolved = {**self.defaults(), **(params or {})}
        return self.stochastic or any(resolved.get(name) in values for name, values in self.stochastic_params.items())

    def applies_to(self, modality: str) -> bool:
        """Whether the method makes sense for ``modality`` ("image" or "text")."""
        return self.text is not None if modality == TEXT else self.image

    def params_for(self, modality: str = IMAGE) -> dict[str, Param]:
        """The parameters a user sets for ``modality``: on text, the image ones less ``text.hidden``, with
        ``text.params`` replacing or adding."""
        if modality != TEXT or self.text is None:
            return self.params
        kept = {name: p for name, p in self.params.items() if name not in self.text.hidden}
        return {**kept, **self.text.params}

    def defaults(self, modality: str = IMAGE) -> dict[str, Any]:
        return {name: p.default for name, p in self.params_for(modality).items()}

    def validate(self, params: dict[str, Any], modality: str = IMAGE) -> dict[str, Any]:
        """Defaults filled in, every value coerced; an unknown name is an error listing the known ones."""
        declared = self.params_for(modality)
        unknown = sorted(set(params) - set(declared))
        if unknown:
            known = ", ".join(declared) or "none"
            on = " on text" if modality == TEXT else ""
            raise ParameterError(f"method {self.name!r} has no parameter {unknown[0]!r}{on}; its parameters: {known}")
        resolved = self.defaults(modality)
        for name, value in params.items():
            resolved[name] = declared[name].coerce(name, value)
        return resolved

    def passes(
        self, params: dict[str, Any] | None = None, hw: tuple[int, int] = (224, 224), channels: int | None = None,
        modality: str = IMAGE,
    ) -> Passes:
        """Passes per image with ``params`` (defaults filled in, for ``modality``) on a ``channels``-wide layer;
        on text ``hw`` is (1, tokens)."""
        return self.cost.passes(self.validate(params or {}, modality), tuple(hw), channels)

    def modality_reason(self, modality: str) -> str | None:
        """Why this method does not apply to ``modality`` ("image" or "text"), or None when it does: the one
        wording of every surface (the API, the CLI, a batch run), naming the methods that do apply to text."""
        if self.applies_to(modality):
            return None
        if modality == TEXT:
            return (f"{self.display_name} ({self.name!r}) does not apply to text (it needs pixels, a spatial layer, "
                    "ReLU modules, rules for attention or reference inputs, which a text classifier does not offer); "
                    f"the text methods: {', '.join(methods_for(TEXT))}")
        return f"{self.display_name} ({self.name!r}) is a text method: load a text classifier to run it"

    def unavailable_reason(self, model: nn.Module | None, params: dict[str, Any] | None = None) -> str | None:
        """Why this method cannot run on ``model``, or None when it can; a wrapper (a ``Cost.base`` parameter, as
        SmoothGrad's) also asks its base, named in ``params`` (the default base where not given)."""
        modality = modality_of(model)
        reason = self.modality_reason(modality)
        if reason is not None:
            return reason
        if self.cost.base is not None and self.cost.base in self.params:
            base = (params or {}).get(self.cost.base, self.params[self.cost.base].default)
            if isinstance(base, str) and base in METHODS and base != self.name:
                reason = METHODS[base].unavailable_reason(model)
                if reason is not None:
                    return f"{self.display_name} with base {METHODS[base].display_name}: {reason}"
        if model is not None and getattr(model, "supports_hooks", True) is False and self.requires & HOOK_NEEDS:
            return (f"{self.display_name} needs module hooks, and this model refuses them (a TorchScript module: "
                    "hooks do not run on scripted code); gradient and perturbation methods work")
        if NEEDS_ATTENTION in self.requires and not has_attention(model):
            if modality == TEXT:
                return (f"{self.display_name} needs a transformer: no attention was found in this text model's modules "
                        "(query, key and value projections as in BERT)")
            return (f"{self.display_name} needs a vision transformer: no attention was found in this model's modules "
                    "(an nn.MultiheadAttention, or query, key and value projections as in ViT, DeiT, BEiT or Swin)")
        if NEEDS_RELU_MODULES in self.requires and (
            model is None or not any(isinstance(m, (nn.ReLU, nn.ReLU6)) for m in model.modules())
        ):
            return (f"{self.display_name} replaces the backward pass of nn.ReLU / nn.ReLU6 modules, and this model "
                    "has none (GELU or functional activations)")
        if self.model_check is not None and model is not None:
            return self.model_check(model)
        return None

    def published_verdict(self, params: dict[str, Any] | None = None) -> PublishedVerdict:
        """The published sanity verdict for this method with ``params``: a wrapper (``Sanity.AS_BASE``) with a
        ``base`` choice naming a registered method gives that base's verdict (the default base where not given)."""
        base = self.params.get("base")
        if self.sanity is Sanity.AS_BASE and base is not None and base.kind == "choice":
            name = (params or {}).get("base", base.default)
            if isinstance(name, str) and name in METHODS and name != self.name:
                return PublishedVerdict(METHODS[name].published_verdict().sanity, self.name, name)
        return PublishedVerdict(self.sanity, self.name, self.name)

    def title(self, target_label: str | None) -> str:
        """A panel title: "Grad-CAM · tabby", or "Eigen-CAM · class-agnostic" where the target cannot matter."""
        if not self.class_sensitive:
            return f"{self.display_name} · class-agnostic"
        return f"{self.display_name} · {target_label}" if target_label else self.display_name


METHODS: dict[str, MethodInfo] = {}


def register(name: str, **fields: Any):
    """Decorator: register ``fn(call, inputs, **params) -> Attribution`` as method ``name``.

    ``fields`` are :class:`MethodInfo`'s (display_name, family, reference, summary, weaknesses, cost, ...).
    """

    def decorate(fn):
        params = dict(fields.pop("params", None) or {})
        METHODS[name] = MethodInfo(name=name, params=params, fn=fn, **fields)
        return fn

    return decorate


def methods_for(modality: str) -> list[str]:
    """The registered methods that apply to ``modality`` ("image" or "text"), in registry order."""
    return [name for name, info in METHODS.items() if info.applies_to(modality)]


def get_method(name: str, modality: str | None = None) -> MethodInfo:
    """The method registered as ``name``; UnknownMethodError listing the known ones (those that apply to
    ``modality`` when it is given: a text command lists the text methods)."""
    try:
        return METHODS[name]
    except (KeyError, TypeError):
        known, on = (list(METHODS), "") if modality is None else (methods_for(modality), f" on {modality}")
        raise UnknownMethodError(f"unknown method {name!r}; available{on}: {', '.join(known)}") from None


def available_methods(model: nn.Module | None) -> list[str]:
    """The registered methods that can run on ``model``, in registry order."""
    return [name for name, info in METHODS.items() if info.unavailable_reason(model) is None]


# Families in the order the pickers and the Methods page list them; any other family follows, in registry order.
FAMILY_ORDER = ("Gradient", "Gradient (noise-averaged)", "Propagation", "CAM", "Perturbation", "Surrogate",
                "Attention", "Control")


def method_order() -> list[str]:
    """Every method name, grouped by family in ``FAMILY_ORDER`` and registry order within a family."""
    families = list(FAMILY_ORDER) + [f for f in dict.fromkeys(i.family for i in METHODS.values())
                                     if f not in FAMILY_ORDER]
    return sorted(METHODS, key=lambda n: (families.index(METHODS[n].family), list(METHODS).index(n)))
