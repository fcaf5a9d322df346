"""Two runs made with different models on the same images (explainers.batch.compare_runs): rows paired by image
content, images and methods of one run only counted, and pairs ranked lowest agreement first, the agreement
computed here independently (SciPy's Spearman, a top-10% overlap by sorting) on maps of two different sizes."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image
from scipy.stats import spearmanr

from explainers import batch
from explainers.batch.compare_runs import common_size, compare_runs, per_method
from explainers.batch.store import load_map, read_table

from ..helpers import run_settings, small_convnet, squares, tiny_bundle


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Run A: images 0–9 with Grad-CAM and IG on one seeded model at 48 px; run B: images 2–11, copied into another
    folder, with Grad-CAM and vanilla gradients on another seeded model at 64 px (so its maps are larger)."""
    root = tmp_path_factory.mktemp("two")
    squares(root / "all", 12)
    for name, picked in (("a", range(10)), ("b", range(2, 12))):
        (root / f"images_{name}").mkdir()
        for i in picked:
            shutil.copy(root / "all" / f"img{i:03d}.png", root / f"images_{name}" / f"img{i:03d}.png")
    settings_a = run_settings(model="tiny-a", methods=["gradcam", "integrated_gradients"], targets=["top1"],
                              params={})
    settings_b = run_settings(model="tiny-b", methods=["gradcam", "vanilla"], targets=["top1"], params={})
    batch.run(str(root / "images_a"), str(root / "a"), settings_a, workers=0, bundle=tiny_bundle(small_convnet(1)))
    batch.run(str(root / "images_b"), str(root / "b"), settings_b, workers=0,
              bundle=tiny_bundle(small_convnet(2), size=64))
    return root / "a", read_table(root / "a"), root / "b", read_table(root / "b")


def _resized(values: np.ndarray, height: int, width: int) -> np.ndarray:
    return np.abs(np.asarray(Image.fromarray(values).resize((width, height), Image.Resampling.BILINEAR)))


def _top_iou(a: np.ndarray, b: np.ndarray) -> float:
    count = round(0.1 * a.size)
    top_a = set(np.argsort(-a.ravel(), kind="stable")[:count].tolist())
    top_b = set(np.argsort(-b.ravel(), kind="stable")[:count].tolist())
    return len(top_a & top_b) / len(top_a | top_b)


def test_rows_are_paired_by_image_content_and_the_rest_is_counted(two_runs):
    out_a, table_a, out_b, table_b = two_runs
    comparison = compare_runs(out_a, table_a, out_b, table_b)
    assert (comparison.images_both, comparison.images_only_a, comparison.images_only_b) == (8, 2, 2)
    assert comparison.methods_both == ("gradcam",)
    assert comparison.methods_only_a == ("integrated_gradients",) and comparison.methods_only_b == ("vanilla",)
    pairs = comparison.pairs
    assert len(pairs) == 8 and set(pairs["method"]) == {"gradcam"}
    # the two runs read the images from different folders: the pairs join the same file name, never another
    names_a = pairs["path_a"].str.rsplit("/", n=1).str[-1]
    assert names_a.tolist() == pairs["path_b"].str.rsplit("/", n=1).str[-1].tolist()
    assert set(names_a) == {f"img{i:03d}.png" for i in range(2, 10)}
    # A: 10 images × 2 methods, 8 paired; B: 10 × 2, 8 paired
    assert (comparison.unpaired_rows_a, comparison.unpaired_rows_b) == (12, 12)
    assert comparison.failed == ()
    summary = per_method(comparison)
    assert summary["pairs"].tolist() == [8]
    assert summary["spearman"].iloc[0] == pytest.approx(pairs["spearman"].median())


def test_pairs_come_lowest_agreement_first_as_computed_independently(two_runs):
    out_a, table_a, out_b, table_b = two_runs
    pairs = compare_runs(out_a, table_a, out_b, table_b).pairs
    expected = []
    for _, pair in pairs.iterrows():
        a = load_map(out_a, pair["map_file_a"], pair["map_key_a"])
        b = load_map(out_b, pair["map_file_b"], pair["map_key_b"])
        assert a.shape != b.shape  # 48 px against 64 px: the maps are compared at the larger size
        height, width = max(a.shape[0], b.shape[0]), max(a.shape[1], b.shape[1])
        assert pair["size"] == f"{height}×{width}"
        a, b = _resized(a, height, width), _resized(b, height, width)
        expected.append((spearmanr(a.ravel(), b.ravel()).statistic, _top_iou(a, b)))
    assert pairs["spearman"].to_numpy() == pytest.approx([e[0] for e in expected], abs=1e-9)
    assert pairs["top_iou"].to_numpy() == pytest.approx([e[1] for e in expected], abs=1e-9)
    rhos = [e[0] for e in expected]
    assert rhos == sorted(rhos)  # lowest Spearman first
    assert len({round(r, 6) for r in rhos}) > 1  # seeded models that disagree by different amounts


def test_an_unreadable_map_file_leaves_its_pairs_out_and_says_which(two_runs, tmp_path):
    out_a, table_a, out_b, table_b = two_runs
    broken = tmp_path / "b"
    shutil.copytree(out_b, broken)
    shard = sorted((broken / "maps").glob("*.npz"))[0]
    shard.write_bytes(b"not a zip")
    comparison = compare_runs(out_a, table_a, broken, table_b)
    assert comparison.failed and shard.name in comparison.failed[0]
    in_shard = table_b.loc[table_b["map_file"] == f"maps/{shard.name}", "row_id"]
    assert not comparison.pairs["row_id_b"].isin(in_shard).any()


def test_the_common_size_keeps_the_larger_side_of_each():
    assert common_size((7, 7), (14, 14)) == (14, 14)
    assert common_size((12, 16), (16, 12)) == (16, 16)


def test_a_constant_map_neither_agrees_nor_disagrees_and_comes_last(two_runs, tmp_path):
    """An all-zero map ranks nothing: its pairs get no agreement (NaN), and they are listed after every pair that
    can disagree, not first as the least agreeing."""
    out_a, table_a, out_b, table_b = two_runs
    first = compare_runs(out_a, table_a, out_b, table_b).pairs.iloc[0]  # a map of B that has a partner in A
    zeroed = tmp_path / "b"
    shutil.copytree(out_b, zeroed)
    shard, key = zeroed / first["map_file_b"], first["map_key_b"]
    with np.load(shard) as data:
        arrays = {name: data[name] for name in data.files}
    arrays[key] = np.zeros_like(arrays[key])
    np.savez(shard, **arrays)
    pairs = compare_runs(out_a, table_a, zeroed, table_b).pairs
    flat = ((pairs["map_file_b"] == first["map_file_b"]) & (pairs["map_key_b"] == key)).to_numpy()
    assert flat.sum() == 1
    assert np.isnan(pairs.loc[flat, "spearman"]).all() and np.isnan(pairs.loc[flat, "top_iou"]).all()
    assert flat[-1] and not np.isnan(pairs.loc[~flat, "spearman"]).any()  # last; the others all measured
