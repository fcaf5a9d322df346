"""Batch runs over texts: a .txt file or a CSV column in, the same Parquet table out with each row's per-token map
(the numbers explain_text gives), error rows for texts that cannot be explained, resume, the word view, and a stored
row giving back its encoding (``encoded_of``)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from explainers import batch
from explainers.batch import Item, Settings, explain_texts, word_table
from explainers.batch.text import encoded_of, read_texts
from explainers.errors import InputError, ParameterError, SaliencyError
from explainers.text import explain_text

from ...text_models import tiny_text_bundle

LINES = ["the movie was great !", "", "a bad film , not good .", "the plot is very awful 🎬 ?",
         " ".join(["good"] * 40), "the film was not bad"]
METHODS = ["vanilla", "input_x_gradient"]


def _settings(**overrides) -> Settings:
    values = {"model": "tiny-bert", "methods": list(METHODS), "targets": ["top1", "neg"], "seed": 3, "batch_size": 2,
              "modality": "text"}
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "reviews.txt"
    path.write_text("\n".join(LINES) + "\n", encoding="utf-8")
    return path


def test_a_text_file_run_writes_per_token_maps_equal_to_explain_text(text_file, tmp_path):
    bundle = tiny_text_bundle(seed=1)
    out = tmp_path / "run"
    summary = batch.run(str(text_file), str(out), _settings(), bundle=bundle)
    assert summary["images"] == 5 and summary["done_now"] == 5 and summary["unreadable"] == 0  # the blank line: no text
    table = batch.read_table(out)
    assert len(table) == 5 * 2 * 2 and table["error"].isna().all()
    assert set(table["path"]) == {f"reviews.txt:{n}" for n in (1, 3, 4, 5, 6)}
    assert set(batch.TEXT_COLUMNS) <= set(table.columns) and table["map_key"].isna().all()
    manifest = batch.read_manifest(out)
    assert manifest["modality"] == "text" and manifest["settings"]["methods"] == METHODS
    for _, row in table.iterrows():
        encoded = bundle.encode(row["text"])
        assert list(row["tokens"]) == list(encoded.tokens)
        assert [tuple(o) for o in row["offsets"]] == list(encoded.offsets)
        assert len(row["scores"]) == len(row["tokens"]) == len(row["special"])
        assert row["seed"] == 3 and row["objective"] == "logit" and len(row["logits"]) == 3
        target = "top1" if row["target"] == "top1" else "neg"
        direct = explain_text(bundle, row["text"], [row["method"]], [target], seed=3)[(row["method"], target)]
        np.testing.assert_allclose(row["scores"], direct.scores, rtol=1e-5, atol=1e-7)
        assert row["target_index"] == int(direct.record.target[0])
        content = np.asarray(row["scores"])[~np.asarray(row["special"])]
        np.testing.assert_allclose(sum(row["word_scores"]), content.sum(), rtol=1e-6, atol=1e-9)
    top = table[table["target"] == "top1"]
    assert (top["target_index"] == top["prediction"]).all()
    assert (table[table["target"] == "neg"]["target_name"] == "neg").all()
    long = table[table["path"] == "reviews.txt:5"].iloc[0]  # 40 words, 32 tokens read: the cut is said
    assert long["truncated_tokens"] == 40 + 2 - 32 and any("cut off" in n for n in long["notes"])
    assert table[table["path"] == "reviews.txt:1"].iloc[0]["truncated_tokens"] == 0


def test_a_csv_column_run_with_labels_error_rows_and_resume(tmp_path):
    path = tmp_path / "reviews.csv"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["id", "review", "label"])
        writer.writeheader()
        writer.writerows([{"id": 1, "review": "the movie was great", "label": "pos"},
                          {"id": 2, "review": "   ", "label": "neg"},
                          {"id": 3, "review": "a bad plot", "label": ""},
                          {"id": 4, "review": "the film is good", "label": "2"}])
    bundle = tiny_text_bundle(seed=2)
    out = tmp_path / "run"
    settings = _settings(targets=["label"], text_column="review")
    first = batch.run(str(path), str(out), settings, bundle=bundle, limit=2)
    assert first["done_now"] == 2
    resumed = batch.run(str(path), str(out), _settings(targets=["label"], text_column="review"), bundle=bundle,
                        resume=True)
    assert resumed["done_now"] == 2 and resumed["skipped"] == 2
    table = batch.read_table(out)
    assert not table.duplicated(["path", "method", "target"]).any()
    empty = table[table["path"] == "reviews.csv:3"]
    assert len(empty) == 1 and "empty" in empty.iloc[0]["error"] and pd.isna(empty.iloc[0]["method"])
    unlabelled = table[table["path"] == "reviews.csv:4"]
    assert len(unlabelled) == 2 and unlabelled["error"].str.contains("no label").all()
    labelled = table[table["error"].isna()]
    assert set(labelled["path"]) == {"reviews.csv:2", "reviews.csv:5"}
    assert (labelled["target_index"] == labelled["label"]).all() and set(labelled["label_name"]) == {"pos"}
    assert len(list((out / "table").glob("part-*.parquet"))) == 2
    with pytest.raises(Exception, match="other settings"):
        batch.run(str(path), str(out), _settings(targets=["top1"], text_column="review"), bundle=bundle, resume=True)


def test_text_sources_and_settings_are_checked_before_anything_runs(text_file, tmp_path):
    bundle = tiny_text_bundle()
    out = str(tmp_path / "out")
    with pytest.raises(ParameterError, match="names a column of a .csv"):
        batch.run(str(text_file), out, _settings(text_column="review"), bundle=bundle)
    listing = tmp_path / "list.csv"
    listing.write_text("id,body\n1,the movie\n", encoding="utf-8")
    with pytest.raises(ParameterError, match="no column 'text' .*'id', 'body'"):
        batch.run(str(listing), out, _settings(), bundle=bundle)
    with pytest.raises(ParameterError, match=r"Grad-CAM \('gradcam'\) does not apply to text"):
        batch.run(str(text_file), out, _settings(methods=["gradcam"]), bundle=bundle)
    with pytest.raises(ParameterError, match="no parameter 'window' on text"):
        batch.run(str(text_file), out, _settings(params={"vanilla": {"window": 3}}), bundle=bundle)
    with pytest.raises(ParameterError, match="does not exist"):
        batch.run(str(tmp_path / "missing.txt"), out, _settings(), bundle=bundle)
    with pytest.raises(ParameterError, match="labels list applies to images"):
        batch.run(str(text_file), out, _settings(), bundle=bundle, labels=str(listing))
    with pytest.raises(ParameterError, match="tiny-bert is a text classifier"):
        batch.run(str(tmp_path), out, _settings(modality="image"), bundle=bundle)
    assert not (tmp_path / "out").exists()
    assert batch.is_text_source("a.txt", None) and batch.is_text_source("a.csv", "body")
    assert not batch.is_text_source("a.csv", None)


def test_a_text_rows_prediction_columns_are_the_image_rows():
    """One helper writes the prediction, top 5, label, target and params columns of both kinds of rows."""
    from explainers.batch.pipeline import prediction_columns

    bundle = tiny_text_bundle(seed=1)
    item = Item("x:1", label=2, text="the movie was great !")
    (row,) = explain_texts(bundle, [item], _settings(targets=["neg"], methods=["vanilla"]))
    logits = np.asarray(row["logits"])
    probabilities = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    expected = prediction_columns(item, logits, probabilities, 0, json.loads(row["params"]), bundle.categories)
    assert {name: row[name] for name in expected} == expected
    assert row["target_name"] == "neg" and row["correct"] == (row["prediction"] == 2)


def test_a_text_files_keys_are_its_line_numbers_whatever_the_lines_hold(tmp_path):
    """Only a line break ends a line: U+2028, a form feed or \\x1c inside a text keep it one text, one line."""
    path = tmp_path / "odd.txt"
    lines = ["the film\u2028was good", "", "a bad\x0cplot", "the movie\x1cwas great", "a film\r"]
    path.write_bytes("\n".join(lines).encode("utf-8"))
    items = read_texts(str(path), ["neg", "neu", "pos"])
    assert [(i.path, i.text) for i in items] == [("odd.txt:1", lines[0]), ("odd.txt:3", lines[2]),
                                                 ("odd.txt:4", lines[3]), ("odd.txt:5", "a film")]


@pytest.mark.parametrize("name, data, words", [
    ("latin.csv", "text,label\ncafé crème,pos\n".encode("latin-1"), r"'latin.csv' to be a CSV file in UTF-8, but "
                                                                      r"line 2 holds byte 0xe9, which is not UTF-8"),
    ("fake.parquet", b"text\nthe film\n", r"'fake.parquet' to be a Parquet file .*pyarrow cannot read it"),
    ("latin.txt", "café\n".encode("latin-1"), r"'latin.txt' to be a text file in UTF-8, but line 1 holds byte 0xe9"),
])
def test_a_text_source_in_another_encoding_or_format_is_said_with_its_name(tmp_path, name, data, words):
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(InputError, match=words):
        read_texts(str(path), ["neg", "neu", "pos"], None if name.endswith(".txt") else "text")


def test_word_view_surfaces_a_planted_top_word():
    """A toy table in which "Morgan" is the top word of most rows it is in, while "great" scores higher where it
    is not beaten: the view ranks Morgan first, counts repeated words once per row and reads one method."""
    rows = []
    for i in range(12):
        words = ["The", "film", "was", "great", "."] + (["Morgan", "directed", "it"] if i % 3 else [])
        scores = [0.1, 0.2, 0.0, 0.5, 0.0] + ([0.9, 0.1, 0.0] if i % 3 else [])
        rows.append({"error": None, "method": "vanilla", "target_name": "pos", "words": words, "word_scores": scores})
    rows.append({"error": None, "method": "vanilla", "target_name": "neg", "words": ["film", "film"],
                 "word_scores": [0.3, 0.4]})
    rows.append({"error": "InputError: empty", "method": None, "target_name": None, "words": None,
                 "word_scores": None})
    rows.append({"error": None, "method": "input_x_gradient", "target_name": "pos", "words": ["great"],
                 "word_scores": [1.0]})
    table = pd.DataFrame(rows)
    view = word_table(table, method="vanilla", sort="top")
    assert view.iloc[0]["word"] == "morgan" and view.iloc[0]["top"] == 8 and view.iloc[0]["top_rate"] == 1.0
    great = view[view["word"] == "great"].iloc[0]
    assert great["rows"] == 12 and great["top"] == 4 and great["mean_score"] == pytest.approx(0.5)
    film = view[view["word"] == "film"].iloc[0]
    assert film["rows"] == 13 and film["top"] == 1  # twice in one text: one row, its scores added (0.7, the top)
    by_class = word_table(table, method="vanilla", by="target_name", min_rows=2)
    assert set(by_class["target_name"]) == {"pos"}  # the neg row's words are in one row only
    assert set(word_table(table)["method"]) == {"vanilla", "input_x_gradient"}
    assert list(word_table(table, method="vanilla")["word"][:2]) == ["morgan", "great"]  # by mean score
    with pytest.raises(ParameterError, match="sort must be one of"):
        word_table(table, sort="alphabet")
    with pytest.raises(ParameterError, match="not in this run"):
        word_table(table, method="occlusion")
    with pytest.raises(ParameterError, match="run over texts"):
        word_table(table.drop(columns=["word_scores"]))


def test_the_word_view_reads_a_real_run(text_file, tmp_path):
    out = tmp_path / "run"
    batch.run(str(text_file), str(out), _settings(targets=["top1"]), bundle=tiny_text_bundle(seed=1))
    view = word_table(batch.read_table(out), method="input_x_gradient")
    assert view["rows"].sum() >= 5 and view["top"].sum() == 5  # one top word per row
    assert json.loads(batch.read_table(out).iloc[0]["params"]) == {}


@pytest.mark.slow
def test_the_ray_engine_writes_the_local_engines_text_table(text_file, tmp_path):
    """The text bundle pickles into Ray's object store; the replicas write the local engine's rows."""
    import ray  # a runtime requirement; imported here so the fast tests of this file do not pay for it

    already = ray.is_initialized()
    try:
        bundle = tiny_text_bundle(seed=1)
        batch.run(str(text_file), str(tmp_path / "local"), _settings(), bundle=bundle)
        batch.run(str(text_file), str(tmp_path / "ray"), _settings(), engine="ray", workers=1, bundle=bundle)
    finally:
        if not already and ray.is_initialized():
            ray.shutdown()
    local, distributed = batch.read_table(tmp_path / "local"), batch.read_table(tmp_path / "ray")
    assert batch.read_manifest(tmp_path / "ray")["engine"] == "ray" and len(distributed) == len(local) == 20
    for (_, a), (_, b) in zip(local.iterrows(), distributed.iterrows(), strict=True):
        assert (a["path"], a["method"], a["target"], list(a["tokens"])) == \
            (b["path"], b["method"], b["target"], list(b["tokens"]))
        np.testing.assert_allclose(a["scores"], b["scores"], rtol=1e-6, atol=1e-9)


def _fail_on_awful(monkeypatch, bundle, where: str, error: Exception) -> None:
    """Reading ("encode") or explaining ("explain") the one text with "awful" in it raises ``error``."""
    from explainers.batch import text as text_batch

    if where == "encode":
        real_encode = bundle.encode

        def encode(text):
            if "awful" in text:
                raise error
            return real_encode(text)

        monkeypatch.setattr(bundle, "encode", encode)
        return
    real_explain = text_batch.explain_text

    def explain(scored, encoded, *args, **kwargs):
        if "awful" in encoded.text:
            raise error
        return real_explain(scored, encoded, *args, **kwargs)

    monkeypatch.setattr(text_batch, "explain_text", explain)


@pytest.mark.parametrize("where, error", [("encode", RuntimeError("the tokenizer panicked")),
                                          ("explain", SaliencyError("this method cannot explain that text"))])
def test_a_text_that_cannot_be_read_or_explained_is_an_error_row(text_file, tmp_path, monkeypatch, where, error):
    """The image pipeline's policy: whatever reading one input raises is that input's error row (the exception's
    type said), as is a SaliencyError of a method that cannot explain it; the run goes on."""
    bundle = tiny_text_bundle()
    _fail_on_awful(monkeypatch, bundle, where, error)
    summary = batch.run(str(text_file), str(tmp_path / "run"), _settings(), bundle=bundle)
    assert summary["done_now"] == 5 and summary["unreadable"] == 1
    table = batch.read_table(tmp_path / "run")
    failed = table[table["error"].notna()]
    assert list(failed["path"]) == ["reviews.txt:4"]
    assert failed.iloc[0]["error"] == f"{type(error).__name__}: {error}"
    assert len(table) == 1 + 4 * 2 * 2


def test_a_bug_while_explaining_stops_the_run_and_keeps_its_parts(text_file, tmp_path, monkeypatch):
    """An unexpected error while explaining is no text's fault: it stops the run, as it stops an image run."""
    bundle = tiny_text_bundle()
    _fail_on_awful(monkeypatch, bundle, "explain", TypeError("a bug, not the text's fault"))
    with pytest.raises(TypeError, match="a bug"):
        batch.run(str(text_file), str(tmp_path / "stopped"), _settings(), bundle=bundle)
    kept = batch.read_table(tmp_path / "stopped")  # the parts written before it stay: --resume continues
    assert set(kept["path"]) == {"reviews.txt:1", "reviews.txt:3"} and kept["error"].isna().all()


# ---- a stored row gives back its encoding (encoded_of) ---------------------------------------------------------

VARIED = ["the movie was great !", "a bad film , not good .", "the plot is very awful 🎬 ?",
          "zebras unknownword filmy", " ".join(["good"] * 30), "Ünïcödé film, naïve!", "  spaced   out\ttext  "]
DROPPED = ["token_ids", "word_ids", "word_spans", "max_length"]  # columns a table of another layout lacks


@pytest.fixture
def varied_run(tmp_path):
    """A run over texts with subwords, [UNK], emoji, accents, odd spaces and a cut (16 tokens), 2 texts a part."""
    bundle = tiny_text_bundle(seed=1, max_length=16)
    source = tmp_path / "texts.txt"
    source.write_text("\n".join(VARIED) + "\n", encoding="utf-8")
    out = tmp_path / "run"
    batch.run(str(source), str(out), _settings(targets=["top1"], methods=["vanilla"], batch_size=2), bundle=bundle)
    return bundle, source, out


def _other_layout(out) -> None:
    """The run's table parts rewritten without :data:`DROPPED`: a table of another layout."""
    for part in sorted((out / "table").glob("part-*.parquet")):
        pq.write_table(pq.read_table(part).drop_columns(DROPPED), part)


def test_a_stored_row_gives_back_the_encoding_it_was_written_from(varied_run):
    bundle, _, out = varied_run
    table = batch.read_table(out)
    assert table["error"].isna().all() and len(table) == len(VARIED)
    assert (table["truncated_tokens"] > 0).any() and any("##" in t for ts in table["tokens"] for t in ts)
    assert any("[UNK]" in ts for ts in table["tokens"])
    for _, row in table.iterrows():
        encoded = bundle.encode(row["text"])
        assert encoded_of(row) == encoded, row["text"]  # every field: ids, word ids, spans, the cut, the limit
        assert list(row["word_ids"]) == encoded.word_labels().tolist()
    written = explain_texts(bundle, [Item("x:1", text=VARIED[2])], _settings(targets=["top1"], methods=["vanilla"]))
    assert encoded_of(written[0]) == bundle.encode(VARIED[2])  # the row as _text_row wrote it, before Parquet


def test_a_run_of_another_table_layout_refuses_a_resume_and_its_rows_say_what_they_lack(varied_run):
    bundle, source, out = varied_run
    _other_layout(out)
    with pytest.raises(SaliencyError, match=r"written by another version .*it lacks: token_ids, word_ids"):
        batch.run(str(source), str(out), _settings(targets=["top1"], methods=["vanilla"], batch_size=2),
                  bundle=bundle, resume=True)
    row = batch.read_table(out).iloc[0]
    with pytest.raises(SaliencyError, match="it has no word_spans, word_ids, token_ids, max_length"):
        encoded_of(row)


def test_a_damaged_row_says_what_does_not_fit(varied_run):
    _, _, out = varied_run
    row = batch.read_table(out).iloc[0]
    content = int(np.flatnonzero(~np.asarray(row["special"]))[0])

    def damaged(**columns):
        copy = row.copy()
        for name, value in columns.items():
            copy[name] = value
        return copy

    count = len(row["tokens"])
    cases = {
        "offsets lie outside its text": damaged(offsets=[[0, 0]] + [[0, 500]] * (count - 1)),
        "does not fit together: .* 3 scores": damaged(scores=[0.0] * 3),
        "special token '\\[CLS\\]' has word id 0": damaged(word_ids=[0] + list(row["word_ids"])[1:]),
        "has word id 99; the row has": damaged(word_ids=[99 if i == content else w
                                                         for i, w in enumerate(row["word_ids"])]),
        "does not lie inside its word": damaged(word_ids=[len(row["words"]) - 1 if i == content else w
                                                          for i, w in enumerate(row["word_ids"])]),
        "not its text at its word spans": damaged(words=["nowhere"] + list(row["words"])[1:]),
        "word spans lie outside its text": damaged(word_spans=[[0, 999]] * len(row["words"])),
        "2 token ids": damaged(token_ids=[1, 2]),
    }
    for message, case in cases.items():
        with pytest.raises(SaliencyError, match=message):
            encoded_of(case)
