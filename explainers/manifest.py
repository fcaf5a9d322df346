"""The JSON manifest that describes a rendered explanation: one function, the same keys on every surface.

Explore's download, each panel of Compare's zip and every image of the CLI write :func:`explanation_manifest`;
a file holding several panels (Compare's zip) wraps them with :func:`collection_manifest`. ``schema_version``
changes whenever a key changes meaning.
"""

from __future__ import annotations

import math
import platform
from collections.abc import Sequence
from typing import Any

import numpy as np
import PIL
import torch
import torchvision

from .registry import METHODS

SCHEMA = "saliency-studio/explanation"
SCHEMA_VERSION = 2  # 2: notes and batch_size_used (dense_target was added later: a new key, no meaning changed)


def jsonable(value: Any) -> Any:
    """Tensors and arrays to numbers or lists, non-finite floats to None, anything unknown to str."""
    if hasattr(value, "detach"):  # torch tensor
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        value = value.item() if value.size == 1 and value.ndim <= 1 else value.tolist()
    elif isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return str(value)


def top_predictions(logits: Any, categories: Sequence[str] | None, k: int = 5) -> list[dict[str, Any]]:
    """The k most probable classes: index, name and softmax probability."""
    z = np.asarray(jsonable(logits), dtype=np.float64).ravel()
    probabilities = np.exp(z - z.max())
    probabilities /= probabilities.sum()
    order = np.argsort(-probabilities, kind="stable")[:k]
    return [
        {"index": int(i), "name": categories[i] if categories else None, "probability": float(probabilities[i])}
        for i in order
    ]


def versions() -> dict[str, str]:
    return {
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": np.__version__,
        "pillow": PIL.__version__,
        "python": platform.python_version(),
    }


def explanation_manifest(
    record: Any,
    *,
    image_name: str,
    image_hash: str,
    image_size: tuple[int, int],
    model: str,
    preprocessing: str,
    categories: Sequence[str] | None,
    view: Any,
    value_range: tuple[float, float],
    scale: str = "own",
    files: dict[str, str] | None = None,
    device: str | None = None,
    role: str | None = None,
    dense_target: dict[str, Any] | None = None,
    predictions: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Everything needed to reproduce and read one rendered map.

    ``record`` is an :class:`~explainers.core.ExplanationRecord`; ``view`` the :class:`~explainers.render.View`
    it was drawn with; ``value_range`` the raw (lo, hi) the colours span, ``scale`` whether that range is the
    map's "own", "linked" across panels, or a "difference" of two maps; ``role`` what the panel is in a
    collection (e.g. "difference"). A dense model's map also says which box or region it explains
    (``dense_target``: box, label and score, or region class and pixels) and gives the model's own
    ``predictions`` (its detections or predicted classes) in place of a softmax over the picked targets; the
    manifest of a classifier has no ``dense_target`` key (its keys are as before).
    """

    method = METHODS.get(record.method)
    target = [int(t) for t in record.target]
    manifest = {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "role": role or "explanation",
        "image": {"name": image_name, "sha256_16": image_hash, "size": [int(s) for s in image_size]},
        "model": model,
        "preprocessing": preprocessing,
        "method": record.method,
        "method_name": method.display_name if method else record.method,
        "class_sensitive": bool(method.class_sensitive) if method else True,
        "params": jsonable(record.params),
        "target": {
            "indices": target,
            "names": [categories[t] if categories and 0 <= t < len(categories) else None for t in target],
            "contrast": len(target) == 2,
        },
        "objective": record.objective,
        "layer": record.layer,
        "seed": record.seed,
        "elapsed_s": jsonable(record.elapsed_s),
        "extras": jsonable(record.extras),
        "notes": list(getattr(record, "notes", ())),
        "batch_size_used": jsonable(getattr(record, "batch_size_used", None)),
        "predictions": jsonable(predictions) if predictions is not None else top_predictions(record.logits,
                                                                                               categories),
        "view": jsonable(view.as_dict()),
        "range": {"lo": jsonable(float(value_range[0])), "hi": jsonable(float(value_range[1])), "scale": scale},
        "files": dict(files or {}),
        "device": device,
        "versions": versions(),
    }
    if dense_target is not None:
        manifest["dense_target"] = jsonable(dense_target)
    return manifest


def collection_manifest(panels: list[dict[str, Any]], **about: Any) -> dict[str, Any]:
    """Several panels' manifests in one file (Compare's zip), with what they share (``about``)."""
    return {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, **jsonable(about), "panels": panels}
