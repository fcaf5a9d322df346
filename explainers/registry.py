"""The method registry: every method declares its parameters, cost and paper, and registers itself by name.

The UI, the CLI and the docs are all generated from ``METHODS``, so adding a method never touches a page.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from .errors import ParameterError, UnknownMethodError


@dataclass(frozen=True)
class Param:
    """One declared parameter. ``kind`` is "int", "float", "bool" or "choice"."""

    kind: str
    default: Any
    help: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    allow_tensor: bool = False  # e.g. IG's baseline may also be a tensor

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
            elif self.kind == "choice":
                value = str(value)
                if value not in self.choices:
                    raise ParameterError(
                        f"parameter {name!r} must be one of {', '.join(self.choices)}; got {value!r}"
                    )
        except (TypeError, ValueError) as exc:
            if isinstance(exc, ParameterError):
                raise
            kind = {"int": "an integer", "float": "a number", "bool": "true or false"}.get(self.kind, self.kind)
            raise ParameterError(f"parameter {name!r} must be {kind}; got {value!r}") from None
        if self.kind in ("int", "float"):
            if value != value:  # NaN
                raise ParameterError(f"parameter {name!r} must be a number; got NaN")
            if self.minimum is not None and value < self.minimum:
                raise ParameterError(f"parameter {name!r} must be ≥ {self.minimum}; got {value}")
            if self.maximum is not None and value > self.maximum:
                raise ParameterError(f"parameter {name!r} must be ≤ {self.maximum}; got {value}")
        return value


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


@dataclass(frozen=True)
class MethodInfo:
    """Metadata of one method.

    ``cost(params, hw, channels)`` gives (forward passes, backward passes) per image for an input of spatial
    size ``hw`` and, for layer methods, a layer with ``channels`` channels (None when unknown).
    """

    name: str
    display_name: str
    family: str
    reference: Reference
    summary: str
    weaknesses: str
    params: dict[str, Param]
    cost: Callable[[dict[str, Any], tuple[int, int], int | None], tuple[int, int]]
    fn: Callable[..., Any] = field(repr=False, compare=False)
    needs_layer: bool = False
    attribution_channels: int = 3  # 3 for input-gradient methods, 1 for maps (CAMs, occlusion, RISE)
    sanity_check: str = ""  # Adebayo 2018 model-randomisation verdict, where known

    def defaults(self) -> dict[str, Any]:
        return {name: p.default for name, p in self.params.items()}

    def validate(self, params: dict[str, Any]) -> dict[str, Any]:
        """Defaults filled in, every value coerced; an unknown name is an error listing the known ones."""
        unknown = sorted(set(params) - set(self.params))
        if unknown:
            known = ", ".join(self.params) or "none"
            raise ParameterError(f"method {self.name!r} has no parameter {unknown[0]!r}; its parameters: {known}")
        resolved = self.defaults()
        for name, value in params.items():
            resolved[name] = self.params[name].coerce(name, value)
        return resolved

    def passes(
        self, params: dict[str, Any] | None = None, hw: tuple[int, int] = (224, 224), channels: int | None = None
    ) -> tuple[int, int]:
        """(forward, backward) passes per image with ``params`` (defaults filled in)."""
        return self.cost(self.validate(params or {}), tuple(hw), channels)


METHODS: dict[str, MethodInfo] = {}


def register(
    name: str,
    *,
    display_name: str,
    family: str,
    reference: Reference,
    summary: str,
    weaknesses: str,
    cost: Callable[[dict[str, Any], tuple[int, int], int | None], tuple[int, int]],
    params: dict[str, Param] | None = None,
    needs_layer: bool = False,
    attribution_channels: int = 3,
    sanity_check: str = "",
):
    """Decorator: register ``fn(ctx, inputs, rows, **params) -> Tensor`` as method ``name``."""

    def decorate(fn):
        METHODS[name] = MethodInfo(
            name=name,
            display_name=display_name,
            family=family,
            reference=reference,
            summary=summary,
            weaknesses=weaknesses,
            params=dict(params or {}),
            cost=cost,
            fn=fn,
            needs_layer=needs_layer,
            attribution_channels=attribution_channels,
            sanity_check=sanity_check,
        )
        return fn

    return decorate


def get_method(name: str) -> MethodInfo:
    try:
        return METHODS[name]
    except KeyError:
        raise UnknownMethodError(f"unknown method {name!r}; available: {', '.join(METHODS)}") from None
