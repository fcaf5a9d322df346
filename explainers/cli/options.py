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
from ..models import load_model, model_info
from ..models.text import DEFAULT_TEXT_MODEL, load_text_model
from ..models.user import load_user_model
from ..registry import TEXT, get_method

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


def method_names(values: Sequence[str] | str | None, default: Sequence[str] = (),
                 modality: str | None = None) -> list[str]:
    """``["a,b", "c"]`` (or ``"a,b"``) -> ``["a", "b", "c"]``, each checked against the registry (an unknown name
    raises UnknownMethodError listing the known ones: those for ``modality`` when given); ``default`` when none is
    given."""
    if isinstance(values, str):
        values = [values]
    names = [name.strip() for value in (values or ()) for name in value.split(",") if name.strip()] or list(default)
    if not names:
        raise ParameterError("expected at least one method name (see `python -m explainers list-methods`)")
    for name in names:
        get_method(name, modality)
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


def add_model_file(parser: argparse.ArgumentParser) -> None:
    """The options of ``--model PATH``, a model file instead of a zoo name (read by :func:`load_cli_model`)."""
    group = parser.add_argument_group("a model file (--model PATH instead of a name)")
    group.add_argument("--architecture", default=None, metavar="NAME",
                       help="the architecture of a state dict (.pt/.pth/.safetensors), e.g. "
                       "fasterrcnn_mobilenet_v3_large_320_fpn or resnet18")
    group.add_argument("--class-names", default=None, metavar="FILE", help="class names, a .txt (one a line) or .json")
    group.add_argument("--input-size", default=None, type=positive_int, metavar="N", help="the model's input side")
    group.add_argument("--trust-code", action="store_true",
                       help="allow a TorchScript archive (it runs the file's code; or set SALIENCY_TRUST_CODE=1)")


def is_model_file(model: str) -> bool:
    """``--model`` names a file (or a Hugging Face folder) rather than a zoo model."""
    path = Path(model)
    return path.exists() and (path.is_dir() or bool(path.suffix))


def check_model(model: str) -> None:
    """A zoo name checked (an unknown one fails with suggestions before anything loads); a file is read later."""
    if not is_model_file(model):
        model_info(model)


def load_cli_model(args: argparse.Namespace, device: str):
    """The bundle of ``--model``: a zoo name through ``load_model``, a file through ``load_user_model`` with
    :func:`add_model_file`'s options."""
    if is_model_file(args.model):
        names = getattr(args, "class_names", None)
        return load_user_model(Path(args.model), getattr(args, "architecture", None),
                               labels=None if names is None else Path(names),
                               input_size=getattr(args, "input_size", None),
                               trust_code=getattr(args, "trust_code", False), device=device)
    return load_model(args.model, device=device, tqdm_bar=not getattr(args, "quiet", False))


# ---------------------------------------------------------------------------------------------------------
# Text commands
# ---------------------------------------------------------------------------------------------------------


def text_method_names(values: Sequence[str] | str | None, default: Sequence[str] = ()) -> list[str]:
    """:func:`method_names`, each also one that applies to text (the errors list those that do)."""
    names = method_names(values, default, TEXT)
    for name in names:
        reason = get_method(name).modality_reason(TEXT)
        if reason is not None:
            raise ParameterError(reason)
    return names


def add_text_model(parser: argparse.ArgumentParser) -> None:
    """``--model NAME|FOLDER|ZIP``: a shipped text model (see ``text-model list``), a Hugging Face folder or a .zip of
    one (read with :func:`load_cli_text_model`)."""
    parser.add_argument("--model", default=DEFAULT_TEXT_MODEL, metavar="NAME|FOLDER|ZIP",
                        help="a shipped text model (text-model list), or a Hugging Face sequence classifier's folder "
                        "or .zip (default: %(default)s)")


def load_cli_text_model(args: argparse.Namespace, device: str):
    """The text bundle of ``--model``."""
    return load_text_model(args.model, device=device)


def out_file(text: str) -> Path:
    """An output file (``--json``, ``--html``) whose folder exists; argparse's ``type=``."""
    path = Path(text)
    if not text.strip() or path.is_dir():
        raise argparse.ArgumentTypeError(f"expected a file to write, got {text!r}")
    if not path.parent.is_dir():
        raise argparse.ArgumentTypeError(f"expected a file in an existing folder, but {str(path.parent)!r} does not "
                                         "exist")
    return path


def write_file(path: Path, content: str) -> None:
    """``content`` into ``path``; a file that cannot be written is a user error naming it."""
    try:
        path.write_text(content, encoding="utf-8")
    except OSError as exc:
        raise SaliencyError(f"cannot write {str(path)!r}: {exc.strerror or exc}") from None
