"""Compare on the Text page: methods × targets, the text repeated in every panel (each on its own colour range,
or one range per method row), and the agreement matrix between the maps (``explainers.trust.agreement``)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import streamlit as st

from explainers import METHODS
from explainers import render as rnd
from explainers.text import TokenBundle, TokenMap, TokenView
from explainers.text.render import shown_values
from explainers.trust import agreement

from . import state
from .figures import matrix_figure
from .text import (
    canonical,
    digest,
    draw_map,
    linked_range,
    maps_cancellable,
    method_label,
)
from .text_models import TextModel

PER_PANEL = "Per panel"
LINKED = "Linked per method row (raw units)"
SCALES = (PER_PANEL, LINKED)
MAX_EXTRA_TARGETS = 3
# The share of tokens whose overlap the IoU counts: a sentence has a dozen tokens, so 10% would be one token.
TOP_FRACTION = 0.2


def column_targets(model: TextModel, probs: np.ndarray) -> list[int]:
    """The grid's columns: the predicted class, the runner-up, and the classes added in the picker."""
    categories = model.bundle.categories
    order = [int(i) for i in np.argsort(-probs)]
    first = order[:2]
    others = [i for i in range(len(categories)) if i not in first]
    if others:
        chosen = [i for i in st.session_state.get(state.TEXT_COMPARE_TARGETS) or [] if i in others]
        st.session_state[state.TEXT_COMPARE_TARGETS] = chosen[:MAX_EXTRA_TARGETS]
        added = st.multiselect("Add class columns", others, key=state.TEXT_COMPARE_TARGETS, persist_state=state.KEEP,
                               max_selections=MAX_EXTRA_TARGETS, format_func=lambda i: f"{categories[i]} ({i})",
                               placeholder="type a class name…",
                               help="Columns beside the predicted class and the runner-up.")
    else:
        added = []
    return first + [int(i) for i in added]


def column_header(categories, probs: np.ndarray, target: int, position: int) -> str:
    role = {0: "predicted", 1: "runner-up"}.get(position, "added")
    return f"**{categories[target]}** · {role}, {probs[target]:.1%}"


def agreement_maps(maps: dict[tuple[str, int], TokenMap], view: TokenView, names: dict[tuple[str, int], str]
                   ) -> dict[str, np.ndarray]:
    """Each map's magnitudes over what the view colours (words when grouped, tokens otherwise)."""
    magnitude = TokenView(sign="absolute", group=view.group)
    return {names[pair]: shown_values(token_map.encoded, token_map.scores, magnitude)
            for pair, token_map in maps.items()}


def agreement_section(maps: dict[tuple[str, int], TokenMap], view: TokenView, categories) -> None:
    """Spearman rank correlation and top-share IoU between every pair of maps in the grid."""
    st.subheader("Agreement between the maps")
    if len(maps) < 2:
        st.info("Agreement needs two maps: add a method or a class column.")
        return
    targets = {target for _, target in maps}
    names = {(method, target): METHODS[method].display_name + (f" · {categories[target]}" if len(targets) > 1
                                                                  else "")
             for method, target in maps}
    found, rho, iou = agreement.agreement_matrix(agreement_maps(maps, view, names), fraction=TOP_FRACTION)
    unit = "words" if view.group else "tokens"
    st.caption(f"Between every pair of maps above, on their magnitudes (|score|) per {unit[:-1]}: Spearman's rank "
               f"correlation, and the overlap (IoU) of each map's top {TOP_FRACTION:.0%} {unit}. A constant map "
               "ranks nothing: its correlations read 0.")
    spearman_tab, iou_tab = st.tabs(["Spearman rank correlation", f"Top-{TOP_FRACTION:.0%} IoU"])
    with spearman_tab:
        st.plotly_chart(matrix_figure(rho, found, -1, 1, rnd.colour_scale(rnd.DEFAULT_DIVERGING, signed=True)),
                        key=f"{state.TEXT_AGREEMENT}.spearman")
    with iou_tab:
        st.plotly_chart(matrix_figure(iou, found, 0, 1, rnd.colour_scale("viridis", signed=False)),
                        key=f"{state.TEXT_AGREEMENT}.iou")


def compare_view(model: TextModel, scored: TokenBundle, probs: np.ndarray, objective: str, methods: list[str],
                 params: dict[str, dict[str, Any]], view: TokenView) -> None:
    """The grid (methods as rows, targets as columns) and the agreement between its maps."""
    categories = model.bundle.categories
    left, right = st.columns([3, 2], vertical_alignment="bottom")
    with left:
        targets = column_targets(model, probs)
    st.session_state.setdefault(state.TEXT_COMPARE_SCALE, PER_PANEL)
    scale = right.segmented_control("Colour range", SCALES, key=state.TEXT_COMPARE_SCALE, required=True,
                                    persist_state=state.KEEP,
                                    help="Per panel: each map on its own range. Linked: one raw-unit range per "
                                    "method row, so a class whose map is weaker looks weaker.")
    pairs = [(method, target) for method in methods for target in targets]
    requests = {pair: canonical(pair[0], params.get(pair[0]), pair[1], objective) for pair in pairs}
    found = maps_cancellable(model, scored, list(requests.values()), "Comparing")
    if found is None:
        return
    maps = {pair: found[request] for pair, request in requests.items()}
    for method in methods:
        st.markdown(f"##### {method_label(method)}")
        row = [maps[(method, target)] for target in targets]
        fixed = linked_range(row, view) if scale == LINKED else None
        columns = st.columns(len(targets))
        for position, (column, target) in enumerate(zip(columns, targets)):
            with column, st.container(border=True, key=f"text_cell_{method}_{target}"):
                st.markdown(column_header(categories, probs, target, position))
                draw_map(maps[(method, target)], view, categories, key=f"compare.{method}.{target}",
                         value_range=fixed, downloads=False)
    every = [token_map.as_json(list(categories)) for token_map in maps.values()]
    st.download_button("All maps of the grid (JSON)", lambda: json.dumps(every, indent=2, allow_nan=False),
                       f"text-{digest(scored.encoded.text)[:8]}_compare.json", "application/json",
                       key=f"{state.TEXT_DOWNLOAD}.compare", on_click="ignore", icon=":material/download:")
    agreement_section(maps, view, categories)
