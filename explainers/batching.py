"""The one place multi-pass methods split their passes into batches and report progress."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from .errors import Cancelled

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
