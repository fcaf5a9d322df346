"""Gradient family against a bare forward+backward and against Captum, same model, same input, one run.

    .venv/bin/python bench/bench_gradient.py [--repeats 7] [--device cpu|cuda] [--model efficientnet_lite0]
                                             [--resnet-size 128] [--batch-sizes 50 25 10 5]

Goals (issue 2, issue 23): vanilla ≤ 1.1x a bare forward+backward; IG-50 and SmoothGrad-25 ≤ 1.0x Captum at
Captum's best batch setting (we run at our default batch size): every ``--batch-sizes`` value (and Captum's default,
all in one batch) is timed interleaved with ours, and the row compares ours with the fastest. ``--model`` takes the
subjects of bench/peers.py: a shipped model (its sample input), or resnet18/resnet50 with seeded weights (their
ImageNet weights are not cached offline) at ``--resnet-size`` px. The baseline is zero on both sides.
"""

from __future__ import annotations

import argparse

import torch
from common import best_peer_row, compare, report, row, setup_threads
from peerkit import subject

from explainers import DEFAULT_MODEL, explain


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--resnet-size", type=int, default=128, help="input side for the seeded ResNets")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[50, 25, 10, 5],
                        help="Captum's internal_batch_size / nt_samples_batch_size values to time")
    args = parser.parse_args()
    setup_threads()
    from captum.attr import IntegratedGradients, NoiseTunnel, Saliency

    device = torch.device(args.device)
    s = subject(args.model, device, args)
    model, x = s.model, s.x
    target = s.target
    rows = []

    def bare():
        leaf = x.detach().requires_grad_(True)
        model(leaf)[0, target].backward()
        return leaf.grad

    times = compare({"ours": lambda: explain(s.explained, x, "vanilla", target=target), "peer": bare},
                    args.repeats * 3, device)
    rows.append(row("vanilla vs bare forward+backward", times, 1.1, device, peer="x.requires_grad; "
                    "model(x)[0, c].backward()"))

    # IG-50: Captum at each internal batch size; the best one is the peer
    captum_ig = IntegratedGradients(model)
    ig_peers = {
        f"captum internal_batch_size={bs}": (lambda bs=bs: captum_ig.attribute(
            x, target=target, n_steps=50, internal_batch_size=bs))
        for bs in (None, *args.batch_sizes)
    }
    ours_ig = {"ours": lambda: explain(s.explained, x, "integrated_gradients", target=target, n_steps=50,
                                       baseline="zero")}
    times = compare({**ours_ig, **ig_peers}, args.repeats, device)
    rows.append(best_peer_row("integrated gradients, 50 steps", times, 1.0, device))

    sigma = 0.15 * float(x.max() - x.min())
    tunnel = NoiseTunnel(Saliency(model))
    sg_peers = {
        f"captum nt_samples_batch_size={bs}": (lambda bs=bs: tunnel.attribute(
            x, nt_type="smoothgrad", nt_samples=25, nt_samples_batch_size=bs, stdevs=sigma, target=target,
            abs=False))
        for bs in (None, *args.batch_sizes)
    }
    ours_sg = {"ours": lambda: explain(s.explained, x, "smoothgrad", target=target, n_samples=25, seed=0)}
    times = compare({**ours_sg, **sg_peers}, args.repeats, device)
    rows.append(best_peer_row("smoothgrad, 25 samples", times, 1.0, device))
    report("gradient", rows, {"model": s.label, "input": f"{tuple(x.shape)}"})


if __name__ == "__main__":
    main()
