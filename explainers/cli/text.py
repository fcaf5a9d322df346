"""The text commands: ``text`` (each method's token scores of a sentence, with JSON and HTML downloads),
``text-sanity`` (the cascade and the random-logit test) and ``text-faithfulness`` (ERASER's comprehensiveness and
sufficiency, deletion and insertion over tokens, beside a random ranking). A batch of texts is the ``batch``
command with a .txt file or ``--text-column``; ``text-words`` reads its run folder: which words carry the
attribution across the run (``explainers.batch.views.word_table``)."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..batch.store import read_manifest, read_table
from ..batch.views import WORD_SORTS, word_table
from ..errors import ParameterError, SaliencyError
from ..manifest import top_predictions
from ..registry import METHODS
from ..targets import OBJECTIVES, TargetSpec
from ..text import GROUPINGS, TokenView, explain_text, group_words, token_html
from ..text.render import reduction_of, text_document
from ..trust.sanity import SIXT
from ..trust.text import DEYOUNG, ERASER_BINS, REMOVAL_SAID, REMOVALS, text_faithfulness, text_sanity
from .options import (
    add_device,
    add_methods,
    add_text_model,
    load_cli_text_model,
    method_params,
    out_file,
    percentages,
    pick_device,
    positive_int,
    text_method_names,
    write_file,
)

TEXT_METHODS = ("vanilla", "input_x_gradient", "integrated_gradients")
WORDS_BY = {"predicted": "prediction_name", "label": "label_name"}  # text-words --by: the table's column
REDUCTION_SAID = {"l2": "L2 norm of the gradient over the embedding", "sum": "summed over the embedding",
                  "map": "one value per token"}


def _add_common(parser: argparse.ArgumentParser, methods_note: str, objective: str) -> None:
    """TEXT, --model, --methods/--param, --target, --objective (its default ``objective``), --seed, --device and
    --json."""
    parser.add_argument("text", metavar="TEXT", help="the text to explain (quote it)")
    add_text_model(parser)
    add_methods(parser, TEXT_METHODS, methods_note, "integrated_gradients.n_steps=16")
    parser.add_argument("--target", default="top1", metavar="T",
                        help='top1, top2, a class name or index, or a contrast "a vs b" (default: %(default)s)')
    parser.add_argument("--objective", default=objective, choices=OBJECTIVES,
                        help="the explained score (default: %(default)s)")
    parser.add_argument("--seed", default=0, type=int, metavar="N", help="seed of every random draw (default: 0)")
    add_device(parser)
    parser.add_argument("--json", default=None, type=out_file, metavar="FILE", help="write the results as JSON")


def add_commands(commands: Any) -> None:
    """Add ``text``, ``text-sanity``, ``text-faithfulness`` and ``text-words`` to the CLI (see
    ``explainers.cli.main``)."""
    tx = commands.add_parser(
        "text", help="which tokens made a text classifier decide: each method's score per token",
        description="Explain TEXT with each method: print every token (or word, --group) with its score and the "
        "model's prediction; the scores come from each token's embedding (the method's own reduction: the "
        "gradient's L2 norm, or a signed sum). A text longer than the model reads is cut, and the cut is said.")
    _add_common(tx, "computed together, sharing passes", "logit")
    tx.add_argument("--group", default=None, choices=GROUPINGS,
                    help="print words, each the sum or the largest-magnitude score of its subword tokens")
    tx.add_argument("--html", default=None, type=out_file, metavar="FILE",
                    help="write the coloured text of every method as one HTML snippet")
    tx.set_defaults(handler=cmd_text)

    sa = commands.add_parser(
        "text-sanity", help="sanity checks of token maps: cascading model randomisation and random logits",
        description="The cascading model randomisation (Adebayo et al. 2018, arXiv:1810.03292) on TEXT: the "
        "classifier head, then each encoder layer from the top, then the embeddings are re-initialised on a copy "
        "of the model, and each method's map is compared with the original (Spearman rank correlation of |scores|); "
        f"and the random-logit test ({SIXT}): the target's map against a random other class's.")
    _add_common(sa, "", "logit")
    sa.set_defaults(handler=cmd_text_sanity)

    fa = commands.add_parser(
        "text-faithfulness", help="comprehensiveness, sufficiency and deletion/insertion over tokens",
        description=f"ERASER's comprehensiveness and sufficiency ({DEYOUNG}) as AOPC over bins of the top-scored "
        "tokens, and deletion/insertion curves over tokens, for each method and a seeded random ranking.")
    _add_common(fa, "the random control is always added", "probability")
    fa.add_argument("--removal", default="delete", choices=REMOVALS,
                    help="how a removed token is removed: deleted from the text and the rest re-tokenised (ferret's "
                    "convention), or replaced in place by [MASK] or [PAD] (default: %(default)s)")
    fa.add_argument("--bins", default=None, type=percentages, metavar="P[,P…]",
                    help="AOPC bins in percent of the tokens (default: ERASER's 1,5,10,20,50)")
    fa.set_defaults(handler=cmd_text_faithfulness)

    wo = commands.add_parser(
        "text-words", help="which words carry the attribution across a text batch run",
        description="Read the run folder of a `batch` run over texts and print, per method, the words ranked by "
        "how often each is a row's top word (--sort), with their mean score across the rows (a word's score: the "
        "sum of its tokens') and their mean share of the row's |scores|; with --by, one table per predicted class "
        "(or label). "
        "A word that many rows of one class lean on without deciding it (a name, a topic) is a cue worth a look.")
    wo.add_argument("run", metavar="RUN_FOLDER", help="the --out folder of `batch` over a .txt file or a text column")
    wo.add_argument("--method", default=None, metavar="M", help="one of the run's methods (default: each)")
    wo.add_argument("--target", default=None, metavar="T",
                    help="one of the run's targets (default: the first the run was given, e.g. top1)")
    wo.add_argument("--by", default=None, choices=list(WORDS_BY),
                    help="one table per predicted class, or per label (a list's label column)")
    wo.add_argument("--sort", default="top", choices=WORD_SORTS,
                    help="rank words by how often each is a row's top word (a word many rows lean on: the Batch "
                    "page's default too), mean score, mean share or rows (default: %(default)s)")
    wo.add_argument("--top", default=15, type=positive_int, metavar="N", help="words per table (default: 15)")
    wo.add_argument("--min-rows", default=3, type=positive_int, metavar="N",
                    help="leave out words in fewer rows (default: 3)")
    wo.set_defaults(handler=cmd_text_words)


def _prepare(args: argparse.Namespace):
    """Methods and params checked before the model loads; the model; the target checked against it."""
    methods = text_method_names(args.methods, TEXT_METHODS)
    params = method_params(args.param, methods)
    bundle = load_cli_text_model(args, pick_device(args.device))
    TargetSpec(args.target, 1, bundle.categories, args.objective)
    return methods, params, bundle


def _class(index: int, categories) -> str:
    return categories[index] if 0 <= index < len(categories) else str(index)


def _prediction(bundle, logits) -> tuple[str, list[dict[str, Any]]]:
    top = top_predictions(logits, bundle.categories, min(3, len(bundle.categories)))
    said = ", ".join(f"{t['name']} {t['probability']:.1%}" for t in top)
    return f"model {bundle.name}: predicted {said}", top


def cmd_text(args: argparse.Namespace) -> int:
    """Print each method's token (or word) scores; write the JSON and the HTML when asked."""
    methods, params, bundle = _prepare(args)
    maps = explain_text(bundle, args.text, methods, [args.target], objective=args.objective, seed=args.seed,
                        params=params)
    first = maps[(methods[0], args.target)]
    line, top = _prediction(bundle, first.record.logits)
    explained = " vs ".join(_class(i, bundle.categories) for i in first.record.target)
    print(f"{line}\ntarget: {explained} ({args.target}), objective {args.objective}")
    for note in [*bundle.notes, *filter(None, [first.encoded.truncation_note()])]:
        print(f"note: {note}")
    encoded = first.encoded
    for method in methods:
        token_map = maps[(method, args.target)]
        reduction = REDUCTION_SAID[reduction_of(method, token_map.record.params)]
        unit = f"words ({'sum' if args.group == 'sum' else 'largest magnitude'} of their tokens)" if args.group \
            else "tokens"
        print(f"\n{method}: {METHODS[method].display_name}, {reduction}; {unit}")
        for note in token_map.record.notes:
            print(f"  note: {note}")
        if args.group:
            pairs = list(zip(encoded.word_texts, group_words(token_map.scores, encoded, args.group), strict=True))
        else:
            pairs = [(encoded.tokens[i], token_map.scores[i]) for i in encoded.content]
        width = max(len(name) for name, _ in pairs)
        for name, score in pairs:
            print(f"  {name:<{width}}  {score:+.6g}")
    if args.json is not None:
        payload = {"model": bundle.name, "text": args.text, "target": args.target, "objective": args.objective,
                   "predictions": top, "maps": [maps[(m, args.target)].as_json(bundle.categories) for m in methods]}
        write_file(args.json, json.dumps(payload, indent=2, allow_nan=False) + "\n")
        print(f"\n{args.json}")
    if args.html is not None:
        view = TokenView(sign="signed", group=args.group or "")
        panels = [token_html(encoded, maps[(m, args.target)].scores, view, title=METHODS[m].display_name)
                  for m in methods]
        write_file(args.html, text_document(f"{bundle.name}: {args.text[:60]}", "\n".join(panels),
                                            caption=view.grouping_said(encoded)))
        print(f"{args.html}")
    return 0


def _cell(value: float) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:+.3f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(f"{cell:<{w}}" for cell, w in zip(row, widths, strict=True)) for row in [header, *rows])


def _floats(values) -> list[float | None]:
    return [None if not math.isfinite(float(v)) else float(v) for v in np.asarray(values, dtype=np.float64).ravel()]


def cmd_text_sanity(args: argparse.Namespace) -> int:
    """Print each method's similarity per cascade step and its random-logit similarity; write the JSON."""
    methods, params, bundle = _prepare(args)
    result = text_sanity(bundle, args.text, methods, args.target, objective=args.objective, seed=args.seed,
                         params=params)
    header = ["method", *[s.label for s in result.steps], "random logit"]
    rows = [[m, *[_cell(s.similarity[m]) for s in result.steps], _cell(result.random_logit.get(m, math.nan))]
            for m in methods]
    print("Spearman rank correlation of |token scores| with the original map (1: unchanged, 0: unrelated)")
    print(_table(header, rows))
    for note in result.notes:
        print(f"note: {note}")
    if args.json is not None:
        payload = {"model": bundle.name, "text": args.text, "target": args.target, "objective": args.objective,
                   "seed": args.seed, "tokens": list(result.encoded.tokens),
                   "original": {m: _floats(v) for m, v in result.original.items()},
                   "steps": [{"label": s.label, "similarity": {m: _floats([v])[0] for m, v in s.similarity.items()},
                              "maps": {m: _floats(v) for m, v in s.maps.items()}} for s in result.steps],
                   "random_logit": {m: _floats([v])[0] for m, v in result.random_logit.items()},
                   "notes": list(result.notes)}
        write_file(args.json, json.dumps(payload, indent=2, allow_nan=False) + "\n")
        print(f"\n{args.json}")
    return 0


def cmd_text_faithfulness(args: argparse.Namespace) -> int:
    """Print each method's (and the random control's) AOPC and curve AUCs; write the JSON."""
    methods, params, bundle = _prepare(args)
    bins = tuple(args.bins) if args.bins else ERASER_BINS
    result = text_faithfulness(bundle, args.text, methods, args.target, removal=args.removal, bins=bins,
                               objective=args.objective, seed=args.seed, params=params)
    header = ["method", "comprehensiveness ↑", "sufficiency ↓", "deletion AUC ↓", "insertion AUC ↑"]
    rows = [[r.method, _cell(r.comprehensiveness), _cell(r.sufficiency), _cell(r.deletion_auc),
             _cell(r.insertion_auc)] for r in result.rows]
    explained = " vs ".join(_class(i, bundle.categories) for i in result.target)
    print(f"target: {explained}; objective {result.objective}; removed tokens are {REMOVAL_SAID[result.removal]}")
    print(_table(header, rows))
    for note in result.notes[1:]:
        print(f"note: {note}")
    if args.json is not None:
        payload = {"model": bundle.name, "text": args.text, "target": list(result.target), "removal": result.removal,
                   "objective": result.objective, "bins": list(result.bins),
                   "curve_fractions": _floats(result.curve_fractions), "notes": list(result.notes),
                   "rows": [{"method": r.method, "comprehensiveness": _floats([r.comprehensiveness])[0],
                             "sufficiency": _floats([r.sufficiency])[0], "deletion_auc": _floats([r.deletion_auc])[0],
                             "insertion_auc": _floats([r.insertion_auc])[0], "deletion": _floats(r.deletion),
                             "insertion": _floats(r.insertion)} for r in result.rows]}
        write_file(args.json, json.dumps(payload, indent=2, allow_nan=False) + "\n")
        print(f"\n{args.json}")
    return 0


def _text_run(folder: str) -> tuple[dict[str, Any], pd.DataFrame]:
    """The manifest and table of a text batch run; a SaliencyError that says what a run folder is otherwise."""
    path = Path(folder)
    expected = "the --out folder of `python -m explainers batch TEXTS.txt --out DIR`"
    if not path.exists():
        raise SaliencyError(f"the run folder {folder!r} does not exist; expected {expected}")
    if not path.is_dir():
        raise SaliencyError(f"{folder!r} is a file; expected a run folder, {expected}")
    manifest = read_manifest(path)
    table = read_table(path)
    if manifest.get("modality") != "text" or "word_scores" not in table.columns:
        raise ParameterError(f"{folder!r} is a run over images; text-words reads a run over texts ({expected})")
    return manifest, table


def _run_target(manifest: dict[str, Any], rows: pd.DataFrame, asked: str | None) -> str:
    """The target asked for, or the first of the run's targets that has explained rows."""
    have = [str(t) for t in pd.unique(rows["target"].astype(str))]
    if asked is not None:
        if asked not in have:
            raise ParameterError(f"target {asked!r} is not in this run; it has {', '.join(have)}")
        return asked
    listed = [str(t) for t in manifest.get("settings", {}).get("targets", [])]
    return next((t for t in listed if t in have), have[0])


def _share(value: float) -> str:
    return f"{value:.3f}" if math.isfinite(value) else "n/a"


def cmd_text_words(args: argparse.Namespace) -> int:
    """Print the word table of a text run: per method (and class with --by), the top words."""
    manifest, table = _text_run(args.run)
    rows = table[table["error"].isna() & table["method"].notna()]
    if rows.empty:
        raise SaliencyError(f"{args.run!r} has no explained rows ({len(table)} error rows): nothing to read")
    present = {str(m) for m in rows["method"]}
    listed = [str(m) for m in manifest.get("settings", {}).get("methods", [])]
    methods = [m for m in listed if m in present] + sorted(present - set(listed))  # the run's own order
    if args.method is not None and args.method not in methods:
        raise ParameterError(f"method {args.method!r} is not in this run; it has {', '.join(methods)}")
    target = _run_target(manifest, rows, args.target)
    by = WORDS_BY.get(args.by) if args.by else None
    if by is not None and not rows[by].notna().any():
        raise ParameterError("the run's texts have no labels (a .csv/.parquet list's label column gives them); "
                             "use --by predicted")
    texts = rows["path"].nunique()
    print(f"run {args.run}: model {manifest.get('settings', {}).get('model', '?')}, {texts} texts, target {target}; "
          f"words in at least {args.min_rows} rows, sorted by {args.sort}")
    print("mean score: the word's score (its tokens' sum) averaged over the rows it is in; share: of the row's "
          "|scores|; top: rows where it scores highest")
    for method in [args.method] if args.method else methods:
        words = word_table(rows, method, by=by, min_rows=args.min_rows, sort=args.sort, target=target)
        chosen = rows[(rows["method"] == method) & (rows["target"].astype(str) == target)]
        groups = [(None, words)] if by is None else [(name, words[words[by] == name])
                                                      for name in sorted(chosen[by].dropna().unique())]
        for name, part in groups:
            count = len(chosen) if name is None else int((chosen[by] == name).sum())
            where = "" if name is None else f", {args.by} {name}"
            print(f"\n{method}{where}: {count} rows")
            if part.empty:
                print("  no word in enough rows")
                continue
            lines = _table(["  word", "rows", "mean score", "share", "top", "top rate"],
                           [[f"  {w}", str(r), f"{s:+.4g}", _share(sh), str(t), f"{tr:.0%}"]
                            for w, r, s, sh, t, tr in zip(part["word"], part["rows"], part["mean_score"],
                                                           part["mean_share"], part["top"], part["top_rate"],
                                                           strict=True)][:args.top])
            print("\n".join(line.rstrip() for line in lines.splitlines()))
    return 0
