"""The Ray engine of ``python -m explainers batch --engine ray``: the local engine's steps on Ray Data.

The images still to do become a dataset (``ray.data.from_items``), one row per batch, cut as the local engine
cuts them (``pipeline.chunks``); a map step decodes each batch in a Ray task with ``pipeline.Decoder``; a
``map_batches`` step with an actor pool runs ``pipeline.explain_batch`` in model replicas (one per GPU when the
cluster has GPUs, else ``workers`` CPU replicas), each taking the bundle once from the object store; the driver
writes every batch's rows and maps as one part through the same ``store.RunWriter``, so the run folder is the local
engine's, row for row. A run over texts skips the decoding step: its replicas (:class:`TextExplainer`) tokenise and
explain their batches of texts (:func:`.text.explain_texts`), the text bundle travelling through the object store
as the image bundle does (it pickles: the network, its fast tokenizer and the class names). On GPUs the decoding
tasks run on the CPUs beside the replicas; without GPUs Ray Data fuses them into the replicas (each decodes its own
batches: no pixels through the object store). Parts arrive in completion order; the table's order does not depend
on it (``store.read_table`` sorts).

``ray.init`` is called only when Ray is not running yet: with ``RAY_ADDRESS`` set it joins that cluster (the
workers import ``explainers`` from a copy Ray ships, ``py_modules``), else it starts Ray on this machine, quietly
and on its own (no dashboard, no usage report).

Ray, a heavy dependency that only this engine needs, is imported inside the functions that use it, never at module
level: the local engine, the Batch page and every other command must not pay for its import (seconds).
"""

from __future__ import annotations

import copy
import json
import logging
import os
import pickle
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ParameterError
from .pipeline import Decoded, Decoder, Item, Settings, chunks, explain_batch
from .store import RunWriter
from .text import explain_texts

LOCAL_REPLICAS = 2  # CPU model replicas when --workers is not given and the cluster has no GPU
MAX_BLOCKS = 1000  # input blocks (a block holds whole batches; a decoding task reads one block)
PACKAGE = Path(__file__).resolve().parents[1]  # the explainers package, which a cluster's workers are sent


def _encode_item(item: Item) -> str:
    """An item as a string: Ray Data columns hold plain values."""
    return json.dumps([item.path, item.label, None if item.box is None else list(item.box), item.text])


def _decode_item(text: str) -> Item:
    path, label, box, words = json.loads(text)
    return Item(path, label, None if box is None else tuple(box), words)


def decode_batch(row: dict[str, Any], decoder: Decoder) -> dict[str, Any]:
    """One batch of encoded items -> their model views (uint8 [N, H, W, 3]; zeros where decoding failed),
    original sizes (width, height), image hashes and errors (empty strings where there is none), with the items
    passed through."""
    items = [_decode_item(text) for text in row["items"]]
    step = Decoder(items, decoder.view, decoder.preprocessing)
    size = decoder.view.input_size
    decoded = [step[i] for i in range(len(items))]
    blank = np.zeros((size, size, 3), dtype=np.uint8)
    return {
        "items": list(row["items"]),
        "pixels": np.stack([blank if d.inputs is None else d.inputs.numpy() for d in decoded]),
        "sizes": np.asarray([(0, 0) if d.size is None else d.size for d in decoded], dtype=np.int64),
        "hashes": [d.image_hash or "" for d in decoded],
        "errors": [d.error or "" for d in decoded],
    }


class BatchExplainer:
    """A model replica (a Ray actor): takes the bundle from the object store once, moves it to this worker's
    device (the GPU Ray assigned, else the CPU) and explains decoded batches; each output row is one batch's part
    (its rows and maps, pickled) and its image count."""

    def __init__(self, bundle_ref: list, settings: Settings, use_gpu: bool):
        import ray  # deferred: a heavy import (see the module docstring)

        bundle = ray.get(bundle_ref[0])
        device = torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")
        bundle.model.to(device)
        self.bundle, self.settings = bundle, settings

    def __call__(self, batches: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        parts, counts = [], []
        for items_column, pixels, sizes, hashes, errors in zip(batches["items"], batches["pixels"], batches["sizes"],
                                                               batches["hashes"], batches["errors"]):
            items = [_decode_item(text) for text in items_column]
            decoded = [
                Decoded(i, None, None, None, str(errors[i])) if errors[i]
                else Decoded(i, torch.from_numpy(np.ascontiguousarray(pixels[i])), (int(sizes[i][0]), int(sizes[i][1])),
                             str(hashes[i]), None)
                for i in range(len(items))
            ]
            rows, maps = explain_batch(self.bundle, items, decoded, self.settings)
            parts.append(pickle.dumps((rows, maps), protocol=pickle.HIGHEST_PROTOCOL))
            counts.append(len(items))
        return {"part": np.asarray(parts, dtype=object), "images": np.asarray(counts, dtype=np.int64)}


class TextExplainer:
    """A model replica of a run over texts (a Ray actor): takes the text bundle from the object store once, moves
    its network to this worker's device and explains batches of texts; each output row is one batch's part."""

    def __init__(self, bundle_ref: list, settings: Settings, use_gpu: bool):
        import ray  # deferred: a heavy import (see the module docstring)

        bundle = ray.get(bundle_ref[0])
        bundle.net.to(torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu"))
        self.bundle, self.settings = bundle, settings

    def __call__(self, batches: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        parts, counts = [], []
        for items_column in batches["items"]:
            items = [_decode_item(text) for text in items_column]
            rows = explain_texts(self.bundle, items, self.settings)
            parts.append(pickle.dumps((rows, {}), protocol=pickle.HIGHEST_PROTOCOL))
            counts.append(len(items))
        return {"part": np.asarray(parts, dtype=object), "images": np.asarray(counts, dtype=np.int64)}


def _start_ray(workers: int | None) -> None:
    """Join the cluster at RAY_ADDRESS, or start Ray here: enough logical CPUs for the CPU replicas and at least
    one decoding task, no dashboard, no usage statistics, workers' logs kept out of the driver's output."""
    import ray  # deferred: a heavy import (see the module docstring)

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    quiet = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING,
             "configure_logging": True}
    if os.environ.get("RAY_ADDRESS"):
        # the cluster's workers need this package; their Python needs the requirements installed
        ray.init(runtime_env={"py_modules": [str(PACKAGE)]}, **quiet)
    else:
        replicas = LOCAL_REPLICAS if workers is None else workers
        # address "local": a Ray of this run's own, even where `ray start` runs one on this machine (join that
        # one with RAY_ADDRESS=auto)
        ray.init(address="local", num_cpus=max(os.cpu_count() or 1, replicas + 1), **quiet)


def run_ray(bundle, items: Sequence[Item], settings: Settings, writer: RunWriter, workers: int | None = None,
            progress: Callable[[int, int], object] | None = None) -> int:
    """Explain every item the writer has not got yet on Ray Data; returns the number of images done in this run.
    ``workers`` is the number of model replicas (default: one per GPU of the cluster, else 2; more replicas than
    GPUs share them); ``progress(done, total)`` after each part is written (returning False stops the run after
    that part)."""
    import ray  # deferred: a heavy import (see the module docstring)
    import ray.data

    if workers is not None and workers < 1:
        raise ParameterError(f"the ray engine needs at least one model replica (--workers 1 or more), got {workers}")
    todo = [item for item in items if item.path not in writer.done]
    if not todo:
        return 0
    _start_ray(workers)
    gpus = int(ray.cluster_resources().get("GPU", 0))
    use_gpu = gpus > 0
    replicas = workers if workers is not None else (gpus if use_gpu else LOCAL_REPLICAS)

    # more replicas than GPUs share them (two replicas on one GPU: half a GPU each)
    gpu_share = min(1.0, gpus / replicas) if use_gpu else 0

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False

    # the model travels once, on the CPU (a driver on a GPU ships the same weights to workers that may lack one)
    shipped = bundle if bundle.device.type == "cpu" else _on_cpu(bundle)
    try:
        bundle_ref = ray.put(shipped)
    except Exception as exc:  # noqa: BLE001 - a model Ray cannot serialise: said, not a traceback
        raise ParameterError(
            f"the ray engine ships the model to its replicas, and this one cannot be serialised "
            f"({type(exc).__name__}: {str(exc)[:200]}); a TorchScript model does not pickle: run it with "
            "--engine local") from None
    # one dataset row per batch, cut as the local engine cuts them: a batch's numbers can depend on its company in
    # the last float bits (kernels picked by batch size), so the same batches make the same tables
    batches = [{"items": [_encode_item(item) for item in chunk]} for chunk in chunks(todo, settings.batch_size)]
    dataset = ray.data.from_items(batches, override_num_blocks=min(len(batches), MAX_BLOCKS))
    if settings.modality == "text":
        replica = TextExplainer
    else:
        replica = BatchExplainer
        decoder = Decoder([], bundle, settings.preprocessing)
        dataset = dataset.map(decode_batch, fn_kwargs={"decoder": decoder}, num_cpus=1)
    dataset = dataset.map_batches(
        replica, fn_constructor_kwargs={"bundle_ref": [bundle_ref], "settings": settings, "use_gpu": use_gpu},
        batch_size=1, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=replicas),
        **({"num_gpus": gpu_share} if use_gpu else {"num_cpus": 1}))
    done = 0
    for output in dataset.iter_rows():
        rows, maps = pickle.loads(output["part"])
        writer.write(rows, maps)
        done += int(output["images"])
        if progress is not None and progress(done, len(todo)) is False:
            break
    return done


def _on_cpu(bundle: Any):
    """A copy of ``bundle`` with its model on the CPU (the driver's own model stays where it is)."""
    if getattr(bundle, "modality", None) == "text":
        return replace(bundle, net=copy.deepcopy(bundle.net).cpu())
    return replace(bundle, model=copy.deepcopy(bundle.model).cpu())
