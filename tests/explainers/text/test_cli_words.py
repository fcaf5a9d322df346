"""``text-words RUN_FOLDER``: the word table of a text batch run, as ``word_table`` computes it (one method and
target at a time, per predicted class or label on request), and one line for every bad input."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from explainers import batch
from explainers.batch import Settings, word_table
from explainers.cli.main import main
from explainers.errors import ParameterError

from ...text_models import tiny_text_bundle

TEXTS = ["the movie was great !", "a bad film , not good .", "the plot is very awful ?", "the film was not bad",
         "the movie was good and the plot was great .", "a very bad plot !", "the film is not awful", "good film",
         "the plot was bad , the movie was awful", "a great film , very good ."]
LABELS = ["pos", "neg", "neg", "pos", "pos", "neg", "neu", "pos", "neg", "pos"]
METHODS = ["vanilla", "input_x_gradient"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two runs of the seeded tiny BERT: a .txt file (targets top1 and top2) and a CSV list with labels (top1)."""
    root = tmp_path_factory.mktemp("words")
    bundle = tiny_text_bundle(seed=2)
    source = root / "reviews.txt"
    source.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    plain = root / "plain"
    settings = Settings(model="tiny-bert", methods=METHODS, targets=["top1", "top2"], modality="text")
    batch.run(str(source), str(plain), settings, bundle=bundle)
    listing = root / "reviews.csv"
    with open(listing, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["body", "label"])
        writer.writerows(zip(TEXTS, LABELS, strict=True))
    labelled = root / "labelled"
    settings = Settings(model="tiny-bert", methods=["vanilla"], targets=["top1"], modality="text", text_column="body")
    batch.run(str(listing), str(labelled), settings, bundle=bundle)
    return plain, labelled


def _sections(out: str) -> dict[str, list[list[str]]]:
    """The printed tables: section title (the line before the header) -> rows split into cells."""
    lines = out.splitlines()
    sections: dict[str, list[list[str]]] = {}
    for i, line in enumerate(lines):
        if line.strip().startswith("word ") and "mean score" in line:
            title = lines[i - 1]
            body = []
            for row in lines[i + 1:]:
                if not row.startswith("  "):
                    break
                body.append(row.split())
            sections[title] = body
    return sections


def _expected(table, method, target, by=None, value=None, sort="top", min_rows=3, top=15):
    words = word_table(table, method, by=by, min_rows=min_rows, sort=sort, target=target)
    if by is not None:
        words = words[words[by] == value]
    return words.head(top)


def _check(section: list[list[str]], expected) -> None:
    assert [cells[0] for cells in section] == list(expected["word"])
    assert [int(cells[1]) for cells in section] == list(expected["rows"])
    np.testing.assert_allclose([float(cells[2]) for cells in section], expected["mean_score"], rtol=1e-3)
    assert [int(cells[4]) for cells in section] == list(expected["top"])


def test_each_method_gets_the_word_table_of_the_runs_first_target(runs, capsys):
    plain, _ = runs
    assert main(["text-words", str(plain), "--min-rows", "2"]) == 0
    out = capsys.readouterr().out
    table = batch.read_table(plain)
    assert f"{len(TEXTS)} texts, target top1" in out.splitlines()[0]
    sections = _sections(out)
    assert list(sections) == [f"{m}: {len(TEXTS)} rows" for m in METHODS]  # one row per text: top1 only
    for method in METHODS:
        _check(sections[f"{method}: {len(TEXTS)} rows"], _expected(table, method, "top1", min_rows=2))


def test_another_target_sort_and_top_are_what_word_table_says(runs, capsys):
    plain, _ = runs
    assert main(["text-words", str(plain), "--method", "input_x_gradient", "--target", "top2", "--sort", "mean_score",
                 "--top", "4", "--min-rows", "1"]) == 0
    sections = _sections(capsys.readouterr().out)
    assert list(sections) == [f"input_x_gradient: {len(TEXTS)} rows"]
    expected = _expected(batch.read_table(plain), "input_x_gradient", "top2", sort="mean_score", min_rows=1, top=4)
    _check(sections[f"input_x_gradient: {len(TEXTS)} rows"], expected)
    assert len(expected) == 4


def test_by_predicted_class_splits_the_rows_and_by_label_reads_a_lists_labels(runs, capsys):
    plain, labelled = runs
    table = batch.read_table(plain)
    top1 = table[(table["method"] == "vanilla") & (table["target"] == "top1")]
    assert main(["text-words", str(plain), "--method", "vanilla", "--by", "predicted", "--min-rows", "1"]) == 0
    sections = _sections(capsys.readouterr().out)
    counts = top1["prediction_name"].value_counts()
    assert sorted(sections) == sorted(f"vanilla, predicted {name}: {n} rows" for name, n in counts.items())
    for name, n in counts.items():
        _check(sections[f"vanilla, predicted {name}: {n} rows"],
               _expected(table, "vanilla", "top1", "prediction_name", name, min_rows=1))
    assert main(["text-words", str(labelled), "--by", "label", "--min-rows", "1"]) == 0
    sections = _sections(capsys.readouterr().out)
    assert sorted(sections) == sorted(f"vanilla, label {name}: {LABELS.count(name)} rows" for name in set(LABELS))


def test_word_table_keeps_one_target(runs):
    plain, _ = runs
    table = batch.read_table(plain)
    both = word_table(table, "vanilla", min_rows=1)
    only = word_table(table, "vanilla", min_rows=1, target="top2")
    alone = word_table(table[table["target"] == "top2"], "vanilla", min_rows=1)
    assert only.equals(alone) and not only.equals(both)
    assert both["rows"].max() > only["rows"].max() or both["top"].sum() == 2 * only["top"].sum()
    with pytest.raises(ParameterError, match="target 'top3' is not in this run; it has top1, top2"):
        word_table(table, "vanilla", target="top3")


def _one_error(capsys, argv: list[str], *expected: str) -> None:
    try:
        status = main(argv)
    except SystemExit as exc:  # argparse's own errors (a bad choice, a bad number) exit from parse_args
        status = exc.code
    assert status == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    for text in expected:
        assert text in lines[0], lines[0]


def test_bad_input_exits_2_with_one_line(runs, tmp_path, capsys):
    plain, _ = runs
    _one_error(capsys, ["text-words", str(tmp_path / "missing")], "does not exist")
    (tmp_path / "file.txt").write_text("x")
    _one_error(capsys, ["text-words", str(tmp_path / "file.txt")], "is a file")
    _one_error(capsys, ["text-words", str(tmp_path)], "no manifest.json")
    _one_error(capsys, ["text-words", str(plain), "--method", "occlusion"], "'occlusion' is not in this run",
               "vanilla")
    _one_error(capsys, ["text-words", str(plain), "--target", "label"], "'label' is not in this run", "top1, top2")
    _one_error(capsys, ["text-words", str(plain), "--by", "label"], "no labels", "--by predicted")
    _one_error(capsys, ["text-words", str(plain), "--top", "0"], "positive integer")
    _one_error(capsys, ["text-words", str(plain), "--by", "colour"], "invalid choice")
    # every row an error: nothing to read
    broken = tmp_path / "broken"
    shutil.copytree(plain, broken)
    frame = batch.read_table(broken)
    frame["error"] = "InputError: the text is empty"
    parts = sorted((broken / "table").glob("part-*.parquet"))
    frame.to_parquet(parts[0], index=False)
    for extra in parts[1:]:
        extra.unlink()
    assert json.loads((broken / "manifest.json").read_text())["modality"] == "text"
    _one_error(capsys, ["text-words", str(broken)], "no explained rows")


def test_an_image_run_is_refused_with_what_the_command_reads(tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray((np.random.default_rng(0).random((28, 28, 3)) * 255).astype(np.uint8)).save(images / "a.png")
    batch.run(str(images), str(tmp_path / "run"), Settings("lenet_digits", ["gradcam"], ["top1"]), workers=0)
    _one_error(capsys, ["text-words", str(tmp_path / "run")], "run over images", "run over texts")
