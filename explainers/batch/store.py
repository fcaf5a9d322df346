"""A run folder: written part by part, read back, and resumed.

- ``table/part-NNNNN.parquet``: one row per image × method × target (``pipeline.COLUMNS``: path, image hash, label,
  prediction and top-5, target, method, params, elapsed time, summary statistics of the map), plus one error row
  per image that could not be read; the parts together are the table (:func:`read_table`);
- ``maps/part-NNNNN.npz``: the maps of the same rows, referenced from the table by ``map_file`` and ``map_key``:
  the layer's own map for the CAMs (7×7 on most models), every other map as its channel sum mean-pooled by
  ``MAP_POOL`` (56×56 on a 224 input), float16; the manifest states both;
- ``manifest.json``: versions, model, methods, parameters, targets, seed, engine and map format.

Every part file is written whole and renamed into place, maps before the table part that references them, so a
run killed at any moment leaves only complete parts; a resumed run skips the images the table already has (rows
or an error row), so the final table has each row once. A run resumes only with the same settings and in the table
layout this version writes (the parts of one run stack into one table).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import MISSING, asdict, fields
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import SaliencyError
from ..manifest import versions
from .access import map_path
from .pipeline import BORDER, CENTRE, COLUMNS, MAP_POOL, Settings
from .text import TEXT_COLUMNS, TEXT_MAPS

SCHEMA_VERSION = 1  # of the manifest and the table


class RunWriter:
    """Writes a run folder part by part (maps, then the table part that references them; each renamed into
    place when whole) and knows which images an earlier run already wrote."""

    def __init__(self, out: str | os.PathLike, settings: Settings, engine: str, source: str, resume: bool,
                 categories: Sequence[str]):
        self.out = Path(out)
        self.tables, self.maps = self.out / "table", self.out / "maps"
        self.settings, self.categories = settings, categories
        manifest_path = self.out / "manifest.json"
        existing = sorted(self.tables.glob("part-*.parquet")) if self.tables.is_dir() else []
        if existing and not resume:
            raise SaliencyError(f"{str(self.out)!r} already holds a run; pass --resume to continue it, or pick "
                                "another --out")
        if existing and manifest_path.is_file():
            before = json.loads(manifest_path.read_text())
            if _as_now(before.get("settings")) != _jsonable(asdict(settings)):
                raise SaliencyError(f"{str(self.out)!r} holds a run with other settings ({before.get('settings')}); "
                                    "resume it with the same model, methods, targets, params and seed")
        self.done: set[str] = set()
        self.unreadable: set[str] = set()  # images of this run's parts that could not be read (error rows)
        _check_layout(self.out, existing, _schema(settings.modality))
        for part in existing:
            self.done.update(pq.read_table(part, columns=["path"]).column("path").to_pylist())
        self.next_part = 1 + max((int(p.stem.split("-")[1]) for p in existing), default=-1)
        manifest = _manifest(settings, engine, source, categories)
        with _writing(self.out):
            self.tables.mkdir(parents=True, exist_ok=True)
            self.maps.mkdir(parents=True, exist_ok=True)
            _atomic_write(manifest_path, json.dumps(manifest, indent=2, allow_nan=False).encode())

    def write(self, rows: list[dict[str, Any]], maps: dict[str, np.ndarray]) -> None:
        """One part: its maps file, then its table file, each atomically."""
        if not rows:
            return
        name = f"part-{self.next_part:05d}"
        if maps:
            with _writing(self.out):
                _atomic_write(self.maps / f"{name}.npz", _npz_bytes(maps))
        for row in rows:
            if row["map_key"] is not None:
                row["map_file"] = f"maps/{name}.npz"
            if row["label"] is not None and self.categories:
                row["label_name"] = self.categories[row["label"]]
        schema = _schema(self.settings.modality)
        table = pa.Table.from_pylist([{c: row.get(c) for c in schema.names} for row in rows], schema=schema)
        temporary = self.tables / f".{name}.parquet.tmp"
        with _writing(self.out), _removed_on_failure(temporary):
            pq.write_table(table, temporary)
            os.replace(temporary, self.tables / f"{name}.parquet")
        # only a part in place counts: after a failed write the next one reuses the name (its maps file too)
        self.next_part += 1
        self.done.update(row["path"] for row in rows)
        self.unreadable.update(row["path"] for row in rows if row["error"] is not None and row["method"] is None)


@contextlib.contextmanager
def _writing(out: Path) -> Iterator[None]:
    """An OSError while writing the run folder (unwritable, read-only, full, not a folder) as a SaliencyError that
    names the folder and the cause; the parts already in place stay a consistent run (``--resume`` continues it)."""
    try:
        yield
    except OSError as exc:
        where = exc.filename if exc.filename is not None else out
        cause = exc.strerror or str(exc) or type(exc).__name__
        raise SaliencyError(f"cannot write the run folder {str(out)!r}: {cause} ({where}); free space or pick "
                            "a writable --out, then --resume continues the run") from exc


@contextlib.contextmanager
def _removed_on_failure(temporary: Path) -> Iterator[None]:
    """A half-written temporary file removed when its write fails (it is never read, but it takes space)."""
    try:
        yield
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise


IMAGE_MAPS = {
    "layer methods": "the layer's own map (layer_attribution), float16",
    "other methods": f"the channel sum mean-pooled {MAP_POOL}x{MAP_POOL}, float16",
}
IMAGE_STATISTICS = {
    "peak_y/peak_x": "argmax of |map|, cell centre, as fractions of height and width",
    "centre_mass": f"share of |map| in the middle {CENTRE[1] - CENTRE[0]:.0%} of each side",
    "border_mass": f"share of |map| in the outer {BORDER:.1%} of each side",
    "box_mass": "share of |map| inside the list's box (x0, y0, x1, y1 in the original image's pixels); "
                "on a detector's rows, inside the explained box",
    "entropy": "entropy of |map| over its cells / log(cells)",
}


def _manifest(settings: Settings, engine: str, source: str, categories: Sequence[str]) -> dict[str, Any]:
    """What manifest.json says: the settings a resumed run must match, where the run came from, the modality, and
    what the maps (and, for images, their statistics) are."""
    text = settings.modality == "text"
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": "saliency-studio batch run",
        "modality": settings.modality,
        "settings": _jsonable(asdict(settings)),
        "engine": engine,
        "source": str(source),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "versions": {**versions(), "pyarrow": pa.__version__},
        "maps": TEXT_MAPS if text else IMAGE_MAPS,
        **({} if text else {"statistics": IMAGE_STATISTICS}),
        "classes": len(categories),
    }


def _schema(modality: str = "image") -> pa.Schema:
    """The table's column types: strings unless said otherwise; a text run's table has :data:`TEXT_COLUMNS` too."""
    string, double, integer = pa.string(), pa.float64(), pa.int64()
    texts = {"tokens": pa.list_(string), "token_ids": pa.list_(integer), "offsets": pa.list_(pa.list_(integer)),
             "special": pa.list_(pa.bool_()), "word_ids": pa.list_(integer), "scores": pa.list_(double),
             "words": pa.list_(string), "word_spans": pa.list_(pa.list_(integer)), "word_scores": pa.list_(double),
             "logits": pa.list_(double), "seed": integer, "notes": pa.list_(string), "truncated_tokens": integer,
             "max_length": integer}
    columns = COLUMNS + (TEXT_COLUMNS if modality == "text" else ())
    types = {**texts, "label": integer, "box": pa.list_(double), "prediction": integer, "probability": double,
             "top5": pa.list_(integer), "top5_probability": pa.list_(double), "correct": pa.bool_(),
             "target_index": integer, "target_probability": double, "elapsed_s": double, "map_h": integer,
             "map_w": integer, "peak_y": double, "peak_x": double, "centre_mass": double, "border_mass": double,
             "box_mass": double, "entropy": double, "box_score": double, "box_rank": integer, "region_share": double}
    return pa.schema([(c, types.get(c, string)) for c in columns])


def _check_layout(out: Path, parts: Sequence[Path], schema: pa.Schema) -> None:
    """Every part of a resumed run in the table layout this version writes: a run begun by another version (its
    table with other columns or types) would come back as two tables that do not stack, so it is refused with
    what differs; its parts still open as they are."""
    for part in parts:
        try:
            found = pq.read_schema(part)
        except (OSError, pa.ArrowException) as exc:
            raise SaliencyError(f"cannot read the table part {part.name} of {str(out)!r} to resume it: {exc}") from None
        if found.equals(schema, check_metadata=False):
            continue
        missing = [name for name in schema.names if name not in found.names]
        extra = [name for name in found.names if name not in schema.names]
        changed = [name for name in schema.names if name in found.names
                   and found.field(name).type != schema.field(name).type]
        said = "; ".join(f"{what}: {', '.join(names)}" for what, names in
                         (("it lacks", missing), ("it has besides", extra), ("other types", changed)) if names)
        raise SaliencyError(f"{str(out)!r} holds a run whose table was written by another version ({part.name}: "
                            f"{said or 'its columns in another order'}); resuming it would mix two table layouts. "
                            "Start the run again in another --out (the run there still opens as it is)")


def _npz_bytes(maps: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **maps)
    return buffer.getvalue()


def _atomic_write(path: Path, data: bytes) -> None:
    """``data`` into ``path`` through a hidden temporary file renamed into place: a reader sees all or nothing."""
    temporary = path.with_name(f".{path.name}.tmp")
    with _removed_on_failure(temporary):
        temporary.write_bytes(data)
        os.replace(temporary, path)


def _as_now(stored: Any) -> Any:
    """A run's stored settings with every field this version added since read as its default: a run started
    before ``Settings`` had ``max_boxes`` (or ``score_threshold``, ...) ran with what those defaults mean, so it
    resumes when the new fields are at their defaults and is refused when one is not."""
    if not isinstance(stored, dict):
        return stored
    defaults = {f.name: f.default for f in fields(Settings) if f.default is not MISSING}
    return {**_jsonable({k: v for k, v in defaults.items() if k not in stored}), **stored}


def _jsonable(value: Any) -> Any:
    """``value`` as it reads back from JSON (what a resumed run's settings are compared in)."""
    return json.loads(json.dumps(value, default=str))


def read_table(out: str | os.PathLike):
    """The run's table as a pandas DataFrame, rows in a stable order (path, method, target)."""
    parts = sorted((Path(out) / "table").glob("part-*.parquet"))
    if not parts:
        raise SaliencyError(f"{str(out)!r} holds no batch run (no table/part-*.parquet)")
    try:  # parts of one layout; a run resumed across a layout change by an older version: missing columns empty
        table = pa.concat_tables([pq.read_table(p) for p in parts], promote_options="default")
    except (OSError, pa.ArrowException) as exc:
        raise SaliencyError(f"the table parts of {str(out)!r} cannot be read together: {exc}") from None
    frame = table.to_pandas()
    return frame.sort_values(["path", "method", "target"], na_position="first", kind="stable").reset_index(drop=True)


def load_map(out: str | os.PathLike, map_file: str, map_key: str) -> np.ndarray:
    """One stored map [h, w] as float32."""
    with np.load(map_path(out, map_file)) as shard:
        return shard[map_key].astype(np.float32)


def read_maps(out: str | os.PathLike, rows, on_error: Callable[[str, Exception], object] | None = None
              ) -> Iterator[tuple[Any, np.ndarray]]:
    """(row index, stored map [h, w] as float32) for every row of ``rows`` (a table slice with ``map_file`` and
    ``map_key``), each shard opened once. A map file outside the run's maps/ is refused; with ``on_error``, a shard
    or map that cannot be read is reported (``on_error(map_file, error)``) and the rest of that shard left out
    instead of ending the iteration."""
    for map_file, part in rows.groupby("map_file", sort=False):
        try:
            with np.load(map_path(out, map_file)) as shard:
                for index, key in zip(part.index, part["map_key"], strict=True):
                    yield index, shard[key].astype(np.float32)
        except Exception as exc:  # a run folder's files are data: one bad shard is reported, not the end
            if on_error is None:
                raise
            on_error(str(map_file), exc)


def read_manifest(out: str | os.PathLike) -> dict[str, Any]:
    """The run's manifest.json as a dict."""
    path = Path(out) / "manifest.json"
    if not path.is_file():
        raise SaliencyError(f"{str(out)!r} is not a batch run folder (no manifest.json)")
    return json.loads(path.read_text())
