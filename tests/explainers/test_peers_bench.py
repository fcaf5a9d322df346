"""bench/peers.py --quick runs end to end: every comparison kind gets a row with a ratio, and ours and the peer
give the same map in each (so a wrong map of ours, or a wrong call of the peer's, fails here). It checks that the
benchmark works, not that anything is fast."""

from __future__ import annotations

import importlib.util
import re

import pytest

from .helpers import markdown_tables, quick_report

pytestmark = pytest.mark.slow

for oracle in ("captum", "pytorch_grad_cam"):
    if importlib.util.find_spec(oracle) is None:
        pytest.skip(f"{oracle} (a test-only oracle, requirements-dev.txt) is not installed", allow_module_level=True)


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[str, list[dict[str, str]]]:
    text = quick_report("peers.py", tmp_path_factory.mktemp("peers"), "peers")
    return text, markdown_tables(text)["Results"]


def test_header_names_machine_versions_and_command(report):
    text, _ = report
    for needle in ("torch threads", "captum", "grad-cam", "torchcam", "load average at start",
                   "load average at end", "--quick", "date"):
        assert needle in text, needle


def test_every_comparison_kind_has_rows_with_numeric_ratios(report):
    _, rows = report
    kinds = {row["peer"] for row in rows}
    assert {"Captum", "pytorch-grad-cam", "explain_many", "2 vs 1 target"} <= kinds
    if importlib.util.find_spec("torchcam") is not None:
        assert "torchcam" in kinds
    captum = {row["comparison"].split(" vs ")[0] for row in rows if row["peer"] == "Captum"}
    assert {"vanilla", "input_x_gradient", "integrated_gradients", "smoothgrad", "guided_backprop", "occlusion",
            "gradcam"} <= captum
    grad_cam = {row["comparison"].split(" vs ")[0] for row in rows if row["peer"] == "pytorch-grad-cam"}
    assert {"gradcam", "gradcam_pp", "scorecam", "eigencam"} <= grad_cam
    two_vs_one = [row["comparison"] for row in rows if row["peer"] == "2 vs 1 target"]
    assert len(two_vs_one) == 5, two_vs_one
    for peer, method in (("pytorch-grad-cam", "ablationcam"), ("pytorch-grad-cam", "fullgrad"),
                         ("PAIR saliency", "blur_ig"), ("PAIR saliency", "guided_ig"), ("PAIR saliency", "xrai"),
                         ("lxt", "attnlrp"), ("plain PyTorch", "chefer_generic")):
        assert any(row["peer"] == peer and row["comparison"].startswith(method) for row in rows), (peer, method)
    if importlib.util.find_spec("torchcam") is not None:
        assert any(row["comparison"].startswith("legrad vs torchcam") for row in rows)
    # a method with no fair peer gets a row saying why, with no numbers
    unmatched = [row for row in rows if row["ratio ours/peer"] == "—"]
    assert [row["comparison"].split(" vs ")[0] for row in unmatched] == ["transformer_attribution"]
    assert "no fair peer" in unmatched[0]["peer settings"], unmatched
    rows = [row for row in rows if row not in unmatched]
    for row in rows:
        assert float(row["ratio ours/peer"]) > 0, row
        assert float(row["ours (median s)"]) > 0 and float(row["peer (median s)"]) > 0, row
        assert row["runs"].startswith("1"), row  # --quick: one run


def test_ours_and_the_peer_give_the_same_map(report):
    """The tiny model has only nn.ReLU, so every peer must agree, except where a peer's own formula is known to
    differ (reported as 'no (expected: ...)' with the reason in the notes): torchcam's Grad-CAM++ α, and Captum's
    DeepLift hooks on a ReLU that feeds a max-pool directly (the row then shows that Captum on a copy with an
    identity between the two agrees with ours)."""
    text, rows = report
    known = {("torchcam", "gradcam_pp"), ("Captum", "deeplift"), ("Captum", "deeplift_shap")}
    rows = [row for row in rows if row["ratio ours/peer"] != "—"]  # no peer, no map to compare
    for row in rows:
        assert row["same map?"] == "yes" or row["same map?"].startswith("no (expected"), row
        if row["same map?"] != "yes":
            assert (row["peer"], row["comparison"].split(" vs ")[0]) in known, row
            assert "Expected difference" in text
            if row["peer"] == "Captum":
                assert "a copy with an identity" in row["agreement"] and "corr 1.0000" in row["agreement"], row
    assert sum(row["same map?"] == "yes" for row in rows) >= len(rows) - len(known)


def _limit_rates(text: str) -> dict[str, tuple[float, float]]:
    """{model: (forward, backward) seconds per row} from the report's limit table."""
    rows = next(rows for heading, rows in markdown_tables(text).items() if heading.startswith("The machine's limit"))
    return {row["model"]: (float(row["forward (ms/row)"]) / 1e3, float(row["backward (ms/row)"]) / 1e3)
            for row in rows}


def test_multi_pass_rows_have_their_limit_and_every_row_its_memory(report):
    """The limit of a row is its passes at the machine's best rates, measured in the same run; multi-pass rows
    carry the 1.2 goal; every row where ours ran has its peak memory."""
    text, rows = report
    rates = _limit_rates(text)
    assert set(rates) == {"tiny"}
    forward, backward = rates["tiny"]
    assert 0 < forward <= backward
    with_limit = [row for row in rows if row["limit (s)"] != "—"]
    methods = {row["comparison"].split(" vs ")[0] for row in with_limit}
    assert {"integrated_gradients", "smoothgrad", "occlusion", "scorecam", "kernel_shap", "vanilla"} <= methods
    # the families whose rows used to return bare maps: PAIR's path methods, and extremal (optimise() direct)
    for oracle, names in (("saliency", {"blur_ig", "guided_ig", "xrai"}), ("torchray", {"extremal_perturbation"})):
        if importlib.util.find_spec(oracle) is not None:
            assert names <= methods, (oracle, methods)
    for row in with_limit:
        counts = re.fullmatch(r"(\d+) forward(?: \+ (\d+) backward)? pass(?:es)?", row["passes per image"])
        assert counts, row
        f, b = int(counts[1]), int(counts[2] or 0)
        expected = (f - b) * forward + b * backward
        assert float(row["limit (s)"]) == pytest.approx(expected, rel=0.02, abs=2e-4), row
        assert float(row["ours/limit"]) == pytest.approx(float(row["ours (median s)"]) / float(row["limit (s)"]),
                                                          rel=0.05, abs=2e-3), row
        multi = f + b > 2
        assert row["limit goal"] == ("≤ 1.2" if multi else "—"), row
        assert row["limit met"] in (("yes", "no") if multi else ("—",)), row
    # rows on other models than the one whose limit was measured, or with no one explain() call, have none
    assert all(row["limit (s)"] == "—" for row in rows if row["model"] != "tiny" or row["peer"] == "explain_many")
    for row in rows:
        if row["ours (median s)"] != "—":
            assert float(row["ours peak (MiB)"]) >= 0, row
    assert "Peak memory (ours)" in text and "VmHWM" in text
