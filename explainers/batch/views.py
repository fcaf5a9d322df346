"""Views of a run's table that reveal a spurious cue: rows ranked by a statistic, mean maps per class."""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np

from ..errors import ParameterError
from ..render import resize
from .access import map_path

VIEWS = {
    "outside": "mass outside the object: 1 − box mass when the run has boxes (rows without one left out), else "
               "the border mass",
    "confident_mistakes": "wrong predictions, the most confident first",
    "unsure_mistakes": "wrong predictions, the least confident first",
}
MEAN_SIZE = 56  # the side of a class's mean map (a stored map is 56×56 or coarser on a 224 input)


def ranked(table, view: str):
    """The table's explained rows ranked for one of ``VIEWS`` (error rows dropped); for "outside" the score is in
    an ``outside`` column."""
    if view not in VIEWS:
        raise ParameterError(f"view must be one of {', '.join(VIEWS)}, got {view!r}")
    rows = table[table["error"].isna() & table["map_key"].notna()]
    if view == "outside":
        boxed = rows["box_mass"].notna().any()
        rows = rows[rows["box_mass" if boxed else "border_mass"].notna()].copy()
        rows["outside"] = 1.0 - rows["box_mass"].astype(float) if boxed else rows["border_mass"].astype(float)
        return rows.sort_values("outside", ascending=False, kind="stable")
    mistakes = rows[rows["correct"].eq(False)]
    return mistakes.sort_values("probability", ascending=view == "unsure_mistakes", kind="stable")


def mean_maps(out: str | os.PathLike, rows, by: str = "label_name", size: int = MEAN_SIZE,
              on_error: Callable[[str, Exception], object] | None = None) -> list[tuple[str, int, np.ndarray]]:
    """(class, images, mean map) for each value of column ``by`` (e.g. "label_name", "prediction_name"), classes
    sorted by name. Each stored map counts as |map| resized to ``size`` × ``size`` and scaled to sum 1 (where its
    mass lies, as the statistics measure it), so no image's raw scale dominates; all-zero maps are left out.
    Each shard is opened once. A map file outside the run's maps/ is refused; with ``on_error``, a shard or map
    that cannot be read is reported (``on_error(map_file, error)``) and left out instead of ending the call."""
    picked = rows[rows[by].notna() & rows["map_key"].notna()]
    grouped: dict[str, list[np.ndarray]] = {}
    for map_file, part in picked.groupby("map_file", sort=False):
        try:
            with np.load(map_path(out, map_file)) as shard:
                for name, key in zip(part[by].astype(str), part["map_key"], strict=True):
                    values = np.abs(resize(shard[key].astype(np.float32), (size, size)))
                    total = float(values.sum())
                    if np.isfinite(total) and total > 0:
                        grouped.setdefault(name, []).append(values / total)
        except Exception as exc:  # a run folder's files are data: one bad shard is reported, not the end
            if on_error is None:
                raise
            on_error(str(map_file), exc)
    return [(name, len(maps), np.mean(maps, axis=0)) for name, maps in sorted(grouped.items())]
