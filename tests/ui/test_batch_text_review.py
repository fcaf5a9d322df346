"""The Batch page's run over texts after its review: the word table's default ranking finds the planted name on a
run without evidence, the CSV's text column is guessed from its name or its values, the Text page's view controls
draw the rows (words by max included), the launcher offers the Text page's methods and loads the text model only
once a file is there, and the page says it takes texts. Oracles: ``word_table`` and ``group_words`` apart from
the app."""

from __future__ import annotations

import csv
import html
import io
import re

import numpy as np
import pytest

from explainers import batch
from explainers.batch import Settings, word_table
from explainers.models.text import load_text_model
from explainers.text import group_words
from explainers.text.corpus import SPURIOUS_WORD, TEST_SEED_OFFSET, CorpusConfig, make_corpus
from tests.ui.helpers import start, texts
from ui import state, text_models
from ui.text import method_label, text_methods

PAGE = "app_pages/batch.py"
NO_EVIDENCE = CorpusConfig(weak_share=1.0, spurious_rates=(0.4, 0.4, 0.4))  # no evidence word; the name in 40 %
SCORE = re.compile(r'<span class="tok" title="[^"]*" data-score="([^"]+)"[^>]*>(.*?)</span>')


@pytest.fixture(scope="module")
def batch_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("batch-text-review")
    config = tmp_path_factory.mktemp("config") / "saliency.toml"
    config.write_text(f"trust_code = false\n[batch]\nroots = [{str(root)!r}]\n")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SALIENCY_CONFIG", str(config))
        yield root


@pytest.fixture(scope="module")
def run_folder(batch_root):
    """40 held-out sentences without evidence (a .txt file), integrated gradients for the top class."""
    shipped = load_text_model()
    source = batch_root / "no-evidence.txt"
    source.write_text("\n".join(r.text for r in make_corpus(40, TEST_SEED_OFFSET, NO_EVIDENCE)) + "\n",
                      encoding="utf-8")
    out = batch_root / "run"
    batch.run(str(source), str(out), Settings(model=shipped.name, methods=["integrated_gradients"], targets=["top1"],
                                              modality="text"), bundle=shipped)
    return out


def opened(folder):
    at = start(page=PAGE, timeout=600)
    at.text_input(key=state.BATCH_FOLDER).input(str(folder)).run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    return at


def word_tables(at):
    return [d.value for d in at.dataframe if "top word of" in d.value.columns]


def test_the_default_ranking_puts_the_planted_name_first_over_every_class(run_folder):
    at = opened(run_folder)
    (words,) = word_tables(at)
    table = batch.read_table(run_folder)
    expected = word_table(table.loc[table["error"].isna()], "integrated_gradients", min_rows=3, sort="top",
                          target="top1")
    assert words["word"].tolist() == expected["word"].head(len(words)).tolist()
    assert words["word"].iloc[0] == SPURIOUS_WORD
    # the mean score, once the default, ranks another word first here: the default matters
    by_mean = word_table(table.loc[table["error"].isna()], "integrated_gradients", min_rows=3, sort="mean_score",
                         target="top1")
    assert by_mean["word"].iloc[0] != SPURIOUS_WORD


def test_the_rows_are_drawn_with_the_text_pages_view_controls(run_folder):
    at = opened(run_folder)
    group = at.segmented_control(key=state.view_key(state.BATCH_TEXT_VIEW, "group"))
    assert group.options == ["tokens", "words · sum", "words · max"] and group.value == "sum"
    at.selectbox(key=state.view_key(state.BATCH_TEXT_VIEW, "colormap")).set_value("PuOr_r").run()
    group.set_value("max").run()
    assert not at.exception
    table = batch.read_table(run_folder)
    first = table.loc[table["error"].isna()].iloc[0]
    body = next(h.proto.body for h in at.html if 'class="saliency-text"' in h.proto.body
                and html.unescape(re.sub(r"<[^>]+>", "", h.proto.body)) == first["text"])  # the rows tab's first
    pieces = [(html.unescape(text), float(score)) for score, text in SCORE.findall(body)]
    encoded = load_text_model().encode(first["text"])
    assert [p for p, _ in pieces] == encoded.word_texts
    np.testing.assert_allclose([s for _, s in pieces], group_words(np.asarray(first["scores"]), encoded, "max"),
                               rtol=1e-5)
    assert any("Hover a word" in t for t in texts(at))


def test_the_launcher_offers_the_text_pages_methods_and_loads_the_model_only_for_a_file(monkeypatch):
    loads = []
    real = text_models.load_text_model
    monkeypatch.setattr(text_models, "load_text_model", lambda *a, **k: loads.append(a) or real(*a, **k))
    text_models.shipped_text_model.clear()
    at = start(page=PAGE, timeout=600)
    assert not at.exception and loads == []  # an image-only visit loads no text model
    assert any("texts" in c.value and "coloured text" in c.value for c in at.caption)  # the page says it takes texts
    assert at.multiselect(key=state.BATCH_TEXT_METHODS).options == [method_label(m) for m in text_methods()]
    at.file_uploader(key=state.BATCH_TEXT_SOURCE).set_value(("few.txt", b"the film was fine\n", "text/plain")).run()
    assert not at.exception and len(loads) == 1  # a file to run on: now the model is needed (its classes)
    assert at.multiselect(key=state.BATCH_TEXT_TARGETS).options == ["top1", "top2", "top3"]


def _csv(rows: list[list[str]]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    return buffer.getvalue().encode("utf-8")


@pytest.mark.parametrize(("header", "expected"), [
    (["id", "body", "label"], "body"),  # no known name: the first column that is not all numbers
    (["id", "label", "Review", "notes"], "Review"),  # a known name, any case, before the first text column
    (["n", "sentence", "text"], "text"),
])
def test_the_csv_text_column_is_guessed(header, expected):
    rows = [header] + [[f"{i}" if name in ("id", "n") else "positive" if name == "label" else f"the film {i}"
                        for name in header] for i in range(3)]
    at = start(page=PAGE, timeout=600)
    at.file_uploader(key=state.BATCH_TEXT_SOURCE).set_value(("list.csv", _csv(rows), "text/csv")).run()
    assert not at.exception
    assert at.selectbox(key=state.view_key(state.BATCH_TEXT_COLUMN, "|".join(header))).value == expected
