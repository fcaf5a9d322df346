"""Two runs on the same images, made with different models: where do their maps disagree most?

Rows are paired by image content (the table's ``image_hash``, so the two runs may read the images from different
folders), method and target (``top1`` is each model's own top class; a class index may name different classes when
the models' class lists differ). Each pair of stored maps is resized to the larger of the two sizes (bilinear, as
``render.resize`` enlarges every map) and compared as |map| by Spearman's rank correlation and the overlap (IoU) of
the top 10% cells (:mod:`explainers.trust.agreement`, the measures of the Compare page). The pairs are ranked
lowest agreement first: the images where the second model looks somewhere else.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..render import resize
from ..trust.agreement import pair_agreement
from .store import read_maps

TOP_FRACTION = 0.1  # the top-k overlap compares the 10% most salient cells of each map
KEEP = ("row_id", "path", "image_hash", "method", "target", "target_index", "target_name", "prediction_name",
        "probability", "map_file", "map_key", "map_h", "map_w")


@dataclass(frozen=True)
class RunComparison:
    """The pairs of two runs' maps, lowest agreement first, and what could not be paired.

    ``pairs`` has the columns of ``KEEP`` for each run (suffixes ``_a`` and ``_b``), ``size`` (the common map size
    compared, "h×w"), ``spearman`` and ``top_iou``. The counts are of images (by content)."""

    pairs: pd.DataFrame = field(repr=False)
    images_both: int
    images_only_a: int
    images_only_b: int
    methods_both: tuple[str, ...]
    methods_only_a: tuple[str, ...]
    methods_only_b: tuple[str, ...]
    targets_both: tuple[str, ...]
    unpaired_rows_a: int  # explained rows of A with no partner in B (other method or target, or image only in A)
    unpaired_rows_b: int
    failed: tuple[str, ...] = ()  # map files that could not be read (their pairs are left out)


def explained(table: pd.DataFrame) -> pd.DataFrame:
    """A table's rows that hold a map, one per (image content, method, target): an image found twice in one run
    (the same file at two paths) counts once, at its first path."""
    rows = table.loc[table["error"].isna() & table["map_key"].notna() & table["image_hash"].notna()]
    return rows.sort_values("path", kind="stable").drop_duplicates(["image_hash", "method", "target"])


def common_size(shape_a: tuple[int, int], shape_b: tuple[int, int]) -> tuple[int, int]:
    """(height, width) both maps are compared at: the larger of each side, so neither map loses cells."""
    return max(int(shape_a[0]), int(shape_b[0])), max(int(shape_a[1]), int(shape_b[1]))


def map_agreement(a: np.ndarray, b: np.ndarray, fraction: float = TOP_FRACTION) -> tuple[float, float, tuple[int, int]]:
    """(Spearman of |a| and |b|, IoU of their top ``fraction`` cells, the (h, w) compared at): both maps resized to
    ``common_size`` first; NaN for both when either map is constant (``agreement.pair_agreement``: it ranks
    nothing, so it neither agrees nor disagrees)."""
    height, width = common_size(a.shape, b.shape)
    a, b = (np.abs(resize(m, (width, height))) for m in (a, b))
    return *pair_agreement(a, b, fraction), (height, width)


def _maps(out: str | os.PathLike, rows: pd.DataFrame, failed: list[str]) -> dict[object, np.ndarray]:
    return dict(read_maps(out, rows, on_error=lambda map_file, exc: failed.append(f"{map_file}: {exc}")))


def compare_runs(out_a: str | os.PathLike, table_a: pd.DataFrame, out_b: str | os.PathLike, table_b: pd.DataFrame,
                 fraction: float = TOP_FRACTION) -> RunComparison:
    """Pair the maps of run A (``table_a``, read from ``out_a``) and run B by image content, method and target, and
    rank the pairs by agreement, lowest Spearman first (ties: lowest top-``fraction`` IoU first). A map file that
    cannot be read leaves its pairs out and is named in ``failed``."""
    rows_a, rows_b = explained(table_a), explained(table_b)
    images_a, images_b = set(rows_a["image_hash"]), set(rows_b["image_hash"])
    methods_a, methods_b = set(rows_a["method"]), set(rows_b["method"])
    pairs = rows_a[list(KEEP)].merge(rows_b[list(KEEP)], on=["image_hash", "method", "target"], suffixes=("_a", "_b"))
    failed: list[str] = []
    maps_a = _maps(out_a, rows_a.loc[rows_a["row_id"].isin(pairs["row_id_a"])].set_index("row_id", drop=False),
                   failed)
    maps_b = _maps(out_b, rows_b.loc[rows_b["row_id"].isin(pairs["row_id_b"])].set_index("row_id", drop=False),
                   failed)
    pairs = pairs.loc[pairs["row_id_a"].isin(maps_a) & pairs["row_id_b"].isin(maps_b)].reset_index(drop=True)
    measured = [map_agreement(maps_a[a], maps_b[b], fraction) for a, b in zip(pairs["row_id_a"], pairs["row_id_b"],
                                                                             strict=True)]
    pairs["spearman"] = [m[0] for m in measured]
    pairs["top_iou"] = [m[1] for m in measured]
    pairs["size"] = [f"{h}×{w}" for _, _, (h, w) in measured]
    # least agreeing first; pairs with a constant map (NaN) last: undefined, not disagreeing
    pairs = pairs.sort_values(["spearman", "top_iou"], kind="stable", na_position="last").reset_index(drop=True)
    paired_a, paired_b = set(pairs["row_id_a"]), set(pairs["row_id_b"])
    return RunComparison(
        pairs=pairs,
        images_both=len(images_a & images_b),
        images_only_a=len(images_a - images_b),
        images_only_b=len(images_b - images_a),
        methods_both=tuple(sorted(methods_a & methods_b)),
        methods_only_a=tuple(sorted(methods_a - methods_b)),
        methods_only_b=tuple(sorted(methods_b - methods_a)),
        targets_both=tuple(sorted(set(pairs["target"]), key=str)),
        unpaired_rows_a=int((~rows_a["row_id"].isin(paired_a)).sum()),
        unpaired_rows_b=int((~rows_b["row_id"].isin(paired_b)).sum()),
        failed=tuple(failed),
    )


def per_method(comparison: RunComparison) -> pd.DataFrame:
    """One line per method (and target) of the pairs: how many, and the median Spearman and top-k IoU."""
    grouped = comparison.pairs.groupby(["method", "target"], sort=True)
    return grouped.agg(pairs=("spearman", "size"), spearman=("spearman", "median"),
                       top_iou=("top_iou", "median")).reset_index()
