"""The machine's limit: the best time per row of the two kinds of pass every method is made of (issue 23).

    .venv/bin/python bench/limit.py [--device cuda] [--model resnet50 efficientnet_lite0 resnet18] [--quick]
                                    [--budget-s 60] [--repeats 3] [--batches 1 4 16 64] [--out DIR]

For each model, on the input the peer table uses (the sample image; ``--resnet-size`` px for the seeded ResNets),
two kinds of pass are timed per row:

- forward: ``model(x)`` under ``torch.inference_mode``;
- backward: a forward with autograd and the gradient of one logit's sum with respect to the input
  (``torch.autograd.grad``), i.e. one forward+backward to the input;

over batch sizes (``--batches`` and the backend's own choices, ``explainers.batching.preferred_batch_size``, from
the smallest up, until the next would not fit the model's ``--budget-s``, or the backend's memory cap
``explainers.batching.memory_cap``), memory layouts (contiguous; a channels_last
input, as ``explainers.batching.forward`` feeds a CPU; channels_last model and input) and, for forward passes,
with every BatchNorm that directly follows a convolution folded into it (``fold_batchnorm``, a copy). All the
variants of one batch size run interleaved (``common.compare``: one warm-up, then ``--repeats`` rounds), medians.
The best median time per row over every variant of a kind is the limit for that kind: a method needing F forward
passes of which B are forward+backward ones cannot beat (F − B) × forward + B × backward per row
(``Limit.seconds``), unless its backward stops short of the input (a CAM's stops at its layer). It is float32,
eager PyTorch: no bfloat16, no torch.compile, no cudnn.benchmark.

``--quick`` is the tiny seeded CNN of bench/peers.py --quick at 64 px with a small budget: it checks that the
script works. bench/peers.py calls ``measure_limit`` once per model at its start, so that its ratios to the limit
come from the same run as its peer rows.
"""

from __future__ import annotations

import argparse
import copy
import shlex
import sys
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from common import RESULTS, compare, load_average, machine, markdown_table, setup_threads
from peerkit import subject
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from explainers import DEFAULT_MODEL
from explainers.batching import memory_cap, preferred_batch_size

LAYOUTS = ("contiguous", "channels_last input", "channels_last model+input")
AS_IS = LAYOUTS[:2]  # the model's own weights untouched
BATCHES = (1, 4, 16, 64)


@dataclass
class Limit:
    """The best measured time per row of each kind of pass on one model and input size, and where it came from."""

    forward_s_per_row: float
    backward_s_per_row: float
    forward_variant: str
    backward_variant: str
    forward_batch1_s: float  # the best at one row per pass: what a one-image pass can hope for
    backward_batch1_s: float
    variants: list[dict] = field(default_factory=list)  # every variant measured: its label, kind, times
    folded: int = 0  # BatchNorms folded into convolutions in the folded copy
    elapsed_s: float = 0.0
    notes: list[str] = field(default_factory=list)

    def as_is(self) -> Limit:
        """This limit over the variants that run the model as it is (its weights contiguous, no BatchNorm folded,
        the input in either layout): the best a method can reach that runs the caller's model itself, as the
        gradient methods do (the forward-only ones run on a folded, converted copy)."""
        kept = [v for v in self.variants if v["layout"] in AS_IS and not v["folded"]]
        best = {kind: min((v for v in kept if v["kind"] == kind), key=lambda v: v["s_per_row"])
                for kind in ("forward", "backward")}
        return replace(self, forward_s_per_row=best["forward"]["s_per_row"],
                       backward_s_per_row=best["backward"]["s_per_row"], forward_variant=best["forward"]["label"],
                       backward_variant=best["backward"]["label"])

    def seconds(self, passes, rows: int = 1) -> float:
        """The least time ``passes`` (the registry's Passes per image: ``forward`` counts every forward, including
        the one under each backward) can take for ``rows`` images at this machine's best throughput."""
        backward = passes.backward
        forward_only = max(0, passes.forward - backward)
        return rows * (forward_only * self.forward_s_per_row + backward * self.backward_s_per_row)


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def fold_batchnorm(model: nn.Module, x: torch.Tensor) -> tuple[nn.Module, int, str | None]:
    """(copy, folded, why not): a copy of ``model`` in eval mode with every ``nn.BatchNorm2d`` whose input is the
    very tensor an ``nn.Conv2d`` returned folded into that convolution (PyTorch's ``fuse_conv_bn_eval``) and
    replaced by an identity. The pairs come from one forward of ``x[:1]``; a module called more than once is left
    alone. The copy's output is checked against the model's: where they differ (a convolution's output also used
    elsewhere), the unfolded copy comes back with the reason."""
    folded = copy.deepcopy(model).eval()
    produced: dict[int, tuple[str, torch.Tensor]] = {}
    pairs: list[tuple[str, str]] = []
    calls: Counter = Counter()

    def conv_hook(name):
        def hook(module, inputs, output):
            calls[name] += 1
            if isinstance(output, torch.Tensor):
                produced[id(output)] = (name, output)  # the tensor is kept, so its id is not reused
        return hook

    def bn_hook(name):
        def hook(module, inputs):
            calls[name] += 1
            source = produced.get(id(inputs[0])) if inputs else None
            if source is not None and source[1] is inputs[0]:
                pairs.append((source[0], name))
        return hook

    handles = []
    for name, module in folded.named_modules():
        if isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_hook(conv_hook(name)))
        elif type(module) is nn.BatchNorm2d and module.running_mean is not None:
            handles.append(module.register_forward_pre_hook(bn_hook(name)))
    try:
        with torch.no_grad():
            reference = model(x[:1])
            folded(x[:1])
    finally:
        for handle in handles:
            handle.remove()
    produced.clear()
    count = 0
    for conv_name, bn_name in pairs:
        if calls[conv_name] != 1 or calls[bn_name] != 1:
            continue
        conv, bn = folded.get_submodule(conv_name), folded.get_submodule(bn_name)
        _set_submodule(folded, conv_name, fuse_conv_bn_eval(conv, bn))
        _set_submodule(folded, bn_name, nn.Identity())
        count += 1
    with torch.no_grad():
        difference = float((folded(x[:1]) - reference).abs().max() / reference.abs().max().clamp_min(1e-30))
    if difference > 1e-3:
        return copy.deepcopy(model).eval(), 0, f"folding changed the output by {difference:.1e} of its max"
    return folded, count, None if count else "no BatchNorm follows a convolution directly"


def _forward(model: nn.Module, batch: torch.Tensor):
    def call():
        with torch.inference_mode():
            return model(batch)
    return call


def _backward(model: nn.Module, batch: torch.Tensor, target: int):
    leaf = batch.detach().clone(memory_format=torch.preserve_format).requires_grad_(True)

    def call():
        with torch.enable_grad():
            return torch.autograd.grad(model(leaf)[:, target].sum(), leaf)[0]
    return call


def _label(kind: str, batch: int, layout: str, folded: bool) -> str:
    return f"{kind}, {batch} row{'s' if batch > 1 else ''}, {layout}" + (", BN folded" if folded else "")


def measure_limit(model: nn.Module, x: torch.Tensor, device: torch.device, budget_s: float = 60.0,
                  repeats: int = 3, batches: tuple[int, ...] = BATCHES, target: int | None = None) -> Limit:
    """The machine's best time per row for a forward (inference mode) and a forward+backward to the input of
    ``model`` on rows like ``x[:1]``, over ``batches`` (from the smallest up, while the next fits ``budget_s`` and
    the backend's memory cap), layouts (``LAYOUTS``) and, forward only, BatchNorm folded (``fold_batchnorm``).
    ``model`` is in eval mode and is not changed: the other layouts and the folded model are copies."""
    started = time.perf_counter()
    row = x[:1].detach().to(device)
    if target is None:
        with torch.no_grad():
            target = int(model(row).argmax())
    folded, count, why = fold_batchnorm(model, row)
    four_d = row.dim() == 4
    models = {("contiguous", False): model, ("contiguous", True): folded}
    if four_d:
        models[("channels_last input", False)] = model
        models[("channels_last input", True)] = folded
        models[("channels_last model+input", False)] = copy.deepcopy(model).to(memory_format=torch.channels_last)
        models[("channels_last model+input", True)] = copy.deepcopy(folded).to(memory_format=torch.channels_last)
    notes = [] if count else [f"BatchNorm not folded: {why}"]
    if not four_d:
        notes.append("input not 4-D: contiguous layout only")
    caps = {kind: memory_cap(device, model, row, forward_only=kind == "forward") for kind in ("forward", "backward")}
    variants: list[dict] = []
    previous_round_s, previous_batch = None, None
    # the batch sizes the backend itself picks on this device are always on the ladder (budget permitting)
    ladder = sorted(set(batches) | {preferred_batch_size(device, True), preferred_batch_size(device, False)})
    for batch in ladder:
        elapsed = time.perf_counter() - started
        if previous_round_s is not None:
            estimate = previous_round_s * batch / previous_batch * (repeats + 1)
            if elapsed + estimate > budget_s:
                notes.append(f"batches from {batch} rows not measured: about {estimate:.0f} s more, over the "
                             f"{budget_s:g} s budget ({elapsed:.0f} s spent)")
                break
        contenders, meta = {}, {}
        for kind in ("forward", "backward"):
            if caps[kind] is not None and batch > caps[kind]:
                notes.append(f"{kind} at {batch} rows not measured: over the memory cap of {caps[kind]} rows")
                continue
            for (layout, is_folded), variant_model in models.items():
                if is_folded and (kind == "backward" or not count):
                    continue
                rows = row.expand(batch, *row.shape[1:]).contiguous()
                if layout != "contiguous":
                    rows = rows.contiguous(memory_format=torch.channels_last)
                label = _label(kind, batch, layout, is_folded)
                contenders[label] = (_forward(variant_model, rows) if kind == "forward"
                                     else _backward(variant_model, rows, target))
                meta[label] = {"kind": kind, "batch": batch, "layout": layout, "folded": is_folded}
        if not contenders:
            break
        times = compare(contenders, repeats, device, warmup=1)
        previous_round_s, previous_batch = sum(t["median_s"] for t in times.values()), batch
        for label, t in times.items():
            variants.append({"label": label, **meta[label], "median_s": t["median_s"],
                             "s_per_row": t["median_s"] / batch, "runs": len(t["samples_s"])})
        del contenders
    best = {kind: min((v for v in variants if v["kind"] == kind), key=lambda v: v["s_per_row"])
            for kind in ("forward", "backward")}
    single = {kind: min(v["s_per_row"] for v in variants if v["kind"] == kind and v["batch"] == 1)
              for kind in ("forward", "backward")}
    return Limit(forward_s_per_row=best["forward"]["s_per_row"], backward_s_per_row=best["backward"]["s_per_row"],
                 forward_variant=best["forward"]["label"], backward_variant=best["backward"]["label"],
                 forward_batch1_s=single["forward"], backward_batch1_s=single["backward"], variants=variants,
                 folded=count, elapsed_s=time.perf_counter() - started, notes=notes)


# ---- the report ----

SUMMARY = ["model", "input", "forward (ms/row)", "best forward variant", "backward (ms/row)",
           "best backward variant", "backward/forward", "forward at 1 row (ms)", "backward at 1 row (ms)",
           "BN folded", "measured in (s)"]
VARIANTS = ["model", "kind", "rows", "layout", "BN folded", "median per call (ms)", "per row (ms)",
            "per row / best of kind", "runs"]


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3f}"


def summary_table(measured: list[tuple[object, Limit]]) -> str:
    return markdown_table(SUMMARY, [
        [s.name, "×".join(str(d) for d in s.x.shape[1:]), ms(limit.forward_s_per_row), limit.forward_variant,
         ms(limit.backward_s_per_row), limit.backward_variant,
         f"{limit.backward_s_per_row / limit.forward_s_per_row:.2f}", ms(limit.forward_batch1_s),
         ms(limit.backward_batch1_s), limit.folded, f"{limit.elapsed_s:.0f}"] for s, limit in measured])


def variants_table(measured: list[tuple[object, Limit]]) -> str:
    lines = []
    for s, limit in measured:
        best = {"forward": limit.forward_s_per_row, "backward": limit.backward_s_per_row}
        for v in sorted(limit.variants, key=lambda v: (v["kind"], v["batch"], v["layout"], v["folded"])):
            lines.append([s.name, v["kind"], v["batch"], v["layout"], "yes" if v["folded"] else "no",
                          ms(v["median_s"]), ms(v["s_per_row"]), f"{v['s_per_row'] / best[v['kind']]:.2f}",
                          v["runs"]])
    return markdown_table(VARIANTS, lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", nargs="+", default=["resnet50", DEFAULT_MODEL, "resnet18"])
    parser.add_argument("--quick", action="store_true", help="the tiny CNN at 64 px, a small budget")
    parser.add_argument("--budget-s", type=float, default=60.0, help="seconds per model (the batches stop there)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batches", type=int, nargs="+", default=list(BATCHES))
    parser.add_argument("--resnet-size", type=int, default=128, help="input side for the seeded ResNets")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for the markdown report")
    args = parser.parse_args()
    started = time.time()
    load_start = load_average()
    threads = setup_threads()
    device = torch.device(args.device)
    if args.quick:
        args.model, args.budget_s = ["tiny"], min(args.budget_s, 5.0)
    measured = []
    for name in args.model:
        s = subject(name, device, args)
        limit = measure_limit(s.model, s.x, device, args.budget_s, args.repeats, tuple(args.batches), s.target)
        measured.append((s, limit))
        print(f"{s.label}: forward {ms(limit.forward_s_per_row)} ms/row ({limit.forward_variant}), backward "
              f"{ms(limit.backward_s_per_row)} ms/row ({limit.backward_variant}), {limit.elapsed_s:.0f} s",
              flush=True)
    import torchvision

    lines = ["# The machine's limit: best time per row of a forward and a forward+backward pass (issue 23)", ""]
    header = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(started)),
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "machine": ", ".join(f"{k} {v}" for k, v in machine(device).items()),
        "versions": f"torch {torch.__version__}, torchvision {torchvision.__version__}",
        "load average at start": load_start,
        "load average at end": load_average(),
        "wall time": f"{time.time() - started:.0f} s",
        "threads": f"{threads} (BENCH_THREADS)",
        "budget": f"{args.budget_s:g} s per model, {args.repeats} interleaved rounds per batch size after one warm-up",
    }
    lines += [f"- **{k}**: {v}" for k, v in header.items()]
    lines += ["", "## Models and inputs", ""]
    lines += [f"- **{s.name}**: {s.label}; input {list(s.x.shape)}" for s, _ in measured]
    lines += ["", "## Limit", "", summary_table(measured), "", "## Every variant", "", variants_table(measured),
              "", "## Notes", ""]
    notes = [
        "forward = model(x) under torch.inference_mode; backward = a forward with autograd and "
        "torch.autograd.grad of one logit's sum (the top-1 class) with respect to the input: one forward+backward.",
        "All variants of one batch size run interleaved in one process (one warm-up each, then rounds); medians. "
        "The limit of a kind is its best median time per row over every variant.",
        "Layouts: contiguous NCHW; channels_last input with the model as it is (what explainers.batching.forward "
        "does on a CPU); channels_last model and input (converted copies, outside the timing).",
        "BN folded: a copy of the model with each BatchNorm2d that directly follows a Conv2d folded into it "
        "(torch.nn.utils.fusion.fuse_conv_bn_eval), checked against the original's output; forward passes only.",
        "A method needing F forward passes per image, B of them with a backward, cannot beat "
        "(F − B) × forward + B × backward per image at these rates (bench/peers.py's 'limit' column), unless its "
        "backward stops short of the input (a CAM's stops at its layer).",
        "Float32 eager PyTorch only: bfloat16, torch.compile and cudnn.benchmark are not part of this limit.",
    ]
    for s, limit in measured:
        notes += [f"{s.name}: {note}" for note in limit.notes]
    lines += [f"- {note}" for note in notes]
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(started))
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"limit-{device.type}-{stamp}.md"
    path.write_text("\n".join(lines) + "\n")
    print()
    print(summary_table(measured))
    print(f"\nwritten: {path}")


if __name__ == "__main__":
    main()
