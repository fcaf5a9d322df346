"""The digits benchmark: method parameters scaled to the input, and evaluations written, read back and the newest
found (the ``evaluate`` command is tests/explainers/cli/test_faithfulness.py's)."""

from __future__ import annotations

import json

import numpy as np

from explainers.trust.benchmark import (
    ROW_FIELDS,
    digits_evaluation,
    latest_evaluation,
    method_params,
    read_evaluation,
    write_evaluation,
)


def test_occlusion_window_and_stride_scale_with_the_input():
    same = {"baseline": "zero", "precision": "float32"}  # the rest of occlusion's defaults, untouched
    assert method_params("occlusion", 224) == {"window": 32, "stride": 16, **same}
    assert method_params("occlusion", 32) == {"window": 5, "stride": 2, **same}
    assert method_params("occlusion", 32, {"stride": 3})["stride"] == 3  # what the caller gives wins
    assert method_params("gradcam", 32) == {"relu": True}


def test_evaluations_read_back_as_written_and_the_newest_is_the_latest(tmp_path):
    assert latest_evaluation(tmp_path) is None
    runs = [digits_evaluation(n, ("gradcam", "random"), steps=4) for n in (12, 16)]
    folders = [write_evaluation(run, tmp_path) for run in runs]
    assert folders[0] != folders[1] and runs[1].path == folders[1]
    latest = latest_evaluation(tmp_path)
    assert latest.path == folders[1] and latest.settings["n"] == 16 and latest.model == "lenet_digits"
    assert sorted(p.name for p in latest.path.iterdir()) == ["gradcam.csv", "random.csv", "run.json", "summary.csv"]
    summary = (latest.path / "summary.csv").read_text().splitlines()
    assert summary[0].startswith("method,n,pointing_game,energy_pointing_game,chance,deletion_auc,insertion_auc")
    for method in ("gradcam", "random"):
        written, read = runs[1].method(method), latest.method(method)
        for name in ROW_FIELDS:  # the CSVs keep six significant digits
            np.testing.assert_allclose(read.rows[name], written.rows[name], rtol=1e-5, err_msg=name)
    gradcam = latest.method("gradcam")
    assert gradcam.n == 16 and set(np.unique(gradcam.rows["pointing_hit"])) <= {0.0, 1.0}
    assert 0 <= gradcam.summary()["deletion_auc"] <= 1 and gradcam.summary()["explain_s"] > 0
    assert read_evaluation(folders[0]).settings["n"] == 12
    json.dumps(latest.to_dict(), allow_nan=False)
