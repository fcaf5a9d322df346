"""The ``batch`` command (explainers.cli.batch): a run killed by a signal resumes to the uninterrupted table, and
bad input is one line without a traceback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from ..helpers import assert_same_runs, squares, write_list

ROOT = Path(__file__).resolve().parents[3]


def cli(*args, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "explainers", "batch", *map(str, args)], cwd=ROOT,
                            env={**os.environ, "SALIENCY_OFFLINE": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def test_the_summary_line_counts_unreadable_images_apart(tmp_path):
    """Two unreadable files among five are not "5 images explained" (issue 18): three explained, two unreadable."""
    rows = squares(tmp_path / "images", 3)
    for name in ("broken.png", "empty.jpg"):
        (tmp_path / "images" / name).write_bytes(b"\x89PNG\r\n\x1a\n not really" if name.endswith("png") else b"")
        rows.append({"path": name, "label": ""})
    listed = write_list(tmp_path / "images" / "list.csv", [{**r, "label": ""} for r in rows])
    process = cli(listed, "--out", tmp_path / "run", "--methods", "vanilla", "--workers", "0", "--quiet")
    assert process.wait(timeout=300) == 0, process.stderr.read()
    assert "3 images explained, 2 unreadable (an error row each), 0 already there" in process.stdout.read()


@pytest.mark.slow
def test_a_killed_cli_run_resumes_to_the_uninterrupted_table(tmp_path):
    rows = squares(tmp_path / "images", 12)
    listed = write_list(tmp_path / "images" / "list.csv", [{**r, "label": ""} for r in rows])
    common = ["--methods", "gradcam,vanilla", "--targets", "top1,top2", "--batch-size", "2", "--workers", "0",
              "--quiet"]
    whole = cli(listed, "--out", tmp_path / "whole", *common)
    assert whole.wait(timeout=600) == 0, whole.stderr.read()
    assert "12 images explained" in whole.stdout.read()

    killed = cli(listed, "--out", tmp_path / "killed", *common, start_new_session=True)
    parts = tmp_path / "killed" / "table"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and len(list(parts.glob("part-*.parquet"))) < 2:
        time.sleep(0.05)
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait(timeout=60)
    written = len(list(parts.glob("part-*.parquet")))
    assert 2 <= written < 6, f"the kill came too late to test anything ({written} of 6 parts)"
    resumed = cli(listed, "--out", tmp_path / "killed", *common, "--resume")
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read()
    assert "already there" in resumed.stdout.read()
    assert_same_runs(tmp_path / "whole", tmp_path / "killed")
    manifest = json.loads((tmp_path / "whole" / "manifest.json").read_text())
    assert manifest["engine"] == "local" and manifest["settings"]["targets"] == ["top1", "top2"]


def test_cli_bad_input_is_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "explainers", "batch", str(tmp_path / "missing"), "--out",
                             str(tmp_path / "out")], cwd=ROOT, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "SALIENCY_OFFLINE": "1"})
    assert result.returncode == 2
    assert "does not exist" in result.stderr and "Traceback" not in result.stderr


def test_an_unwritable_out_is_one_error_line(tmp_path):
    squares(tmp_path / "images", 2)
    (tmp_path / "file.txt").write_text("a file, not a folder")
    result = subprocess.run([sys.executable, "-m", "explainers", "batch", str(tmp_path / "images"),
                             "--out", str(tmp_path / "file.txt" / "run"), "--workers", "0", "--quiet"], cwd=ROOT,
                            capture_output=True, text=True, timeout=300, env={**os.environ, "SALIENCY_OFFLINE": "1"})
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot write the run folder"), result.stderr
    assert "file.txt" in lines[0] and "Not a directory" in lines[0]


@pytest.mark.slow
def test_the_decoding_workers_die_with_a_killed_cli_run(tmp_path):
    squares(tmp_path / "images", 40)
    killed = cli(tmp_path / "images", "--out", tmp_path / "out", "--workers", "2", "--batch-size", "2", "--quiet")
    parent = psutil.Process(killed.pid)
    deadline = time.monotonic() + 300
    children: list[psutil.Process] = []
    while time.monotonic() < deadline and killed.poll() is None:
        children = parent.children(recursive=True)
        workers = [c for c in children if c.ppid() != killed.pid]  # the forkserver's children
        if len(workers) >= 2:
            break
        time.sleep(0.1)
    assert len(children) >= 4, f"no decoding workers started: {children}"  # tracker, forkserver, two workers
    killed.kill()
    killed.wait(timeout=60)
    gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, [(p.pid, p.cmdline()) for p in alive]
