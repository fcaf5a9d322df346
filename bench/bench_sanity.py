"""A full cascading model randomisation on the default model: 19 steps, six methods plus the two controls.

    .venv/bin/python bench/bench_sanity.py [--threads 1] [--repeats 1] [--image assets/samples/cat.png]
                                           [--device cpu|cuda] [--batch-size N] [--profile [--batch-sizes 16,4]]
                                           [--limit-budget-s 45]

The issue's case (issue 8, "Benchmark"): vanilla, SmoothGrad-10, IG-16, guided backprop, Grad-CAM and Guided
Grad-CAM on EfficientNet-Lite0, one 224x224 image; goal under 30 s on the 2-core CPU (issue 23; issue 8 asked 60 s).
The report gives the wall time of each full cascade, the passes per step (from the registry's declared costs;
vanilla, guided backprop, Grad-CAM and Guided Grad-CAM come from the step's one shared pass: one forward, one plain
and one guided backward), one step of the cascade against the same six methods through ``explain()`` one by one
(what the sharing saves), and the load average, because this machine is shared.

``--profile`` says where a step's time goes: each of the step's calls (the shared pass, then every other method)
timed alone on the original model, interleaved with the whole step (bench/common.py ``compare``), medians over
``--profile-repeats``; what the whole step costs beyond its calls is the comparison of the maps (four similarity
measures per map) and the thumbnails. With ``--batch-sizes`` the step is also timed at each batch size given,
interleaved, against the default.

After the cascades, the machine's limit on the model is measured (bench/limit.py, ``--limit-budget-s``): each
step's passes at the best measured time per row of a forward and of a forward+backward give the least time the
whole cascade can take, and the report gives ours/limit; and the same at the best rates of the model as it is
(its weights untouched, the input in either layout), which is what the gradient methods run on.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch
from common import RESULTS, ROOT, compare, setup_threads
from limit import measure_limit

from explainers import explain, get_method, load_model, open_image
from explainers.many import shared_methods
from explainers.trust import sanity
from explainers.trust.similarity import PreparedMap

METHODS = [
    "vanilla",
    sanity.MethodSpec("smoothgrad", {"n_samples": 10}),
    sanity.MethodSpec("integrated_gradients", {"n_steps": 16}),
    "guided_backprop",
    "gradcam",
    "guided_gradcam",
]
GOAL_S = 30.0
# the controls alone: model-free maps, plus what every call of the cascade costs whatever its methods (the
# target's forward, the copy, a prediction pass, the comparisons of two maps)
CONTROLS_ALONE = "controls (sobel, random) and the fixed cost"
COMPARISONS = "a step's maps compared with the original's, and thumbnailed"


def passes_per_step(bundle) -> dict[str, str]:
    """Each method's declared passes per image, or the shared pass it comes from."""
    out = {}
    for spec in sanity.method_specs(METHODS, sanity.CONTROLS):
        info = get_method(spec.method)
        passes = info.passes(dict(spec.params), channels=bundle.layer_entry().channels)
        if spec.method in shared_methods():
            out[spec.key] = "the step's shared pass (1 forward + 1 plain and 1 guided backward, for all four)"
        elif spec.method in sanity.CONTROLS:
            out[spec.key] = "model-free (0 passes)"
        else:
            out[spec.key] = str(passes)
    return out


def step_limit(limit, bundle, rows: int) -> dict[str, float]:
    """{what: seconds}: the least time each part of one cascade step can take at ``limit``'s rates (bench/limit.py's
    measured best time per row of a forward and of a forward+backward), from the registry's passes per image. The
    shared pass is one forward, then a plain and a guided backward, each costing a forward+backward less its
    forward; the model-free controls cost nothing."""
    channels = bundle.layer_entry().channels
    parts, shared = {}, False
    for spec in sanity.method_specs(METHODS, sanity.CONTROLS):
        if spec.method in sanity.CONTROLS:
            continue
        if spec.method in shared_methods():
            shared = True
            continue
        parts[spec.key] = limit.seconds(get_method(spec.method).passes(dict(spec.params), channels=channels), rows)
    if shared:
        parts["shared pass"] = rows * (2 * limit.backward_s_per_row - limit.forward_s_per_row)
    return parts


def profile_step(bundle, inputs, device, repeats: int, batch_size: int | None, batch_sizes: list[int]) -> dict:
    """Medians (s) of one cascade step (steps=0: every method on the original model) and of each of its calls
    alone, interleaved; and of the step at each of ``batch_sizes``."""
    specs = sanity.method_specs(METHODS, sanity.CONTROLS)
    shared = [s for s in specs if s.method in shared_methods()]
    alone = {CONTROLS_ALONE: [s for s in specs if s.method in sanity.CONTROLS]}
    if shared:
        alone["shared pass (" + ", ".join(s.key for s in shared) + ")"] = shared
    alone.update({s.key: [s] for s in specs if s.method not in shared_methods() and s.method not in sanity.CONTROLS})

    def step(methods, size=batch_size):
        return lambda: sanity.model_randomisation(bundle, inputs, methods, controls=(), steps=0, batch_size=size)

    # what a step spends beside its passes: each of its maps made comparable (ranks, HOG) and compared with the
    # original's on the four measures, and its thumbnail; on maps of this image (a gradient and noisy copies)
    with torch.inference_mode():
        top = int(bundle.model(inputs).argmax())
    gradient = explain(bundle, inputs, "vanilla", top).attribution[0]
    generator = torch.Generator().manual_seed(0)
    maps = [gradient + 0.1 * k * gradient.std() * torch.randn(gradient.shape, generator=generator)
            for k in range(len(specs))]
    reference = PreparedMap(sanity.signed_map(gradient))

    def comparisons():
        for attribution in maps:
            prepared = PreparedMap(sanity.signed_map(attribution))
            reference.compare(prepared)
            sanity.thumbnail(prepared.values, sanity.THUMBNAIL_SIZE)

    contenders = {"whole step": step(specs)}
    contenders.update({name: step(methods) for name, methods in alone.items()})
    contenders[COMPARISONS] = comparisons
    contenders.update({f"whole step, batch size {size}": step(specs, size) for size in batch_sizes})
    times = compare(contenders, repeats, device)
    return {name: t["median_s"] for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: BENCH_THREADS or 1)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--image", default=str(ROOT / "assets" / "samples" / "cat.png"))
    parser.add_argument("--device", default=None, choices=("cpu", "cuda"))
    parser.add_argument("--batch-size", type=int, default=None, help="the cascade's rows per pass (default: the "
                        "backend's for this device)")
    parser.add_argument("--profile", action="store_true", help="time one step's calls alone (see above)")
    parser.add_argument("--profile-repeats", type=int, default=3)
    parser.add_argument("--batch-sizes", default="", help="with --profile: comma-separated batch sizes to time "
                        "the step at, against the default")
    parser.add_argument("--limit-budget-s", type=float, default=45.0, help="seconds to measure the machine's "
                        "limit on the model (bench/limit.py) after the cascades; 0 skips it")
    args = parser.parse_args()
    if args.threads is not None:
        os.environ["BENCH_THREADS"] = str(args.threads)
    threads = setup_threads()
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    bundle = load_model("efficientnet_lite0", device=device)
    inputs = bundle.preprocess(open_image(args.image))
    load_before = os.getloadavg()

    sanity.model_randomisation(bundle, inputs, ["vanilla"], steps=0)  # warm-up: allocator, kernels
    # one step, shared (the cascade's runner on the original model) against explain() per method
    started = time.perf_counter()
    sanity.model_randomisation(bundle, inputs, METHODS, steps=0)
    shared_step_s = time.perf_counter() - started
    started = time.perf_counter()
    target = int(bundle.model(inputs).argmax())
    for spec in sanity.method_specs(METHODS, sanity.CONTROLS):
        explain(bundle, inputs, spec.method, target, seed=42, **dict(spec.params))
    separate_step_s = time.perf_counter() - started

    profile = {}
    if args.profile:
        sizes = [int(size) for size in args.batch_sizes.split(",") if size.strip()]
        profile = profile_step(bundle, inputs, device, args.profile_repeats, args.batch_size, sizes)

    runs = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        result = sanity.model_randomisation(bundle, inputs, METHODS, batch_size=args.batch_size)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        runs.append(time.perf_counter() - started)
    load_after = os.getloadavg()
    steps = len(result.steps) - 1
    limit = parts = as_is = None
    if args.limit_budget_s > 0:  # after the cascades, so they run on the machine as it was when they started
        limit = measure_limit(bundle.model, inputs, device, args.limit_budget_s)
        parts = step_limit(limit, bundle, len(inputs))
        as_is = step_limit(limit.as_is(), bundle, len(inputs))
    cascade_limit_s = None if parts is None else sum(parts.values()) * (steps + 1)
    as_is_s = None if as_is is None else sum(as_is.values()) * (steps + 1)
    verdict = sanity.verdict(result)
    payload = {
        "title": "bench_sanity",
        "device": str(device),
        "threads": threads,
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
        "image": os.path.relpath(args.image, ROOT),
        "steps": steps,
        "methods": [m.key if isinstance(m, sanity.MethodSpec) else m for m in METHODS],
        "params": {m.key: dict(m.params) for m in METHODS if isinstance(m, sanity.MethodSpec)},
        "passes_per_step": passes_per_step(bundle),
        "batch_size": args.batch_size,
        "cascade_s": runs,
        "goal_s": GOAL_S,
        "one_step_shared_s": shared_step_s,
        "one_step_explain_each_s": separate_step_s,
        "profile_one_step_median_s": profile,
        "limit_per_row_s": None if limit is None else {
            "forward": limit.forward_s_per_row, "forward_variant": limit.forward_variant,
            "forward_backward": limit.backward_s_per_row, "forward_backward_variant": limit.backward_variant},
        "limit_one_step_s": parts,
        "limit_cascade_s": cascade_limit_s,
        "limit_model_as_is_one_step_s": as_is,
        "limit_model_as_is_cascade_s": as_is_s,
        "load_average_before": load_before,
        "load_average_after": load_after,
        "curves_spearman_abs": {k: m.curve("spearman_abs") for k, m in result.methods.items()},
        "verdict": verdict.to_dict(),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"bench_sanity-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(payload, indent=2, allow_nan=False))

    print(f"bench_sanity  (torch {torch.__version__}, {threads} thread(s), {device}, load average "
          f"{load_before[0]:.2f} -> {load_after[0]:.2f})")
    for key, passes in payload["passes_per_step"].items():
        print(f"  {key:<22} {passes}")
    best = min(runs)
    print(f"full cascade: {steps} steps + the original, {len(result.methods)} maps per step")
    print(f"  wall time: {', '.join(f'{t:.1f} s' for t in runs)}  (best {best:.1f} s; goal < {GOAL_S:.0f} s: "
          f"{'met' if best < GOAL_S else 'MISSED'})")
    print(f"  one step: {shared_step_s:.2f} s in the cascade's runner, {separate_step_s:.2f} s through explain() "
          "method by method")
    if parts is not None:
        print(f"  the limit: forward {limit.forward_s_per_row * 1e3:.1f} ms/row ({limit.forward_variant}), "
              f"forward+backward {limit.backward_s_per_row * 1e3:.1f} ms/row ({limit.backward_variant}); one step's "
              "passes at these rates: " + ", ".join(f"{k} {v:.2f} s" for k, v in parts.items()))
        print(f"  the cascade's passes ({steps} steps + the original) cannot take less than {cascade_limit_s:.1f} s: "
              f"ours/limit {best / cascade_limit_s:.2f}")
        rates = limit.as_is()
        print(f"  on the model as it is (what the gradient methods run on: {rates.forward_variant}; "
              f"{rates.backward_variant}): one step " + ", ".join(f"{k} {v:.2f} s" for k, v in as_is.items())
              + f"; the cascade's passes {as_is_s:.1f} s: ours/limit {best / as_is_s:.2f}")
    if profile:
        whole = profile["whole step"]
        print(f"  one step, each call alone (medians of {args.profile_repeats}, interleaved):")
        for name, seconds in profile.items():
            print(f"    {name:<60} {seconds:7.2f} s  {seconds / whole:6.1%} of the step")
    print()
    print(verdict.table())
    print(f"\nwritten: {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
