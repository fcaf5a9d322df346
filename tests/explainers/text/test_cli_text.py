"""The text commands on the shipped model: ``text`` prints each method's token scores (the numbers explain_text
gives) and writes JSON and HTML; ``text-sanity`` and ``text-faithfulness`` print their tables; ``batch`` takes a
.txt file; bad input exits 2 with one line."""

from __future__ import annotations

import json

import numpy as np
import pytest

from explainers import METHODS, batch, explain
from explainers.cli.main import main
from explainers.errors import SaliencyError
from explainers.models.text import DEFAULT_TEXT_MODEL, load_text_model
from explainers.registry import TEXT as TEXT_MODALITY
from explainers.registry import methods_for
from explainers.text import explain_text
from explainers.trust.text import text_sanity

TEXT = "Honestly, the film was superb, directed by Morgan."


@pytest.fixture(scope="module")
def shipped():
    return load_text_model()


def test_text_prints_each_methods_token_scores_and_writes_json_and_html(shipped, tmp_path, capsys):
    status = main(["text", TEXT, "--methods", "vanilla,input_x_gradient", "--json", str(tmp_path / "m.json"),
                   "--html", str(tmp_path / "m.html")])
    out = capsys.readouterr().out
    assert status == 0 and f"model {DEFAULT_TEXT_MODEL}: predicted positive" in out
    direct = explain_text(shipped, TEXT, ["vanilla", "input_x_gradient"], "top1")
    lines = out.splitlines()
    for method in ("vanilla", "input_x_gradient"):
        start = next(i for i, line in enumerate(lines) if line.startswith(f"{method}:"))
        printed = [line.split() for line in lines[start + 1:start + 12]]
        encoded = direct[(method, "top1")].encoded
        assert [p[0] for p in printed] == [encoded.tokens[i] for i in encoded.content]
        np.testing.assert_allclose([float(p[1]) for p in printed], direct[(method, "top1")].scores[encoded.content],
                                   rtol=1e-5)
    assert "L2 norm" in out and "summed over the embedding" in out
    payload = json.loads((tmp_path / "m.json").read_text())
    assert [m["method"] for m in payload["maps"]] == ["vanilla", "input_x_gradient"]
    assert payload["maps"][0]["target_names"] == ["positive"] and payload["predictions"][0]["name"] == "positive"
    assert len(payload["maps"][0]["tokens"]) == len(direct[("vanilla", "top1")].encoded)
    html = (tmp_path / "m.html").read_text()
    assert html.count('class="saliency-text"') == 2 and "superb" in html


def test_text_groups_words_contrasts_and_says_the_cut(capsys):
    long = " ".join(["the film was superb"] * 20)
    status = main(["text", long, "--methods", "input_x_gradient", "--group", "max", "--target", "positive vs negative",
                   "--objective", "log_probability"])
    out = capsys.readouterr().out
    assert status == 0 and "target: positive vs negative" in out and "objective log_probability" in out
    assert "note: the text is longer than the model reads" in out and "largest magnitude" in out


def test_text_sanity_and_faithfulness_print_their_tables(shipped, tmp_path, capsys):
    assert main(["text-sanity", TEXT, "--methods", "vanilla", "--json", str(tmp_path / "s.json")]) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("method"))
    assert header.split()[1:3] == ["classifier", "head"] and header.rstrip().endswith("random logit")
    sanity = json.loads((tmp_path / "s.json").read_text())
    assert [s["label"] for s in sanity["steps"]][-1] == "+ embeddings" and "vanilla" in sanity["random_logit"]
    # the objective reaches the check: the printed original map is the probability's, as text_sanity gives it
    assert main(["text-sanity", TEXT, "--methods", "input_x_gradient", "--objective", "probability",
                 "--json", str(tmp_path / "p.json")]) == 0
    probability = json.loads((tmp_path / "p.json").read_text())
    direct = text_sanity(shipped, TEXT, ["input_x_gradient"], objective="probability")
    assert probability["objective"] == "probability"
    np.testing.assert_allclose(probability["original"]["input_x_gradient"], direct.original["input_x_gradient"],
                               rtol=1e-5, atol=1e-9)
    logit = explain_text(shipped, TEXT, ["input_x_gradient"], "top1")[("input_x_gradient", "top1")].scores
    assert not np.allclose(direct.original["input_x_gradient"], logit)
    capsys.readouterr()
    assert main(["text-faithfulness", TEXT, "--methods", "vanilla", "--removal", "mask", "--bins", "10,50",
                 "--json", str(tmp_path / "f.json")]) == 0
    out = capsys.readouterr().out
    assert "comprehensiveness" in out and "[MASK]" in out
    rows = [line.split()[0] for line in out.splitlines()[2:4]]
    assert rows == ["vanilla", "random"]
    faithful = json.loads((tmp_path / "f.json").read_text())
    assert faithful["bins"] == [0.1, 0.5] and faithful["removal"] == "mask"


def test_a_nan_in_the_faithfulness_json_is_null_never_a_crash(tmp_path, capsys, monkeypatch):
    """Every number of the JSON goes through one NaN-safe helper (allow_nan=False): an undefined AUC is null."""
    import dataclasses

    from explainers.cli import text as cli_text

    real = cli_text.text_faithfulness

    def undefined(*args, **kwargs):
        result = real(*args, **kwargs)
        rows = [dataclasses.replace(r, deletion_auc=float("nan"), insertion_auc=float("inf")) for r in result.rows]
        return dataclasses.replace(result, rows=rows)

    monkeypatch.setattr(cli_text, "text_faithfulness", undefined)
    assert main(["text-faithfulness", "a good film", "--methods", "vanilla", "--removal", "mask",
                 "--json", str(tmp_path / "f.json")]) == 0
    rows = json.loads((tmp_path / "f.json").read_text())["rows"]
    assert all(r["deletion_auc"] is None and r["insertion_auc"] is None for r in rows)
    assert "n/a" in capsys.readouterr().out


def test_batch_of_a_text_file_on_the_shipped_model(tmp_path, capsys):
    source = tmp_path / "reviews.txt"
    source.write_text(f"{TEXT}\nThe plot felt dull.\n", encoding="utf-8")
    assert main(["batch", str(source), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    assert "2 texts explained" in capsys.readouterr().out
    table = batch.read_table(tmp_path / "run")
    assert set(table["method"]) == {"vanilla", "input_x_gradient"} and len(table) == 4
    assert set(table["prediction_name"]) == {"positive", "negative"}


@pytest.mark.parametrize("args, message", [
    (["text", "", "--methods", "vanilla"], "the text is empty"),
    (["text", "a film", "--methods", "gradcam"], METHODS["gradcam"].modality_reason(TEXT_MODALITY)),
    (["text", "a film", "--methods", "nope"],
     f"unknown method 'nope'; available on text: {', '.join(methods_for(TEXT_MODALITY))}\n"),
    (["text", "a film", "--methods", "vanilla", "--param", "vanilla.n_steps=3"], "no parameter 'n_steps' on text"),
    (["text", "a film", "--target", "happy"], "no class named 'happy'"),
    (["text", "a film", "--group", "mean"], "invalid choice: 'mean'"),
    (["text", "a film", "--model", "no/such/folder"], "error: "),
    (["text", "a film", "--json", "/no/such/folder/m.json"], "does not exist"),
    (["text-sanity", "a film", "--objective", "loss"], "invalid choice: 'loss'"),
    (["text-faithfulness", "a film", "--removal", "drop"], "invalid choice: 'drop'"),
    (["text-faithfulness", "a film", "--bins", "0,50"], "percentages"),
    (["text-faithfulness", "a film", "--methods", "random"], "control"),
    (["batch", "x.txt", "--out", "o", "--max-boxes", "3"], "--max-boxes applies to images"),
    (["batch", "x.csv", "--text-column", "t", "--out", "o", "--methods", "gradcam"],
     METHODS["gradcam"].modality_reason(TEXT_MODALITY)),
])
def test_bad_input_exits_2_with_one_line(args, message, capsys):
    try:
        status = main(args)
    except SystemExit as exc:  # argparse's own errors (a bad choice, an unknown option) exit from parse_args
        status = exc.code
    err = capsys.readouterr().err
    assert status == 2 and err.startswith("error: ") and message in err and err.count("\n") == 1, err


def test_every_surface_refuses_an_image_method_on_text_in_the_registrys_words(shipped, tmp_path, capsys):
    """One wording, from the registry (MethodInfo.modality_reason): the API, the text command, a batch run."""
    reason = METHODS["gradcam"].modality_reason(TEXT_MODALITY)
    assert "Grad-CAM ('gradcam') does not apply to text" in reason and "integrated_gradients" in reason
    assert "gradcam" not in reason.split("the text methods: ")[1].split(", ")
    scored = shipped.scored("a film")
    with pytest.raises(SaliencyError) as raised:
        explain(scored, scored.inputs, "gradcam")
    assert str(raised.value).startswith(reason)
    source = tmp_path / "x.txt"
    source.write_text("a film\n", encoding="utf-8")
    with pytest.raises(SaliencyError) as raised:
        batch.run(str(source), str(tmp_path / "run"), batch.Settings(model=DEFAULT_TEXT_MODEL, methods=["gradcam"],
                                                                       targets=["top1"], modality="text"))
    assert str(raised.value) == reason
    assert main(["text", "a film", "--methods", "gradcam"]) == 2
    assert capsys.readouterr().err == f"error: {reason}\n"
