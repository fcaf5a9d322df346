"""The ``faithfulness``, ``evaluate`` and ``roar`` commands: what they write and print, and their one-line user
errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from explainers.cli.main import main
from explainers.trust.benchmark import read_evaluation

from ...conftest import sample_path


def test_faithfulness_writes_curves_and_auc_table(tmp_path, capsys):
    status = main(["faithfulness", str(sample_path("cat.png")), "--methods", "gradcam,random", "--steps", "4",
                   "--out", str(tmp_path), "--quiet"])
    assert status == 0
    record = json.loads((tmp_path / "cat_faithfulness.json").read_text())
    assert {(c["kind"], c["method"]) for c in record["curves"]} == {
        (k, m) for k in ("deletion", "insertion") for m in ("gradcam", "random")}
    for curve in record["curves"]:
        p = np.array(curve["probability"])
        assert curve["fractions"] == [0, 0.25, 0.5, 0.75, 1]
        np.testing.assert_allclose(curve["auc"], np.trapezoid(p, curve["fractions"], axis=-1))
    table = (tmp_path / "cat_faithfulness.csv").read_text().splitlines()
    assert table[0] == "kind,method,target,n,auc,logit_auc" and len(table) == 5
    # a classifier's record and table as before the detector options: the class target, no pointing game
    assert record["target"] == "top1" and "box_pointing" not in record
    assert all(row.split(",")[2] == "top1" for row in table[1:])
    out = capsys.readouterr().out
    assert "deletion" in out and "pointing" not in out
    assert out.splitlines()[0].split() == ["kind", "method", "target", "auc", "logit_auc"]


def test_evaluate_writes_one_run_folder_and_prints_the_summary(tmp_path, capsys):
    assert main(["evaluate", "--n", "12", "--methods", "gradcam", "random", "--steps", "4", "--out", str(tmp_path),
                 "--quiet"]) == 0
    (folder,) = tmp_path.iterdir()
    assert sorted(p.name for p in folder.iterdir()) == ["gradcam.csv", "random.csv", "run.json", "summary.csv"]
    evaluation = read_evaluation(folder)
    assert evaluation.settings["n"] == 12 and [m.method for m in evaluation.methods] == ["gradcam", "random"]
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:3] == ["method", "n", "pointing_game"]
    assert [line.split()[0] for line in out[1:]] == ["gradcam", "random"]


def test_roar_writes_the_table(tmp_path, capsys):
    status = main(["roar", "--methods", "random", "--k", "30", "--n-train", "200", "--n-test", "50", "--epochs", "1",
                   "--threads", "1", "--out", str(tmp_path), "--quiet"])
    assert status == 0
    rows = (tmp_path / "roar.csv").read_text().splitlines()
    assert rows[0] == "method,k=0%,k=30%" and rows[1].startswith("random,")
    assert json.loads((tmp_path / "roar.json").read_text())["settings"]["n_train"] == 200
    assert "random" in capsys.readouterr().out


@pytest.mark.parametrize("argv, words", [
    (["evaluate", "--model", "efficientnet_lite0", "--out", "OUT"], ("ground-truth", "efficientnet_lite0")),
    (["faithfulness", "CAT", "--methods", "gradkam", "--out", "OUT"], ("gradkam",)),
    (["faithfulness", "CAT", "--methods", "gradcam", "--param", "vanilla.x=1", "--out", "OUT"], ("vanilla",)),
    (["roar", "--methods", "random", "--k", "150"], ("percentages",)),
])
def test_user_errors_are_one_line(tmp_path, capsys, argv, words):
    argv = [str(tmp_path) if a == "OUT" else str(sample_path("cat.png")) if a == "CAT" else a for a in argv]
    try:
        status = main(argv)
    except SystemExit as exit_:  # argparse's own errors
        status = exit_.code
    assert status == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ")
    for word in words:
        assert word in lines[0]
