"""Gradient family against a bare forward+backward and against Captum, same model, same input, one run.

    .venv/bin/python bench/bench_gradient.py [--repeats 7] [--device cpu|cuda] [--model efficientnet_lite0]

Goals (issue 2): vanilla ≤ 1.1x a bare forward+backward; IG-50 and SmoothGrad-25 ≤ 1.0x Captum at Captum's best
batch setting (we run at our default batch size).
"""

from __future__ import annotations

import argparse

import torch
from common import best_peer_row, compare, report, row, setup_threads

from explainers import explain, load_model, open_image

SAMPLE = "assets/samples/cat.png"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--model", default="efficientnet_lite0")
    args = parser.parse_args()
    setup_threads()
    from captum.attr import IntegratedGradients, NoiseTunnel, Saliency

    device = torch.device(args.device)
    bundle = load_model(args.model, device=device)
    model = bundle.model
    x = bundle.preprocess(open_image(SAMPLE)).contiguous()
    with torch.no_grad():
        target = int(model(x).argmax())
    rows = []

    def bare():
        leaf = x.detach().requires_grad_(True)
        model(leaf)[0, target].backward()
        return leaf.grad

    times = compare({"ours": lambda: explain(bundle, x, "vanilla", target=target), "peer": bare},
                    args.repeats * 3, device)
    rows.append(row("vanilla vs bare forward+backward", times, 1.1, device, peer="x.requires_grad; "
                    "model(x)[0, c].backward()"))

    # IG-50: Captum at each internal batch size; the best one is the peer
    captum_ig = IntegratedGradients(model)
    baseline = bundle.normalize(torch.zeros_like(x))
    ig_peers = {
        f"captum internal_batch_size={bs}": (lambda bs=bs: captum_ig.attribute(
            x, baselines=baseline, target=target, n_steps=50, internal_batch_size=bs))
        for bs in (None, 25, 10)
    }
    ours_ig = {"ours": lambda: explain(bundle, x, "integrated_gradients", target=target, n_steps=50)}
    times = compare({**ours_ig, **ig_peers}, args.repeats, device)
    rows.append(best_peer_row("integrated gradients, 50 steps", times, 1.0, device))

    sigma = 0.15 * float(x.max() - x.min())
    tunnel = NoiseTunnel(Saliency(model))
    sg_peers = {
        f"captum nt_samples_batch_size={bs}": (lambda bs=bs: tunnel.attribute(
            x, nt_type="smoothgrad", nt_samples=25, nt_samples_batch_size=bs, stdevs=sigma, target=target,
            abs=False))
        for bs in (None, 25, 5)
    }
    ours_sg = {"ours": lambda: explain(bundle, x, "smoothgrad", target=target, n_samples=25, seed=0)}
    times = compare({**ours_sg, **sg_peers}, args.repeats, device)
    rows.append(best_peer_row("smoothgrad, 25 samples", times, 1.0, device))
    report("gradient", rows, {"model": args.model, "input": SAMPLE})



if __name__ == "__main__":
    main()
