"""The checks of what a user gives with a model file: the device, the input size, the mean and std, and the class
names, with the defaults a loader assumes when they are not given.

The state-dict and TorchScript loader (:mod:`.user`) and the Hugging Face and ONNX loaders (:mod:`.foreign`) call
these same checks, so one mistake gives one ModelLoadError, naming what was expected and what came instead,
whichever loader it reaches.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import ModelLoadError

MIN_INPUT, MAX_INPUT = 8, 1024  # pixels per side of the square input
DEFAULT_INPUT_SIZE = 224  # when neither the user nor the file says
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # the mean and std when neither the user nor the file says
IMAGENET_STD = (0.229, 0.224, 0.225)
SHOWN = 5  # items an error lists before "..."
# The largest model a user may load, whatever the form (a file, its bytes, an upload, a folder); the Models page
# shows the same number, and Streamlit's server.maxUploadSize (.streamlit/config.toml) is set to it.
MAX_MODEL_MB = 200
MAX_MODEL_BYTES = MAX_MODEL_MB * 2**20


@dataclass(frozen=True)
class LoadOptions:
    """What a user gave with a model file, checked: class names, input size, mean and std (None where not given:
    the file's or the architecture's own), and the device."""

    labels: list[str] | None
    input_size: int | None
    mean: tuple[float, float, float] | None
    std: tuple[float, float, float] | None
    device: torch.device

    def as_kwargs(self) -> dict[str, Any]:
        """As the loaders take them (labels=, input_size=, mean=, std=, device=)."""
        return asdict(self)


def check_options(*, labels: Any = None, input_size: Any = None, mean: Any = None, std: Any = None,
                  device: Any = None) -> LoadOptions:
    """Every check below, before anything is read: one mistake fails the same way in every loader."""
    return LoadOptions(parse_labels(labels), check_input_size(input_size), check_mean(mean), check_std(std),
                       check_device(device))


def check_model_size(size: int, what: str) -> None:
    """Refuse a model of ``size`` bytes over MAX_MODEL_BYTES, before any of it is read."""
    if size > MAX_MODEL_BYTES:
        raise ModelLoadError(f"expected a model of at most {MAX_MODEL_MB} MB, but {what} is "
                             f"{size / 2**20:.0f} MB ({size:,} bytes); model files over {MAX_MODEL_MB} MB are "
                             "refused")


def check_device(device: Any) -> torch.device:
    """``device`` as a torch.device (None: the CPU); a CUDA device must be one this machine has."""
    if device is None:
        return torch.device("cpu")
    try:
        found = torch.device(device)
    except (RuntimeError, TypeError):
        raise ModelLoadError(f"expected a torch device such as 'cpu' or 'cuda:0', got {device!r}") from None
    if found.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (found.index or 0) >= count:
            have = f"cuda:0 to cuda:{count - 1}" if count else "it has none"
            raise ModelLoadError(f"expected 'cpu' or a CUDA device this machine has ({have}), got {device!r}")
    return found


def check_input_size(input_size: Any) -> int | None:
    """The side of the model's square input in pixels, MIN_INPUT to MAX_INPUT (a pair (n, n) reads as n); None
    stays None (the architecture's or the file's own)."""
    if input_size is None:
        return None
    if isinstance(input_size, (tuple, list)) and len(input_size) == 2 and input_size[0] == input_size[1]:
        input_size = input_size[0]
    if isinstance(input_size, bool) or not isinstance(input_size, int) or not MIN_INPUT <= input_size <= MAX_INPUT:
        raise ModelLoadError(f"expected input_size to be a whole number of pixels from {MIN_INPUT} to {MAX_INPUT} "
                             f"(square inputs), got {input_size!r}")
    return int(input_size)


def channel_values(values: Any, what: str) -> tuple[float, float, float]:
    """Three finite numbers (red, green, blue), or one number for all three."""
    if isinstance(values, (int, float)) and not isinstance(values, bool):
        values = (values,) * 3
    try:
        numbers = () if isinstance(values, (str, bytes)) else tuple(float(v) for v in values)
    except (TypeError, ValueError):
        numbers = ()
    if len(numbers) != 3 or not all(math.isfinite(v) for v in numbers):
        raise ModelLoadError(f"expected {what} to be 3 numbers (red, green, blue) or one for all three, got "
                             f"{values!r}")
    return numbers


def check_mean(mean: Any) -> tuple[float, float, float] | None:
    """The per-channel mean of pixels scaled to [0, 1]: each in [0, 1]; None stays None."""
    return _scaled(mean, "mean", "[0, 1]", lambda v: 0 <= v <= 1)


def check_std(std: Any) -> tuple[float, float, float] | None:
    """The per-channel std of pixels scaled to [0, 1]: each in (0, 1]; None stays None."""
    return _scaled(std, "std", "(0, 1]", lambda v: 0 < v <= 1)


def _scaled(values: Any, what: str, bounds: str, inside: Callable[[float], bool]
            ) -> tuple[float, float, float] | None:
    if values is None:
        return None
    numbers = channel_values(values, what)
    if not all(inside(v) for v in numbers):
        raise ModelLoadError(f"expected every {what} in {bounds}, for pixels scaled to [0, 1], got {values!r}"
                             f"{_hint_255(numbers)}")
    return numbers


def _hint_255(numbers: Sequence[float]) -> str:
    return "; values on the 0-255 scale must be divided by 255" if max(numbers) > 1 else ""


# ------------------------------------------------------------------------------------------------ class names


def parse_labels(labels: Any) -> list[str] | None:
    """Class names from a list, or from a ``.txt`` (one per line) or ``.json`` file (a list, or index -> name
    covering 0..N-1) given as a path, bytes, ``(bytes, file name)`` or a binary file object; None stays None."""
    if labels is None:
        return None
    if isinstance(labels, (str, os.PathLike)):
        path = Path(labels).expanduser()
        if not path.is_file():
            raise ModelLoadError(f"expected a labels file (.txt or .json), but {str(path)!r} is not a file")
        return _labels_from_bytes(path.read_bytes(), path.name)
    if isinstance(labels, (bytes, bytearray, memoryview)):
        return _labels_from_bytes(bytes(labels), "labels")
    if isinstance(labels, tuple) and len(labels) == 2 and isinstance(labels[0], (bytes, bytearray)) \
            and isinstance(labels[1], str):  # (content, file name), as an upload gives them
        return _labels_from_bytes(bytes(labels[0]), Path(labels[1]).name)
    if hasattr(labels, "read"):
        data = labels.getvalue() if hasattr(labels, "getvalue") else labels.read()
        name = Path(str(getattr(labels, "name", "labels"))).name
        return _labels_from_bytes(data.encode() if isinstance(data, str) else bytes(data), name)
    if isinstance(labels, dict):
        return _labels_from_json({str(k): v for k, v in labels.items()}, "labels")
    if isinstance(labels, Sequence):
        return _label_list(list(labels), "labels")
    raise ModelLoadError(f"expected labels as a list of names, a .txt/.json path or bytes, got "
                         f"{type(labels).__name__}")


def class_names(labels: list[str] | None, count: int, default: list[str] | None = None) -> list[str]:
    """The names of a model's ``count`` classes: ``labels`` (from :func:`parse_labels`), one per output, else
    ``default``, else "class 0" ... "class K-1"."""
    if labels is None:
        return default if default is not None else [f"class {i}" for i in range(count)]
    if len(labels) != count:
        raise ModelLoadError(f"expected {count} class names, one per output of the model, got {len(labels)} labels")
    return labels


def _label_list(names: Sequence[Any], where: str) -> list[str]:
    out = []
    for i, label in enumerate(names):
        if not isinstance(label, str) or not label.strip():
            raise ModelLoadError(f"expected class {i} of {where} to be a non-empty name, got {label!r}")
        out.append(label.strip())
    if not out:
        raise ModelLoadError(f"expected at least one class name in {where}, got none")
    return out


def _labels_from_json(value: Any, where: str) -> list[str]:
    if isinstance(value, list):
        return _label_list(value, where)
    if not isinstance(value, dict):
        raise ModelLoadError(f"expected {where} to hold a JSON list of names or an index -> name object, "
                             f"got a JSON {type(value).__name__}")
    by_index: dict[int, Any] = {}
    for key, label in value.items():
        try:
            index = int(key)
        except (TypeError, ValueError):
            raise ModelLoadError(f"expected {where}'s keys to be class indices 0..N-1, got {key!r}") from None
        if index < 0 or index in by_index:
            raise ModelLoadError(f"expected {where}'s keys to be distinct indices 0..N-1, got {key!r}")
        by_index[index] = label
    count = max(by_index, default=-1) + 1
    missing = [i for i in range(count) if i not in by_index]
    if missing:
        shown = ", ".join(str(i) for i in missing[:SHOWN]) + (" ..." if len(missing) > SHOWN else "")
        raise ModelLoadError(f"expected {where} to name every class 0..{count - 1}, but index {shown} "
                             f"{'is' if len(missing) == 1 else 'are'} missing")
    return _label_list([by_index[i] for i in range(count)], where)


def _labels_from_bytes(data: bytes, name: str) -> list[str]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ModelLoadError(f"expected the labels file {name} to be UTF-8 text, but byte {exc.start} is not") from None
    suffix = Path(name).suffix.lower()
    if suffix == ".json" or (suffix != ".txt" and text.lstrip()[:1] in ("[", "{")):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ModelLoadError(f"expected the labels file {name} to be JSON, but {exc}") from None
        return _labels_from_json(value, f"the labels file {name}")
    lines = [line.strip() for line in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    blank = [i + 1 for i, line in enumerate(lines) if not line]
    if blank:
        raise ModelLoadError(f"expected one class name per line in {name}, but line {blank[0]} is blank")
    return _label_list(lines, f"the labels file {name}")
