"""The plumbing every new method relies on, driven by data on the record and the registry (never by a method's
name): fit and conservation captions from a record's extras, notes in Compare, what a method says shown on the
progress bar, folder parameters, a licence note on the Methods card, a new family in every picker, and a region
method's superpixels outlined on Explore's overlay.

The region method is registered by the tests only (``tests.explainers.test_render_regions.region_method``).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

import explainers
from explainers import METHODS, Param, method_order
from explainers import render as rnd
from explainers.images import IMAGE_SUFFIXES
from explainers.registry import FAMILY_ORDER
from tests.conftest import ROOT
from tests.explainers.test_render_regions import region_method
from tests.ui.helpers import COMPARE, expected, main_images, record, selection, start, texts, view_of
from ui import method_docs as docs
from ui import state
from ui.compare import panel_notes
from ui.controls import method_label, offered_methods
from ui.outputs import fit_parts, fit_text
from ui.runs import ProgressReporter
from ui.widgets import folder_help

LICENCE = "Patented: US 1,234,567 *claims 1-3* [see the authors' note] <b>not html</b>"
CAT_TOP = 285


@pytest.fixture(scope="module")
def method():
    """A test-only region method of family "Surrogate" with a licence note and a folder parameter, removed from
    the registry when the module's tests are done."""
    with region_method(licence_note=LICENCE) as name:
        yield name


# ---- captions from extras ----------------------------------------------------------------------------------


def test_fit_parts_come_from_the_keys_present():
    delta, gap = 0.012, 4.0
    assert fit_parts({}) == []
    (completeness,) = fit_parts({"completeness_delta": [delta], "score_gap": gap})
    assert completeness == f"completeness error {abs(delta) / gap:.1%} of f(x) − f(baseline) = {gap:.3g}"
    efficiency = 0.3 * 4.0 / 100
    (part,) = fit_parts({"efficiency_gap": efficiency, "score_gap": gap})
    assert part.startswith(f"efficiency gap {efficiency / gap:.1%} of f(x) − f(baseline)")
    assert fit_parts({"efficiency_gap": 0.25}) == ["efficiency gap 0.25"]  # no score gap: the raw value
    assert fit_parts({"fit_r2": np.float32(0.62)}) == ["fit R² 0.62"]
    surrogate = replace(METHODS["vanilla"], display_name="LIME")
    assert fit_parts({"fit_r2": np.float32(0.62)}, surrogate) == ["LIME fit R² 0.62"]
    assert fit_parts({"conservation": 0.97}) == [
        "input relevance is 97% of the relevance at the output (biases and ε keep the rest)"]
    assert fit_parts({"mask_area": 0.1, "preserved_score": 4.2, "deleted_score": -0.5}) == [
        "mask area 10% of the image", "score with only the mask kept 4.2", "score with the mask deleted -0.5"]
    # non-finite or unreadable values say nothing rather than "nan"
    assert fit_parts({"fit_r2": float("nan"), "conservation": None, "mask_area": "?"}) == []


def test_fit_parts_read_what_the_real_methods_write(default_bundle):
    """The keys are the methods' own: a real record of each kind gets its caption part (a renamed key would not)."""
    x = default_bundle.preprocess(explainers.open_image(ROOT / "assets" / "samples" / "cat.png"))[..., ::4, ::4]
    runs = {"extremal_perturbation": ({"max_iter": 2}, "mask area"), "lrp": ({}, "input relevance is"),
            "kernel_shap": ({"n_samples": 12, "segmentation": "grid", "n_segments": 4}, "efficiency gap"),
            "lime": ({"n_samples": 12, "segmentation": "grid", "n_segments": 4}, "LIME fit R²"),
            "deeplift": ({}, "completeness error"), "expected_gradients": ({"n_samples": 2}, "completeness error")}
    for method, (params, needle) in runs.items():
        record = explainers.explain(default_bundle, x.contiguous(), method, seed=0, **params).record()
        assert any(needle in part for part in fit_parts(record.extras, METHODS[method])), (method, record.extras)


def test_fit_parts_hints_only_where_asked_and_where_the_fit_is_poor():
    extras = {"fit_r2": 0.1, "completeness_delta": 1.0, "score_gap": 2.0}
    integrated = METHODS["integrated_gradients"]
    poor = fit_parts(extras, integrated)
    # the hint names the parameter that sets the method's steps, read off its cost
    assert any(f"raise {integrated.cost.steps} to shrink it" in p for p in poor) and any("poor fit" in p for p in poor)
    stepless = fit_parts(extras, METHODS["vanilla"])  # a method without steps gets no step hint
    assert not any("raise" in p for p in stepless) and any("poor fit" in p for p in stepless)
    compact = fit_parts(extras, integrated, hints=False)
    assert not any("raise" in p or "poor" in p for p in compact) and len(compact) == 2
    assert not any("poor" in p for p in fit_parts({"fit_r2": 0.9}))


def test_fit_text_names_the_method_from_the_registry_not_from_a_list(method):
    class Record:
        extras = {"fit_r2": 0.5}

    Record.method = method
    assert fit_text(Record()) == f" · {METHODS[method].display_name} fit R² 0.50"
    Record.method = "vanilla"  # the same extras on any method give the same part
    assert fit_text(Record()) == f" · {METHODS['vanilla'].display_name} fit R² 0.50"


# ---- progress --------------------------------------------------------------------------------------------


class _Bar:
    def __init__(self):
        self.calls: list[tuple[float, str]] = []

    def progress(self, value, text=""):
        self.calls.append((value, text))
        return self

    def empty(self):
        pass


def test_progress_reporter_shows_what_the_method_says_after_the_passes():
    bar = _Bar()
    reporter = ProgressReporter("Extremal perturbation", container=bar)
    reporter(120, 300)
    reporter.say("iteration 120/300:\n score 4.2,  area 0.10")
    value, text = bar.calls[-1]
    assert value == pytest.approx(0.4)
    assert text.startswith("Extremal perturbation: 120/300 passes")
    assert text.endswith(" · iteration 120/300: score 4.2, area 0.10")
    reporter(150, 300)  # the last thing said stays until the method says another
    assert bar.calls[-1][1].endswith("iteration 120/300: score 4.2, area 0.10") and "150/300" in bar.calls[-1][1]


# ---- folder parameters -----------------------------------------------------------------------------------


def _folder_page():
    import streamlit as st

    from explainers import METHODS
    from ui.widgets import param_widgets

    st.session_state["values"] = param_widgets(METHODS[st.session_state["method_name"]])


def test_a_folder_parameter_is_a_text_input_that_says_where_the_folder_must_be(method, tmp_path):
    at = AppTest.from_function(_folder_page)
    at.session_state["method_name"] = method
    at.run()
    assert not at.exception, at.exception
    (box,) = at.text_input
    assert box.key == f"{state.PARAM}.{method}.reference_folder" and box.value == ""
    assert at.session_state["values"] == {"reference_folder": ""}
    help_text = box.help
    assert "machine running this dashboard" in help_text and all(s in help_text for s in IMAGE_SUFFIXES)
    assert help_text.startswith("Reference images")
    box.input(f"  {tmp_path}  ").run()
    assert at.session_state["values"] == {"reference_folder": str(tmp_path)}
    assert METHODS[method].validate(at.session_state["values"]) == {"reference_folder": str(tmp_path)}


def test_a_folder_parameter_in_the_methods_table():
    param = Param("folder", "", help="Reference images.")
    (row,) = docs.param_rows(replace(METHODS["vanilla"], params={"ref": param}))
    assert row["Type"] == "folder" and row["Default"] == "none"
    assert all(s in row["Range / choices"] for s in IMAGE_SUFFIXES)
    assert folder_help(param).startswith("Reference images. A path to a folder")


# ---- the Methods page: licence note and families ----------------------------------------------------------


def test_the_card_shows_the_licence_note_escaped_and_only_where_there_is_one(method):
    at = AppTest.from_file(str(ROOT / "app_pages/methods.py"), default_timeout=120)
    at.run()
    assert not at.exception, at.exception
    card = at.get_by_key(docs.card(METHODS[method]).key)
    lines = [m.value for m in card.markdown if m.value.startswith("**Patents and licence:**")]
    assert lines == [f"**Patents and licence:** {docs.md_escape(LICENCE)}"]
    assert "\\*claims" in lines[0] and "\\[see" in lines[0] and "\\<b\\>" in lines[0]
    plain = at.get_by_key(docs.card(METHODS["vanilla"]).key)
    assert not [m for m in plain.markdown if "Patents and licence" in m.value]
    # a new family gets its header, in the registry's family order (the pickers' order)
    headers = [h.value for h in at.header]
    assert "Surrogate" in headers
    ranks = [FAMILY_ORDER.index(h) if h in FAMILY_ORDER else len(FAMILY_ORDER) for h in headers]
    assert ranks == sorted(ranks)
    assert docs.FAMILY_NOTES["Surrogate"] in [c.value for c in at.caption]


def test_a_new_family_is_offered_by_every_picker_in_family_order(method, default_bundle):
    offered = offered_methods(default_bundle)
    assert method in offered
    assert offered == [m for m in method_order() if m in offered]  # Explore, Compare, Sanity, Faithfulness, Batch
    families = [METHODS[m].family for m in offered]
    assert families == sorted(families, key=lambda f: FAMILY_ORDER.index(f) if f in FAMILY_ORDER else 99)
    assert method_label(method) == "Surrogate · Test regions"


# ---- Explore and Compare with a region method -----------------------------------------------------------


@pytest.mark.slow
def test_explore_runs_a_region_method_and_outlines_its_regions(method):
    at = start()
    at.selectbox(key=state.METHOD).set_value(method).run()
    assert not at.exception, at.exception
    assert method_label(method) in at.selectbox(key=state.METHOD).options
    rec = record(at, method, {}, CAT_TOP)
    assert rec.regions is not None and rec.regions.shape == rec.attribution.shape[-2:]
    # the caption carries the record's fit, the notes show, and the overlay says it outlines the regions
    shown = texts(at)
    assert any(fit_text(rec) in text for text in shown) and fit_text(rec)
    assert all(note in shown for note in rec.notes)
    captions = [c for image in main_images(at) for c in image.captions]
    assert any("superpixels outlined" in c for c in captions)
    # what the page renders (render_record) is the overlay with the regions' outlines, and only those pixels differ
    view = view_of(at)
    page = expected(at, rec, view)
    sel = selection(at)
    plain = rnd.render_for_image(rec.attribution, view, image=sel.image, bundle=sel.bundle,
                                 preprocessing=sel.preprocessing)
    changed = (page.overlay != plain.overlay).any(axis=-1)
    box = sel.bundle.crop_geometry(sel.image.size, sel.preprocessing)
    outline = rnd.region_boundaries(rec.regions, page.overlay.shape[1::-1], box)
    assert changed.any() and not (changed & ~outline).any()


def test_compare_panels_show_the_fit_and_the_notes(method):
    at = start(session={state.COMPARE_METHODS: [method]}, page=COMPARE)
    assert not at.exception, at.exception
    rec = record(at, method, {}, CAT_TOP)
    captions = [c for image in main_images(at) for c in image.captions]
    fit = " · ".join(fit_parts(rec.extras, hints=False))
    assert fit and sum(fit in c for c in captions) == 2  # both target panels, not the difference
    notes = [c.value for c in at.caption if c.value.startswith(":material/info:")]
    assert len(notes) == 2 and all(rec.notes[0] in n for n in notes)


def test_panel_notes_are_the_records_and_none_for_the_difference():
    class Record:
        notes = ("the map is all zero",)

    class Panel:
        column, record = 3, Record()

    assert panel_notes(Panel()) == ("the map is all zero",)
    Panel.column = "difference"
    assert panel_notes(Panel()) == ()
