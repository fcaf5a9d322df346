"""The Ray engine (explainers.batch.ray_engine) writes the local engine's run: the same rows and the same maps,
error rows included."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import ray  # a runtime requirement (requirements.txt): the engine must be tested, never skipped

from explainers import batch
from explainers.batch import ray_engine
from explainers.models import load_model

from ..helpers import assert_same_runs, run_settings, squares, tiny_bundle

IMAGES = 200  # the 200 generated images, through both engines


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    """Ray on this machine (started by the first run) for this module's tests, shut down after them."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    already = ray.is_initialized()
    yield
    if not already and ray.is_initialized():
        ray.shutdown()


def images(folder: Path, count: int, seed: int = 11) -> Path:
    """``count`` small PNGs (a coloured square on a texture) and one file that is not an image."""
    squares(folder, count, seed)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    return folder


def settings(model: str, batch_size: int = 8, **overrides) -> batch.Settings:
    return run_settings(model=model, methods=["gradcam", "integrated_gradients"], targets=["top1"],
                        params={"integrated_gradients": {"n_steps": 4}}, seed=3, batch_size=batch_size, **overrides)


def broken_rows(out: Path):
    table = batch.read_table(out)
    return table[table["path"].str.endswith("broken.png")]


def test_a_cluster_is_sent_the_whole_explainers_package():
    assert ray_engine.PACKAGE.name == "explainers" and (ray_engine.PACKAGE / "__init__.py").is_file()
    assert (ray_engine.PACKAGE / "batch" / "ray_engine.py").is_file()


@pytest.mark.slow
def test_the_ray_engine_writes_the_local_engines_table_and_maps(tmp_path):
    source = images(tmp_path / "images", IMAGES)
    bundle = tiny_bundle()
    local = batch.run(str(source), str(tmp_path / "local"), settings("tiny"), workers=0, bundle=bundle)
    seen = []
    distributed = batch.run(str(source), str(tmp_path / "ray"), settings("tiny"), engine="ray", workers=2,
                            bundle=bundle, progress=lambda done, total: seen.append((done, total)))
    assert local["done_now"] == distributed["done_now"] == IMAGES + 1
    assert seen[-1] == (IMAGES + 1, IMAGES + 1) and [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert len(seen) == -(-(IMAGES + 1) // 8)  # one part per batch, as the local engine writes them
    assert batch.read_manifest(tmp_path / "ray")["engine"] == "ray"
    assert len(batch.read_table(tmp_path / "ray")) == 1 + IMAGES * 2
    broken = broken_rows(tmp_path / "ray")
    assert len(broken) == 1 and broken["method"].isna().all()
    assert broken["error"].iloc[0] == broken_rows(tmp_path / "local")["error"].iloc[0]
    assert_same_runs(tmp_path / "ray", tmp_path / "local", same_batches=True)


@pytest.mark.slow
def test_the_default_model_gives_the_same_run_on_both_engines(tmp_path):
    source = images(tmp_path / "images", 7, seed=5)
    bundle = load_model("efficientnet_lite0")
    batch.run(str(source), str(tmp_path / "local"), settings(bundle.name, 4), workers=0, bundle=bundle)
    batch.run(str(source), str(tmp_path / "ray"), settings(bundle.name, 4), engine="ray", workers=2, bundle=bundle)
    assert len(broken_rows(tmp_path / "ray")) == 1
    assert_same_runs(tmp_path / "ray", tmp_path / "local", same_batches=True)


@pytest.mark.slow
def test_a_stopped_ray_run_resumes_without_repeating_images(tmp_path):
    source = images(tmp_path / "images", IMAGES)
    first = batch.run(str(source), str(tmp_path / "run"), settings("tiny"), engine="ray", workers=1,
                      bundle=tiny_bundle(), progress=lambda done, total: done < 16)
    assert 16 <= first["done_now"] < IMAGES + 1
    second = batch.run(str(source), str(tmp_path / "run"), settings("tiny"), engine="ray", workers=1,
                       bundle=tiny_bundle(), resume=True)
    assert first["done_now"] + second["done_now"] == IMAGES + 1
    table = batch.read_table(tmp_path / "run")
    assert len(table) == 1 + IMAGES * 2 and table["row_id"].is_unique
