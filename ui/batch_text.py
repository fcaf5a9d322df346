"""The Batch page's pieces for a run over texts: which words carry the attribution across the run
(``explainers.batch.views.word_table``), rows drawn as coloured text (``explainers.text.token_html``), and a small
run launched on an uploaded .txt or .csv file with the Text page's model.

A text run's table holds each row's per-token map (the tokenisation whole, one score per token, the words and their
summed scores): no map files, so no thumbnails; a row is drawn as its text (``explainers.batch.text.encoded_of``
gives back its tokens and words, nothing searched again), each token's background coloured by its score.
Everything in a run folder is data: a row whose tokens do not fit its text is that row's problem, said in its place.
"""

from __future__ import annotations

import csv
import io
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from explainers import METHODS, SaliencyError, batch
from explainers.batch.pipeline import Settings
from explainers.batch.text import TEXT_COLUMN, encoded_of, read_texts
from explainers.batch.views import WORD_SORTS, WORDS_VIEW, word_table
from explainers.models.text import DEFAULT_TEXT_MODEL
from explainers.registry import TEXT
from explainers.text import TokenView, token_html

from . import state
from .batch import Run, method_name, new_run_folder
from .method_docs import md_escape
from .text_models import TextModel, get_text_model

MAX_TEXTS = 500  # a run launched from the page: more belongs on the command line
TEXT_SOURCE_TYPES = ["txt", "csv"]
DEFAULT_METHODS = ("integrated_gradients",)  # the signed contribution: where a spurious word shows most plainly
TEXT_ROWS = 12  # rows drawn as coloured text per view
WORD_ROWS = 30  # words listed in the word table
PREVIEW_CHARS = 120  # of a text in the table
BY = {"prediction_name": "predicted class", "label_name": "label"}
SORT_LABELS = {"mean_score": "mean score", "top": "times the top word", "mean_share": "mean share of |scores|",
               "rows": "rows it is in"}
SORTS = {name: SORT_LABELS.get(name, name) for name in WORD_SORTS}
GROUPS = {"": "tokens", "sum": "words · sum"}
SIGNS = {"signed": "signed", "absolute": "magnitude"}


# ---- a run -----------------------------------------------------------------------------------------------------


def row_html(row: pd.Series, view: TokenView) -> str:
    """A text row drawn as coloured text (``token_html``) from its stored tokenisation (``encoded_of``), its own
    colour range; a SaliencyError when its map cannot be read."""
    return token_html(encoded_of(row), np.asarray(row["scores"], dtype=np.float64), view)


def top_word(row: pd.Series) -> tuple[str | None, float]:
    """The row's word of highest summed score (lower-cased, repeated words added: as ``word_table`` counts)."""
    per_word: dict[str, float] = {}
    words, scores = row.get("words"), row.get("word_scores")
    if words is None or scores is None:
        return None, float("nan")
    for word, score in zip(words, scores, strict=False):
        per_word[str(word).lower()] = per_word.get(str(word).lower(), 0.0) + float(score)
    if not per_word:
        return None, float("nan")
    word = max(per_word, key=per_word.__getitem__)
    return word, per_word[word]


def preview(text: Any, limit: int = PREVIEW_CHARS) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def text_frame(rows: pd.DataFrame) -> pd.DataFrame:
    """What the table shows for a text run, one line per row of ``rows`` (same order)."""
    tops = [top_word(row) for _, row in rows.iterrows()]
    return pd.DataFrame({  # the text and its top word first: at 900 px the table shows little more
        "text": [preview(t) for t in rows["text"]],
        "top word": [word for word, _ in tops],
        "its score": [score for _, score in tops],
        "prediction": rows["prediction_name"].to_numpy(),
        "probability": rows["probability"].astype(float).to_numpy(),
        "label": rows["label_name"].to_numpy(),
        "correct": rows["correct"].to_numpy(),
        "method": [method_name(m) for m in rows["method"]],
        "target": rows["target"].to_numpy(),
        "target class": rows["target_name"].to_numpy(),
        "cut tokens": rows["truncated_tokens"].fillna(0).astype(int).to_numpy(),
        "row": rows["path"].to_numpy(),
    })


def text_column_config() -> dict[str, Any]:
    return {
        "text": st.column_config.TextColumn("text", width="medium", help="The text (shortened here; select the row "
                                            "to see it whole, coloured by its map)"),
        "probability": st.column_config.ProgressColumn("probability", min_value=0.0, max_value=1.0, format="%.2f",
                                                       help="The top class's probability"),
        "correct": st.column_config.CheckboxColumn("correct", help="Prediction equals the label (empty: no label)"),
        "top word": st.column_config.TextColumn("top word", help="The word with the highest score (its tokens' sum) "
                                                "in this row's map"),
        "its score": st.column_config.NumberColumn("its score", format="%.3g"),
        "cut tokens": st.column_config.NumberColumn("cut tokens", help="Tokens cut off the end: the model reads a "
                                                    "limited number; the cut part is not explained"),
        "row": st.column_config.TextColumn("row", help="The source file and its line (or the list's row)"),
    }


# ---- the word table ----------------------------------------------------------------------------------------------


def targets_in(run: Run, rows: pd.DataFrame) -> list[str]:
    """The targets of ``rows``, in the order the run was given them."""
    have = {str(t) for t in rows["target"]}
    listed = [str(t) for t in run.settings.get("targets", [])]
    return [t for t in listed if t in have] + sorted(have - set(listed))


def methods_in(run: Run, rows: pd.DataFrame) -> list[str]:
    """The methods of ``rows``, in the order the run was given them."""
    have = {str(m) for m in rows["method"]}
    listed = [str(m) for m in run.settings.get("methods", [])]
    return [m for m in listed if m in have] + sorted(have - set(listed))


def class_rows(rows: pd.DataFrame, by: str, name: str | None) -> pd.DataFrame:
    """The rows whose ``by`` ("prediction_name" or "label_name") is ``name`` (None: every row)."""
    return rows if name is None else rows.loc[rows[by] == name]


def words_frame(rows: pd.DataFrame, method: str, target: str, min_rows: int, sort: str) -> pd.DataFrame:
    """The word table (``word_table``) of one method and target over ``rows``, as the page shows it."""
    words = word_table(rows, method, min_rows=min_rows, sort=sort, target=target).head(WORD_ROWS)
    return pd.DataFrame({
        "word": words["word"].to_numpy(),
        "rows": words["rows"].to_numpy(),
        "mean score": words["mean_score"].to_numpy(),
        "mean share": words["mean_share"].to_numpy(),
        "top word of": words["top"].to_numpy(),
        "top rate": words["top_rate"].to_numpy(),
    })


def words_column_config() -> dict[str, Any]:
    return {
        "mean score": st.column_config.NumberColumn("mean score", format="%.3g",
                                                    help="The word's score (the sum of its tokens'), averaged over "
                                                    "the rows it is in"),
        "mean share": st.column_config.NumberColumn("mean share", format="%.2f",
                                                    help="Its share of the row's |scores|, averaged"),
        "top word of": st.column_config.NumberColumn("top word of", help="Rows in which it is the top word"),
        "top rate": st.column_config.ProgressColumn("top rate", min_value=0.0, max_value=1.0, format="%.2f",
                                                    help="The share of its rows in which it is the top word"),
    }


def rows_with_word(rows: pd.DataFrame, word: str) -> pd.DataFrame:
    """The rows whose words include ``word`` (any case), the highest-scoring for it first."""
    scores = []
    for _, row in rows.iterrows():
        found = [float(s) for w, s in zip(row["words"], row["word_scores"], strict=False)
                 if str(w).lower() == word.lower()]
        scores.append(sum(found) if found else np.nan)
    scored = pd.Series(scores, index=rows.index, dtype=float)
    kept = scored.dropna().sort_values(ascending=False, kind="stable")
    return rows.loc[kept.index]


WORDS_SAID = WORDS_VIEW[0].upper() + WORDS_VIEW[1:]


# ---- drawing ---------------------------------------------------------------------------------------------------


def text_view(sign: str, group: str) -> TokenView:
    return TokenView(sign=sign, group=group)


def row_caption(row: pd.Series) -> str:
    """A drawn row's line: where it is from, the prediction, the method and target (plain text, escaped)."""
    label = row["label_name"] if pd.notna(row.get("label_name")) else "—"
    return md_escape(f"{row['path']} · label {label} · predicted {row['prediction_name']} "
                     f"({float(row['probability']):.0%}) · {method_name(row['method'])} for {row['target_name']}")


def draw_row(row: pd.Series, view: TokenView) -> bool:
    """A row's caption and its coloured text; a row that cannot be drawn says why in its place."""
    st.caption(row_caption(row))
    try:
        st.html(row_html(row, view))
    except SaliencyError as exc:
        st.warning(md_escape(str(exc)), icon=":material/warning:")
        return False
    return True


def draw_rows(rows: pd.DataFrame, view: TokenView, limit: int = TEXT_ROWS) -> int:
    """The first ``limit`` rows drawn (:func:`draw_row`); returns how many could be."""
    return sum(draw_row(row, view) for _, row in rows.head(limit).iterrows())


def text_mistakes(rows: pd.DataFrame) -> pd.DataFrame:
    """Wrong rows (label known, prediction differs), the most confident first."""
    wrong = rows.loc[rows["correct"].eq(False)]
    return wrong.sort_values("probability", ascending=False, kind="stable")


def scale_said(view: TokenView) -> str:
    colours = ("a diverging scale, red for positive scores and blue for negative ones (for a signed method: "
               "towards the target class and against it)" if view.sign == "signed"
               else "a sequential scale of magnitudes")
    return (f"Each row is coloured on its own range, {colours}; {view.grouping_said()}. Hover a token for its raw "
            "score.")


# ---- launching a run on a text file -----------------------------------------------------------------------------


def current_text_model() -> TextModel:
    """The Text page's model (the shipped default until one is picked there)."""
    return get_text_model(st.session_state.get(state.TEXT_MODEL) or DEFAULT_TEXT_MODEL)


def text_methods() -> list[str]:
    """The methods that apply to text, in the registry's order."""
    return [name for name, info in METHODS.items() if info.applies_to(TEXT)]


def csv_columns(upload: Any) -> list[str]:
    """The header of an uploaded CSV (empty when it has none or is not UTF-8)."""
    try:
        first = upload.getvalue().decode("utf-8").splitlines()[:1]
    except UnicodeDecodeError:
        return []
    return next(csv.reader(io.StringIO(first[0])), []) if first else []


def launch_texts(upload: Any, text_column: str | None, methods: Sequence[str], targets: Sequence[str],
                 model: TextModel, progress: Callable[[int, int], object] | None = None) -> str:
    """Write the uploaded .txt or .csv to a new temporary folder, run the batch over its texts there (local
    engine) on ``model`` and return the run folder, which this session (and no other) may open."""
    if upload is None:
        raise SaliencyError("upload a .txt file (one text a line) or a .csv list with a text column")
    if not methods or not targets:
        raise SaliencyError("pick at least one method and one target")
    name = Path(str(upload.name)).name or "texts.txt"
    suffix = Path(name).suffix.lower()
    if suffix not in (".txt", ".csv"):
        raise SaliencyError(f"expected a .txt file (one text a line) or a .csv list, got {name!r}")
    column = (text_column or TEXT_COLUMN).strip() if suffix == ".csv" else None
    root = new_run_folder()
    source = root / name
    source.write_bytes(upload.getvalue())
    bundle = model.bundle
    try:
        count = len(read_texts(str(source), bundle.categories, column))
    except SaliencyError:
        shutil.rmtree(root, ignore_errors=True)
        raise
    if count > MAX_TEXTS:
        shutil.rmtree(root, ignore_errors=True)
        raise SaliencyError(f"{name} holds {count} texts; a run from this page takes at most {MAX_TEXTS} (run more "
                            "with `python -m explainers batch TEXTS --out DIR`, then open DIR here)")
    out = root / "run"
    settings = Settings(model=model.id, methods=list(methods), targets=list(targets), modality=TEXT,
                        text_column=column)
    batch.run(str(source), str(out), settings, engine="local", workers=0, bundle=bundle, progress=progress)
    return str(out)

