"""The Compare grid: methods × targets, linked or per-panel colour scales, differences, agreement, layer sweep."""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import streamlit as st

from explainers import METHODS, agreement
from explainers import render as rnd

from .controls import ViewSettings, class_label, method_names, view_controls
from .explanations import ExplanationResult, explain_cached
from .outputs import effective_reduction, npy_bytes, png_bytes
from .predictions import top_k
from .sidebar import Selection

DEFAULT_METHODS = ["vanilla", "smoothgrad", "integrated_gradients", "gradcam", "scorecam", "occlusion"]
PER_PANEL = "Per panel"
LINKED = "Linked per method row (raw units)"


@dataclass
class CompareSettings:
    methods: list[str]
    targets: list[int]  # first the predicted class, then the runner-up, then any added classes
    scale: str
    difference: bool
    panel_kind: str
    view: ViewSettings
    labels: dict[int, str] = field(default_factory=dict)


def compare_controls(selection: Selection, probs: np.ndarray) -> CompareSettings:
    bundle = selection.bundle
    top1, top2 = top_k(probs, 2)
    names = method_names()
    methods = st.multiselect(
        "Methods (rows)", names, default=[m for m in DEFAULT_METHODS if m in names], key="compare.methods",
        format_func=lambda n: METHODS[n].display_name, persist_state="session",
        help="Each row is one method with its default parameters; CAM methods use the model's default layer.",
    )
    classes = list(range(len(bundle.categories)))
    extra = st.multiselect(
        "Add target columns", [c for c in classes if c not in (top1, top2)], key="compare.extra_targets",
        format_func=lambda i: class_label(bundle, i), max_selections=4,
        help="Columns are the predicted class and the runner-up; add up to four more classes.",
    )
    left, middle, right = st.columns(3)
    scale = left.radio("Colour scale", [PER_PANEL, LINKED], key="compare.scale", persist_state="session",
                       help="Per panel: each map fills the colormap. Linked: one raw-unit scale per method row, "
                       "so the columns can be compared by strength.")
    difference = middle.toggle("Difference column (predicted − runner-up)", value=True, key="compare.difference")
    panel_kind = right.radio("Panels show", ["Overlay", "Heatmap"], key="compare.panel_kind", horizontal=True)
    with st.expander("View", expanded=False):
        view = view_controls(channels=3, key_prefix="compare.view")
    targets = [top1, top2, *[int(c) for c in extra]]
    labels = {t: class_label(bundle, t) for t in targets}
    return CompareSettings(methods, targets, scale, difference, panel_kind, view, labels)


def _compute(selection: Selection, method: str, target: Any, layer: str | None = None,
             show_progress: bool = True) -> tuple[ExplanationResult, bool]:
    label = None
    if show_progress:
        label = f"{METHODS[method].display_name} · {selection.bundle.categories[target]}"
    return explain_cached(selection.bundle, selection.image_hash, selection.preprocessing, selection.inputs,
                          method, {}, target, layer, progress_label=label)


def reduced(result: ExplanationResult, view: ViewSettings) -> np.ndarray:
    """The raw map a panel shows: channels reduced, sign mode applied (before any colour)."""
    return rnd.apply_sign(rnd.reduce_channels(result.attribution, effective_reduction(view)), view.sign)


def _panel_image(values: np.ndarray, selection: Selection, view: ViewSettings, kind: str,
                 fixed_range=None, sign: str | None = None, colormap: str | None = None) -> tuple[np.ndarray, Any]:
    rendered = rnd.render(values, reduction="sum", sign=sign or view.sign, colormap=colormap or view.colormap,
                          clip_percentile=view.clip, fixed_range=fixed_range)
    if kind == "Heatmap":
        return rendered.rgb, rendered
    picture = selection.bundle.model_view(selection.image, selection.preprocessing)
    return rnd.overlay(picture, rendered.rgb, view.alpha), rendered


def colorbar_strip(colormap: str, signed: bool, width: int = 240, height: int = 12) -> np.ndarray:
    ramp = np.linspace(-1 if signed else 0, 1, width, dtype=np.float32)
    if signed and not rnd.is_diverging(colormap):
        ramp = (ramp + 1) / 2
    return np.repeat(rnd.colorize(ramp[None, :], colormap), height, axis=0)


def draw_grid(selection: Selection, settings: CompareSettings) -> dict[tuple[str, int], ExplanationResult]:
    """Fill the grid panel by panel (row by row when scales are linked); cached panels appear at once."""
    view = settings.view
    results: dict[tuple[str, int], ExplanationResult] = {}
    columns = len(settings.targets) + (1 if settings.difference else 0)
    header = st.columns([1.2] + [1] * columns)
    header[0].markdown("**Method**")
    for i, target in enumerate(settings.targets):
        role = "predicted" if i == 0 else "runner-up" if i == 1 else "added"
        header[i + 1].markdown(f"**{settings.labels[target]}**  \n:gray[{role}]")
    total = len(settings.methods) * len(settings.targets)
    overall = st.progress(0.0, text=f"0/{total} panels") if total else None
    done = 0
    linked = settings.scale == LINKED
    for method in settings.methods:
        info = METHODS[method]
        cells = st.columns([1.2] + [1] * columns)
        cells[0].markdown(f"**{info.display_name}**  \n:gray[{info.family}]")
        slots = [cell.empty() for cell in cells[1:]]
        row_values = []
        for column, target in enumerate(settings.targets):
            with slots[column].container():
                result, _ = _compute(selection, method, target)
            results[(method, target)] = result
            values = reduced(result, view)
            row_values.append(values)
            if not linked:
                image, rendered = _panel_image(values, selection, view, settings.panel_kind)
                slots[column].image(image, caption=f"[{rendered.lo:.3g}, {rendered.hi:.3g}]", width="stretch")
            done += 1
            overall.progress(done / total, text=f"{done}/{total} panels")
        if linked:
            signed = view.sign == "signed"
            lo, hi = rnd.value_range(row_values, view.clip, signed=signed)
            for column, values in enumerate(row_values):
                image, _ = _panel_image(values, selection, view, settings.panel_kind, fixed_range=(lo, hi))
                slots[column].image(image, width="stretch")
            cells[0].image(colorbar_strip(view.colormap, signed), width="stretch")
            cells[0].caption(f"linked scale: {lo:.3g} … {hi:.3g} (raw)")
        if settings.difference:
            first, second = settings.targets[:2]
            delta = (rnd.reduce_channels(results[(method, first)].attribution, effective_reduction(view))
                     - rnd.reduce_channels(results[(method, second)].attribution, effective_reduction(view)))
            image, rendered = _panel_image(delta, selection, view, settings.panel_kind, sign="signed",
                                           colormap="rdbu")
            slots[-1].image(image, caption=f"±{rendered.hi:.3g} (raw)", width="stretch")
    if overall is not None:
        overall.empty()
    if settings.difference and settings.methods:
        logits = next(iter(results.values())).logits
        first, second = settings.targets[:2]
        margin = float(logits[first] - logits[second])
        header[-1].markdown(f"**Difference**  \n:gray[logit margin {margin:.2f}]")
    st.caption(f"Colour scale: **{settings.scale}**. Difference column: predicted minus runner-up on the diverging "
               "rdbu colormap (red: more evidence for the predicted class).")
    return results


def agreement_figure(results: dict[tuple[str, int], ExplanationResult], methods: list[str], target: int,
                     view: ViewSettings, metric: str):
    import plotly.graph_objects as go

    maps = {}
    for method in methods:
        values = rnd.reduce_channels(results[(method, target)].attribution, effective_reduction(view))
        maps[METHODS[method].display_name] = np.abs(values)[::4, ::4]  # magnitudes, 56x56 keeps it quick
    names, rho, iou = agreement.agreement_matrix(maps, fraction=0.1)
    matrix = rho if metric == "spearman" else iou
    figure = go.Figure(go.Heatmap(
        z=matrix, x=names, y=names, zmin=-1 if metric == "spearman" else 0, zmax=1,
        colorscale=rnd.plotly_colorscale("rdbu") if metric == "spearman" else rnd.plotly_colorscale("viridis"),
        text=np.round(matrix, 2), texttemplate="%{text}", hovertemplate="%{y} vs %{x}: %{z:.3f}<extra></extra>",
    ))
    figure.update_layout(height=120 + 45 * len(names), margin=dict(l=0, r=0, t=10, b=0))
    figure.update_yaxes(autorange="reversed")
    return figure


def export_zip(results: dict[tuple[str, int], ExplanationResult], selection: Selection, settings: CompareSettings
               ) -> bytes:
    buffer = io.BytesIO()
    manifest: dict[str, Any] = {
        "image": selection.image_name, "image_sha256_16": selection.image_hash, "model": selection.model,
        "preprocessing": selection.preprocessing, "scale": settings.scale, "view": settings.view.__dict__,
        "panels": [],
    }
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for (method, target), result in results.items():
            stem = f"{method}__{target}_{selection.bundle.categories[target].replace(' ', '_').replace('/', '_')}"
            image, rendered = _panel_image(reduced(result, settings.view), selection, settings.view,
                                           settings.panel_kind)
            archive.writestr(f"{stem}.png", png_bytes(image))
            archive.writestr(f"{stem}.npy", npy_bytes(result.attribution))
            manifest["panels"].append({
                "method": method, "target": target, "target_name": selection.bundle.categories[target],
                "params": result.params, "layer": result.layer, "elapsed_s": result.elapsed_s,
                "range_raw": [rendered.lo, rendered.hi], "files": [f"{stem}.png", f"{stem}.npy"],
            })
        archive.writestr("manifest.json", json.dumps(manifest, indent=2, default=str))
    return buffer.getvalue()


def sweep_layers(selection: Selection, scope: str) -> list[str]:
    bundle = selection.bundle
    if scope == "every layer":
        return [layer.name for layer in bundle.layers]
    modules = dict(bundle.model.named_modules())
    # blocks: catalogue entries that are containers (or top-level leaves), i.e. what a reader calls a stage
    return [layer.name for layer in bundle.layers
            if any(True for _ in modules[layer.name].children()) or "." not in layer.name]


def draw_layer_sweep(selection: Selection, method: str, target: int, layers: list[str], view: ViewSettings) -> None:
    bar = st.progress(0.0, text=f"0/{len(layers)} layers")
    images, captions = [], []
    for i, layer in enumerate(layers):
        result, _ = _compute(selection, method, target, layer, show_progress=False)
        image, _ = _panel_image(reduced(result, view), selection, view, "Heatmap")
        images.append(image)
        captions.append(layer)
        bar.progress((i + 1) / len(layers), text=f"{i + 1}/{len(layers)} layers")
    bar.empty()
    st.image(images, caption=captions, width=96)

