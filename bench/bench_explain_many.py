"""The shared set through explain_many against separate explain() calls and a bare forward+backward.

    .venv/bin/python bench/bench_explain_many.py [--repeats 5] [--device cpu|cuda] [--model efficientnet_lite0]

The set: vanilla, input × gradient, Grad-CAM, Grad-CAM++, XGrad-CAM, LayerCAM, HiResCAM, Eigen-CAM and guided
backprop (one more, guided, backward), for one image and one target (the top class, given as an index so that no
call needs a clean ranking pass). Goals (issue 10): all of them via explain_many ≤ 2.5x one bare
forward+backward, and ≤ 0.5x the separate calls. The bare pass is timed two ways: ``.backward()`` (which also
computes every parameter's gradient, as bench_gradient.py's baseline does) and ``torch.autograd.grad`` to the
input only. The 2-targets row: each target has its own backward through the shared forward; goal 1.3x.

Then one row per multi-pass method, explain_many with 2 targets against 1 target, interleaved,
``--perturbation-repeats`` runs each (default 3, no warm-up run: the rows above warm the model; these calls take
seconds each): Score-CAM on the model's default layer, occlusion with window 32 stride 16 and RISE with 200
masks, whose forward passes do not depend on the target (goal ≤ 1.1x); SmoothGrad-10 and IG-16, whose noisy
copies and path are built once and whose targets share each forward pass, one backward each (goal ≤ 1.3x).
"""

from __future__ import annotations

import argparse

import torch
from common import compare, report, row, setup_threads

from explainers import explain, explain_many, load_model, open_image

SAMPLE = "assets/samples/cat.png"
SET = ("vanilla", "input_x_gradient", "gradcam", "gradcam_pp", "xgradcam", "layercam", "hirescam", "eigencam",
       "guided_backprop")
# small settings, so that each call takes seconds on a CPU; the goal of 2 targets against 1
PERTURBATION = {"scorecam": {}, "occlusion": {"window": 32, "stride": 16}, "rise": {"n_masks": 200}}
GRADIENT = {"smoothgrad": {"n_samples": 10}, "integrated_gradients": {"n_steps": 16}}
GOALS = {**dict.fromkeys(PERTURBATION, 1.1), **dict.fromkeys(GRADIENT, 1.3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--perturbation-repeats", type=int, default=3)
    args = parser.parse_args()
    setup_threads()
    device = torch.device(args.device)
    bundle = load_model(args.model, device=device)
    model = bundle.model
    x = bundle.preprocess(open_image(SAMPLE)).contiguous().to(device)
    with torch.no_grad():
        ranked = model(x)[0].argsort(descending=True)
    first, second = int(ranked[0]), int(ranked[1])
    methods = SET

    def bare():
        leaf = x.detach().requires_grad_(True)
        model(leaf)[0, first].backward()
        return leaf.grad

    def bare_input_gradient():
        # the same without the parameters' gradients, which no saliency method needs
        leaf = x.detach().requires_grad_(True)
        return torch.autograd.grad(model(leaf)[0, first], leaf)[0]

    def separate():
        return [explain(bundle, x, m, first, seed=0) for m in methods]

    contenders = {
        "many": lambda: explain_many(bundle, x, methods, [first]),
        "many_two_targets": lambda: explain_many(bundle, x, methods, [first, second]),
        "separate": separate,
        "bare": bare,
        "bare_input_gradient": bare_input_gradient,
    }
    times = compare(contenders, args.repeats, device)
    rows = [
        row("shared set via explain_many vs bare forward+backward", {"ours": times["many"], "peer": times["bare"]},
            2.5, device, peer="x.requires_grad; model(x)[0, c].backward()"),
        row("shared set via explain_many vs bare input gradient", {"ours": times["many"],
            "peer": times["bare_input_gradient"]}, 2.5, device, peer="torch.autograd.grad(model(x)[0, c], x)"),
        row("shared set via explain_many vs separate explain() calls",
            {"ours": times["many"], "peer": times["separate"]}, 0.5, device, peer="one explain() per method"),
        row("explain_many, 2 targets vs 1", {"ours": times["many_two_targets"], "peer": times["many"]}, 1.3, device,
            peer="explain_many with one target"),
    ]
    perturbation = {}
    for method, params in {**PERTURBATION, **GRADIENT}.items():
        perturbation[f"{method}_one_target"] = lambda m=method, p=params: explain_many(bundle, x, [m], [first],
                                                                                     params={m: p}, seed=0)
        perturbation[f"{method}_two_targets"] = lambda m=method, p=params: explain_many(bundle, x, [m], [first, second],
                                                                                      params={m: p}, seed=0)
    perturbation_times = compare(perturbation, args.perturbation_repeats, device, warmup=0)
    for method, params in {**PERTURBATION, **GRADIENT}.items():
        rows.append(row(f"explain_many {method} {params or '(default layer)'}, 2 targets vs 1",
                        {"ours": perturbation_times[f"{method}_two_targets"],
                         "peer": perturbation_times[f"{method}_one_target"]}, GOALS[method], device,
                        peer=f"explain_many {method} with one target"))
    times.update(perturbation_times)
    for name, t in times.items():
        print(f"{name:>18}: median {t['median_s']:.4f} s over {len(t['samples_s'])} runs")
    report("explain_many", rows, {"model": args.model, "input": SAMPLE, "methods": list(methods),
                                  "perturbation": PERTURBATION, "gradient": GRADIENT,
                                  "medians_s": {name: t["median_s"] for name, t in times.items()}})


if __name__ == "__main__":
    main()
