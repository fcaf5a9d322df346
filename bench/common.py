"""Shared benchmark plumbing: interleaved repeats, medians, ratios, one JSON per run.

The machine is shared and noisy, so every comparison runs ours and the peer alternately in the same process,
on the same input, and reports medians and the ratio of medians, never a lone absolute time.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import json
import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
sys.path.insert(0, str(ROOT))


def setup_threads() -> int:
    threads = int(os.environ.get("BENCH_THREADS", "1"))
    torch.set_num_threads(threads)
    return threads


def timed(fn: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def compare(contenders: dict[str, Callable[[], object]], repeats: int, device: torch.device,
            warmup: int = 1) -> dict[str, dict]:
    """Run each contender ``repeats`` times, interleaved; return per-contender median/min/all in seconds."""
    for fn in contenders.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            samples[name].append(timed(fn, device))
    return {name: {"median_s": statistics.median(v), "min_s": min(v), "samples_s": v} for name, v in samples.items()}


def report(title: str, rows: list[dict], extra: dict | None = None) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = RESULTS / f"{title}-{stamp}.json"
    payload = {
        "title": title,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "device": str(rows[0].get("device")) if rows else None,
        "rows": rows,
        **(extra or {}),
    }
    path.write_text(json.dumps(payload, indent=2))
    width = max(len(r["case"]) for r in rows)
    print(f"\n{title}  (torch {torch.__version__}, {torch.get_num_threads()} thread(s), {payload['device']})")
    print(f"{'case'.ljust(width)}  {'ours (median s)':>16}  {'peer (median s)':>16}  {'ratio':>7}  goal           peer")
    for r in rows:
        print(f"{r['case'].ljust(width)}  {r['ours_s']:16.4f}  {r['peer_s']:16.4f}  {r['ratio']:7.3f}  "
              f"≤{r['goal']:.2f}x {'met   ' if r['ratio'] <= r['goal'] else 'MISSED'}  {r.get('peer', '')}")
    print(f"written: {path.relative_to(ROOT)}")
    return path


def row(case: str, times: dict, goal: float, device, peer: str) -> dict:
    """One report line: ours against one peer, ratio of medians."""
    ours, theirs = times["ours"]["median_s"], times["peer"]["median_s"]
    return {"case": case, "ours_s": ours, "peer_s": theirs, "ratio": ours / theirs, "goal": goal, "peer": peer,
            "device": str(device), "samples": times}


def best_peer_row(case: str, times: dict, goal: float, device) -> dict:
    """Ours against the fastest of several peer settings (e.g. Captum's batch knobs)."""
    peers = {k: v for k, v in times.items() if k != "ours"}
    best = min(peers, key=lambda k: peers[k]["median_s"])
    return {**row(case, {"ours": times["ours"], "peer": peers[best]}, goal, device, best), "samples": times}


# ---- additions for bench/peers.py: timed warm-ups with outputs, map agreement, the machine, markdown ----


def timed_call(fn: Callable[[], object], device: torch.device) -> tuple[float, object]:
    """``timed`` that also returns what ``fn`` returned."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    value = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start, value


def compare_warm(contenders: dict[str, Callable[[], object]], repeats: int, device: torch.device,
                 slow_s: float = 60.0, row_budget_s: float | None = None, min_runs: int = 3,
                 memory: Iterable[str] = ()) -> tuple[dict, dict]:
    """``compare`` with one timed warm-up per contender whose output is kept (for checking agreement).

    Then ``repeats`` interleaved runs, unless the warm-ups say that is too long: when one warm-up call took
    over ``slow_s`` the warm-ups themselves are the one timed run (a call that long is hundreds of passes and
    warms itself in its first few); when ``row_budget_s`` is given, the runs are cut so that they fit in it, but
    never below ``min_runs``. The contenders named in ``memory`` have their peak memory measured during their
    warm-up call (``peak_memory``; it adds nothing to the call itself where the kernel can reset the peak).
    Returns (times as ``compare`` gives them plus ``runs``, ``warmup_timed`` and, for those in ``memory``,
    ``peak_bytes`` and ``peak_how``; the warm-up outputs).
    """
    warm, outputs, peaks = {}, {}, {}
    measure = set(memory)
    for name, fn in contenders.items():
        if name in measure:
            peak, how, (warm[name], outputs[name]) = peak_memory(lambda fn=fn: timed_call(fn, device), device)
            peaks[name] = peak, how
        else:
            warm[name], outputs[name] = timed_call(fn, device)
    if max(warm.values()) > slow_s:
        samples = {name: [seconds] for name, seconds in warm.items()}
        timed_warmup = True
    else:
        runs = repeats
        if row_budget_s is not None:
            runs = max(min(repeats, min_runs), min(repeats, int(row_budget_s // max(sum(warm.values()), 1e-9))))
        samples = {name: [] for name in contenders}
        for _ in range(runs):
            for name, fn in contenders.items():
                samples[name].append(timed(fn, device))
        timed_warmup = False
    times = {name: {"median_s": statistics.median(v), "min_s": min(v), "samples_s": v, "runs": len(v),
                    "warmup_s": warm[name], "warmup_timed": timed_warmup} for name, v in samples.items()}
    for name, (peak, how) in peaks.items():
        times[name].update(peak_bytes=peak, peak_how=how)
    return times, outputs


# ---- peak memory of one call ----

PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_LIBC = ctypes.CDLL(ctypes.util.find_library("c")) if ctypes.util.find_library("c") else None


def _resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE


def _high_water_bytes() -> int | None:
    """VmHWM, the resident high-water mark since the last reset, or None where /proc/self/status lacks it."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return None


def _reset_high_water() -> bool:
    """Reset VmHWM to the current RSS (writing 5 to /proc/self/clear_refs, Linux ≥ 4.0); False where refused."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        return _high_water_bytes() is not None
    except OSError:
        return False


class _Sampler(threading.Thread):
    """Reads the resident set (/proc/self/statm) every ``interval_s`` until stopped; keeps the largest."""

    def __init__(self, interval_s: float = 0.001):
        super().__init__(daemon=True)
        self.interval_s, self.peak, self.stopped = interval_s, 0, threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            self.peak = max(self.peak, _resident_bytes())
            self.stopped.wait(self.interval_s)


def peak_memory(fn: Callable[[], object], device: torch.device) -> tuple[int, str, object]:
    """(bytes, how, what ``fn`` returned): the most memory ``fn()`` held at once above what was in use just before
    it.

    CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``, minus ``memory_allocated`` before
    (tensors only: not the caching allocator's reserve, nor the CUDA context). CPU: the process's peak resident
    set (RSS) during the call minus its RSS before, after a ``gc.collect()`` and glibc's ``malloc_trim(0)`` hand
    freed heap pages back (else a call could reuse pages an earlier call left resident and read 0). The peak is
    the kernel's high-water mark (VmHWM, reset through /proc/self/clear_refs: exact, no overhead), or where that
    cannot be reset a thread sampling /proc/self/statm every millisecond (it can miss a spike shorter than that).
    RSS counts every allocation of the process (the model's own lazily created buffers, library caches), so it is
    an upper bound on what the call's tensors need, and a lower one on a fresh process's need.
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        value = fn()
        torch.cuda.synchronize(device)
        return max(0, torch.cuda.max_memory_allocated(device) - before), "cuda max_memory_allocated", value
    gc.collect()
    if _LIBC is not None and hasattr(_LIBC, "malloc_trim"):
        _LIBC.malloc_trim(0)
    before = _resident_bytes()
    if _reset_high_water():
        value = fn()
        peak = max(_high_water_bytes() or 0, _resident_bytes())
        return max(0, peak - before), "RSS high-water mark (VmHWM)", value
    sampler = _Sampler()
    sampler.start()
    try:
        value = fn()
    finally:
        sampler.stopped.set()
        sampler.join()
    return max(0, max(sampler.peak, _resident_bytes()) - before), "RSS sampled every 1 ms", value


def mib(n_bytes: int | None) -> str:
    """Bytes as MiB with one decimal, "—" for None."""
    return "—" if n_bytes is None else f"{n_bytes / 2**20:.1f}"


def agreement(ours, theirs) -> dict[str, float]:
    """How alike two maps are: Pearson correlation and max |difference| / max |theirs| (both as float64)."""
    ours = torch.as_tensor(ours).detach().double().cpu().flatten()
    theirs = torch.as_tensor(theirs).detach().double().cpu().flatten()
    if ours.numel() != theirs.numel():
        raise ValueError(f"maps of different sizes: {ours.numel()} and {theirs.numel()} values")
    max_rel = float((ours - theirs).abs().max() / theirs.abs().max().clamp_min(1e-30))
    centred_ours, centred_theirs = ours - ours.mean(), theirs - theirs.mean()
    denominator = float(centred_ours.norm() * centred_theirs.norm())
    corr = float((centred_ours @ centred_theirs) / denominator) if denominator > 0 else float("nan")
    if denominator == 0 and torch.equal(ours, theirs):
        corr = 1.0
    return {"corr": corr, "max_rel": max_rel}


def minmax(values) -> torch.Tensor:
    """A map scaled to [0, 1] (all zeros when constant): how CAM libraries hand their maps back."""
    values = torch.as_tensor(values).detach().double().cpu()
    low, high = values.min(), values.max()
    return (values - low) / (high - low) if high > low else torch.zeros_like(values)


def package_version(name: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine(device: torch.device) -> dict[str, object]:
    """What the numbers were measured on."""
    info: dict[str, object] = {"platform": platform.platform(), "machine": platform.machine(),
                               "cpus": os.cpu_count(), "torch threads": torch.get_num_threads(),
                               "device": str(device)}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def load_average() -> str:
    try:
        return " / ".join(f"{v:.2f}" for v in os.getloadavg()) + " (1 / 5 / 15 min)"
    except OSError:
        return "unavailable"


def markdown_table(columns: list[str], lines: list[list[object]]) -> str:
    """A GitHub markdown table; cells are str()'d and '|' escaped."""
    def cell(value: object) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    out = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    out += ["| " + " | ".join(cell(v) for v in line) + " |" for line in lines]
    return "\n".join(out)


def seeded_torchvision(name: str, device="cpu", size: int = 96):
    """A torchvision classifier (``name``) with seeded weights and BatchNorm statistics calibrated on noise (the
    ImageNet weights are not cached offline), in eval mode on ``device``, and its ImageNet normaliser."""
    import torchvision

    from explainers.models import affine_normalizer

    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(16, 3, size, size))
    normalize, _ = affine_normalizer([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    return model.eval().to(device), normalize


def seeded_resnet50(device, size: int = 96):
    """``seeded_torchvision("resnet50")``."""
    return seeded_torchvision("resnet50", device, size)


def sample_pixels(path, size: int, device) -> torch.Tensor:
    """An image file opened safely and resized whole to size x size: [1, 3, size, size] in [0, 1] on ``device``."""
    import numpy as np

    from explainers import open_image

    image = open_image(path).resize((size, size))
    return torch.from_numpy(np.asarray(image, dtype="float32") / 255).permute(2, 0, 1)[None].contiguous().to(device)
