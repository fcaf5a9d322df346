"""Eight sessions asking for the same map at the same moment: one shared computation against eight.

    .venv/bin/python bench/bench_shared_requests.py [--repeats 5] [--sessions 8] [--method smoothgrad]

The dashboard's explanation cache (ui/explanations.py, ``ExplanationCache.compute``) runs the first request and
makes the identical ones wait for its result. "ours": ``sessions`` threads through a fresh cache; "peer": the
same threads each calling ``explain()`` (the backend's per-model lock serialises them, as before the cache
shared in-flight work). Goal (issue 10): the shared run costs about one computation, ≤ 1.5x a single call.
"""

from __future__ import annotations

import argparse
import threading
from concurrent.futures import ThreadPoolExecutor

import torch
from common import compare, report, row, setup_threads

from explainers import explain, load_model, open_image
from ui.explanations import ExplanationCache

SAMPLE = "assets/samples/cat.png"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sessions", type=int, default=8)
    parser.add_argument("--method", default="smoothgrad")
    args = parser.parse_args()
    threads = setup_threads()
    bundle = load_model("efficientnet_lite0")
    x = bundle.preprocess(open_image(SAMPLE))
    device = x.device

    def one():
        return explain(bundle, x, args.method, "top1", seed=0)

    def together(fn):
        start = threading.Barrier(args.sessions)

        def session(_):
            start.wait()
            return fn()

        with ThreadPoolExecutor(args.sessions) as pool:
            return list(pool.map(session, range(args.sessions)))

    def shared():
        cache = ExplanationCache()
        return together(lambda: cache.compute(("same",), lambda report: explain(
            bundle, x, args.method, "top1", seed=0, progress=report)))

    times = compare({"ours": shared, "peer": lambda: together(one), "single": one}, args.repeats, device)
    rows = [
        row(f"{args.sessions} identical requests, shared vs each computed", times, 1.0 / args.sessions * 1.5,
            device, f"{args.sessions} x explain()"),
        row(f"{args.sessions} identical requests, shared vs one call", {"ours": times["ours"],
                                                                        "peer": times["single"]},
            1.5, device, "one explain()"),
    ]
    report("bench_shared_requests", rows, {"threads": threads, "method": args.method, "sessions": args.sessions,
                                           "torch_threads": torch.get_num_threads()})


if __name__ == "__main__":
    main()
