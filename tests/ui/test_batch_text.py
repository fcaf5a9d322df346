"""AppTest: the Batch page with a run over texts — its table in the source's order, the words that carry the
attribution across the run (``word_table``: the planted name found among the rows predicted positive), rows drawn
as coloured text with the stored scores, and a run launched on an uploaded .txt or .csv with the Text page's
model. Image runs keep their own view (tests/ui/test_batch_page.py)."""

from __future__ import annotations

import csv
import html
import io
import re
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from explainers import batch
from explainers.batch import Settings, word_table
from explainers.errors import SaliencyError
from explainers.models.text import load_text_model
from explainers.text import TokenView, group_words, token_html
from explainers.text.corpus import SPURIOUS_WORD, TEST_SEED_OFFSET, CorpusConfig, make_corpus
from tests.text_models import tiny_text_bundle
from tests.ui.helpers import start
from ui import batch_text, state
from ui.batch import open_run

PAGE = "app_pages/batch.py"
# no evidence word in any sentence, the name in 40 % of every class's: what the model leans on shows
NO_EVIDENCE = CorpusConfig(weak_share=1.0, spurious_rates=(0.4, 0.4, 0.4))
METHODS = ["integrated_gradients", "vanilla"]
SCORE = re.compile(r'<span class="tok" title="[^"]*" data-score="([^"]+)"[^>]*>(.*?)</span>')


@pytest.fixture(scope="module")
def batch_root(tmp_path_factory):
    """The one batch folder the server allows in these tests ([batch] roots of a saliency.toml of their own)."""
    root = tmp_path_factory.mktemp("batch-text")
    config = tmp_path_factory.mktemp("config") / "saliency.toml"
    config.write_text(f"trust_code = false\n[batch]\nroots = [{str(root)!r}]\n")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SALIENCY_CONFIG", str(config))
        yield root


@pytest.fixture(scope="module")
def shipped():
    return load_text_model()


@pytest.fixture(scope="module")
def text_run(batch_root, shipped):
    """40 held-out sentences without evidence (a CSV list with labels), integrated gradients and the gradient,
    targets top1 and top2, on the shipped model."""
    reviews = make_corpus(40, TEST_SEED_OFFSET, NO_EVIDENCE)
    assert sum(r.spurious is not None for r in reviews) >= 10
    listing = batch_root / "reviews.csv"
    with open(listing, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["body", "label"])
        writer.writerows((r.text, r.category) for r in reviews)
    out = batch_root / "run"
    settings = Settings(model=shipped.name, methods=METHODS, targets=["top1", "top2"], modality="text",
                        text_column="body")
    batch.run(str(listing), str(out), settings, bundle=shipped)
    return out, reviews


def _open(folder) -> object:
    at = start(page=PAGE, timeout=600)
    at.text_input(key=state.BATCH_FOLDER).input(str(folder)).run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    return at


def _table(at):
    tables = [d for d in at.dataframe if d.key and d.key.startswith(state.BATCH_TABLE)]
    assert len(tables) == 1, [d.key for d in at.dataframe]
    return tables[0]


def _words(at):
    tables = [d.value for d in at.dataframe if "top word of" in d.value.columns]
    assert len(tables) == 1
    return tables[0]


def _drawn(at) -> list[tuple[str, list[tuple[str, float]]]]:
    """The coloured texts on the page: (the text as shown, [(piece, score)])."""
    found = []
    for element in at.html:
        body = element.proto.body
        if 'class="saliency-text"' not in body:
            continue
        pieces = [(html.unescape(text), float(score)) for score, text in SCORE.findall(body)]
        shown = html.unescape(re.sub(r"<[^>]+>", "", body))
        found.append((shown, pieces))
    return found


def _line(path: str) -> int:
    return int(path.rsplit(":", 1)[1])


def _explained(out) -> object:
    table = batch.read_table(out)
    return table.loc[table["error"].isna()]


def test_a_text_run_shows_its_summary_and_its_rows_in_the_sources_order(text_run):
    out, reviews = text_run
    at = _open(out)
    rows = _explained(out)
    labelled = rows.drop_duplicates("path")
    accuracy = labelled["correct"].astype(bool).mean()
    assert (f"{len(reviews)} texts · {len(reviews) * 4} rows (text × method × target) · 0 errors (0 texts not "
            f"explainable) · accuracy **{accuracy:.1%}**") in [m.value for m in at.markdown]
    table = _table(at).value
    assert len(table) == len(rows) == len(reviews) * 4
    lines = [_line(p) for p in table["row"]]
    assert lines == sorted(lines) and lines[0] == 2  # the list's first text is its row 2 (after the header)
    assert "map" not in table.columns  # no thumbnails: a text row's map is its coloured text
    by_key = {(r["path"], r["method"], r["target"]): r for _, r in rows.iterrows()}
    names = {m: batch_text.method_name(m) for m in METHODS}
    for _, shown in table.iterrows():
        method = next(m for m, name in names.items() if name == shown["method"])
        row = by_key[(shown["row"], method, shown["target"])]
        assert shown["text"] == row["text"] == reviews[_line(shown["row"]) - 2].text
        sums: dict[str, float] = {}
        for word, score in zip(row["words"], row["word_scores"], strict=True):
            sums[word.lower()] = sums.get(word.lower(), 0.0) + score
        assert shown["top word"] == max(sums, key=sums.get)
        assert shown["prediction"] == row["prediction_name"]
        assert shown["label"] == reviews[_line(row["path"]) - 2].category


def test_the_word_view_finds_the_planted_name_among_the_rows_predicted_positive(text_run):
    out, _ = text_run
    at = _open(out)
    rows = _explained(out)
    first = _words(at)
    expected = word_table(rows, "integrated_gradients", min_rows=3, target="top1", sort="top").head(len(first))
    assert first["word"].tolist() == expected["word"].tolist()
    np.testing.assert_allclose(first["mean score"], expected["mean_score"], rtol=1e-9)
    assert first["top word of"].tolist() == expected["top"].tolist()
    at.selectbox(key=state.view_key(state.BATCH_WORDS_CLASS, "prediction_name")).set_value("positive").run()
    at.selectbox(key=state.BATCH_WORDS_SORT).set_value("top").run()
    assert not at.exception
    positive = _words(at)
    predicted = rows.loc[rows["prediction_name"] == "positive"]
    expected = word_table(predicted, "integrated_gradients", min_rows=3, sort="top", target="top1")
    assert positive["word"].tolist() == expected["word"].head(len(positive)).tolist()
    assert positive["word"].iloc[0] == SPURIOUS_WORD  # the name: the top word of most rows predicted positive
    assert positive["top rate"].iloc[0] > 0.5
    # the same with the gradient, for the runner-up: another table, still word_table's
    at.selectbox(key=state.BATCH_WORDS_METHOD).set_value("vanilla").run()
    at.selectbox(key=state.BATCH_WORDS_TARGET).set_value("top2").run()
    assert not at.exception
    runner_up = _words(at)
    expected = word_table(predicted, "vanilla", min_rows=3, sort="top", target="top2")
    assert runner_up["word"].tolist() == expected["word"].head(len(runner_up)).tolist()


def test_picking_a_word_draws_the_rows_that_hold_it_highest_score_first(text_run):
    out, _ = text_run
    at = _open(out)
    rows = _explained(out)
    top1 = rows.loc[(rows["method"] == "integrated_gradients") & (rows["target"] == "top1")]
    pick = next(s for s in at.selectbox if s.key and s.key.startswith(state.BATCH_WORDS_PICK))
    pick.set_value(SPURIOUS_WORD).run()
    assert not at.exception
    holding = top1.loc[[any(w.lower() == SPURIOUS_WORD for w in words) for words in top1["words"]]]
    assert any(c.value.startswith(f"{len(holding)} rows with “{SPURIOUS_WORD}”") for c in at.caption)
    scores = [sum(s for w, s in zip(r["words"], r["word_scores"], strict=True) if w.lower() == SPURIOUS_WORD)
              for _, r in holding.iterrows()]
    order = holding.iloc[np.argsort(-np.asarray(scores), kind="stable")]
    drawn = [c.value.split(" · ")[0] for c in at.caption if c.value.startswith("reviews.csv:")]
    expected = [r["path"] for _, r in order.head(batch_text.TEXT_ROWS).iterrows()]
    assert drawn[:len(expected)] == expected
    texts = [shown for shown, _ in _drawn(at)]
    assert texts[:len(expected)] == [r["text"] for _, r in order.head(batch_text.TEXT_ROWS).iterrows()]


def test_a_selected_row_is_drawn_with_its_stored_scores_by_word_or_by_token(text_run, shipped):
    out, _ = text_run
    at = _open(out)
    table = _table(at)
    rows = open_run(str(out), [Path(out).parent]).rows
    position = 5
    row = rows.iloc[position]
    at.session_state[table.key] = {"selection": {"rows": [position]}}
    at.run()
    assert not at.exception
    shown, pieces = _drawn(at)[0]
    encoded = shipped.encode(row["text"])
    assert shown == row["text"]
    assert [p for p, _ in pieces] == encoded.word_texts  # words (the default), each its tokens' sum
    np.testing.assert_allclose([s for _, s in pieces], group_words(np.asarray(row["scores"]), encoded, "sum"),
                               rtol=1e-5)
    at.segmented_control(key=state.view_key(state.BATCH_TEXT_VIEW, "group")).set_value("").run()
    shown, pieces = _drawn(at)[0]
    assert shown == row["text"]
    assert [p for p, _ in pieces] == [row["text"][a:b] for a, b in (encoded.offsets[i] for i in encoded.content)]
    np.testing.assert_allclose([s for _, s in pieces], np.asarray(row["scores"])[encoded.content], rtol=1e-5)


def test_the_mistakes_tab_draws_the_wrong_rows_most_confident_first(text_run):
    out, _ = text_run
    at = _open(out)
    rows = open_run(str(out), [Path(out).parent]).rows
    wrong = rows.loc[rows["correct"].eq(False)].sort_values("probability", ascending=False, kind="stable")
    assert len(wrong)
    assert any(c.value.startswith(f"{len(wrong)} wrong rows under these filters") for c in at.caption)
    captions = [c.value for c in at.caption if c.value.startswith("reviews.csv:")]
    expected = [batch_text.row_caption(r) for _, r in wrong.head(batch_text.TEXT_ROWS).iterrows()]
    assert captions[-len(expected):] == expected


def test_a_row_is_drawn_from_its_stored_tokens_the_tokenizers(tmp_path):
    """What the page draws from a row is what the tokenizer made of its text (subwords, emoji, a cut), rebuilt by
    ``encoded_of`` from the row alone; a damaged row is refused with what does not fit."""
    bundle = tiny_text_bundle(seed=1, max_length=16)
    lines = ["the movie was great !", "a bad film , not good .", "the plot is very awful 🎬 ?",
             "zebras unknownword filmy", " ".join(["good"] * 30), "Ünïcödé film, naïve!"]
    source = tmp_path / "texts.txt"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    batch.run(str(source), str(tmp_path / "run"), Settings(model="tiny-bert", methods=["vanilla"], targets=["top1"],
                                                            modality="text"), bundle=bundle)
    table = batch.read_table(tmp_path / "run")
    assert table["error"].isna().all() and len(table) == len(lines)
    assert (table["truncated_tokens"] > 0).any() and any("##" in t for ts in table["tokens"] for t in ts)
    for _, row in table.iterrows():
        encoded = bundle.encode(row["text"])
        for view in (TokenView(group="sum"), TokenView(group="")):
            assert batch_text.row_html(row, view) == token_html(encoded, np.asarray(row["scores"]), view)
    row = table.iloc[0].copy()
    row["offsets"] = [[0, 0]] + [[0, 500]] * (len(row["tokens"]) - 1)
    with pytest.raises(SaliencyError, match="offsets lie outside its text"):
        batch_text.row_html(row, TokenView())


def test_reset_clears_the_text_launchers_choices_and_keeps_the_upload():
    at = start(page=PAGE, timeout=600)
    at.file_uploader(key=state.BATCH_TEXT_SOURCE).set_value(("few.txt", b"the film was fine\n", "text/plain")).run()
    default_methods = at.multiselect(key=state.BATCH_TEXT_METHODS).value
    at.multiselect(key=state.BATCH_TEXT_METHODS).set_value(["vanilla"]).run()
    at.multiselect(key=state.BATCH_TEXT_TARGETS).set_value(["top1", "top2"]).run()
    assert at.multiselect(key=state.BATCH_TEXT_METHODS).value == ["vanilla"]
    at.button(key=state.RESET_PAGE).click().run()
    assert not at.exception
    assert at.multiselect(key=state.BATCH_TEXT_METHODS).value == default_methods != ["vanilla"]
    assert at.multiselect(key=state.BATCH_TEXT_TARGETS).value == ["top1"]
    assert at.file_uploader(key=state.BATCH_TEXT_SOURCE).value is not None  # an upload is no control


def test_a_crafted_row_is_that_rows_problem_and_texts_are_shown_as_text(text_run, batch_root):
    out, _ = text_run
    crafted = batch_root / "crafted"
    shutil.copytree(out, crafted)
    for part in sorted((crafted / "table").glob("part-*.parquet")):
        frame = pq.read_table(part).to_pandas()
        first = frame.index[frame["error"].isna()][0]
        frame.at[first, "offsets"] = [[0, 0]] + [[0, 10_000]] * (len(frame.at[first, "tokens"]) - 1)
        pq.write_table(pa.Table.from_pandas(frame, schema=pq.read_schema(part), preserve_index=False), part)
        break
    at = _open(crafted)
    assert any("offsets lie outside its text" in w.value for w in at.warning)
    assert len(_drawn(at)) >= batch_text.TEXT_ROWS  # every other row is still drawn


def _csv(rows: list[list[str]]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    return buffer.getvalue().encode("utf-8")


def test_a_run_launched_on_an_uploaded_csv_opens_with_its_labels(batch_root):
    texts = ["Honestly, the film was superb.", "The plot felt dull, directed by Morgan.",
             "<b>bold</b> & the ending was okay.", "I watched the film last night, starring Morgan."]
    labels = ["positive", "negative", "neutral", "negative"]
    upload = _csv([["id", "body", "label"], *[[str(i), t, lab] for i, (t, lab) in enumerate(zip(texts, labels,
                                                                                                 strict=True))]])
    at = start(page=PAGE, timeout=600)
    at.file_uploader(key=state.BATCH_TEXT_SOURCE).set_value(("reviews.csv", upload, "text/csv")).run()
    assert not at.exception
    column = at.selectbox(key=state.view_key(state.BATCH_TEXT_COLUMN, "id|body|label"))
    assert column.options == ["id", "body", "label"] and column.value == "body"
    column.set_value("body").run()
    targets = at.multiselect(key=state.BATCH_TEXT_TARGETS)
    assert "label" in targets.options and "top3" in targets.options and "top4" not in targets.options
    targets.set_value(["top1", "label"]).run()
    at.multiselect(key=state.BATCH_TEXT_METHODS).set_value(["vanilla"]).run()
    at.button(key=state.BATCH_TEXT_LAUNCH).click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    folder = at.text_input(key=state.BATCH_FOLDER).value
    assert folder.endswith("/run")
    rows = open_run(folder, [Path(folder).parent]).rows
    assert len(rows) == len(texts) * 2 and set(rows["target"]) == {"top1", "label"}
    assert rows.drop_duplicates("path")["label_name"].tolist() == labels
    accuracy = rows.drop_duplicates("path")["correct"].astype(bool).mean()
    assert any(m.value.startswith(f"{len(texts)} texts · {len(rows)} rows (text × method × target)")
               and f"accuracy **{accuracy:.1%}**" in m.value for m in at.markdown)
    assert len(_table(at).value) == len(rows)
    bodies = [h.proto.body for h in at.html if 'class="saliency-text"' in h.proto.body]
    assert texts[2] in [shown for shown, _ in _drawn(at)]  # the markup is text: drawn as written
    assert not any("<b>" in b for b in bodies) and any("&lt;" in b for b in bodies)
    # a launched run is this session's: another session cannot open it by its path
    other = start(page=PAGE, timeout=600)
    other.text_input(key=state.BATCH_FOLDER).input(folder).run()
    assert len(other.error) == 1 and "not inside the batch folders" in other.error[0].value
    shutil.rmtree(Path(folder).parent)


def test_a_text_file_upload_offers_no_column_and_too_many_texts_are_refused():
    at = start(page=PAGE, timeout=600)
    many = "\n".join(f"the film number {i} was fine" for i in range(batch_text.MAX_TEXTS + 1)).encode()
    at.file_uploader(key=state.BATCH_TEXT_SOURCE).set_value(("many.txt", many, "text/plain")).run()
    assert not [s for s in at.selectbox if s.key and s.key.startswith(state.BATCH_TEXT_COLUMN)]
    assert "label" not in at.multiselect(key=state.BATCH_TEXT_TARGETS).options
    at.button(key=state.BATCH_TEXT_LAUNCH).click().run()
    assert not at.exception
    assert len(at.error) == 1 and f"at most {batch_text.MAX_TEXTS}" in at.error[0].value
    assert not at.text_input(key=state.BATCH_FOLDER).value
    for folder in at.session_state[state.BATCH_LAUNCHED]:
        shutil.rmtree(folder, ignore_errors=True)
