"""The one place multi-pass methods split their passes into batches and report progress."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch

from .errors import Cancelled, SaliencyError

# Rows per pass when the caller does not say. On a CPU small batches stay in cache. Measured here (1 thread):
# IG-50 on EfficientNet-Lite0 takes the same time at 4-16 rows and nearly twice as long at 32; forward-only
# passes (occlusion, RISE, Score-CAM) are fastest at 1-2 rows per thread. A GPU wants enough rows to fill it.
CPU_BATCH_SIZE = 8
CPU_FORWARD_ROWS_PER_THREAD = 2
CUDA_BATCH_SIZE = 64
DEFAULT_BATCH_SIZE = CPU_BATCH_SIZE


def default_batch_size(device, forward_only: bool = False) -> int:
    """The batch size used when explain() is given none, for this device and kind of pass."""
    if getattr(device, "type", str(device)) == "cuda":
        return CUDA_BATCH_SIZE
    if forward_only:
        return CPU_FORWARD_ROWS_PER_THREAD * max(1, torch.get_num_threads())
    return CPU_BATCH_SIZE


def batch_slices(total: int, batch_size: int | None) -> Iterator[tuple[int, int]]:
    """(start, stop) pairs covering range(total) in steps of batch_size."""
    size = max(1, int(batch_size or DEFAULT_BATCH_SIZE))
    for start in range(0, total, size):
        yield start, min(start + size, total)


class Batches:
    """One call's batch size: halved when a batch runs out of GPU memory, and kept halved for the rest of the call.

    ``requested`` is the size the call started with, ``size`` the one in use (the one that worked, once a run
    is over); ``reduced_from`` lists every size that ran out of memory.
    """

    def __init__(self, size: int | None, device: Any = None):
        self.requested = self.size = max(1, int(size or DEFAULT_BATCH_SIZE))
        self.device = device
        self.reduced_from: list[int] = []

    def run(self, total: int, compute: Callable[[int, int], Any]) -> Iterator[tuple[int, int, Any]]:
        """(start, stop, compute(start, stop)) for batches covering range(total).

        ``compute`` must have no side effects that a retry would repeat: it may run again on a smaller slice
        from the same start after torch.cuda.OutOfMemoryError. The caller keeps the results (and advances
        progress) in the loop body, which runs once per batch.
        """
        start = 0
        while start < total:
            stop = min(start + self.size, total)
            try:
                value = compute(start, stop)
            except torch.cuda.OutOfMemoryError as exc:
                if stop - start <= 1:
                    raise SaliencyError(
                        f"out of GPU memory even with one row per batch (started at {self.requested}); free GPU "
                        "memory (other models, other sessions), use a smaller input or run on the CPU"
                    ) from exc
                failed = stop - start
            else:
                yield start, stop, value
                start = stop
                continue
            # outside the except clause: the failed batch's tensors, held by the traceback, are freed by now
            self._shrink(failed)

    def _shrink(self, failed: int) -> None:
        self.size = max(1, failed // 2)
        self.reduced_from.append(failed)
        warnings.warn(f"out of GPU memory with a batch of {failed}; retrying with {self.size}", RuntimeWarning,
                      stacklevel=3)
        if getattr(self.device, "type", None) == "cuda":
            torch.cuda.empty_cache()

    def note(self) -> str | None:
        """What to tell the user when the size had to shrink, else None."""
        if not self.reduced_from:
            return None
        return f"out of GPU memory at batch size {self.requested}: finished with batch size {self.size}"


class Progress:
    """Counts passes done out of ``total`` and forwards them to ``callback(done, total)``.

    The callback stops the computation by returning False or raising Cancelled.
    """

    def __init__(self, total: int, callback: Callable[[int, int], object] | None = None):
        self.total = max(int(total), 1)
        self.done = 0
        self.callback = callback

    def advance(self, n: int = 1) -> None:
        self.done = min(self.done + n, self.total)
        if self.callback is not None and self.callback(self.done, self.total) is False:
            raise Cancelled(f"cancelled after {self.done} of {self.total} passes")

    def finish(self) -> None:
        if self.done < self.total:
            self.advance(self.total - self.done)
