"""Compare's models mode: the same methods and target on two or three models side by side.

Each model sees the sidebar's image through its own preprocessing (size, crop, normalisation:
``ModelBundle.preprocess``, as the sidebar does for its model) and computes through the one explanation cache, so a
panel here is the panel Explore shows for that model. Rows are methods, columns models; a row may share one
raw-unit colour scale; with two models a difference column shows model 1 minus model 2 (each map on its own unit
range), and a table gives the agreement of every pair of models per method (Spearman of |map|, top-10% IoU;
``explainers.trust.agreement``). Where the models' class lists differ, each model has its own target.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from explainers import METHODS, ExplanationRecord, SaliencyError
from explainers import render as rnd
from explainers.many import shared_methods
from explainers.models import DIGITS_MODEL, ModelBundle, dense_zoo
from explainers.models.dense import DenseBundle
from explainers.trust import agreement

from . import state, user_models
from .compare import (
    DIFFERENCE,
    GRID_RUN,
    LINKED,
    Panel,
    Step,
    colorbar_strip,
    display_controls,
    grid_plan,
    grid_records,
    grid_rows,
    may_fill,
    method_rows,
    panel_requests,
    row_label,
)
from .controls import class_label, offered_methods
from .explanations import cached
from .layout import wrappable
from .models import TWIN, describe_model, get_bundle, model_choices, twin_bundle
from .outputs import render_record
from .predictions import selection_scores, top_k
from .runs import ProgressReporter
from .sidebar import Selection

MAX_EXTRA_MODELS = 2
FRACTION = 0.1  # the top share of pixels whose overlap the IoU measures


def model_label(model_id: str) -> str:
    """The label the sidebar's model picker gives a model (the twin, which it does not offer, says what it is)."""
    own = user_models.get(model_id) if user_models.is_user_model(model_id) else None
    if own is not None:
        return own.label
    if model_id == TWIN:
        return f"{TWIN} · offline, digits, shuffled labels"
    return describe_model(model_id)


def short_name(model_id: str) -> str:
    """A column header's model name: a user model's file stem, a registry model's id."""
    own = user_models.get(model_id) if user_models.is_user_model(model_id) else None
    return own.label.split(" · ")[0] if own is not None else model_id


def model_bundle(model_id: str) -> ModelBundle:
    """The shared bundle of any model the picker offers (``ui.models.get_bundle``, or the digits twin)."""
    return twin_bundle() if model_id == TWIN else get_bundle(model_id)


def model_selection(selection: Selection, model_id: str, bundle: ModelBundle) -> Selection:
    """The sidebar's image and preprocessing choice on another model, through that model's own preprocessing."""
    return replace(selection, model=model_id, bundle=bundle,
                   inputs=bundle.preprocess(selection.image, selection.preprocessing), dense=None, prediction=None,
                   dense_key=())


@dataclass
class Column:
    """One model of the grid: its selection (image through its preprocessing), its target and their labels."""

    selection: Selection
    target: int
    role: str  # how the target was chosen: "predicted" (this model's), "picked", or "<model 1>'s prediction"

    @property
    def name(self) -> str:
        return short_name(self.selection.model)

    @property
    def target_label(self) -> str:
        return class_label(self.selection.bundle, self.target)


@dataclass
class ModelSettings:
    methods: list[str]
    columns: list[Column]
    shared_classes: bool  # every model has the same class list: one target for all
    scale: str
    difference: bool
    panel_kind: str
    view: rnd.View

    @property
    def linked(self) -> bool:
        return self.scale == LINKED

    @property
    def has_difference(self) -> bool:
        return self.difference and len(self.columns) == 2

    def panels(self) -> list[tuple[str, int]]:
        """(method, column index) of every panel."""
        return [(method, c) for method in self.methods for c in range(len(self.columns))]


def _choices(selection: Selection) -> list[str]:
    own = [entry.id for entry in user_models.user_models()]
    offered = [*own, *model_choices()]
    if DIGITS_MODEL in offered:
        offered.insert(offered.index(DIGITS_MODEL) + 1, TWIN)
    # a detector or segmenter explains boxes or regions, not the classes a column of classifiers shares
    return [m for m in offered if m != selection.model and dense_zoo.kind_of(m) is None
            and not isinstance(getattr(user_models.get(m), "bundle", None), DenseBundle)]


def _pick_models(selection: Selection) -> list[Selection]:
    """The extra models multiselect, and the selections of the sidebar's model and the picked ones that load."""
    choices = _choices(selection)
    if state.COMPARE_MODELS not in st.session_state and selection.model == DIGITS_MODEL:
        st.session_state[state.COMPARE_MODELS] = [TWIN]  # the digits model's own twin: offline, same classes
    st.session_state[state.COMPARE_MODELS] = [m for m in st.session_state.get(state.COMPARE_MODELS) or []
                                              if m in choices][:MAX_EXTRA_MODELS]
    extra = st.multiselect(
        f"Models beside {short_name(selection.model)} (columns)", choices, key=state.COMPARE_MODELS,
        format_func=model_label, max_selections=MAX_EXTRA_MODELS, persist_state=state.KEEP,
        placeholder="pick one or two models…",
        help="The first column is the sidebar's model; add one or two more. Each model sees the image through its "
        "own preprocessing. Zoo models download their weights once; load your own on the Models page.",
    )
    selections = [selection]
    for model_id in extra:
        try:
            bundle = model_bundle(model_id)
        except SaliencyError as exc:
            st.warning(f"{short_name(model_id)} cannot be loaded, so it has no column: {exc}",
                       icon=":material/warning:")
            continue
        selections.append(model_selection(selection, model_id, bundle))
    return selections


def _predicted(selection: Selection) -> int:
    return top_k(selection_scores(selection), 1, stable=selection.dense is not None)[0]


def _target_picker(container, key: str, bundle: ModelBundle, predicted: int, label: str) -> int | None:
    """A class picker whose empty value means the model's predicted class."""
    if st.session_state.get(key) not in range(len(bundle.categories)):
        st.session_state.pop(key, None)  # another model's class list: back to the predicted class
    return container.selectbox(label, range(len(bundle.categories)), index=None, key=key, persist_state=state.KEEP,
                               format_func=lambda i: class_label(bundle, i),
                               placeholder=f"predicted: {class_label(bundle, predicted)}",
                               help="Empty: the predicted class. Type to search for another class.")


def _targets(selections: list[Selection]) -> tuple[list[int | None], list[int], bool]:
    """(picked, predicted, shared): one target picker when every model has the same class list, else one per
    model, with a notice that says why."""
    predicted = [_predicted(s) for s in selections]
    categories = selections[0].bundle.categories
    shared = all(s.bundle.categories == categories for s in selections)
    if shared:
        picked = _target_picker(st, state.COMPARE_MODEL_TARGET, selections[0].bundle, predicted[0],
                                "Target class (every model)")
        return [picked] * len(selections), [predicted[0]] * len(selections), True
    counts = ", ".join(f"{short_name(s.model)}: {len(s.bundle.categories)} classes" for s in selections)
    st.info(f"The models' class lists differ ({counts}), so each model has its own target: its own predicted "
            "class unless you pick another.", icon=":material/info:")
    cells = st.columns(len(selections))
    picked = [_target_picker(cell, f"{state.COMPARE_MODEL_TARGET}.{s.model}", s.bundle, p,
                             f"Target on {short_name(s.model)}") for cell, s, p in zip(cells, selections, predicted)]
    return picked, predicted, False


def model_controls(selection: Selection) -> ModelSettings:
    """The models, the methods every one of them can run, the target(s) and the shared display choices."""
    selections = _pick_models(selection)
    offered = [set(offered_methods(s.bundle)) for s in selections[1:]]
    methods = method_rows([m for m in offered_methods(selection.bundle) if all(m in o for o in offered)])
    picked, predicted, shared = _targets(selections)
    columns = [Column(s, p if p is not None else q, "picked" if p is not None else
                      "predicted" if i == 0 or not shared else f"{short_name(selection.model)}'s prediction")
               for i, (s, p, q) in enumerate(zip(selections, picked, predicted))]
    display = display_controls(
        "Difference column (model 1 − model 2)", state.COMPARE_MODEL_DIFFERENCE,
        "Per panel: each map fills the colormap. Linked: one raw-unit scale per method row across the models "
        "(raw units of different models can differ by orders of magnitude).")
    return ModelSettings(methods, columns, shared, display.scale, display.difference, display.panel_kind,
                         display.view)


def run_id(settings: ModelSettings) -> tuple:
    """The grid's name for the Cancel / Run protocol."""
    first = settings.columns[0].selection
    return ("models", first.image_hash, first.preprocessing, tuple(settings.methods),
            tuple((c.selection.model, c.target) for c in settings.columns))


# ---- the grid ----------------------------------------------------------------------------------------------------


@dataclass
class ModelStep:
    column: int
    step: Step


@dataclass
class ModelGrid:
    settings: ModelSettings
    rows: dict[str, tuple[Any, list[Any]]]  # method: (label slot, one slot per column, then the difference's)
    status: Any
    note: Any
    results: dict[tuple[str, int], ExplanationRecord]  # (method, column index): record
    todo: list[tuple[str, int]] = field(default_factory=list)
    plan: list[ModelStep] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return sum(item.step.seconds for item in self.plan)

    def agreement(self, method: str) -> dict[tuple[int, int], tuple[float, float]]:
        """{(i, j): (Spearman, top-10% IoU)} between the computed columns of one method row."""
        return row_agreement(self.settings, {c: self.results[(method, c)] for c in range(len(self.settings.columns))
                                             if (method, c) in self.results})


def _boxes(settings: ModelSettings, columns: list[int]) -> list[tuple[int, int, int, int]]:
    return [settings.columns[c].selection.bundle.crop_geometry(settings.columns[c].selection.image.size,
                                                               settings.columns[c].selection.preprocessing)
            for c in columns]


def row_agreement(settings: ModelSettings, records: dict[int, ExplanationRecord]
                  ) -> dict[tuple[int, int], tuple[float, float]]:
    """Agreement of every pair of the row's computed columns, on one grid of the image (different input sizes
    and crops): ``explainers.trust.agreement.model_agreement``."""
    computed = sorted(records)
    if len(computed) < 2:
        return {}
    pairs = agreement.model_agreement([records[c].attribution for c in computed], _boxes(settings, computed),
                                      settings.columns[0].selection.image.size, settings.view.reduction, FRACTION)
    return {(computed[i], computed[j]): value for (i, j), value in pairs.items()}


def model_row_panels(settings: ModelSettings, method: str, records: dict[int, ExplanationRecord]) -> list[Panel]:
    """One method row's panels: every computed model on its own range or the row's linked one, then (two
    models) the difference of the two maps, each on its own unit range, on the image."""
    view = settings.view
    computed = [c for c in range(len(settings.columns)) if c in records]
    fixed = rnd.linked_range([records[c].attribution for c in computed], view) if settings.linked and computed \
        else None
    panels = []
    for c in computed:
        rendered = render_record(records[c], view, settings.columns[c].selection, fixed)
        panels.append(Panel(method, c, records[c].attribution, rendered, "own" if fixed is None else "linked",
                            records[c]))
    if settings.has_difference and computed == [0, 1]:
        image = settings.columns[0].selection.image
        delta = agreement.model_difference(records[0].attribution, records[1].attribution, _boxes(settings, [0, 1]),
                                           image.size, view)
        rendered = rnd.render(delta, rnd.difference_view(view), backdrop=image)
        panels.append(Panel(method, DIFFERENCE, delta, rendered, "difference", records[0]))
    return panels


def _caption(settings: ModelSettings, panel: Panel, pairs: dict[tuple[int, int], tuple[float, float]]) -> str:
    if panel.column == DIFFERENCE:
        rho, iou = pairs.get((0, 1), (np.nan, np.nan))
        if np.isnan(rho):
            return f"±{panel.rendered.hi:.2g} · no agreement: a constant map"
        return f"±{panel.rendered.hi:.2g} · ρ {rho:.2f} · IoU {iou:.2f}"
    agnostic = " · class-agnostic" if not METHODS[panel.method].class_sensitive else ""
    empty = " · empty for this sign" if panel.rendered.empty else ""
    return f"[{panel.rendered.lo:.3g}, {panel.rendered.hi:.3g}]{agnostic}{empty}"


def _fill(grid: ModelGrid, methods: list[str]) -> None:
    settings = grid.settings
    for method in methods:
        label, slots = grid.rows[method]
        records = {c: grid.results[(method, c)] for c in range(len(settings.columns)) if (method, c) in grid.results}
        for c in range(len(settings.columns)):
            if c not in records:
                slots[c].caption("not computed yet")
        pairs = grid.agreement(method)
        for panel in model_row_panels(settings, method, records):
            slot = slots[-1] if panel.column == DIFFERENCE else slots[panel.column]
            slot.image(panel.image(settings.panel_kind), caption=_caption(settings, panel, pairs), width="stretch")
            if panel.scale == "linked" and panel.column == 0:
                with label.container():
                    st.markdown(row_label(method))
                    st.image(colorbar_strip(panel.rendered.scale), width="stretch")
                    st.caption(f"linked scale: {panel.rendered.lo:.3g} … {panel.rendered.hi:.3g} (raw)")


def _requests(settings: ModelSettings, pairs: list[tuple[str, int]]) -> dict[tuple[str, int], Any]:
    return {(m, c): panel_requests(settings.columns[c].selection, [(m, settings.columns[c].target)])[
        (m, settings.columns[c].target)] for m, c in pairs}


def _compute(grid: ModelGrid, column: int, methods: list[str], progress=None) -> None:
    """One model's panels of ``methods``, computed together through the cache (``ui.compare.grid_records``)."""
    col = grid.settings.columns[column]
    records = grid_records(col.selection, [(m, col.target) for m in methods], progress=progress)
    grid.results.update({(m, column): records[(m, col.target)] for m in methods})


def draw_model_grid(settings: ModelSettings) -> ModelGrid:
    """Draw the grid with its cached panels, then each model's shared-pass rows at once; return it with the plan
    of the pending panels (per model, ``ui.compare.grid_plan``)."""
    status = st.container()
    headers = [(wrappable(col.name), f"{col.target_label} · {wrappable(col.role)}") for col in settings.columns]
    if settings.has_difference:
        headers.append(("Difference", f"{wrappable(settings.columns[0].name)} − "
                                      f"{wrappable(settings.columns[1].name)}"))
    rows = grid_rows(headers, settings.methods)
    results = {pair: record for pair, request in _requests(settings, settings.panels()).items()
               if (record := cached(settings.columns[pair[1]].selection, request)) is not None}
    grid = ModelGrid(settings, rows, status, st.empty(), results)
    _fill(grid, settings.methods)
    quick = [m for m in settings.methods if m in shared_methods()]
    for c in range(len(settings.columns)):
        missing = [m for m in quick if (m, c) not in grid.results]
        if missing:
            _compute(grid, c, missing)
    if quick:
        _fill(grid, quick)
    grid.todo = [pair for pair in settings.panels() if pair not in grid.results]
    for c, col in enumerate(settings.columns):
        todo = [(m, col.target) for m, column in grid.todo if column == c]
        if todo:
            grid.plan += [ModelStep(c, step) for step in grid_plan(col.selection, todo)]
    _note(grid)
    return grid


def _note(grid: ModelGrid) -> None:
    settings = grid.settings
    if settings.has_difference:
        grid.note.caption(
            f"Difference column: {settings.columns[0].name} minus {settings.columns[1].name}, each map divided by "
            "the top of its own range first (raw units of two models are not comparable), on the image; "
            f"ρ: Spearman of |map|, IoU: overlap of the top {FRACTION:.0%} pixels.")


def fill_model_grid(grid: ModelGrid) -> None:
    """Compute the plan, model by model and step by step (each step one backend call whose panels fill in as it
    ends), with a Cancel button and a bar per step."""
    settings = grid.settings
    with grid.status:
        cancel, overall, step_bar = st.empty(), st.empty(), st.empty()
    GRID_RUN.cancel(cancel, help="Stop computing the grid now.")
    for method, c in grid.todo:
        grid.rows[method][1][c].caption("computing…")
    total, done = len(grid.todo), 0
    for item in grid.plan:
        overall.progress(done / max(total, 1), text=f"{done}/{total} panels")
        with step_bar.container():
            reporter = ProgressReporter(f"{settings.columns[item.column].name}: {item.step.label}")
        _compute(grid, item.column, item.step.methods, progress=reporter)
        step_bar.empty()
        done += len(item.step.methods)
        _fill(grid, item.step.methods)
    cancel.empty()
    overall.empty()
    grid.todo, grid.plan = [], []


SPEARMAN, IOU = "Spearman (|map|)", f"Top-{FRACTION:.0%} IoU"


def agreement_table(grid: ModelGrid) -> pd.DataFrame:
    """Per method and pair of models: Spearman of |map| and top-10% IoU, on one grid of the image. With two
    models there is one pair, and no column names it (the caption does): the table fits a narrow window."""
    names = [c.name for c in grid.settings.columns]
    rows = [{"Method": METHODS[method].display_name, "Models": f"{names[i]} vs {names[j]}", SPEARMAN: rho, IOU: iou}
            for method in grid.settings.methods for (i, j), (rho, iou) in grid.agreement(method).items()]
    columns = ["Method", "Models", SPEARMAN, IOU] if len(names) > 2 else ["Method", SPEARMAN, IOU]
    return pd.DataFrame(rows, columns=["Method", "Models", SPEARMAN, IOU])[columns]


def may_fill_models(grid: ModelGrid, notice) -> bool:
    """The classes grid's budget rule (``ui.compare.may_fill``): at once under AUTO_RUN_SECONDS, else after Run."""
    return may_fill(run_id(grid.settings), grid, notice)
