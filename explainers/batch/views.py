"""Views of a run's table that reveal a spurious cue: rows ranked by a statistic, mean maps per class."""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
import pandas as pd

from ..errors import ParameterError
from ..render import resize
from .pipeline import box_fractions, map_statistics
from .store import read_maps

VIEWS = {
    "outside": "mass outside the object: 1 − box mass when the run has boxes (rows without one left out), else "
               "the border mass",
    "confident_mistakes": "wrong predictions, the most confident first",
    "unsure_mistakes": "wrong predictions, the least confident first",
}
MEAN_SIZE = 56  # the side of a class's mean map (a stored map is 56×56 or coarser on a 224 input)


def ranked(table, view: str):
    """The table's explained rows ranked for one of ``VIEWS`` (error rows dropped); for "outside" the score is in
    an ``outside`` column."""
    if view not in VIEWS:
        raise ParameterError(f"view must be one of {', '.join(VIEWS)}, got {view!r}")
    rows = table[table["error"].isna() & table["map_key"].notna()]
    if view == "outside":
        boxed = rows["box_mass"].notna().any()
        rows = rows[rows["box_mass" if boxed else "border_mass"].notna()].copy()
        rows["outside"] = 1.0 - rows["box_mass"].astype(float) if boxed else rows["border_mass"].astype(float)
        return rows.sort_values("outside", ascending=False, kind="stable")
    mistakes = rows[rows["correct"].eq(False)]
    return mistakes.sort_values("probability", ascending=view == "unsure_mistakes", kind="stable")


def mean_maps(out: str | os.PathLike, rows, by: str = "label_name", size: int = MEAN_SIZE,
              on_error: Callable[[str, Exception], object] | None = None) -> list[tuple[str, int, np.ndarray]]:
    """(class, images, mean map) for each value of column ``by`` (e.g. "label_name", "prediction_name"), classes
    sorted by name. Each stored map counts as |map| resized to ``size`` × ``size`` and scaled to sum 1 (where its
    mass lies, as the statistics measure it), so no image's raw scale dominates; all-zero maps are left out.
    Each shard is opened once. A map file outside the run's maps/ is refused; with ``on_error``, a shard or map
    that cannot be read is reported (``on_error(map_file, error)``) and left out instead of ending the call."""
    picked = rows[rows[by].notna() & rows["map_key"].notna()]
    grouped: dict[str, list[np.ndarray]] = {}
    for index, stored in read_maps(out, picked, on_error):
        values = np.abs(resize(stored, (size, size)))
        total = float(values.sum())
        if np.isfinite(total) and total > 0:
            grouped.setdefault(str(picked.at[index, by]), []).append(values / total)
    return [(name, len(maps), np.mean(maps, axis=0)) for name, maps in sorted(grouped.items())]


# ---- chance level of the "outside" view ------------------------------------------------------------------------

ABOVE_CHANCE = 0.2  # "above chance": a fifth of the way (or more) from chance to all of the mass outside


def chance_level(map_h: int, map_w: int, box: tuple[float, float, float, float] | None = None) -> float:
    """The "outside" score of a map that spreads its mass evenly over its ``map_h`` × ``map_w`` cells, i.e. one
    that knows nothing of the image: the border's share of the area (the outer ``BORDER`` of each side, 44%), or
    with ``box`` (fractions x0, y0, x1, y1 of the width and height) the share of the area outside the box. Measured
    by ``map_statistics`` itself on a uniform map, so it follows the statistic's border width and cell weighting."""
    uniform = map_statistics(np.ones((max(1, int(map_h)), max(1, int(map_w))), np.float32), box)
    return 1.0 - uniform["box_mass"] if box is not None else uniform["border_mass"]


def chance_levels(rows, image_size: Callable[[str], tuple[int, int] | None] | None = None) -> pd.Series:
    """The chance level of each row of ``ranked(table, "outside")``: the border's share of the area when its score
    is the border mass, else (boxes) the share of the image outside the row's box, for which ``image_size(path)``
    gives the original (width, height) (NaN when it cannot)."""
    boxed = rows["box_mass"].notna().any() if len(rows) else False
    levels = []
    for _, row in rows.iterrows():
        if not boxed:
            levels.append(chance_level(row["map_h"], row["map_w"]))
            continue
        size = image_size(str(row["path"])) if image_size is not None else None
        fractions = box_fractions(row["box"], size)
        levels.append(float("nan") if fractions is None else chance_level(row["map_h"], row["map_w"], fractions))
    return pd.Series(levels, index=rows.index, dtype=float)


def against_chance(score: float, chance: float) -> str:
    """"above" when ``score`` has gone at least ``ABOVE_CHANCE`` of the way from ``chance`` to 1 (a map that
    gathers its mass outside: worth a look), "below" when it has gone as far towards 0 (the mass sits on the
    object), else "at" (no more outside than an evenly spread map); "unknown" without a chance level."""
    if not (np.isfinite(score) and np.isfinite(chance)):
        return "unknown"
    if score >= chance + ABOVE_CHANCE * (1.0 - chance):
        return "above"
    if score <= chance - ABOVE_CHANCE * chance:
        return "below"
    return "at"


# ---- texts: which words the maps lean on, across rows ----------------------------------------------------------

WORDS_VIEW = ("per word, across a text run's rows: in how many rows it appears, its mean score (the sum of its "
              "tokens' scores; a word twice in a text counts once, with both scores added), its mean share of the "
              "row's |scores|, and how often it is the row's top word (the highest score): a word that pushes many "
              "rows towards their class without deciding it (a name, a topic) is a cue worth a look")
WORD_SORTS = ("mean_score", "mean_share", "top", "rows")


def word_table(table, method: str | None = None, by: str | None = None, min_rows: int = 1,
               sort: str = "mean_score", target: str | None = None) -> pd.DataFrame:
    """:data:`WORDS_VIEW` over the explained rows of a text run (``read_table``), words lower-cased, for one
    ``method`` or each (a ``method`` column), and for each value of column ``by`` (e.g. "target_name") when
    given; words in fewer than ``min_rows`` rows left out (a word seen once says little). Sorted by ``sort``
    (one of ``WORD_SORTS``), highest first, then by top-word count. ``target`` keeps the rows of one of the run's
    targets ("top1", "label", ...): a run with several explains each text once per target, and the maps of the
    runner-up and of the top class mean different things."""
    if sort not in WORD_SORTS:
        raise ParameterError(f"sort must be one of {', '.join(WORD_SORTS)}, got {sort!r}")
    if "word_scores" not in table.columns:
        raise ParameterError("the word view reads a run over texts (its table has words and word_scores); this run "
                             "explains images")
    rows = table[table["error"].isna() & table["method"].notna()]
    if method is not None:
        have = sorted(set(rows["method"]))
        if method not in have:
            raise ParameterError(f"method {method!r} is not in this run; it has {', '.join(have) or 'no rows'}")
        rows = rows[rows["method"] == method]
    if target is not None:
        have = sorted(set(rows["target"].astype(str))) if "target" in rows.columns else []
        if str(target) not in have:
            raise ParameterError(f"target {target!r} is not in this run; it has {', '.join(have) or 'no rows'}")
        rows = rows[rows["target"].astype(str) == str(target)]
    if by is not None and by not in rows.columns:
        raise ParameterError(f"cannot group by {by!r}: not a column of the table")
    keys = ["method", *([by] if by else [])]
    counts: dict[tuple, dict[str, list[float]]] = {}
    for _, row in rows.iterrows():
        per_word: dict[str, float] = {}
        for word, score in zip(row["words"], row["word_scores"], strict=True):
            key = str(word).lower()
            per_word[key] = per_word.get(key, 0.0) + float(score)
        if not per_word:
            continue
        total = float(np.abs(list(per_word.values())).sum())
        top = max(per_word, key=per_word.__getitem__)
        group = tuple(row[k] for k in keys)
        for word, score in per_word.items():
            entry = counts.setdefault((*group, word), {"score": [], "share": [], "top": []})
            entry["score"].append(score)
            entry["share"].append(abs(score) / total if total > 0 else float("nan"))
            entry["top"].append(word == top)
    records = [{**dict(zip(keys, key[:-1], strict=True)), "word": key[-1], "rows": len(entry["score"]),
                "mean_score": float(np.mean(entry["score"])), "mean_share": _mean_defined(entry["share"]),
                "top": int(np.sum(entry["top"])), "top_rate": float(np.mean(entry["top"]))}
               for key, entry in counts.items() if len(entry["score"]) >= min_rows]
    columns = [*keys, "word", "rows", "mean_score", "mean_share", "top", "top_rate"]
    frame = pd.DataFrame.from_records(records, columns=columns)
    order = [sort, "top"] if sort != "top" else ["top", "mean_score"]
    return frame.sort_values(order, ascending=False, kind="stable").reset_index(drop=True)


def _mean_defined(values: list[float]) -> float:
    defined = [v for v in values if np.isfinite(v)]
    return float(np.mean(defined)) if defined else float("nan")
