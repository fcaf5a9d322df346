"""Drawing a result: original | heatmap | overlay, plus downloads. Everything here re-renders from raw numbers."""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
import streamlit as st
import torch

from explainers import render as rnd

from .controls import ViewSettings, describe_target
from .explanations import ExplanationResult
from .figures import heatmap_figure

MAGNITUDE_REDUCTIONS = ("max_abs", "sum_abs", "l2")


def effective_reduction(view: ViewSettings) -> str:
    """A signed view needs a signed reduction; magnitudes would hide every negative value."""
    return "sum" if view.sign == "signed" and view.reduction in MAGNITUDE_REDUCTIONS else view.reduction


def render_result(result: ExplanationResult, view: ViewSettings, selection) -> tuple[rnd.RenderedMap, np.ndarray]:
    """(rendered map, overlay uint8) in the geometry the view asks for."""
    reduced = rnd.reduce_channels(result.attribution, effective_reduction(view))
    image = selection.image if view.original_aspect else selection.bundle.model_view(selection.image,
                                                                                      selection.preprocessing)
    if view.original_aspect:
        reduced = selection.bundle.to_original(reduced, selection.image.size, selection.preprocessing, fill=0.0)
    rendered = rnd.render(reduced, reduction="sum", sign=view.sign, colormap=view.colormap,
                          clip_percentile=view.clip)
    return rendered, rnd.overlay(image, rendered.rgb, view.alpha)


def manifest(result: ExplanationResult, selection, view: ViewSettings, probabilities: np.ndarray) -> dict[str, Any]:
    bundle = selection.bundle
    order = np.argsort(-probabilities)[:5]
    return {
        "image": selection.image_name,
        "image_sha256_16": selection.image_hash,
        "model": selection.model,
        "preprocessing": selection.preprocessing,
        "method": result.method,
        "params": result.params,
        "target": list(result.target),
        "target_names": [bundle.categories[t] for t in result.target],
        "layer": result.layer,
        "elapsed_s": round(result.elapsed_s, 4),
        "extras": result.extras,
        "predictions": [
            {"index": int(i), "name": bundle.categories[i], "probability": float(probabilities[i])} for i in order
        ],
        "view": {**view.__dict__, "reduction": effective_reduction(view)},
        "torch": torch.__version__,
    }


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    rnd.to_pil(array).save(buffer, format="PNG")
    return buffer.getvalue()


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array.astype(np.float32))
    return buffer.getvalue()


@st.cache_data(show_spinner=False, max_entries=32)
def _cached_png(key: tuple, _image) -> bytes:
    return png_bytes(np.asarray(_image))


def _original_png(selection, original_aspect: bool) -> bytes:
    """The left panel's picture, encoded once per image and geometry rather than on every rerun."""
    if original_aspect:
        return _cached_png((selection.image_hash, "original"), selection.image)
    view = selection.bundle.model_view(selection.image, selection.preprocessing)
    return _cached_png((selection.image_hash, selection.model, selection.preprocessing), view)


def show_result(result: ExplanationResult, from_cache: bool, *, view: ViewSettings, selection,
                probabilities: np.ndarray) -> None:
    rendered, overlaid = render_result(result, view, selection)
    original, heat, over = st.columns(3)
    original.image(_original_png(selection, view.original_aspect), caption="Original", width="stretch")
    with heat:
        title = f"{result.method} · {describe_target(selection.bundle, result.target_value)}"
        st.plotly_chart(heatmap_figure(rendered, title=title), key="heatmap_chart", config={"displaylogo": False})
    # JPEG for the on-screen overlay: several times quicker to encode and send than PNG on every view change
    over.image(overlaid, caption=f"Overlay (alpha {view.alpha:.2f})", width="stretch", output_format="JPEG")
    source = "cached" if from_cache else f"computed in {result.elapsed_s:.2f} s"
    extras = ""
    if "completeness_delta" in result.extras:
        extras = f" · completeness delta {float(np.ravel(result.extras['completeness_delta'])[0]):.3g}"
    st.caption(f"Raw range [{rendered.lo:.3g}, {rendered.hi:.3g}] after the {view.clip:g}th-percentile clip · "
               f"{source}{extras}")
    stem = f"{selection.image_name.rsplit('.', 1)[0]}_{result.method}"
    # the files are built only when clicked (callables), so a view change does not pay for encoding them
    a, b, c = st.columns(3)
    a.download_button("Overlay PNG", lambda: png_bytes(overlaid), f"{stem}.png", "image/png", key="dl_png",
                      on_click="ignore")
    b.download_button("Raw attribution .npy", lambda: npy_bytes(result.attribution), f"{stem}.npy",
                      "application/octet-stream", key="dl_npy", on_click="ignore")
    c.download_button("Manifest JSON",
                      lambda: json.dumps(manifest(result, selection, view, probabilities), indent=2),
                      f"{stem}.json", "application/json", key="dl_json", on_click="ignore")
