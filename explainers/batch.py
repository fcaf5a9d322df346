"""Explanations at dataset scale: ``python -m explainers batch SOURCE --out DIR``.

A run explains every image of a source (a folder, a glob, or a CSV/Parquet list) with several methods and targets
through ``explain_many`` (shared passes), and writes:

- ``table/part-NNNNN.parquet``: one row per image × method × target (path, image hash, label, prediction and
  top-5, target, method, params, elapsed time, summary statistics of the map), plus one error row per image
  that could not be read; the parts together are the table (``read_table``);
- ``maps/part-NNNNN.npz``: the maps of the same rows, referenced from the table by ``map_file`` and ``map_key``:
  the layer's own map for the CAMs (7×7 on most models), every other map as its channel sum mean-pooled by
  ``MAP_POOL`` (56×56 on a 224 input), float16; the manifest states both;
- ``manifest.json``: versions, model, methods, parameters, targets, seed, engine and map format.

Every part file is written whole and renamed into place, maps before the table part that references them, so a
run killed at any moment leaves only complete parts; ``resume=True`` skips the images the table already has
(rows or an error row), so the final table has each row once. A row's numbers do not depend on the engine or
on the other images of its batch beyond float rounding: the seed is fixed, every method draws the same noise for
every row (see ``explain``), and the Ray engine cuts the same batches as the local one; another batch size
changes only how batched convolutions round (statistics within 1e-5, maps within about 1e-3 of their scale).

The engines: ``local`` (in-process; images decoded by a DataLoader with worker processes, the model loaded
once) and ``ray`` (``explainers.batch_ray``: the same steps on Ray Data, model replicas in an actor pool).
"""

from __future__ import annotations

import argparse
import csv
import glob as globbing
import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import ParameterError, SaliencyError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
MAP_POOL = 4  # non-layer maps: channel sum, mean-pooled 4×4 (224 → 56)
TOP_K = 5
# The centre and the border: the middle half of each side is the centre; the outer eighth of each side the border.
CENTRE = (0.25, 0.75)
BORDER = 0.125
DEFAULT_METHODS = ("gradcam",)
DEFAULT_TARGETS = ("top1",)
ENGINES = ("local", "ray")
SCHEMA_VERSION = 1


# ---------------------------------------------------------------------------------------------------------
# Sources
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    """One image of a source: its path as given (the row's key), its label (a class index) when known, and a
    box (x0, y0, x1, y1 in the original image's pixels) when the list gives one."""

    path: str
    label: int | None = None
    box: tuple[float, float, float, float] | None = None


def _label_of(value: Any, categories: Sequence[str], where: str) -> int | None:
    """A label as a class index: an index, a class name (any case) or empty for none."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or str(value).strip() == "":
        return None
    text = str(value).strip()
    if text.lstrip("-").isdigit():
        index = int(text)
        if not 0 <= index < len(categories):
            raise ParameterError(f"{where}: label {index} is out of range for a model with {len(categories)} classes")
        return index
    lowered = {name.lower(): i for i, name in enumerate(categories)}
    if text.lower() not in lowered:
        raise ParameterError(f"{where}: no class named {text!r} in the model's classes")
    return lowered[text.lower()]


def _folder_label(path: Path, root: Path, categories: Sequence[str]) -> int | None:
    """ImageFolder's convention: the class is the image's sub-folder, when that folder's name is a class name."""
    if path.parent == root:
        return None
    lowered = {name.lower(): i for i, name in enumerate(categories)}
    return lowered.get(path.parent.name.lower())


BOX_COLUMNS = ("x0", "y0", "x1", "y1")


def read_source(source: str | os.PathLike, categories: Sequence[str], limit: int | None = None) -> list[Item]:
    """The images of ``source``, in a stable order: a folder (recursively, sorted; the class from the sub-folder
    name when it is a class name), a glob pattern, or a .csv/.parquet list with a ``path`` column (relative to the
    list's folder) and optional ``label`` (index or class name) and ``x0, y0, x1, y1`` box columns."""
    text = str(source)
    path = Path(text)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        items = [Item(str(p), _folder_label(p, path, categories)) for p in files]
    elif path.suffix.lower() in (".csv", ".parquet") and path.is_file():
        items = _read_list(path, categories)
    elif any(ch in text for ch in "*?["):
        files = sorted(p for p in globbing.glob(text, recursive=True) if Path(p).is_file())
        items = [Item(p) for p in files if Path(p).suffix.lower() in IMAGE_SUFFIXES]
    elif path.exists():
        raise ParameterError(f"expected a folder, a glob pattern or a .csv/.parquet list as the source, got the file "
                             f"{text!r}")
    else:
        raise ParameterError(f"the source {text!r} does not exist (a folder, a glob pattern or a .csv/.parquet list)")
    if not items:
        raise ParameterError(f"the source {text!r} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return items[:limit] if limit else items


def _read_list(path: Path, categories: Sequence[str]) -> list[Item]:
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        rows = pq.read_table(path).to_pylist()
    else:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    if not rows or "path" not in rows[0]:
        raise ParameterError(f"the list {str(path)!r} needs a 'path' column (and optionally 'label', x0, y0, x1, y1)")
    items = []
    for number, row in enumerate(rows, start=2):
        where = f"{path.name} row {number}"
        file = Path(str(row["path"]).strip())
        file = file if file.is_absolute() else path.parent / file
        box = None
        if all(row.get(c) not in (None, "") for c in BOX_COLUMNS):
            try:
                box = tuple(float(row[c]) for c in BOX_COLUMNS)
            except ValueError:
                raise ParameterError(f"{where}: the box columns x0, y0, x1, y1 must be numbers") from None
            if not (box[0] < box[2] and box[1] < box[3]):
                raise ParameterError(f"{where}: the box needs x0 < x1 and y0 < y1, got {box}")
        items.append(Item(str(file), _label_of(row.get("label"), categories, where), box))
    return items


def with_labels(items: Sequence[Item], labels: Path, categories: Sequence[str]) -> list[Item]:
    """``items`` with the labels and boxes of a .csv/.parquet list, matched by path, else by file name (which must
    then be unique in the list)."""
    if not labels.is_file() or labels.suffix.lower() not in (".csv", ".parquet"):
        raise ParameterError(f"--labels expects a .csv or .parquet list, got {str(labels)!r}")
    listed = _read_list(labels, categories)
    by_path = {str(Path(i.path).resolve()): i for i in listed}
    names: dict[str, list[Item]] = {}
    for i in listed:
        names.setdefault(Path(i.path).name, []).append(i)
    merged = []
    for item in items:
        match = by_path.get(str(Path(item.path).resolve()))
        if match is None and len(names.get(Path(item.path).name, [])) == 1:
            match = names[Path(item.path).name][0]
        merged.append(item if match is None else Item(item.path, match.label, match.box))
    return merged


# ---------------------------------------------------------------------------------------------------------
# Map statistics
# ---------------------------------------------------------------------------------------------------------


def pooled_map(attribution: np.ndarray, pool: int = MAP_POOL) -> np.ndarray:
    """A [C, H, W] attribution as the stored map: its channel sum, mean-pooled ``pool`` × ``pool``."""
    summed = np.asarray(attribution, dtype=np.float32).sum(axis=0)
    h, w = (summed.shape[0] // pool) * pool, (summed.shape[1] // pool) * pool
    return summed[:h, :w].reshape(h // pool, pool, w // pool, pool).mean(axis=(1, 3))


def map_statistics(values: np.ndarray, box: tuple[float, float, float, float] | None = None) -> dict[str, float]:
    """Where a map's mass lies, from its absolute values [h, w]: the peak (y, x as fractions of the height and
    width, cell centres), the share in the centre (the middle half of each side) and on the border (the outer
    eighth of each side), the share inside ``box`` (fractions x0, y0, x1, y1 of the width and height; cells
    weighted by their overlap), and the entropy of the mass over the cells divided by its maximum, log(h·w)
    (0: one cell holds everything, 1: uniform). An all-zero map has no peak and no shares (NaN)."""
    mass = np.abs(np.asarray(values, dtype=np.float64))
    h, w = mass.shape
    total = mass.sum()
    nan = float("nan")
    if not np.isfinite(total) or total <= 0:
        return {"peak_y": nan, "peak_x": nan, "centre_mass": nan, "border_mass": nan,
                "box_mass": nan, "entropy": nan}
    p = mass / total
    peak = np.unravel_index(int(np.argmax(mass)), mass.shape)

    def share(y0: float, x0: float, y1: float, x1: float) -> float:
        """The mass inside [y0, y1] × [x0, x1] (fractions), each cell by the share of it that lies inside."""
        rows = np.clip(np.minimum(np.arange(1, h + 1), y1 * h) - np.maximum(np.arange(h), y0 * h), 0, 1)
        cols = np.clip(np.minimum(np.arange(1, w + 1), x1 * w) - np.maximum(np.arange(w), x0 * w), 0, 1)
        return float((p * rows[:, None] * cols[None, :]).sum())

    lo, hi = CENTRE
    inner = share(BORDER, BORDER, 1 - BORDER, 1 - BORDER)
    nonzero = p[p > 0]
    entropy = max(0.0, float(-(nonzero * np.log(nonzero)).sum() / math.log(h * w))) if h * w > 1 else 0.0
    return {
        "peak_y": (peak[0] + 0.5) / h,
        "peak_x": (peak[1] + 0.5) / w,
        "centre_mass": share(lo, lo, hi, hi),
        "border_mass": 1.0 - inner,
        "box_mass": nan if box is None else share(box[1], box[0], box[3], box[2]),
        "entropy": entropy,
    }


# ---------------------------------------------------------------------------------------------------------
# Settings, decoding and one batch
# ---------------------------------------------------------------------------------------------------------


@dataclass
class Settings:
    """What a run computes; the manifest records it, and a resumed run must match it."""

    model: str
    methods: list[str]
    targets: list[str]
    params: dict[str, dict[str, Any]] = field(default_factory=dict)
    seed: int = 0
    batch_size: int = 16
    preprocessing: str = "resize"


def _target_label(target: Any) -> str:
    return str(target)


class Decoded:
    """One item after decoding: the model's input [C, H, W] and the original size, or the error message."""

    def __init__(self, index: int, inputs: torch.Tensor | None, size: tuple[int, int] | None, image_hash: str | None,
                 error: str | None):
        self.index, self.inputs, self.size, self.image_hash, self.error = index, inputs, size, image_hash, error


class Decoder:
    """Reads items and makes the model's view of each (resize or crop), as uint8 pixels [H, W, 3]; the model's
    normalisation runs where the model is. Picklable and light (the bundle travels without its model), so
    DataLoader workers and Ray tasks run it in their own processes."""

    def __init__(self, items: Sequence[Item], bundle, preprocessing: str):
        from dataclasses import replace

        self.items, self.preprocessing = list(items), preprocessing
        # geometry only: no model, no normalisation (a closure), no layer catalogue
        self.view = replace(bundle, model=torch.nn.Identity(), normalize=None, denormalize=None, layers=[])

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Decoded:
        from .images import image_hash, load_image

        try:
            image = load_image(self.items[index].path)
            pixels = np.asarray(self.view.model_view(image, self.preprocessing).convert("RGB"), dtype=np.uint8)
            return Decoded(index, torch.from_numpy(pixels.copy()), image.size, image_hash(image), None)
        except Exception as exc:  # a bad image is an error row, never the end of the run
            return Decoded(index, None, None, None, f"{type(exc).__name__}: {exc}")


def model_inputs(bundle, pixels: Sequence[torch.Tensor]) -> torch.Tensor:
    """uint8 model views [H, W, 3] -> the model's normalised input [N, 3, H, W] on its device (as
    ``ModelBundle.preprocess`` makes it)."""
    stacked = torch.stack([p.float() / 255.0 for p in pixels]).permute(0, 3, 1, 2)
    return bundle.normalize(stacked).to(bundle.device)


def explain_batch(bundle, items: Sequence[Item], decoded: Sequence[Decoded], settings: Settings
                  ) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
    """(rows, maps) for one batch: every good image × method × target through explain_many, one error row per
    image that failed to decode. ``maps`` maps a row's ``map_key`` to its stored map (float16)."""
    from .manifest import top_predictions
    from .many import explain_many, target_key

    rows: list[dict[str, Any]] = []
    maps: dict[str, np.ndarray] = {}
    good = [d for d in decoded if d.error is None]
    for d in decoded:
        if d.error is not None:
            rows.append(_row(items[d.index], None, error=d.error))
    if not good:
        return rows, maps
    inputs = model_inputs(bundle, [d.inputs for d in good])
    categories = bundle.categories
    plain = [t for t in settings.targets if t != "label"]
    started = time.perf_counter()
    results: dict[tuple[str, str], tuple[Any, list[int]]] = {}
    if plain:
        many = explain_many(bundle, inputs, settings.methods, plain, seed=settings.seed, batch_size=None,
                            params=settings.params)
        for (method, key), explanation in many.items():
            results[(method, next(t for t in plain if target_key(t) == key))] = (explanation, list(range(len(good))))
    if "label" in settings.targets:
        labelled = [i for i, d in enumerate(good) if items[d.index].label is not None]
        for d in good:
            if items[d.index].label is None:
                for method in settings.methods:
                    rows.append(_row(items[d.index], d, method=method, target="label",
                                     error="no label for this image: the target 'label' needs one"))
        if labelled:
            labels = [items[good[i].index].label for i in labelled]
            many = explain_many(bundle, inputs[labelled], settings.methods, [labels], seed=settings.seed,
                                params=settings.params)
            for (method, _), explanation in many.items():
                results[(method, "label")] = (explanation, labelled)
    per_row_s = (time.perf_counter() - started) / len(good)
    for (method, target), (explanation, positions) in results.items():
        layer_maps = explanation.layer_attribution
        probabilities = explanation.logits.float().softmax(-1).cpu().numpy()
        for j, position in enumerate(positions):
            d = good[position]
            item = items[d.index]
            top = top_predictions(explanation.logits[j].cpu(), categories, TOP_K)
            if layer_maps is not None:
                stored = layer_maps[j, 0].detach().float().cpu().numpy()
                kind = "layer"
            else:
                stored = pooled_map(explanation.attribution[j].detach().float().cpu().numpy())
                kind = f"channel sum, mean-pooled {MAP_POOL}x{MAP_POOL}"
            box = None
            if item.box is not None and d.size is not None:
                width, height = d.size
                box = (item.box[0] / width, item.box[1] / height, item.box[2] / width, item.box[3] / height)
            key = f"{row_id(item.path, method, target)}"
            maps[key] = stored.astype(np.float16)
            target_index = explanation.target[j].tolist()
            row = _row(item, d, method=method, target=target)
            row.update({
                "prediction": top[0]["index"],
                "prediction_name": top[0]["name"],
                "probability": float(probabilities[j].max()),
                "top5": [t["index"] for t in top],
                "top5_probability": [t["probability"] for t in top],
                "correct": None if item.label is None else bool(top[0]["index"] == item.label),
                "target_index": int(target_index) if np.ndim(target_index) == 0 else int(target_index[0]),
                "target_name": categories[int(np.ravel(target_index)[0])] if categories else None,
                "target_probability": float(probabilities[j][int(np.ravel(target_index)[0])]),
                "params": json.dumps(explanation.params, sort_keys=True, default=str),
                "elapsed_s": per_row_s,
                "map_key": key,
                "map_kind": kind,
                "map_h": int(stored.shape[0]),
                "map_w": int(stored.shape[1]),
                **map_statistics(stored, box),
            })
            rows.append(row)
    return rows, maps


COLUMNS = ("row_id", "path", "image_hash", "label", "label_name", "box", "method", "target", "error", "prediction",
           "prediction_name", "probability", "top5", "top5_probability", "correct", "target_index", "target_name",
           "target_probability", "params", "elapsed_s", "map_file", "map_key", "map_kind", "map_h", "map_w",
           "peak_y", "peak_x", "centre_mass", "border_mass", "box_mass", "entropy")


def row_id(path: str, method: str | None, target: str | None) -> str:
    """A row's stable id: the image, the method and the target (an error row has neither)."""
    return hashlib.sha1(f"{path}\x00{method}\x00{target}".encode()).hexdigest()[:16]


def _row(item: Item, decoded: Decoded | None, method: str | None = None, target: str | None = None,
         error: str | None = None) -> dict[str, Any]:
    row = dict.fromkeys(COLUMNS)
    row.update({
        "row_id": row_id(item.path, method, target),
        "path": item.path,
        "image_hash": None if decoded is None else decoded.image_hash,
        "label": item.label,
        "box": None if item.box is None else list(item.box),
        "method": method,
        "target": target,
        "error": error,
    })
    return row


# ---------------------------------------------------------------------------------------------------------
# Writing and reading a run
# ---------------------------------------------------------------------------------------------------------


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
            if before.get("settings") != _jsonable(asdict(settings)):
                raise SaliencyError(f"{str(self.out)!r} holds a run with other settings ({before.get('settings')}); "
                                    "resume it with the same model, methods, targets, params and seed")
        self.tables.mkdir(parents=True, exist_ok=True)
        self.maps.mkdir(parents=True, exist_ok=True)
        self.done: set[str] = set()
        for part in existing:
            import pyarrow.parquet as pq

            self.done.update(pq.read_table(part, columns=["path"]).column("path").to_pylist())
        self.next_part = 1 + max((int(p.stem.split("-")[1]) for p in existing), default=-1)
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "kind": "saliency-studio batch run",
            "settings": _jsonable(asdict(settings)),
            "engine": engine,
            "source": str(source),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "versions": _versions(),
            "maps": {
                "layer methods": "the layer's own map (layer_attribution), float16",
                "other methods": f"the channel sum mean-pooled {MAP_POOL}x{MAP_POOL}, float16",
            },
            "statistics": {
                "peak_y/peak_x": "argmax of |map|, cell centre, as fractions of height and width",
                "centre_mass": f"share of |map| in the middle {CENTRE[1] - CENTRE[0]:.0%} of each side",
                "border_mass": f"share of |map| in the outer {BORDER:.1%} of each side",
                "box_mass": "share of |map| inside the list's box (x0, y0, x1, y1 in the original image's pixels)",
                "entropy": "entropy of |map| over its cells / log(cells)",
            },
            "classes": len(categories),
        }
        _atomic_write(manifest_path, json.dumps(manifest, indent=2, allow_nan=False).encode())

    def write(self, rows: list[dict[str, Any]], maps: dict[str, np.ndarray]) -> None:
        """One part: its maps file, then its table file, each atomically."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not rows:
            return
        name = f"part-{self.next_part:05d}"
        self.next_part += 1
        if maps:
            buffer = _npz_bytes(maps)
            _atomic_write(self.maps / f"{name}.npz", buffer)
        for row in rows:
            if row["map_key"] is not None:
                row["map_file"] = f"maps/{name}.npz"
            if row["label"] is not None and self.categories:
                row["label_name"] = self.categories[row["label"]]
        table = pa.Table.from_pylist([{c: row.get(c) for c in COLUMNS} for row in rows], schema=_schema())
        temporary = self.tables / f".{name}.parquet.tmp"
        pq.write_table(table, temporary)
        os.replace(temporary, self.tables / f"{name}.parquet")
        self.done.update(row["path"] for row in rows)


def _schema():
    import pyarrow as pa

    string, double, integer = pa.string(), pa.float64(), pa.int64()
    types = {"label": integer, "box": pa.list_(double), "prediction": integer, "probability": double,
             "top5": pa.list_(integer), "top5_probability": pa.list_(double), "correct": pa.bool_(),
             "target_index": integer, "target_probability": double, "elapsed_s": double, "map_h": integer,
             "map_w": integer, "peak_y": double, "peak_x": double, "centre_mass": double, "border_mass": double,
             "box_mass": double, "entropy": double}
    return pa.schema([(c, types.get(c, string)) for c in COLUMNS])


def _npz_bytes(maps: dict[str, np.ndarray]) -> bytes:
    import io

    buffer = io.BytesIO()
    np.savez_compressed(buffer, **maps)
    return buffer.getvalue()


def _atomic_write(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _versions() -> dict[str, str]:
    import pyarrow

    from .manifest import versions

    return {**versions(), "pyarrow": pyarrow.__version__}


def read_table(out: str | os.PathLike):
    """The run's table as a pandas DataFrame, rows in a stable order (path, method, target)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    parts = sorted((Path(out) / "table").glob("part-*.parquet"))
    if not parts:
        raise SaliencyError(f"{str(out)!r} holds no batch run (no table/part-*.parquet)")
    table = pa.concat_tables([pq.read_table(p) for p in parts])
    frame = table.to_pandas()
    return frame.sort_values(["path", "method", "target"], na_position="first", kind="stable").reset_index(drop=True)


def load_map(out: str | os.PathLike, map_file: str, map_key: str) -> np.ndarray:
    """One stored map [h, w] as float32."""
    with np.load(Path(out) / map_file) as shard:
        return shard[map_key].astype(np.float32)


def read_manifest(out: str | os.PathLike) -> dict[str, Any]:
    path = Path(out) / "manifest.json"
    if not path.is_file():
        raise SaliencyError(f"{str(out)!r} is not a batch run folder (no manifest.json)")
    return json.loads(path.read_text())


# ---------------------------------------------------------------------------------------------------------
# The views that reveal a spurious cue
# ---------------------------------------------------------------------------------------------------------

VIEWS = {
    "outside": "mass outside the object: 1 − box mass when the run has boxes (rows without one left out), else "
               "the border mass",
    "confident_mistakes": "wrong predictions, the most confident first",
    "unsure_mistakes": "wrong predictions, the least confident first",
}
MEAN_SIZE = 56


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


def mean_maps(out: str | os.PathLike, rows, by: str = "label_name", size: int = MEAN_SIZE
              ) -> list[tuple[str, int, np.ndarray]]:
    """(class, images, mean map) for each value of column ``by`` (e.g. "label_name", "prediction_name"), classes
    sorted by name. Each stored map counts as |map| resized to ``size`` × ``size`` and scaled to sum 1 (where its
    mass lies, as the statistics measure it), so no image's raw scale dominates; all-zero maps are left out.
    Each shard is opened once."""
    from .render import resize

    picked = rows[rows[by].notna() & rows["map_key"].notna()]
    grouped: dict[str, list[np.ndarray]] = {}
    for map_file, part in picked.groupby("map_file", sort=False):
        with np.load(Path(out) / map_file) as shard:
            for name, key in zip(part[by].astype(str), part["map_key"], strict=True):
                values = np.abs(resize(shard[key].astype(np.float32), (size, size)))
                total = float(values.sum())
                if np.isfinite(total) and total > 0:
                    grouped.setdefault(name, []).append(values / total)
    return [(name, len(maps), np.mean(maps, axis=0)) for name, maps in sorted(grouped.items())]


# ---------------------------------------------------------------------------------------------------------
# The local engine
# ---------------------------------------------------------------------------------------------------------


def default_workers() -> int:
    """DataLoader workers: one per spare CPU core, at most 4 (decoding is light next to the explanations)."""
    return max(0, min(4, (os.cpu_count() or 1) - 1))


def _collate(batch: list[Decoded]) -> list[Decoded]:
    return batch


def chunks(values: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def run_local(bundle, items: Sequence[Item], settings: Settings, writer: RunWriter, workers: int | None = None,
              progress: Callable[[int, int], object] | None = None) -> int:
    """Explain every item the writer has not got yet; returns the number of images done in this run.
    ``progress(done, total)`` after each batch (returning False stops the run after that batch's part)."""
    from torch.utils.data import DataLoader

    todo = [item for item in items if item.path not in writer.done]
    if not todo:
        return 0
    decoder = Decoder(todo, bundle, settings.preprocessing)
    workers = default_workers() if workers is None else workers
    # forkserver: a forked copy of a process that has run torch's thread pool slows the parent down
    loader = DataLoader(decoder, batch_size=settings.batch_size, shuffle=False, num_workers=workers,
                        collate_fn=_collate, multiprocessing_context="forkserver" if workers else None)
    done = 0
    for decoded in loader:
        rows, maps = explain_batch(bundle, todo, decoded, settings)
        writer.write(rows, maps)
        done += len(decoded)
        if progress is not None and progress(done, len(todo)) is False:
            break
    return done


def run(source: str, out: str, settings: Settings, engine: str = "local", limit: int | None = None,
        resume: bool = False, workers: int | None = None, device: str | None = None, bundle=None,
        progress: Callable[[int, int], object] | None = None, labels: str | None = None) -> dict[str, Any]:
    """A whole run: read the source (and the labels list, if given), load the model once, explain, write;
    returns a summary dict."""
    from .models import load_model
    from .registry import get_method

    if engine not in ENGINES:
        raise ParameterError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    for method in settings.methods:
        get_method(method)
    settings.params = {m: get_method(m).validate(settings.params.get(m, {})) for m in settings.methods}
    unknown = sorted(set(settings.params) - set(settings.methods))
    if unknown:
        raise ParameterError(f"params given for {unknown[0]!r}, which is not among the methods")
    if bundle is None:
        bundle = load_model(settings.model, device=device)
    for target in settings.targets:
        if target != "label":
            from .targets import TargetSpec

            TargetSpec(target, 1, bundle.categories, "logit", num_classes=len(bundle.categories) or None)
    items = read_source(source, bundle.categories, limit)
    if labels is not None:
        items = with_labels(items, Path(labels), bundle.categories)
    writer = RunWriter(out, settings, engine, source, resume, bundle.categories)
    started = time.perf_counter()
    if engine == "ray":
        from .batch_ray import run_ray

        done = run_ray(bundle, items, settings, writer, workers=workers, progress=progress)
    else:
        done = run_local(bundle, items, settings, writer, workers=workers, progress=progress)
    elapsed = time.perf_counter() - started
    return {"images": len(items), "done_now": done, "skipped": len(items) - done, "elapsed_s": elapsed,
            "images_per_s": done / elapsed if done and elapsed > 0 else None, "out": str(out)}


# ---------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------


def add_commands(commands: Any) -> None:
    """Add ``batch`` to the CLI (see ``explainers.cli.COMMAND_MODULES``)."""
    from .cli import _positive_int
    from .models import DEFAULT_MODEL

    ba = commands.add_parser(
        "batch",
        help="explain a folder, glob or list of images: a Parquet table of map statistics and sharded maps",
        description="Explain every image of SOURCE (a folder, recursively, the class from ImageFolder-style "
        "sub-folders; a glob; or a .csv/.parquet list with path, optional label and x0,y0,x1,y1 box columns) with "
        "each method and target, and write DIR/table/*.parquet (one row per image x method x target, error rows "
        "for unreadable images), DIR/maps/*.npz and DIR/manifest.json.",
    )
    ba.add_argument("source", metavar="SOURCE", help="folder, glob pattern, or .csv/.parquet list")
    ba.add_argument("--out", required=True, metavar="DIR", help="run folder (created; --resume continues one)")
    ba.add_argument("--model", default=DEFAULT_MODEL, help="model name (default: %(default)s)")
    ba.add_argument("--methods", default=",".join(DEFAULT_METHODS), metavar="M[,M…]",
                    help="methods, comma-separated, computed together (explain_many; default: %(default)s)")
    ba.add_argument("--param", action="append", default=[], metavar="METHOD.NAME=VALUE",
                    help="a method parameter (repeatable), e.g. --param integrated_gradients.n_steps=16")
    ba.add_argument("--targets", default=",".join(DEFAULT_TARGETS), metavar="T[,T…]",
                    help="targets, comma-separated: topK, a class index or name, or label (the list's or folder's "
                    "class) (default: %(default)s)")
    ba.add_argument("--labels", default=None, metavar="labels.csv",
                    help="a list (path,label[,x0,y0,x1,y1]) whose labels and boxes apply to SOURCE's images")
    ba.add_argument("--engine", default="local", choices=ENGINES, help="in-process or Ray Data (default: local)")
    ba.add_argument("--batch-size", default=16, type=_positive_int, metavar="N", help="images per batch")
    ba.add_argument("--workers", default=None, type=int, metavar="N",
                    help="decoding workers (local; default: spare cores, at most 4) or model replicas (ray; "
                    "default: one per GPU, else 2)")
    ba.add_argument("--limit", default=None, type=_positive_int, metavar="N", help="the first N images only")
    ba.add_argument("--resume", action="store_true", help="continue the run in DIR, skipping images it has")
    ba.add_argument("--seed", default=0, type=int, metavar="N", help="seed of every random draw (default: 0)")
    ba.add_argument("--device", default=None, choices=("cpu", "cuda"), help="default: cuda if available")
    ba.add_argument("--quiet", action="store_true", help="no progress bar")
    ba.set_defaults(handler=cmd_batch)


def cmd_batch(args: argparse.Namespace) -> int:
    import sys

    from tqdm import tqdm

    from .cli import _pick_device
    from .faithfulness import _method_names, _method_params

    methods = _method_names([args.methods], DEFAULT_METHODS)
    targets = [t.strip() for t in args.targets.split(",") if t.strip()] or list(DEFAULT_TARGETS)
    settings = Settings(model=args.model, methods=methods, targets=targets,
                        params=_method_params(args.param, methods), seed=args.seed, batch_size=args.batch_size)
    bar = tqdm(total=None, unit="image", disable=args.quiet, desc="batch")

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    summary = run(args.source, args.out, settings, engine=args.engine, limit=args.limit, resume=args.resume,
                  workers=args.workers, device=_pick_device(args.device), progress=progress, labels=args.labels)
    bar.close()
    rate = summary["images_per_s"]
    print(f"{summary['out']}: {summary['done_now']} images explained, {summary['skipped']} already there"
          + (f", {rate:.2f} images/s" if rate else ""), file=sys.stdout)
    return 0


__all__ = ["VIEWS", "Item", "Settings", "load_map", "map_statistics", "mean_maps", "ranked", "read_manifest",
           "read_source", "read_table", "run"]
