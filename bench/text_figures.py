"""The text figures the closing note of issue 22 quotes, reproduced on the shipped model (``planted_reviews``).

    .venv/bin/python bench/text_figures.py [--quick] [--sentences 200] [--checks 20] [--batch 200] [--seed 0]
                                           [--out bench/results]

Four parts, each printed as a Markdown table with its wall time, and all written to
``bench/results/text-figures-<date>.md``:

(a) evidence: per text method, the share of |attribution| on the planted evidence words (``evidence_share``) and
    the token pointing game (``evidence_hit``: is the top token an evidence token?) over ``--sentences`` held-out
    corpus sentences, each explained for its own class, beside uniform random scores (the control) and the chance
    level (the evidence tokens' share of the tokens);
(b) faithfulness: ERASER's comprehensiveness and sufficiency (DeYoung et al. 2020, arXiv:1911.03429) and the
    deletion/insertion AUCs over tokens, averaged over ``--checks`` sentences, removal "delete" and "mask";
(c) sanity: the cascade's Spearman similarity per step (Adebayo et al. 2018, arXiv:1810.03292) and the
    random-logit similarity (Sixt et al. 2020, arXiv:1912.09818), mean over ``--checks`` sentences;
(d) the spurious word: a batch run (``explainers.batch``, local engine, integrated gradients, target top1) over
    ``--batch`` sentences without evidence in which the name appears at the same rate in every class, then
    ``word_table``: the words by mean score, and how often each is the top word of a row predicted positive; and
    the same sentences with the name forced in and out (every other word the same), predicted positive how often.

``--quick``: 20 sentences for (a), 4 for (b) and (c), 40 for (d). Torch runs on one thread (stable timings).
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from common import RESULTS, ROOT

from explainers.batch import Settings, read_table, run, word_table
from explainers.models.text import DEFAULT_TEXT_MODEL, load_text_model
from explainers.registry import METHODS
from explainers.text.corpus import (
    CLASSES,
    HELD_OUT,
    SPURIOUS_CLASS,
    SPURIOUS_WORD,
    TEST_SEED_OFFSET,
    CorpusConfig,
    make_corpus,
    sentence,
)
from explainers.trust.text import corpus_evidence, text_faithfulness, text_sanity

# the methods the figures cover; "random" is the registry's random map (in the sanity checks) and, in (a) and (b),
# the checks' own random control (uniform scores, a random ranking), which they add themselves
METHODS_SHOWN = ("vanilla", "input_x_gradient", "integrated_gradients", "smoothgrad", "occlusion", "kernel_shap",
                 "lime", "attention_rollout", "attnlrp", "random")
CONTROL = "random"
REMOVALS_SHOWN = ("delete", "mask")
# (d): no evidence word, the name in the same share of every class's sentences (no correlation in these texts)
NO_EVIDENCE = CorpusConfig(weak_share=1.0, spurious_rates=(0.3, 0.3, 0.3))
BATCH_METHOD = "integrated_gradients"
TOP_WORDS = 10
COST_PARAMS = ("n_steps", "n_samples", "base", "unit", "baseline", "noise_level", "discard_ratio")


def fmt(value: float, digits: int = 3) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def timed(label: str, part: Callable[[], str], timings: dict[str, float]) -> str:
    started = time.perf_counter()
    text = part()
    timings[label] = time.perf_counter() - started
    return f"{text}\n\n_wall time: {timings[label]:.1f} s_"


def method_params(method: str) -> str:
    """The parameters that set a method's cost and reference (steps, samples, base, unit, baseline), at their text
    defaults, those that apply only (IG's steps under SmoothGrad only with IG as its base)."""
    declared = METHODS[method].params_for("text")
    defaults = METHODS[method].defaults("text")
    shown = [f"{name}={value}" for name, value in defaults.items() if name in COST_PARAMS
             and declared[name].applies(defaults)]
    return ", ".join(shown) or "—"


def part_evidence(bundle, count: int, seed: int) -> str:
    reviews = make_corpus(count, seed + TEST_SEED_OFFSET, HELD_OUT)
    methods = [m for m in METHODS_SHOWN if m != CONTROL]
    result = corpus_evidence(bundle, reviews, methods, seed=seed)
    rows = []
    for row in result.rows:
        name = "random (uniform scores: the control)" if row.method == CONTROL else row.method
        rows.append([name, method_params(row.method) if row.method != CONTROL else "—", fmt(row.share),
                     fmt(row.hit), fmt(row.spurious_share)])
    head = (f"**(a) Evidence share and token pointing game** — {count} held-out sentences (seed "
            f"{seed + TEST_SEED_OFFSET}, every sentence with evidence), each explained for its own class; content "
            f"tokens only. Chance (a uniform map): share **{fmt(result.chance)}**; {result.spurious} sentences name "
            f"{SPURIOUS_WORD.capitalize()} (the last column: the mean share on the name over those).")
    return head + "\n\n" + table(["method", "parameters", "evidence share", "top token on evidence",
                                  f"share on {SPURIOUS_WORD.capitalize()}"], rows)


def part_faithfulness(bundle, count: int, seed: int) -> str:
    reviews = make_corpus(count, seed + TEST_SEED_OFFSET, HELD_OUT)
    methods = [m for m in METHODS_SHOWN if m != CONTROL]
    sections = []
    for removal in REMOVALS_SHOWN:
        values: dict[str, list[list[float]]] = {}
        for review in reviews:
            result = text_faithfulness(bundle, review.text, methods, "top1", removal=removal, seed=seed)
            for row in result.rows:
                values.setdefault(row.method, []).append([row.comprehensiveness, row.sufficiency, row.deletion_auc,
                                                          row.insertion_auc])
        rows = []
        for method, per_text in values.items():
            means = np.nanmean(np.array(per_text, dtype=np.float64), axis=0)
            name = "random (a random ranking: the control)" if method == CONTROL else method
            rows.append([name, *(fmt(v) for v in means)])
        sections.append(f"removal **{removal}**, objective probability, target top1, mean over {count} "
                        f"sentences:\n\n" + table(["method", "comprehensiveness ↑", "sufficiency ↓",
                                                   "deletion AUC ↓", "insertion AUC ↑"], rows))
    head = ("**(b) Faithfulness over tokens** — ERASER's AOPC over bins 1, 5, 10, 20, 50 % (ferret's convention) "
            "and deletion/insertion curves of the target's probability; a faithful method beats the random ranking.")
    return head + "\n\n" + "\n\n".join(sections)


def part_sanity(bundle, count: int, seed: int) -> str:
    reviews = make_corpus(count, seed + TEST_SEED_OFFSET, HELD_OUT)
    methods = list(METHODS_SHOWN)
    steps: list[str] = []
    similarity: dict[str, dict[str, list[float]]] = {m: {} for m in methods}
    logit: dict[str, list[float]] = {m: [] for m in methods}
    for review in reviews:
        result = text_sanity(bundle, review.text, methods, "top1", seed=seed)
        steps = steps or [s.label for s in result.steps]
        for step in result.steps:
            for method in methods:
                similarity[method].setdefault(step.label, []).append(step.similarity[method])
        for method in methods:
            logit[method].append(result.random_logit.get(method, math.nan))

    def mean(values: list[float]) -> float:
        defined = [v for v in values if math.isfinite(v)]
        return float(np.mean(defined)) if defined else math.nan

    names = {CONTROL: "random (the registry's random map: blind to the model and the class, 1 by construction)"}
    rows = [[names.get(m, m), *(fmt(mean(similarity[m][s]), 2) for s in steps), fmt(mean(logit[m]), 2)]
            for m in methods]
    head = (f"**(c) Sanity checks** — Spearman rank correlation of |token scores| with the original map after each "
            f"cascade step (blocks re-initialised from the top), and between the top class's map and a random other "
            f"class's (random logit); mean over {count} sentences. 1: unchanged, 0: unrelated; a method that passes "
            "falls towards 0.")
    return head + "\n\n" + table(["method", *steps, "random logit"], rows)


def positive_share(bundle, texts: Sequence[str]) -> float:
    """The share of ``texts`` the model predicts as the spurious word's class."""
    positive = CLASSES.index(SPURIOUS_CLASS)
    hits = 0
    for text in texts:
        scored = bundle.scored(text)
        with torch.no_grad():
            hits += int(scored.model(scored.inputs).argmax(dim=1).item() == positive)
    return hits / max(1, len(texts))


def part_spurious(bundle, count: int, seed: int) -> str:
    test_seed = seed + TEST_SEED_OFFSET
    reviews = make_corpus(count, test_seed, NO_EVIDENCE)
    named = sum(r.spurious is not None for r in reviews)
    with tempfile.TemporaryDirectory(prefix="text-figures-") as folder:
        source = Path(folder) / "no-evidence.txt"
        source.write_text("\n".join(r.text for r in reviews) + "\n", encoding="utf-8")
        out = Path(folder) / "run"
        settings = Settings(model=DEFAULT_TEXT_MODEL, methods=[BATCH_METHOD], targets=["top1"], seed=seed,
                            modality="text")
        run(str(source), str(out), settings, engine="local", workers=0, bundle=bundle)
        frame = read_table(out)
    overall = word_table(frame, BATCH_METHOD, min_rows=3, sort="mean_score").head(TOP_WORDS)
    by_class = word_table(frame, BATCH_METHOD, by="prediction_name", min_rows=3, sort="top")
    positive = by_class[by_class["prediction_name"] == SPURIOUS_CLASS].head(TOP_WORDS)
    predicted = int((frame["prediction_name"] == SPURIOUS_CLASS).sum())

    def rows_of(words) -> list[list[str]]:
        return [[f"**{w}**" if w == SPURIOUS_WORD else w, str(r), fmt(s), fmt(sh), str(t), fmt(tr, 2)]
                for w, r, s, sh, t, tr in zip(words["word"], words["rows"], words["mean_score"], words["mean_share"],
                                              words["top"], words["top_rate"], strict=True)]

    header = ["word", "rows", "mean score", "mean share", "top word of", "top rate"]
    with_name = [sentence(i, test_seed, NO_EVIDENCE, spurious=True).text for i in range(count)]
    without = [sentence(i, test_seed, NO_EVIDENCE, spurious=False).text for i in range(count)]
    share_with, share_without = positive_share(bundle, with_name), positive_share(bundle, without)
    head = (f"**(d) The spurious word, found by a batch run** — {count} sentences without evidence (seed {test_seed}, "
            f"{named} name {SPURIOUS_WORD.capitalize()}: the name at the same rate, "
            f"{NO_EVIDENCE.spurious_rates[0]:.0%}, in every class, so it tells nothing about these labels); "
            f"`batch` with {BATCH_METHOD} (default parameters), target top1, "
            f"local engine; then `word_table` (words in at least 3 rows; scores are each word's summed token "
            "scores).")
    overall_text = f"All rows, the {TOP_WORDS} words of highest mean score:\n\n" + table(header, rows_of(overall))
    positive_text = (f"The {predicted} rows predicted {SPURIOUS_CLASS}, the {TOP_WORDS} words most often the row's "
                     f"top word:\n\n" + table(header, rows_of(positive)))
    counterfactual = (f"The same {count} sentences with the name forced in, then out (every other word the same): "
                      f"predicted {SPURIOUS_CLASS} **{share_with:.1%}** with {SPURIOUS_WORD.capitalize()}, "
                      f"**{share_without:.1%}** without.")
    return "\n\n".join([head, overall_text, positive_text, counterfactual])


def git_state() -> str:
    try:
        found = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True,
                               timeout=10)
        return found.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="20 / 4 / 4 / 40 sentences: checks every part")
    parser.add_argument("--sentences", type=int, default=None, help="(a) held-out sentences (default 200)")
    parser.add_argument("--checks", type=int, default=None, help="(b) and (c) sentences (default 20)")
    parser.add_argument("--batch", type=int, default=None, help="(d) sentences without evidence (default 200)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", nargs="+", default=None, choices=("a", "b", "c", "d"), help="run these parts only")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder of the Markdown report")
    args = parser.parse_args()
    sentences = args.sentences or (20 if args.quick else 200)
    checks = args.checks or (4 if args.quick else 20)
    count = args.batch or (40 if args.quick else 200)
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    command = " ".join(["python bench/text_figures.py", *sys.argv[1:]])
    loading = time.perf_counter()
    bundle = load_text_model(DEFAULT_TEXT_MODEL)
    loading = time.perf_counter() - loading
    parts = {
        "a": ("evidence", lambda: part_evidence(bundle, sentences, args.seed)),
        "b": ("faithfulness", lambda: part_faithfulness(bundle, checks, args.seed)),
        "c": ("sanity", lambda: part_sanity(bundle, checks, args.seed)),
        "d": ("spurious word", lambda: part_spurious(bundle, count, args.seed)),
    }
    header = (f"# Text figures ({time.strftime('%Y-%m-%d %H:%M')})\n\n```\n{command}\n```\n\n"
              f"Model **{bundle.name}** ({len(bundle.categories)} classes: {', '.join(bundle.categories)}), loaded in "
              f"{loading:.1f} s; torch {torch.__version__} on the CPU, 1 thread; code at {git_state()}. Every "
              "method with its text defaults; seed " f"{args.seed}.")
    print(header, flush=True)
    sections = [header]
    timings: dict[str, float] = {}
    for key, (label, part) in parts.items():
        if args.only and key not in args.only:
            continue
        text = timed(label, part, timings)
        print("\n" + text, flush=True)
        sections.append(text)
    total = ", ".join(f"{label} {seconds:.1f} s" for label, seconds in timings.items())
    footer = f"Wall time: {total}; in all {sum(timings.values()):.1f} s."
    print("\n" + footer)
    sections.append(footer)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"text-figures-{time.strftime('%Y%m%d-%H%M%S')}.md"
    path.write_text("\n\n".join(sections) + "\n", encoding="utf-8")
    print(f"\n{path}")


if __name__ == "__main__":
    main()
