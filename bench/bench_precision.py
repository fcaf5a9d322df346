"""bfloat16 against float32 for the forward-only methods, and Score-CAM in both against pytorch-grad-cam (issue 23).

    .venv/bin/python bench/bench_precision.py [--rounds 3] [--peer-rounds resnet18=3,resnet50=1] [--quick]

Where the device has bfloat16 units (``explainers.folding.bfloat16_unavailable``), each case runs ``explain()`` with
``precision="float32"`` and ``"bfloat16"`` interleaved (one warm-up each, then ``--rounds`` rounds; medians) and
reports the time ratio and how far the bfloat16 map is from the float32 one (correlation, max |difference| / max
|float32|). Cases: Score-CAM on the seeded ResNet-50 (128 px) and on the default model, occlusion (window 32,
stride 16) and RISE-500 on the default model. Then Score-CAM on the seeded ResNet-18 and ResNet-50 in both
precisions against pytorch-grad-cam's ScoreCAM (batch_size 64), the rounds per model from ``--peer-rounds``, with
the bfloat16 map's agreement with the peer's. Where there are no bfloat16 units it prints the reason and stops.
``--quick``: the tiny seeded CNN, one round, every case; it checks that the script runs, not how fast anything is.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import types

os.environ.setdefault("TQDM_DISABLE", "1")  # pytorch-grad-cam's ScoreCAM draws a progress bar per batch

import torch  # noqa: E402
from common import agreement, minmax, setup_threads  # noqa: E402
from peerkit import grad_cam_call, subject  # noqa: E402

from explainers import DEFAULT_MODEL, explain  # noqa: E402
from explainers.folding import bfloat16_unavailable  # noqa: E402

CASES = [("resnet50", "scorecam", {}), (DEFAULT_MODEL, "scorecam", {}),
         (DEFAULT_MODEL, "occlusion", {"window": 32, "stride": 16}), (DEFAULT_MODEL, "rise", {"n_masks": 500})]
QUICK_CASES = [("tiny", "scorecam", {}), ("tiny", "occlusion", {"window": 16, "stride": 8}),
               ("tiny", "rise", {"n_masks": 50})]


def interleaved(contenders: dict, rounds: int) -> tuple[dict[str, float], dict]:
    """({name: median seconds}, {name: last output}): one untimed call each, then ``rounds`` interleaved rounds."""
    outputs = {name: fn() for name, fn in contenders.items()}
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, fn in contenders.items():
            started = time.perf_counter()
            outputs[name] = fn()
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(t) for name, t in times.items()}, outputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--peer-rounds", default="resnet18=3,resnet50=1",
                        help="models and rounds for Score-CAM against pytorch-grad-cam (empty: none)")
    parser.add_argument("--resnet-size", type=int, default=128, help="input side for the seeded ResNets")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    threads = setup_threads()
    device = torch.device(args.device)
    why = bfloat16_unavailable(device)
    if why is not None:
        print(f"bfloat16 is not offered here: {why}")
        return
    cases = QUICK_CASES if args.quick else CASES
    pairs = (item.partition("=") for item in args.peer_rounds.split(",") if item)
    peer_rounds = {"tiny": 1} if args.quick else {name: int(count) for name, _, count in pairs}
    rounds = 1 if args.quick else args.rounds
    settings = types.SimpleNamespace(resnet_size=args.resnet_size)
    subjects = {}

    def subject_of(name):
        if name not in subjects:
            subjects[name] = subject(name, device, settings)
        return subjects[name]

    print(f"bench_precision  (torch {torch.__version__}, {threads} thread(s), {device})")
    for name, method, params in cases:
        s = subject_of(name)
        extra = {"layer": s.layer} if method == "scorecam" else {}
        call = {**extra, **params, "target": s.target, "seed": 0}
        times, outputs = interleaved({p: (lambda p=p, s=s, m=method, c=call: explain(s.explained, s.x, m, precision=p,
                                                                                     **c))
                                      for p in ("float32", "bfloat16")}, rounds)
        agree = agreement(outputs["bfloat16"].attribution, outputs["float32"].attribution)
        print(f"{s.label:60s} {method:9s} float32 {times['float32']:8.4f} s  bfloat16 {times['bfloat16']:8.4f} s  "
              f"ratio {times['bfloat16'] / times['float32']:.3f}  map corr {agree['corr']:.4f}, max rel diff "
              f"{agree['max_rel']:.3g}", flush=True)
    for name, count in peer_rounds.items():
        s = subject_of(name)
        times, outputs = interleaved({
            "ours bfloat16": lambda s=s: explain(s.explained, s.x, "scorecam", target=s.target, layer=s.layer,
                                                 precision="bfloat16"),
            "ours float32": lambda s=s: explain(s.explained, s.x, "scorecam", target=s.target, layer=s.layer),
            "pytorch-grad-cam": grad_cam_call(s, "ScoreCAM"),
        }, count if not args.quick else 1)
        peer = times["pytorch-grad-cam"]
        agree = agreement(minmax(outputs["ours bfloat16"].attribution[0, 0]), outputs["pytorch-grad-cam"][0])
        print(f"{s.label:60s} scorecam vs pytorch-grad-cam ({count} rounds): "
              + ", ".join(f"{k} {v:.2f} s ({v / peer:.3f})" for k, v in times.items())
              + f"; bfloat16 map vs the peer's: corr {agree['corr']:.4f}, max rel diff {agree['max_rel']:.3g}",
              flush=True)


if __name__ == "__main__":
    main()
