"""The dashboard's state: the URL holds stable values (model id, method id, class indices) and a link restores
them, on every page; widget values survive a page switch; on-demand results are kept per session."""

from __future__ import annotations

import streamlit as st

from tests.ui.helpers import COMPARE, EXPLORE, heatmap, selection, start, top_class
from ui import state


def _query(at) -> dict[str, str]:
    return {name: str(value) for name, value in at.query_params.items()}


def test_the_url_holds_ids_not_display_labels():
    at = start()
    at.selectbox(key="method").set_value("gradcam").run()
    at.segmented_control(key="target_mode").set_value("Class").run()
    at.selectbox(key="target_class").set_value(281).run()
    assert not at.exception
    assert heatmap(at).title == "Grad-CAM · tabby · _head_act"
    assert _query(at) == {"sample": "cat.png", "model": "efficientnet_lite0", "method": "gradcam",
                          "target": "Class", "class": "281"}
    at.selectbox(key="layer").set_value("_blocks.15").run()
    assert _query(at)["layer"] == "_blocks.15"


def test_a_contrast_link_restores_contrast_mode():
    at = start(query={"contrast": "281,282"})
    assert at.segmented_control(key="target_mode").value == "Contrast"
    assert (at.selectbox(key="contrast_a").value, at.selectbox(key="contrast_b").value) == (281, 282)
    assert heatmap(at).title == "Vanilla gradient · tabby vs tiger cat"
    assert _query(at)["contrast"] == "281,282" and _query(at)["target"] == "Contrast"


def test_a_sample_link_is_the_image_on_explore_and_on_compare(default_bundle):
    at = start(query={"sample": "coffee.png"}, session={"compare.methods": ["vanilla"]})
    assert at.selectbox(key="sample").value == "coffee.png"
    assert selection(at).image_name == "coffee.png"
    top = default_bundle.categories[top_class(default_bundle, "coffee.png")]
    assert heatmap(at).title == f"Vanilla gradient · {top}"
    at.switch_page(COMPARE).run()
    assert not at.exception
    assert at.title[0].value == "Compare"
    assert at.selectbox(key="sample").value == "coffee.png" and selection(at).image_name == "coffee.png"
    assert _query(at)["sample"] == "coffee.png"
    headers = [m.value for m in at.main.markdown]
    assert any(f"**{top} (" in text and "predicted" in text for text in headers), headers


def test_widget_values_survive_a_look_at_another_page():
    """Every widget that keeps its value (``persist_state=state.KEEP``) still holds it after another page ran."""
    at = start(session={state.COMPARE_METHODS: ["vanilla"]})
    at.selectbox(key=state.METHOD).set_value("input_x_gradient").run()
    at.selectbox(key=state.view_key(state.VIEW, "colormap")).set_value("viridis").run()
    at.switch_page(COMPARE).run()
    at.radio(key=state.COMPARE_PANEL_KIND).set_value("Heatmap").run()
    assert not at.exception
    at.switch_page(EXPLORE).run()
    assert not at.exception
    assert at.selectbox(key=state.METHOD).value == "input_x_gradient"
    assert at.selectbox(key=state.view_key(state.VIEW, "colormap")).value == "viridis"
    assert heatmap(at).title == "Input × Gradient · Egyptian cat"
    at.switch_page(COMPARE).run()
    assert at.radio(key=state.COMPARE_PANEL_KIND).value == "Heatmap"
    assert at.multiselect(key=state.COMPARE_METHODS).value == ["vanilla"]


def test_remembered_computes_once_per_key_and_keeps_the_latest(monkeypatch):
    monkeypatch.setattr(st, "session_state", {})
    computed = []

    def result(key):
        return state.remembered("store", key, lambda: computed.append(key) or f"result {key}", keep=2)

    assert [result(1), result(1), result(2)] == ["result 1", "result 1", "result 2"]
    assert computed == [1, 2]
    result(3)  # the oldest goes
    assert result(2) == "result 2" and computed == [1, 2, 3]
    result(1)
    assert computed == [1, 2, 3, 1]
