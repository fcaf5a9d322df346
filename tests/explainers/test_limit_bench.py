"""bench/limit.py: BatchNorm folding gives the same outputs, a method's limit adds up its passes, and --quick runs
end to end with a table whose numbers hold together (the limit is the best variant measured, a forward+backward
costs at least a forward). It checks that the benchmark works, not how fast anything is."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from .helpers import markdown_tables, quick_report

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def limit(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    import limit

    return limit


def test_folding_batchnorm_keeps_the_outputs_and_folds_every_pair(limit):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-1, 1)
                module.running_var.uniform_(0.5, 2)
                module.weight.uniform_(0.5, 1.5)
    model.eval()
    x = torch.randn(2, 3, 64, 64)
    folded, count, why = limit.fold_batchnorm(model, x)
    assert why is None
    assert count == sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 20
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # the model itself is untouched
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=1e-4, atol=1e-4)


def test_folding_refuses_a_convolution_whose_output_is_used_twice(limit):
    class Branches(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)

        def forward(self, x):
            y = self.conv(x)
            return (self.bn(y) + y).mean((2, 3))  # y is needed unfolded too

    torch.manual_seed(0)
    model = Branches()
    with torch.no_grad():
        model.bn.running_var.fill_(4.0)
        model.bn.running_mean.fill_(1.0)
    model.eval()
    folded, count, why = limit.fold_batchnorm(model, torch.randn(1, 3, 8, 8))
    assert count == 0 and "changed the output" in why
    assert isinstance(folded.bn, nn.BatchNorm2d)


def test_a_methods_limit_counts_each_backward_with_its_forward(limit):
    from explainers import get_method

    rates = limit.Limit(forward_s_per_row=1.0, backward_s_per_row=3.0, forward_variant="f", backward_variant="b",
                        forward_batch1_s=2.0, backward_batch1_s=5.0)
    passes = get_method("integrated_gradients").passes({"n_steps": 50})  # 52 forward, 50 of them with a backward
    assert rates.seconds(passes) == pytest.approx(2 * 1.0 + 50 * 3.0)
    assert rates.seconds(passes, rows=3) == pytest.approx(3 * (2 + 150))
    assert rates.seconds(get_method("scorecam").passes({}, channels=32)) == pytest.approx(33.0)


def test_the_limit_on_the_model_as_it_is_leaves_out_converted_and_folded_variants(limit):
    def variant(kind, layout, folded, s_per_row):
        return {"label": f"{kind} {layout} {folded}", "kind": kind, "batch": 4, "layout": layout, "folded": folded,
                "median_s": 4 * s_per_row, "s_per_row": s_per_row, "runs": 3}

    variants = [variant("forward", "contiguous", False, 5.0), variant("forward", "channels_last input", False, 4.0),
                variant("forward", "contiguous", True, 2.0), variant("forward", "channels_last model+input", True, 1.0),
                variant("backward", "contiguous", False, 9.0), variant("backward", "channels_last input", False, 8.0),
                variant("backward", "channels_last model+input", False, 6.0)]
    best = limit.Limit(forward_s_per_row=1.0, backward_s_per_row=6.0, forward_variant="", backward_variant="",
                       forward_batch1_s=5.0, backward_batch1_s=9.0, variants=variants)
    kept = best.as_is()
    assert (kept.forward_s_per_row, kept.backward_s_per_row) == (4.0, 8.0)
    assert kept.forward_variant == "forward channels_last input False"
    assert (best.forward_s_per_row, best.backward_s_per_row) == (1.0, 6.0)  # the limit itself is unchanged

def test_the_sanity_cascades_step_limit_adds_up_its_methods_passes(limit, monkeypatch):
    """bench/bench_sanity.py's limit of one step: IG-16 is 2 forwards and 16 forward+backwards, SmoothGrad-10 a
    clean forward and ten forward+backwards, the shared pass (vanilla, guided backprop, Grad-CAM, Guided Grad-CAM)
    one forward and two backwards; the controls are free."""
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    import bench_sanity

    from explainers import load_model

    rates = limit.Limit(forward_s_per_row=1.0, backward_s_per_row=3.0, forward_variant="f", backward_variant="b",
                        forward_batch1_s=2.0, backward_batch1_s=5.0)
    parts = bench_sanity.step_limit(rates, load_model("efficientnet_lite0"), rows=2)
    assert parts == pytest.approx({"smoothgrad": 2 * (1.0 + 10 * 3.0),
                                   "integrated_gradients": 2 * (2 * 1.0 + 16 * 3.0),
                                   "shared pass": 2 * (1.0 + 2 * (3.0 - 1.0))})


@pytest.mark.slow
def test_quick_run_writes_a_consistent_limit_table(tmp_path):
    text = quick_report("limit.py", tmp_path, "limit")
    for needle in ("torch threads", "load average at start", "--quick", "BN folded"):
        assert needle in text, needle
    tables = markdown_tables(text)
    summary, variants = tables["Limit"], tables["Every variant"]
    assert [row["model"] for row in summary] == ["tiny"]
    for row in summary:
        forward, backward = float(row["forward (ms/row)"]), float(row["backward (ms/row)"])
        assert forward > 0 and backward > 0, row
        assert backward >= forward, row  # a forward+backward cannot beat a forward alone
        assert row["best forward variant"].startswith("forward, ") and row["best backward variant"].startswith(
            "backward, "), row
        assert int(row["BN folded"]) == 1, row  # the tiny CNN has one Conv2d → BatchNorm2d pair
        mine = [v for v in variants if v["model"] == row["model"]]
        for kind, best in (("forward", forward), ("backward", backward)):
            per_row = [float(v["per row (ms)"]) for v in mine if v["kind"] == kind]
            assert per_row and min(per_row) == pytest.approx(best, abs=1e-3), (kind, per_row)
            rows = {int(v["rows"]) for v in mine if v["kind"] == kind}
            assert 1 in rows and len(rows) >= 2, rows  # batch sizes from one row up
        layouts = {(v["kind"], v["layout"], v["BN folded"]) for v in mine}
        assert ("forward", "contiguous", "yes") in layouts and ("forward", "channels_last model+input", "no") in layouts
        assert not any(kind == "backward" and folded == "yes" for kind, _, folded in layouts)
        for v in mine:  # per row = per call / rows
            assert float(v["per row (ms)"]) == pytest.approx(float(v["median per call (ms)"]) / int(v["rows"]),
                                                             rel=1e-2, abs=2e-3), v
    assert re.search(r"\| tiny \| 3×64×64 \|", text)
