"""The one place multi-pass methods split their passes into batches and report progress."""

from __future__ import annotations

import os
import threading
import warnings
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from .errors import Cancelled, SaliencyError

# Rows per pass when the caller does not say, for speed; memory may lower it (see default_batch_size).
# Re-measured on this shared 2-core CPU with other jobs running (bench/bench_backend_options.py --parts batch,
# 2 threads, 224 px, interleaved medians, time per row relative to 4 rows): forward-only EfficientNet-Lite0
# 8 rows 0.76, 16 rows 0.44, 64 rows 0.25; ResNet-18 0.59, 0.39, 0.28; forward+backward Lite0 8 rows 0.54,
# 16 rows 0.43; ResNet-18 0.54, 0.37. Loaded cores pay each op's thread hand-off, which larger batches spread
# over more rows; an idle single thread had measured 4-16 rows equal for IG-50 and 1-2 rows per thread best
# for forward-only passes, so the loaded machine decides. A GPU wants enough rows to fill it.
CPU_BATCH_SIZE = 16
CPU_FORWARD_ROWS_PER_THREAD = 32
CPU_FORWARD_MAX_ROWS = 128
CUDA_BATCH_SIZE = 64
DEFAULT_BATCH_SIZE = CPU_BATCH_SIZE
# The share of the free memory one call's batches may fill: the rest stays for the other sessions, the
# allocator's slack and what the method keeps beside the passes (masks, accumulated maps).
MEMORY_SHARE = {"cpu": 0.25, "cuda": 0.5}
# What a method holds per row beside the model's activations (the row itself, its mask or perturbed copy, its
# gradient, a float64 accumulator), in multiples of one input row.
METHOD_ROW_COPIES = 6
# The measured working set of one pass is taken this many times: a residual block keeps its skip tensor alive
# beside the op being measured, and the allocator rounds up.
WORKING_SET_MARGIN = 2
# The largest tensor one gradient pass on a CPU may allocate. glibc's malloc serves a block of 32 MiB or more (its
# highest mmap threshold) straight from the kernel and unmaps it when freed, and trims a freed heap top beyond twice
# the threshold, so a batch whose activations reach that size faults every page of them in again, batch after
# batch. Measured with integrated gradients (50 steps, one thread, interleaved medians of the call's CPU time and
# the system time in it): EfficientNet-Lite0 at 224 px (4.7 MiB a row) 1.6-1.9 s of 4.8-5.0 s at 16 rows,
# 0.5-1.2 s at 8, 0.1-0.5 s at 6, none at 3-5; ResNet-50 at 224 px (3.1 MiB a row) 2.3 s of 15.3 s at 16 rows,
# none at 7 and 10; at 128 px (1 MiB a row) none at 16, 0.1-0.2 s at 25, 1.3 s at 50. Under this bound the calls
# took 0.60-0.72x (Lite0, 5 rows) and 0.87x (ResNet-50 at 224 px, 7 rows) the CPU time at 16 rows.
# Forward-only passes too (a folded channels_last copy, explainers.folding; one thread, CPU ms per row, of them
# system, 3 interleaved repeats, issue 23): EfficientNet-Lite0 at 224 px 17.3 (0.0) at 4 rows,
# 20.5 (2.8) at 8, 22.2 (5.8) at 16, 29.8 (12.7) at 32; ResNet-18 at 224 px 41.1 (0.0) at 4, 40.2 (0.0) at 8,
# 42.8 (2.7) at 16, 44.4 (4.5) at 32; ResNet-50 at 128 px 37.0 (0.2) at 4, 35.5 (0.0) at 8, 33.0 (0.6) at 16,
# 34.2 (2.8) at 32. The bound gives 5, 7 and 24 rows.
CPU_LARGEST_TENSOR = 24 * 2**20

_row_bytes_cache: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_cache_lock = threading.Lock()


def _device_type(device) -> str:
    return getattr(device, "type", None) or torch.device(device).type


def preferred_batch_size(device, forward_only: bool = False) -> int:
    """The fastest rows per pass on this kind of device, memory aside."""
    if _device_type(device) == "cuda":
        return CUDA_BATCH_SIZE
    if forward_only:
        return min(CPU_FORWARD_MAX_ROWS, CPU_FORWARD_ROWS_PER_THREAD * max(1, torch.get_num_threads()))
    return CPU_BATCH_SIZE


def free_memory(device) -> int | None:
    """Bytes free for new tensors on ``device``: ``torch.cuda.mem_get_info`` on CUDA, MemAvailable (else the
    available physical pages) on a CPU; None where it cannot be read."""
    device = torch.device(device) if not isinstance(device, torch.device) else device
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type != "cpu":
        return None
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (OSError, ValueError, AttributeError):
        return None


class _OpBytes(TorchDispatchMode):
    """Records, per aten op, the bytes of its tensor inputs and outputs that are not the model's own
    (parameters, buffers): what one pass must hold at once while that op runs."""

    def __init__(self, own: set[int], active: bool = True):
        super().__init__()
        self.own = own
        self.peak = 0
        self.largest = 0  # the largest single tensor an op made
        self.active = active  # off until the part of the pass being measured begins

    def _bytes(self, values) -> int:
        total, seen = 0, set()
        for value in values:
            if isinstance(value, torch.Tensor) and value.layout == torch.strided:
                storage = value.untyped_storage()
                key = storage.data_ptr()
                if key not in self.own and key not in seen:
                    seen.add(key)
                    total += storage.nbytes()
        return total

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if not self.active:
            return out
        flat_in = torch.utils._pytree.tree_leaves((args, kwargs or {}))
        flat_out = torch.utils._pytree.tree_leaves(out)
        self.peak = max(self.peak, self._bytes(flat_in + flat_out))
        self.largest = max([self.largest] + [self._bytes([value]) for value in flat_out])
        return out


def _measure_row_bytes(model: nn.Module, row: torch.Tensor, forward_only: bool,
                       after: nn.Module | None = None) -> tuple[int, int]:
    """(bytes one row of ``row``'s shape needs in one pass, the largest tensor one op makes for it): the working
    set is the largest of any op (times WORKING_SET_MARGIN), plus, with autograd, every tensor the graph saves for
    the backward and its gradient; the backward's gradients mirror the forward's tensors, so the forward has the
    largest."""
    own = {t.untyped_storage().data_ptr() for t in (*model.parameters(), *model.buffers())}
    recorder = _OpBytes(own, active=after is None or not forward_only)
    row = torch.zeros_like(row)
    if forward_only:
        handle = None if after is None else after.register_forward_hook(
            lambda module, args, output: setattr(recorder, "active", True))
        try:
            with torch.inference_mode(), recorder:
                model(row)
        finally:
            if handle is not None:
                handle.remove()
        return WORKING_SET_MARGIN * recorder.peak, recorder.largest
    saved: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in own:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    leaf = row.requires_grad_(True)
    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        with recorder:
            output = model(leaf)
        del output  # the graph is freed with it; only its size was wanted
    # the backward's grads mirror the forward
    return sum(saved.values()) + 2 * WORKING_SET_MARGIN * recorder.peak, recorder.largest


def _row_costs(model: nn.Module, inputs: torch.Tensor, forward_only: bool,
               after: nn.Module | None = None) -> tuple[int, int]:
    """(row_bytes, the largest tensor of a row), measured once per (model, row shape, dtype, device, kind, part)."""
    key = (tuple(inputs.shape[1:]), inputs.dtype, str(inputs.device), bool(forward_only),
           None if after is None else id(after))
    with _cache_lock:
        known = _row_bytes_cache.get(model, {}).get(key)
    if known is not None:
        return known
    row = inputs[:1]
    try:
        measured, largest = _measure_row_bytes(model, row.detach(), forward_only, after)
    except torch.cuda.OutOfMemoryError:
        raise
    except Exception:  # a model the recorder cannot follow: count the activations as input-sized copies
        measured = largest = 0
    method = METHOD_ROW_COPIES * row.element_size() * row.numel()
    costs = max(int(measured), method) + method, max(int(largest), row.element_size() * row.numel())
    with _cache_lock:
        _row_bytes_cache.setdefault(model, {})[key] = costs
    return costs


def row_bytes(model: nn.Module, inputs: torch.Tensor, forward_only: bool = False,
              after: nn.Module | None = None) -> int:
    """Measured bytes per input row of one pass of ``model`` on rows shaped like ``inputs[0]``, with autograd
    (gradient methods) or without (forward-only ones), plus what the method keeps per row. Measured once with
    one row of zeros and cached per (model, row shape, dtype, device, kind); the caller holds the model's lock
    (explain's model_guard), so the measuring pass sees the model in eval mode. With ``after`` (forward-only),
    only the part of the pass after that module's output: what a row costs that enters the model there (Ablation-
    CAM's copies, made after its layer)."""
    return _row_costs(model, inputs, forward_only, after)[0]


def largest_tensor_bytes(model: nn.Module, inputs: torch.Tensor, forward_only: bool = False,
                         after: nn.Module | None = None) -> int:
    """The largest single tensor one pass of ``model`` makes per row shaped like ``inputs[0]`` (measured with
    :func:`row_bytes`, ``after`` as there)."""
    return _row_costs(model, inputs, forward_only, after)[1]


def memory_cap(device, model: nn.Module, inputs: torch.Tensor, forward_only: bool = False,
               after: nn.Module | None = None) -> int | None:
    """The most rows per pass that fit in MEMORY_SHARE of the free memory, at least 1; None if unknown."""
    free = free_memory(device)
    if free is None:
        return None
    share = MEMORY_SHARE.get(_device_type(device), MEMORY_SHARE["cpu"])
    return max(1, int(share * free) // row_bytes(model, inputs, forward_only, after))


def default_batch_size(device, forward_only: bool = False, *, model: nn.Module | None = None,
                       inputs: torch.Tensor | None = None, preferred: int | None = None,
                       after: nn.Module | None = None) -> int:
    """The batch size a call uses when it is given none: the fastest for this device and kind of pass
    (``preferred`` overrides it), capped so one pass of ``model`` on rows like ``inputs`` fits in a safe share
    of the device's free memory. Without ``model`` and ``inputs`` only the speed optimum. With ``after``
    (forward-only), for rows that enter the pass after that module (see :func:`row_bytes`)."""
    size = int(preferred) if preferred is not None else preferred_batch_size(device, forward_only)
    if model is None or inputs is None:
        return max(1, size)
    if _device_type(device) == "cpu":  # no tensor the allocator would map afresh each batch
        size = min(size, CPU_LARGEST_TENSOR // largest_tensor_bytes(model, inputs, forward_only, after))
    cap = memory_cap(device, model, inputs, forward_only, after)
    return max(1, size if cap is None else min(size, cap))


# Memory layout of the inputs of every pass, per device type. On this CPU channels_last inputs make the
# convolutions run NHWC (bench/bench_backend_options.py, 2 threads, 224 px, interleaved medians, channels_last
# input / contiguous): EfficientNet-Lite0 forward 0.84, forward+backward 0.53; ResNet-18 forward 0.80.
# Converting the model too gains a little more (0.73 / 0.45 / 0.75), but the caller's model must not change: the
# forward-only methods run on a copy (explainers.folding) whose convolutions are folded with their BatchNorms and
# laid out channels_last where this says so; gradient methods convert the input only. Not measured on CUDA, so
# left contiguous there.
CHANNELS_LAST = {"cpu": True, "cuda": False}
_rejects_channels_last: weakref.WeakSet = weakref.WeakSet()


def forward(model: nn.Module, batch: torch.Tensor) -> Any:
    """``model(batch)`` with ``batch`` in the memory layout measured fastest on its device (CHANNELS_LAST).

    The values are the same; only the kernels differ, so results agree to float rounding. A model that cannot
    take a channels_last input (a ``.view`` on it, say) is run contiguous, and remembered. The conversion is
    differentiable: gradients with respect to ``batch`` come back in ``batch``'s own layout.
    """
    if (batch.dim() != 4 or not CHANNELS_LAST.get(batch.device.type, False) or model in _rejects_channels_last
            or batch.is_contiguous(memory_format=torch.channels_last)):
        return model(batch)
    try:
        return model(batch.contiguous(memory_format=torch.channels_last))
    except torch.cuda.OutOfMemoryError:
        raise
    except Exception:
        output = model(batch)  # if this fails too, its error is the model's own
        _rejects_channels_last.add(model)
        return output


def batch_slices(total: int, batch_size: int | None) -> Iterator[tuple[int, int]]:
    """(start, stop) pairs covering range(total) in steps of batch_size."""
    size = max(1, int(batch_size or DEFAULT_BATCH_SIZE))
    for start in range(0, total, size):
        yield start, min(start + size, total)


class Batches:
    """One call's batch size: halved when a batch runs out of GPU memory, and kept halved for the rest of the call.

    ``requested`` is the size the call started with, ``size`` the one in use (the one that worked, once a run
    is over); ``reduced_from`` lists every size that ran out of memory; ``automatic`` whether the size was
    chosen for the call (no one asked for it; by default, when ``size`` is None), so that a method whose rows cost
    less than whole passes may choose its own.
    """

    def __init__(self, size: int | None, device: Any = None, automatic: bool | None = None):
        self.automatic = size is None if automatic is None else bool(automatic)
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

    The callback stops the computation by returning False or raising Cancelled. A method whose passes are steps
    of an optimisation can also say where it is (``say``): a callback with a ``say(text)`` method shows it.
    """

    def __init__(self, total: int, callback: Callable[[int, int], object] | None = None):
        self.total = max(int(total), 1)
        self.done = 0
        self.callback = callback

    def advance(self, n: int = 1) -> None:
        self.done = min(self.done + n, self.total)
        if self.callback is not None and self.callback(self.done, self.total) is False:
            raise Cancelled(f"cancelled after {self.done} of {self.total} passes")

    def say(self, text: str) -> None:
        """Tell the callback, where it listens (a ``say`` method), what the current pass found, e.g. an
        optimisation's iteration and score."""
        say = getattr(self.callback, "say", None)
        if say is not None:
            say(text)

    def finish(self) -> None:
        if self.done < self.total:
            self.advance(self.total - self.done)
