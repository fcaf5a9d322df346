"""Faithfulness metrics against their peers, on the default model and the cat sample, one run.

    .venv/bin/python bench/bench_faithfulness.py [--repeats 3] [--device cpu|cuda]

- ROAD's noisy linear imputation (Rong et al. 2022, arXiv:2202.00449): ours (multigrid-preconditioned conjugate
  gradients in torch) against pytorch-grad-cam's NoisyLinearImputer (SciPy's direct sparse solve), on Grad-CAM's
  map at 224 px, MoRF and LeRF at 10/50/90 % removed. Goal ≤ 1.0x.
- Deletion + insertion curves (Petsiuk et al. 2018, arXiv:1806.07421), 3 methods x 50 steps: ours against the
  same number of bare forward passes in batches of the same size. Goal ≤ 1.1x (building the perturbed copies and
  scoring must cost little beside the model).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from common import compare, report, row, setup_threads

from explainers import explain, load_model, open_image
from explainers.render import to_map
from explainers.trust.faithfulness import faithfulness_curves
from explainers.trust.road import noisy_linear_impute, road_removed

SAMPLE = "assets/samples/cat.png"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    args = parser.parse_args()
    threads = setup_threads()
    device = torch.device(args.device)
    bundle = load_model("efficientnet_lite0", device=device)
    inputs = bundle.preprocess(open_image(SAMPLE))
    maps = {m: to_map(explain(bundle, inputs, m, "top1", seed=0).attribution[0])
            for m in ("gradcam", "vanilla", "random")}
    cam = maps["gradcam"]
    cam = ((cam - cam.min()) / np.ptp(cam)).astype(np.float32)

    rows = []
    from pytorch_grad_cam.metrics.road import NoisyLinearImputer

    peer_imputer = NoisyLinearImputer()
    for order in ("morf", "lerf"):
        for fraction in (0.1, 0.5, 0.9):
            removed = road_removed(cam, fraction, order)
            keep = torch.from_numpy((~removed).astype(np.float32))
            removed_t = torch.from_numpy(removed)[None].to(device)
            times = compare({
                "ours": lambda r=removed_t: noisy_linear_impute(inputs, r, seed=0),
                "peer": lambda k=keep: peer_imputer(inputs[0].cpu(), k),
            }, args.repeats, device)
            rows.append(row(f"ROAD imputation {order} {round(100 * fraction)}% (224 px)", times, 1.0, device,
                            "pytorch-grad-cam NoisyLinearImputer (scipy spsolve)"))

    steps, batch = 50, 8
    curves = faithfulness_curves(bundle, inputs, maps, "top1", steps=steps, batch_size=batch)
    copies = inputs.expand(curves.model_passes, -1, -1, -1)

    def bare_forwards():
        with torch.inference_mode():
            for start in range(0, len(copies), batch):
                bundle.model(copies[start:start + batch])

    times = compare({
        "ours": lambda: faithfulness_curves(bundle, inputs, maps, "top1", steps=steps, batch_size=batch),
        "peer": bare_forwards,
    }, args.repeats, device)
    rows.append(row(f"deletion+insertion, 3 methods x {steps} steps ({curves.model_passes} passes)", times, 1.1,
                    device, "the same number of bare forward passes"))
    report("faithfulness", rows, {"threads": threads})


if __name__ == "__main__":
    main()
