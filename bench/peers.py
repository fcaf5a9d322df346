"""Ours against every peer library, one process, same input and settings, interleaved (issue 10).

    .venv/bin/python bench/peers.py [--device cuda] [--model resnet50 efficientnet_lite0] [--repeats 5] [--quick]
                                    [--out DIR]

Rows: explainers.explain against Captum (Saliency, InputXGradient, IntegratedGradients-50 at
internal_batch_size=10, NoiseTunnel SmoothGrad-25, GuidedBackprop, Occlusion with the same window and stride,
LayerGradCam), against pytorch-grad-cam (GradCAM, GradCAM++, ScoreCAM at batch_size 64, EigenCAM) and against
torchcam (each of its CAMs that we also have); explain_many of the one-pass set against the separate explain()
calls; explain_many with 2 targets against 1 for a few methods; and, one module each (bench/peers_*.py), LRP
against zennit, DeepLIFT and DeepLIFT-SHAP against Captum, GradientSHAP against Captum, KernelSHAP and LIME against
Captum at its tuned and its default perturbations_per_eval, extremal perturbations against TorchRay, Ablation-CAM
and FullGrad against pytorch-grad-cam, Blur IG, Guided IG and XRAI against PAIR's saliency, LeGrad against torchcam,
Chefer's generic attention explainability against the authors' recipe, AttnLRP against lxt (the transformer rows
build their own seeded ViT-B/16-sized models), Grad-CAM on a detected box and on a segmented region against
pytorch-grad-cam's targets (seeded Faster R-CNN and LR-ASPP, built once). Every row's
goal is ours/peer ≤ 1.0, or ≤ 0.5 against a peer's one-perturbation-per-pass default (the row says so).

Each contender gets one untimed warm-up, whose output is kept to check that ours and the peer give the same map;
then ``--repeats`` interleaved runs (ours, peer, ours, peer, ...), medians compared. A row whose warm-up call
took over ``--slow-s`` seconds has its warm-ups as its one timed run (the table says so); ``--row-budget-s``
cuts the runs of a row to fit that many seconds, never below 3. ``--quick`` is a tiny seeded CNN at 64 px with
small settings and one run: it checks that every row works, not how fast anything is.

resnet50: the ImageNet weights are not cached on this offline machine, so it is a seeded ResNet-50 with
BatchNorm statistics calibrated on noise, fed the sample resized to ``--resnet-size`` px (the table says so).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # pytorch-grad-cam's ScoreCAM draws a progress bar per batch

import peers_ablation_fullgrad  # noqa: E402
import peers_attnlrp  # noqa: E402
import peers_chefer  # noqa: E402
import peers_deeplift  # noqa: E402
import peers_dense  # noqa: E402
import peers_expected  # noqa: E402
import peers_extremal  # noqa: E402
import peers_legrad  # noqa: E402
import peers_lrp  # noqa: E402
import peers_pair  # noqa: E402
import peers_surrogate  # noqa: E402
import torch  # noqa: E402
from common import (  # noqa: E402
    RESULTS,
    ROOT,
    agreement,
    compare_warm,
    load_average,
    machine,
    markdown_table,
    mib,
    minmax,
    package_version,
    setup_threads,
)
from limit import measure_limit, summary_table  # noqa: E402
from peerkit import (  # noqa: E402
    CAM_BATCH,
    EXPECTED,
    EXPLAINED,
    GRAD_CAM_PEERS,
    LIMIT_GOAL,
    PEER_NAMES,
    SAME_CORR,
    SAME_MAX_REL,
    TORCHCAM_PEERS,
    Subject,
    cam_agreement,
    describe,
    grad_cam_call,
    importable,
    make_row,
    missing_row,
    ours_call,
    smoothgrad_same,
    subject,
    torchcam_call,
    upsample,
    verdict,
)

from explainers import DEFAULT_MODEL, explain, explain_many, get_method  # noqa: E402
from explainers.many import shared_methods  # noqa: E402

# ---- the comparisons ----


def captum_gradient_rows(s: Subject, run, device) -> list[dict]:
    from captum.attr import GuidedBackprop, InputXGradient, IntegratedGradients, NoiseTunnel, Occlusion, Saliency

    x, target, model, st = s.x, s.target, s.model, s.settings
    sigma = 0.15 * float(x.max() - x.min())
    ppe = 64 if device.type == "cuda" else 16
    channels = x.shape[1]
    cases = [
        ("vanilla vs Saliency", "vanilla", {},
         lambda: Saliency(model).attribute(x, target=target, abs=False), "abs=False"),
        ("input_x_gradient vs InputXGradient", "input_x_gradient", {},
         lambda: InputXGradient(model).attribute(x, target=target), ""),
        (f"integrated_gradients vs IntegratedGradients, {st.ig_steps} steps", "integrated_gradients",
         {"n_steps": st.ig_steps, "baseline": "zero"},
         lambda: IntegratedGradients(model).attribute(x, target=target, n_steps=st.ig_steps, internal_batch_size=10),
         "gausslegendre, zero baseline, internal_batch_size=10 (ours: its default batch size)"),
        (f"smoothgrad vs NoiseTunnel(Saliency), {st.sg_samples} samples", "smoothgrad",
         {"n_samples": st.sg_samples, "noise_level": 0.15, "seed": 0},
         lambda: NoiseTunnel(Saliency(model)).attribute(x, nt_type="smoothgrad", nt_samples=st.sg_samples,
                                                        stdevs=sigma, target=target, abs=False),
         f"stdevs={sigma:.3f} (0.15 × range), nt_samples_batch_size=None (all at once)"),
        ("guided_backprop vs GuidedBackprop", "guided_backprop", {},
         lambda: GuidedBackprop(model).attribute(x, target=target), ""),
        (f"occlusion vs Occlusion, window {st.window} stride {st.stride}", "occlusion",
         {"window": st.window, "stride": st.stride, "baseline": "zero"},
         lambda: Occlusion(model).attribute(x, sliding_window_shapes=(channels, st.window, st.window),
                                            strides=(channels, st.stride, st.stride), baselines=0, target=target,
                                            perturbations_per_eval=ppe),
         f"baselines=0, perturbations_per_eval={ppe}"),
    ]
    rows = []
    for case, method, params, peer, peer_settings in cases:
        times, outputs = run({"ours": lambda m=method, p=params: explain(s.explained, x, m, target=target, **p),
                              "captum": peer})
        ours_map, their_map = outputs["ours"].attribution, outputs["captum"]
        if ours_map.shape != their_map.shape:  # a one-channel map against Captum's per-channel copies
            ours_map, their_map = ours_map.mean(1), their_map.mean(1)
        agree = agreement(ours_map, their_map)
        expected = None
        text = describe(agree)
        if method == "smoothgrad":
            other = explain(s.explained, x, method, target=target, **{**params, "seed": 1}).attribution
            same, text = smoothgrad_same(ours_map, other, their_map)
        else:
            if method == "guided_backprop" and not s.only_nn_relu:
                expected = EXPECTED[("captum", "guided_backprop")]
            same = verdict(agree, expected)
        rows.append(make_row(s, "Captum", case, times, "captum", peer_settings, same, text))
    return rows


def cam_rows(s: Subject, run, methods_available) -> list[dict]:
    """Each CAM we have against every peer that has it, all of them interleaved in one comparison per method."""
    pytorch_grad_cam, torchcam = importable("pytorch_grad_cam"), importable("torchcam")
    from captum.attr import LayerAttribution, LayerGradCam

    x, target, model, layer, module = s.x, s.target, s.model, s.layer, s.layer_module
    size = tuple(x.shape[-2:])

    def captum_layer_gradcam():
        layer_map = LayerGradCam(model, module).attribute(x, target=target, relu_attributions=True)
        return LayerAttribution.interpolate(layer_map, size, interpolate_mode="bilinear")

    rows = []
    for method in ("gradcam", "gradcam_pp", "xgradcam", "layercam", "eigencam", "scorecam", "cam"):
        if method not in methods_available:
            continue
        contenders = {"ours": lambda m=method: explain(s.explained, x, m, target=target, layer=layer)}
        if method == "gradcam":
            contenders["captum"] = captum_layer_gradcam
        if method in GRAD_CAM_PEERS and pytorch_grad_cam:
            contenders["pytorch-grad-cam"] = grad_cam_call(s, GRAD_CAM_PEERS[method])
        if method in TORCHCAM_PEERS and torchcam and (method != "cam" or s.fc):
            contenders["torchcam"] = torchcam_call(s, TORCHCAM_PEERS[method])
        if len(contenders) == 1:
            continue
        times, outputs = run(contenders)
        ours = outputs["ours"]
        for peer in [p for p in contenders if p != "ours"]:
            theirs = outputs[peer]
            if peer == "captum":
                agree, case = agreement(ours.attribution, theirs), "LayerGradCam (upsampled bilinearly)"
                settings = "relu_attributions=True, LayerAttribution.interpolate bilinear"
            elif peer == "pytorch-grad-cam":
                case, settings = GRAD_CAM_PEERS[method], f"batch_size={CAM_BATCH}" if method == "scorecam" else ""
                agree = cam_agreement(peer, ours, theirs)
                if method == "eigencam":
                    # the principal component's sign is arbitrary there; ours is oriented
                    raw = explain(s.explained, x, method, target=target, layer=layer, relu=False).layer_attribution
                    agree = max((agreement(minmax(upsample((sign * raw[0]).clamp_min(0), size)[0, 0]), theirs[0])
                                 for sign in (1, -1)), key=lambda a: a["corr"])
                    settings = "sign of the component free (best of ±)"
            else:
                case = TORCHCAM_PEERS[method]
                settings = f"batch_size={CAM_BATCH}" if method == "scorecam" else (
                    f"fc_layer={s.fc}" if method == "cam" else "")
                agree = cam_agreement(peer, ours, theirs)
            rows.append(make_row(s, PEER_NAMES[peer], f"{method} vs {case}", times, peer, settings or "layer " + layer,
                                 verdict(agree, EXPECTED.get((peer, method))), describe(agree)))
    if not torchcam:
        rows.append(missing_row(s, "torchcam", "every torchcam CAM", "torchcam not installed"))
    if not pytorch_grad_cam:
        rows.append(missing_row(s, "pytorch-grad-cam", "every pytorch-grad-cam CAM", "grad-cam not installed"))
    return rows


def worst_agreement(pairs) -> dict:
    """The least similar of several (ours, reference) map pairs."""
    agreements = [agreement(a, b) for a, b in pairs]
    return {"corr": min(a["corr"] for a in agreements), "max_rel": max(a["max_rel"] for a in agreements)}


def many_rows(s: Subject, run, two_targets: bool) -> list[dict]:
    x, target, layer, st = s.x, s.target, s.layer, s.settings
    methods = list(shared_methods())

    def separate():
        return {m: explain(s.explained, x, m, target, layer=layer if get_method(m).needs_layer else None, seed=0)
                for m in methods}

    times, outputs = run({"ours": lambda: explain_many(s.explained, x, methods, [target], layer=layer),
                          "separate": separate})
    agree = worst_agreement((outputs["ours"][(m, target)].attribution, outputs["separate"][m].attribution)
                            for m in methods)
    rows = [make_row(s, "explain_many", f"one-pass set ({len(methods)} methods) vs separate explain() calls", times,
                     "separate", ", ".join(methods), verdict(agree), describe(agree) + " (worst method)")]
    if not two_targets:
        return rows
    groups = [
        ("one-pass CAM set", [m for m in methods if get_method(m).needs_layer], {}),
        ("smoothgrad", ["smoothgrad"], {"smoothgrad": {"n_samples": st.sg_samples}}),
        ("integrated_gradients", ["integrated_gradients"],
         {"integrated_gradients": {"n_steps": st.ig_steps, "baseline": "zero"}}),
        ("scorecam", ["scorecam"], {}),
        ("occlusion", ["occlusion"], {"occlusion": {"window": st.window, "stride": st.stride}}),
    ]
    for label, group, params in groups:
        group = [m for m in group if m in METHODS_AVAILABLE]
        if not group:
            continue
        layer_arg = layer if any(get_method(m).needs_layer for m in group) else None
        times, outputs = run({
            "ours": lambda g=group, p=params, la=layer_arg: explain_many(s.explained, x, g, ["top1", "top2"],
                                                                         layer=la, params=p),
            "one target": lambda g=group, p=params, la=layer_arg: explain_many(s.explained, x, g, ["top1"],
                                                                               layer=la, params=p),
        })
        agree = worst_agreement((outputs["ours"][(m, "top1")].attribution,
                                 outputs["one target"][(m, "top1")].attribution) for m in group)
        settings = ", ".join(group) + (f" {params}" if params else "")
        rows.append(make_row(s, "2 vs 1 target", f"explain_many {label}: targets top1+top2 vs top1", times,
                             "one target", settings, verdict(agree), describe(agree) + " (top1's map)"))
    return rows


METHODS_AVAILABLE: set[str] = set()
# the comparisons of the propagation, expected-gradient, surrogate, extremal, Ablation-CAM/FullGrad, PAIR path and
# transformer methods, one module each (a module's name after "peers_" is its --only section)
FAMILIES = (peers_lrp, peers_deeplift, peers_expected, peers_surrogate, peers_extremal, peers_ablation_fullgrad,
            peers_pair, peers_legrad, peers_chefer, peers_attnlrp, peers_dense)


# ---- the report ----

COLUMNS = ["model", "peer", "comparison", "ours (median s)", "peer (median s)", "ratio ours/peer", "goal", "met",
           "runs", "same map?", "agreement", "peer settings", "passes per image", "limit (s)", "ours/limit",
           "limit goal", "limit met", "ours peak (MiB)"]


def table(rows: list[dict]) -> str:
    def seconds(v):
        return "—" if v is None else f"{v:.4f}"

    def ratio(v):
        return "—" if v is None else f"{v:.3f}"

    return markdown_table(COLUMNS, [[r["model"], r["kind"], r["case"], seconds(r["ours_s"]), seconds(r["peer_s"]),
                                     ratio(r["ratio"]), f"≤ {r['goal']:.1f}", r["met"], r["runs"], r["same"],
                                     r["agreement"], r["peer"], "—" if r.get("passes") is None else str(r["passes"]),
                                     "—" if r.get("limit_s") is None else f"{r['limit_s']:.6f}",
                                     ratio(r.get("limit_ratio")),
                                     "—" if r.get("limit_goal") is None else f"≤ {r['limit_goal']:.1f}",
                                     r.get("limit_met", "—"), mib(r.get("ours_peak"))] for r in rows])


def write_report(path: Path, rows: list[dict], header: dict, subjects: list[Subject], notes: list[str]) -> None:
    lines = ["# Saliency Studio against its peers (issue 10)", ""]
    lines += [f"- **{k}**: {v}" for k, v in header.items()]
    lines += ["", "## Models and inputs", ""]
    for s in subjects:
        lines.append(f"- **{s.name}**: {s.label}; input {list(s.x.shape)}; CAM layer `{s.layer}`; target class "
                     f"{s.target} (top-1); IG {s.settings.ig_steps} steps, SmoothGrad {s.settings.sg_samples} "
                     f"samples, occlusion window {s.settings.window} stride {s.settings.stride}")
    limits = [(s, s.limit) for s in subjects if s.limit is not None]
    if limits:
        lines += ["", "## The machine's limit (bench/limit.py, measured at the start of this run)", "",
                  summary_table(limits)]
    lines += ["", "## Results", "", table(rows), "", "## Notes", ""] + [f"- {n}" for n in notes]
    path.write_text("\n".join(lines) + "\n")


def git_state() -> str:
    """The commit measured, and which files of the backend or the benches differed from it (others edit the tree
    while benches run)."""
    import subprocess

    def git(*argv):
        return subprocess.run(["git", *argv], cwd=ROOT, capture_output=True, text=True).stdout

    changed = [line[3:] for line in git("status", "--porcelain", "--", "explainers", "bench").splitlines() if line]
    return f"commit {git('rev-parse', '--short', 'HEAD').strip() or 'unknown'}" + (
        f", uncommitted changes in {', '.join(changed)}" if changed else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", nargs="+", default=["resnet50", DEFAULT_MODEL])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="a tiny CNN, small settings, 1 run: checks every row")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for the markdown report")
    parser.add_argument("--resnet-size", type=int, default=128, help="input side for the seeded resnet50")
    parser.add_argument("--slow-s", type=float, default=60.0,
                        help="a row whose warm-up call takes longer has its warm-ups as its one timed run")
    parser.add_argument("--row-budget-s", type=float, default=None,
                        help="cut a row's runs to fit in this many seconds (never below 3)")
    parser.add_argument("--only", nargs="+", default=None, metavar="SECTION",
                        choices=["captum", "cams", "many", *(f.__name__.removeprefix("peers_") for f in FAMILIES)],
                        help="run only these sections (default: all): captum, cams, many, or a family module's name "
                             "(lrp, deeplift, expected, surrogate, extremal)")
    parser.add_argument("--sections-on", nargs="*", default=[], metavar="MODEL=SECTION,...",
                        help="restrict a model to these sections (within --only), e.g. resnet18=cams: one run can "
                             "give each model only the rows the issue asks of it")
    parser.add_argument("--two-targets-on", nargs="*", default=None,
                        help="models that get the 2-vs-1-target rows (default: every model)")
    parser.add_argument("--limit-budget-s", type=float, default=60.0,
                        help="seconds per model for measuring the machine's limit at the start (bench/limit.py); "
                             "0 skips it and the limit columns")
    parser.add_argument("--limit-repeats", type=int, default=3, help="interleaved rounds per batch size for the limit")
    args = parser.parse_args()
    sections_on = {model: set(sections.split(",")) for model, _, sections in
                   (item.partition("=") for item in args.sections_on)}
    started = time.time()
    load_start = load_average()
    code = git_state()  # before anything is imported and timed, while the tree is the one measured
    threads = setup_threads()
    device = torch.device(args.device)
    if args.quick:
        args.model, args.repeats, args.limit_budget_s = ["tiny"], 1, min(args.limit_budget_s, 5.0)
    from explainers import METHODS

    METHODS_AVAILABLE.update(METHODS)

    def run(contenders):
        times, outputs = compare_warm(contenders, args.repeats, device, slow_s=args.slow_s,
                                      row_budget_s=args.row_budget_s, memory=("ours",))
        times["ours"]["call"] = ours_call(outputs["ours"])  # what the limit column needs
        return times, outputs

    subjects, rows = [], []
    for name in args.model:
        s = subject(name, device, args)
        subjects.append(s)
        print(f"{s.label}: target {s.target}, layer {s.layer}", flush=True)
        if args.limit_budget_s > 0:
            s.limit = measure_limit(s.model, s.x, device, args.limit_budget_s, args.limit_repeats, target=s.target)
            print(f"  limit: forward {s.limit.forward_s_per_row * 1e3:.3f} ms/row ({s.limit.forward_variant}), "
                  f"backward {s.limit.backward_s_per_row * 1e3:.3f} ms/row ({s.limit.backward_variant})", flush=True)
        two_targets = args.two_targets_on is None or name in args.two_targets_on
        sections = {"captum": lambda s=s: captum_gradient_rows(s, run, device),
                    "cams": lambda s=s: cam_rows(s, run, METHODS_AVAILABLE),
                    "many": lambda s=s, two=two_targets: many_rows(s, run, two),
                    **{family.__name__.removeprefix("peers_"): lambda s=s, family=family: family.rows(s, run, device)
                       for family in FAMILIES}}
        own = sections_on.get(s.name)
        for name, section in sections.items():  # one at a time, each printing its rows as soon as they are measured
            if (args.only is not None and name not in args.only) or (own is not None and name not in own):
                continue
            new = section()
            rows += new
            for r in new:
                ratio = "—" if r["ratio"] is None else f"{r['ratio']:.3f}"
                limit = "—" if r["limit_ratio"] is None else f"{r['limit_ratio']:.2f}"
                print(f"  {r['kind']:>16}  {r['case']:<60} ratio {ratio:>6}  same {r['same']}  runs {r['runs']}  "
                      f"ours/limit {limit}  peak {mib(r['ours_peak'])} MiB", flush=True)
    import torchvision

    header = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(started)),
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "machine": ", ".join(f"{k} {v}" for k, v in machine(device).items()),
        "versions": f"torch {torch.__version__}, torchvision {torchvision.__version__}, captum "
                    f"{package_version('captum')}, grad-cam {package_version('grad-cam')}, torchcam "
                    f"{package_version('torchcam')}, zennit {package_version('zennit')}, torchray "
                    f"{package_version('torchray')}, lxt {package_version('lxt')}, saliency "
                    f"{package_version('saliency')}",
        "code": code,
        "load average at start": load_start,
        "load average at end": load_average(),
        "wall time": f"{time.time() - started:.0f} s",
        "threads": f"{threads} (BENCH_THREADS)",
    }
    notes = [
        "Timing: one untimed warm-up per contender, then interleaved runs (ours, peer, ...); medians. "
        f"A row whose warm-up call took over {args.slow_s:g} s has its warm-ups as its single timed run "
        "('warm-up timed'): such a call is hundreds of passes and warms itself in its first few."
        + (f" Rows are cut to fit {args.row_budget_s:g} s of runs (at least 3 runs)." if args.row_budget_s else ""),
        "All the peers of one CAM method run in the same interleaved comparison, so their rows share our times.",
        f"Same map?: 'yes' when the correlation with the peer's map is ≥ {SAME_CORR} or the max |difference| is ≤ "
        f"{SAME_MAX_REL:g} of the peer's max. CAM libraries return min-max scaled maps (pytorch-grad-cam at input "
        "resolution, torchcam at the layer's), so ours is min-max scaled the same way first. SmoothGrad draws "
        "different noise in each library: it is 'yes' when Captum's map correlates with ours at least as well "
        "(within 0.1) as two of our own draws (seeds 0 and 1) do, and its norm is within 0.8-1.25x of ours (on a "
        "seeded model the gradients are noise and even our own two draws hardly correlate, so the norm is what "
        "is checked there).",
        "Ratios above 1 are rows where ours is slower than the peer; 2-vs-1 rows compare explain_many with two "
        "targets against the same call with one (the goal ≤ 1.0 means the second target is free).",
        "Torch threads come from BENCH_THREADS (default 1), as in the other benches; the machine is shared.",
        "Limit: the machine's best time per row of a forward pass (inference mode) and of a forward+backward to the "
        "input, over batch sizes, memory layouts and (forward only) BatchNorm folded into the convolutions, measured "
        f"by bench/limit.py's measure_limit at the start of this run ({args.limit_budget_s:g} s per model, "
        f"{args.limit_repeats} rounds per batch size; the table "
        "above). A row's limit is its call's passes per image from the registry (explainers.get_method(m).cost, at "
        "the layer's channel count for Score-CAM) times the images: (forward − backward) × the forward rate + "
        "backward × the forward+backward rate, the forward count including the forward under each backward. "
        f"ours/limit ≤ {LIMIT_GOAL} is the goal for multi-pass rows (more than one forward and one backward); a "
        "one-pass row's limit is the batch-of-many rate, which one image cannot reach, so it gets no goal. "
        "A ratio below 1 means the call did less than its nominal passes: Grad-CAM-style CAMs backpropagate "
        "only down to their layer, not to the input (on efficientnet_lite0's _head_act, 5 interleaved runs: ours "
        "Grad-CAM 95 ms, ours vanilla 181 ms, the limit's forward+backward to the input 186 ms), Score-CAM skips "
        "constant channels, and the limit is only as good as its budget let it measure (large batches may not "
        "fit) and the load while it ran (it is measured once, before the rows). Rows with no one "
        "explain() call of ours (explain_many) or on a model the limit was not measured for (the transformers, "
        "the detector) have none.",
        "Peak memory (ours): measured during our warm-up call, as the most held at once above what was in use "
        "just before it. CPU: the process's resident set (RSS) high-water mark (VmHWM, reset through "
        "/proc/self/clear_refs, or /proc/self/statm sampled every 1 ms where that is refused) minus the RSS "
        "before, after gc.collect() and malloc_trim(0) hand freed pages back; it counts every allocation of the "
        "process. CUDA: torch.cuda.max_memory_allocated after reset_peak_memory_stats minus memory_allocated "
        "before (tensors only).",
    ]
    if any(s.name == "resnet50" for s in subjects):
        notes.append("resnet50 has seeded weights (calibrated BatchNorm statistics): its ImageNet weights are not "
                     "cached on this offline machine, so its top-1 class and its maps mean nothing; timings and "
                     "agreement still hold. Score-CAM skips fewer constant channels on it than on real weights.")
    notes += [f"Expected difference '{short}': {text}" for short, text in EXPLAINED.items()]
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(started))
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"peers-{device.type}-{stamp}.md"
    write_report(path, rows, header, subjects, notes)
    print()
    print(table(rows))
    print(f"\nwritten: {path}")


if __name__ == "__main__":
    main()
