"""Controls shared by the pages: target, method, layer and view. Every key comes from ui/state.py; the choices
come from the registry's flags and the model's layer catalogue, never from lists of names."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import streamlit as st

from explainers import METHODS, Contrast, MethodInfo, available_methods, method_order
from explainers import render as rnd
from explainers.layers import block_layers
from explainers.models import ModelBundle
from explainers.models.dense import ScoredBundle

from . import dense, state
from .predictions import top_k
from .widgets import cost_caption, param_widgets

TARGET_MODES = ("Predicted", "Runner-up", "Class", "Contrast")
TARGET_HELP = (
    "Predicted: the top class. Runner-up: the second. Class: any class (type to search; or click a bar). "
    "Contrast: why A rather than B — the map of score(A) − score(B)."
)
LAYER_SCOPES = ("blocks", "every module")


def class_label(bundle: ModelBundle, index: int) -> str:
    """ "tabby (281)"; a dense model's target as it is named ("#1 person 0.98")."""
    if isinstance(bundle, ScoredBundle):
        return bundle.categories[index]
    return f"{bundle.categories[index]} ({index})"


def target_noun(bundle: ModelBundle) -> str:
    """What a "class" of the bundle is to the user, capitalised: a class, a detected box, or a region."""
    return dense.target_noun(bundle).capitalize()


@dataclass(frozen=True)
class TargetChoice:
    """What to explain: ``value`` as explain() takes it (a class index or a Contrast), and its label."""

    value: Any
    label: str
    indices: tuple[int, ...]


@dataclass(frozen=True)
class TargetKeys:
    """The session keys of one target picker (Explore's, or the Text page's own: a text's target is not the
    image's), and whether its choice goes into the URL."""

    mode: str = state.TARGET_MODE
    class_: str = state.TARGET_CLASS
    a: str = state.CONTRAST_A
    b: str = state.CONTRAST_B
    scope: str = state.TARGET_IMAGE
    publish: bool = True
    chart: str = state.PREDICTIONS_CHART  # the predictions chart whose bars pick the class


EXPLORE_TARGET = TargetKeys()


def on_prediction_click(keys: TargetKeys = EXPLORE_TARGET) -> None:
    """Callback of a predictions chart (``keys.chart``): a clicked bar becomes the target class of the picker
    ``keys`` names (Explore's by default; ``functools.partial`` it with the Text page's keys)."""
    event = st.session_state.get(keys.chart)
    points = getattr(getattr(event, "selection", None), "points", None) or (event or {}).get("selection", {}).get(
        "points", []
    )
    if points:
        custom = points[0].get("customdata")
        index = custom[0] if isinstance(custom, (list, tuple)) else custom
        if index is not None:
            st.session_state[keys.mode] = "Class"
            st.session_state[keys.class_] = int(index)


def _preselect_for_image(scope: str, top1: int, top2: int, keys: TargetKeys = EXPLORE_TARGET) -> None:
    """Class and contrast choices start at the current image's top classes. A new ``scope`` resets them (a
    classifier's: the image; a dense selection's: the model and the picture, ``Selection.target_scope``, since box
    #3 of one is not box #3 of another); the first of a session keeps what a link restored."""
    previous = st.session_state.get(keys.scope)
    if previous == scope:
        return
    first = previous is None
    for key, value in ((keys.class_, top1), (keys.a, top1), (keys.b, top2)):
        if not first or key not in st.session_state:
            st.session_state[key] = value
    st.session_state[keys.scope] = scope


def target_picker(bundle: ModelBundle, probabilities: np.ndarray, scope: str,
                  keys: TargetKeys = EXPLORE_TARGET) -> TargetChoice | None:
    """The target mode and class(es); None when the choice cannot be explained (A and B the same class).
    ``keys``: whose picker it is (Explore's by default; the Text page has its own)."""
    # a dense model's targets keep the backend's order among ties; a classifier's ranking is numpy's default sort
    order = top_k(probabilities, 2, stable=isinstance(bundle, ScoredBundle))
    top1, top2 = order[0], order[-1]  # a detector may have found one box only
    classes = list(range(len(bundle.categories)))
    _preselect_for_image(scope, top1, top2, keys)
    for key in (keys.class_, keys.a, keys.b):
        if st.session_state.get(key) not in classes:
            st.session_state[key] = top1 if key != keys.b else top2
    if st.session_state.get(keys.mode) not in TARGET_MODES:
        st.session_state[keys.mode] = TARGET_MODES[0]
    publish = state.publish if keys.publish else (lambda **values: None)
    mode = st.segmented_control("Target", TARGET_MODES, key=keys.mode, persist_state=state.KEEP, required=True,
                                help=TARGET_HELP)
    publish(target=None if mode == TARGET_MODES[0] else mode)
    if mode == "Predicted":
        return TargetChoice(top1, bundle.categories[top1], (top1,))
    if mode == "Runner-up":
        return TargetChoice(top2, bundle.categories[top2], (top2,))
    if mode == "Class":
        index = st.selectbox(f"{target_noun(bundle)} (type to search)", classes, key=keys.class_,
                             persist_state=state.KEEP,
                             format_func=lambda i: class_label(bundle, i))
        publish(**{"class": index})
        return TargetChoice(int(index), bundle.categories[index], (int(index),))
    left, right = st.columns(2)
    a = left.selectbox("A", classes, key=keys.a, persist_state=state.KEEP,
                       format_func=lambda i: class_label(bundle, i))
    b = right.selectbox("B", classes, key=keys.b, persist_state=state.KEEP,
                        format_func=lambda i: class_label(bundle, i))
    publish(contrast=state.contrast_text(a, b))
    if a == b:
        st.warning("A and B are the same class; pick two different classes to contrast.")
        return None
    return TargetChoice(Contrast(int(a), int(b)), f"{bundle.categories[a]} vs {bundle.categories[b]}",
                        (int(a), int(b)))


def offered_methods(bundle: ModelBundle) -> list[str]:
    """The methods that can run on this model, in the Methods page's family order."""
    runnable = set(available_methods(bundle.model))
    return [name for name in method_order() if name in runnable]


def method_label(name: str) -> str:
    info = METHODS[name]
    return f"{info.family} · {info.display_name}"


def method_picker(bundle: ModelBundle) -> tuple[MethodInfo, dict[str, Any]]:
    """The method (only those that can run on this model) and its declared parameters."""
    names = offered_methods(bundle)
    if st.session_state.get(state.METHOD) not in names:
        st.session_state[state.METHOD] = "vanilla" if "vanilla" in names else names[0]
    method = st.selectbox("Method", names, key=state.METHOD, persist_state=state.KEEP, format_func=method_label,
                          help="Grouped by family, in the Methods page's order. Methods that cannot run on this "
                          "model (attention rollout on a CNN) are not listed.")
    state.publish(method=method)
    info = METHODS[method]
    params: dict[str, Any] = {}
    if info.params:
        with st.expander("Parameters", expanded=False):
            params = param_widgets(info)
    return info, params


def layer_choices(bundle: ModelBundle, scope: str) -> list[str]:
    """Layer names for a menu: the default first, then blocks (or every module) in forward order."""
    if scope == LAYER_SCOPES[0]:
        names = block_layers(bundle.model, bundle.layers, bundle.default_layer)
    else:
        names = [layer.name for layer in bundle.layers]
    return [bundle.default_layer] + [n for n in names if n != bundle.default_layer]


def layer_label(bundle: ModelBundle, name: str) -> str:
    entry = bundle.layer_entry(name)
    shape = "×".join(str(s) for s in entry.shape[1:]) if entry else "?"
    return f"{name} [{shape}]" + (" · default" if name == bundle.default_layer else "")


def layer_picker(bundle: ModelBundle, info: MethodInfo) -> str | None:
    """The layer a CAM method reads: blocks by default, every module on request, the default first."""
    if not info.needs_layer:
        return None
    current = st.session_state.get(state.LAYER)
    all_names = {layer.name for layer in bundle.layers}
    if current not in all_names:
        current = st.session_state[state.LAYER] = bundle.default_layer
    if st.session_state.get(state.LAYER_SCOPE) not in LAYER_SCOPES:
        # a link to a layer that is not a block opens the full list, so the layer is there
        st.session_state[state.LAYER_SCOPE] = (
            LAYER_SCOPES[0] if current in layer_choices(bundle, LAYER_SCOPES[0]) else LAYER_SCOPES[1])
    labels = {scope: f"{scope} ({len(layer_choices(bundle, scope))})" for scope in LAYER_SCOPES}
    if st.session_state.get(state.LAYER_SCOPE_LABELS) != labels:
        # the browser holds the radio's choice as its label ("blocks (23)"): once another model changes the
        # counts, no label matches and no option looks chosen. Setting the value again sends it afresh.
        st.session_state[state.LAYER_SCOPE] = st.session_state[state.LAYER_SCOPE]
        st.session_state[state.LAYER_SCOPE_LABELS] = labels
    left, right = st.columns([3, 2], vertical_alignment="bottom")
    scope = right.radio("Layers", LAYER_SCOPES, key=state.LAYER_SCOPE, persist_state=state.KEEP, horizontal=True,
                        format_func=labels.get)
    names = layer_choices(bundle, scope)
    if current not in names:
        st.session_state[state.LAYER] = bundle.default_layer
    layer = left.selectbox("Layer", names, key=state.LAYER, persist_state=state.KEEP,
                           format_func=lambda n: layer_label(bundle, n),
                           help="Spatial layers in forward order, with their output shapes; the default (the "
                           "last spatial block) first.")
    state.publish(layer=None if layer == bundle.default_layer else layer)
    return layer


def show_cost(bundle: ModelBundle, info: MethodInfo, params: dict[str, Any], layer: str | None,
              seconds: float | None = None) -> None:
    """The paper and the cost, once the layer (and so its channel count) is known; ``seconds`` the estimate on
    this machine (``ui.explanations.request_seconds``) where it is known."""
    entry = bundle.layer_entry(layer) if info.needs_layer else None
    st.caption(cost_caption(info, params, (bundle.input_size, bundle.input_size),
                            entry.channels if entry else None, seconds))


def _suggest_colormap(prefix: str) -> None:
    """on_change of the sign: signed maps switch to a diverging colormap, unsigned ones back to a sequential one
    when the current one no longer fits. The user can still pick any colormap afterwards."""
    sign = st.session_state[state.view_key(prefix, "sign")]
    key = state.view_key(prefix, "colormap")
    current = st.session_state.get(key)
    if (sign == "signed") != rnd.is_diverging(current or rnd.DEFAULT_SEQUENTIAL):
        st.session_state[key] = rnd.suggested_colormap(sign)


def _colormap_label(name: str) -> str:
    group = rnd.colormap_group(name)
    return {"perceptual": f"{name} · perceptually uniform", "rainbow": f"{name} · rainbow (see note)",
            "diverging": f"{name} · diverging"}.get(group, name)


def view_controls(channels: int | None, prefix: str = state.VIEW) -> rnd.View:
    """Sign, colormap, channel reduction, alpha, clip and aspect: all re-render only, never recompute.

    ``channels`` is the method's attribution channel count (1 for maps, None for gradients: the input's).
    """
    keys = {name: state.view_key(prefix, name) for name in ("sign", "colormap", "reduction", "alpha", "clip",
                                                             "aspect")}
    defaults = {"sign": "absolute", "colormap": rnd.DEFAULT_SEQUENTIAL, "reduction": "max", "alpha": 0.5,
                "clip": rnd.DEFAULT_CLIP_PERCENTILE, "aspect": True}
    for name, default in defaults.items():
        st.session_state.setdefault(keys[name], default)
    one_channel = channels == 1
    left, middle, right = st.columns(3)
    sign = left.selectbox("Sign", rnd.SIGNS, key=keys["sign"], persist_state=state.KEEP, on_change=_suggest_colormap,
                          args=(prefix,),
                          help="absolute: |map|. positive / negative: one side only (negative shows the size of "
                          "the evidence against). signed: both, on a diverging colormap centred at zero.")
    colormap = middle.selectbox("Colormap", rnd.COLORMAPS, key=keys["colormap"], persist_state=state.KEEP,
                                format_func=_colormap_label,
                                help="Perceptually uniform maps first; diverging maps for signed views.")
    reduction = right.selectbox(
        "Channel reduction", rnd.REDUCTIONS, key=keys["reduction"], persist_state=state.KEEP, disabled=one_channel,
        help="How a 3-channel (RGB) attribution becomes one map, after the sign: max (the channel of largest "
        "magnitude; with absolute this is Simonyan's max|g|), sum, or l2 (the norm)."
        + (" Not used: this method returns a single-channel map." if one_channel else ""),
    )
    left, middle, right = st.columns(3)
    alpha = left.slider("Overlay alpha", 0.0, 1.0, step=0.05, key=keys["alpha"], persist_state=state.KEEP)
    clip = middle.slider("Percentile clip", 90.0, 100.0, step=0.1, key=keys["clip"], persist_state=state.KEEP,
                         help="Values above this percentile saturate the colormap.")
    original_aspect = right.toggle("Original aspect", key=keys["aspect"], persist_state=state.KEEP,
                                   help="On: the map is drawn on the image as uploaded, with its own size and "
                                   "aspect. Off: on the square picture the model sees.")
    if rnd.colormap_group(colormap) == "rainbow":
        st.caption(rnd.RAINBOW_NOTE)
    elif sign == "signed" and not rnd.is_diverging(colormap):
        st.caption("Signed maps read best on a diverging colormap (e.g. RdBu_r), where zero is neutral.")
    return rnd.View(sign=sign, reduction=reduction, clip=float(clip), colormap=colormap, alpha=float(alpha),
                    original_aspect=bool(original_aspect))
