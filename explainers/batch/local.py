"""The local engine: images decoded by a DataLoader with worker processes, the model loaded once, in this process;
texts tokenised and explained in this process (tokenising is light: no workers)."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence

from torch.utils.data import DataLoader

from .orphans import PRELOAD, die_with_parent
from .pipeline import Decoded, Decoder, Item, Settings, chunks, explain_batch
from .store import RunWriter
from .text import explain_texts


def default_workers() -> int:
    """DataLoader workers: one per spare CPU core, at most 4 (decoding is light next to the explanations)."""
    return max(0, min(4, (os.cpu_count() or 1) - 1))


def _collate(batch: list[Decoded]) -> list[Decoded]:
    """A batch stays a list of Decoded (a failed image has no pixels to stack)."""
    return batch


def _forkserver():
    """The workers' start method: forkserver (a forked copy of a process that has run torch's thread pool slows the
    parent down), made to die with this process (:mod:`.orphans`; the preload counts when the forkserver starts,
    which is the first run with workers)."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["__main__", PRELOAD])
    return context


def run_local(bundle, items: Sequence[Item], settings: Settings, writer: RunWriter, workers: int | None = None,
              progress: Callable[[int, int], object] | None = None) -> int:
    """Explain every item the writer has not got yet; returns the number of images done in this run.
    ``progress(done, total)`` after each batch (returning False stops the run after that batch's part)."""
    todo = [item for item in items if item.path not in writer.done]
    if not todo:
        return 0
    if settings.modality == "text":
        return _run_texts(bundle, todo, settings, writer, progress)
    decoder = Decoder(todo, bundle, settings.preprocessing)
    workers = default_workers() if workers is None else workers
    loader = DataLoader(decoder, batch_size=settings.batch_size, shuffle=False, num_workers=workers,
                        collate_fn=_collate, multiprocessing_context=_forkserver() if workers else None,
                        worker_init_fn=die_with_parent if workers else None)
    done = 0
    for decoded in loader:
        rows, maps = explain_batch(bundle, todo, decoded, settings)
        writer.write(rows, maps)
        done += len(decoded)
        if progress is not None and progress(done, len(todo)) is False:
            break
    return done


def _run_texts(bundle, todo: Sequence[Item], settings: Settings, writer: RunWriter,
               progress: Callable[[int, int], object] | None) -> int:
    """A text run: ``settings.batch_size`` texts per part, explained here."""
    done = 0
    for chunk in chunks(todo, settings.batch_size):
        writer.write(explain_texts(bundle, chunk, settings), {})
        done += len(chunk)
        if progress is not None and progress(done, len(todo)) is False:
            break
    return done
