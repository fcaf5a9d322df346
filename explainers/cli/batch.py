"""The ``batch`` command: explain a folder, glob or list of images, or a file of texts, into a run folder."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from tqdm import tqdm

from ..batch import ENGINES, Settings, is_text_source, run
from ..dense.targets import IOU_THRESHOLD, REDUCTIONS
from ..errors import ParameterError
from ..models import DEFAULT_MODEL
from ..models.text import DEFAULT_TEXT_MODEL
from .dense import iou_fraction
from .options import (
    add_device,
    add_methods,
    add_model_file,
    is_model_file,
    load_cli_model,
    method_names,
    method_params,
    pick_device,
    positive_int,
    text_method_names,
)

DEFAULT_METHODS = ("gradcam",)
DEFAULT_TEXT_METHODS = ("vanilla", "input_x_gradient")
DEFAULT_TARGETS = ("top1",)
# options that mean something for images only, with their defaults: given in a text run, an error
IMAGE_ONLY = {"labels": None, "max_boxes": 5, "score_threshold": None, "iou_threshold": IOU_THRESHOLD,
              "region_reduction": "sum", "architecture": None, "class_names": None, "input_size": None,
              "trust_code": False}


def add_commands(commands: Any) -> None:
    """Add ``batch`` to the CLI (see ``explainers.cli.main``)."""
    ba = commands.add_parser(
        "batch",
        help="explain a folder, glob or list of images (or a file of texts): a Parquet table of map statistics "
        "and maps",
        description="Explain every image of SOURCE (a folder, recursively, the class from ImageFolder-style "
        "sub-folders; a glob; or a .csv/.parquet list with path, optional label and x0,y0,x1,y1 box columns) with "
        "each method and target, and write DIR/table/*.parquet (one row per image x method x target, error rows "
        "for unreadable images), DIR/maps/*.npz and DIR/manifest.json. Texts: SOURCE a .txt file (one text a "
        "line) or a .csv/.parquet list with --text-column (an optional label column gives each text's class); the "
        "table then holds each row's per-token map (tokens, offsets, scores, words).",
    )
    ba.add_argument("source", metavar="SOURCE", help="folder, glob pattern, .csv/.parquet list, or .txt of texts")
    ba.add_argument("--out", required=True, metavar="DIR", help="run folder (created; --resume continues one)")
    ba.add_argument("--model", default=None,
                    help=f"model name, or a model file (default: {DEFAULT_MODEL}); for texts a shipped text model, "
                    f"a Hugging Face folder or .zip (default: {DEFAULT_TEXT_MODEL})")
    ba.add_argument("--text-column", default=None, metavar="NAME",
                    help="explain texts: the column of a .csv/.parquet list that holds them")
    add_methods(ba, DEFAULT_METHODS, "computed together, sharing passes (explain_many); for texts the default is "
                f"{','.join(DEFAULT_TEXT_METHODS)}", "integrated_gradients.n_steps=16")
    ba.set_defaults(methods=None)  # the default depends on what SOURCE holds
    ba.add_argument("--targets", default=",".join(DEFAULT_TARGETS), metavar="T[,T…]",
                    help="targets, comma-separated: topK, a class index or name, or label (the list's or folder's "
                    "class) (default: %(default)s)")
    ba.add_argument("--labels", default=None, metavar="labels.csv",
                    help="a list (path,label[,x0,y0,x1,y1]) whose labels and boxes apply to SOURCE's images")
    ba.add_argument("--engine", default="local", choices=list(ENGINES), help="in-process or Ray Data (default: local)")
    ba.add_argument("--batch-size", default=16, type=positive_int, metavar="N", help="images per batch")
    ba.add_argument("--workers", default=None, type=int, metavar="N",
                    help="decoding workers (local; default: spare cores, at most 4) or model replicas (ray; "
                    "default: one per GPU, else 2)")
    ba.add_argument("--limit", default=None, type=positive_int, metavar="N", help="the first N images only")
    ba.add_argument("--resume", action="store_true", help="continue the run in DIR, skipping images it has")
    ba.add_argument("--seed", default=0, type=int, metavar="N", help="seed of every random draw (default: 0)")
    add_device(ba)
    ba.add_argument("--quiet", action="store_true", help="no progress bar")
    dense = ba.add_argument_group("detectors and segmenters (one row per image x box or region x method)")
    dense.add_argument("--max-boxes", default=5, type=positive_int, metavar="N",
                       help="a detector: the N best boxes of each image at or above the score threshold "
                       "(default: %(default)s)")
    dense.add_argument("--score-threshold", default=None, type=float, metavar="F",
                       help="a detector: lowest score of an explained box (default: the model's)")
    dense.add_argument("--iou-threshold", default=IOU_THRESHOLD, type=iou_fraction, metavar="F",
                       help="a detector: IoU a re-detection needs to count as the same box (default: %(default)s)")
    dense.add_argument("--region-reduction", default="sum", choices=REDUCTIONS,
                       help="a segmenter: a region's score, the sum or mean of its logits (default: %(default)s)")
    add_model_file(ba)
    ba.set_defaults(handler=cmd_batch)


def cmd_batch(args: argparse.Namespace) -> int:
    targets = [t.strip() for t in args.targets.split(",") if t.strip()] or list(DEFAULT_TARGETS)
    texts = is_text_source(args.source, args.text_column)
    if texts:
        given = [name for name, default in IMAGE_ONLY.items() if getattr(args, name) != default]
        if given:
            raise ParameterError(f"--{given[0].replace('_', '-')} applies to images; this run explains texts")
        methods = text_method_names(args.methods, DEFAULT_TEXT_METHODS)
        model = args.model or DEFAULT_TEXT_MODEL
    else:
        methods = method_names(args.methods, DEFAULT_METHODS)
        model = args.model or DEFAULT_MODEL
        args.model = model
    settings = Settings(model=model, methods=methods, targets=targets,
                        params=method_params(args.param, methods), seed=args.seed, batch_size=args.batch_size,
                        max_boxes=args.max_boxes, score_threshold=args.score_threshold,
                        iou_threshold=args.iou_threshold, reduction=args.region_reduction,
                        modality="text" if texts else "image", text_column=args.text_column)
    device = pick_device(args.device)
    bundle = load_cli_model(args, device) if not texts and is_model_file(model) else None
    bar = tqdm(total=None, unit="text" if texts else "image", disable=args.quiet, desc="batch")

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    summary = run(args.source, args.out, settings, engine=args.engine, limit=args.limit, resume=args.resume,
                  workers=args.workers, device=device, bundle=bundle, progress=progress, labels=args.labels)
    bar.close()
    rate = summary["images_per_s"]
    explained = summary["done_now"] - summary["unreadable"]
    if texts:
        print(f"{summary['out']}: {explained} texts explained, {summary['unreadable']} not explainable (an error row "
              f"each), {summary['skipped']} already there" + (f", {rate:.2f} texts/s" if rate else ""))
        return 0
    print(f"{summary['out']}: {explained} images explained, {summary['unreadable']} unreadable (an error row each), "
          f"{summary['skipped']} already there" + (f", {rate:.2f} images/s" if rate else ""), file=sys.stdout)
    return 0
