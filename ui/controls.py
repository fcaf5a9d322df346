"""Controls shared by the pages: target, method, layer and view settings, all keyed in session state."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import streamlit as st

from explainers import METHODS, MethodInfo
from explainers import render as rnd
from explainers.models import ModelBundle

from .widgets import cost_caption, param_widgets

TARGET_MODES = ("Predicted", "Runner-up", "Class", "Contrast")
TARGET_HELP = (
    "Predicted: the top class. Runner-up: the second. Class: any class (type to search; or click a bar). "
    "Contrast: why A rather than B — the map of score(A) − score(B)."
)


def class_label(bundle: ModelBundle, index: int) -> str:
    return f"{bundle.categories[index]} ({index})"


def _select_class(index: int) -> None:
    st.session_state["target_mode"] = "Class"
    st.session_state["target_class"] = index


def on_prediction_click() -> None:
    """Callback of the predictions chart: a clicked bar becomes the target class."""
    event = st.session_state.get("predictions_chart")
    points = getattr(getattr(event, "selection", None), "points", None) or (event or {}).get("selection", {}).get(
        "points", []
    )
    if points:
        point = points[0]
        custom = point.get("customdata")
        index = custom[0] if isinstance(custom, (list, tuple)) else custom
        if index is not None:
            _select_class(int(index))


def target_picker(bundle: ModelBundle, probabilities: np.ndarray) -> Any:
    """The target to explain: an int class index, or a pair (a, b) for a contrast."""
    order = np.argsort(-probabilities)
    top1, top2 = int(order[0]), int(order[1])
    classes = list(range(len(bundle.categories)))
    mode = st.segmented_control("Target", TARGET_MODES, default="Predicted", key="target_mode",
                                bind="query-params", required=True, help=TARGET_HELP)
    if st.session_state.get("target_class") not in classes:
        st.session_state["target_class"] = top1
    if mode == "Predicted":
        target = top1
    elif mode == "Runner-up":
        target = top2
    elif mode == "Class":
        target = st.selectbox("Class (type to search)", classes, key="target_class", bind="query-params",
                              format_func=lambda i: class_label(bundle, i))
    else:
        left, right = st.columns(2)
        if st.session_state.get("contrast_a") not in classes:
            st.session_state["contrast_a"] = top1
        if st.session_state.get("contrast_b") not in classes:
            st.session_state["contrast_b"] = top2
        a = left.selectbox("A", classes, key="contrast_a", format_func=lambda i: class_label(bundle, i))
        b = right.selectbox("B", classes, key="contrast_b", format_func=lambda i: class_label(bundle, i))
        if a == b:
            st.warning("A and B are the same class; pick two different classes to contrast.")
            return None
        target = (int(a), int(b))
    return target


def describe_target(bundle: ModelBundle, target: Any) -> str:
    if isinstance(target, tuple):
        return f"{bundle.categories[target[0]]} vs {bundle.categories[target[1]]}"
    return bundle.categories[int(target)]


def method_names(family_filter=None) -> list[str]:
    names = [n for n, info in METHODS.items() if family_filter is None or family_filter(info)]
    families = list(dict.fromkeys(METHODS[n].family for n in names))
    return sorted(names, key=lambda n: (families.index(METHODS[n].family), list(METHODS).index(n)))


def method_picker(default: str = "vanilla") -> tuple[MethodInfo, dict[str, Any]]:
    names = method_names()
    method = st.selectbox(
        "Method", names, index=names.index(default) if default in names else 0, key="method", bind="query-params",
        format_func=lambda n: f"{METHODS[n].family} · {METHODS[n].display_name}",
        help="Grouped by family. Parameters below come from the method's own declaration.",
    )
    info = METHODS[method]
    params = {}
    if info.params:
        with st.expander("Parameters", expanded=False):
            params = param_widgets(info)
    st.caption(cost_caption(info, params))
    return info, params


def layer_picker(bundle: ModelBundle, info: MethodInfo) -> str | None:
    if not info.needs_layer:
        return None
    names = [layer.name for layer in bundle.layers]
    shapes = {layer.name: "×".join(str(s) for s in layer.shape[1:]) for layer in bundle.layers}
    if st.session_state.get("layer") not in names:
        st.session_state["layer"] = bundle.default_layer

    def label(name: str) -> str:
        return f"{name} [{shapes[name]}]" + (" · default" if name == bundle.default_layer else "")

    return st.selectbox("Layer", names, key="layer", bind="query-params", format_func=label,
                        help="Spatial layers in forward order, with their output shapes. The default is the last "
                        "spatial block.")


@dataclass(frozen=True)
class ViewSettings:
    colormap: str
    sign: str
    reduction: str
    alpha: float
    clip: float
    original_aspect: bool


def view_controls(channels: int = 3, key_prefix: str = "view") -> ViewSettings:
    """Colormap, sign, channel reduction, alpha, clip and aspect: all re-render only, never recompute."""
    left, middle, right = st.columns(3)
    sign = left.selectbox("Sign", rnd.SIGNS, key=f"{key_prefix}.sign",
                          help="absolute: |map|; positive / negative: one side only; signed: both, on a diverging "
                          "colormap.")
    suggested = rnd.suggested_colormap(sign)
    colormaps = list(rnd.COLORMAPS)
    colormap = middle.selectbox(
        "Colormap", colormaps, key=f"{key_prefix}.colormap", index=colormaps.index(suggested),
        format_func=lambda c: c + (" (diverging)" if rnd.is_diverging(c) else "") + (" ★" if c == suggested else ""),
        help="★ marks the suggestion for the chosen sign: diverging (red-white-blue) for signed maps.",
    )
    reduction = right.selectbox(
        "Channel reduction", rnd.REDUCTIONS, key=f"{key_prefix}.reduction", disabled=channels == 1,
        help="How the three colour channels of a gradient become one map: max|g| (Simonyan), max of positive g, "
        "sum, sum|g| or L2 norm." + (" Not used: this method returns a single-channel map." if channels == 1 else ""),
    )
    left, middle, right = st.columns(3)
    alpha = left.slider("Overlay alpha", 0.0, 1.0, 0.5, 0.05, key=f"{key_prefix}.alpha")
    clip = middle.slider("Percentile clip", 90.0, 100.0, rnd.DEFAULT_CLIP_PERCENTILE, 0.1,
                         key=f"{key_prefix}.clip", help="Values above this percentile saturate the colormap.")
    original_aspect = right.toggle("Original aspect", value=True, key=f"{key_prefix}.aspect",
                                   help="Map the heatmap back onto the uploaded image's own size and aspect.")
    if sign == "signed" and not rnd.is_diverging(colormap):
        st.caption("Tip: signed maps read best on the diverging colormap (rdbu), centred at zero.")
    return ViewSettings(colormap, sign, reduction, alpha, clip, original_aspect)
