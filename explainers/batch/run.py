"""A whole batch run: check the settings, load the model once, read the source, pick the engine, write the run
folder (:mod:`.store`); what ``python -m explainers batch SOURCE --out DIR`` and the Batch page call.

A run explains every image of a source (a folder, a glob, or a CSV/Parquet list) with several methods and targets
through ``explain_many`` (shared passes). A row's numbers do not depend on the engine or on the other images of its
batch beyond float rounding: the seed is fixed, every method draws the same noise for every row (see ``explain``),
and the Ray engine cuts the same batches as the local one; another batch size changes only how batched
convolutions round (statistics within 1e-5, maps within about 1e-3 of their scale).

The engines: ``local`` (:mod:`.local`: in-process, images decoded by a DataLoader with worker processes) and
``ray`` (:mod:`.ray_engine`: the same steps on Ray Data, model replicas in an actor pool).

A run over texts (``Settings.modality`` "text": a .txt file, one text a line, or a .csv/.parquet list's text
column; :mod:`.text`) loads a text classifier (``load_text_model``: the shipped one by name, a Hugging Face folder
or a .zip) and writes the same table with each row's per-token map.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..dense.targets import REDUCTIONS
from ..errors import ParameterError
from ..models import load_model
from ..models.text import load_text_model
from ..registry import IMAGE, MODALITIES, TEXT, get_method
from ..targets import TargetSpec
from .local import run_local
from .pipeline import Settings, read_source, with_labels
from .ray_engine import run_ray
from .store import RunWriter
from .text import read_texts

ENGINES = {"local": run_local, "ray": run_ray}


def _check_methods(settings: Settings) -> None:
    """Every method known and its params validated, defaults filled in (so the manifest, and a resume, compare the
    same thing); before the model loads, so a typo costs no download."""
    unknown = sorted(set(settings.params) - set(settings.methods))
    if unknown:
        raise ParameterError(f"params given for {unknown[0]!r}, which is not among the methods "
                             f"{', '.join(settings.methods)}")
    if settings.modality not in MODALITIES:
        raise ParameterError(f"modality must be one of {', '.join(MODALITIES)}, got {settings.modality!r}")
    for name in settings.methods:
        reason = get_method(name).modality_reason(settings.modality)
        if reason is not None:
            raise ParameterError(reason)
    settings.params = {m: get_method(m).validate(settings.params.get(m, {}), settings.modality)
                       for m in settings.methods}


DENSE_SETTINGS = ("max_boxes", "score_threshold", "iou_threshold", "reduction")


def _check_classifier(settings: Settings) -> None:
    """A detector's or segmenter's setting given for a classifier: an error, never silently ignored."""
    defaults = Settings(model=settings.model, methods=settings.methods, targets=settings.targets)
    changed = [name for name in DENSE_SETTINGS if getattr(settings, name) != getattr(defaults, name)]
    if changed:
        raise ParameterError(f"{changed[0]} applies to a detector or segmenter; {settings.model} is a classifier "
                             "(its targets are classes: use targets)")


def _check_targets(settings: Settings, categories: list[str]) -> None:
    """Every target one the model can have, before any image is read ("label" is each image's own class, checked
    when the source is read)."""
    for target in settings.targets:
        if target != "label":
            TargetSpec(target, 1, categories, "logit", num_classes=len(categories) or None)


def _check_dense(settings: Settings) -> None:
    """A detector's or segmenter's settings: every detected box (up to ``max_boxes``) or predicted region is a
    target, so class targets other than the default are refused rather than ignored."""
    if [t for t in settings.targets if t != "top1"]:
        raise ParameterError(f"targets {', '.join(settings.targets)} pick classes of a classifier; a detector's "
                             "run explains its boxes (--max-boxes) and a segmenter's its predicted regions")
    if isinstance(settings.max_boxes, bool) or int(settings.max_boxes) < 1:
        raise ParameterError(f"max_boxes must be a positive integer, got {settings.max_boxes!r}")
    if not 0.0 <= float(settings.iou_threshold) < 1.0:
        raise ParameterError(f"iou_threshold must be in [0, 1), got {settings.iou_threshold!r}")
    if settings.reduction not in REDUCTIONS:
        raise ParameterError(f"reduction must be one of {', '.join(REDUCTIONS)}, got {settings.reduction!r}")


def run(source: str, out: str, settings: Settings, engine: str = "local", limit: int | None = None,
        resume: bool = False, workers: int | None = None, device: str | None = None, bundle=None,
        progress: Callable[[int, int], object] | None = None, labels: str | None = None) -> dict[str, Any]:
    """A whole run: read the source (and the labels list, if given), load the model once (unless ``bundle`` is
    given), explain, write; returns a summary dict."""
    if engine not in ENGINES:
        raise ParameterError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    _check_methods(settings)
    if settings.modality == TEXT:
        return _run_texts(source, out, settings, engine, limit, resume, workers, device, bundle, progress, labels)
    if settings.text_column is not None:
        raise ParameterError("text_column names the text column of a run over texts; this run explains images")
    if bundle is None:
        bundle = load_model(settings.model, device=device)
    if getattr(bundle, "modality", IMAGE) == TEXT:
        raise ParameterError(f"{bundle.name} is a text classifier: give it texts (a .txt file, one text a line, or "
                             "a .csv list with --text-column)")
    if getattr(bundle, "needs_targets", False):  # a detector or segmenter: its boxes or regions are the targets
        _check_dense(settings)
    else:
        _check_classifier(settings)
        _check_targets(settings, bundle.categories)
    items = read_source(source, bundle.categories, limit)
    if labels is not None:
        items = with_labels(items, Path(labels), bundle.categories)
    return _write_run(bundle, items, out, settings, engine, source, resume, workers, progress)


def _write_run(bundle, items, out: str, settings: Settings, engine: str, source: str, resume: bool,
               workers: int | None, progress) -> dict[str, Any]:
    writer = RunWriter(out, settings, engine, source, resume, bundle.categories)
    started = time.perf_counter()
    done = ENGINES[engine](bundle, items, settings, writer, workers=workers, progress=progress)
    elapsed = time.perf_counter() - started
    unreadable = len(writer.unreadable)
    return {"images": len(items), "done_now": done, "unreadable": unreadable, "skipped": len(items) - done,
            "elapsed_s": elapsed, "images_per_s": done / elapsed if done and elapsed > 0 else None, "out": str(out)}


def _run_texts(source: str, out: str, settings: Settings, engine: str, limit: int | None, resume: bool,
               workers: int | None, device: str | None, bundle, progress, labels: str | None) -> dict[str, Any]:
    """A run over texts: the text classifier loaded once (unless given), the texts read, the same writer. The
    summary counts texts as ``images`` (and unexplainable texts as ``unreadable``), as for an image run."""
    if labels is not None:
        raise ParameterError("a labels list applies to images; a text list gives each text's class in its 'label' "
                             "column")
    _check_classifier(settings)
    if bundle is None:
        bundle = load_text_model(settings.model, device=device)
    if getattr(bundle, "modality", IMAGE) != TEXT:
        raise ParameterError(f"{getattr(bundle, 'name', settings.model)} is an image model; texts need a text "
                             "classifier (a shipped text model's name, a Hugging Face folder or a .zip of one)")
    _check_targets(settings, bundle.categories)
    items = read_texts(source, bundle.categories, settings.text_column, limit)
    return _write_run(bundle, items, out, settings, engine, source, resume, workers, progress)
