"""torchvision's ImageNet classifiers, with their weights fetched once into the torch hub cache.

Each model uses its ``DEFAULT`` weights: class names from ``meta["categories"]``, normalisation, resize and crop
sizes and interpolation from ``weights.transforms()``. The file lives at
``<torch.hub.get_dir()>/checkpoints/<basename of weights.url>`` (so ``TORCH_HOME`` moves it), exactly where
``torch.hub`` itself would put it. When missing it is downloaded here (progress callback, sha256 check against
the hash prefix in the file name, atomic rename); offline, or when that fails, a ModelUnavailableError says
which file to fetch from where. Random weights are never substituted.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from urllib.error import URLError
from urllib.request import Request, urlopen

import torch
import torchvision
from PIL import Image

from ..errors import Cancelled, ModelUnavailableError
from .base import ModelBundle, affine_normalizer

OFFLINE_ENV = "SALIENCY_OFFLINE"
CHUNK_BYTES = 1 << 20
TIMEOUT_S = 60.0
# torch.hub's convention: "<name>-<first hex digits of the file's sha256>.<ext>".
_HASH_PREFIX = re.compile(r"-([a-f0-9]+)\.")
# torchvision's builders fetch state dicts through this module attribute; see build_from_file.
_LOADER_LOCK = threading.Lock()

Progress = Callable[[int, int], object]


def available() -> list[str]:
    """Every torchvision classification model name, sorted."""
    return sorted(torchvision.models.list_models(module=torchvision.models))


def offline_mode(offline: bool | None = None) -> bool:
    """``offline`` when given, else whether the environment variable SALIENCY_OFFLINE is set to a true value."""
    if offline is not None:
        return bool(offline)
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def default_weights(name: str):
    """The ``DEFAULT`` weights enum member of a torchvision model."""
    return torchvision.models.get_model_weights(name).DEFAULT


def weights_url(weights) -> str:
    """Where the weights are downloaded from (a separate function so tests can point it elsewhere)."""
    return weights.url


def checkpoint_dir() -> Path:
    """``<torch hub dir>/checkpoints``: follows ``TORCH_HOME`` at call time."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def weights_file(name: str) -> Path:
    """The path where the weights file of model ``name`` must be."""
    return checkpoint_dir() / os.path.basename(weights_url(default_weights(name)))


def weights_preprocessing(weights) -> dict:
    """input_size, resize_size, interpolation, mean and std from ``weights.transforms()``."""
    transforms = weights.transforms()

    def first(value):
        return int(value[0] if isinstance(value, (list, tuple)) else value)

    mode = getattr(transforms, "interpolation", None)
    mode_name = getattr(mode, "name", "BILINEAR")
    return {
        "input_size": first(transforms.crop_size),
        "resize_size": first(transforms.resize_size),
        "interpolation": getattr(Image.Resampling, mode_name, Image.Resampling.BILINEAR),
        "interpolation_name": mode_name.lower(),
        "mean": tuple(float(m) for m in transforms.mean),
        "std": tuple(float(s) for s in transforms.std),
    }


def _description(name: str, weights) -> str:
    acc = weights.meta.get("_metrics", {}).get("ImageNet-1K", {}).get("acc@1")
    accuracy = f", ImageNet top-1 {acc:.1f}%" if acc is not None else ""
    return f"torchvision {name} with {weights}{accuracy}"


def info(name: str) -> dict:
    """What the UI needs to know before loading a model; builds nothing and downloads nothing."""
    weights = default_weights(name)
    path = weights_file(name)
    prep = weights_preprocessing(weights)
    size_mb = weights.meta.get("_file_size")
    return {
        "name": name,
        "offline": path.is_file(),
        "download_mb": float(size_mb) if size_mb is not None else None,
        "weights_file": str(path),
        "weights_url": weights_url(weights),
        "weights": str(weights),
        "categories": len(weights.meta["categories"]),
        "input_size": prep["input_size"],
        "resize_size": prep["resize_size"],
        "interpolation": prep["interpolation_name"],
        "num_params": weights.meta.get("num_params"),
        "description": _description(name, weights),
    }


def expected_hash_prefix(filename: str) -> str | None:
    """The sha256 prefix torch hub file names carry (``resnet18-f37072fd.pth`` -> ``f37072fd``), if any."""
    match = _HASH_PREFIX.search(filename)
    return match.group(1) if match else None


def download_weights(
    url: str,
    dest: str | os.PathLike,
    *,
    progress: Progress | None = None,
    tqdm_bar: bool = False,
    expected_bytes: int | None = None,
    timeout: float = TIMEOUT_S,
) -> Path:
    """Download ``url`` to ``dest`` through a temporary file in the same folder, then rename it into place.

    ``progress(done_bytes, total_bytes)`` is called after every chunk (total from Content-Length, else
    ``expected_bytes``, else 0); returning False cancels (raises Cancelled). The sha256 must start with the
    prefix in ``dest``'s name. Network errors raise URLError/OSError/HTTPException, a wrong hash
    ModelUnavailableError; on any failure no partial file is left behind.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    bar = None
    try:
        with os.fdopen(fd, "wb") as out:
            request = Request(url, headers={"User-Agent": "saliency-studio"})
            with urlopen(request, timeout=timeout) as response:
                length = response.headers.get("Content-Length") if response.headers is not None else None
                total = int(length) if length and str(length).isdigit() else (expected_bytes or 0)
                if tqdm_bar:
                    from tqdm import tqdm

                    bar = tqdm(total=total or None, unit="B", unit_scale=True, unit_divisor=1024, desc=dest.name)
                digest = hashlib.sha256()
                done = 0
                while True:
                    chunk = response.read(CHUNK_BYTES)
                    if not chunk:
                        break
                    out.write(chunk)
                    digest.update(chunk)
                    done += len(chunk)
                    if bar is not None:
                        bar.update(len(chunk))
                    if progress is not None and progress(done, total) is False:
                        raise Cancelled(f"download of {dest.name} cancelled after {done} bytes")
        prefix = expected_hash_prefix(dest.name)
        if prefix and not digest.hexdigest().startswith(prefix):
            raise ModelUnavailableError(
                f"expected the download of {dest.name} from {url} to have a sha256 starting with {prefix}, "
                f"got {digest.hexdigest()[: max(len(prefix), 8)]}: the download was corrupted or the file "
                "changed; nothing was saved, try again"
            )
        os.replace(tmp_name, dest)
        tmp_name = None
    finally:
        if bar is not None:
            bar.close()
        if tmp_name is not None and os.path.exists(tmp_name):
            os.unlink(tmp_name)
    return dest


def _unavailable(name: str, weights, path: Path, reason: str) -> ModelUnavailableError:
    size_mb = weights.meta.get("_file_size")
    size = f" ({size_mb:.0f} MB)" if size_mb else ""
    return ModelUnavailableError(
        f"model {name!r} needs its weights file {path.name}{size} in {path.parent}, but it is not there and "
        f"{reason}. On a machine with internet access download {weights_url(weights)} and copy it into "
        f"{path.parent} as {path.name} (or set TORCH_HOME to a folder whose hub/checkpoints holds it). "
        "The default model 'efficientnet_lite0' works offline."
    )


def _load_state_dict(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def build_from_file(name: str, weights, path: Path) -> torch.nn.Module:
    """The model with the state dict from ``path`` loaded strictly, built by torchvision's own builder.

    The builders know each architecture's quirks (DenseNet's renamed keys, Inception's ``transform_input``,
    ViT-H's 518-pixel input); they fetch the state dict through ``torchvision.models._api``'s
    ``load_state_dict_from_url``, which is pointed at our file (``torch.load(weights_only=True)``) for the
    duration of the call so torchvision never touches the network or unpickles arbitrary objects.
    """
    from torchvision.models import _api

    if not hasattr(_api, "load_state_dict_from_url"):  # a torchvision without that hook: plain strict load
        model = torchvision.models.get_model(name, weights=None)
        model.load_state_dict(_load_state_dict(path), strict=True)
        return model

    def serve(url, *args, **kwargs):
        return _load_state_dict(path)

    with _LOADER_LOCK:
        original = _api.load_state_dict_from_url
        _api.load_state_dict_from_url = serve
        try:
            return torchvision.models.get_model(name, weights=weights)
        finally:
            _api.load_state_dict_from_url = original


def ensure_file(
    name: str, *, progress: Progress | None = None, offline: bool | None = None, tqdm_bar: bool = False
) -> Path:
    """The weights file of model ``name``, downloaded first if it is not cached yet (see the module doc)."""
    weights = default_weights(name)
    path = weights_file(name)
    if path.is_file():
        return path
    if offline_mode(offline):
        why = "offline=True was passed" if offline else f"offline mode is on ({OFFLINE_ENV}=1)"
        raise _unavailable(name, weights, path, why)
    size_mb = weights.meta.get("_file_size")
    try:
        download_weights(
            weights_url(weights),
            path,
            progress=progress,
            tqdm_bar=tqdm_bar,
            expected_bytes=round(size_mb * 2**20) if size_mb else None,
        )
    except (URLError, OSError, http.client.HTTPException, ValueError) as exc:
        if isinstance(exc, ModelUnavailableError):
            raise
        reason = getattr(exc, "reason", None) or exc
        raise _unavailable(name, weights, path, f"the download failed ({reason})") from exc
    return path


def build(
    name: str, *, progress: Progress | None = None, offline: bool | None = None, tqdm_bar: bool = False
) -> ModelBundle:
    """The bundle of torchvision model ``name`` with its DEFAULT weights, on the CPU, without layers."""
    weights = default_weights(name)
    path = ensure_file(name, progress=progress, offline=offline, tqdm_bar=tqdm_bar)
    try:
        model = build_from_file(name, weights, path)
    except Exception as exc:
        raise ModelUnavailableError(
            f"expected {path} to hold the {weights} state dict of {name!r}, but loading it failed "
            f"({type(exc).__name__}: {str(exc)[:500]}); delete that file so it is downloaded again, or replace "
            f"it with {weights_url(weights)}"
        ) from exc
    prep = weights_preprocessing(weights)
    normalize, denormalize = affine_normalizer(prep["mean"], prep["std"])
    return ModelBundle(
        name=name,
        model=model.eval(),
        categories=list(weights.meta["categories"]),
        input_size=prep["input_size"],
        normalize=normalize,
        denormalize=denormalize,
        resize_size=prep["resize_size"],
        interpolation=prep["interpolation"],
        description=_description(name, weights),
    )
