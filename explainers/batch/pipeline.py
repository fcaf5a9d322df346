"""A batch run's pipeline: the images of a source (a folder, a glob or a list), their decoding into the model's
view, and one batch explained into table rows and stored maps, each map with the statistics of where its mass lies.

The engines (:mod:`.local`, :mod:`.ray_engine`) move these steps between processes; the steps, and so the numbers,
are the same on both."""

from __future__ import annotations

import csv
import glob as globbing
import hashlib
import json
import math
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from ..dense.outputs import DETECTION
from ..dense.records import run_targets, to_original_box
from ..dense.targets import IOU_THRESHOLD, BoxTarget
from ..errors import InputError, ParameterError
from ..images import IMAGE_SUFFIXES, image_hash, load_image
from ..manifest import top_predictions
from ..many import explain_many
from ..targets import target_key

BOX_COLUMNS = ("x0", "y0", "x1", "y1")  # a list's box, in the original image's pixels
MAP_POOL = 4  # non-layer maps: channel sum, mean-pooled 4×4 (224 → 56)
TOP_K = 5
# The centre and the border: the middle half of each side is the centre; the outer eighth of each side the border.
CENTRE = (0.25, 0.75)
BORDER = 0.125
NO_LABEL = "no label for this image: the target 'label' needs one"


# ---------------------------------------------------------------------------------------------------------
# Sources
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    """One image of a source: its path as given (the row's key), its label (a class index) when known, and a
    box (x0, y0, x1, y1 in the original image's pixels) when the list gives one. One text of a text source
    (:mod:`.text`): ``path`` is its key ("reviews.txt:12"), ``text`` the text."""

    path: str
    label: int | None = None
    box: tuple[float, float, float, float] | None = None
    text: str | None = None


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


def not_utf8(path: Path, what: str, kind: str) -> InputError:
    """The error for a file that is not UTF-8: its name, the first line and byte that are not, what was expected."""
    data = path.read_bytes()
    try:
        data.decode("utf-8")
        where = "it is not UTF-8"
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        where = f"line {line} holds byte 0x{data[exc.start]:02x}, which is not UTF-8"
    return InputError(f"expected {what} {path.name!r} to be {kind} in UTF-8, but {where} (another encoding, such as "
                      "Latin-1 or UTF-16?); save it as UTF-8 (a spreadsheet's \"CSV UTF-8\")")


def read_list(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """(rows, column names) of a .csv list (UTF-8, a header line) or a .parquet list: the one reader of the image
    and the text lists. InputError naming the file and what was expected when it is neither: a CSV in another
    encoding (Latin-1, UTF-16), a file named .parquet that is not Parquet."""
    try:
        if path.suffix.lower() == ".parquet":
            table = pq.read_table(path)
            return table.to_pylist(), list(table.column_names)
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            return list(reader), list(reader.fieldnames or [])
    except UnicodeDecodeError:
        raise not_utf8(path, "the list", "a CSV file") from None
    except csv.Error as exc:
        raise InputError(f"expected the list {path.name!r} to be a CSV file, but the csv reader refused it: {exc}") \
            from None
    except pa.ArrowException as exc:
        said = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"expected {path.name!r} to be a Parquet file (its name ends in .parquet), but pyarrow "
                         f"cannot read it as one: {said}") from None
    except OSError as exc:
        raise InputError(f"cannot read the list {path.name!r}: {exc.strerror or exc}") from None


def _read_list(path: Path, categories: Sequence[str]) -> list[Item]:
    """The items of a .csv/.parquet list: paths relative to the list's folder, labels and boxes checked."""
    rows, _ = read_list(path)
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
# Settings and decoding
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
    max_boxes: int = 5  # a detector: the best boxes of each image at or above the score threshold
    score_threshold: float | None = None  # a detector: None keeps the model's own (DenseBundle.score_threshold)
    iou_threshold: float = IOU_THRESHOLD  # a detector: what a re-detection needs to count as the same box
    reduction: str = "sum"  # a segmenter: a region's score is the sum (or mean) of its class's logits
    modality: str = "image"  # "text": a run over texts (:mod:`.text`), one row per text × method × target
    text_column: str | None = None  # a text run's column of a .csv/.parquet list (None: "text", or a .txt file)


@dataclass
class Decoded:
    """One item after decoding: its position in the batch's items, the model's view as uint8 pixels [H, W, 3] and
    the original (width, height) and image hash, or the error message."""

    index: int
    inputs: torch.Tensor | None
    size: tuple[int, int] | None
    image_hash: str | None
    error: str | None


class Decoder:
    """Reads items and makes the model's view of each (resize or crop), as uint8 pixels [H, W, 3]; the model's
    normalisation runs where the model is. Picklable and light (the bundle travels without its model), so
    DataLoader workers and Ray tasks run it in their own processes."""

    def __init__(self, items: Sequence[Item], bundle, preprocessing: str):
        self.items, self.preprocessing = list(items), preprocessing
        # geometry only: no model, no normalisation (a closure), no layer catalogue
        self.view = replace(bundle, model=torch.nn.Identity(), normalize=None, denormalize=None, layers=[])

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Decoded:
        try:
            image = load_image(self.items[index].path)
            pixels = np.asarray(self.view.model_view(image, self.preprocessing).convert("RGB"), dtype=np.uint8)
            return Decoded(index, torch.from_numpy(pixels.copy()), image.size, image_hash(image), None)
        except Exception as exc:  # a bad image is an error row, never the end of the run
            return Decoded(index, None, None, None, f"{type(exc).__name__}: {exc}")


def chunks(values: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    """``values`` cut into batches of ``size`` (the last one shorter), in order, as a DataLoader cuts them."""
    for start in range(0, len(values), size):
        yield values[start : start + size]


def model_inputs(bundle, pixels: Sequence[torch.Tensor]) -> torch.Tensor:
    """uint8 model views [H, W, 3] -> the model's normalised input [N, 3, H, W] on its device (as
    ``ModelBundle.preprocess`` makes it)."""
    stacked = torch.stack([p.float() / 255.0 for p in pixels]).permute(0, 3, 1, 2)
    return bundle.normalize(stacked).to(bundle.device)


# ---------------------------------------------------------------------------------------------------------
# Rows
# ---------------------------------------------------------------------------------------------------------

COLUMNS = ("row_id", "path", "image_hash", "label", "label_name", "box", "method", "target", "error", "prediction",
           "prediction_name", "probability", "top5", "top5_probability", "correct", "target_index", "target_name",
           "target_probability", "params", "elapsed_s", "map_file", "map_key", "map_kind", "map_h", "map_w",
           "peak_y", "peak_x", "centre_mass", "border_mass", "box_mass", "entropy",
           # a detector's rows (one per image × box × method): the explained box is ``box`` (original pixels),
           # these say which; a segmenter's rows (one per image × predicted class × method) fill region_*.
           # None on a classifier's rows.
           "box_label", "box_score", "box_rank", "region_class", "region_share")
NO_TARGETS = "no {what} on this image: nothing to explain"


def row_id(path: str, method: str | None, target: str | None) -> str:
    """A row's stable id: the image, the method and the target (an error row has neither)."""
    return hashlib.sha1(f"{path}\x00{method}\x00{target}".encode()).hexdigest()[:16]


def _row(item: Item, decoded: Decoded | None, method: str | None = None, target: str | None = None,
         error: str | None = None) -> dict[str, Any]:
    """A row with the image's columns filled in (and the error, for an error row); the rest None."""
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


def stored_map(explanation, j: int) -> tuple[np.ndarray, str]:
    """(map [h, w] as float32, its kind) that a run stores for row ``j`` of an explanation: the layer's own map
    for the layer methods, else the channel sum mean-pooled ``MAP_POOL`` × ``MAP_POOL``."""
    if explanation.layer_attribution is not None:
        return explanation.layer_attribution[j, 0].detach().float().cpu().numpy(), "layer"
    pooled = pooled_map(explanation.attribution[j].detach().float().cpu().numpy())
    return pooled, f"channel sum, mean-pooled {MAP_POOL}x{MAP_POOL}"


def box_fractions(box, image_size: tuple[int, int] | None) -> tuple[float, float, float, float] | None:
    """A box (x0, y0, x1, y1 in the original image's pixels) as fractions of ``image_size`` = (width, height),
    for an item's map statistics and a ranked row's chance level; None without a box or a size."""
    if box is None or image_size is None or len(box) != 4 or min(image_size) <= 0:
        return None
    width, height = image_size
    x0, y0, x1, y1 = (float(v) for v in box)
    return (x0 / width, y0 / height, x1 / width, y1 / height)


def prediction_columns(item: Item, logits: Any, probabilities: np.ndarray, target_index: int,
                       params: dict[str, Any], categories: Sequence[str]) -> dict[str, Any]:
    """The columns of a classifier's explained row, image or text: the prediction and top 5 of ``logits`` [K],
    whether the prediction is the item's label, the target with its probability (``probabilities`` [K], the
    softmax of the logits) and the method's ``params`` as JSON."""
    top = top_predictions(logits, categories, TOP_K)
    return {
        "prediction": top[0]["index"],
        "prediction_name": top[0]["name"],
        "probability": float(probabilities.max()),
        "top5": [t["index"] for t in top],
        "top5_probability": [t["probability"] for t in top],
        "correct": None if item.label is None else bool(top[0]["index"] == item.label),
        "target_index": target_index,
        "target_name": categories[target_index] if categories else None,
        "target_probability": float(probabilities[target_index]),
        "params": json.dumps(params, sort_keys=True, default=str),
    }


def _explained_row(item: Item, decoded: Decoded, method: str, target: str, explanation, j: int,
                   probabilities: np.ndarray, categories: Sequence[str]) -> tuple[dict[str, Any], np.ndarray]:
    """(row, stored map as float32) for row ``j`` of an explanation: the prediction, the target, the map's place in
    the maps file and its statistics. ``probabilities`` is the softmax of row ``j``'s logits."""
    stored, kind = stored_map(explanation, j)
    target_index = int(np.ravel(explanation.target[j].tolist())[0])
    row = _row(item, decoded, method=method, target=target)
    row.update({
        **prediction_columns(item, explanation.logits[j].cpu(), probabilities, target_index, explanation.params,
                             categories),
        "map_key": row["row_id"],
        "map_kind": kind,
        "map_h": int(stored.shape[0]),
        "map_w": int(stored.shape[1]),
        **map_statistics(stored, box_fractions(item.box, decoded.size)),
    })
    return row, stored


# ---------------------------------------------------------------------------------------------------------
# One batch
# ---------------------------------------------------------------------------------------------------------


def _explanations(bundle, inputs: torch.Tensor, labels: Sequence[int | None], settings: Settings
                  ) -> dict[tuple[str, str], tuple[Any, list[int]]]:
    """{(method, target): (explanation, the batch positions of its rows)} through explain_many (shared passes):
    the ranked and class targets for every image, the target "label" for the images that have one."""
    explained: dict[tuple[str, str], tuple[Any, list[int]]] = {}
    plain = [t for t in settings.targets if t != "label"]
    if plain:
        everyone = list(range(len(labels)))
        many = explain_many(bundle, inputs, settings.methods, plain, seed=settings.seed, params=settings.params)
        for (method, key), explanation in many.items():
            explained[(method, next(t for t in plain if target_key(t) == key))] = (explanation, everyone)
    labelled = [i for i, label in enumerate(labels) if label is not None]
    if "label" in settings.targets and labelled:
        many = explain_many(bundle, inputs[labelled], settings.methods, [[labels[i] for i in labelled]],
                            seed=settings.seed, params=settings.params)
        for (method, _), explanation in many.items():
            explained[(method, "label")] = (explanation, labelled)
    return explained


def explain_batch(bundle, items: Sequence[Item], decoded: Sequence[Decoded], settings: Settings
                  ) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
    """(rows, maps) for one batch: every good image × method × target through explain_many, one error row per
    image that failed to decode, one per method for an image without a label when the target "label" is asked
    for. ``maps`` maps a row's ``map_key`` to its stored map (float16)."""
    good = [d for d in decoded if d.error is None]
    rows = [_row(items[d.index], None, error=d.error) for d in decoded if d.error is not None]
    if "label" in settings.targets:
        rows += [_row(items[d.index], d, method=method, target="label", error=NO_LABEL)
                 for d in good if items[d.index].label is None for method in settings.methods]
    maps: dict[str, np.ndarray] = {}
    if not good:
        return rows, maps
    if getattr(bundle, "needs_targets", False):
        return _explain_dense(bundle, items, good, settings, rows, maps)
    inputs = model_inputs(bundle, [d.inputs for d in good])
    started = time.perf_counter()
    explained = _explanations(bundle, inputs, [items[d.index].label for d in good], settings)
    per_row_s = (time.perf_counter() - started) / len(good)
    for (method, target), (explanation, positions) in explained.items():
        probabilities = explanation.logits.float().softmax(-1).cpu().numpy()
        for j, position in enumerate(positions):
            d = good[position]
            row, stored = _explained_row(items[d.index], d, method, target, explanation, j, probabilities[j],
                                         bundle.categories)
            row["elapsed_s"] = per_row_s
            maps[row["map_key"]] = stored.astype(np.float16)
            rows.append(row)
    return rows, maps


# ---------------------------------------------------------------------------------------------------------
# Detectors and segmenters
# ---------------------------------------------------------------------------------------------------------


def dense_target_name(bundle, target, rank: int) -> str:
    """A dense row's ``target``: "box1" (the best box), "box2", ...; or "region:<class>"."""
    return f"box{rank}" if isinstance(target, BoxTarget) else f"region:{bundle.label_name(target.label)}"


def _explain_dense(bundle, items: Sequence[Item], good: Sequence[Decoded], settings: Settings,
                   rows: list[dict[str, Any]], maps: dict[str, np.ndarray]
                   ) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
    """A detector's or segmenter's rows, one image at a time (each has its own targets): its best boxes
    (:func:`~.dense.run_targets`) or its predicted class regions, each method explaining all of them in shared
    passes; an image with none gets one row per method that says so."""
    bundle = bundle.with_threshold(settings.score_threshold)  # a copy: the caller's bundle keeps its own
    for d in good:
        item = items[d.index]
        inputs = model_inputs(bundle, [d.inputs])
        started = time.perf_counter()
        prediction = bundle.predict(inputs)
        targets = run_targets(bundle, prediction, settings.max_boxes, settings.reduction)
        if not targets:
            what = (f"detection at or above score {bundle.score_threshold}" if prediction.kind == DETECTION
                    else "predicted class")
            rows += [_row(item, d, method=method, target="none", error=NO_TARGETS.format(what=what))
                     for method in settings.methods]
            continue
        scored = bundle.scored(targets, inputs, iou_threshold=settings.iou_threshold)
        many = explain_many(scored, inputs, settings.methods, list(range(len(targets))), seed=settings.seed,
                            params=settings.params)
        per_row_s = (time.perf_counter() - started) / max(1, len(many))
        for (method, key), explanation in many.items():
            index = int(key)
            row, stored = _dense_row(bundle, item, d, method, targets[index], index + 1, explanation,
                                     settings.preprocessing)
            row["elapsed_s"] = per_row_s
            maps[row["map_key"]] = stored.astype(np.float16)
            rows.append(row)
    return rows, maps


def _dense_row(bundle, item: Item, decoded: Decoded, method: str, target, rank: int, explanation,
               preprocessing: str) -> tuple[dict[str, Any], np.ndarray]:
    """(row, stored map) of one box or region: its place in the table and its map's statistics, ``box_mass`` the
    share of the map inside the explained box (model-input fractions: exact for either preprocessing)."""
    stored, kind = stored_map(explanation, 0)
    name = dense_target_name(bundle, target, rank)
    row = _row(item, decoded, method=method, target=name)
    side = float(bundle.input_size)
    label_name = bundle.label_name(target.label)
    row.update({
        "target_index": int(target.label),
        "target_name": label_name,
        "params": json.dumps(explanation.params, sort_keys=True, default=str),
        "map_key": row["row_id"],
        "map_kind": kind,
        "map_h": int(stored.shape[0]),
        "map_w": int(stored.shape[1]),
    })
    if isinstance(target, BoxTarget):
        geometry = bundle.crop_geometry(decoded.size, preprocessing)
        x0, y0, x1, y1 = target.box
        row.update({"box": [round(v, 2) for v in to_original_box(target.box, geometry, int(side))],
                    "box_label": label_name, "box_score": float(target.score), "box_rank": rank,
                    "target_probability": float(target.score),
                    **map_statistics(stored, (x0 / side, y0 / side, x1 / side, y1 / side))})
    else:
        share = float(np.asarray(target.mask_pixels).mean())
        row.update({"region_class": label_name, "region_share": share, "box_rank": rank,
                    **map_statistics(stored)})
    return row, stored
