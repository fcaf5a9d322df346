"""A batch run of a detector (one row per image × box × method) and of a segmenter (one per image × predicted
region × method) on generated scenes, through the local engine; an image without detections is a row that says
so, and a classifier's rows leave the new columns empty."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from explainers import batch
from explainers.batch.store import load_map, read_manifest, read_table
from explainers.cli.main import main
from explainers.errors import ParameterError, SaliencyError
from explainers.models.dense import dense_bundle

from ...dense_models import CATEGORIES, PlantedDetector, PlantedSegmenter, scene
from ..helpers import run_settings, squares, tiny_bundle, write_list

SCALE = 2  # images are saved at 128 px; the planted models see 64 px
LAYOUTS = {"a.png": ((6, 8, 26, 28), (36, 34, 58, 56)), "b.png": ((34, 6, 54, 26), (4, 36, 26, 58))}


def _save(pixels: torch.Tensor, path):
    array = (pixels[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    Image.fromarray(array).resize((64 * SCALE, 64 * SCALE), Image.NEAREST).save(path)


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """Two scenes with the squares in different places, and a grey image with nothing on it."""
    folder = tmp_path_factory.mktemp("dense_scenes")
    for name, (red, blue) in LAYOUTS.items():
        _save(scene(red=red, blue=blue), folder / name)
    _save(torch.full((1, 3, 64, 64), 0.5), folder / "c_grey.png")
    return folder


def _inside(box, square) -> bool:
    """A detected box (original pixels) lies on its square (model pixels, exclusive ends) give or take an anchor
    step."""
    x0, y0, x1, y1 = (v / SCALE for v in box)
    return x0 >= square[0] - 2 and y0 >= square[1] - 2 and x1 <= square[2] + 2 and y1 <= square[3] + 2


def test_detector_run_has_a_row_per_box_and_method(scenes, tmp_path):
    bundle = dense_bundle(PlantedDetector(), input_size=64, categories=CATEGORIES)
    settings = batch.Settings(model="planted", methods=["input_x_gradient", "occlusion"], targets=["top1"],
                              params={"occlusion": {"window": 8, "stride": 4}}, max_boxes=5)
    summary = batch.run(str(scenes), str(tmp_path / "run"), settings, workers=0, bundle=bundle)
    assert summary["done_now"] == 3 and summary["unreadable"] == 0
    table = read_table(tmp_path / "run")
    explained = table[table["error"].isna()]
    assert len(explained) == 2 * 2 * 2  # 2 scenes × 2 boxes × 2 methods
    for name, (red, blue) in LAYOUTS.items():
        rows = explained[explained["path"].str.endswith(name)]
        for method, group in rows.groupby("method"):
            by_rank = group.sort_values("box_rank")
            assert list(by_rank["box_rank"]) == [1, 2] and list(by_rank["target"]) == ["box1", "box2"]
            assert list(by_rank["box_label"]) == ["red", "blue"]
            assert (by_rank["box_score"] > 0.9).all()
            assert (by_rank["target_probability"] == by_rank["box_score"]).all()
            assert _inside(by_rank.iloc[0]["box"], red) and _inside(by_rank.iloc[1]["box"], blue)
            # each box's map lies mostly in its own box (far above the box's 1/16 share of the image)
            assert (by_rank["box_mass"] > 0.5).all(), (name, method, list(by_rank["box_mass"]))
            for _, row in by_rank.iterrows():
                stored = load_map(tmp_path / "run", row["map_file"], row["map_key"])
                assert stored.shape == (row["map_h"], row["map_w"])
        assert rows["region_class"].isna().all()
    grey = table[table["path"].str.endswith("c_grey.png")]
    assert len(grey) == 2 and grey["error"].str.contains("no detection at or above score").all()
    assert grey["map_key"].isna().all() and (grey["target"] == "none").all()
    assert read_manifest(tmp_path / "run")["settings"]["max_boxes"] == 5


def test_max_boxes_and_score_threshold(scenes, tmp_path):
    bundle = dense_bundle(PlantedDetector(), input_size=64, categories=CATEGORIES)
    settings = batch.Settings(model="planted", methods=["input_x_gradient"], targets=["top1"], max_boxes=1,
                              score_threshold=0.05)
    batch.run(str(scenes / "a.*"), str(tmp_path / "run"), settings, workers=0, bundle=bundle)
    table = read_table(tmp_path / "run")
    assert list(table["box_label"]) == ["red"] and list(table["box_rank"]) == [1]
    with pytest.raises(ParameterError, match="max_boxes"):
        batch.run(str(scenes), str(tmp_path / "bad"), batch.Settings(model="planted", methods=["vanilla"],
                  targets=["top1"], max_boxes=0), workers=0, bundle=bundle)
    with pytest.raises(ParameterError, match="classifier"):
        batch.run(str(scenes), str(tmp_path / "bad2"), batch.Settings(model="planted", methods=["vanilla"],
                  targets=["label"]), workers=0, bundle=bundle)


def test_segmenter_run_has_a_row_per_predicted_region(scenes, tmp_path):
    bundle = dense_bundle(PlantedSegmenter(), input_size=64, categories=CATEGORIES)
    settings = batch.Settings(model="planted-seg", methods=["input_x_gradient"], targets=["top1"])
    batch.run(str(scenes / "[ab].png"), str(tmp_path / "run"), settings, workers=0, bundle=bundle)
    table = read_table(tmp_path / "run")
    for _, rows in table.groupby("path"):
        assert sorted(rows["region_class"]) == ["__background__", "blue", "red"]
        assert rows["region_share"].sum() == pytest.approx(1.0)
        assert rows["box"].isna().all() and rows["box_score"].isna().all()
        assert sorted(rows["target"]) == ["region:__background__", "region:blue", "region:red"]


def test_classifier_rows_leave_the_dense_columns_empty(tmp_path):
    listed = write_list(tmp_path / "images" / "images.csv", squares(tmp_path / "images", 3))
    settings = run_settings(methods=["vanilla"], params={}, targets=["top1"])
    batch.run(str(listed), str(tmp_path / "run"), settings, workers=0, bundle=tiny_bundle())
    table = read_table(tmp_path / "run")
    assert len(table) and table["box"].notna().all()  # the list's boxes, as before
    for column in ("box_label", "box_score", "box_rank", "region_class", "region_share"):
        assert table[column].isna().all(), column


def test_batch_command_on_a_torchscript_detector(scenes, tmp_path, capsys):
    torch.jit.script(PlantedDetector()).save(str(tmp_path / "detector.pt"))
    (tmp_path / "classes.txt").write_text("\n".join(CATEGORIES) + "\n")
    status = main(["batch", str(scenes), "--out", str(tmp_path / "run"), "--model", str(tmp_path / "detector.pt"),
                   "--trust-code", "--input-size", "64", "--class-names", str(tmp_path / "classes.txt"),
                   "--methods", "input_x_gradient", "--max-boxes", "1", "--workers", "0", "--quiet"])
    assert status == 0, capsys.readouterr().err
    table = read_table(tmp_path / "run")
    explained = table[table["error"].isna()]
    assert len(explained) == 2 and set(explained["box_label"]) == {"red"}
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["settings"]["max_boxes"] == 1


def test_a_run_stored_before_the_dense_settings_resumes_at_their_defaults(tmp_path):
    """A manifest written before Settings had max_boxes, score_threshold, iou_threshold and reduction: resumed with
    those at their defaults it continues; with another setting changed it is still refused. (On a classifier's run
    a changed dense setting is refused before anything: see the next test.)"""
    listed = write_list(tmp_path / "images" / "images.csv", squares(tmp_path / "images", 3))
    settings = run_settings(methods=["vanilla"], params={}, targets=["top1"])
    out = tmp_path / "run"
    assert batch.run(str(listed), str(out), settings, workers=0, bundle=tiny_bundle(), limit=2)["done_now"] == 2
    manifest = json.loads((out / "manifest.json").read_text())
    new_fields = ("max_boxes", "score_threshold", "iou_threshold", "reduction")
    for name in new_fields:
        del manifest["settings"][name]
    (out / "manifest.json").write_text(json.dumps(manifest))
    changed = run_settings(methods=["vanilla"], params={}, targets=["top1"], seed=1)
    with pytest.raises(SaliencyError, match="other settings"):  # the defaults filled in, the rest still compared
        batch.run(str(listed), str(out), changed, workers=0, bundle=tiny_bundle(), resume=True)
    summary = batch.run(str(listed), str(out), run_settings(methods=["vanilla"], params={}, targets=["top1"]),
                        workers=0, bundle=tiny_bundle(), resume=True)
    assert summary["done_now"] == 1
    assert read_table(out)["path"].nunique() == 3
    assert all(name in read_manifest(out)["settings"] for name in new_fields)  # written in full from now on


def test_a_detector_setting_on_a_classifier_is_refused(tmp_path):
    """--max-boxes and the rest mean nothing to a classifier: refused before anything runs, never ignored."""
    settings = batch.Settings(model="efficientnet_lite0", methods=["vanilla"], targets=["top1"], max_boxes=2)
    with pytest.raises(ParameterError, match="max_boxes applies to a detector"):
        batch.run(str(tmp_path), str(tmp_path / "out"), settings, bundle=tiny_bundle())
