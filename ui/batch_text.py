"""The Batch page's pieces for a run over texts: which words carry the attribution across the run
(``explainers.batch.views.word_table``), rows drawn as coloured text (``explainers.text.token_html``, with the
Text page's view controls), and a small run launched on an uploaded .txt or .csv file with the Text page's model
(loaded only once a file is there: an image-only visit never loads it). The page calls :func:`text_launcher` and
:func:`text_run_view`.

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

from explainers import SaliencyError, batch
from explainers.batch.pipeline import Settings
from explainers.batch.text import TEXT_COLUMN, encoded_of, read_texts
from explainers.batch.views import WORD_SORTS, WORDS_VIEW, word_table
from explainers.registry import TEXT
from explainers.text import TokenView, token_html

from . import state
from .batch import (
    TARGET_CHOICES,
    Filters,
    Run,
    filter_rows,
    method_name,
    new_run_folder,
    plural,
    row_filters,
    selected_row,
    table_key,
)
from .controls import method_label
from .method_docs import md_escape
from .text import drawn_view, sign_free, text_methods, view_control
from .text_models import TextModel, get_text_model, picked_model_id, text_model_label

MAX_TEXTS = 500  # a run launched from the page: more belongs on the command line
TEXT_SOURCE_TYPES = ["txt", "csv"]
DEFAULT_METHODS = ("integrated_gradients",)  # the signed contribution: where a spurious word shows most plainly
TEXT_ROWS = 12  # rows drawn as coloured text per view
WORD_ROWS = 30  # words listed in the word table
PREVIEW_CHARS = 120  # of a text in the table
BY = {"prediction_name": "predicted class", "label_name": "label"}
SORT_LABELS = {"mean_score": "mean score", "top": "times the top word", "mean_share": "mean share of |scores|",
               "rows": "rows it is in"}
# the top words first: on a run over texts without evidence, the name the model leans on (the planted "Morgan")
# heads it over every class, where the mean score can put "the" first (a word in every row)
SORTS = {name: SORT_LABELS.get(name, name) for name in ("top", *(s for s in WORD_SORTS if s != "top"))}
# where a CSV's texts usually are (any case); else its first column that is not all numbers
TEXT_COLUMN_NAMES = (TEXT_COLUMN, "sentence", "review")


# ---- a run -----------------------------------------------------------------------------------------------------


def row_html(row: pd.Series, view: TokenView) -> str:
    """A text row drawn as coloured text (``token_html``) from its stored tokenisation (``encoded_of``), its own
    colour range; a SaliencyError when its map cannot be read."""
    return token_html(encoded_of(row), np.asarray(row["scores"], dtype=np.float64), view)


def row_view(row: pd.Series, view: TokenView) -> TokenView:
    """The view a row is drawn with: the page's, a map with no negative side on the magnitude scale
    (``ui.text.drawn_view``, as on the Text page)."""
    return drawn_view(view, sign_free(str(row["method"]), None, np.asarray(row["scores"], dtype=np.float64)))


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


def row_caption(row: pd.Series) -> str:
    """A drawn row's line: where it is from, the prediction, the method and target (plain text, escaped)."""
    label = row["label_name"] if pd.notna(row.get("label_name")) else "—"
    return md_escape(f"{row['path']} · label {label} · predicted {row['prediction_name']} "
                     f"({float(row['probability']):.0%}) · {method_name(row['method'])} for {row['target_name']}")


def draw_row(row: pd.Series, view: TokenView) -> bool:
    """A row's caption and its coloured text; a row that cannot be drawn says why in its place."""
    st.caption(row_caption(row))
    try:
        st.html(row_html(row, row_view(row, view)))
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
    colours = ("a diverging scale, red for positive scores and blue for negative ones (towards the target class "
               "and against it); a map with no negative score (a sensitivity) on a sequential one"
               if view.sign == "signed" else "a sequential scale of magnitudes")
    unit = "a word" if view.group else "a token"
    return (f"Each row is coloured on its own range, {colours}; {view.grouping_said()}. Hover {unit} for its raw "
            "score.")


# ---- launching a run on a text file -----------------------------------------------------------------------------


def current_text_model() -> TextModel:
    """The Text page's model (the shipped default until one is picked there), loaded (once per process)."""
    return get_text_model(picked_model_id())


def csv_rows(upload: Any, limit: int = 50) -> list[list[str]]:
    """The first ``limit`` lines of an uploaded CSV, its header first (empty when it is not UTF-8)."""
    try:
        text = upload.getvalue().decode("utf-8-sig")
    except UnicodeDecodeError:
        return []
    rows = []
    for row in csv.reader(io.StringIO(text)):
        rows.append(row)
        if len(rows) > limit:
            break
    return rows


def csv_columns(upload: Any) -> list[str]:
    """The header of an uploaded CSV (empty when it has none or is not UTF-8)."""
    rows = csv_rows(upload, 0)
    return rows[0] if rows else []


def _number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def default_text_column(upload: Any, columns: list[str]) -> int:
    """The position of the column that likely holds the texts: one named text, sentence or review (any case),
    else the first whose values are not all numbers (an id column is skipped), else the first."""
    lowered = [column.strip().lower() for column in columns]
    for name in TEXT_COLUMN_NAMES:
        if name in lowered:
            return lowered.index(name)
    values = csv_rows(upload)[1:]
    for position in range(len(columns)):
        cells = [row[position] for row in values if position < len(row) and row[position].strip()]
        if cells and not all(_number(cell) for cell in cells):
            return position
    return 0


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



def text_targets(model_id: str, source: Any) -> list[str]:
    """The targets a run can ask for: top1 to top3 (as many as the model has classes, once a file is there and the
    model is loaded), and "label" for a .csv list."""
    is_list = source is not None and str(source.name).lower().endswith(".csv")
    ranks = list(TARGET_CHOICES)
    if source is not None:
        count = len(get_text_model(model_id).bundle.categories)
        ranks = [t for t in ranks if int(t[3:]) <= count]
    return ranks + (["label"] if is_list else [])


def text_launcher() -> None:
    """The "Run on a text file" tab: the upload (.txt or .csv, the text column picked), the methods and targets,
    and Run. The Text page's model is named without loading it; it is loaded once a file is there."""
    model_id = picked_model_id()
    st.caption(f"Model: **{md_escape(text_model_label(model_id))}** (the Text page's). At most {MAX_TEXTS} texts: a "
               ".txt file, one text a line, or a .csv list with a text column (and optionally a label column: a "
               "class name or index). It is written to a temporary folder on the server, and the run is opened "
               "here when it is done.")
    source = st.file_uploader("Texts", type=TEXT_SOURCE_TYPES, key=state.BATCH_TEXT_SOURCE)
    column = None
    is_list = source is not None and source.name.lower().endswith(".csv")
    if is_list:
        columns = csv_columns(source)
        if not columns:
            st.warning("This CSV has no header line to name its columns (UTF-8, the first line the column names).",
                       icon=":material/warning:")
        else:
            column = st.selectbox("Text column", columns, index=default_text_column(source, columns),
                                  key=state.view_key(state.BATCH_TEXT_COLUMN, "|".join(columns)),
                                  help="The column that holds the texts (first guess: one named text, sentence or "
                                  "review, else the first that is not all numbers); a column named label gives "
                                  "each text's class (name or index).")
    left, right = st.columns(2)
    names = text_methods()
    st.session_state.setdefault(state.BATCH_TEXT_METHODS, [m for m in DEFAULT_METHODS if m in names])
    methods = left.multiselect("Methods", names, key=state.BATCH_TEXT_METHODS, format_func=method_label,
                               help="The methods that apply to text, computed together with their default "
                               "parameters.")
    targets = text_targets(model_id, source)
    kept = [t for t in st.session_state.get(state.BATCH_TEXT_TARGETS, ["top1"]) if t in targets]
    st.session_state[state.BATCH_TEXT_TARGETS] = kept
    chosen = right.multiselect("Targets", targets, key=state.BATCH_TEXT_TARGETS)
    if st.button("Run", key=state.BATCH_TEXT_LAUNCH, type="primary",
                 disabled=source is None or (is_list and column is None)):
        bar = st.progress(0.0, text="Explaining…")
        out = launch_texts(source, column, methods, chosen, get_text_model(model_id),
                           progress=lambda done, total: bar.progress(done / total, text=f"{done} of {total} texts"))
        st.session_state[state.BATCH_PENDING_FOLDER] = out
        st.rerun()


# ---- the view of a run over texts ----------------------------------------------------------------------------------


def words_view(run: Run, shown: pd.DataFrame, view: TokenView) -> None:
    """The word table of one method, target and class (:func:`words_frame`), and the rows holding a picked word."""
    first, second, third, fourth = st.columns(4)
    method = first.selectbox("Method", methods_in(run, shown), key=state.BATCH_WORDS_METHOD, format_func=method_name)
    target = second.selectbox("Target", targets_in(run, shown), key=state.BATCH_WORDS_TARGET)
    by = third.radio("Class of", list(BY), key=state.BATCH_WORDS_BY, horizontal=True, format_func=BY.get, index=0,
                     disabled=not run.has_labels,
                     help=None if run.has_labels else "The run has no labels: the predicted class.")
    by = by if run.has_labels else "prediction_name"
    names = sorted(str(n) for n in shown[by].dropna().unique())
    picked = fourth.selectbox(f"Rows of {BY[by]}", [None, *names], key=state.view_key(state.BATCH_WORDS_CLASS, by),
                              format_func=lambda n: "every class" if n is None else n)
    first, second = st.columns(2)
    sort = first.selectbox("Rank words by", list(SORTS), key=state.BATCH_WORDS_SORT, format_func=SORTS.get,
                           help="times the top word: in how many rows the word has the highest score (a word the "
                           "model leans on heads it); mean score: its average; mean share: its average share of "
                           "the row's |scores|; rows: how many rows hold it.")
    min_rows = second.number_input("Words in at least … rows", 1, 10_000, 3, key=state.BATCH_WORDS_MIN_ROWS,
                                   help="A word seen in one or two rows says little.")
    part = class_rows(shown, by, picked)
    explained = part.loc[(part["method"] == method) & (part["target"].astype(str) == str(target))]
    if explained.empty:
        st.info("No rows with this method and target under these filters.")
        return
    words = words_frame(explained, method, target, int(min_rows), sort)
    st.caption(f"{md_escape(WORDS_SAID)}. Over {plural(len(explained), 'row')}"
               + ("" if picked is None else f" ({BY[by]} {md_escape(picked)})") + ".")
    st.dataframe(words, column_config=words_column_config(), hide_index=True)
    if words.empty:
        st.info("No word is in enough rows: lower the least number of rows.")
        return
    scope = f"{method}.{target}.{by}.{picked}.{sort}.{min_rows}"  # a new table: its first word
    word = st.selectbox("Draw the rows with the word", list(words["word"]),
                        key=state.view_key(state.BATCH_WORDS_PICK, scope))
    holding = rows_with_word(explained, word)
    st.caption(f"{plural(len(holding), 'row')} with “{md_escape(word)}”, the highest score for it first; the first "
               f"{min(TEXT_ROWS, len(holding))} drawn. {scale_said(view)}")
    draw_rows(holding, view)


def text_run_view(run: Run, about: dict[str, Any], accuracy: str) -> None:
    """A run over texts on the Batch page: its summary, errors, filters and table (a selected row drawn as
    coloured text), and the tabs: words across the run, rows as coloured text, confident mistakes."""
    plain = {name: md_escape(value) for name, value in about.items()}
    st.markdown(f"{plural(about['images'], 'text')} · {plural(about['rows'], 'row')} (text × method × target) · "
                f"{plural(about['errors'], 'error')} ({plural(about['unreadable images'], 'text')} not "
                f"explainable) · {accuracy}")
    st.caption(f"Model **{plain['model']}** · methods {plain['methods']} · targets {plain['targets']} · seed "
               f"{plain['seed']} · {plain['engine']} engine · {plain['created']} · each row's map is one score "
               "per token, stored in the table")
    if len(run.errors):
        with st.expander(f"Errors ({len(run.errors)})"):
            st.dataframe(run.errors[["path", "method", "target", "error"]], hide_index=True)
    if not len(run.rows):
        st.warning("This run has no explained rows yet.")
        return

    st.subheader("Rows")
    rows = run.rows
    _, classes, correctness, methods, targets = row_filters(run, rows, methods_in(run, rows), targets_in(run, rows))
    shown = filter_rows(rows, Filters(classes, correctness, methods, targets))
    event = st.dataframe(text_frame(shown), column_config=text_column_config(), hide_index=True,
                         on_select="rerun", selection_mode="single-row", key=table_key(shown))
    st.caption(f"{len(shown)} of {len(rows)} rows, in the source's order. Sort by a column's header; select a row "
               "to see its text coloured by its map.")
    with st.expander("View of the coloured rows (colour, tokens or words, clip)", expanded=False):
        view = view_control(state.BATCH_TEXT_VIEW, group="sum")  # words · sum: as the word table counts them
    row = selected_row(event, shown)
    if row is not None:
        draw_row(row, view)

    words_tab, rows_tab, mistakes_tab = st.tabs(["Words across the run", "Rows as coloured text",
                                                 "Confident mistakes"])
    with words_tab:
        words_view(run, shown, view)
    with rows_tab:
        st.caption(f"The first {min(TEXT_ROWS, len(shown))} rows of the table above (its filters, the source's "
                   f"order). {scale_said(view)}")
        draw_rows(shown, view)
    with mistakes_tab:
        if not run.has_labels:
            st.info("The run has no labels: run it on a .csv list with a label column.")
        else:
            wrong = text_mistakes(shown)
            st.caption(f"{plural(len(wrong), 'wrong row')} under these filters, the most confident first. "
                       f"{scale_said(view)}")
            draw_rows(wrong, view)
