"""CAM family and perturbation methods against their peers, same model, same input, one run.

    .venv/bin/python bench/bench_cam.py [--repeats 3] [--size 160] [--device cpu|cuda]

Goals (issue 3, issue 10): Score-CAM ≤ 0.5x pytorch-grad-cam's ScoreCAM (its batch_size 64) on a seeded
ResNet-18, layer4, 224 px (resnet50 on request: --scorecam-models resnet18,resnet50,lite0); occlusion ≤ 1.0x
Captum's Occlusion at its best perturbations_per_eval; Grad-CAM ≤ 1.1x a bare forward+backward.

resnet50 uses its ImageNet weights when they are in the torch hub cache; otherwise (this offline machine) a
seeded ResNet-50 with calibrated BatchNorm statistics, and the report says so. Score-CAM's advantage comes
partly from skipping channels whose activation map is constant, which depends on real weights, so it is also
measured on the default model, whose real weights ship offline.
"""

from __future__ import annotations

import argparse

import torch
from common import best_peer_row, compare, report, row, seeded_torchvision, setup_threads

from explainers import ModelUnavailableError, explain, load_model, open_image

SAMPLE = "assets/samples/cat.png"


def resnet(device, name="resnet50"):
    try:
        bundle = load_model(name, device=device, offline=True)
        return bundle.model, bundle.normalize, f"{name} (ImageNet weights)"
    except ModelUnavailableError:
        model, normalize = seeded_torchvision(name, device)
        return model, normalize, f"{name} (seeded weights: ImageNet weights not cached offline)"


def pixels(size, device):
    image = open_image(SAMPLE).resize((size, size))
    import numpy as np

    return torch.from_numpy(np.asarray(image, dtype="float32") / 255).permute(2, 0, 1)[None].contiguous().to(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", type=int, default=160, help="input side for the resnet50 Score-CAM run")
    parser.add_argument("--scorecam-size", type=int, default=224, help="input side for the resnet18 Score-CAM run")
    parser.add_argument("--scorecam-models", default="resnet18,lite0",
                        help="comma-separated subset of resnet18,resnet50,lite0 for the Score-CAM rows")
    parser.add_argument("--peer-batch", type=int, default=64, help="pytorch-grad-cam ScoreCAM's batch_size")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--cases", default="scorecam,occlusion,gradcam",
                        help="comma-separated subset of scorecam,occlusion,gradcam (Score-CAM on resnet50 is slow)")
    args = parser.parse_args()
    cases = set(args.cases.split(","))
    setup_threads()
    import pytorch_grad_cam
    from captum.attr import Occlusion
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    device = torch.device(args.device)
    rows = []
    lite = load_model("efficientnet_lite0", device=device)
    x_lite = lite.preprocess(open_image(SAMPLE)).contiguous()
    big, normalize, big_label = resnet(device, "resnet50")
    x_big = normalize(pixels(args.size, device)).contiguous()
    small, normalize_small, small_label = resnet(device, "resnet18")
    x_small = normalize_small(pixels(args.scorecam_size, device)).contiguous()

    def scorecam_peer(model, layer, x, target):
        def run():
            cam = pytorch_grad_cam.ScoreCAM(model=model, target_layers=[layer])
            cam.batch_size = args.peer_batch
            with cam:
                return cam(input_tensor=x, targets=[ClassifierOutputTarget(target)])
        return run

    scorecam_runs = {
        "resnet18": (small_label, small, "layer4", x_small),
        "resnet50": (big_label, big, "layer4", x_big),
        "lite0": ("efficientnet_lite0 (real weights)", lite.model, "_head_act", x_lite),
    }
    scorecam_runs = [scorecam_runs[name] for name in args.scorecam_models.split(",")]
    for label, model, layer_name, x in scorecam_runs if "scorecam" in cases else []:
        with torch.no_grad():
            target = int(model(x).argmax())
        layer = model.get_submodule(layer_name)
        skipped = explain(model, x, "scorecam", target=target, layer=layer_name).extras
        times = compare({"ours": lambda m=model, x=x, t=target, n=layer_name: explain(m, x, "scorecam", target=t,
                                                                                       layer=n),
                         "peer": scorecam_peer(model, layer, x, target)}, args.repeats, device, warmup=0)
        rows.append({**row(f"score-cam, {label}, {x.shape[-1]} px", times, 0.5, device,
                           f"pytorch_grad_cam.ScoreCAM, batch_size {args.peer_batch}"), "extras": skipped})

    # occlusion: Captum at several perturbations_per_eval; the best is the peer
    with torch.no_grad():
        target = int(lite.model(x_lite).argmax())
    occlusion = Occlusion(lite.model)
    peers = {f"captum perturbations_per_eval={k}": (lambda k=k: occlusion.attribute(
        x_lite, sliding_window_shapes=(3, 32, 32), strides=(3, 16, 16), baselines=0, target=target,
        perturbations_per_eval=k)) for k in (1, 2, 8, 16)}
    if "occlusion" in cases:
        times = compare({"ours": lambda: explain(lite, x_lite, "occlusion", target=target, window=32, stride=16),
                         **peers}, args.repeats, device)
        rows.append(best_peer_row("occlusion 32/16, efficientnet_lite0", times, 1.0, device))

    gradcam_runs = [("efficientnet_lite0", lite.model, "_head_act", x_lite), (big_label, big, "layer4", x_big)]
    for label, model, layer_name, x in gradcam_runs if "gradcam" in cases else []:
        with torch.no_grad():
            target = int(model(x).argmax())

        def bare(model=model, x=x, target=target):
            leaf = x.detach().requires_grad_(True)
            model(leaf)[0, target].backward()

        times = compare({"ours": lambda m=model, x=x, t=target, n=layer_name: explain(m, x, "gradcam", target=t,
                                                                                       layer=n),
                         "peer": bare}, args.repeats * 5, device)
        rows.append(row(f"grad-cam vs bare forward+backward, {label}", times, 1.1, device,
                        "x.requires_grad; model(x)[0, c].backward()"))
    report("cam", rows)



if __name__ == "__main__":
    main()
