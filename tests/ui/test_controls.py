"""The shared controls: a clicked prediction bar or a class from the searchable list becomes the target; a CAM
method offers the layer catalogue with its shapes."""

from __future__ import annotations

import streamlit as st

from explainers import Contrast
from tests.ui.helpers import assert_heatmap_shows, expected, heatmap, record, start, view_of
from ui import state
from ui.controls import on_prediction_click


def test_clicking_a_prediction_bar_sets_the_target(monkeypatch):
    session = {state.PREDICTIONS_CHART: {"selection": {"points": [{"customdata": 282, "x": 0.1}]}}}
    monkeypatch.setattr(st, "session_state", session)
    on_prediction_click()
    assert session[state.TARGET_MODE] == "Class" and session[state.TARGET_CLASS] == 282
    session = {state.PREDICTIONS_CHART: {"selection": {"points": []}}}
    monkeypatch.setattr(st, "session_state", session)
    on_prediction_click()
    assert state.TARGET_CLASS not in session


def test_class_target_from_the_searchable_list_changes_the_heatmap():
    at = start()
    assert heatmap(at).title == "Vanilla gradient · Egyptian cat"
    at.segmented_control(key=state.TARGET_MODE).set_value("Class").run()
    at.selectbox(key=state.TARGET_CLASS).set_value(281).run()  # tabby
    assert not at.exception
    # what changed: the title names the class, and the map is the tabby record's
    shown = assert_heatmap_shows(at, expected(at, record(at, "vanilla", {}, 281), view_of(at)))
    assert shown.title == "Vanilla gradient · tabby"
    at.segmented_control(key=state.TARGET_MODE).set_value("Contrast").run()
    assert not at.exception
    contrast = assert_heatmap_shows(at, expected(at, record(at, "vanilla", {}, Contrast(285, 282)), view_of(at)))
    assert contrast.title == "Vanilla gradient · Egyptian cat vs tiger cat"


def test_cam_method_shows_the_layer_catalogue_with_shapes():
    at = start()
    at.selectbox(key=state.METHOD).set_value("gradcam").run()
    assert not at.exception
    layer = at.selectbox(key=state.LAYER)
    assert layer.value == "_head_act"
    assert len(layer.options) > 20 and any("[1280×7×7]" in option for option in layer.options)
    assert heatmap(at).title == "Grad-CAM · Egyptian cat · _head_act"
    at.selectbox(key=state.LAYER).set_value("_blocks.10").run()
    assert not at.exception
    # another layer, another map: the title names it and the map is that layer's record
    shown = assert_heatmap_shows(at, expected(at, record(at, "gradcam", {"relu": True}, 285, "_blocks.10"),
                                              view_of(at)))
    assert shown.title == "Grad-CAM · Egyptian cat · _blocks.10"


def test_a_target_below_the_top_five_has_its_probability_under_the_chart():
    """No bar shows a class outside the top 5, so its probability and rank are said under the chart (issue 18)."""
    at = start()
    assert not [c for c in at.caption if "rank" in c.value]  # the predicted class has its bar
    at.segmented_control(key=state.TARGET_MODE).set_value("Class").run()
    at.selectbox(key=state.TARGET_CLASS).set_value(1).run()  # goldfish: far below the top 5 on the cat
    assert not at.exception
    (line,) = [c.value for c in at.caption if "rank" in c.value]
    assert line.startswith("goldfish (1): ") and "%" in line
    rank = int(line.rsplit("rank ", 1)[1])
    assert rank > 5
