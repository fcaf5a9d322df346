"""The option types and parsers every command shares: one of each, so the commands agree on spelling and errors.

argparse ``type=`` functions raise ``ArgumentTypeError`` (argparse turns it into ``error: ...``); the parsers of
repeated options (``--param``) raise ``ParameterError``, which ``main`` prints as one line.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path

import torch

from ..errors import LayerError, ParameterError, SaliencyError
from ..registry import get_method

PROG = "python -m explainers"


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors, like every other error of this CLI."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def unit_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}")
    return value


def percentile(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 < value <= 100.0:
        raise argparse.ArgumentTypeError(f"expected a percentile in (0, 100], got {text!r}")
    return value


def fractions(text: str) -> list[float]:
    """``"0.1,0.5"`` -> [0.1, 0.5], each in (0, 1)."""
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        values = []
    if not values or any(not 0.0 < v < 1.0 for v in values):
        raise argparse.ArgumentTypeError(f"expected fractions in (0, 1), e.g. 0.1,0.5,0.9; got {text!r}")
    return values


def percentages(text: str) -> list[float]:
    """``"10,30"`` -> [0.1, 0.3], each in (0, 100) percent."""
    try:
        values = [float(part) / 100 for part in text.split(",") if part.strip()]
    except ValueError:
        values = []
    if not values or any(not 0.0 < v < 1.0 for v in values):
        raise argparse.ArgumentTypeError(f"expected percentages in (0, 100), e.g. 10 or 10,30; got {text!r}")
    return values


def method_names(values: Sequence[str] | str | None, default: Sequence[str] = ()) -> list[str]:
    """``["a,b", "c"]`` (or ``"a,b"``) -> ``["a", "b", "c"]``, each checked against the registry (an unknown name
    raises UnknownMethodError with suggestions); ``default`` when none is given."""
    if isinstance(values, str):
        values = [values]
    names = [name.strip() for value in (values or ()) for name in value.split(",") if name.strip()] or list(default)
    if not names:
        raise ParameterError("expected at least one method name (see `python -m explainers list-methods`)")
    for name in names:
        get_method(name)
    return list(dict.fromkeys(names))


def parse_params(items: Sequence[str] | None) -> dict[str, str]:
    """``["n_steps=20", ...]`` -> ``{"n_steps": "20"}``; values stay strings for ``MethodInfo.validate``."""
    params: dict[str, str] = {}
    for item in items or ():
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ParameterError(f"--param expects NAME=VALUE (e.g. n_steps=20), got {item!r}")
        params[name.strip()] = value.strip()
    return params


def method_params(items: Sequence[str] | None, methods: Sequence[str]) -> dict[str, dict[str, str]]:
    """``["occlusion.window=8"]`` -> ``{"occlusion": {"window": "8"}}``; values stay strings for validation."""
    params: dict[str, dict[str, str]] = {}
    for item in items or ():
        head, sep, value = item.partition("=")
        method, dot, name = head.strip().partition(".")
        if not sep or not dot or not name.strip():
            raise ParameterError(f"--param expects METHOD.NAME=VALUE (e.g. occlusion.window=8), got {item!r}")
        if method not in methods:
            raise ParameterError(f"--param {item!r} names method {method!r}, which is not among the methods "
                                 f"({', '.join(methods)})")
        params.setdefault(method, {})[name.strip()] = value.strip()
    return params


def add_methods(parser: argparse.ArgumentParser, default: Sequence[str], note: str = "",
                example: str = "occlusion.window=8") -> None:
    """``--methods M[,M…]`` (commas or spaces; read with :func:`method_names`) and the repeatable
    ``--param METHOD.NAME=VALUE`` (read with :func:`method_params`), the same in every command."""
    parser.add_argument("--methods", nargs="+", default=list(default), metavar="M",
                        help=f"methods, comma- or space-separated (see list-methods; default: {','.join(default)})"
                        + (f"; {note}" if note else ""))
    parser.add_argument("--param", action="append", default=[], metavar="METHOD.NAME=VALUE",
                        help=f"a method parameter (repeatable), e.g. --param {example}")


def add_device(parser: argparse.ArgumentParser) -> None:
    """``--device cpu|cuda`` (default: cuda if available); read with :func:`pick_device`."""
    parser.add_argument("--device", default=None, choices=("cpu", "cuda"), help="default: cuda if available, else cpu")


def pick_device(requested: str | None) -> str:
    if requested is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise SaliencyError("expected a CUDA GPU for --device cuda, but torch.cuda.is_available() is False")
    return requested


def out_folder(path: str | Path) -> Path:
    """``--out`` created if missing; a folder that cannot be made is a user error."""
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SaliencyError(f"expected a writable output folder for --out, got {str(folder)!r} ({exc})") from None
    return folder


def out_stems(paths: Sequence[str]) -> list[str]:
    """File stems, made unique (``cat``, ``cat-2``) when two images share one."""
    seen: dict[str, int] = {}
    stems = []
    for path in paths:
        stem = Path(path).stem or "image"
        seen[stem] = seen.get(stem, 0) + 1
        stems.append(stem if seen[stem] == 1 else f"{stem}-{seen[stem]}")
    return stems


def check_layer(bundle, layer: str | None) -> None:
    """``--layer`` checked against the model; the error names the command that lists the valid layers (the
    backend's message lists them all: too long for one line of a terminal)."""
    if layer is None:
        return
    try:
        bundle.resolve_layer(layer)
    except LayerError as exc:
        reason = str(exc).split("; pick one of:")[0]
        raise LayerError(f"{reason}; `{PROG} list-layers {bundle.name}` lists the valid layers") from None
