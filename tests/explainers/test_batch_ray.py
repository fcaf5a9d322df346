"""The Ray engine writes the local engine's run: the same rows and the same maps, error rows included."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import ray  # a runtime requirement (requirements.txt): the engine must be tested, never skipped
from PIL import Image

from explainers import batch
from explainers.models import ModelBundle, affine_normalizer

from .helpers import small_convnet

IMAGES = 200  # the 200 generated images, through both engines
COMPARED = [c for c in batch.COLUMNS if c not in ("elapsed_s", "map_file")]
CLASSES = ["red", "green", "blue", "c3", "c4", "c5", "c6"]


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    """Ray on this machine (started by the first run) for this module's tests, shut down after them."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    already = ray.is_initialized()
    yield
    if not already and ray.is_initialized():
        ray.shutdown()


def images(folder: Path, count: int, seed: int = 11) -> Path:
    """``count`` small PNGs (a coloured square on a random texture) and one file that is not an image."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        pixels = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
        top, left = rng.integers(0, 32, 2)
        pixels[top : top + 24, left : left + 24] = rng.integers(0, 256, 3, dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"image-{i:02d}.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    return folder


def tiny_bundle() -> ModelBundle:
    # the normaliser is a closure: the replicas get the bundle through Ray's cloudpickle
    normalize, denormalize = affine_normalizer((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    return ModelBundle(name="tiny", model=small_convnet(3).eval(), categories=list(CLASSES), input_size=48,
                       normalize=normalize, denormalize=denormalize)


def settings(model: str, batch_size: int = 8, **overrides) -> batch.Settings:
    values = dict(model=model, methods=["gradcam", "integrated_gradients"], targets=["top1"],
                  params={"integrated_gradients": {"n_steps": 4}}, seed=3, batch_size=batch_size)
    return batch.Settings(**{**values, **overrides})


def assert_same_runs(ours: Path, theirs: Path) -> None:
    """Two run folders hold the same rows (all but elapsed_s and map_file; floats within 1e-5 relative) and the
    same float16 maps (equal, or one float16 step apart)."""
    mine, other = batch.read_table(ours), batch.read_table(theirs)
    assert len(mine) == len(other) and mine["row_id"].is_unique
    for column in COMPARED:
        for a, b in zip(mine[column], other[column], strict=True):
            if isinstance(a, float) and isinstance(b, float):
                # the replicas run torch on one thread each: sums in another order, the last float32 bits
                assert a == pytest.approx(b, rel=1e-5, abs=1e-7, nan_ok=True), column
            elif isinstance(a, np.ndarray):
                np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7, err_msg=column)
            else:
                assert a == b or (a is None and b is None), column
    for (_, x), (_, y) in zip(mine.dropna(subset=["map_key"]).iterrows(), other.dropna(subset=["map_key"]).iterrows(),
                              strict=True):
        a = batch.load_map(ours, x.map_file, x.map_key).astype(np.float16)
        b = batch.load_map(theirs, y.map_file, y.map_key).astype(np.float16)
        step = np.spacing(np.maximum(np.abs(a), np.abs(b))).astype(np.float32)
        assert np.all(np.abs(a.astype(np.float32) - b.astype(np.float32)) <= step), x.map_key


def broken_rows(out: Path):
    table = batch.read_table(out)
    return table[table["path"].str.endswith("broken.png")]


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
    assert_same_runs(tmp_path / "ray", tmp_path / "local")


@pytest.mark.slow
def test_the_default_model_gives_the_same_run_on_both_engines(tmp_path):
    from explainers.models import load_model

    source = images(tmp_path / "images", 7, seed=5)
    bundle = load_model("efficientnet_lite0")
    batch.run(str(source), str(tmp_path / "local"), settings(bundle.name, 4), workers=0, bundle=bundle)
    batch.run(str(source), str(tmp_path / "ray"), settings(bundle.name, 4), engine="ray", workers=2, bundle=bundle)
    assert len(broken_rows(tmp_path / "ray")) == 1
    assert_same_runs(tmp_path / "ray", tmp_path / "local")


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
