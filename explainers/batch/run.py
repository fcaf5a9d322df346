"""Explanations at dataset scale: ``python -m explainers batch SOURCE --out DIR``.

A run explains every image of a source (a folder, a glob, or a CSV/Parquet list) with several methods and targets
through ``explain_many`` (shared passes), and writes:

- ``table/part-NNNNN.parquet``: one row per image × method × target (path, image hash, label, prediction and
  top-5, target, method, params, elapsed time, summary statistics of the map), plus one error row per image
  that could not be read; the parts together are the table (``read_table``);
- ``maps/part-NNNNN.npz``: the maps of the same rows, referenced from the table by ``map_file`` and ``map_key``:
  the layer's own map for the CAMs (7×7 on most models), every other map as its channel sum mean-pooled by
  ``MAP_POOL`` (56×56 on a 224 input), float16; the manifest states both;
- ``manifest.json``: versions, model, methods, parameters, targets, seed, engine and map format.

Every part file is written whole and renamed into place, maps before the table part that references them, so a
run killed at any moment leaves only complete parts; ``resume=True`` skips the images the table already has
(rows or an error row), so the final table has each row once. A row's numbers do not depend on the engine or
on the other images of its batch beyond float rounding: the seed is fixed, every method draws the same noise for
every row (see ``explain``), and the Ray engine cuts the same batches as the local one; another batch size
changes only how batched convolutions round (statistics within 1e-5, maps within about 1e-3 of their scale).

The engines: ``local`` (in-process; images decoded by a DataLoader with worker processes, the model loaded
once, :mod:`.local`) and ``ray`` (:mod:`.ray_engine`: the same steps on Ray Data, model replicas in an actor
pool); :func:`run` picks one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import ParameterError
from ..models import load_model
from ..registry import get_method
from ..targets import TargetSpec
from .local import run_local
from .pipeline import ENGINES, Settings, read_source, with_labels
from .ray_engine import run_ray
from .store import RunWriter


def run(source: str, out: str, settings: Settings, engine: str = "local", limit: int | None = None,
        resume: bool = False, workers: int | None = None, device: str | None = None, bundle=None,
        progress: Callable[[int, int], object] | None = None, labels: str | None = None) -> dict[str, Any]:
    """A whole run: read the source (and the labels list, if given), load the model once, explain, write;
    returns a summary dict."""

    if engine not in ENGINES:
        raise ParameterError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    for method in settings.methods:
        get_method(method)
    settings.params = {m: get_method(m).validate(settings.params.get(m, {})) for m in settings.methods}
    unknown = sorted(set(settings.params) - set(settings.methods))
    if unknown:
        raise ParameterError(f"params given for {unknown[0]!r}, which is not among the methods")
    if bundle is None:
        bundle = load_model(settings.model, device=device)
    for target in settings.targets:
        if target != "label":

            TargetSpec(target, 1, bundle.categories, "logit", num_classes=len(bundle.categories) or None)
    items = read_source(source, bundle.categories, limit)
    if labels is not None:
        items = with_labels(items, Path(labels), bundle.categories)
    writer = RunWriter(out, settings, engine, source, resume, bundle.categories)
    started = time.perf_counter()
    if engine == "ray":

        done = run_ray(bundle, items, settings, writer, workers=workers, progress=progress)
    else:
        done = run_local(bundle, items, settings, writer, workers=workers, progress=progress)
    elapsed = time.perf_counter() - started
    return {"images": len(items), "done_now": done, "skipped": len(items) - done, "elapsed_s": elapsed,
            "images_per_s": done / elapsed if done and elapsed > 0 else None, "out": str(out)}
