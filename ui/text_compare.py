"""Compare on the Text page: methods × targets, the text repeated in every panel (each on its own colour range,
or one range per method row), and the agreement matrix between the maps (``explainers.trust.agreement``).

The columns follow the page's target: the target and the class it is best told apart from (the runner-up, or the
prediction when the target is not it), or a contrast and its two classes; more classes can be added."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import streamlit as st

from explainers import METHODS, Contrast
from explainers import render as rnd
from explainers.text import TokenBundle, TokenMap, TokenView
from explainers.text.render import shown_values
from explainers.trust import agreement

from . import state
from .controls import TargetChoice
from .figures import matrix_figure
from .method_docs import md_escape
from .predictions import rank_of, top_k
from .text import (
    canonical,
    digest,
    draw_map,
    linked_range,
    map_view,
    maps_cancellable,
    method_label,
    sign_free,
    target_label,
)
from .text_models import TextModel

PER_PANEL = "Per panel"
LINKED = "Linked per method row (raw units)"
SCALES = (PER_PANEL, LINKED)
MAX_EXTRA_TARGETS = 3
# The share of tokens whose overlap the IoU counts: a sentence has a dozen tokens, so 10% would be one token.
TOP_FRACTION = 0.2


def column_id(target: int | Contrast) -> str:
    """A column's target in a key: "2", or "2-vs-0" for a contrast."""
    return f"{target.a}-vs-{target.b}" if isinstance(target, Contrast) else str(int(target))


def first_columns(probs: np.ndarray, target: TargetChoice) -> list[int | Contrast]:
    """The columns the page's target gives: the target and the class it is best told apart from (the runner-up
    when the target is the prediction, else the prediction); a contrast, then its two classes."""
    if isinstance(target.value, Contrast):
        return [target.value, target.value.a, target.value.b]
    top = top_k(probs, 2)
    chosen = int(target.value)
    other = next((i for i in top if i != chosen), None)
    return [chosen] + ([other] if other is not None else [])


def column_targets(model: TextModel, probs: np.ndarray, target: TargetChoice) -> list[int | Contrast]:
    """The grid's columns: :func:`first_columns`, and the classes added in the picker."""
    categories = model.bundle.categories
    first = first_columns(probs, target)
    others = [i for i in range(len(categories)) if i not in first]
    if others:
        chosen = [i for i in st.session_state.get(state.TEXT_COMPARE_TARGETS) or [] if i in others]
        st.session_state[state.TEXT_COMPARE_TARGETS] = chosen[:MAX_EXTRA_TARGETS]
        added = st.multiselect("Add class columns", others, key=state.TEXT_COMPARE_TARGETS, persist_state=state.KEEP,
                               max_selections=MAX_EXTRA_TARGETS, format_func=lambda i: f"{categories[i]} ({i})",
                               placeholder="type a class name…",
                               help="Columns beside the target picked above and the class it is compared with.")
    else:
        added = []
    return first + [int(i) for i in added]


def column_header(categories, probs: np.ndarray, target: int | Contrast, position: int) -> str:
    """ "**positive** · the target, predicted, 97.1%": the column's class, its part and its rank."""
    if isinstance(target, Contrast):
        return f"**{md_escape(target_label(categories, target))}** · the target (a contrast)"
    rank = rank_of(probs, target)
    role = {1: "predicted", 2: "runner-up"}.get(rank, f"rank {rank}")
    part = "the target, " if position == 0 else ""
    return f"**{md_escape(categories[target])}** · {part}{role}, {probs[target]:.1%}"


def agreement_maps(maps: dict[tuple[str, Any], TokenMap], view: TokenView, names: dict[tuple[str, Any], str]
                   ) -> dict[str, np.ndarray]:
    """Each map's magnitudes over what the view colours (words when grouped, tokens otherwise)."""
    magnitude = TokenView(sign="absolute", group=view.group)
    return {names[pair]: shown_values(token_map.encoded, token_map.scores, magnitude)
            for pair, token_map in maps.items()}


def agreement_section(maps: dict[tuple[str, Any], TokenMap], view: TokenView, categories) -> None:
    """Spearman rank correlation and top-share IoU between every pair of maps in the grid."""
    st.subheader("Agreement between the maps")
    if len(maps) < 2:
        st.info("Agreement needs two maps: add a method or a class column.")
        return
    targets = {target for _, target in maps}
    names = {(method, target): METHODS[method].display_name
             + (f" · {target_label(categories, target)}" if len(targets) > 1 else "")
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


def compare_view(model: TextModel, scored: TokenBundle, probs: np.ndarray, target: TargetChoice, objective: str,
                 methods: list[str], params: dict[str, dict[str, Any]], view: TokenView) -> None:
    """The grid (methods as rows, the target's columns, :func:`column_targets`) and the agreement between its
    maps."""
    categories = model.bundle.categories
    left, right = st.columns([3, 2], vertical_alignment="bottom")
    with left:
        targets = column_targets(model, probs, target)
    st.session_state.setdefault(state.TEXT_COMPARE_SCALE, PER_PANEL)
    scale = right.segmented_control("Colour range", SCALES, key=state.TEXT_COMPARE_SCALE, required=True,
                                    persist_state=state.KEEP,
                                    help="Per panel: each map on its own range. Linked: one raw-unit range per "
                                    "method row, so a class whose map is weaker looks weaker.")
    pairs = [(method, column) for method in methods for column in targets]
    requests = {pair: canonical(pair[0], params.get(pair[0]), pair[1], objective) for pair in pairs}
    found = maps_cancellable(model, scored, list(requests.values()), "Comparing")
    if found is None:
        return
    maps = {pair: found[request] for pair, request in requests.items()}
    for method in methods:
        st.markdown(f"##### {method_label(method)}")
        row = [maps[(method, column)] for column in targets]
        linked = scale == LINKED
        # a linked row is drawn on one scale: magnitudes only when no map of the row has a negative side
        free = all(sign_free(m.method, m.record.params, m.scores) for m in row) if linked else None
        fixed = linked_range(row, map_view(view, row)) if linked else None
        cells = st.columns(len(targets))
        for position, (cell, column) in enumerate(zip(cells, targets)):
            with cell, st.container(border=True, key=state.text_cell_key(method, column_id(column))):
                st.markdown(column_header(categories, probs, column, position))
                draw_map(maps[(method, column)], view, categories, key=f"compare.{method}.{column_id(column)}",
                         value_range=fixed, free=free, downloads=False)
    every = [token_map.as_json(list(categories)) for token_map in maps.values()]
    st.download_button("All maps of the grid (JSON)", lambda: json.dumps(every, indent=2, allow_nan=False),
                       f"text-{digest(scored.encoded.text)[:8]}_compare.json", "application/json",
                       key=f"{state.TEXT_DOWNLOAD}.compare", on_click="ignore", icon=":material/download:")
    agreement_section(maps, view, categories)
