"""The Batch page's pieces: open a run folder of ``explainers.batch`` (or make a small one from uploads), filter its
table, draw its maps as thumbnails, and rank the rows that may reveal a spurious cue. The numbers come from the run
itself (``read_table``, ``load_map``); pictures go through the backend's one render pipeline.

The page serves whoever reaches the server, so it opens only run folders inside the roots of ``[batch] roots`` in
saliency.toml and the runs this session launched (:mod:`explainers.batch.access`), follows a row's image only
inside those, and treats everything in a run folder as data: shown as plain text, one row's failure that row's."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st
from PIL import Image, ImageOps

from explainers import METHODS, SaliencyError, batch
from explainers import render as rnd
from explainers.batch import RunComparison
from explainers.batch.access import configured_roots, inside, root_paths
from explainers.batch.pipeline import Settings
from explainers.batch.store import load_map, read_manifest, read_table
from explainers.batch.views import MEAN_SIZE
from explainers.images import check_image_size, load_image
from explainers.models import RESIZE

from . import state, user_models
from .method_docs import md_escape
from .models import get_bundle, model_choices
from .sidebar import Selection

EXPLORE = "app_pages/explore.py"
MAX_IMAGES = 64  # a run launched from the page: more belongs on the command line
RUNS_ROOT = Path(tempfile.gettempdir()) / "saliency-studio-batch"  # runs launched from the page, one folder each
KEEP_S = 24 * 3600  # a launched run is removed a day later, when another is launched (a session has no end hook)
TARGET_CHOICES = ("top1", "top2", "top3")
STATISTICS = {  # the statistics a range filter can act on, with how the page names them
    "border_mass": "border mass",
    "centre_mass": "centre mass",
    "box_mass": "box mass",
    "entropy": "entropy",
    "probability": "probability",
}
CORRECTNESS = ("all", "correct", "wrong")
THUMBNAILS = 200  # rows of the table that get a thumbnail (the first ones shown): data URLs are not free
THUMB_SIZE = 64
GALLERY = 12  # pictures per ranked gallery
GALLERY_SIZE = 150
VIEW = rnd.View(sign="absolute", colormap=rnd.DEFAULT_SEQUENTIAL, alpha=0.5)  # |map|: what the statistics measure


# ---- a run -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """An opened run folder: its manifest, the rows that hold a map, and the error rows (unreadable images,
    targets that could not be explained)."""

    out: str
    manifest: dict[str, Any]
    rows: pd.DataFrame = field(repr=False)
    errors: pd.DataFrame = field(repr=False)
    roots: tuple[Path, ...] = ()  # where its images may be read from: the folders the page may open

    @property
    def settings(self) -> dict[str, Any]:
        settings = self.manifest.get("settings", {}) if isinstance(self.manifest, dict) else {}
        return settings if isinstance(settings, dict) else {}

    @property
    def model(self) -> str:
        return str(self.settings.get("model", ""))

    @property
    def preprocessing(self) -> str:
        return str(self.settings.get("preprocessing", RESIZE))

    @property
    def is_text(self) -> bool:
        """A run over texts: each row's per-token map is in the table (``explainers.batch.text``), no map files."""
        return isinstance(self.manifest, dict) and self.manifest.get("modality") == "text"

    @property
    def has_boxes(self) -> bool:
        return bool(self.rows["box_mass"].notna().any()) if len(self.rows) and "box_mass" in self.rows else False

    @property
    def has_labels(self) -> bool:
        return bool(self.rows["correct"].notna().any()) if len(self.rows) else False


def _stamp(folder: Path) -> tuple:
    """What changes when a run grows (a resumed run adds parts): the cache key of its table."""
    files = [folder / "manifest.json", *sorted((folder / "table").glob("part-*.parquet"))]
    return tuple((f.name, f.stat().st_mtime_ns, f.stat().st_size) for f in files if f.is_file())


@st.cache_data(show_spinner="Reading the run…", max_entries=8)
def _read(folder: str, stamp: tuple) -> tuple[dict[str, Any], pd.DataFrame]:
    return read_manifest(folder), read_table(folder)


def launched_runs() -> list[str]:
    """The folders of the runs this session launched (each a temporary folder: images, labels, run)."""
    return list(st.session_state.get(state.BATCH_LAUNCHED, []))


def allowed_roots() -> tuple[Path, ...]:
    """The folders this session may open runs in: the configured roots, then its own launched runs."""
    return tuple(root_paths(launched_runs()))


def not_allowed(text: str) -> SaliencyError:
    """The one message for a folder outside the roots: the same whether or not it exists."""
    roots = ", ".join(f"{r.rstrip('/')}/" for r in configured_roots())
    return SaliencyError(f"{md_escape(repr(text))} is not inside the batch folders this server allows: {roots} "
                         "(the server's saliency.toml, [batch] roots), or a run launched on this page in this session")


def open_run(folder: str, roots: Sequence[Path]) -> Run:
    """The run in ``folder``, which must lie inside one of ``roots`` (resolved: symlinks and ``..`` cannot lead
    out); a SaliencyError that says what a run folder holds when this is not one."""
    text = folder.strip()
    path = inside(text, roots)
    if path is None:
        raise not_allowed(text)
    shown = md_escape(repr(text))  # st.error reads markdown
    expected = "a batch run folder holds manifest.json, table/ and maps/ (the --out of `python -m explainers batch`)"
    if not path.exists():
        raise SaliencyError(f"{shown} does not exist: {expected}")
    if not path.is_dir():
        raise SaliencyError(f"{shown} is a file, not a folder: {expected}")
    if not (path / "manifest.json").is_file():
        raise SaliencyError(f"{shown} is not a batch run folder (no manifest.json): {expected}")
    manifest, table = _read(str(path), _stamp(path))
    # a text row's map is in the table itself (tokens and scores): it has no map file
    text = isinstance(manifest, dict) and manifest.get("modality") == "text"
    failed = table["error"].notna() | (table["method"].isna() if text else table["map_key"].isna())
    if text:  # "reviews.txt:10" after "reviews.txt:9": the source's own order, not the keys' alphabetical one
        table = table.iloc[_source_order(table)]
        failed = failed.loc[table.index]
    return Run(str(path), manifest, table.loc[~failed].reset_index(drop=True), table.loc[failed].reset_index(drop=True),
               tuple(roots))


def _source_order(table: pd.DataFrame) -> np.ndarray:
    """Positions of a text run's rows by file, then line (or list row) as a number, then method and target."""
    keys = []
    for position, (path, method, target) in enumerate(zip(table["path"].astype(str), table["method"],
                                                          table["target"], strict=True)):
        name, _, line = path.rpartition(":")
        number = int(line) if line.isdigit() else -1
        keys.append((name if line.isdigit() else path, number, str(method), str(target), position))
    return np.array([key[-1] for key in sorted(keys)], dtype=np.int64)


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def summary(run: Run) -> dict[str, Any]:
    """The manifest in a few numbers and words: what the page shows above the table."""
    settings = run.settings
    paths = pd.concat([run.rows["path"], run.errors["path"]])
    unreadable = run.errors.loc[run.errors["method"].isna(), "path"].nunique()
    labelled = run.rows.loc[run.rows["correct"].notna()].drop_duplicates("path")
    return {
        "model": run.model,
        "methods": ", ".join(settings.get("methods", [])),
        "targets": ", ".join(str(t) for t in settings.get("targets", [])),
        "seed": settings.get("seed"),
        "preprocessing": run.preprocessing,
        "images": int(paths.nunique()),
        "rows": len(run.rows),
        "errors": len(run.errors),
        "unreadable images": int(unreadable),
        "accuracy": float(labelled["correct"].astype(bool).mean()) if len(labelled) else None,
        "created": run.manifest.get("created", ""),
        "engine": run.manifest.get("engine", ""),
    }


# ---- filters -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Filters:
    """The table's filters; an empty tuple means "any"."""

    classes: tuple[str, ...] = ()
    correctness: str = "all"
    methods: tuple[str, ...] = ()
    targets: tuple[str, ...] = ()
    statistic: str | None = None
    low: float | None = None
    high: float | None = None


def row_filters(run: Run, rows: pd.DataFrame, methods: Sequence[str], targets: Sequence[str]):
    """The Rows filters every run has, image or text, in their expander: (the expander, for a view's own filters,
    the chosen classes, correctness, methods and targets), ``methods`` and ``targets`` the options offered."""
    filters = st.expander("Filters", expanded=True)
    left, middle, right, far = filters.columns(4)
    classes = left.multiselect("Class (label or prediction)", class_names(rows), key=state.BATCH_CLASSES)
    correctness = middle.selectbox("Correctness", CORRECTNESS, key=state.BATCH_CORRECT, disabled=not run.has_labels,
                                   help=None if run.has_labels else "The run has no labels.")
    chosen_methods = right.multiselect("Method", list(methods), key=state.BATCH_METHOD_FILTER, format_func=method_name)
    chosen_targets = far.multiselect("Target", list(targets), key=state.BATCH_TARGET_FILTER)
    return filters, tuple(classes), correctness, tuple(chosen_methods), tuple(chosen_targets)


def class_names(rows: pd.DataFrame) -> list[str]:
    """The classes a row can be found by: its label's name or its prediction's."""
    names = set(rows["label_name"].dropna()) | set(rows["prediction_name"].dropna())
    return sorted(str(n) for n in names)


def statistics_present(rows: pd.DataFrame) -> list[str]:
    return [name for name in STATISTICS if name in rows and rows[name].notna().any()]


def statistic_bounds(rows: pd.DataFrame, statistic: str) -> tuple[float, float]:
    """The slider's ends: the data's range, rounded outwards to 0.01 so every row lies inside."""
    values = rows[statistic].dropna().astype(float)
    low, high = float(np.floor(values.min() * 100) / 100), float(np.ceil(values.max() * 100) / 100)
    return (low, high) if high > low else (low, low + 0.01)


def filter_rows(rows: pd.DataFrame, filters: Filters) -> pd.DataFrame:
    keep = pd.Series(True, index=rows.index)
    if filters.classes:
        keep &= rows["label_name"].isin(filters.classes) | rows["prediction_name"].isin(filters.classes)
    if filters.correctness == "correct":
        keep &= rows["correct"].eq(True)
    elif filters.correctness == "wrong":
        keep &= rows["correct"].eq(False)
    if filters.methods:
        keep &= rows["method"].isin(filters.methods)
    if filters.targets:
        keep &= rows["target"].isin(filters.targets)
    if filters.statistic is not None and filters.low is not None and filters.high is not None:
        values = rows[filters.statistic].astype(float)
        bounds = statistic_bounds(rows, filters.statistic)
        if (filters.low, filters.high) != bounds:  # the whole range keeps rows without the statistic too
            keep &= values.between(filters.low, filters.high)
    return rows.loc[keep]


# ---- pictures ------------------------------------------------------------------------------------------------


def _run_bundle(model: str):
    """The run's model, only for the geometry of a centre crop; None when it cannot be had here."""
    own = user_models.get(model)
    if own is not None:
        return own.bundle
    if model in model_choices():
        try:
            return get_bundle(model)
        except Exception:  # noqa: BLE001 - thumbnails then fall back to a plain centre square
            return None
    return None


@st.cache_data(show_spinner=False, max_entries=512)
def _picture(path: str, preprocessing: str, size: int, model: str) -> np.ndarray:
    """The picture the model saw for ``path``, size × size, uint8 [H, W, 3]."""
    image = load_image(path).convert("RGB")
    if preprocessing == RESIZE:  # the model view of a resize is the whole image squeezed square
        return np.asarray(image.resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)
    bundle = _run_bundle(model)
    view = bundle.model_view(image, preprocessing) if bundle is not None else ImageOps.fit(image, (size, size))
    return np.asarray(view.resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)


def _encode(array: np.ndarray, kind: str) -> bytes:
    buffer = io.BytesIO()
    rnd.to_pil(array).save(buffer, format=kind, **({"quality": 85} if kind == "JPEG" else {}))
    return buffer.getvalue()


@st.cache_data(show_spinner=False, max_entries=4096)
def overlay_image(out: str, path: str, map_file: str, map_key: str, preprocessing: str, model: str, size: int,
                  kind: str = "PNG") -> bytes:
    """A row's stored map over the picture the model saw, size × size, encoded as ``kind``."""
    values = load_map(out, map_file, map_key)
    rendered = rnd.render(values, VIEW, backdrop=_picture(path, preprocessing, size, model))
    return _encode(rendered.image, kind)


def image_path(run: Run, path: Any) -> Path:
    """A row's image, resolved, when it lies inside the folders this session may open (a run folder's table is data:
    a crafted one must not show files from elsewhere); else a SaliencyError."""
    found = inside(str(path), run.roots)
    if found is None:
        raise SaliencyError("the image of this row is outside the batch folders this server allows")
    return found


def row_overlay(run: Run, row: pd.Series, size: int, kind: str = "PNG") -> bytes:
    """A row's stored map over its picture; a SaliencyError when its image or map lies outside what the page reads."""
    return overlay_image(run.out, str(image_path(run, row["path"])), str(row["map_file"]), str(row["map_key"]),
                         run.preprocessing, run.model, size, kind)


def problem(exc: Exception) -> str:
    """What a row's failure says in its table cell (plain text)."""
    return str(exc) if isinstance(exc, SaliencyError) else f"{type(exc).__name__}: {exc}"


def thumbnail_url(run: Run, row: pd.Series) -> tuple[str | None, str | None]:
    """(a data URL for the table's map column (JPEG: a tenth of a PNG's size), None) or (None, why not): an image
    that is gone or outside the allowed folders, a map that cannot be read."""
    try:
        data = row_overlay(run, row, THUMB_SIZE, "JPEG")
    except Exception as exc:  # noqa: BLE001 - a run folder's files are data: one bad row is that row's problem
        return None, problem(exc)
    return "data:image/jpeg;base64," + base64.b64encode(data).decode("ascii"), None


def overlay_or_none(run: Run, row: pd.Series, size: int = GALLERY_SIZE) -> bytes | None:
    try:
        return row_overlay(run, row, size)
    except Exception:  # noqa: BLE001 - the table's cell says why; a gallery leaves the row out
        return None


# ---- the table -------------------------------------------------------------------------------------------------


def method_name(name: Any) -> str:
    info = METHODS.get(str(name))
    return info.display_name if info is not None else str(name)


def table_key(rows: pd.DataFrame) -> str:
    """The table's widget key: new rows (another filter) make a new table, so a selection never points at a row
    the filter replaced."""
    digest = hashlib.sha1("\x00".join(rows["row_id"].astype(str)).encode()).hexdigest()[:12]
    return f"{state.BATCH_TABLE}.{digest}"


def table_frame(run: Run, rows: pd.DataFrame, thumbnails: int = THUMBNAILS) -> pd.DataFrame:
    """What the table shows, one line per row of ``rows`` (same order): thumbnails for the first ``thumbnails``."""
    thumbnails_ = [thumbnail_url(run, row) for _, row in rows.head(thumbnails).iterrows()]
    missing = [None] * (len(rows) - len(thumbnails_))
    frame = pd.DataFrame({
        "map": [url for url, _ in thumbnails_] + missing,
        "image": [Path(str(p)).name for p in rows["path"]],
        "label": rows["label_name"].to_numpy(),
        "prediction": rows["prediction_name"].to_numpy(),
        "probability": rows["probability"].astype(float).to_numpy(),
        "correct": rows["correct"].to_numpy(),
        "method": [method_name(m) for m in rows["method"]],
        "target": rows["target"].to_numpy(),
        "target class": rows["target_name"].to_numpy(),
        **{STATISTICS[name]: rows[name].astype(float).to_numpy() for name in statistics_present(rows)
           if name != "probability"},
        "path": rows["path"].to_numpy(),
        "problem": [why for _, why in thumbnails_] + missing,
    })
    return frame


def column_config(frame: pd.DataFrame) -> dict[str, Any]:
    config: dict[str, Any] = {
        "map": st.column_config.ImageColumn("map", help="The stored map (|map|, inferno) over what the model saw",
                                            width="small"),
        "probability": st.column_config.ProgressColumn("probability", min_value=0.0, max_value=1.0, format="%.2f",
                                                       help="The top class's probability"),
        "correct": st.column_config.CheckboxColumn("correct", help="Prediction equals the label (empty: no label)"),
        "path": st.column_config.TextColumn("path", width="medium"),
        "problem": st.column_config.TextColumn("problem", help="Why the row has no thumbnail (empty: it has one)"),
    }
    for name in STATISTICS.values():
        if name in frame and name != "probability":
            config[name] = st.column_config.NumberColumn(name, format="%.3f")
    return config


def selected_row(event: Any, rows: pd.DataFrame) -> pd.Series | None:
    """The row a single-row selection of the table points at (positions are those of ``rows``)."""
    picked = getattr(getattr(event, "selection", None), "rows", None)
    if picked is None and isinstance(event, dict):
        picked = event.get("selection", {}).get("rows")
    if not picked:
        return None
    position = int(picked[0])
    return rows.iloc[position] if 0 <= position < len(rows) else None


# ---- the views that reveal a spurious cue --------------------------------------------------------------------


CHANCE_MARKS = {  # how a gallery caption says where a score stands against its chance level
    "above": "⚠ above chance",
    "at": "at chance",
    "below": "below chance",
    "unknown": "chance unknown",
}


@st.cache_data(show_spinner=False, max_entries=4096)
def _image_size(path: str) -> tuple[int, int] | None:
    """(width, height) of an image as the run read it, None when it cannot be read any more."""
    try:
        return load_image(path).size
    except Exception:  # noqa: BLE001 - no size, no chance level: the caption says "chance unknown"
        return None


def image_size(run: Run, path: str) -> tuple[int, int] | None:
    """A row's original image size, when its image lies inside the allowed folders and can still be read."""
    found = inside(path, run.roots)
    return None if found is None else _image_size(str(found))


def outside_ranking(run: Run, rows: pd.DataFrame) -> tuple[pd.DataFrame, str, pd.Series]:
    """Rows ranked by the map's mass outside the object, most first (``explainers.batch.views.ranked``): 1 − box_mass
    when the run has boxes, else border_mass. Returns (ranked rows, what the score is, the scores)."""
    order = batch.ranked(rows, "outside")
    return order, "outside the box" if run.has_boxes else "on the border", order["outside"]


def chance_levels(run: Run, rows: pd.DataFrame) -> pd.Series:
    """The chance level of each row of ``outside_ranking``: what an evenly spread map scores
    (``explainers.batch.views.chance_levels``). With boxes it needs each image's size, so pass only the rows
    shown."""
    return batch.chance_levels(rows, lambda path: image_size(run, path))


def chance_mark(score: float, chance: float) -> str:
    """A gallery caption's score: the share, its chance level and where it stands against it."""
    verdict = batch.against_chance(float(score), float(chance))
    level = f"chance {chance:.0%}" if verdict != "unknown" else "no image size for the chance level"
    return f"{CHANCE_MARKS[verdict]} ({level})"


def mistakes(rows: pd.DataFrame, most: bool) -> pd.DataFrame:
    """Wrong rows (label known, prediction differs) by the top class's probability: most confident first, or
    least."""
    return batch.ranked(rows, "confident_mistakes" if most else "unsure_mistakes")


def caption(row: pd.Series, extra: str = "") -> str:
    """A gallery picture's caption: the image, the method and target, and the ranked number."""
    text = (f"{Path(str(row['path'])).name} · {method_name(row['method'])} · {row['target']} "
            f"({row['target_name']})")
    return md_escape(f"{text} · {extra}" if extra else text)  # captions read markdown; a run's names are data


def mean_maps(run: Run, rows: pd.DataFrame, by: str, problems: list[str] | None = None
              ) -> list[tuple[str, int, np.ndarray]]:
    """(class, images, mean map) per class of ``by`` ("label_name" or "prediction_name"): see
    ``explainers.batch.views.mean_maps``. A map file that cannot be read (or lies outside the run's maps/) is left
    out, and said in ``problems`` when given."""
    picked = rows.loc[rows[by].notna()]
    members = tuple(zip(picked[by].astype(str), picked["map_file"].astype(str), picked["map_key"].astype(str),
                        strict=True))
    means, failed = _mean_maps(run.out, members, by)
    if problems is not None:
        problems.extend(failed)
    return means


@st.cache_data(show_spinner="Averaging the maps…", max_entries=32)
def _mean_maps(out: str, members: tuple[tuple[str, str, str], ...], by: str
               ) -> tuple[list[tuple[str, int, np.ndarray]], list[str]]:
    """Cached per set of rows: a class of thousands of rows reads thousands of stored maps once."""
    frame = pd.DataFrame(members, columns=[by, "map_file", "map_key"])
    failed: list[str] = []
    means = batch.mean_maps(out, frame, by, MEAN_SIZE,
                            on_error=lambda map_file, exc: failed.append(f"{map_file}: {problem(exc)}"))
    return means, failed


def heatmap_png(values: np.ndarray, size: int = GALLERY_SIZE) -> bytes:
    """A mean map on its own (no picture: it belongs to no one image), smoothly enlarged."""
    return _encode(rnd.render(rnd.resize(values, (size, size)), VIEW).rgb, "PNG")


# ---- a second run: another model on the same images -------------------------------------------------------

SIDE_BY_SIDE = 6  # pairs shown as two pictures each, lowest agreement first
PAIR_SIZE = 120  # a pair's pictures: two side by side fit a third of the page at 900 px


@st.cache_data(show_spinner="Pairing the two runs' maps…", max_entries=8)
def _comparison(out_a: str, stamp_a: tuple, out_b: str, stamp_b: tuple) -> RunComparison:
    """Cached per pair of runs, as they are on disk: reading and comparing thousands of maps is done once."""
    return batch.compare_runs(out_a, _read(out_a, stamp_a)[1], out_b, _read(out_b, stamp_b)[1])


def compare_with(run: Run, other: Run) -> RunComparison:
    """The two runs' maps paired by image, method and target and ranked lowest agreement first
    (``explainers.batch.compare_runs``)."""
    return _comparison(run.out, _stamp(Path(run.out)), other.out, _stamp(Path(other.out)))


def comparison_summary(comparison: RunComparison, run: Run, other: Run) -> list[str]:
    """What the pairing found, in plain sentences: images in both and in one only, methods in one only, preprocessing
    that differs, unreadable map files."""
    lines = [f"{plural(comparison.images_both, 'image')} in both runs · {comparison.images_only_a} only in this run "
             f"· {comparison.images_only_b} only in the other (matched by content, not by path); "
             f"{plural(len(comparison.pairs), 'pair')} of maps compared."]
    for methods, where in ((comparison.methods_only_a, "this run"), (comparison.methods_only_b, "the other run")):
        if methods:
            lines.append(f"Only in {where}, so not compared: {', '.join(method_name(m) for m in methods)}.")
    if run.preprocessing != other.preprocessing:
        lines.append(f"The runs preprocess differently ({run.preprocessing} against {other.preprocessing}): their "
                     "maps cover different parts of the images, so the agreement is only approximate.")
    if comparison.failed:
        lines.append(f"{plural(len(comparison.failed), 'map file')} could not be read; their pairs are left out: "
                     + "; ".join(comparison.failed[:3]))
    return [md_escape(line) for line in lines]


def pairs_frame(pairs: pd.DataFrame) -> pd.DataFrame:
    """The comparison's table: one line per pair of maps (same order), each run's target class and the agreement."""
    names_a = [Path(str(p)).name for p in pairs["path_a"]]
    names_b = [Path(str(p)).name for p in pairs["path_b"]]
    return pd.DataFrame({
        "image": [a if a == b else f"{a} / {b}" for a, b in zip(names_a, names_b, strict=True)],
        "method": [method_name(m) for m in pairs["method"]],
        "target": pairs["target"].to_numpy(),
        "class (this run)": pairs["target_name_a"].to_numpy(),
        "class (other run)": pairs["target_name_b"].to_numpy(),
        "Spearman": pairs["spearman"].astype(float).to_numpy(),
        "top-10% IoU": pairs["top_iou"].astype(float).to_numpy(),
        "compared at": pairs["size"].to_numpy(),
    })


def side(pair: pd.Series, suffix: str) -> pd.Series:
    """One run's row of a pair (``suffix`` "_a" or "_b"), with the columns a picture needs."""
    return pd.Series({"path": pair[f"path{suffix}"], "map_file": pair[f"map_file{suffix}"],
                      "map_key": pair[f"map_key{suffix}"], "method": pair["method"], "target": pair["target"],
                      "target_name": pair[f"target_name{suffix}"]})


def pair_caption(run: Run, pair: pd.Series, suffix: str) -> str:
    return md_escape(f"{run.model} · {Path(str(pair[f'path{suffix}'])).name} · {pair[f'target_name{suffix}']}")


# ---- launching a run on uploads --------------------------------------------------------------------------------


def current_model() -> tuple[str, Any]:
    """(model id, bundle) of the sidebar: the selection's when there is one, else the picker's model."""
    selection = state.current_selection()
    if isinstance(selection, Selection):
        return selection.model, selection.bundle
    model = st.session_state.get(state.MODEL)
    own = user_models.get(model)
    if own is not None:
        return own.id, own.bundle
    return model, get_bundle(model)


def _safe_name(name: str, taken: set[str]) -> str:
    base = Path(name).name or "image"
    candidate, number = base, 1
    while candidate.lower() in taken:
        stem, suffix = os.path.splitext(base)
        candidate, number = f"{stem}-{number}{suffix}", number + 1
    taken.add(candidate.lower())
    return candidate


def _prune(folder: Path) -> None:
    """Make the launched runs' folder, and remove the runs launched there more than KEEP_S ago."""
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("run-*"):
        try:
            if old.is_dir() and time.time() - old.stat().st_mtime > KEEP_S:
                shutil.rmtree(old, ignore_errors=True)
        except OSError:
            continue


def new_run_folder() -> Path:
    """A new temporary folder for a run launched from the page (its inputs, then the run), which this session,
    and no other, may open; the runs launched more than KEEP_S ago are removed first."""
    _prune(RUNS_ROOT)
    root = Path(tempfile.mkdtemp(prefix="run-", dir=RUNS_ROOT))
    st.session_state[state.BATCH_LAUNCHED] = [*launched_runs(), str(root)]
    return root


def launch(files: Sequence[Any], labels: Any | None, methods: list[str], targets: list[str], model: str, bundle: Any,
           preprocessing: str, progress: Callable[[int, int], object] | None = None) -> str:
    """Write the uploads (and the labels list, if any) to a new temporary folder, run the batch there (local
    engine, no worker processes) and return the run folder. Other sessions may explain the same model meanwhile:
    the backend serialises calls on one model, batch by batch."""
    if not files:
        raise SaliencyError("upload at least one image to run the batch on")
    if len(files) > MAX_IMAGES:
        raise SaliencyError(f"{len(files)} images uploaded; a run from this page takes at most {MAX_IMAGES} "
                            "(run more with `python -m explainers batch FOLDER --out DIR`, then open DIR here)")
    if not methods or not targets:
        raise SaliencyError("pick at least one method and one target")
    root = new_run_folder()
    images = root / "images"
    images.mkdir()
    taken: set[str] = set()
    for file in files:
        check_image_size(file.size, file.name)
        (images / _safe_name(file.name, taken)).write_bytes(file.getvalue())
    labels_path = None
    if labels is not None:
        labels_path = root / "labels.csv"
        labels_path.write_bytes(labels.getvalue())
    out = root / "run"
    settings = Settings(model=model, methods=list(methods), targets=list(targets), preprocessing=preprocessing)
    batch.run(str(images), str(out), settings, engine="local", workers=0, bundle=bundle, progress=progress,
              labels=None if labels_path is None else str(labels_path))
    return str(out)


# ---- opening a row on Explore --------------------------------------------------------------------------------


def forget_filters() -> None:
    """Another run opened: its classes, methods and ranges differ, so the filters start afresh."""
    for key in [k for k in st.session_state if isinstance(k, str) and k.startswith(state.BATCH_FILTER + ".")]:
        del st.session_state[key]


def open_on_explore(run: Run, row: pd.Series) -> None:
    """Show ``row`` on Explore: its image, the run's model and preprocessing (set through the sidebar's pending
    keys, since its widgets are already drawn this run), the row's method, parameters and target class."""
    path = str(image_path(run, row["path"]))
    if not Path(path).is_file():
        raise SaliencyError(f"the image {md_escape(repr(path))} of this row is no longer there; it is needed to "
                            "explain it again")
    if user_models.get(run.model) is None and run.model not in model_choices():
        raise SaliencyError(f"the run's model {md_escape(repr(run.model))} is not available here: pick one of "
                            f"{', '.join(model_choices()[:5])}… or load your model on the Your model page")
    method = str(row["method"])
    user_models.select_next_run(run.model)
    st.session_state[state.PENDING_IMAGE] = path
    st.session_state[state.PENDING_PREPROCESSING] = run.preprocessing
    st.session_state[state.METHOD] = method
    st.session_state.pop(state.LAYER, None)  # batch maps are on the default layer
    info = METHODS.get(method)
    params = json.loads(row["params"]) if isinstance(row.get("params"), str) else {}
    for name, value in params.items():
        if info is not None and name in info.params:
            st.session_state[f"{state.PARAM}.{method}.{name}"] = value
    st.session_state[state.TARGET_MODE] = "Class"
    st.session_state[state.TARGET_CLASS] = int(row["target_index"])
    # the class stays: Explore resets its class choices only for an image other than this one
    st.session_state[state.TARGET_IMAGE] = row["image_hash"]
    st.switch_page(EXPLORE)
