"""The fixed cost of one ``explain()`` call: what it adds to the passes themselves (issue 23).

    .venv/bin/python bench/bench_overhead.py [--repeats 2000] [--methods vanilla gradcam] [--profile]

On a tiny model (one 3×3 convolution, ReLU, pooling, a linear layer; an 8×8 input) the passes cost a few hundred
microseconds, so what remains is the call's own work: the checks of the request, the eval switch, the target, the
batch plan, the finite and all-zero checks of the map. Each repeat runs a bare forward+backward to the input
(``autograd.grad`` of the target logit) and ``explain()`` once per method, interleaved, timed in CPU time of the
thread (``time.thread_time_ns``: the other jobs of this shared machine do not count); the overhead is the
difference of medians. ``--profile`` adds cProfile's self time per call of the backend's own functions, which
says where the overhead goes. Goal ≤ 0.3 ms.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import statistics
import time

import torch
from common import setup_threads
from torch import nn

from explainers import DEFAULT_MODEL, explain, load_model

GOAL_MS = 0.3


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 10)).eval()


def overhead(model: nn.Module, x: torch.Tensor, methods: list[str], repeats: int, label: str,
             goal: bool = True) -> None:
    """Print, per method, the median CPU time of explain() and what it adds to a bare forward+backward."""

    def bare():
        leaf = x.detach().requires_grad_(True)
        torch.autograd.grad(model(leaf)[:, 3].sum(), leaf)

    contenders = {"bare forward+backward": bare}
    for method in methods:
        contenders[method] = lambda method=method: explain(model, x, method, target=3, seed=0)
    for fn in contenders.values():
        for _ in range(20):
            fn()
    samples: dict[str, list[int]] = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            start = time.thread_time_ns()
            fn()
            samples[name].append(time.thread_time_ns() - start)
    bare_ms = statistics.median(samples["bare forward+backward"]) / 1e6
    for name, values in samples.items():
        median = statistics.median(values) / 1e6
        added = median - bare_ms
        met = "" if name.startswith("bare") or not goal else ("yes" if added <= GOAL_MS else "no")
        print(f"{label:28s} {name:24s} {median:10.3f} {added:12.3f}  {met}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=2000)
    parser.add_argument("--methods", nargs="+", default=["vanilla", "gradcam"])
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    threads = setup_threads()
    model, x = tiny_model(), torch.randn(1, 3, 8, 8)
    print(f"fixed cost of explain(), {args.repeats} interleaved repeats, {threads} thread(s), median CPU time of the "
          f"thread; goal ≤ {GOAL_MS} ms on the tiny model")
    print(f"{'model':28s} {'call':24s} {'median ms':>10s} {'overhead ms':>12s}  met")
    overhead(model, x, args.methods, args.repeats, "tiny (8×8 input)")
    # the same on a 150-module network at a small input: the part of the cost that grows with the module count
    overhead(load_model(DEFAULT_MODEL).model, torch.randn(1, 3, 32, 32), ["vanilla"], max(50, args.repeats // 10),
             f"{DEFAULT_MODEL} (32×32 input)", goal=False)
    if args.profile:
        for method in args.methods:
            profiler = cProfile.Profile()
            profiler.enable()
            for _ in range(500):
                explain(model, x, method, target=3, seed=0)
            profiler.disable()
            out = io.StringIO()
            stats = pstats.Stats(profiler, stream=out)
            stats.sort_stats("tottime").print_stats("explainers", 15)
            print(f"\n{method}: self time of the backend's functions over 500 calls (cProfile)\n{out.getvalue()}")


if __name__ == "__main__":
    main()
