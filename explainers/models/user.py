"""A user's own classifier: a state dict for a known architecture, TorchScript (only when trusted), or, through
``explainers.models.foreign``, a Hugging Face folder or an ONNX file.

Nothing here unpickles arbitrary objects or downloads anything. State dicts come from ``.safetensors`` files or
from ``.pt``/``.pth``/``.bin`` files read with ``torch.load(weights_only=True)``; the architecture is built with
random initial weights (``weights=None`` / ``pretrained=False``) and the state dict loaded strictly. TorchScript
archives carry code that runs when loaded, so they are refused unless trusted (``trust_code=True`` or
``SALIENCY_TRUST_CODE=1``, read by :func:`trust_enabled`).
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import pickle
import re
import tempfile
import time
import tomllib
import warnings
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from PIL import Image
from torch import nn

from ..dense.outputs import CONVENTIONS, DETECTION, KINDS, output_kind, segmentation_logits
from ..dense.outputs import describe as describe_output
from ..errors import LayerError, ModelLoadError, ModelOutputError, SaliencyError
from ..layers import default_layer, layer_catalogue
from . import dense_zoo, foreign
from .architectures import (
    DEFAULT_ARCHITECTURE,
    DENSE,
    TIMM_PREFIX,
    preprocessing_defaults,
    split,
    timm_architectures,
    torchvision_architectures,
)
from .base import ModelBundle, affine_normalizer, check_dry_run
from .dense import dense_bundle
from .inputs import (
    DEFAULT_INPUT_SIZE,
    IMAGENET_MEAN,
    IMAGENET_STD,
    MAX_MODEL_BYTES,
    MAX_MODEL_MB,
    SHOWN,
    LoadOptions,
    check_model_size,
    check_options,
    class_names,
)
from .signatures import (
    ArchitectureMismatchError,
    Match,
    Signature,
    align_prefix,
    builder_kwargs,
    construct,
    describe,
    head_names,
    matching_architectures,
    mismatch,
    shapes,
    signature,
    template,
)

TRUST_ENV = "SALIENCY_TRUST_CODE"
CONFIG_ENV = "SALIENCY_CONFIG"  # path of the server settings file (default: saliency.toml beside app.py)
SAFETENSORS = ".safetensors"
TORCH_SUFFIXES = (".pt", ".pth", ".bin")
ONNX_SUFFIX = ".onnx"
ZIP_SUFFIX = ".zip"
ACCEPTED = (SAFETENSORS, *TORCH_SUFFIXES, ONNX_SUFFIX, ZIP_SUFFIX, "a Hugging Face model folder")
# Wrappers training scripts put around a state dict (the prefixes on its keys are undone in signatures.py).
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")
_GUESS_BUDGET_S = 3.0  # seconds spent guessing which architecture mismatched weights belong to
EXPORT_HINT = (
    'Export a state dict instead: torch.save(model.state_dict(), "weights.pt"), or better '
    'safetensors.torch.save_file(model.state_dict(), "weights.safetensors")'
)


class TrustedCodeWarning(UserWarning):
    """A model file whose own code runs (TorchScript) was loaded because the user trusted it."""


def config_path() -> Path:
    """The server's own settings file: SALIENCY_CONFIG, or saliency.toml in the project folder."""
    return Path(os.environ.get(CONFIG_ENV) or Path(__file__).resolve().parents[2] / "saliency.toml")


def trust_enabled() -> bool:
    """Whether model files that run code (TorchScript) may load: the environment variable SALIENCY_TRUST_CODE
    (1/true/yes/on; 0/false/no/off forbids, whatever the file says), else ``trust_code = true`` in the config
    file (:func:`config_path`). Off by default."""
    flag = os.environ.get(TRUST_ENV, "").strip().lower()
    if flag in {"1", "true", "yes", "on"}:
        return True
    if flag in {"0", "false", "no", "off"}:
        return False
    path = config_path()
    if not path.is_file():
        return False

    try:
        settings = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ModelLoadError(f"cannot read the server settings {path}: {exc}; expected TOML such as "
                             "'trust_code = false'") from exc
    value = settings.get("trust_code", False)
    if not isinstance(value, bool):
        raise ModelLoadError(f"trust_code in {path} must be true or false, got {value!r}")
    return value


class ScriptedClassifier(nn.Module):
    """A TorchScript module behind a plain ``nn.Module``.

    Python hooks cannot be registered on scripted modules (``register_forward_hook`` raises), so nothing that
    captures a layer or swaps an activation's backward can run on it: ``supports_hooks`` is False, its bundle has
    no layer catalogue, and :func:`explainers.available_methods` leaves those methods out. Input gradients
    work as usual.
    """

    supports_hooks = False

    def __init__(self, scripted: nn.Module):
        super().__init__()
        self.scripted = scripted

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scripted(x)


class ScriptedDense(nn.Module):
    """A TorchScript detector or segmenter behind a plain ``nn.Module`` (no hooks, as :class:`ScriptedClassifier`).

    A scripted torchvision detector takes a list of images ``[3, H, W]`` (its forward is typed ``List[Tensor]``),
    where eager code would iterate a batch; the batch is split into that list for it. Its output, torchvision's
    ``(losses, detections)`` tuple, a detection list or a segmentation dict, is returned as it is.
    """

    supports_hooks = False

    def __init__(self, scripted: nn.Module):
        super().__init__()
        self.scripted = scripted
        self.takes_list = _takes_list(scripted)

    def forward(self, x: torch.Tensor) -> Any:
        return self.scripted(list(x.unbind(0))) if self.takes_list else self.scripted(x)


def _takes_list(scripted: nn.Module) -> bool:
    """Whether a scripted module's forward takes ``List[Tensor]`` (torchvision's scripted detectors do)."""
    try:
        arguments = scripted.forward.schema.arguments
    except (AttributeError, RuntimeError):
        return False
    return len(arguments) > 1 and isinstance(arguments[1].type, torch.ListType)


# --------------------------------------------------------------------------------------------------- the input


@dataclass
class _Source:
    """The uploaded thing: a file or folder on disk (``path``) or its bytes (``data``), and its file name."""

    filename: str
    path: Path | None = None
    data: bytes | None = None

    @property
    def suffix(self) -> str:
        return "" if self.path is not None and self.path.is_dir() else Path(self.filename).suffix.lower()

    @property
    def stem(self) -> str:
        stem = Path(self.filename).name
        return stem[: -len(self.suffix)] if self.suffix and stem.lower().endswith(self.suffix) else stem

    def stream(self):
        return open(self.path, "rb") if self.data is None else io.BytesIO(self.data)

    def size(self) -> int | None:
        return len(self.data) if self.data is not None else self.path.stat().st_size

    def head(self, count: int) -> bytes:
        with self.stream() as handle:
            return handle.read(count)

    def digest(self):
        digest = hashlib.sha256()
        if self.data is not None:
            digest.update(self.data)
            return digest
        files = sorted(p for p in self.path.rglob("*") if p.is_file()) if self.path.is_dir() else [self.path]
        for file in files:
            if self.path.is_dir():
                digest.update(str(file.relative_to(self.path)).encode() + b"\0")
            with open(file, "rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 20), b""):  # noqa: B023
                    digest.update(chunk)
        return digest


def _source(weights_path: Any, filename: str | None) -> _Source:
    """The upload as a path or bytes with a file name; a file name is needed to tell bytes' format. A model over
    MAX_MODEL_BYTES is refused here, from its size, before anything is read (or copied)."""
    if isinstance(weights_path, (bytes, bytearray, memoryview)):
        if not filename:
            raise ModelLoadError(
                "expected filename= with the model's bytes (e.g. 'weights.safetensors'): its extension tells the "
                "format, and none was given"
            )
        check_model_size(memoryview(weights_path).nbytes, Path(filename).name)
        return _Source(Path(filename).name, data=bytes(weights_path))
    if isinstance(weights_path, (str, os.PathLike)):
        path = Path(weights_path).expanduser()
        if not path.exists():
            raise ModelLoadError(f"expected a model file or folder, but {str(path)!r} does not exist")
        if path.is_dir():
            check_model_size(sum(p.stat().st_size for p in path.rglob("*") if p.is_file()), f"the folder {path.name}")
        else:
            check_model_size(path.stat().st_size, filename or path.name)
        return _Source(filename or path.name, path=path)
    if hasattr(weights_path, "read"):  # an open binary file, e.g. Streamlit's UploadedFile
        name = filename or getattr(weights_path, "name", None)
        if not name or not isinstance(name, str):
            raise ModelLoadError("expected filename= with a file object that has no .name: its extension tells "
                                 "the format")
        size = _object_size(weights_path)
        if size is not None:
            check_model_size(size, Path(name).name)
        data = weights_path.getvalue() if hasattr(weights_path, "getvalue") else weights_path.read()
        if isinstance(data, str):
            raise ModelLoadError(f"expected {name!r} opened in binary mode, got a text-mode file object")
        check_model_size(len(data), Path(name).name)  # a stream that could not tell its size
        return _Source(Path(name).name, data=bytes(data))
    raise ModelLoadError(
        f"expected a path, bytes (with filename=) or a binary file object, got {type(weights_path).__name__}"
    )


def _object_size(handle: Any) -> int | None:
    """The bytes left to read in a file object, without reading them: its ``size`` (Streamlit's UploadedFile),
    else seek to the end and back; None when it cannot tell."""
    size = getattr(handle, "size", None)
    if isinstance(size, int) and not isinstance(size, bool):
        return size
    try:
        here = handle.tell()
        end = handle.seek(0, io.SEEK_END)
        handle.seek(here)
        return end - here
    except (AttributeError, OSError, ValueError):
        return None


# -------------------------------------------------------------------------------------- architectures


def _fmt(shape: Sequence[int]) -> str:
    return "[" + ",".join(str(int(s)) for s in shape) + "]"


def _listed(items: list[str]) -> str:
    more = f" and {len(items) - SHOWN} more" if len(items) > SHOWN else ""
    return ", ".join(items[:SHOWN]) + more


def _same_family(family: str, name: str) -> list[Signature]:
    """timm architectures of the same family name as the one asked for (timm:resnet18 -> resnet34 ...): the
    index of :mod:`explainers.models.signatures` holds torchvision's and the default model only."""
    if family != "timm":
        return []
    stem = re.match(r"[a-z_]*[a-z]", name.partition(".")[0])
    stem = stem.group(0) if stem else name
    found, started = [], time.perf_counter()
    for cand in [n for n in timm_architectures() if n != name and n.startswith(stem)][:16]:
        if time.perf_counter() - started > _GUESS_BUDGET_S:
            break
        try:
            found.append(signature("timm", cand))
        except Exception:
            continue
    return found


def _looks_like(state: dict[str, torch.Tensor], family: str = "torchvision", name: str | None = None) -> list[Match]:
    """The known architectures the weights fit exactly (their head's class count aside), the one asked for
    excluded."""
    asked = f"{TIMM_PREFIX}{name}" if family == "timm" and name in torchvision_architectures() else name
    found = matching_architectures(state) + matching_architectures(state, _same_family(family, name or ""))
    return [m for m in found if m.architecture != asked]


def _mismatch_error(filename: str, architecture: str, family: str, name: str, state,
                    expected) -> ArchitectureMismatchError:
    """What does not fit, the architecture it looks like first (the listing after it, sorted and short)."""
    missing, unexpected, wrong = mismatch(state, expected)
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing key(s): {_listed(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s): {_listed(unexpected)}")
    if wrong:
        listed = [f"{k} (expected {_fmt(e)}, got {_fmt(g)})" for k, e, g in wrong]
        parts.append(f"{len(wrong)} shape mismatch(es): {_listed(listed)}")
    guesses = _looks_like(state, family, name)
    if guesses:
        others = f" (also fits {', '.join(repr(m.architecture) for m in guesses[1:])})" if guesses[1:] else ""
        return ArchitectureMismatchError(
            f"{filename} does not fit {architecture!r}: {describe(guesses[0])}{others}; pick "
            f"{guesses[0].architecture!r} as the architecture. Against {architecture!r}: {'; '.join(parts)}",
            [m.architecture for m in guesses])
    return ArchitectureMismatchError(f"expected {filename} to hold a state dict of {architecture!r}, but it does "
                                     f"not fit: {'; '.join(parts)}; it matches no torchvision architecture either")


# ------------------------------------------------------------------------------------------- reading files


def _unsafe_pickle(filename: str, exc: Exception) -> ModelLoadError:
    """The refusal of ``torch.load(weights_only=True)``, said for a user: what was found and why it stays shut."""
    text = str(exc)
    found = re.search(r"GLOBAL ([\w.]+)", text)
    if found:
        what = (f"it is a pickle that needs Python objects to be rebuilt (it asks for {found.group(1)}), such as a "
                "whole model saved with torch.save(model)")
    else:
        reason = re.search(r"WeightsUnpickler error:\s*([^\n]+)", text)
        detail = f" ({reason.group(1).strip()[:120]})" if reason else ""
        what = (f"it cannot be read as one{detail}: it is damaged, of another format, or a pickle holding more "
                "than tensors, numbers and plain containers")
    return ModelLoadError(
        f"expected {filename} to hold a state dict (a dict of tensors), but {what}. Such pickles are never "
        f"loaded: unpickling can run arbitrary code. {EXPORT_HINT}"
    )


def _looks_like_safetensors(head: bytes, size: int | None) -> bool:
    """safetensors files open with an 8-byte little-endian header length and a JSON header ``{...``."""
    if len(head) < 9 or head[8:9] != b"{":
        return False
    length = int.from_bytes(head[:8], "little")
    return 0 < length and (size is None or 8 + length <= size)


def _read_torch(src: _Source) -> Any:
    """``torch.load(weights_only=True)``: tensors, dicts, lists and numbers only; no object is ever rebuilt."""
    if _looks_like_safetensors(src.head(9), src.size()):  # a safetensors file under a .pt/.pth/.bin name
        return _read_safetensors(src)
    try:
        with src.stream() as handle:
            return torch.load(handle, map_location="cpu", weights_only=True)
    except Exception as exc:
        text = str(exc)
        if isinstance(exc, pickle.UnpicklingError) or "Weights only load failed" in text:
            raise _unsafe_pickle(src.filename, exc) from None
        raise ModelLoadError(f"expected {src.filename} to be a PyTorch file written by torch.save, but it cannot "
                             f"be read ({type(exc).__name__}: {text[:300]}); is it damaged or of another format?"
                             ) from None


def _read_safetensors(src: _Source) -> dict[str, torch.Tensor]:
    try:
        if src.data is not None:
            return safetensors.torch.load(src.data)
        return safetensors.torch.load_file(str(src.path), device="cpu")
    except Exception as exc:  # safetensors' SafetensorError, or an OSError
        raise ModelLoadError(f"expected {src.filename} to be a safetensors file, but it cannot be read ({exc}); "
                             "it is damaged, truncated or of another format") from None


def _unwrap_state(obj: Any, filename: str) -> dict[str, torch.Tensor]:
    """The state dict inside ``obj``: itself, or under "state_dict" / "model_state_dict" / "model"."""
    for _ in range(3):
        if not isinstance(obj, dict) or all(isinstance(v, torch.Tensor) for v in obj.values()):
            break
        inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), dict)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, dict):
        raise ModelLoadError(f"expected {filename} to hold a state dict (a dict of tensors), got a "
                             f"{type(obj).__name__}. {EXPORT_HINT}")
    others = [f"{k} ({type(v).__name__})" for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if others or not obj:
        found = f"entries that are not tensors: {_listed(others)}" if others else "nothing"
        raise ModelLoadError(f"expected {filename} to hold a state dict (a dict of tensors), but it holds {found}. "
                             f"{EXPORT_HINT}")
    return {str(k): v for k, v in obj.items()}


def _zip_names(src: _Source) -> list[str] | None:
    """The member names of a zip (a Hugging Face zip, or torch.save's zip format), None when it is not one.

    Every member is checked from its declared sizes before anything reads it (:func:`foreign.check_zip_member`):
    a Hugging Face zip's by kind (weights at the model limit, JSON and text at a few MB), a torch archive's at the
    model limit (its tensors are files without a suffix); both against the compression ratio."""
    try:
        with src.stream() as handle:
            if not zipfile.is_zipfile(handle):
                return None
            handle.seek(0)
            with zipfile.ZipFile(handle) as archive:
                infos = archive.infolist()
    except (OSError, zipfile.BadZipFile):
        return None
    for info in infos:
        if info.is_dir():
            continue
        limit = (foreign.member_limit(info.filename) if src.suffix == ZIP_SUFFIX
                 else (MAX_MODEL_BYTES, f"{MAX_MODEL_MB} MB model limit"))
        foreign.check_zip_member(info, src.filename, limit)
    return [info.filename for info in infos]


def is_torchscript(names: list[str]) -> bool:
    """Whether a zip archive whose members are ``names`` is TorchScript: torch.jit.save archives carry
    ``<root>/code/...`` and ``<root>/constants.pkl``; torch.save's do not."""
    return any("/code/" in f"/{n}" or n.rsplit("/", 1)[-1] == "constants.pkl" for n in names)


# ------------------------------------------------------------------------------------------------ builders


def _finish(model: nn.Module, categories: list[str], prep: dict, description: str,
            notes: list[str], hookable: bool = True) -> ModelBundle:
    normalize, denormalize = affine_normalizer(prep["mean"], prep["std"])
    bundle = ModelBundle(
        name="", model=model.eval(), categories=categories, input_size=prep["input_size"], normalize=normalize,
        denormalize=denormalize, resize_size=prep["resize_size"], interpolation=prep["interpolation"],
        description=description, notes=notes,
    )
    if hookable:
        size = prep["input_size"]
        try:
            bundle.layers = layer_catalogue(model, (1, 3, size, size))
        except LayerError as exc:
            raise ModelLoadError(f"expected the model to run on {size}x{size} images (input_size), but {exc}") \
                from None
        try:
            bundle.default_layer = default_layer(model, bundle.layers)
        except LayerError:  # no spatial layer: CAM methods will say so
            bundle.default_layer = None
            notes.append("The model has no spatial layer, so CAM methods cannot run on it.")
    return bundle


def _load_dense_state_dict(src: _Source, name: str, state: dict[str, torch.Tensor], options: LoadOptions):
    """A torchvision detector or segmenter with the user's state dict (:func:`dense_zoo.from_state_dict`: the
    class count read off the head). A segmenter takes the mean and std the user gave (ImageNet's otherwise); a
    detector normalises inside its own transform, so none is applied to its pixels."""
    state = align_prefix(state, set())  # no torchvision detector's key starts with module. / model.
    _check_finite(state, src.filename)
    bundle = dense_zoo.from_state_dict(name, state, categories=options.labels, side=options.input_size,
                                       filename=src.filename)
    if bundle.kind == DETECTION:
        plain = ((0.0,) * 3, (1.0,) * 3)  # what the Models page offers a detector: its pixels as they are
        if (options.mean or plain[0], options.std or plain[1]) != plain:
            bundle.notes.append("The mean and std given were not applied: torchvision's detectors take pixels in "
                                "[0, 1] and normalise them inside their own transform.")
    elif options.mean is not None or options.std is not None:
        bundle.normalize, bundle.denormalize = affine_normalizer(options.mean or IMAGENET_MEAN,
                                                                 options.std or IMAGENET_STD)
    bundle.model.to(options.device)
    return bundle


def _load_state_dict_model(src: _Source, architecture: Any, options: LoadOptions) -> ModelBundle:
    """The architecture built with random weights (the class count from the head's weights), the state dict loaded
    strictly; a mismatch lists the keys and shapes, and names the architecture the weights look like."""
    raw = _read_safetensors(src) if src.suffix == SAFETENSORS else _read_torch(src)
    state = _unwrap_state(raw, src.filename)
    if architecture is None:
        guesses = _looks_like(state)
        hint = f"; {describe(guesses[0])}" if guesses else ""
        raise ArchitectureMismatchError(
            f"expected architecture= with {src.filename}: a state dict holds weights, not the network they belong "
            f"to (e.g. 'resnet18', {DEFAULT_ARCHITECTURE!r} or a timm name){hint}", [m.architecture for m in guesses])
    family, name = split(architecture)
    if family == DENSE:
        return _load_dense_state_dict(src, name, state, options)
    kwargs = builder_kwargs(name, state)
    built, real = template(family, name, None, kwargs)
    expected = shapes(built)
    state = align_prefix(state, set(expected))
    heads = head_names(built)
    head_key = f"{heads[-1]}.weight" if heads else None
    if head_key is None or head_key not in state or state[head_key].dim() < 2:
        raise _mismatch_error(src.filename, architecture, family, name, state, expected)
    num_classes = int(state[head_key].shape[0])
    if num_classes != expected[head_key][0]:
        built, real = template(family, name, num_classes, kwargs)
        expected = shapes(built)
    if any(mismatch(state, expected)):
        raise _mismatch_error(src.filename, architecture, family, name, state, expected)
    _check_finite(state, src.filename)
    model = built if real else construct(family, name, num_classes, kwargs)
    try:
        model.load_state_dict(state, strict=True)
    except Exception as exc:  # dtypes or shapes the checks above did not see
        raise ModelLoadError(f"expected {src.filename} to load into {architecture!r}, but it failed: "
                             f"{str(exc)[:500]}") from None
    model = model.to(options.device).eval()
    prep = preprocessing_defaults(f"{TIMM_PREFIX}{name}" if family == "timm" else name, model)
    size = options.input_size
    if size is not None:
        if prep["resize_size"] is not None:
            prep["resize_size"] = int(math.floor(size * prep["resize_size"] / prep["input_size"]))
        prep["input_size"] = size
    prep["mean"] = options.mean or prep["mean"]
    prep["std"] = options.std or prep["std"]
    notes = [] if options.labels is not None else [f"No labels given: the classes are named class 0 ... class "
                                                   f"{num_classes - 1}."]
    where = {"default": "the default model's", "torchvision": "torchvision's", "timm": "timm's"}[family]
    description = f"{where} {name} with your weights from {src.filename} ({num_classes} classes)"
    _dry_run(model, prep["input_size"], options.device, f"{architecture!r} with {src.filename}")
    return _finish(model, class_names(options.labels, num_classes), prep, description, notes)


def _check_finite(state: dict[str, torch.Tensor], filename: str) -> None:
    """Every floating-point tensor of the state dict finite; else ModelLoadError naming the tensors."""
    bad = []
    for key, tensor in state.items():
        if tensor.is_floating_point() or tensor.is_complex():
            count = int((~torch.isfinite(tensor)).sum())
            if count:
                bad.append(f"{key} ({count} of {tensor.numel()} values)")
    if bad:
        raise ModelLoadError(f"expected finite weights in {filename}, but {len(bad)} tensor(s) hold NaN or infinite "
                             f"values: {_listed(bad)}; the model would output NaN (damaged, or diverged in "
                             "training?)")


SCRIPTED_NOTES = (
    "TorchScript: this file runs its own code; it was loaded because you trusted it.",
    "Hooks do not work on TorchScript modules, so CAM methods (Grad-CAM and the rest), guided backprop, "
    "deconvnet and attention rollout are unavailable; gradient and perturbation methods (vanilla gradients, "
    "input x gradient, integrated gradients, SmoothGrad, occlusion, RISE) work.",
    "Model-randomisation sanity checks cannot reset a TorchScript model's layers.",
)


def _dry_run(model: nn.Module, size: int, device: torch.device, what: str) -> None:
    """A batch of two grey images through the model: its logits must be finite (an overflow the weights alone
    do not show; grey, not black, since zeros through bias-free layers stay zero). Errors of the forward itself
    are left to the layer catalogue, which names the input size."""
    try:
        with torch.inference_mode():
            logits = model(torch.full((2, 3, size, size), 0.5, device=device))
    except Exception:
        return
    if isinstance(logits, torch.Tensor) and logits.dim() == 2:
        check_dry_run(logits, what)


def _load_torchscript(src: _Source, options: LoadOptions, trusted: bool) -> ModelBundle:
    """A TorchScript archive, only when trusted: it runs code stored in the file."""
    if not trusted:
        raise ModelLoadError(
            f"{src.filename} is a TorchScript archive: loading it runs the code stored inside it, which could do "
            f"anything your account can. It is refused unless you trust the file: pass trust_code=True or set "
            f"{TRUST_ENV}=1. {EXPORT_HINT}"
        )
    warnings.warn(TrustedCodeWarning(f"{src.filename} is TorchScript: it runs code from the file, loaded because "
                                     "it was trusted"), stacklevel=3)
    try:
        with src.stream() as handle:
            scripted = torch.jit.load(handle, map_location=options.device)
    except Exception as exc:
        raise ModelLoadError(f"expected {src.filename} to be a TorchScript archive, but torch.jit.load failed "
                             f"({type(exc).__name__}: {str(exc)[:300]})") from None
    side = options.input_size or DEFAULT_INPUT_SIZE
    dense = ScriptedDense(scripted).eval()
    model = ScriptedClassifier(scripted).eval()
    try:
        with torch.inference_mode():
            out = dense(torch.zeros(1, 3, side, side, device=options.device))
    except Exception as exc:
        raise ModelLoadError(f"expected the TorchScript model to take images [1,3,{side},{side}] (set input_size "
                             f"otherwise), but its forward raised {type(exc).__name__}: {str(exc)[:300]}") from None
    try:
        kind = output_kind(out)
    except ModelOutputError:
        kind = None
    if kind in KINDS:
        return _scripted_dense(dense, kind, out, src, options, side)
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != 1:
        raise ModelLoadError(f"expected the TorchScript model to return {CONVENTIONS}; it returned "
                             f"{describe_output(out)}")
    check_dry_run(out, f"TorchScript model {src.filename}")
    num_classes = int(out.shape[1])
    prep = {"input_size": side, "resize_size": int(math.floor(side / 0.875)),
            "interpolation": Image.Resampling.BILINEAR, "mean": options.mean or IMAGENET_MEAN,
            "std": options.std or IMAGENET_STD}
    notes = list(SCRIPTED_NOTES)
    if options.mean is None or options.std is None or options.input_size is None:
        notes.append("Preprocessing not given: ImageNet's mean and std and 224-pixel inputs are assumed.")
    if options.labels is None:
        notes.append(f"No labels given: the classes are named class 0 ... class {num_classes - 1}.")
    description = f"TorchScript model from {src.filename} ({num_classes} classes)"
    return _finish(model, class_names(options.labels, num_classes), prep, description, notes, hookable=False)


def _scripted_dense(model: nn.Module, kind: str, out: Any, src: _Source, options: LoadOptions, side: int):
    """A trusted TorchScript detector or segmenter (torchvision's output conventions) as a DenseBundle: no
    layers (hooks do not run on scripted code); a segmenter's pixels normalised only with the mean and std the
    user gave, a detector's never (torchvision's normalise inside their own transform)."""
    notes = list(SCRIPTED_NOTES)
    labels = options.labels
    if kind == DETECTION:
        if options.mean is not None or options.std is not None:
            notes.append("The mean and std given were not applied: a detector in torchvision's convention takes "
                         "pixels in [0, 1] and normalises them itself.")
        mean = std = None
        what = "detector"
    else:
        logits = segmentation_logits(out)
        if not torch.isfinite(logits).all():
            raise ModelLoadError(f"expected finite logits from the TorchScript segmenter {src.filename} on a black "
                                 "image, but some are NaN or infinite: its weights are damaged or overflow")
        labels = class_names(labels, int(logits.shape[1])) if labels is not None else None
        given = options.mean is not None and options.std is not None
        mean, std = (options.mean, options.std) if given else (None, None)
        if not given:
            notes.append("No mean and std given: pixels in [0, 1] are fed to the segmenter as they are; set them "
                         "if it was trained on normalised images.")
        what = "segmenter"
    if options.input_size is None:
        notes.append(f"Input size not given: {side}-pixel square images are assumed.")
    if labels is None:
        notes.append("No labels given: the classes are named class 0, class 1, ...")
    try:
        bundle = dense_bundle(model, input_size=side, categories=labels, mean=mean, std=std, hookable=False,
                              kind=kind, notes=notes, description=f"TorchScript {what} from {src.filename}")
    except SaliencyError as exc:
        raise ModelLoadError(f"expected {src.filename} to be a detector or segmenter in torchvision's convention, "
                             f"but {exc}") from None
    return bundle


def _foreign(kind: str, src: _Source, options: LoadOptions) -> ModelBundle:
    """A Hugging Face folder/zip or an ONNX file, through :mod:`explainers.models.foreign` (bytes are written to a
    temporary file first: both loaders read from disk)."""
    load = foreign.load_hf_classifier if kind == "Hugging Face" else foreign.load_onnx_classifier
    try:
        if src.data is None:
            return load(src.path, **options.as_kwargs())
        with tempfile.TemporaryDirectory(prefix="saliency-upload-") as folder:
            path = Path(folder) / (Path(src.filename).name or f"model{src.suffix}")
            path.write_bytes(src.data)
            return load(path, **options.as_kwargs())
    except SaliencyError:
        raise
    except Exception as exc:
        raise ModelLoadError(f"expected {src.filename} to be a {kind} classifier, but loading it failed "
                             f"({type(exc).__name__}: {str(exc)[:300]})") from None


def _has_config(src: _Source, names: list[str] | None) -> bool:
    if src.path is not None and src.path.is_dir():
        return (src.path / "config.json").is_file()
    return any(n.rstrip("/").rsplit("/", 1)[-1] == "config.json" and n.count("/") <= 1 for n in names or [])


def load_user_model(
    weights_path: Any,
    architecture: str | None = None,
    *,
    labels: Any = None,
    input_size: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    trust_code: bool = False,
    device: str | torch.device | None = None,
    name: str | None = None,
    filename: str | None = None,
) -> ModelBundle:
    """A user's classifier as a :class:`ModelBundle` in eval mode on ``device`` (default: the CPU).

    ``weights_path``: a path (file or Hugging Face folder), raw bytes with ``filename=`` (its extension tells
    the format), or a binary file object with ``.name`` (e.g. an upload). Accepted: ``.safetensors`` and
    ``.pt``/``.pth``/``.bin`` state dicts for ``architecture`` (the default model, any torchvision
    classification model or any timm model; ``timm:NAME`` picks timm's where both have NAME), whose class count
    comes from the final layer's weights; TorchScript ``.pt`` archives only with ``trust_code=True`` or
    SALIENCY_TRUST_CODE=1; ``.onnx`` files and Hugging Face folders or ``.zip`` files (config.json) through
    ``explainers.models.foreign``. ``labels``: a list, or a ``.txt``/``.json`` file as a path, bytes,
    ``(bytes, file name)`` or file object (see :func:`~explainers.models.inputs.parse_labels`).
    ``input_size``, ``mean``, ``std`` override the architecture's preprocessing. ``name`` defaults to
    ``user:<file stem>:<hash of the content and settings>``. Every failure raises ModelLoadError.
    """
    src = _source(weights_path, filename)
    if src.path is not None and src.path.is_dir():
        names = None
    elif not src.head(1):
        raise ModelLoadError(f"expected a model file, but {src.filename} is empty (0 bytes)")
    else:
        names = _zip_names(src) if src.suffix in (*TORCH_SUFFIXES, ZIP_SUFFIX) else None
    options = check_options(labels=labels, input_size=input_size, mean=mean, std=std, device=device)

    if src.path is not None and src.path.is_dir() or src.suffix == ZIP_SUFFIX:
        if src.suffix == ZIP_SUFFIX and names is None:
            raise ModelLoadError(f"expected {src.filename} to be a zip archive, but it is not one (damaged?)")
        if not _has_config(src, names):
            what = "folder" if src.suffix == "" else "zip file"
            raise ModelLoadError(f"expected a Hugging Face model {what} with a config.json, but {src.filename} "
                                 "has none; for plain weights upload a .safetensors or .pt file")
        bundle = _foreign("Hugging Face", src, options)
    elif src.suffix == ONNX_SUFFIX:
        bundle = _foreign("ONNX", src, options)
    elif src.suffix in TORCH_SUFFIXES and names is not None and is_torchscript(names):
        bundle = _load_torchscript(src, options, trust_code or trust_enabled())
    elif src.suffix in (SAFETENSORS, *TORCH_SUFFIXES):
        bundle = _load_state_dict_model(src, architecture, options)
    else:
        got = f"extension {src.suffix!r}" if src.suffix else "no extension"
        raise ModelLoadError(f"expected one of {', '.join(ACCEPTED)}; {src.filename} has {got}")

    if name is None:
        digest = src.digest()
        settings = (str(architecture), bundle.input_size, bundle.resize_size, bundle.categories, options.mean,
                    options.std)
        digest.update(repr(settings).encode())
        name = f"user:{src.stem or 'model'}:{digest.hexdigest()[:12]}"
    bundle.name = name
    return bundle
