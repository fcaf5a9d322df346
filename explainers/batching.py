"""The one place multi-pass methods split their passes into batches and report progress."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from .errors import Cancelled

# Rows per forward/backward pass when the caller does not say. Large enough to keep BLAS busy on a CPU,
# small enough that a 224x224 ResNet-50 backward stays within a few GB.
DEFAULT_BATCH_SIZE = 32


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
