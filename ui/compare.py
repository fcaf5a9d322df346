"""The Compare grid: methods × targets, linked or per-panel colour scales, differences, agreement, layer sweep.

Every panel, on screen and in the zip, comes from :func:`row_panels`, so the export shows exactly the pixels and
the ranges of the screen.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import streamlit as st

from explainers import METHODS, ExplanationRecord
from explainers import render as rnd
from explainers.manifest import collection_manifest
from explainers.many import estimated_seconds, shared_methods
from explainers.models import ModelBundle
from explainers.timing import PassTimes
from explainers.trust import agreement

from . import state
from .controls import (
    class_label,
    layer_choices,
    layer_label,
    method_label,
    offered_methods,
    target_noun,
    view_controls,
)
from .explanations import Request, cached, cached_records, canonical, resolved_layer
from .figures import matrix_figure
from .method_docs import md_escape
from .outputs import fit_parts, manifest_for, npy_bytes, png_bytes, render_record
from .predictions import top_k
from .runs import AUTO_RUN_SECONDS, ProgressReporter, RunControl, pass_times
from .sidebar import Selection

# The default grid: three gradient methods (raw, noise-averaged, path-integrated), guided backprop (which fails
# the model-randomisation check: sharp, but not about the model), Grad-CAM and occlusion (a perturbation method).
# Each family once, all inside AUTO_RUN_SECONDS on a 2-core CPU; Score-CAM (one pass per channel: 1281 on the
# default layer) and RISE (thousands of masks) are a click away.
DEFAULT_METHODS = ["vanilla", "smoothgrad", "integrated_gradients", "guided_backprop", "gradcam", "occlusion"]
PER_PANEL = "Per panel"
LINKED = "Linked per method row (raw units)"
SCALES = (PER_PANEL, LINKED)
PANEL_KINDS = ("Overlay", "Heatmap")
DIFFERENCE = "difference"
MAX_EXTRA_TARGETS = 4
CLASSES, MODELS = "Classes", "Models"
COLUMN_KINDS = (CLASSES, MODELS)  # what the grid's columns are: one model's classes, or several models


@dataclass(frozen=True)
class Words:
    """How the Classes grid names its first two columns, their difference and what may be added: a classifier's
    classes, a detector's boxes or a segmenter's regions (ranked by the same scores the backend ranks by)."""

    first: str = "predicted"
    second: str = "runner-up"
    margin: str = "logit margin"
    add: str = "type a class name…"
    columns: str = "the predicted class and the runner-up"
    best: str = "the predicted class"


CLASS_WORDS = Words()


def words_for(bundle: ModelBundle) -> Words:
    """The grid's words for ``bundle``: a ScoredBundle's targets are boxes or regions, anything else's classes."""
    noun = target_noun(bundle).lower()
    if noun == "class":
        return CLASS_WORDS
    return Words(f"best {noun}", f"second {noun}", "score margin", f"type a {noun}…",
                 f"the best {noun} and the second", f"the best {noun}")


@dataclass
class CompareSettings:
    methods: list[str]
    targets: list[int]  # first the predicted class, then the runner-up, then any added classes
    scale: str
    difference: bool
    panel_kind: str
    view: rnd.View
    labels: dict[int, str] = field(default_factory=dict)
    words: Words = CLASS_WORDS

    @property
    def linked(self) -> bool:
        return self.scale == LINKED

    def panels(self) -> list[tuple[str, int]]:
        return [(method, target) for method in self.methods for target in self.targets]


def _add_target() -> None:
    """on_change of the class picker: add the picked class as a column (one at a time), then clear the picker.

    The added columns are the value of the "Added columns" multiselect, so its × removes one."""
    picked = st.session_state.get(state.COMPARE_ADD_TARGET)
    extra = list(st.session_state.get(state.COMPARE_EXTRA_TARGETS) or [])
    if picked is not None and picked not in extra and len(extra) < MAX_EXTRA_TARGETS:
        extra.append(int(picked))
    st.session_state[state.COMPARE_EXTRA_TARGETS] = extra
    st.session_state[state.COMPARE_ADD_TARGET] = None


def method_rows(names: list[str]) -> list[str]:
    """The "Methods (rows)" multiselect over ``names``, shared by both kinds of grid (classes or models)."""
    if state.COMPARE_METHODS not in st.session_state:
        st.session_state[state.COMPARE_METHODS] = [m for m in DEFAULT_METHODS if m in names]
    st.session_state[state.COMPARE_METHODS] = [m for m in st.session_state[state.COMPARE_METHODS] if m in names]
    return st.multiselect(
        "Methods (rows)", names, key=state.COMPARE_METHODS, format_func=method_label, persist_state=state.KEEP,
        help="Each row is one method with its default parameters; CAM methods use the model's default layer.",
    )


@dataclass
class Display:
    """The choices both kinds of grid share: colour scale, difference column, panel kind and view."""

    scale: str
    difference: bool
    panel_kind: str
    view: rnd.View


def display_controls(difference_label: str, difference_key: str = state.COMPARE_DIFFERENCE,
                     scale_help: str = "", alone: str = "") -> Display:
    """The grid's display controls; ``alone`` (why there is no second column, e.g. a segmenter that found one
    region) greys out the difference toggle and says why."""
    left, middle, right = st.columns(3)
    scale = left.radio("Colour scale", SCALES, key=state.COMPARE_SCALE, persist_state=state.KEEP,
                       help=scale_help or "Per panel: each map fills the colormap. Linked: one raw-unit scale per "
                       "method row, so the columns can be compared by strength.")
    st.session_state.setdefault(difference_key, True)
    difference = middle.toggle(difference_label, key=difference_key, persist_state=state.KEEP, disabled=bool(alone),
                               help=alone or None)
    panel_kind = right.radio("Panels show", PANEL_KINDS, key=state.COMPARE_PANEL_KIND, horizontal=True,
                             persist_state=state.KEEP)
    with st.expander("View", expanded=False):
        view = view_controls(channels=None, prefix=state.COMPARE_VIEW)
        st.caption("The channel reduction applies to 3-channel (gradient) maps; CAM and perturbation maps have "
                   "one channel.")
    return Display(scale, difference, panel_kind, view)


def compare_controls(selection: Selection, probs: np.ndarray) -> CompareSettings:
    bundle = selection.bundle
    words = words_for(bundle)
    top = top_k(probs, 2, stable=selection.dense is not None)  # a detector may have found one box only
    methods = method_rows(offered_methods(bundle))
    classes = [c for c in range(len(bundle.categories)) if c not in top]
    scope, kept_for = selection.target_scope, st.session_state.get(state.COMPARE_EXTRA_SCOPE)
    if selection.dense is not None and kept_for is not None and kept_for != scope:
        st.session_state[state.COMPARE_EXTRA_TARGETS] = []  # box #3 of another image or model is not this one's
    st.session_state[state.COMPARE_EXTRA_SCOPE] = scope
    extra = [c for c in (st.session_state.get(state.COMPARE_EXTRA_TARGETS) or []) if c in classes]
    st.session_state[state.COMPARE_EXTRA_TARGETS] = extra  # another image's top classes are no longer extras
    add, added = st.columns(2)
    add.selectbox(
        "Add a target column", [c for c in classes if c not in extra], index=None, key=state.COMPARE_ADD_TARGET,
        format_func=lambda i: class_label(bundle, i), on_change=_add_target, placeholder=words.add,
        disabled=len(extra) >= MAX_EXTRA_TARGETS,
        help=f"Columns are {words.columns}; add up to {MAX_EXTRA_TARGETS} more, one at a time.",
    )
    # its options are only the added classes: typing into it cannot add others
    extra = added.multiselect("Added columns (× removes)", extra, key=state.COMPARE_EXTRA_TARGETS,
                              format_func=lambda i: class_label(bundle, i), persist_state=state.KEEP)
    alone = "" if len(top) > 1 or extra else f"Only one column: the model gives no {words.second} on this image."
    display = display_controls(f"Difference column ({words.first} − {words.second})", alone=alone)
    targets = [*top, *extra]
    return CompareSettings(methods, targets, display.scale, display.difference, display.panel_kind, display.view,
                           {t: class_label(bundle, t) for t in targets}, words)


# ---- cost ------------------------------------------------------------------------------------------------------


def _times(selection: Selection) -> PassTimes:
    """The model's measured pass times, shared with Explore's estimate (``ui.runs.pass_times``)."""
    return pass_times(selection)


def _channels(selection: Selection, methods) -> int | None:
    """The channels of the default layer, which the grid's CAM rows read, when a method needs a layer."""
    if not any(METHODS[m].needs_layer for m in methods):
        return None
    return selection.bundle.layer_entry(resolved_layer(selection, next(m for m in methods if METHODS[m].needs_layer),
                                                       None)).channels


def panel_requests(selection: Selection, pairs: list[tuple[str, int]]) -> dict[tuple[str, int], Request]:
    """The (method, target) panels as the cache knows them: default parameters, the default layer. Explore at the
    same settings, and the Faithfulness page, find them."""
    return {(m, t): canonical(selection, m, {}, t) for m, t in pairs}


def grid_records(selection: Selection, pairs: list[tuple[str, int]], progress=None
                 ) -> dict[tuple[str, int], ExplanationRecord]:
    """The records of these panels, the missing ones computed together (``cached_records``)."""
    requests = panel_requests(selection, pairs)
    records, _ = cached_records(selection, list(requests.values()), progress)
    return {pair: records[request] for pair, request in requests.items()}



@dataclass
class Step:
    """One explain_many call of a grid: ``methods`` for ``targets``, about ``seconds``."""

    methods: list[str]
    targets: list[int]
    seconds: float

    @property
    def label(self) -> str:
        return ", ".join(METHODS[m].display_name for m in self.methods)


def grid_plan(selection: Selection, todo: list[tuple[str, int]], times: PassTimes | None = None) -> list[Step]:
    """How the pending panels are computed: the methods of the shared pass together, then every other method
    for all its pending targets at once (they share its passes), the quickest first, so that the first panels
    come at once. The estimate and the computation both follow this plan; ``times`` defaults to this model's
    measured pass times."""
    hw, times = tuple(selection.inputs.shape[-2:]), times or _times(selection)
    targets: dict[str, list[int]] = {}
    for method, target in todo:
        targets.setdefault(method, []).append(target)

    def step(methods: list[str]) -> Step:
        wanted = list(dict.fromkeys(t for m in methods for t in targets[m]))
        return Step(methods, wanted, estimated_seconds(times, methods, len(wanted), hw, _channels(selection, methods)))

    together = [m for m in targets if m in shared_methods()]
    steps = sorted((step([m]) for m in targets if m not in together), key=lambda s: s.seconds)
    return ([step(together)] if together else []) + steps


def grid_id(selection: Selection, settings: CompareSettings) -> tuple:
    return (selection.cache_id, selection.image_hash, selection.preprocessing, tuple(settings.methods),
            tuple(settings.targets))


# ---- panels ----------------------------------------------------------------------------------------------------


@dataclass
class Panel:
    """One rendered cell: ``column`` a class index or "difference"; ``attribution`` the raw map it shows."""

    method: str
    column: int | str
    attribution: np.ndarray
    rendered: rnd.Rendered
    scale: str
    record: ExplanationRecord | None = None

    def image(self, panel_kind: str) -> np.ndarray:
        return self.rendered.image if panel_kind == "Overlay" else self.rendered.rgb


def target_panel(selection: Selection, view: rnd.View, record: ExplanationRecord,
                 fixed_range: tuple[float, float] | None = None) -> Panel:
    """One target's panel, on its own range or on a row's linked one."""
    rendered = render_record(record, view, selection, fixed_range)
    return Panel(record.method, record.target[0], record.attribution, rendered,
                 "own" if fixed_range is None else "linked", record)


def row_panels(selection: Selection, settings: CompareSettings, method: str,
               records: dict[int, ExplanationRecord]) -> list[Panel]:
    """The rendered panels of one method row: one per computed target, plus the difference when asked for.

    Linked scales share one raw range over the row's targets (the difference has its own, centred at zero)."""
    view = settings.view
    computed = [t for t in settings.targets if t in records]
    fixed = None
    if settings.linked and computed:
        fixed = rnd.linked_range([records[t].attribution for t in computed], view)
    panels = [target_panel(selection, view, records[t], fixed) for t in computed]
    first, second = (settings.targets * 2)[:2]  # one target (a detector with one box): no difference
    if settings.difference and len(settings.targets) > 1 and first in records and second in records:
        delta = rnd.difference(records[first].attribution, records[second].attribution, view)
        # both targets come from one call of the method: the same regions, outlined on the difference too
        rendered = rnd.render_for_image(delta, rnd.difference_view(view), image=selection.image,
                                        bundle=selection.bundle, preprocessing=selection.preprocessing,
                                        regions=records[first].regions)
        panels.append(Panel(method, DIFFERENCE, delta, rendered, "difference", records[first]))
    return panels


def _caption(panel: Panel) -> str:
    info = METHODS[panel.method]
    rendered = panel.rendered
    if panel.column == DIFFERENCE:
        if not info.class_sensitive:
            return "class-agnostic: no difference"
        return f"±{rendered.hi:.3g} (raw)"
    agnostic = " · class-agnostic" if not info.class_sensitive else ""
    empty = " · empty for this sign" if rendered.empty else ""
    fit = "".join(f" · {part}" for part in fit_parts(panel.record.extras, hints=False)) if panel.record else ""
    return f"[{rendered.lo:.3g}, {rendered.hi:.3g}]{agnostic}{fit}{empty}"


def panel_notes(panel: Panel) -> tuple[str, ...]:
    """What the backend wants said beside a target's panel (``record.notes``: an all-zero map, a reduced batch
    size); the difference panel has none of its own."""
    if panel.column == DIFFERENCE or panel.record is None:
        return ()
    return tuple(panel.record.notes)


def colorbar_strip(scale: np.ndarray, height: int = 12) -> np.ndarray:
    """A horizontal strip of a render colour scale ([K, 3] uint8), for a linked row's legend."""
    return np.repeat(scale[None, :, :], height, axis=0)


def row_label(method: str) -> str:
    """A row's name and family. A long word gets a soft hyphen after its fourth letter, so that a narrow column
    (900 px) breaks "Guided backpropagation" as back-propagation, not mid-syllable."""
    info = METHODS[method]
    words = [w if len(w) < 12 or "-" in w else f"{w[:4]}\u00ad{w[4:]}" for w in info.display_name.split(" ")]
    return f"**{' '.join(words)}**  \n:gray[{info.family}]"


def _fill_row(selection: Selection, settings: CompareSettings, method: str, records: dict[int, ExplanationRecord],
              label, slots) -> None:
    """Draw one method row's panels into its slots: every computed target, the difference, a linked legend."""
    for column, target in enumerate(settings.targets):
        if target not in records:
            slots[column].caption("not computed yet")
    for panel in row_panels(selection, settings, method, records):
        slot = slots[-1] if panel.column == DIFFERENCE else slots[settings.targets.index(panel.column)]
        notes = panel_notes(panel)
        if notes:
            with slot.container():
                st.image(panel.image(settings.panel_kind), caption=_caption(panel), width="stretch")
                for note in notes:
                    st.caption(f":material/info: {md_escape(note)}")
        else:
            slot.image(panel.image(settings.panel_kind), caption=_caption(panel), width="stretch")
        if panel.scale == "linked" and panel.column == settings.targets[0]:
            with label.container():
                st.markdown(row_label(method))
                st.image(colorbar_strip(panel.rendered.scale), width="stretch")
                st.caption(f"linked scale: {panel.rendered.lo:.3g} … {panel.rendered.hi:.3g} (raw)")


@dataclass
class Grid:
    """A grid on screen: its slots, the records it shows, and the plan of the panels still to compute."""

    settings: CompareSettings
    rows: dict[str, tuple[Any, list[Any]]]  # method: (label slot, one slot per column)
    status: Any  # the Cancel button and the bars, above the grid
    note: Any  # the difference column's note, under the grid
    results: dict[tuple[str, int], ExplanationRecord]
    todo: list[tuple[str, int]] = field(default_factory=list)  # the panels not computed yet
    plan: list[Step] = field(default_factory=list)  # how they would be computed (``grid_plan``)

    @property
    def seconds(self) -> float:
        return sum(step.seconds for step in self.plan)


def _fill(selection: Selection, grid: Grid, methods: list[str]) -> None:
    settings = grid.settings
    for method in methods:
        records = {t: grid.results[(method, t)] for t in settings.targets if (method, t) in grid.results}
        _fill_row(selection, settings, method, records, *grid.rows[method])


def _margin(value: float) -> str:
    """Two decimals, or two significant digits where two decimals would read 0.00 (a seeded detector's boxes
    score about 0.01, a hundredth apart)."""
    return f"{value:.2f}" if value == 0 or abs(value) >= 0.005 else f"{value:.2g}"


def _note(grid: Grid) -> None:
    settings = grid.settings
    if settings.difference and len(settings.targets) > 1 and grid.results:
        logits = next(iter(grid.results.values())).logits
        first, second = settings.targets[:2]
        words = settings.words
        grid.note.caption(f"Difference column: {words.first} minus {words.second} ({words.margin} "
                          f"{_margin(float(logits[first] - logits[second]))}) on a diverging colormap: "
                          f"{rnd.difference_view(settings.view).cmap}, {words.best}'s side at the high end.")


def grid_rows(headers: list[tuple[str, str]], methods: list[str]) -> dict[str, tuple[Any, list[Any]]]:
    """The grid's skeleton, for either kind of columns: a header of (name, grey role) per column, then one row per
    method, {method: (label slot, one slot per column)}, the slots empty for the panels to fill."""
    rows = {}
    with st.container(key=state.COMPARE_GRID):
        header = st.columns([1.2] + [1] * len(headers))
        header[0].markdown("**Method**")
        for cell, (name, role) in zip(header[1:], headers):
            cell.markdown(f"**{md_escape(name)}**  \n:gray[{md_escape(role)}]")  # names may be a user's
        for method in methods:
            cells = st.columns([1.2] + [1] * len(headers))
            label = cells[0].empty()
            label.markdown(row_label(method))
            rows[method] = (label, [cell.empty() for cell in cells[1:]])
    return rows


def draw_grid(selection: Selection, settings: CompareSettings) -> Grid:
    """Draw the grid: every row at once with its cached panels, then the rows of the shared pass at once (one
    forward pass for all of them: a fraction of a second, before any estimate is measured), placeholders for the
    rest. Returns the grid with the plan of its pending panels (``grid_plan``), which :func:`fill_grid` computes
    when the page decides to."""
    status = st.container()
    words = settings.words
    headers = [(settings.labels[target], words.first if i == 0 else words.second if i == 1 else "added")
               for i, target in enumerate(settings.targets)]
    if settings.difference:
        headers.append(("Difference", f"{words.first} − {words.second}"))
    rows = grid_rows(headers, settings.methods)
    grid = Grid(settings, rows, status, st.empty(), {
        pair: record for pair, request in panel_requests(selection, settings.panels()).items()
        if (record := cached(selection, request)) is not None})
    _fill(selection, grid, settings.methods)
    quick = [(m, t) for m, t in settings.panels() if (m, t) not in grid.results and m in shared_methods()]
    if quick:
        grid.results.update(grid_records(selection, quick))
        _fill(selection, grid, list(dict.fromkeys(m for m, _ in quick)))
    grid.todo = [pair for pair in settings.panels() if pair not in grid.results]
    grid.plan = grid_plan(selection, grid.todo) if grid.todo else []
    _note(grid)
    return grid


GRID_RUN = RunControl(cancel_button=state.COMPARE_CANCEL, run_button=state.COMPARE_RUN_BUTTON,
                      cancelled=state.COMPARE_CANCELLED, started=state.COMPARE_RUN)


def may_fill(run_id: tuple, grid, notice) -> bool:
    """Whether the grid's pending panels (``grid.todo``, about ``grid.seconds``) are computed in this run
    (:class:`~ui.runs.RunControl`, ``run_id`` naming the grid): at once when their plan fits AUTO_RUN_SECONDS,
    else (or once cancelled) after Run. ``notice``, above the grid, shows the estimate and the Run button, or what
    is being computed. Both kinds of grid (classes, models) use it."""
    seconds, count = grid.seconds, len(grid.todo)
    run = GRID_RUN.may_run(
        run_id, notice,
        f"{count} panels to compute, about {seconds:.0f} s on this machine (grids under {AUTO_RUN_SECONDS:.0f} s "
        "start at once; the rows of the shared pass always do).",
        label=f"Run the grid (about {seconds:.0f} s)", auto=seconds <= AUTO_RUN_SECONDS)
    if run:
        notice.caption(f"Computing {count} panels, about {seconds:.0f} s.")
    return run


def fill_grid(selection: Selection, grid: Grid, on_step: Callable[[], object] | None = None) -> None:
    """Compute the grid's plan, step by step (each one backend call whose rows fill in as it ends), with a Cancel
    button and a bar per step; ``on_step()`` after each step's rows are drawn."""
    settings = grid.settings
    with grid.status:
        cancel, overall, step_bar = st.empty(), st.empty(), st.empty()
    GRID_RUN.cancel(cancel, help="Stop computing the grid now.")
    for step in grid.plan:
        for method in step.methods:
            for column, target in enumerate(settings.targets):
                if (method, target) not in grid.results:
                    grid.rows[method][1][column].caption("computing…")
    total = sum(len(step.methods) * len(step.targets) for step in grid.plan)
    done = 0
    for step in grid.plan:
        overall.progress(done / max(total, 1), text=f"{done}/{total} panels")
        with step_bar.container():
            reporter = ProgressReporter(step.label)
        computed = grid_records(selection, [(m, t) for m in step.methods for t in step.targets], progress=reporter)
        step_bar.empty()
        grid.results.update(computed)
        done += len(computed)
        _fill(selection, grid, step.methods)
        if on_step is not None:
            on_step()
    cancel.empty()
    overall.empty()
    grid.todo, grid.plan = [], []
    _note(grid)


class Agreement:
    """The "Method agreement" section under the grid: Spearman and top-10% IoU between every pair of the computed
    rows, for the first column's target.

    While the grid computes, it is drawn from the rows done so far (the rows of the shared pass come first) and
    redrawn as rows arrive: the user sees it grow, and the browser loads its chart library (seconds on a cold
    page) during the computation instead of after it. Only the last drawing carries the figures' keys."""

    def __init__(self, settings: CompareSettings):
        self.settings = settings
        st.subheader("Method agreement")
        st.caption(f"Between every pair of methods in the grid, for {settings.words.best} "
                   f"({settings.labels[settings.targets[0]]}), on absolute maps.")
        self.slot = st.empty()
        self.drawn: tuple[str, ...] | None = None

    def shown(self, results: dict[tuple[str, int], ExplanationRecord]) -> list[str]:
        return [m for m in self.settings.methods if (m, self.settings.targets[0]) in results]

    def draw(self, results: dict[tuple[str, int], ExplanationRecord], final: bool = False) -> None:
        """Draw the agreement of the rows in ``results``; a partial drawing (``final`` False) is skipped when
        no row was added since the last one."""
        settings, shown = self.settings, self.shown(results)
        if not final and tuple(shown) == self.drawn:
            return
        self.drawn = tuple(shown)
        with self.slot.container():
            if len(shown) < 2:
                st.info("Agreement needs two computed methods: add a method, or run the grid." if final else
                        "The agreement appears once two methods are computed.")
                return
            spearman_tab, iou_tab = st.tabs(["Spearman rank correlation", "Top-10% IoU"])
            for tab, metric, key in ((spearman_tab, "spearman", state.AGREEMENT_SPEARMAN),
                                     (iou_tab, "iou", state.AGREEMENT_IOU)):
                with tab:
                    figure = agreement_figure(results, shown, settings.targets[0], settings.view, metric)
                    # unkeyed while partial: each partial drawing has other methods, so another element id
                    st.plotly_chart(figure, key=key if final else None)


def agreement_figure(results: dict[tuple[str, int], ExplanationRecord], methods: list[str], target: int,
                     view: rnd.View, metric: str):
    maps = {}
    for method in methods:
        if (method, target) in results:
            values = rnd.to_map(results[(method, target)].attribution, "absolute", view.reduction)
            maps[METHODS[method].display_name] = values[::4, ::4]  # magnitudes; 56×56 keeps it quick
    names, rho, iou = agreement.agreement_matrix(maps, fraction=0.1)
    if metric == "spearman":
        return matrix_figure(rho, names, -1, 1, rnd.colour_scale(rnd.DEFAULT_DIVERGING, signed=True))
    return matrix_figure(iou, names, 0, 1, rnd.colour_scale("viridis", signed=False))


def export_zip(results: dict[tuple[str, int], ExplanationRecord], selection: Selection,
               settings: CompareSettings) -> bytes:
    """Every panel as on screen (PNG with the same range), its raw map (.npy) and one manifest for all."""
    buffer = io.BytesIO()
    manifests = []
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for method in settings.methods:
            records = {t: results[(method, t)] for t in settings.targets if (method, t) in results}
            for panel in row_panels(selection, settings, method, records):
                if panel.column == DIFFERENCE:
                    first, second = settings.targets[:2]
                    stem = f"{method}__difference_{first}_minus_{second}"
                else:
                    name = selection.bundle.categories[panel.column].replace(" ", "_").replace("/", "_")
                    stem = f"{method}__{panel.column}_{name}"
                files = {"image": f"{stem}.png", "attribution": f"{stem}.npy"}
                archive.writestr(files["image"], png_bytes(panel.image(settings.panel_kind)))
                archive.writestr(files["attribution"], npy_bytes(panel.attribution))
                manifests.append(manifest_for(panel.record, panel.rendered, selection, scale=panel.scale,
                                              files=files, role=DIFFERENCE if panel.column == DIFFERENCE else None))
        about = {"image": selection.image_name, "model": selection.model, "preprocessing": selection.preprocessing,
                 # ids, not the labels on screen: "linked" / "per_panel", "overlay" / "heatmap"
                 "scale": "linked" if settings.linked else "per_panel", "panels_show": settings.panel_kind.lower(),
                 "view": settings.view.as_dict(),
                 "targets": settings.targets}
        archive.writestr("manifest.json", json.dumps(collection_manifest(manifests, **about), indent=2,
                                                     allow_nan=False))
    return buffer.getvalue()


# ---- layer sweep -----------------------------------------------------------------------------------------------


def sweep_methods(selection: Selection) -> list[str]:
    """Methods cheap enough to run once per layer (the registry's flag), that can run on this model."""
    return [m for m in offered_methods(selection.bundle) if METHODS[m].sweepable]


FAINT_LAYER = 0.05  # a layer whose peak is under this share of the sweep's strongest layer's is "almost none"
SPARSE_TILE = 0.05  # a tile whose mean colour position is under this is almost black


def sweep_notes(rendered: list[rnd.Rendered], linked: bool) -> list[str]:
    """A note per sweep tile ("" for none): a layer with almost no attribution next to the sweep's strongest
    (its peak |value| under FAINT_LAYER of theirs: almost black on a linked scale, stretched noise on its own);
    a tile that is still almost black (mean colour position under SPARSE_TILE): on a linked scale because it is
    faint beside the strongest, on its own because its attribution sits in a few pixels."""
    peaks = [float(np.nanmax(np.abs(r.values))) if np.isfinite(r.values).any() else 0.0 for r in rendered]
    strongest = max(peaks, default=0.0)
    notes = []
    for tile, peak in zip(rendered, peaks):
        if strongest > 0 and peak < FAINT_LAYER * strongest:
            share = f"{peak / strongest:.1%}" if peak >= 0.001 * strongest else "<0.1%"
            notes.append(f"almost no attribution at this layer ({share} of the strongest)")
        elif linked:
            faint = np.nanmean(np.abs(tile.normalized)) < SPARSE_TILE
            notes.append(f"faint on the shared scale (peak {peak / strongest:.0%} of the strongest)" if faint else "")
        elif tile.empty:
            notes.append("empty for this sign")
        elif np.nanmean(np.abs(tile.normalized)) < SPARSE_TILE:
            notes.append("almost black: the attribution sits in a few pixels")
        else:
            notes.append("")
    return notes


def draw_layer_sweep(selection: Selection, method: str, target: int, layers: list[str], view: rnd.View,
                     linked: bool = False) -> None:
    """One method at every layer, from one pass with every layer captured (``explain_layers``): the tiles on one
    raw-unit scale (``linked``) or each on its own, with the colour bar and a note under faint or sparse tiles."""
    requests = {layer: canonical(selection, method, {}, target, layer) for layer in layers}
    with st.spinner(f"{method_label(method)} at {len(layers)} layers, one pass…"):
        records, _ = cached_records(selection, list(requests.values()))
    records = {layer: records[request] for layer, request in requests.items()}
    fixed = rnd.linked_range([records[layer].attribution for layer in layers], view) if linked and layers else None
    rendered = [render_record(records[layer], view, selection, fixed) for layer in layers]
    notes = sweep_notes(rendered, linked)
    captions = [f"{layer_label(selection.bundle, layer)}" + ("" if linked else f" · [{r.lo:.3g}, {r.hi:.3g}]")
                + (f" · {note}" if note else "") for layer, r, note in zip(layers, rendered, notes)]
    bar, legend = st.columns([1, 3], vertical_alignment="center")
    if rendered:
        bar.image(colorbar_strip(rendered[0].scale), width="stretch")
        if linked:
            legend.caption(f"one scale for every layer: {rendered[0].lo:.3g} … {rendered[0].hi:.3g} (raw), low to "
                           "high")
        else:
            legend.caption("each tile on its own range, low to high (its range under it); choose the linked colour "
                           "scale above to put every layer on one")
    st.image([r.rgb for r in rendered], caption=captions, width=120)


def sweep_seconds(selection: Selection, method: str, layers: list[str]) -> float:
    """A sweep is one pass whatever the number of layers: one forward with every layer captured, one backward."""
    return estimated_seconds(_times(selection), [method], 1, tuple(selection.inputs.shape[-2:]))


def sweep_scope_label(selection: Selection, scope: str) -> str:
    return f"{scope} ({len(layer_choices(selection.bundle, scope))})"
