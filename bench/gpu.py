"""Latency per model and method, ours and the peers', in the style of TorchCAM's published table (issue 23).

    .venv/bin/python bench/gpu.py --device cuda [--runs 100] [--models ...] [--methods ...] [--memory]
    .venv/bin/python bench/gpu.py --quick                      # CPU, tiny models: checks that every cell works
    .venv/bin/python bench/gpu.py --memory-only [--device cuda] [--memory-budget-gb 8]

Rows are models: a seeded ResNet-18 and ResNet-50 (torchvision, weights=None, BatchNorm calibrated on noise:
nothing is downloaded), the default model (efficientnet_lite0, its shipped weights) and a seeded ViT-B/16
(torchvision, its head drawn at random), each fed the sample image at ``--size`` px (224, as TorchCAM's table).
Columns are methods: vanilla gradient, Grad-CAM and Score-CAM (on the model's default CAM layer), integrated
gradients (50 steps, zero baseline), SmoothGrad (25 samples of vanilla, noise 0.15), LRP (its default composite;
a model it refuses gets the reason) and KernelSHAP (SLIC superpixels, 1000 samples, mean-colour baseline).

Each cell is one interleaved comparison (``common.compare_warm``): a plain forward of the model under inference
mode, our ``explain`` call and every peer that has the method (Captum's Saliency, IntegratedGradients,
NoiseTunnel(Saliency), KernelShap; pytorch-grad-cam's and torchcam's GradCAM and ScoreCAM; zennit's
EpsilonPlusFlat for LRP), each probed once, warmed once, then ``--runs`` rounds (cut to fit ``--cell-budget-s``,
never below 5), CUDA synchronised around every call. A cell gives the median and the interquartile range of the
whole call ("forward included") and the median minus the same cell's median plain forward ("forward excluded",
TorchCAM's convention), the peak memory of one call (``common.peak_memory``: CUDA max_memory_allocated, CPU
resident set), ours/peer as the ratio of the medians, and whether ours and the peer give the same map (the
rules of bench/peers.py). Before any cell, each model's first Grad-CAM map after a warm forward is timed on its
own (goal < 10 ms on a GPU).

``--memory`` adds IG with 200 steps on a seeded ResNet-152 at 224 px at the automatic batch size: the batch size
the backend chose (``Explanation.batch_size_used``), the peak memory, and whether it stayed within the budget
(``explainers.batching.MEMORY_SHARE`` of the free memory, or ``--memory-budget-gb``, which on CUDA also caps the
process with ``torch.cuda.set_per_process_memory_fraction``). Minutes on a CPU: not part of ``--quick``.

``--quick``: a tiny seeded CNN and a two-block ViT at 64 px, small settings, 3 runs: the suite's check
(tests/explainers/test_gpu_bench.py), not a measurement.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import time
from argparse import Namespace
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # pytorch-grad-cam's ScoreCAM draws a progress bar per batch

import torch  # noqa: E402
from common import (  # noqa: E402
    RESULTS,
    agreement,
    compare_warm,
    load_average,
    machine,
    markdown_table,
    mib,
    package_version,
    peak_memory,
    sample_pixels,
    seeded_torchvision,
    setup_threads,
    timed_call,
)
from peerkit import (  # noqa: E402
    CAM_BATCH,
    EXPECTED,
    EXPLAINED,
    SAMPLE,
    Settings,
    Subject,
    cam_agreement,
    describe,
    grad_cam_call,
    importable,
    smoothgrad_same,
    subject,
    torchcam_call,
    verdict,
)
from peers_legrad import seeded_vit  # noqa: E402
from peers_surrogate import TUNED_PPE  # noqa: E402

from explainers import DEFAULT_MODEL, SaliencyError, batching, explain  # noqa: E402
from explainers.baselines import make_baseline  # noqa: E402
from explainers.layers import NCHW, cached_catalogue, default_layer, to_nchw  # noqa: E402
from explainers.models import affine_normalizer  # noqa: E402
from explainers.superpixels import segment  # noqa: E402

MODELS = ("resnet18", "resnet50", DEFAULT_MODEL, "vit_b_16")
QUICK_MODELS = ("tiny", "tiny_vit")
METHODS = ("vanilla", "gradcam", "scorecam", "integrated_gradients", "smoothgrad", "lrp", "kernel_shap")
FIRST_GRADCAM_GOAL_S = 0.010  # on a GPU
OURS = "ours"


@dataclass
class MethodSettings:
    ig_steps: int = 50
    sg_samples: int = 25
    shap_samples: int = 1000
    shap_segments: int = 50


QUICK_SETTINGS = MethodSettings(ig_steps=8, sg_samples=4, shap_samples=100, shap_segments=16)


def build_subject(name: str, device: torch.device, size: int) -> Subject:
    """The model ``name`` and its input: the seeded ResNets and the tiny CNN as bench/peers.py makes them, a
    registry model with its weights, or a seeded ViT (ViT-B/16, or two blocks at 64 px for ``tiny_vit``)."""
    if name not in ("vit_b_16", "tiny_vit"):
        return subject(name, device, Namespace(resnet_size=size))
    model, side = seeded_vit(name == "tiny_vit", device)
    normalize, _ = affine_normalizer([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    x = normalize(sample_pixels(SAMPLE, side, device)).contiguous()
    layer = default_layer(model, cached_catalogue(model, tuple(x.shape)))
    label = "ViT-B/16, seeded weights" if name == "vit_b_16" else "two-block ViT, seeded"
    return Subject(name, f"{label}, {side} px", model, model, x, layer, None, Settings())


def layer_reshape(s: Subject):
    """pytorch-grad-cam's reshape_transform for ``s``'s layer: None for a [N, C, h, w] map, else the backend's own
    token-to-map layout (``explainers.layers.to_nchw``), so both libraries see the same patch grid."""
    info = next(i for i in cached_catalogue(s.model, tuple(s.x.shape)) if i.name == s.layer)
    if info.layout == NCHW:
        return None, info
    return (lambda tensor: to_nchw(tensor, info.layout, info.token_grid)), info


# ---- each method's call of ours and of its peers, and how their maps are compared ----


def ours_params(s: Subject, method: str, st: MethodSettings) -> dict:
    return {"vanilla": {}, "gradcam": {"layer": s.layer}, "scorecam": {"layer": s.layer},
            "integrated_gradients": {"n_steps": st.ig_steps, "baseline": "zero"},
            "smoothgrad": {"n_samples": st.sg_samples, "noise_level": 0.15, "seed": 0},
            "lrp": {}, "kernel_shap": {"n_samples": st.shap_samples, "n_segments": st.shap_segments,
                                       "segmentation": "slic", "baseline": "mean", "seed": 0}}[method]


def peer_calls(s: Subject, method: str, st: MethodSettings, device: torch.device) -> tuple[dict, dict, dict]:
    """({label: call}, {label: settings}, {label: why not}) for the peers of ``method`` on ``s``."""
    x, target, model = s.x, s.target, s.model
    calls, settings, missing = {}, {}, {}
    captum = importable("captum")
    if method in ("vanilla", "integrated_gradients", "smoothgrad", "kernel_shap") and not captum:
        missing["Captum"] = "captum not installed"
    elif method == "vanilla":
        from captum.attr import Saliency

        calls["Captum Saliency"] = lambda: Saliency(model).attribute(x, target=target, abs=False)
        settings["Captum Saliency"] = "abs=False"
    elif method == "integrated_gradients":
        from captum.attr import IntegratedGradients

        batch = None if device.type == "cuda" else 10
        calls["Captum IntegratedGradients"] = lambda: IntegratedGradients(model).attribute(
            x, target=target, n_steps=st.ig_steps, internal_batch_size=batch)
        settings["Captum IntegratedGradients"] = (f"n_steps={st.ig_steps}, gausslegendre, baselines=0, "
                                                  f"internal_batch_size={batch}")
    elif method == "smoothgrad":
        from captum.attr import NoiseTunnel, Saliency

        sigma = 0.15 * float(x.max() - x.min())
        calls["Captum NoiseTunnel(Saliency)"] = lambda: NoiseTunnel(Saliency(model)).attribute(
            x, nt_type="smoothgrad", nt_samples=st.sg_samples, stdevs=sigma, target=target, abs=False)
        settings["Captum NoiseTunnel(Saliency)"] = (f"nt_samples={st.sg_samples}, stdevs={sigma:.3f} (0.15 × range), "
                                                    "all samples in one batch")
    elif method == "kernel_shap":
        from captum.attr import KernelShap

        bundle = s.explained if s.explained is not s.model else None
        mask = segment(x, "slic", bundle, n_segments=st.shap_segments).unsqueeze(1)
        reference = make_baseline("mean", x, bundle)
        ppe = TUNED_PPE.get(device.type, TUNED_PPE["cpu"])

        def kernel_shap():
            torch.manual_seed(0)  # Captum draws from torch's global generator
            return KernelShap(model).attribute(x, baselines=reference, target=target, feature_mask=mask,
                                               n_samples=st.shap_samples + 1, perturbations_per_eval=ppe)
        calls["Captum KernelShap"] = kernel_shap
        settings["Captum KernelShap"] = (f"feature_mask = our superpixels, the same mean-colour baseline, "
                                         f"n_samples={st.shap_samples + 1}, perturbations_per_eval={ppe}")
    elif method in ("gradcam", "scorecam"):
        name = {"gradcam": "GradCAM", "scorecam": "ScoreCAM"}[method]
        reshape, info = layer_reshape(s)
        extra = f", batch_size={CAM_BATCH}" if method == "scorecam" else ""
        if importable("pytorch_grad_cam"):
            calls[f"pytorch-grad-cam {name}"] = grad_cam_call(s, name, reshape)
            settings[f"pytorch-grad-cam {name}"] = f"layer {s.layer}{extra}" + (
                "; reshape_transform = the backend's to_nchw (class token dropped)" if reshape else "")
        else:
            missing[f"pytorch-grad-cam {name}"] = "grad-cam not installed"
        if not importable("torchcam"):
            missing[f"torchcam {name}"] = "torchcam not installed"
        elif info.layout != NCHW:
            missing[f"torchcam {name}"] = (f"torchcam's CAMs take [N, C, h, w] activations; layer {s.layer} gives "
                                           f"{info.layout} {list(info.shape)} and it has no reshape setting")
        else:
            calls[f"torchcam {name}"] = torchcam_call(s, name)
            settings[f"torchcam {name}"] = f"layer {s.layer}{extra}"
    elif method == "lrp":
        if not importable("zennit"):
            missing["zennit"] = "zennit not installed"
        else:
            calls["zennit EpsilonPlusFlat"], settings["zennit EpsilonPlusFlat"] = zennit_call(s)
    return calls, settings, missing


def zennit_call(s: Subject):
    """zennit's EpsilonPlusFlat (our default composite) with its ResNet canonizer, or SequentialMergeBatchNorm,
    the relevance seeded with the target's logit as ours is (bench/peers_lrp.py's comparison)."""
    from torchvision.models import ResNet
    from zennit.attribution import Gradient
    from zennit.canonizers import SequentialMergeBatchNorm
    from zennit.composites import EpsilonPlusFlat
    from zennit.torchvision import ResNetCanonizer

    x, target, model = s.x, s.target, s.model
    canonizer = ResNetCanonizer if isinstance(model, ResNet) else SequentialMergeBatchNorm

    def call():
        with torch.no_grad():
            logits = model(x)
        seed = torch.zeros_like(logits)
        seed[:, target] = logits[:, target]
        with Gradient(model=model, composite=EpsilonPlusFlat(canonizers=[canonizer()])) as attributor:
            return attributor(x, seed)[1]
    return call, f"{canonizer.__name__}, relevance seeded with the logit, one image per call"


ZENNIT_RESIDUAL = ("zennit residual", "zennit 0.5.1 has no canonizer for EfficientNet-Lite's residual sums: its "
                   "gradient hands each summand the whole relevance; ours shares it in proportion "
                   "(bench/peers_lrp.py)")


def same_map(s: Subject, method: str, label: str, ours, theirs, st: MethodSettings) -> tuple[str, str]:
    """(verdict, agreement text) of our Explanation against a peer's output, by bench/peers.py's rules."""
    if method in ("gradcam", "scorecam"):
        peer = label.split()[0]
        agree = cam_agreement(peer, ours, theirs)
        return verdict(agree, EXPECTED.get((peer, method))), describe(agree)
    if method == "smoothgrad":
        other = explain(s.explained, s.x, method, target=s.target, **{**ours_params(s, method, st), "seed": 1})
        return smoothgrad_same(ours.attribution, other.attribution, theirs)
    if method == "kernel_shap":
        other = explain(s.explained, s.x, method, target=s.target, **{**ours_params(s, method, st), "seed": 1})
        agree = agreement(ours.attribution[:, :1], theirs[:, :1])
        self_corr = agreement(ours.attribution[:, :1], other.attribution[:, :1])["corr"]
        same = "yes" if agree["corr"] >= self_corr - 0.1 else "NO"
        return same, f"{describe(agree)}; ours seed 0 vs seed 1: corr {self_corr:.4f}"
    agree = agreement(ours.attribution, theirs)
    expected = None
    if method == "lrp" and s.name == "efficientnet_lite0":
        expected = ZENNIT_RESIDUAL
        EXPLAINED.setdefault(*expected)
    return verdict(agree, expected), describe(agree)


# ---- one cell: ours and the peers of one method on one model, interleaved with a plain forward ----


def quartiles(samples: list[float]) -> tuple[float, float]:
    if len(samples) < 2:
        return samples[0], samples[0]
    low, _, high = statistics.quantiles(samples, n=4, method="inclusive")
    return low, high


def short_reason(error: Exception) -> str:
    text = str(error).split("; ")[0].strip()
    return f"{type(error).__name__}: {text[:240]}"


def cell(s: Subject, method: str, st: MethodSettings, device: torch.device, runs: int, budget_s: float) -> list[dict]:
    x, target = s.x, s.target
    params = ours_params(s, method, st)

    def ours():
        return explain(s.explained, x, method, target=target, **params)

    def forward():
        with torch.inference_mode():
            return s.model(x)

    base = {"model": s.name, "method": method}
    try:
        ours()  # the probe: a method the backend refuses on this model says why
    except SaliencyError as error:
        return [{**base, "library": OURS, "median_s": None, "note": f"refused: {short_reason(error)}"}]
    calls, settings, missing = peer_calls(s, method, st, device)
    rows = []
    for label, call in list(calls.items()):
        try:
            call()
        except Exception as error:  # a peer that cannot run this model: the cell says so
            missing[label] = f"failed: {short_reason(error)}"
            del calls[label]
    contenders = {"forward": forward, OURS: ours, **calls}
    times, outputs = compare_warm(contenders, runs, device, slow_s=float("inf"), row_budget_s=budget_s,
                                  min_runs=min(runs, 5), memory=tuple(contenders))
    plain = times["forward"]["median_s"]

    def timing(name):
        t = times[name]
        low, high = quartiles(t["samples_s"])
        return {"median_s": t["median_s"], "iqr_s": high - low, "excluded_s": t["median_s"] - plain,
                "runs": t["runs"], "peak_bytes": t.get("peak_bytes"), "forward_s": plain}

    rows.append({**base, "library": OURS, **timing(OURS), "note": ", ".join(f"{k}={v}" for k, v in params.items())
                 or "defaults"})
    for label in calls:
        same, text = same_map(s, method, label, outputs[OURS], outputs[label], st)
        rows.append({**base, "library": label, **timing(label), "ratio": times[OURS]["median_s"] /
                     times[label]["median_s"], "same": same, "agreement": text, "note": settings[label]})
    rows += [{**base, "library": label, "median_s": None, "note": why} for label, why in missing.items()]
    return rows


def first_gradcam(s: Subject, device: torch.device) -> float:
    """Seconds of the first Grad-CAM map on ``s``'s model once it has run three plain forwards."""
    target = s.target  # its logits, computed and kept before the timing
    with torch.inference_mode():
        for _ in range(3):
            s.model(s.x)
    seconds, _ = timed_call(lambda: explain(s.explained, s.x, "gradcam", target=target, layer=s.layer), device)
    return seconds


# ---- IG-200 on a ResNet-152 at the automatic batch size ----


def memory_check(device: torch.device, budget_gb: float | None, steps: int = 200, size: int = 224) -> dict:
    model, normalize = seeded_torchvision("resnet152", device)
    x = normalize(sample_pixels(SAMPLE, size, device)).contiguous()
    free = batching.free_memory(device)
    share = batching.MEMORY_SHARE.get(device.type, batching.MEMORY_SHARE["cpu"])
    budget = int(budget_gb * 2**30) if budget_gb else (None if free is None else int(share * free))
    if budget_gb and device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, budget / total), device)
    with torch.no_grad():
        target = int(model(x).argmax())
    result = {"model": f"resnet152 (seeded, weights=None), {size} px, zero baseline", "steps": steps,
              "free_bytes": free,
              "budget_bytes": budget, "budget_how": f"--memory-budget-gb {budget_gb:g}" if budget_gb else
              f"MEMORY_SHARE {share:g} × the free memory at the start"}
    try:
        peak, how, (seconds, explanation) = peak_memory(lambda: timed_call(
            lambda: explain(model, x, "integrated_gradients", target=target, n_steps=steps, baseline="zero"), device),
            device)
    except Exception as error:
        return {**result, "error": short_reason(error)}
    return {**result, "batch_size_used": explanation.batch_size_used, "peak_bytes": peak, "peak_how": how,
            "seconds": seconds, "row_bytes": batching.row_bytes(model, x, forward_only=False),
            "fits": budget is None or peak <= budget, "notes": [" ".join(n) for n in explanation.notes if n]}


# ---- the report ----

COLUMNS = ["model", "method", "library", "median (ms)", "IQR (ms)", "forward excluded (ms)", "runs",
           "peak memory (MiB)", "ours/this", "same map?", "agreement", "settings or reason"]


def ms(seconds: float | None) -> str:
    return "—" if seconds is None else f"{seconds * 1e3:.3f}"


def cells_table(rows: list[dict]) -> str:
    return markdown_table(COLUMNS, [
        [r["model"], r["method"], r["library"], ms(r["median_s"]), ms(r.get("iqr_s")), ms(r.get("excluded_s")),
         r.get("runs", "—"), mib(r.get("peak_bytes")), "—" if r.get("ratio") is None else f"{r['ratio']:.3f}",
         r.get("same", "—"), r.get("agreement", "—"), r["note"]] for r in rows])


def grid(rows: list[dict], models: list[str], methods: list[str], what) -> str:
    """A TorchCAM-style table: one row per model, one column per method, ``what(cell rows)`` in each cell."""
    lines = []
    for model in models:
        line = [model]
        for method in methods:
            found = [r for r in rows if r["model"] == model and r["method"] == method]
            line.append(what(found) if found else "—")
        lines.append(line)
    return markdown_table(["model", *methods], lines)


def ours_cell(found: list[dict]) -> str:
    ours = next(r for r in found if r["library"] == OURS)
    if ours["median_s"] is None:
        return "— (" + ours["note"].replace("SaliencyError: ", "") + ")"
    return f"{ms(ours['median_s'])} / {ms(ours['excluded_s'])} (IQR {ms(ours['iqr_s'])})"


def ratio_cell(found: list[dict]) -> str:
    peers = [r for r in found if r["library"] != OURS and r.get("ratio") is not None]
    return "; ".join(f"{r['ratio']:.2f} ({r['library']})" for r in peers) or "— (no peer ran)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--size", type=int, default=224, help="input side for the seeded ResNets")
    parser.add_argument("--cell-budget-s", type=float, default=10.0,
                        help="cut a cell's runs to fit in this many seconds (never below 5)")
    parser.add_argument("--quick", action="store_true", help="tiny models, small settings, 3 runs: checks every cell")
    parser.add_argument("--memory", action="store_true", help="add IG-200 on a ResNet-152 at the automatic batch size")
    parser.add_argument("--memory-only", action="store_true", help="only the IG-200 memory check")
    parser.add_argument("--memory-budget-gb", type=float, default=None,
                        help="the memory check's budget (CUDA: also a hard cap on the process); default: the "
                             "backend's share of the free memory")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for the markdown report")
    args = parser.parse_args()
    started = time.time()
    load_start = load_average()
    threads = setup_threads()
    device = torch.device(args.device)
    settings = MethodSettings()
    if args.quick:
        args.models = [m for m in args.models if m not in MODELS] or list(QUICK_MODELS)
        args.runs, args.cell_budget_s, settings = min(args.runs, 3), min(args.cell_budget_s, 2.0), QUICK_SETTINGS
    subjects, rows, firsts = [], [], []
    for name in [] if args.memory_only else args.models:
        s = build_subject(name, device, args.size)
        subjects.append(s)
        firsts.append((s, first_gradcam(s, device)))
        print(f"{s.label}: first Grad-CAM map {firsts[-1][1] * 1e3:.1f} ms", flush=True)
        for method in args.methods:
            new = cell(s, method, settings, device, args.runs, args.cell_budget_s)
            rows += new
            for r in new:
                ratio = "" if r.get("ratio") is None else f"  ours/this {r['ratio']:.2f}  same {r['same']}"
                print(f"  {method:>20}  {r['library']:<32} {ms(r['median_s']):>10} ms{ratio}"
                      + ("" if r["median_s"] is not None else f"  ({r['note']})"), flush=True)
    memory = memory_check(device, args.memory_budget_gb) if args.memory or args.memory_only else None
    import torchvision

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    header = {
        "device": f"{name} ({device})",
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(started)),
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "machine": ", ".join(f"{k} {v}" for k, v in machine(device).items()),
        "versions": f"torch {torch.__version__}, torchvision {torchvision.__version__}, captum "
                    f"{package_version('captum')}, grad-cam {package_version('grad-cam')}, torchcam "
                    f"{package_version('torchcam')}, zennit {package_version('zennit')}",
        "load average at start": load_start,
        "load average at end": load_average(),
        "wall time": f"{time.time() - started:.0f} s",
        "threads": f"{threads} (BENCH_THREADS)",
    }
    if subjects:
        header["runs per cell"] = (f"{args.runs} (cut to fit {args.cell_budget_s:g} s per cell, never below "
                                   f"{min(args.runs, 5)})")
    title = "Latency per model and method" if subjects else "Memory at the automatic batch size"
    lines = [f"# {title} on {name}, ours and the peers' (issue 23)", ""]
    lines += [f"- **{k}**: {v}" for k, v in header.items()]
    if subjects:
        methods = args.methods
        lines += ["", "## Models and inputs", ""]
        lines += [f"- **{s.name}**: {s.label}; input {list(s.x.shape)}; CAM layer `{s.layer}`; target class "
                  f"{s.target} (top-1)" for s in subjects]
        lines += ["", f"## First Grad-CAM map after a warm forward (goal < {FIRST_GRADCAM_GOAL_S * 1e3:g} ms on a "
                  "GPU)", ""]
        lines.append(markdown_table(["model", "first Grad-CAM (ms)", "warm Grad-CAM median (ms)", "goal met"], [
            [s.name, ms(seconds), ms(next((r["median_s"] for r in rows if r["model"] == s.name
                                           and r["method"] == "gradcam" and r["library"] == OURS), None)),
             ("yes" if seconds < FIRST_GRADCAM_GOAL_S else "no") if device.type == "cuda" else "— (not a GPU)"]
            for s, seconds in firsts]))
        lines += ["", "## Ours: median ms per call, forward included / excluded (IQR)", "",
                  grid(rows, [s.name for s in subjects], methods, ours_cell),
                  "", "## Ours / peer, ratio of the medians (forward included)", "",
                  grid(rows, [s.name for s in subjects], methods, ratio_cell),
                  "", "## Every cell", "", cells_table(rows)]
    if memory is not None:
        lines += ["", f"## Memory: IG-{memory['steps']} on {memory['model']} at the automatic batch size", ""]
        if "error" in memory:
            lines.append(f"- **FAILED**: {memory['error']}")
        else:
            lines += [f"- batch size chosen: {memory['batch_size_used']}",
                      f"- peak memory: {mib(memory['peak_bytes'])} MiB ({memory['peak_how']})",
                      f"- budget: {mib(memory['budget_bytes'])} MiB ({memory['budget_how']}); free at the start "
                      f"{mib(memory['free_bytes'])} MiB",
                      f"- within the budget: {'yes' if memory['fits'] else 'NO'}",
                      f"- the backend's estimate per row (explainers.batching.row_bytes): "
                      f"{mib(memory['row_bytes'])} MiB",
                      f"- time: {memory['seconds']:.1f} s"] + [f"- note: {n}" for n in memory["notes"]]
    notes = [
        "Each cell is one interleaved comparison in one process: a plain forward (inference mode), ours and every "
        "peer of the method, each probed once and warmed once, then rounds; CUDA synchronised around each call. "
        "Median and interquartile range (IQR, inclusive quartiles) of the whole call; 'forward excluded' is the "
        "median minus the same cell's median plain forward.",
        "Peak memory: of one warm call, the most held at once above what was in use before it (CUDA: "
        "max_memory_allocated after reset_peak_memory_stats minus memory_allocated; CPU: the resident set's "
        "high-water mark minus the RSS before, after gc.collect and malloc_trim(0)).",
        "Same map?: bench/peers.py's rules: correlation ≥ 0.99 or max |difference| ≤ 1e-3 of the peer's max; CAMs "
        "min-max scaled as the library scales them; SmoothGrad and KernelSHAP draw differently, so the peer must "
        "correlate with ours as well (within 0.1) as two of our seeds do (SmoothGrad: and its norm within "
        "0.8-1.25x of ours).",
        "The first Grad-CAM map is the first explain() call on that model in this process (after three plain "
        "forwards): it pays the layer catalogue's dummy forward and the backend's per-model set-up; the first "
        "model also pays whatever the process initialises on its first explain().",
        "The seeded models' classes and maps mean nothing (no ImageNet weights offline); the timings and the "
        "agreement still hold.",
    ]
    notes += [f"Expected difference '{short}': {text}" for short, text in EXPLAINED.items()]
    lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(started))
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"gpu-{device.type}-{stamp}.md"
    path.write_text("\n".join(lines) + "\n")
    print(f"\nwritten: {path}")


if __name__ == "__main__":
    main()
