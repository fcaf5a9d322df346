"""The ``sanity`` command: the verdict table, the JSON and the filmstrip it writes, and its one-line user errors."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from explainers.cli.main import main
from explainers.trust.sanity import BLOCK_RULE
from explainers.trust.similarity import METRIC_LABELS

from ...conftest import sample_path


def test_sanity_command_prints_the_verdict_and_writes_json_and_filmstrip(tmp_path, capsys):
    status = main(["sanity", str(sample_path("cat.png")), "--methods", "vanilla,gradcam", "--steps", "1",
                   "--random-classes", "1", "--out", str(tmp_path), "--quiet"])
    out = capsys.readouterr().out
    assert status == 0
    assert "model randomisation" in out and "gradcam" in out and "sobel" in out
    header = next(line for line in out.splitlines() if line.startswith("method") and "published" in line)
    for label in METRIC_LABELS.values():  # one column per similarity measure, then the paper's verdict and a flag
        assert label in header
    assert header.split()[-1] == "flag"
    payload = json.loads((tmp_path / "cat_sanity.json").read_text())
    assert payload["model_randomisation"]["steps"][1]["name"] == "_fc"
    # a classifier's run as before the detector options: the whole-model cascade, no box, no box notes
    assert payload["model_randomisation"]["block_rule"] == BLOCK_RULE and payload["model_randomisation"]["notes"] == []
    assert "dense_target" not in payload and "was not found again" not in out and payload["random_logit"]
    verdict = payload["verdict"]
    assert set(verdict["rows"]) == {"vanilla", "gradcam", "sobel", "random"}
    assert set(verdict["rows"]["vanilla"]["model_randomisation"]["measures"]) == set(METRIC_LABELS)
    assert verdict["published"]["gradcam"] == "passes model randomisation"
    for key, flag in verdict["disagreements"].items():  # every flag is printed with its sentence
        assert f"{key} differs from Adebayo et al." in out and flag["reason"] in out
    with Image.open(tmp_path / "cat_sanity.png") as strip:
        assert strip.width > 2 * 56 and strip.height > 4 * 56


@pytest.mark.parametrize("args, message", [
    (["--methods", "vanilla,nope"], "unknown method 'nope'"),
    (["--steps", "-1"], "--steps"),
    (["--param", "vanilla.n_steps=3"], "no parameter 'n_steps'"),
    (["--param", "smoothgrad.n_samples=3"], "not among the methods"),
    (["--methods", "gradcam", "--layer", "nope"], "list-layers efficientnet_lite0"),
])
def test_sanity_command_user_errors_exit_2_with_one_line(args, message, capsys):
    status = main(["sanity", str(sample_path("cat.png")), "--quiet", *args])
    err = capsys.readouterr().err
    assert status == 2 and err.startswith("error: ") and message in err and err.count("\n") == 1
