"""The ``faithfulness``, ``evaluate`` and ``roar`` commands."""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ..errors import SaliencyError
from ..images import load_image
from ..methods.cam import WANG
from ..methods.rise import PETSIUK
from ..models import DEFAULT_MODEL, PREPROCESSING, RESIZE, DenseBundle
from ..render import REDUCTIONS, SIGNS
from ..trust import benchmark
from ..trust import roar as roar_module
from ..trust.benchmark import (
    DIGITS_BATCH_SIZE,
    DIGITS_MODELS,
    digits_evaluation,
    saliency_maps,
    write_evaluation,
)
from ..trust.faithfulness import DEFAULT_STEPS, SUBSTRATES, faithfulness_curves
from ..trust.pointing import ZHANG, box_pointing
from ..trust.road import ROAD_FRACTIONS, RONG, road_curves
from ..trust.roar import DEFAULTS as ROAR_DEFAULTS
from ..trust.roar import FILLS, HOOKER, roar
from .dense import (
    add_dense_options,
    check_dense_options,
    dense_image,
    file_part,
    pick_targets,
    refuse_class_target,
    say,
    scored_targets,
    target_manifest,
)
from .options import (
    add_device,
    add_methods,
    add_model_file,
    check_model,
    fractions,
    load_cli_model,
    method_names,
    method_params,
    out_folder,
    out_stems,
    percentages,
    pick_device,
    positive_int,
)

FAITHFULNESS_METHODS = ("vanilla", "gradcam", "random")


def _print_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> None:
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return "nan" if math.isnan(value) else f"{value:.4f}"
        return str(value)

    table = [[cell(row.get(c, "")) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in table)) if table else len(c) for i, c in enumerate(columns)]
    print("  ".join(f"{c:<{w}}" for c, w in zip(columns, widths)))
    for row in table:
        print("  ".join(f"{v:<{w}}" for v, w in zip(row, widths)))


def _write_csv(path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})


def cmd_faithfulness(args: argparse.Namespace) -> int:
    """Curves (deletion, insertion, optionally ROAD) of each method on each IMAGE: JSON + AUC table."""
    methods = method_names(args.methods, FAITHFULNESS_METHODS)
    params = method_params(args.param, methods)
    check_model(args.model)
    for path in args.images:
        load_image(path)
    out_dir = out_folder(args.out)
    bundle = load_cli_model(args, pick_device(args.device))
    bundle = check_dense_options(args, bundle)
    if isinstance(bundle, DenseBundle):
        return _faithfulness_dense(args, bundle, methods, params, out_dir)
    for path, stem in zip(args.images, out_stems(args.images)):
        inputs = bundle.preprocess(load_image(path), args.preprocessing)
        _faithfulness(args, bundle, inputs, methods, params, args.target, path, Path(out_dir) / f"{stem}_faithfulness")
    return 0


def _faithfulness(args: argparse.Namespace, bundle, inputs, methods: list[str], params, target, path,
                  base: Path, dense: dict[str, Any] | None = None) -> None:
    """One image's maps and curves (``target``: what ``explain()`` accepts; a dense model's scored bundle takes
    the picked target's index): the JSON, the CSV and the printed AUC table. ``dense``: the picked box or region
    (``target``, its manifest record; ``name``, its column in the table; ``mask``, its pixels), whose pointing
    games each method's map also plays."""
    maps, seconds, used = saliency_maps(bundle, inputs, methods, target, params=params, sign=args.sign,
                                        reduction=args.reduction, seed=args.seed, batch_size=args.batch_size)
    curves = faithfulness_curves(bundle, inputs, maps, target, steps=args.steps, substrate=args.substrate,
                                 region=args.region, batch_size=args.batch_size)
    record = {"image": str(path), "model": bundle.name, "methods": {m: {"params": used[m], "explain_s": seconds[m]}
                                                                    for m in methods},
              "target": args.target if dense is None else dense["target"], "sign": args.sign,
              "reduction": args.reduction, **curves.to_dict()}
    table = curves.table()
    if args.road:
        road = road_curves(bundle, inputs, maps, target, fractions=args.road_fractions, seed=args.seed,
                           batch_size=args.batch_size)
        record["road"] = road.to_dict()
        table += road.table()
    pointing = []
    if dense is not None:
        table = [{**row, "target": dense["name"]} for row in table]
        games = {m: box_pointing(maps[m][0], dense["mask"]) for m in methods}
        record["box_pointing"] = {m: game.to_dict() for m, game in games.items()}
        pointing = [{"method": m, "target": dense["name"], "hit": "yes" if game.hit else "no",
                     "share_inside": game.share, "area (chance)": game.area} for m, game in games.items()]
    Path(f"{base}.json").write_text(json.dumps(record, indent=2, allow_nan=False, default=str) + "\n")
    _write_csv(f"{base}.csv", table, ("kind", "method", "target", "n", "auc", "logit_auc"))
    print(f"{path}: {base}.json, {base}.csv", file=sys.stderr)
    _print_table(table, ("kind", "method", "target", "auc", "logit_auc"))
    if pointing:
        print("\nbox pointing game: hit, the map's peak is inside the explained box or region; share_inside, the "
              "share of its positive mass there; area, the box's share of the image (the chance level of both)")
        _print_table(pointing, ("method", "target", "hit", "share_inside", "area (chance)"))


def _column(described: dict[str, Any], index: int) -> str:
    """A dense target in the table's ``target`` column: "box1 red" (its rank among the detections), "region red"."""
    if described["kind"] == "box":
        return f"box{described.get('rank') or index + 1} {described['label_name']}"
    return f"region {described['class_name']}"


def _faithfulness_dense(args: argparse.Namespace, bundle: DenseBundle, methods: list[str], params,
                        out_dir) -> int:
    """Each picked box or region of each image (``--box``, ``--region-class``; default: the top-scoring box, the
    largest region): the curves follow its own score (a box's class score, a region's logits), and each map
    plays the pointing game against it. Several targets give one set of files each."""
    refuse_class_target(bundle, args.target != "top1")
    for path, stem in zip(args.images, out_stems(args.images)):
        seen = dense_image(bundle, load_image(path), args.preprocessing)
        picked = pick_targets(args, bundle, seen.prediction, seen.geometry)
        say(picked.notice and f"{path}: {picked.notice}")
        scored = scored_targets(args, bundle, picked.targets, seen.inputs)
        for index, target in enumerate(picked.targets):
            described = target_manifest(bundle, target, seen.geometry)
            if picked.notice:
                described["picked"] = picked.notice
            suffix = f"_{file_part(described, index)}" if len(picked.targets) > 1 else ""
            dense = {"target": described, "name": _column(described, index),
                     "mask": scored.target_mask(index)}
            _faithfulness(args, scored, seen.inputs, methods, params, index, path,
                          Path(out_dir) / f"{stem}_faithfulness{suffix}", dense)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """The benchmark on the digits: pointing games, deletion/insertion AUC and time per method, as CSVs."""
    if args.model not in DIGITS_MODELS:
        raise SaliencyError(f"evaluate needs ground-truth regions, which only the digits models have "
                            f"({', '.join(DIGITS_MODELS)}); got --model {args.model}")
    methods = method_names(args.methods, benchmark.DEFAULT_METHODS)
    params = method_params(args.param, methods)
    out_dir = out_folder(args.out)

    def report(stage: str, done: int, total: int) -> None:
        if not args.quiet and done >= total:
            print(f"{stage}: done", file=sys.stderr)

    evaluation = digits_evaluation(
        args.n, methods, model=args.model, seed=args.seed, device=pick_device(args.device), regions=args.regions,
        batch_size=args.batch_size, target=args.target, params=params, steps=args.steps, substrate=args.substrate,
        tolerance=args.tolerance, progress=report,
    )
    folder = write_evaluation(evaluation, out_dir)
    _print_table(evaluation.summary(), ("method", "n", "pointing_game", "energy_pointing_game", "chance",
                                        "deletion_auc", "insertion_auc", "explain_s"))
    print(f"wrote {folder}", file=sys.stderr)
    return 0


def cmd_roar(args: argparse.Namespace) -> int:
    """ROAR on the digits: retrain LeNet-5 with each method's top-k% pixels removed; print the accuracy table."""
    methods = method_names(args.methods, roar_module.DEFAULT_METHODS)
    params = method_params(args.param, methods)
    out_dir = None if args.out is None else out_folder(args.out)
    torch.set_num_threads(args.threads)
    result = roar(methods, args.k, n_train=args.n_train, n_test=args.n_test, epochs=args.epochs, fill=args.fill,
                  seed=args.seed, params=params, device=pick_device(args.device),
                  log=None if args.quiet else (lambda message: print(message, file=sys.stderr)))
    columns = ["method", "k=0%", *(f"k={round(100 * f)}%" for f in result.fractions)]
    _print_table(result.table(), columns)
    print(f"lenet_digits (not retrained) on these test digits: {result.original_accuracy:.4f}; "
          f"{result.elapsed_s:.0f} s", file=sys.stderr)
    if out_dir is not None:
        _write_csv(Path(out_dir) / "roar.csv", result.table(), columns)
        (Path(out_dir) / "roar.json").write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    return 0




def add_commands(commands: Any) -> None:
    """Add ``faithfulness``, ``evaluate`` and ``roar`` to the CLI (see ``explainers.cli.main``)."""
    _add_faithfulness(commands)
    _add_evaluate(commands)
    _add_roar(commands)


def _add_faithfulness(commands: Any) -> None:
    fa = commands.add_parser(
        "faithfulness",
        help="deletion/insertion curves (and ROAD) of methods on images: curves JSON and AUC table",
        description="For each IMAGE write <stem>_faithfulness.json (curves: fractions, probability and logit of the "
        "target per method) and <stem>_faithfulness.csv (AUC table) into --out, and print the table. Deletion and "
        f"insertion: {PETSIUK}; ROAD: {RONG}. On a detector or segmenter the curves follow the picked box's own "
        "score (or the region's logits; --box, --region-class; default: the top-scoring box, the largest region; "
        "with several, files <stem>_faithfulness_<box>.json/.csv each), and each map also plays the pointing game "
        f"({ZHANG}) against that box or region.",
    )
    fa.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    fa.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    fa.add_argument("--model", default=DEFAULT_MODEL,
                    help="model name, see list-models, or a model file (default: %(default)s)")
    add_methods(fa, FAITHFULNESS_METHODS)
    fa.add_argument("--target", default="top1", help="class index, name or topK (default: %(default)s)")
    fa.add_argument("--steps", default=DEFAULT_STEPS, type=positive_int, metavar="N",
                    help="curve steps (default: %(default)s)")
    fa.add_argument("--substrate", default=None, choices=SUBSTRATES,
                    help="what removed pixels become (default: black for deletion, blur for insertion)")
    fa.add_argument("--region", default=1, type=positive_int, metavar="PX",
                    help="remove square regions PX pixels a side, ranked by their mean (region perturbation); "
                    "1 removes single pixels (default: %(default)s)")
    fa.add_argument("--road", action="store_true", help="also ROAD MoRF/LeRF with noisy linear imputation")
    fa.add_argument("--road-fractions", default=list(ROAD_FRACTIONS), type=fractions, metavar="F,F,...",
                    help="ROAD fractions removed (default: 0.1,...,0.9)")
    fa.add_argument("--sign", default="absolute", choices=SIGNS, help="map sign mode (default: %(default)s)")
    fa.add_argument("--reduction", default="max", choices=REDUCTIONS, help="channel reduction (default: %(default)s)")
    fa.add_argument("--preprocessing", default=RESIZE, choices=PREPROCESSING, help="default: %(default)s")
    fa.add_argument("--seed", default=0, type=int, help="seed of random methods and ROAD's noise (default: 0)")
    fa.add_argument("--batch-size", default=None, type=positive_int, metavar="N", help="images per pass")
    add_device(fa)
    fa.add_argument("--quiet", action="store_true", help="no progress output")
    add_dense_options(fa, listing=False)
    add_model_file(fa)
    fa.set_defaults(handler=cmd_faithfulness)


def _add_evaluate(commands: Any) -> None:
    ev = commands.add_parser(
        "evaluate",
        help="benchmark methods on the digits: pointing games, deletion/insertion AUC, run time (CSV per method)",
        description="Explain N held-out procedural digits with each method and write <model>-<time>/ into --out: "
        "<method>.csv (one row per image), summary.csv (one row per method) and run.json. Pointing game: "
        f"{ZHANG}; energy pointing game: {WANG}.",
    )
    ev.add_argument("--model", default="lenet_digits", help="a digits model (default: %(default)s)")
    ev.add_argument("--n", default=500, type=positive_int, help="digits to evaluate (default: %(default)s)")
    add_methods(ev, benchmark.DEFAULT_METHODS)
    ev.add_argument("--out", required=True, metavar="DIR", help="output folder (a new run folder goes inside)")
    ev.add_argument("--target", default="label", choices=("label", "top1"), help="explained class (default: label)")
    ev.add_argument("--regions", default="boxes", choices=("boxes", "masks"), help="ground truth (default: boxes)")
    ev.add_argument("--tolerance", default=0, type=int, metavar="PX", help="pointing-game tolerance (default: 0)")
    ev.add_argument("--steps", default=32, type=positive_int, metavar="N", help="curve steps (default: 32)")
    ev.add_argument("--substrate", default=None, choices=SUBSTRATES,
                    help="default: black for deletion, blur for insertion")
    ev.add_argument("--seed", default=None, type=int, help="digit stream seed (default: the held-out 10000)")
    ev.add_argument("--batch-size", default=DIGITS_BATCH_SIZE, type=positive_int, metavar="N",
                    help="images per pass (default: %(default)s)")
    add_device(ev)
    ev.add_argument("--quiet", action="store_true", help="no progress output")
    ev.set_defaults(handler=cmd_evaluate)


def _add_roar(commands: Any) -> None:
    ro = commands.add_parser(
        "roar",
        help="ROAR on the digits: retrain LeNet-5 with each method's top-k%% pixels removed; accuracy table",
        description=f"RemOve And Retrain ({HOOKER}) on the procedural digits: for each method and k, replace the "
        "top-k% pixels of every training and test digit and retrain LeNet-5 from scratch; print the test accuracy "
        "table (and write roar.csv and roar.json into --out).",
    )
    add_methods(ro, roar_module.DEFAULT_METHODS)
    ro.add_argument("--k", default=[0.1, 0.3, 0.5, 0.7], type=percentages, metavar="P,P,...",
                    help="percentages removed (default: 10,30,50,70)")
    ro.add_argument("--n-train", default=ROAR_DEFAULTS["n_train"], type=positive_int, metavar="N",
                    help="training digits (default: %(default)s)")
    ro.add_argument("--n-test", default=ROAR_DEFAULTS["n_test"], type=positive_int, metavar="N",
                    help="test digits (default: %(default)s)")
    ro.add_argument("--epochs", default=ROAR_DEFAULTS["epochs"], type=positive_int, metavar="N",
                    help="epochs per retraining (default: %(default)s)")
    ro.add_argument("--fill", default="dataset_mean", choices=FILLS,
                    help="removed pixels' value (default: %(default)s)")
    ro.add_argument("--seed", default=0, type=int, help="seed of data, maps and training (default: 0)")
    ro.add_argument("--threads", default=2, type=positive_int, help="CPU threads (default: %(default)s)")
    ro.add_argument("--out", default=None, metavar="DIR", help="also write roar.csv and roar.json here")
    add_device(ro)
    ro.add_argument("--quiet", action="store_true", help="no progress output")
    ro.set_defaults(handler=cmd_roar)
