"""Which architecture a state dict belongs to, from its key names and tensor shapes alone.

Every architecture has a signature: the names and shapes of its state dict, with the classification head's
output width left free (a fine-tuned model has its own class count). Signatures come from the constructors
themselves, built on the meta device with their random initialisation skipped (no memory, no download, no
weights), once per process for every torchvision classifier and the default model: about ten seconds on two
cores, then a lookup of milliseconds. timm's 1300-odd models are not indexed (building them all takes minutes);
a timm architecture is checked against its own family (``resnet50`` ... ``resnet200d``) by the loader.

Also here: building an architecture with fresh weights, finding its head, and comparing a state dict with it,
which the loader (:mod:`explainers.models.user`) shares.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import torch
import torchvision
from torch import nn
from torch.overrides import TorchFunctionMode

from ..errors import ModelLoadError
from .architectures import DEFAULT_ARCHITECTURE, TIMM_PREFIX, torchvision_architectures
from .efficientnet_lite import EfficientNetLite0

# Prefixes DataParallel / torch.compile / wrappers add to every key of a state dict.
KEY_PREFIXES = ("module.", "_orig_mod.", "model.")
# torchvision builders whose auxiliary heads are optional: (name, the prefix of the aux head's keys)
AUX_HEADS = {"inception_v3": "AuxLogits.", "googlenet": "aux1."}
# Tensor methods the initialisers call: skipped on meta tensors, where they compute nothing but still cost time.
_INIT_METHODS = frozenset({"normal_", "uniform_", "trunc_normal_", "fill_", "zero_", "erfinv_", "mul_", "add_",
                           "clamp_", "copy_", "exponential_", "orthogonal_"})


class ArchitectureMismatchError(ModelLoadError):
    """A state dict that does not fit the architecture asked for; ``guesses`` are the architectures it fits
    exactly (their head's class count aside), best first."""

    def __init__(self, message: str, guesses: Sequence[str] = ()):
        super().__init__(message)
        self.guesses = tuple(guesses)


class _SkipInit(TorchFunctionMode):
    """Builds on the meta device without running initialisers, and computes builders' own arithmetic
    (torchvision's RegNet widths, from ``torch.arange`` and ``torch.tensor``) on the CPU, where it has values."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if getattr(func, "__name__", "") in _INIT_METHODS and args and isinstance(args[0], torch.Tensor) \
                and args[0].is_meta:
            return args[0]
        if func in (torch.arange, torch.linspace, torch.tensor) and kwargs.get("device") is None:
            kwargs["device"] = "cpu"
        return func(*args, **kwargs)


def builder_kwargs(name: str, state: dict[str, torch.Tensor] | None) -> dict:
    """torchvision builders whose auxiliary heads are optional: build them only if the weights have them."""
    if name in AUX_HEADS and state is not None:
        return {"aux_logits": any(k.startswith(AUX_HEADS[name]) for k in state)}
    return {}


def construct(family: str, name: str, num_classes: int | None, kwargs: dict) -> nn.Module:
    """The architecture with fresh random weights (nothing is ever downloaded)."""
    extra = dict(kwargs)
    if num_classes is not None:
        extra["num_classes"] = num_classes
    if family == "default":
        return EfficientNetLite0(**extra)
    if family == "torchvision":
        if name not in AUX_HEADS:
            return torchvision.models.get_model(name, weights=None, **extra)
        with warnings.catch_warnings():  # both warn that their default initialisation will change
            warnings.simplefilter("ignore", FutureWarning)
            return torchvision.models.get_model(name, weights=None, **extra)
    import timm  # deferred: a heavy import that only timm architectures need

    return timm.create_model(name, pretrained=False, **extra)


def template(family: str, name: str, num_classes: int | None, kwargs: dict) -> tuple[nn.Module, bool]:
    """(model, is_real): built on the meta device, initialisers skipped (cheap: no memory, no init), else real
    when a builder cannot run there."""
    try:
        with torch.device("meta"), _SkipInit():
            return construct(family, name, num_classes, kwargs), False
    except Exception:
        return construct(family, name, num_classes, kwargs), True


def head_names(model: nn.Module) -> list[str]:
    """Module names of the classification head(s): timm's ``get_classifier()``, else the last Linear or Conv
    whose output width is the model's class count (``fc``, ``classifier.1``, ``heads.head``, ``_fc``)."""
    modules = dict(model.named_modules())
    get = getattr(model, "get_classifier", None)
    if callable(get):
        try:
            heads = get()
        except Exception:
            heads = None
        heads = heads if isinstance(heads, tuple) else (heads,)
        found = [n for h in heads if isinstance(h, nn.Module) for n, m in modules.items() if m is h and n]
        found = [n for n in found if isinstance(getattr(modules[n], "weight", None), torch.Tensor)]
        if found:
            return found
    layers = [(n, m) for n, m in modules.items() if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))]
    if not layers:
        return []
    width = lambda m: m.out_features if isinstance(m, nn.Linear) else m.out_channels  # noqa: E731
    classes = width(layers[-1][1])
    last = [n for n, m in layers if width(m) == classes][-1:]
    # GoogLeNet's and Inception v3's auxiliary classifiers (aux1.fc2, AuxLogits.fc) are heads too
    return [n for n, m in layers if width(m) == classes and "aux" in n.lower() and n not in last] + last


def shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def align_prefix(state: dict[str, torch.Tensor], expected: set[str]) -> dict[str, torch.Tensor]:
    """Strip ``module.`` (DataParallel), ``_orig_mod.`` (torch.compile) or ``model.`` when every key has it and
    the architecture's keys do not."""
    changed = True
    while changed and state:
        changed = False
        for prefix in KEY_PREFIXES:
            if all(k.startswith(prefix) for k in state) and not any(k.startswith(prefix) for k in expected):
                state = {k[len(prefix):]: v for k, v in state.items()}
                changed = True
    return state


def mismatch(state: dict[str, torch.Tensor], expected: dict[str, tuple[int, ...]]) -> tuple[list, list, list]:
    """(missing keys, unexpected keys, (key, expected shape, shape) of the wrong shapes), each sorted by key."""
    missing = sorted(k for k in expected if k not in state)
    unexpected = sorted(k for k in state if k not in expected)
    wrong = sorted((k, expected[k], tuple(state[k].shape)) for k in expected
                   if k in state and tuple(state[k].shape) != expected[k])
    return missing, unexpected, wrong


@dataclass(frozen=True)
class Signature:
    """An architecture's state dict as names and shapes; ``heads`` are the head's keys, whose first dimension
    (the class count) is free."""

    architecture: str  # as the loader takes it: "resnet18", "efficientnet_lite0", "timm:resnet18"
    shapes: dict[str, tuple[int, ...]]
    heads: frozenset[str]

    def fits(self, state: dict[str, torch.Tensor]) -> bool:
        """Every key present, none extra, every shape equal except the head's class count."""
        state = align_prefix(state, set(self.shapes))
        if state.keys() != self.shapes.keys():
            return False
        for key, shape in self.shapes.items():
            got = tuple(state[key].shape)
            if got != shape and not (key in self.heads and len(got) == len(shape) and got[1:] == shape[1:]):
                return False
        return True

    def classes(self, state: dict[str, torch.Tensor]) -> int | None:
        state = align_prefix(state, set(self.shapes))
        weights = [k for k in sorted(self.heads) if k.endswith(".weight") and k in state]
        return int(state[weights[-1]].shape[0]) if weights else None


def signature(family: str, name: str, kwargs: dict | None = None) -> Signature:
    """The signature of one architecture, built on the meta device (a RegNet's builder computes on the CPU)."""
    model, _ = template(family, name, None, kwargs or {})
    heads = head_names(model)
    label = f"{TIMM_PREFIX}{name}" if family == "timm" and name in torchvision_architectures() else name
    return Signature(label, shapes(model), frozenset(f"{h}.{p}" for h in heads for p in ("weight", "bias")))


_BUILDING = threading.Lock()  # two sessions that guess at once build the index once


@lru_cache(maxsize=1)
def _index() -> tuple[Signature, ...]:
    found = []
    candidates = [("default", DEFAULT_ARCHITECTURE)] + [("torchvision", n) for n in torchvision_architectures()]
    for family, name in candidates:
        variants = [{}] if name not in AUX_HEADS else [{"aux_logits": True}, {"aux_logits": False}]
        for kwargs in variants:
            try:
                found.append(signature(family, name, kwargs))
            except Exception:  # an architecture that cannot be built here is one guess fewer, not an error
                continue
    return tuple(found)


def known_signatures() -> tuple[Signature, ...]:
    """The default model's and every torchvision classifier's signature (Inception v3 and GoogLeNet with and
    without their auxiliary heads), built once per process."""
    with _BUILDING:
        return _index()


@dataclass(frozen=True)
class Match:
    architecture: str
    keys: int  # how many keys matched: all of them
    num_classes: int | None  # the head's class count in these weights


def matching_architectures(state: dict[str, torch.Tensor],
                           signatures: Sequence[Signature] | None = None) -> list[Match]:
    """The architectures whose signature ``state`` fits exactly (every key, every shape, the head's class count
    aside), in the index's order; ``signatures`` defaults to :func:`known_signatures`."""
    matches = []
    for known in known_signatures() if signatures is None else signatures:
        if known.fits(state) and known.architecture not in (m.architecture for m in matches):
            matches.append(Match(known.architecture, len(known.shapes), known.classes(state)))
    return matches


def describe(match: Match) -> str:
    """"this looks like 'mobilenet_v2' (all 314 keys match; 4 classes)"."""
    classes = f"; {match.num_classes} classes" if match.num_classes is not None else ""
    return f"this looks like {match.architecture!r} (all {match.keys} keys match{classes})"
