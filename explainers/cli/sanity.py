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
from ..models import DEFAULT_MODEL, load_model, model_info
from ..registry import get_method
from ..trust.sanity import KINDERMANS, SIXT, MethodSpec, filmstrip, run_sanity
from .options import (
    add_device,
    add_methods,
    check_layer,
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
        "(a filmstrip: one row per method, one column per step) into --out.",
    )
    parser.add_argument("image", metavar="IMAGE", help="an image file")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="model name (default: %(default)s)")
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
    parser.set_defaults(handler=cmd_sanity)


def cmd_sanity(args: argparse.Namespace) -> int:
    """Run the checks on one image, print the verdict, write the JSON and the filmstrip."""
    if args.steps is not None and args.steps < 0:
        raise ParameterError(f"--steps must be ≥ 0, got {args.steps}")
    methods = method_names(args.methods)  # an unknown name lists the known ones
    params = method_params(args.param, methods)
    specs = [MethodSpec(name, get_method(name).validate(params.get(name, {}))) for name in methods]
    model_info(args.model)  # an unknown model fails before anything loads
    image = load_image(args.image)
    out = None if args.out is None else out_folder(args.out)
    bundle = load_model(args.model, device=pick_device(args.device), tqdm_bar=not args.quiet)
    check_layer(bundle, args.layer)
    inputs = bundle.preprocess(image)
    bar = tqdm(total=1, desc="cascade", unit="pass", disable=args.quiet)

    def progress(done, total):
        bar.total = total
        bar.update(done - bar.n)

    try:
        report = run_sanity(bundle, inputs, specs, layer=args.layer, steps=args.steps,
                            random_classes_count=args.random_classes, shift=args.shift, seed=args.seed,
                            batch_size=args.batch_size, progress=progress)
    finally:
        bar.close()
    print(report.verdict.table())
    for note in report.notes:
        print(note)
    print(f"\n{len(report.cascade.steps) - 1} cascade steps in {report.cascade.elapsed_s:.1f} s; "
          f"all checks in {report.elapsed_s:.1f} s")
    if out is not None:
        stem = Path(args.image).stem or "image"
        json_path, png_path = out / f"{stem}_sanity.json", out / f"{stem}_sanity.png"
        payload = {"image": str(args.image), "model": bundle.name, **report.to_dict(thumbnails=False)}
        json_path.write_text(json.dumps(payload, indent=2, allow_nan=False) + "\n")
        render.to_pil(filmstrip(report.cascade)).save(png_path)
        print(f"{json_path}\n{png_path}")
    return 0
