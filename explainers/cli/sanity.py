"""The ``sanity`` command: the sanity checks on one image, a verdict table, JSON and a filmstrip."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from tqdm import tqdm

from .. import render
from ..errors import ParameterError
from ..images import load_image
from ..methods.controls import ADEBAYO
from ..models import DEFAULT_MODEL, DenseBundle
from ..registry import get_method
from ..trust.sanity import BACKBONE_RULE, KINDERMANS, SIXT, MethodSpec, SanityReport, filmstrip, run_sanity
from .dense import (
    add_dense_options,
    check_dense_options,
    dense_image,
    describe,
    file_part,
    pick_targets,
    say,
    scored_targets,
    target_manifest,
)
from .options import (
    add_device,
    add_methods,
    add_model_file,
    check_layer,
    check_model,
    load_cli_model,
    method_names,
    method_params,
    out_folder,
    pick_device,
    positive_int,
)


def add_commands(commands: Any) -> None:
    """Add ``sanity`` to the CLI (see ``explainers.cli.main``)."""

    parser = commands.add_parser(
        "sanity",
        help="sanity checks: cascading model randomisation, random logits, input invariance, with a verdict",
        description=f"Run the sanity checks on IMAGE (model randomisation: {ADEBAYO}; random logit: {SIXT}; input "
        f"invariance: {KINDERMANS}); print the verdict table and write <stem>_sanity.json and <stem>_sanity.png "
        "(a filmstrip: one row per method, one column per step) into --out. On a detector or segmenter the checks "
        "explain the picked box or region (--box, --region-class; default: the top-scoring box, the largest region; "
        "with several, one run each, files <stem>_sanity_<box>.json/.png), the cascade randomises "
        f"{BACKBONE_RULE}, and the random-logit test compares with the maps of the image's other boxes or regions.",
    )
    parser.add_argument("image", metavar="IMAGE", help="an image file")
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help="model name, see list-models, or a model file (default: %(default)s)")
    add_methods(parser, ("vanilla", "gradcam", "guided_backprop"), "the sobel and random controls are always added",
                "smoothgrad.n_samples=10")
    parser.add_argument("--steps", default=None, type=int, metavar="N",
                        help="randomise only the top N blocks (default: all)")
    parser.add_argument("--layer", default=None, help="layer for CAM methods (default: the model's)")
    parser.add_argument("--random-classes", default=3, type=int, metavar="K", help="random-logit classes (3)")
    parser.add_argument("--shift", default=-1.0, type=float, help="input-invariance shift, input units (-1)")
    parser.add_argument("--seed", default=42, type=int, help="seed of the randomisation (default: %(default)s)")
    parser.add_argument("--batch-size", default=None, type=positive_int, metavar="N", help="passes per batch")
    add_device(parser)
    parser.add_argument("--out", default=None, type=Path, metavar="DIR", help="write JSON and filmstrip here")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_dense_options(parser, listing=False)
    add_model_file(parser)
    parser.set_defaults(handler=cmd_sanity)


def cmd_sanity(args: argparse.Namespace) -> int:
    """Run the checks on one image, print the verdict, write the JSON and the filmstrip."""
    if args.steps is not None and args.steps < 0:
        raise ParameterError(f"--steps must be ≥ 0, got {args.steps}")
    methods = method_names(args.methods)  # an unknown name lists the known ones
    params = method_params(args.param, methods)
    specs = [MethodSpec(name, get_method(name).validate(params.get(name, {}))) for name in methods]
    check_model(args.model)  # an unknown model fails before anything loads
    image = load_image(args.image)
    out = None if args.out is None else out_folder(args.out)
    bundle = load_cli_model(args, pick_device(args.device))
    bundle = check_dense_options(args, bundle)
    check_layer(bundle, args.layer)
    stem = Path(args.image).stem or "image"
    if isinstance(bundle, DenseBundle):
        return _sanity_dense(args, bundle, image, specs, out, stem)
    report = _run(args, bundle, bundle.preprocess(image), specs)
    _print_report(report)
    if out is not None:
        _write(args, bundle.name, report, out / f"{stem}_sanity")
    return 0


def _sanity_dense(args: argparse.Namespace, bundle: DenseBundle, image, specs: list[MethodSpec], out: Path | None,
                  stem: str) -> int:
    """The checks of each picked box or region: scored together with the image's other detections (or predicted
    regions), which the random-logit test explains as its other classes; the cascade's notes say when the box
    was lost."""
    seen = dense_image(bundle, image)
    picked = pick_targets(args, bundle, seen.prediction, seen.geometry)
    say(picked.notice)
    every = bundle.targets(seen.prediction, args.region_reduction)
    for index, target in enumerate(picked.targets):
        others = [t for t in every if t.key != target.key]
        scored = scored_targets(args, bundle, [target, *others], seen.inputs)
        described = target_manifest(bundle, target, seen.geometry)
        if len(picked.targets) > 1:
            print(f"{'' if index == 0 else chr(10)}== {describe(described)}")
        report = _run(args, scored, seen.inputs, specs, target=0,
                      random_classes=min(args.random_classes, len(others)))
        _print_report(report)
        if out is not None:
            suffix = f"_{file_part(described, index)}" if len(picked.targets) > 1 else ""
            extra = {"dense_target": described, **({"picked": picked.notice} if picked.notice else {})}
            _write(args, bundle.name, report, out / f"{stem}_sanity{suffix}", extra)
    return 0


def _run(args: argparse.Namespace, bundle, inputs, specs: list[MethodSpec], target=None,
         random_classes: int | None = None) -> SanityReport:
    bar = tqdm(total=1, desc="cascade", unit="pass", disable=args.quiet)

    def progress(done, total):
        bar.total = total
        bar.update(done - bar.n)

    try:
        return run_sanity(bundle, inputs, specs, layer=args.layer, target=target, steps=args.steps,
                          random_classes_count=args.random_classes if random_classes is None else random_classes,
                          shift=args.shift, seed=args.seed, batch_size=args.batch_size, progress=progress)
    finally:
        bar.close()


def _print_report(report: SanityReport) -> None:
    print(report.verdict.table())
    for note in [*report.notes, *report.cascade.notes]:
        print(note)
    print(f"\n{len(report.cascade.steps) - 1} cascade steps in {report.cascade.elapsed_s:.1f} s; "
          f"all checks in {report.elapsed_s:.1f} s")


def _write(args: argparse.Namespace, model: str, report: SanityReport, base: Path,
           extra: dict[str, Any] | None = None) -> None:
    json_path, png_path = Path(f"{base}.json"), Path(f"{base}.png")
    payload = {"image": str(args.image), "model": model, **(extra or {}), **report.to_dict(thumbnails=False)}
    json_path.write_text(json.dumps(payload, indent=2, allow_nan=False) + "\n")
    render.to_pil(filmstrip(report.cascade)).save(png_path)
    print(f"{json_path}\n{png_path}")
