"""bench/bench_precision.py --quick runs end to end: where the CPU has bfloat16 units, a line per case with both
times, their ratio and the bfloat16 map's distance from the float32 one, and Score-CAM against pytorch-grad-cam;
elsewhere the reason bfloat16 is not offered. It checks that the benchmark works, not how fast anything is."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from explainers.folding import bfloat16_unavailable

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_quick_run_reports_every_case_or_why_not():
    completed = subprocess.run([sys.executable, "bench/bench_precision.py", "--quick"], cwd=ROOT,
                               capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-4000:]
    why = bfloat16_unavailable("cpu")
    if why is not None:
        assert f"bfloat16 is not offered here: {why}" in completed.stdout
        return
    cases = re.findall(r"(scorecam|occlusion|rise)\s+float32\s+([\d.]+) s\s+bfloat16\s+([\d.]+) s\s+ratio ([\d.]+)"
                       r"\s+map corr ([-\d.]+), max rel diff ([\d.e+-]+)", completed.stdout)
    assert [c[0] for c in cases] == ["scorecam", "occlusion", "rise"], completed.stdout
    for _, f32, bf16, ratio, corr, max_rel in cases:
        assert float(ratio) == pytest.approx(float(bf16) / float(f32), rel=0.05, abs=2e-3)
        assert 0.9 < float(corr) <= 1.0 and 0 <= float(max_rel) < 0.5
    assert re.search(r"scorecam vs pytorch-grad-cam \(1 rounds\): ours bfloat16 [\d.]+ s \([\d.]+\), ours float32 "
                     r"[\d.]+ s \([\d.]+\), pytorch-grad-cam [\d.]+ s \(1\.000\); bfloat16 map vs the peer's: corr "
                     r"(0\.99|1\.0)", completed.stdout), completed.stdout
