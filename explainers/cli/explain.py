"""The ``explain`` command (images to overlay PNGs, raw ``.npy`` and manifests) and the listing commands."""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from ..dense.records import dense_predictions
from ..errors import ParameterError, SaliencyError
from ..images import IMAGE_SUFFIXES, image_hash, load_image
from ..manifest import explanation_manifest, top_predictions
from ..many import explain_many
from ..models import DEFAULT_MODEL, PREPROCESSING, RESIZE, DenseBundle, list_models, load_model, model_info
from ..registry import METHODS, get_method, method_order
from ..render import COLORMAPS, DEFAULT_CLIP_PERCENTILE, REDUCTIONS, SIGNS, View, render_for_image, to_pil
from ..targets import OBJECTIVES, TargetSpec
from .dense import (
    add_dense_options,
    check_dense_options,
    dense_image,
    describe,
    file_part,
    pick_targets,
    print_boxes,
    refuse_class_target,
    say,
    scored_targets,
    target_manifest,
)
from .options import (
    PROG,
    add_device,
    add_model_file,
    check_layer,
    check_model,
    load_cli_model,
    method_names,
    out_folder,
    out_stems,
    parse_params,
    percentile,
    pick_device,
    positive_int,
    unit_float,
)

# ---------------------------------------------------------------------------------------------------------
# Listing commands
# ---------------------------------------------------------------------------------------------------------


def cmd_list_models(args: argparse.Namespace) -> int:
    """One line per model: name and availability; builds nothing, downloads nothing."""

    names = list_models()
    width = max(len(n) for n in names)
    for name in names:
        info = model_info(name)
        if info["offline"]:
            status = "offline"
        elif info.get("download_mb"):
            status = f"downloads {info['download_mb']:.0f} MB on first use"
        elif info.get("weights_url"):
            status = "downloads its weights on first use"
        else:
            status = "unavailable: its weights are not installed"
        print(f"{name:<{width}}  {status}")
    return 0


def _describe_param(name: str, param: Any) -> str:
    if param.kind == "folder":  # a path, where "" (none) must still read as a value
        default, suffixes = param.default or '""', "|".join(IMAGE_SUFFIXES)
        return f'{name}={default} [folder of images ({suffixes}); "" for none]'
    if param.kind == "choice":
        rule = "|".join(param.choices)
    elif param.minimum is not None or param.maximum is not None:
        lo = "" if param.minimum is None else f"{param.minimum:g}"
        hi = "" if param.maximum is None else f"{param.maximum:g}"
        rule = f"{param.kind} {lo}..{hi}"
    else:
        rule = param.kind
    return f"{name}={param.default} [{rule}]"


def cmd_list_methods(args: argparse.Namespace) -> int:
    """One line per method: name, display name, family, passes per image, parameters with defaults."""

    rows = []
    for name in method_order():
        info = METHODS[name]
        forwards, backwards = info.passes(channels=512) if info.cost.depends_on_channels else info.passes()
        params = ", ".join(_describe_param(n, p) for n, p in info.params.items()) or "no parameters"
        per = " (at 512 channels: one fwd per channel)" if info.cost.depends_on_channels else ""
        layer = "; needs a layer" if info.needs_layer else ""
        rows.append((info.name, info.display_name, info.family, f"{forwards} fwd + {backwards} bwd{per}{layer}",
                     params))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        head = "  ".join(f"{cell:<{w}}" for cell, w in zip(row[:4], widths))
        print(f"{head}  {row[4]}")
    return 0


def cmd_list_layers(args: argparse.Namespace) -> int:
    """Each spatial layer of MODEL: dotted name, output shape, layout; the default layer marked."""

    bundle = load_model(args.model, tqdm_bar=True)
    width = max((len(info.name) for info in bundle.layers), default=0)
    for info in bundle.layers:
        shape = "[" + ",".join(str(s) for s in info.shape) + "]"
        mark = "  (default)" if info.name == bundle.default_layer else ""
        print(f"{info.name:<{width}}  {shape:<18} {info.layout}{mark}")
    return 0


# ---------------------------------------------------------------------------------------------------------
# explain
# ---------------------------------------------------------------------------------------------------------






class BarProgress:
    """The backend's ``progress(done, total)`` for one image on the command's bar: the passes, and what the method
    says of its current pass (``Progress.say``, e.g. an optimisation's iteration and score), as the bar's postfix.
    Redrawn at most every ``interval`` seconds, so a method that reports every pass does not slow down."""

    def __init__(self, bar: tqdm, interval: float = 0.2):
        self.bar, self.interval = bar, interval
        self.done, self.total, self.said = 0, 0, ""
        self.drawn = -float("inf")

    def __call__(self, done: int, total: int) -> bool:
        self.done, self.total = done, total
        self._draw(done >= total)
        return True

    def say(self, text: str) -> None:
        self.said = " ".join(str(text).split())
        self._draw(False)

    def postfix(self) -> str:
        """"120/300 passes · iteration 120/300: score 4.2, area 0.10"."""
        count = f"{self.done}/{self.total} passes" if self.total else ""
        return " · ".join(part for part in (count, self.said) if part)

    def _draw(self, final: bool) -> None:
        now = time.perf_counter()
        if self.bar.disable or (not final and now - self.drawn < self.interval):
            return
        self.drawn = now
        self.bar.set_postfix_str(self.postfix(), refresh=True)


def _file_part(target: Any) -> str:
    """A target as a part of a file name: "top2", "281", "top1_vs_top2", "3-5" (one per row)."""
    text = "-".join(map(str, target)) if isinstance(target, tuple) else str(target)
    return "".join(c if c.isalnum() or c in "-." else "_" for c in text).strip("_") or "target"


def _class_label(index: int, categories: Sequence[str] | None) -> str:
    return f"{index} {categories[index]}" if categories and 0 <= index < len(categories) else str(index)


def _method_params(names: list[str], items: list[str]) -> dict[str, dict[str, Any]]:
    """``--param NAME=VALUE`` validated for each method that has NAME; a NAME none of them has is an error."""
    infos = [get_method(name) for name in names]
    raw = parse_params(items)
    if len(infos) == 1:
        return {infos[0].name: infos[0].validate(raw)}
    orphans = sorted(name for name in raw if not any(name in info.params for info in infos))
    if orphans:
        raise ParameterError(f"none of the methods {', '.join(names)} has a parameter {orphans[0]!r}; see "
                             f"`{PROG} list-methods`")
    return {info.name: info.validate({k: v for k, v in raw.items() if k in info.params}) for info in infos}


def _write_explanation(explanation, base: Path, path: str, image, bundle, view: View, args: argparse.Namespace,
                       device: str, started: float, dense: dict[str, Any] | None = None) -> str:
    """One explanation's overlay PNG, raw ``.npy`` and manifest JSON at ``base``; returns the line to print.
    ``dense``: a dense model's target (``mask`` bool [H, W] outlined on the overlay, ``target`` and ``predictions``
    for the manifest)."""
    record = explanation.record(0)
    rendered = render_for_image(record.attribution, view, image=image, bundle=bundle, preprocessing=args.preprocessing,
                                regions=record.regions, target=None if dense is None else dense["mask"])
    files = {"overlay": f"{base}.png", "attribution": f"{base}.npy", "manifest": f"{base}.json"}
    to_pil(rendered.overlay).save(files["overlay"])
    np.save(files["attribution"], record.attribution.astype(np.float32))
    categories = bundle.categories
    manifest = explanation_manifest(
        record, image_name=str(path), image_hash=image_hash(image), image_size=image.size, model=bundle.name,
        preprocessing=args.preprocessing, categories=categories, view=view, value_range=(rendered.lo, rendered.hi),
        files=files, device=device, dense_target=None if dense is None else dense["target"],
        predictions=None if dense is None else dense["predictions"],
    )
    manifest["total_s"] = time.perf_counter() - started
    manifest["batch_size"] = args.batch_size
    Path(files["manifest"]).write_text(json.dumps(manifest, indent=2, allow_nan=False) + "\n")
    notice = image.info.get("notice")
    if dense is not None:
        return f"{files['overlay']}  target: {describe(dense['target'])}" + (f"  ({notice})" if notice else "")
    top = top_predictions(record.logits, categories, 1)[0]
    explained = " vs ".join(_class_label(i, categories) for i in record.target)
    predicted = f"{_class_label(top['index'], categories)} ({top['probability']:.1%})"
    return f"{files['overlay']}  predicted: {predicted}  target: {explained}" + (f"  ({notice})" if notice else "")


def _explain_dense(args: argparse.Namespace, bundle: DenseBundle, names: list[str], params, view: View,
                   device: str, seed: int) -> int:
    """``explain`` on a detector or segmenter: per image, the picked boxes or regions (``--box``,
    ``--region-class``, else the top box or largest region) scored (``DenseBundle.scored``) and explained together."""
    refuse_class_target(bundle, bool(args.target))
    if args.objective != "logit":
        raise ParameterError(f"--objective {args.objective} needs a classifier's softmax; a {bundle.kind} target's "
                             "score is its box's score or its region's logits (keep --objective logit)")
    out_dir = None if args.list_boxes else out_folder(args.out)
    bar = tqdm(list(zip(args.images, out_stems(args.images))), desc=",".join(names), unit="image",
               disable=args.quiet or args.list_boxes)
    for path, stem in bar:
        started = time.perf_counter()
        image = load_image(path)
        seen = dense_image(bundle, image, args.preprocessing)
        inputs, geometry, prediction = seen.inputs, seen.geometry, seen.prediction
        if args.list_boxes:
            print_boxes(bundle, prediction, geometry, str(path))
            continue
        picked = pick_targets(args, bundle, prediction, geometry)
        say(picked.notice)
        scored = scored_targets(args, bundle, picked.targets, inputs)
        indices = list(range(len(picked.targets)))
        results = explain_many(scored, inputs, names, indices, layer=args.layer, objective="logit",
                               batch_size=args.batch_size, seed=seed, params=params, progress=BarProgress(bar))
        predictions = dense_predictions(bundle, prediction, geometry)
        for (method, key), explanation in results.items():
            index = int(key) if not isinstance(key, tuple) else int(key[0])
            target = picked.targets[index]
            described = target_manifest(bundle, target, geometry)
            if picked.notice:
                described["picked"] = picked.notice
            suffix = f"_{file_part(described, index)}" if len(picked.targets) > 1 else ""
            dense = {"mask": scored.target_mask(index), "target": described, "predictions": predictions}
            line = _write_explanation(explanation, out_dir / f"{stem}_{method}{suffix}", path, image, scored, view,
                                      args, device, started, dense)
            tqdm.write(line, file=sys.stdout)
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    """Explain each image and write its overlay PNG, attribution .npy and manifest JSON into --out."""
    # Cheap checks first, so a typo fails before the model loads.
    names = method_names(args.method)
    params = _method_params(names, args.param)
    if args.out is None and not args.list_boxes:  # as argparse says it of a required option
        args.parser.error("the following arguments are required: --out (unless --list-boxes)")
    targets = args.target or ["top1"]
    view = View(sign=args.sign, reduction=args.reduction, clip=args.clip, colormap=args.colormap, alpha=args.alpha,
                original_aspect=args.aspect == "original")
    check_model(args.model)  # unknown model -> error with suggestions
    for path in args.images:
        load_image(path)
    device = pick_device(args.device)

    bundle = load_cli_model(args, device)
    bundle = check_dense_options(args, bundle)
    for name in names:
        reason = get_method(name).unavailable_reason(bundle.model)
        if reason:
            raise SaliencyError(f"{reason}; see `{PROG} list-methods`")
    if isinstance(bundle, DenseBundle):
        check_layer(bundle, args.layer)
        seed = random.SystemRandom().randrange(2**31) if args.seed is None else args.seed
        return _explain_dense(args, bundle, names, params, view, device, seed)
    for target in targets:
        TargetSpec(target, 1, bundle.categories, args.objective, num_classes=len(bundle.categories) or None)
    check_layer(bundle, args.layer)
    out_dir = out_folder(args.out)
    # one seed for every method and image, drawn when none is given, as explain() draws it
    seed = random.SystemRandom().randrange(2**31) if args.seed is None else args.seed

    bar = tqdm(list(zip(args.images, out_stems(args.images))), desc=",".join(names), unit="image",
               disable=args.quiet)
    for path, stem in bar:
        started = time.perf_counter()
        image = load_image(path)
        inputs = bundle.preprocess(image, args.preprocessing)
        results = explain_many(bundle, inputs, names, targets, layer=args.layer, objective=args.objective,
                               batch_size=args.batch_size, seed=seed, params=params, progress=BarProgress(bar))
        for (method, key), explanation in results.items():
            suffix = f"_{_file_part(key)}" if len(targets) > 1 else ""
            line = _write_explanation(explanation, out_dir / f"{stem}_{method}{suffix}", path, image, bundle, view,
                                      args, device, started)
            tqdm.write(line, file=sys.stdout)
    return 0


def add_commands(commands: Any) -> None:
    """Add ``explain``, ``list-models``, ``list-methods`` and ``list-layers``."""
    ex = commands.add_parser(
        "explain",
        help="explain images and write overlay PNG, raw attribution .npy and JSON manifest per image",
        description="For each IMAGE write <stem>_<method>.png (heatmap overlaid on the original image), "
        "<stem>_<method>.npy (raw attribution, float32 [C,H,W]) and <stem>_<method>.json (manifest) into --out.",
    )
    ex.add_argument("images", nargs="+", metavar="IMAGE", help="image files (PNG, JPEG, WebP, BMP, GIF, TIFF)")
    ex.add_argument("--out", default=None, type=Path, metavar="DIR",
                    help="output folder (created if missing; required unless --list-boxes)")
    ex.add_argument("--model", default=DEFAULT_MODEL,
                    help="model name, see list-models, or a model file (default: %(default)s)")
    ex.add_argument("--method", default="vanilla", metavar="NAME[,NAME…]",
                    help="method name, or several separated by commas, computed together so that they share passes "
                    "(explain_many); see list-methods (default: %(default)s)")
    ex.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a method parameter (repeatable), e.g. --param n_steps=20; with several methods it goes to each "
        "method that has it; see list-methods",
    )
    ex.add_argument(
        "--target",
        action="append",
        default=None,
        help='class index, class name, "topK" (K-th prediction) or a contrast "A vs B" (default: top1); repeat it '
        "for several targets, which share each method's passes",
    )
    ex.add_argument("--layer", default=None, help="layer to capture (CAM methods), see list-layers")
    ex.add_argument("--objective", default="logit", choices=OBJECTIVES, help="explained score (default: %(default)s)")
    ex.add_argument(
        "--preprocessing",
        default=RESIZE,
        choices=PREPROCESSING,
        help="squeeze the whole image, or the model's centre crop (default: %(default)s)",
    )
    ex.add_argument("--colormap", default=None, choices=COLORMAPS, metavar="NAME",
                    help="a matplotlib colour table (default: RdBu_r when signed, else inferno); one of "
                    + ", ".join(COLORMAPS))
    ex.add_argument("--sign", default="absolute", choices=SIGNS, help="evidence shown (default: %(default)s)")
    ex.add_argument(
        "--reduction", default="max", choices=REDUCTIONS,
        help="channel reduction after the sign (default: %(default)s; unused for 1-channel maps)"
    )
    ex.add_argument(
        "--aspect", default="original", choices=("original", "model"),
        help="overlay on the original image (with the region the model saw) or on the model's input view "
        "(default: %(default)s)",
    )
    ex.add_argument("--alpha", default=0.5, type=unit_float, help="heatmap opacity in [0, 1] (default: %(default)s)")
    ex.add_argument(
        "--clip",
        default=DEFAULT_CLIP_PERCENTILE,
        type=percentile,
        help="percentile mapped to full colour (default: %(default)s)",
    )
    ex.add_argument("--batch-size", default=None, type=positive_int, metavar="N", help="passes per batch")
    ex.add_argument("--seed", default=None, type=int, metavar="N", help="seed for noise-based methods")
    add_device(ex)
    ex.add_argument("--quiet", action="store_true", help="no progress bar")
    add_dense_options(ex)
    add_model_file(ex)
    ex.set_defaults(handler=cmd_explain, parser=ex)
    ex.epilog = ("Each image, method and target gives <stem>_<method>.png/.npy/.json; with several targets the "
                 "target is added to the name: <stem>_<method>_<target>.")

    lm = commands.add_parser("list-models", help="models, and whether each works offline")
    lm.set_defaults(handler=cmd_list_models)
    lme = commands.add_parser("list-methods", help="methods with their cost and parameters")
    lme.set_defaults(handler=cmd_list_methods)
    ll = commands.add_parser("list-layers", help="a model's spatial layers (for --layer)")
    ll.add_argument("model", metavar="MODEL")
    ll.set_defaults(handler=cmd_list_layers)
