"""Shared benchmark plumbing: interleaved repeats, medians, ratios, one JSON per run.

The machine is shared and noisy, so every comparison runs ours and the peer alternately in the same process,
on the same input, and reports medians and the ratio of medians, never a lone absolute time.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
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
    print(f"{'case'.ljust(width)}  {'ours (median s)':>16}  {'peer (median s)':>16}  {'ratio':>7}  goal")
    for r in rows:
        print(f"{r['case'].ljust(width)}  {r['ours_s']:16.4f}  {r['peer_s']:16.4f}  {r['ratio']:7.3f}  "
              f"≤{r['goal']:.2f}x {'met' if r['ratio'] <= r['goal'] else 'MISSED'}")
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
