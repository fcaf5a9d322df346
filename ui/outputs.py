"""Drawing a result: original | heatmap | overlay, plus downloads. Everything here re-renders from raw numbers
through the backend's one render pipeline, and writes the backend's one manifest."""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
import streamlit as st

from explainers import METHODS, ExplanationRecord, MethodInfo
from explainers import render as rnd
from explainers.dense.records import dense_predictions, describe_target
from explainers.manifest import explanation_manifest

from . import state
from .caches import ByteLRU
from .dense import target_noun, target_outline
from .figures import heatmap_figure, panel_size

# The left panel's encoded picture per image and geometry: at most a display-sized PNG (a few MB) each.
BACKDROP_MAX_BYTES = 64 * 2**20


def render_record(record: ExplanationRecord, view: rnd.View, selection,
                  fixed_range: tuple[float, float] | None = None) -> rnd.Rendered:
    """A record on the picture the view asks for (the uploaded image, or the model's square view), a region
    method's superpixels outlined on the overlay, and a dense model's explained box or region (a contrast: its
    first side) outlined in cyan."""
    return rnd.render_for_image(record.attribution, view, image=selection.image, bundle=selection.bundle,
                                preprocessing=selection.preprocessing, fixed_range=fixed_range,
                                regions=record.regions, target=target_outline(selection.bundle, record.target))


def backdrop(selection, view: rnd.View):
    """The picture a panel is drawn on: the image as uploaded, or what the model sees."""
    return selection.image if view.original_aspect else selection.model_view


def png_bytes(array: Any) -> bytes:
    buffer = io.BytesIO()
    rnd.to_pil(array).save(buffer, format="PNG")
    return buffer.getvalue()


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array, dtype=np.float32))
    return buffer.getvalue()


def manifest_for(record: ExplanationRecord, rendered: rnd.Rendered, selection, *, scale: str = "own",
                 files: dict[str, str] | None = None, role: str | None = None) -> dict[str, Any]:
    """The backend manifest, filled in with what the dashboard knows about the image and model. A dense
    selection's records, as the CLI's: ``dense_target`` the box (in the original image's pixels) or region the map
    explains (a contrast: its first side), and ``predictions`` the model's own detections or predicted classes,
    not a softmax across the targets."""
    dense = {}
    if getattr(selection, "dense", None) is not None and record.target:
        geometry = selection.dense.crop_geometry(selection.image_size, selection.preprocessing)
        target = selection.bundle.dense_targets[int(record.target[0])]
        dense = {"dense_target": describe_target(selection.dense, target, geometry),
                 "predictions": dense_predictions(selection.dense, selection.prediction, geometry)}
    return explanation_manifest(
        record, image_name=selection.image_name, image_hash=selection.image_hash, image_size=selection.image_size,
        model=selection.model, preprocessing=selection.preprocessing, categories=selection.bundle.categories,
        view=rendered.view, value_range=(rendered.lo, rendered.hi), scale=scale, files=files,
        device=str(selection.bundle.device), role=role, **dense,
    )


def target_text(selection, record: ExplanationRecord) -> str:
    names = [selection.bundle.categories[t] for t in record.target]
    return " vs ".join(names)


def panel_title(selection, record: ExplanationRecord) -> str:
    """ "Grad-CAM · tabby · layer4", or "Eigen-CAM · class-agnostic · layer4" where the target cannot matter."""
    title = METHODS[record.method].title(target_text(selection, record))
    return f"{title} · {record.layer}" if record.layer else title


def _number(value: Any) -> float:
    """An extra's value as one float (a one-row list or array included); NaN where it is none."""
    try:
        flat = np.ravel(np.asarray(value, dtype=np.float64))
    except (TypeError, ValueError):
        return float("nan")
    return float(flat[0]) if flat.size else float("nan")


def _share_of_gap(name: str, value: float, gap: float, hint: str = "") -> str:
    """"completeness error 0.3% of f(x) − f(baseline) = 4.2", or the raw value where the gap is about zero."""
    if not np.isfinite(gap) or abs(gap) < 1e-12:
        return f"{name} {value:.3g} (f(x) − f(baseline) ≈ 0)"
    share = abs(value) / abs(gap)
    return f"{name} {share:.1%} of f(x) − f(baseline) = {gap:.3g}{hint if share > 0.05 else ''}"


LOW_FIT_R2 = 0.3  # under this the surrogate explains little of the score's variation: say so


def fit_parts(extras: dict[str, Any], info: MethodInfo | None = None, hints: bool = True) -> list[str]:
    """What a record's extras say about how well its map accounts for the score, one caption part each, chosen by
    the keys present (never by the method): a path method's completeness (``completeness_delta`` with
    ``score_gap``), an efficiency gap (``efficiency_gap``, a share of ``score_gap`` where given), a surrogate's
    fit (``fit_r2``), a propagation's conservation (``conservation``: input relevance / the relevance put
    into the output) and an
    extremal mask's area and scores (``mask_area``, ``preserved_score``, ``deleted_score``).

    ``info``, the record's method, names the surrogate in its fit and the parameter that sets its steps in the
    hint on a large completeness error (its cost's ``steps``); ``hints=False`` leaves the hints out (compact
    captions)."""
    steps = info.cost.steps if info is not None and isinstance(info.cost.steps, str) else None
    gap = _number(extras.get("score_gap"))
    parts = []
    if "completeness_delta" in extras:
        parts.append(_share_of_gap("completeness error", _number(extras["completeness_delta"]), gap,
                                   f" — raise {steps} to shrink it" if hints and steps else ""))
    if "efficiency_gap" in extras:
        efficiency = _number(extras["efficiency_gap"])
        if np.isfinite(efficiency):
            parts.append(_share_of_gap("efficiency gap", efficiency, gap) if "score_gap" in extras
                         else f"efficiency gap {efficiency:.3g}")
    fit = _number(extras.get("fit_r2"))
    if np.isfinite(fit):
        low = " — a poor fit: its weights explain little of the score" if hints and fit < LOW_FIT_R2 else ""
        parts.append(f"{info.display_name + ' ' if info is not None else ''}fit R² {fit:.2f}{low}")
    conservation = _number(extras.get("conservation"))
    if np.isfinite(conservation):
        parts.append(f"input relevance is {conservation:.0%} of the relevance at the output (biases and ε keep the "
                     "rest)" if hints else f"input relevance {conservation:.0%} of the output's")
    area = _number(extras.get("mask_area"))
    if np.isfinite(area):
        parts.append(f"mask area {area:.0%} of the image")
    for key, label in (("preserved_score", "score with only the mask kept"),
                       ("deleted_score", "score with the mask deleted")):
        value = _number(extras.get(key))
        if np.isfinite(value):
            parts.append(f"{label} {value:.3g}")
    return parts


def fit_text(record: ExplanationRecord) -> str:
    """:func:`fit_parts` of a record, each after " · " (the way captions join their parts), "" for none."""
    return "".join(f" · {part}" for part in fit_parts(record.extras, METHODS.get(record.method)))


@st.cache_resource(show_spinner=False)
def _backdrops() -> ByteLRU:
    return ByteLRU(BACKDROP_MAX_BYTES)


def _backdrop_png(selection, view: rnd.View) -> bytes:
    """The left panel's picture, encoded once per image and geometry rather than on every rerun (the original is
    the display-sized copy the selection holds, never the full-resolution upload)."""
    key = (selection.image_hash, "original") if view.original_aspect else (
        selection.image_hash, selection.model, selection.preprocessing)
    return _backdrops().get_or_compute(key, lambda: png_bytes(np.asarray(backdrop(selection, view).convert("RGB"))))


def download_stem(image_name: str, record: ExplanationRecord) -> str:
    """A download's file name without its suffix: the image, the method, the target (class index, or "a-vs-b") and
    the layer where the method has one, e.g. ``cat_gradcam_285_features.8``, so two downloads never collide."""
    target = "-vs-".join(str(index) for index in record.target)
    parts = [image_name.rsplit(".", 1)[0], record.method, target, *([record.layer] if record.layer else [])]
    return "_".join("".join(c if c.isalnum() or c in "-._" else "-" for c in part) for part in parts)


def show_result(record: ExplanationRecord, from_cache: bool, *, view: rnd.View, selection) -> None:
    rendered = render_record(record, view, selection)
    original, heat, over = st.columns(3)
    size = selection.bundle.input_size
    # the three panels share one size (the heatmap figure's height follows the same rule), whatever the aspect
    width = panel_size(rendered.values.shape)[0]
    original.image(_backdrop_png(selection, view), width=width,
                   caption="Original" if view.original_aspect else f"Model input ({size}×{size})")
    with heat:
        st.plotly_chart(heatmap_figure(rendered, title=panel_title(selection, record)), key=state.HEATMAP_CHART,
                        config={"displaylogo": False})
    # JPEG for the on-screen overlay: several times quicker to encode and send than PNG on every view change
    opacity = f"alpha {view.alpha:.2f} × |value|" if view.signed else f"alpha {view.alpha:.2f}"
    outlined = ", superpixels outlined" if record.regions is not None else ""
    if selection.dense is not None:
        outlined += f", the explained {target_noun(selection)} in cyan"
    over.image(rendered.image, caption=f"Overlay ({opacity}{outlined})", width=width, output_format="JPEG")
    source = "cached" if from_cache else f"computed in {record.elapsed_s:.2f} s"
    empty = " · nothing to show for this sign: the map is zero everywhere" if rendered.empty else ""
    st.caption(f"Raw range [{rendered.lo:.3g}, {rendered.hi:.3g}] after the {view.clip:g}th-percentile clip · "
               f"{source}{fit_text(record)}{empty}")
    for note in getattr(record, "notes", ()):  # what the backend wants the user told: flat input, zero map, ...
        st.info(note, icon=":material/info:")
    stem = download_stem(selection.image_name, record)
    files = {"overlay": f"{stem}.png", "attribution": f"{stem}.npy", "manifest": f"{stem}.json"}
    # the files are built only when clicked (callables), so a view change does not pay for encoding them
    a, b, c = st.columns(3)
    a.download_button("Overlay PNG", lambda: png_bytes(rendered.image), files["overlay"], "image/png",
                      key=state.DOWNLOAD_PNG, on_click="ignore")
    b.download_button("Raw attribution .npy", lambda: npy_bytes(record.attribution), files["attribution"],
                      "application/octet-stream", key=state.DOWNLOAD_NPY, on_click="ignore")
    c.download_button("Manifest JSON",
                      lambda: json.dumps(manifest_for(record, rendered, selection, files=files), indent=2,
                                         allow_nan=False),
                      files["manifest"], "application/json", key=state.DOWNLOAD_JSON, on_click="ignore")
