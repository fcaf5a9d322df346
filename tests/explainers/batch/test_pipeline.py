"""A batch run's pipeline (explainers.batch.pipeline): sources, map statistics, and one batch explained into rows
and maps."""

from __future__ import annotations

import numpy as np
import pytest

from explainers import batch
from explainers.batch.pipeline import NO_LABEL, Decoder, Item, explain_batch, map_statistics, with_labels
from explainers.errors import InputError, ParameterError

from ..helpers import CLASSES, SQUARE_SIZE, squares, tiny_bundle, write_list


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


@pytest.mark.parametrize("name, data, words", [
    ("latin.csv", "path,label\ncafé.png,0\n".encode("latin-1"), r"'latin.csv' to be a CSV file in UTF-8, but line 2 "
                                                               r"holds byte 0xe9, which is not UTF-8"),
    ("fake.parquet", b"path,label\na.png,0\n", r"'fake.parquet' to be a Parquet file .*pyarrow cannot read it"),
])
def test_a_list_in_another_encoding_or_format_is_said_with_its_name(tmp_path, name, data, words):
    """Not a traceback: the file named and what was expected, for the source and for --labels alike."""
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(InputError, match=words):
        batch.read_source(path, CLASSES)
    with pytest.raises(InputError, match=words):
        with_labels([], path, CLASSES)


def test_map_statistics_on_known_maps():
    corner = np.zeros((8, 8))
    corner[0, 0] = 1.0
    stats = map_statistics(corner, box=(0.0, 0.0, 0.25, 0.25))
    assert stats["border_mass"] == 1.0 and stats["centre_mass"] == 0.0 and stats["box_mass"] == 1.0
    assert (stats["peak_y"], stats["peak_x"]) == (1 / 16, 1 / 16) and stats["entropy"] == 0.0
    uniform = map_statistics(np.ones((8, 8)), box=(0.0, 0.0, 0.5, 0.5))
    assert uniform["entropy"] == pytest.approx(1.0) and uniform["box_mass"] == pytest.approx(0.25)
    assert uniform["centre_mass"] == pytest.approx(0.25) and uniform["border_mass"] == pytest.approx(1 - 0.75**2)
    assert np.isnan(map_statistics(np.zeros((4, 4)))["border_mass"])


def test_one_batch_gives_a_row_per_image_method_and_target_and_error_rows_for_the_rest(tmp_path):
    listed = squares(tmp_path, 2)
    box = tuple(float(listed[0][c]) for c in ("x0", "y0", "x1", "y1"))
    items = [Item(str(tmp_path / listed[0]["path"]), 0, box), Item(str(tmp_path / listed[1]["path"])),
             Item(str(tmp_path / "missing.png"), 1)]
    bundle = tiny_bundle()
    decoder = Decoder(items, bundle, "resize")
    decoded = [decoder[i] for i in range(len(items))]
    settings = batch.Settings(model="tiny", methods=["gradcam", "vanilla"], targets=["top1", "label"])
    rows, maps = explain_batch(bundle, items, decoded, settings)

    by_key = {(row["path"], row["method"], row["target"]): row for row in rows}
    assert len(by_key) == len(rows) == 1 + 2 + 6  # the unreadable file, the unlabelled image's label target, the rest
    unreadable = by_key[(items[2].path, None, None)]
    assert unreadable["error"] and unreadable["map_key"] is None and unreadable["image_hash"] is None
    for method in settings.methods:
        assert by_key[(items[1].path, method, "label")]["error"] == NO_LABEL
        labelled = by_key[(items[0].path, method, "label")]
        assert labelled["target_index"] == 0 and labelled["correct"] == (labelled["prediction"] == 0)
        top = by_key[(items[1].path, method, "top1")]
        assert top["target_index"] == top["prediction"] and top["correct"] is None
    explained = [row for row in rows if row["error"] is None]
    assert sorted(maps) == sorted(row["map_key"] for row in explained)
    for row in explained:
        stored = maps[row["map_key"]]
        assert stored.dtype == np.float16 and stored.shape == (row["map_h"], row["map_w"])
        assert row["map_kind"] == ("layer" if row["method"] == "gradcam" else f"channel sum, mean-pooled "
                                   f"{batch.MAP_POOL}x{batch.MAP_POOL}")
        assert (row["box_mass"] is not None and 0 <= row["box_mass"] <= 1) == (row["path"] == items[0].path)
    assert by_key[(items[0].path, "vanilla", "top1")]["map_h"] == SQUARE_SIZE // batch.MAP_POOL

    # a row's numbers do not depend on the other images of its batch
    alone, alone_maps = explain_batch(bundle, items[:1], decoded[:1], settings)
    for row in alone:
        twin = by_key[(row["path"], row["method"], row["target"])]
        assert row["prediction"] == twin["prediction"] and row["row_id"] == twin["row_id"]
        assert row["probability"] == pytest.approx(twin["probability"], rel=1e-5)
        np.testing.assert_allclose(alone_maps[row["map_key"]], maps[row["map_key"]], rtol=2e-3, atol=1e-6)
