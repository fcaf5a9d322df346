"""Backend options on this machine: rows per batch, channels_last, torch.compile; interleaved repeats, medians.

    .venv/bin/python bench/bench_backend_options.py [--repeats 5] [--size 224] [--parts batch,layout,compile]

Every case runs the contenders alternately in one process on the same input and reports the median time per
row and the ratio to the first contender (the current default). ``BENCH_THREADS`` sets the threads (default 1;
the app uses torch's default, 2 on this machine).

Models: the default EfficientNet-Lite0 (real weights, depthwise convolutions) and seeded ResNet-18/ResNet-50
(BatchNorm statistics calibrated on noise; the weights do not change the speed).

- batch: forward-only (inference_mode) and forward+backward (input gradient) per row at several batch sizes,
  in the layout explain() uses (batching.forward: channels_last inputs on a CPU).
- layout: contiguous NCHW against channels_last (model and input converted once, outside the timing).
- compile: torch.compile(model) (inductor, default mode) for forward-only passes: compile time, then the
  per-row time of the compiled model against eager, and the break-even number of rows.

Measured 2026-12-01 on the shared 2-core CPU (BENCH_THREADS=2, 224 px, load average 4-8 from other jobs, so
per-row times are several times an idle machine's; only the ratios, taken within one interleaved group,
carry over). Medians of interleaved repeats (layout 5, batch 3):

  layout, time with channels_last / contiguous        model+input   input only
  EfficientNet-Lite0 forward, batch 16                     0.73          0.84
  EfficientNet-Lite0 forward+backward, batch 8             0.45          0.53
  ResNet-18 forward, batch 16                              0.75          0.80
  ResNet-18 forward+backward, batch 8                      0.83          0.91

  batch, time per row / time per row at 4 rows        8 rows   16 rows   64 rows
  EfficientNet-Lite0 forward                            0.76      0.44      0.25
  ResNet-18 forward                                     0.59      0.39      0.28
  EfficientNet-Lite0 forward+backward                   0.54      0.43        -
  ResNet-18 forward+backward                            0.54      0.37        -

Decisions (explainers/batching.py): forward-only passes on a CPU take channels_last inputs
(batching.forward); the model is not converted (that would change or copy the caller's model). Gradient
passes stay contiguous: with channels_last the input gradients of the seeded ResNet-18 moved 4e-4 to 6e-3
(relative max difference) away from Captum's, over the oracle tests' 1e-4. Default CPU batches: 16 rows with
gradients, 32 rows per thread (at most 128) forward-only; the free-memory cap applies on top.

torch.compile (inductor, default mode) of EfficientNet-Lite0, forward-only, batch 16, 3 repeats: compiled / eager
0.43 per row, but the first call took 471 s to compile (at load ~9: eager was 1004 ms/row then), break-even after
822 rows. One Compare grid on the default model is ~3450 forward rows (Score-CAM 1281, occlusion ~170, RISE
2000), so on this loaded machine it would pay within one grid; it is not adopted: the compile blocks the first
request for minutes with no progress to report, every new batch shape or model compiles again, a user model
may not trace, and the break-even on an idle machine is unmeasured (compiling is mostly single-threaded
Python, the passes 2-thread kernels, so the two need not shrink alike).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time

import torch
from common import RESULTS, ROOT, seeded_torchvision, setup_threads

from explainers import batching, load_model


def seeded(name: str) -> torch.nn.Module:
    return seeded_torchvision(name)[0]


def interleaved(contenders: dict[str, tuple], repeats: int) -> dict[str, float]:
    """contenders: name -> (fn, rows per call). Median seconds per row, alternating the contenders."""
    for fn, _ in contenders.values():
        fn()
    samples = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, (fn, rows) in contenders.items():
            start = time.perf_counter()
            fn()
            samples[name].append((time.perf_counter() - start) / rows)
    return {name: statistics.median(v) for name, v in samples.items()}


def forward(model, x, layout=False):
    """A forward pass without autograd; ``layout``: in the layout explain() uses (batching.forward)."""
    def run():
        with torch.inference_mode():
            (batching.forward if layout else lambda m, b: m(b))(model, x)
    return run


def forward_backward(model, x, layout=False):
    def run():
        leaf = x.detach().requires_grad_(True)
        (batching.forward if layout else lambda m, b: m(b))(model, leaf)[:, 0].sum().backward()
    return run


def batch_part(models, size, repeats, forward_sizes, rows_total=16):
    lines = []
    for label, model in models.items():
        kinds = (("forward", forward, forward_sizes), ("forward+backward", forward_backward, (4, 8, 16)))
        for kind, make, sizes in kinds:
            contenders = {}
            for batch in sizes:
                x = torch.randn(batch, 3, size, size)
                calls = max(1, rows_total // batch)
                fn = make(model, x, layout=True)
                contenders[f"batch {batch}"] = (lambda fn=fn, calls=calls: [fn() for _ in range(calls)], calls * batch)
            times = interleaved(contenders, repeats)
            base = next(iter(times.values()))
            for name, t in times.items():
                lines.append(show({"case": f"{label} {kind} {name}", "ms_per_row": 1000 * t, "ratio": t / base}))
    return lines


def layout_part(models, size, repeats, batches=(("forward", 16), ("forward+backward", 8))):
    lines = []
    for label, model in models.items():
        last = copy.deepcopy(model).to(memory_format=torch.channels_last)
        for kind, batch in batches:
            make = forward if kind == "forward" else forward_backward
            x = torch.randn(batch, 3, size, size)
            x_last = x.contiguous(memory_format=torch.channels_last)
            times = interleaved({"contiguous": (make(model, x), batch),
                                 "channels_last": (make(last, x_last), batch),
                                 "input_only": (make(model, x_last), batch)}, repeats)
            for name, what in (("channels_last", "model+input"), ("input_only", "input only")):
                lines.append(show({"case": f"{label} {kind} batch {batch} channels_last ({what})/contiguous",
                                   "ms_per_row": 1000 * times[name], "ratio": times[name] / times["contiguous"],
                                   "contiguous_ms_per_row": 1000 * times["contiguous"]}))
    return lines


def compile_part(models, size, repeats, batch=16):
    lines = []
    for label, model in models.items():
        x = torch.randn(batch, 3, size, size)
        compiled = torch.compile(copy.deepcopy(model))
        start = time.perf_counter()
        with torch.inference_mode():
            compiled(x)
        compile_s = time.perf_counter() - start
        times = interleaved({"eager": (forward(model, x), batch), "compiled": (forward(compiled, x), batch)}, repeats)
        saved = times["eager"] - times["compiled"]
        lines.append(show({"case": f"{label} forward batch {batch} compiled/eager",
                           "ms_per_row": 1000 * times["compiled"], "ratio": times["compiled"] / times["eager"],
                           "eager_ms_per_row": 1000 * times["eager"], "compile_s": compile_s,
                           "break_even_rows": compile_s / saved if saved > 0 else None}))
    return lines


def show(line: dict) -> dict:
    """Print one result as soon as it is measured (a long run killed half-way keeps what it printed)."""
    more = "".join(f"  {k}={v:.4g}" for k, v in line.items()
                   if k not in ("case", "ms_per_row", "ratio") and isinstance(v, float))
    print(f"{line['case']:<58}  {line['ms_per_row']:9.2f} ms/row  ratio {line['ratio']:6.3f}{more}", flush=True)
    return line


def report(title: str, lines: list[dict]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{title}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps({"title": title, "torch": torch.__version__, "threads": torch.get_num_threads(),
                                "rows": lines}, indent=2))
    print(f"written: {path.relative_to(ROOT)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--parts", default="batch,layout,compile")
    parser.add_argument("--models", default="efficientnet_lite0,resnet18,resnet50")
    parser.add_argument("--batches", default="2,4,8,16,64", help="forward-only batch sizes (the first is the base)")
    args = parser.parse_args()
    setup_threads()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); ratio = to the first contender of its "
          "group", flush=True)
    models = {}
    for name in args.models.split(","):
        models[name] = load_model(name).model if name == "efficientnet_lite0" else seeded(name)
    parts = args.parts.split(",")
    lines = []
    if "batch" in parts:
        lines += batch_part(models, args.size, args.repeats, [int(b) for b in args.batches.split(',')])
    if "layout" in parts:
        lines += layout_part(models, args.size, args.repeats)
    if "compile" in parts:
        lines += compile_part({k: v for k, v in models.items() if k == "efficientnet_lite0"}, args.size,
                              args.repeats)
    report("backend_options", lines)


if __name__ == "__main__":
    main()
