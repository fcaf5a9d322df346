"""The batch command at dataset scale: 200 generated images, batch sizes, faults, resume, and a planted cue."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from explainers import batch
from explainers.errors import ParameterError, SaliencyError
from explainers.models import ModelBundle, affine_normalizer

from .helpers import small_convnet

ROOT = Path(__file__).resolve().parents[2]
COLOURS = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (50, 70, 230)}
CLASSES = [*COLOURS, "c3", "c4", "c5", "c6"]
SIZE = 48
# compared exactly: what is not a float (the floats within 1e-5)
EXACT = ["row_id", "path", "image_hash", "label", "label_name", "method", "target", "error", "prediction",
         "prediction_name", "top5", "correct", "target_index", "target_name", "params", "map_key", "map_kind",
         "map_h", "map_w"]
FLOATS = ["probability", "target_probability", "peak_y", "peak_x", "centre_mass", "border_mass", "box_mass",
          "entropy"]


def tiny_bundle(model: nn.Module | None = None, categories=CLASSES, size: int = SIZE) -> ModelBundle:
    normalize, denormalize = affine_normalizer((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    return ModelBundle(name="tiny", model=(model or small_convnet(3)).eval(), categories=list(categories),
                       input_size=size, normalize=normalize, denormalize=denormalize)


def squares(folder: Path, count: int, seed: int = 0) -> list[dict]:
    """``count`` images: a coloured square on a textured background, and their list rows with the box."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(count):
        texture = rng.integers(0, 256, (SIZE, SIZE, 1)) * np.array([[[0.6, 0.5, 0.4]]])
        image = np.clip(texture + rng.normal(0, 20, (SIZE, SIZE, 3)), 0, 255).astype(np.uint8)
        name = list(COLOURS)[i % len(COLOURS)]
        side = int(rng.integers(10, 20))
        x0, y0 = (int(v) for v in rng.integers(0, SIZE - side, 2))
        image[y0 : y0 + side, x0 : x0 + side] = COLOURS[name]
        path = folder / f"img{i:03d}.png"
        Image.fromarray(image).save(path)
        rows.append({"path": path.name, "label": name, "x0": x0, "y0": y0, "x1": x0 + side, "y1": y0 + side})
    return rows


def write_list(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["path", "label", "x0", "y0", "x1", "y1"])
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """200 squares and one corrupt file, listed in images.csv with labels and boxes."""
    folder = tmp_path_factory.mktemp("squares")
    rows = squares(folder / "images", 200)
    (folder / "images" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a PNG")
    rows.append({"path": "broken.png", "label": "red", "x0": "", "y0": "", "x1": "", "y1": ""})
    return write_list(folder / "images" / "images.csv", rows)


SETTINGS = dict(model="tiny", methods=["gradcam", "integrated_gradients", "smoothgrad"], targets=["top1", "label"],
                params={"integrated_gradients": {"n_steps": 4, "baseline": "black"}, "smoothgrad": {"n_samples": 3}},
                seed=11)


def settings(**overrides) -> batch.Settings:
    values = {**SETTINGS, **overrides}
    return batch.Settings(**{k: (dict(v) if isinstance(v, dict) else list(v) if isinstance(v, list) else v)
                             for k, v in values.items()})


def assert_same_runs(a: Path, b: Path) -> None:
    """Two run folders hold the same rows (each once) and the same maps."""
    first, second = batch.read_table(a), batch.read_table(b)
    assert len(first) == len(second)
    assert first["row_id"].is_unique and second["row_id"].is_unique
    for column in EXACT:
        assert first[column].astype(str).tolist() == second[column].astype(str).tolist(), column
    for column in FLOATS:
        np.testing.assert_allclose(first[column].to_numpy(float), second[column].to_numpy(float), rtol=1e-5,
                                   atol=1e-7, equal_nan=True, err_msg=column)
    for (_, x), (_, y) in zip(first.dropna(subset=["map_key"]).iterrows(),
                              second.dropna(subset=["map_key"]).iterrows(), strict=True):
        np.testing.assert_allclose(batch.load_map(a, x.map_file, x.map_key), batch.load_map(b, y.map_file, y.map_key),
                                   rtol=2e-3, atol=1e-6)  # float16 storage: one ulp is ~1e-3 relative


@pytest.fixture(scope="module")
def reference(dataset, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "reference"
    summary = batch.run(str(dataset), str(out), settings(batch_size=32), workers=0, bundle=tiny_bundle())
    assert summary["done_now"] == 201
    return out


@pytest.mark.slow
def test_the_table_has_every_row_once_and_the_corrupt_file_is_one_error_row(reference):
    table = batch.read_table(reference)
    good = 200 * 3 * 2  # images x methods x targets
    assert len(table) == good + 1
    errors = table[table["error"].notna()]
    assert len(errors) == 1 and errors.iloc[0]["path"].endswith("broken.png")
    assert "damaged" in errors.iloc[0]["error"] and errors[["method", "target", "map_key"]].isna().all(axis=None)
    rows = table[table["error"].isna()]
    assert rows.groupby("path").size().eq(6).all()
    assert set(rows["label_name"]) == set(COLOURS)
    # a label target explains the listed class; top1 the predicted one
    labelled = rows[rows["target"] == "label"]
    assert (labelled["target_index"] == labelled["label"]).all()
    top = rows[rows["target"] == "top1"]
    assert (top["target_index"] == top["prediction"]).all()
    # boxes are in the table, and the box mass is a share
    assert rows["box_mass"].between(0, 1).all() and rows["border_mass"].between(0, 1).all()
    manifest = batch.read_manifest(reference)
    assert manifest["settings"]["seed"] == 11 and manifest["settings"]["methods"] == SETTINGS["methods"]
    assert {"torch", "torchvision", "pyarrow"} <= set(manifest["versions"])
    # maps: the layer's own for Grad-CAM, pooled channel sums for the others, as the table says
    gradcam = rows[rows["method"] == "gradcam"].iloc[0]
    assert gradcam["map_kind"] == "layer"
    assert batch.load_map(reference, gradcam["map_file"], gradcam["map_key"]).shape == (gradcam["map_h"],
                                                                                        gradcam["map_w"])
    ig = rows[rows["method"] == "integrated_gradients"].iloc[0]
    assert (ig["map_h"], ig["map_w"]) == (SIZE // batch.MAP_POOL, SIZE // batch.MAP_POOL)


@pytest.mark.slow
def test_batch_size_and_decoding_workers_do_not_change_the_results(dataset, reference, tmp_path):
    out = tmp_path / "small_batches"
    batch.run(str(dataset), str(out), settings(batch_size=7), workers=1, bundle=tiny_bundle())
    assert_same_runs(reference, out)


@pytest.mark.slow
def test_an_interrupted_run_resumes_to_the_same_table(dataset, reference, tmp_path, monkeypatch):
    out = tmp_path / "interrupted"
    real = batch.explain_batch
    calls = []

    def dies_on_the_fourth_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt  # a Ctrl-C (or a kill) in the middle of the fourth batch
        return real(*args, **kwargs)

    monkeypatch.setattr(batch, "explain_batch", dies_on_the_fourth_batch)
    with pytest.raises(KeyboardInterrupt):
        batch.run(str(dataset), str(out), settings(batch_size=32), workers=0, bundle=tiny_bundle())
    monkeypatch.setattr(batch, "explain_batch", real)
    assert len(list((out / "table").glob("part-*.parquet"))) == 3
    # a half-written part from a kill is a temporary file, never read
    (out / "table" / ".part-00003.parquet.tmp").write_bytes(b"half a parquet file")
    with pytest.raises(SaliencyError, match="--resume"):
        batch.run(str(dataset), str(out), settings(batch_size=32), workers=0, bundle=tiny_bundle())
    with pytest.raises(SaliencyError, match="other settings"):
        batch.run(str(dataset), str(out), settings(batch_size=32, seed=12), workers=0, bundle=tiny_bundle(),
                  resume=True)
    summary = batch.run(str(dataset), str(out), settings(batch_size=32), workers=0, bundle=tiny_bundle(),
                        resume=True)
    assert summary["skipped"] == 96 and summary["done_now"] == 201 - 96
    assert_same_runs(reference, out)
    again = batch.run(str(dataset), str(out), settings(batch_size=32), workers=0, bundle=tiny_bundle(), resume=True)
    assert again["done_now"] == 0  # nothing left to do: no row is written twice
    assert_same_runs(reference, out)


def test_sources_folder_classes_glob_and_list_errors(tmp_path):
    rows = squares(tmp_path / "data" / "red", 2)
    squares(tmp_path / "data" / "unknown_folder", 1, seed=1)
    folder = batch.read_source(tmp_path / "data", CLASSES)
    assert [item.label for item in folder] == [0, 0, None]  # ImageFolder: the sub-folder when it is a class
    assert len(batch.read_source(str(tmp_path / "data" / "*" / "*.png"), CLASSES)) == 3
    listed = write_list(tmp_path / "data" / "red" / "list.csv", [{**rows[0], "label": "2"}])
    (item,) = batch.read_source(listed, CLASSES)
    assert item.label == 2 and item.box == (rows[0]["x0"], rows[0]["y0"], rows[0]["x1"], rows[0]["y1"])
    for bad, words in [
        (tmp_path / "nothing", "does not exist"),
        (write_list(tmp_path / "bad.csv", [{**rows[0], "label": "purple"}]), "no class named 'purple'"),
        (write_list(tmp_path / "box.csv", [{**rows[0], "x1": 0}]), "x0 < x1"),
    ]:
        with pytest.raises(ParameterError, match=words):
            batch.read_source(bad, CLASSES)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ParameterError, match="holds no images"):
        batch.read_source(empty, CLASSES)


def test_map_statistics_on_known_maps():
    corner = np.zeros((8, 8))
    corner[0, 0] = 1.0
    stats = batch.map_statistics(corner, box=(0.0, 0.0, 0.25, 0.25))
    assert stats["border_mass"] == 1.0 and stats["centre_mass"] == 0.0 and stats["box_mass"] == 1.0
    assert (stats["peak_y"], stats["peak_x"]) == (1 / 16, 1 / 16) and stats["entropy"] == 0.0
    uniform = batch.map_statistics(np.ones((8, 8)), box=(0.0, 0.0, 0.5, 0.5))
    assert uniform["entropy"] == pytest.approx(1.0) and uniform["box_mass"] == pytest.approx(0.25)
    assert uniform["centre_mass"] == pytest.approx(0.25) and uniform["border_mass"] == pytest.approx(1 - 0.75**2)
    assert np.isnan(batch.map_statistics(np.zeros((4, 4)))["border_mass"])


# ---------------------------------------------------------------------------------------------------------
# A planted spurious cue
# ---------------------------------------------------------------------------------------------------------


def marked(folder: Path, count: int, seed: int) -> list[dict]:
    """Half the images carry a bright mark in the top-left corner, and only those are class 1 ("marked"); the
    rest of every image is the same kind of texture with a grey square somewhere, which predicts nothing."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(count):
        image = rng.integers(40, 200, (SIZE, SIZE, 3)).astype(np.uint8)
        x0, y0 = (int(v) for v in rng.integers(12, SIZE - 20, 2))
        image[y0 : y0 + 12, x0 : x0 + 12] = 128
        label = i % 2
        if label:
            image[1:6, 1:6] = (255, 255, 0)
        path = folder / f"m{i:03d}.png"
        Image.fromarray(image).save(path)
        rows.append({"path": path.name, "label": ["plain", "marked"][label], "x0": x0, "y0": y0, "x1": x0 + 12,
                     "y1": y0 + 12})
    return rows


@pytest.mark.slow
def test_a_planted_corner_cue_ranks_its_images_first_by_border_mass(tmp_path):
    rows = marked(tmp_path / "train", 160, seed=0)
    bundle = tiny_bundle(small_convnet(5), categories=["plain", "marked"])
    bundle.model.fc = nn.Linear(16, 2)
    # train in the test, a few seconds: the corner mark is the only thing that predicts the class
    images = torch.cat([bundle.preprocess(Image.open(tmp_path / "train" / r["path"])) for r in rows])
    labels = torch.tensor([["plain", "marked"].index(r["label"]) for r in rows])
    model = bundle.model.train()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    torch.manual_seed(0)
    for _ in range(60):
        order = torch.randperm(len(images))[:64]
        loss = nn.functional.cross_entropy(model(images[order]), labels[order])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(images).argmax(1) == labels).float().mean().item()
    assert accuracy > 0.95, f"the tiny model did not learn the cue ({accuracy:.0%})"

    test_rows = marked(tmp_path / "test", 40, seed=1)
    listed = write_list(tmp_path / "test" / "list.csv", test_rows)
    out = tmp_path / "run"
    batch.run(str(listed), str(out), batch.Settings(model="tiny", methods=["gradcam"], targets=["top1"]),
              workers=0, bundle=bundle)
    table = batch.read_table(out)
    ranked = batch.ranked(table, "outside")
    marked_paths = {str(tmp_path / "test" / r["path"]) for r in test_rows if r["label"] == "marked"}
    first = ranked.head(len(marked_paths))
    hits = first["path"].isin(marked_paths).mean()
    assert hits >= 0.9, f"only {hits:.0%} of the top-ranked images carry the mark"
    # the maps sit outside the listed object (the grey square) too: box mass is low for the marked images
    assert table[table["path"].isin(marked_paths)]["box_mass"].mean() < table[
        ~table["path"].isin(marked_paths)]["box_mass"].mean()


# ---------------------------------------------------------------------------------------------------------
# The command line, and a real kill
# ---------------------------------------------------------------------------------------------------------


def cli(*args, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "explainers", "batch", *map(str, args)], cwd=ROOT,
                            env={**os.environ, "SALIENCY_OFFLINE": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


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
