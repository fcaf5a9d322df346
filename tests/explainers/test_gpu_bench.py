"""bench/gpu.py --quick runs end to end on a CPU: every model × method cell has ours timed or says why not, the
medians, interquartile ranges and memory parse, and where a peer ran, ours and the peer give the same map (so a
wrong map of ours, or a wrong call of the peer's, fails here). It checks the benchmark, not the speed."""

from __future__ import annotations

import importlib.util
import re

import pytest

from .helpers import markdown_tables, quick_report

METHODS = ("vanilla", "gradcam", "scorecam", "integrated_gradients", "smoothgrad", "lrp", "kernel_shap")
MODELS = ("tiny", "tiny_vit")

pytestmark = pytest.mark.slow

for oracle in ("captum", "pytorch_grad_cam"):
    if importlib.util.find_spec(oracle) is None:
        pytest.skip(f"{oracle} (a test-only oracle, requirements-dev.txt) is not installed", allow_module_level=True)


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> str:
    return quick_report("gpu.py", tmp_path_factory.mktemp("gpu"), "gpu")


def test_header_names_the_device_and_the_runs(report):
    assert report.startswith("# Latency per model and method on CPU")
    for needle in ("torch threads", "captum", "grad-cam", "torchcam", "zennit", "runs per cell", "--quick"):
        assert needle in report, needle


def test_every_cell_is_timed_or_says_why(report):
    rows = markdown_tables(report)["Every cell"]
    for model in MODELS:
        for method in METHODS:
            ours = [r for r in rows if (r["model"], r["method"], r["library"]) == (model, method, "ours")]
            assert len(ours) == 1, (model, method)
            (ours,) = ours
            if ours["median (ms)"] == "—":
                assert ours["settings or reason"].startswith("refused: "), ours
                continue
            assert float(ours["median (ms)"]) > 0 and float(ours["IQR (ms)"]) >= 0, ours
            assert float(ours["forward excluded (ms)"]) < float(ours["median (ms)"]), ours
            assert float(ours["peak memory (MiB)"]) >= 0 and int(ours["runs"]) >= 1, ours
    # on the tiny CNN every method runs, and each has at least one peer that ran beside it
    for method in METHODS:
        peers = [r for r in rows if r["model"] == "tiny" and r["method"] == method and r["library"] != "ours"]
        assert any(r["median (ms)"] != "—" for r in peers), method
    for row in rows:
        if row["library"] != "ours" and row["median (ms)"] == "—":
            assert row["settings or reason"], row  # a peer that did not run says why


def test_ours_and_the_peer_give_the_same_map(report):
    compared = [r for r in markdown_tables(report)["Every cell"] if r["library"] != "ours" and r["median (ms)"] != "—"]
    assert len(compared) >= len(METHODS)
    for row in compared:
        assert float(row["ours/this"]) > 0 and float(row["median (ms)"]) > 0, row
        assert float(row["IQR (ms)"]) >= 0 and float(row["peak memory (MiB)"]) >= 0, row
        assert row["same map?"] == "yes" or row["same map?"].startswith("no (expected"), row


def test_grids_and_the_first_grad_cam_line(report):
    grid = markdown_tables(report)["Ours: median ms per call, forward included / excluded (IQR)"]
    assert [row["model"] for row in grid] == list(MODELS)
    for row in grid:
        for method in METHODS:
            cell = row[method]
            assert re.fullmatch(r"[\d.]+ / -?[\d.]+ \(IQR [\d.]+\)", cell) or cell.startswith("— ("), cell
    first = markdown_tables(report)["First Grad-CAM map after a warm forward (goal < 10 ms on a GPU)"]
    assert [row["model"] for row in first] == list(MODELS)
    assert all(float(row["first Grad-CAM (ms)"]) > 0 for row in first)
