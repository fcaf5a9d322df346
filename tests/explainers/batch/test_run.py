"""A whole batch run (explainers.batch.run): 200 generated images with labels, boxes and a corrupt file; every row
once, the manifest, the maps, and numbers that do not depend on the batch size or the decoding workers."""

from __future__ import annotations

import pytest

from explainers import batch
from explainers.errors import ParameterError, UnknownMethodError

from ..helpers import RUN_SETTINGS, SQUARE_COLOURS, SQUARE_SIZE, assert_same_runs, run_settings, tiny_bundle


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
    assert set(rows["label_name"]) == set(SQUARE_COLOURS)
    # a label target explains the listed class; top1 the predicted one
    labelled = rows[rows["target"] == "label"]
    assert (labelled["target_index"] == labelled["label"]).all()
    top = rows[rows["target"] == "top1"]
    assert (top["target_index"] == top["prediction"]).all()
    # boxes are in the table, and the box mass is a share
    assert rows["box_mass"].between(0, 1).all() and rows["border_mass"].between(0, 1).all()
    manifest = batch.read_manifest(reference)
    assert manifest["settings"]["seed"] == 11 and manifest["settings"]["methods"] == RUN_SETTINGS["methods"]
    assert {"torch", "torchvision", "pyarrow"} <= set(manifest["versions"])
    # maps: the layer's own for Grad-CAM, pooled channel sums for the others, as the table says
    gradcam = rows[rows["method"] == "gradcam"].iloc[0]
    assert gradcam["map_kind"] == "layer"
    assert batch.load_map(reference, gradcam["map_file"], gradcam["map_key"]).shape == (gradcam["map_h"],
                                                                                        gradcam["map_w"])
    ig = rows[rows["method"] == "integrated_gradients"].iloc[0]
    assert (ig["map_h"], ig["map_w"]) == (SQUARE_SIZE // batch.MAP_POOL, SQUARE_SIZE // batch.MAP_POOL)


@pytest.mark.slow
def test_batch_size_and_decoding_workers_do_not_change_the_results(dataset, reference, tmp_path):
    out = tmp_path / "small_batches"
    batch.run(str(dataset), str(out), run_settings(batch_size=7), workers=1, bundle=tiny_bundle())
    assert_same_runs(reference, out)


def test_bad_settings_fail_before_any_image_is_read(tmp_path):
    missing = str(tmp_path / "no such folder")  # read only after the settings are checked
    with pytest.raises(ParameterError, match="'occlusion', which is not among the methods"):
        batch.run(missing, str(tmp_path / "out"), run_settings(params={"occlusion": {"window": 8}}),
                  bundle=tiny_bundle())
    with pytest.raises(UnknownMethodError):
        batch.run(missing, str(tmp_path / "out"), run_settings(methods=["gradcma"], params={}), bundle=tiny_bundle())
    with pytest.raises(ParameterError, match="engine must be one of local, ray"):
        batch.run(missing, str(tmp_path / "out"), run_settings(), engine="spark", bundle=tiny_bundle())
    assert not (tmp_path / "out").exists()
