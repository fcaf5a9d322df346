"""The dashboard's state: the URL holds stable values (model id, method id, class indices) and a link restores
them, on every page; widget values survive a page switch; on-demand results are kept per session."""

from __future__ import annotations

import streamlit as st

from tests.conftest import sample_path
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


# ---- issue 18, item 7: a link made on an upload ---------------------------------------------------------------


def test_a_link_made_on_an_upload_names_the_file_and_asks_for_it():
    """The URL of an upload names the file (never its bytes); a session opened from it switches to Upload, says
    that the link was made on that file and asks for it, instead of silently showing a sample."""
    name = "mine.png"
    coffee = (name, sample_path("coffee.png").read_bytes(), "image/png")
    at = start(query={"method": "gradcam"})
    at.segmented_control(key=state.IMAGE_SOURCE).set_value("Upload").run()
    at.file_uploader(key=state.UPLOADS).set_value(coffee).run()
    assert not at.exception
    query = _query(at)
    assert query["image"] == state.upload_link(name) == "upload:mine.png" and "sample" not in query
    assert all(len(value) < 100 for value in query.values())  # a name, not the image

    shared = start(query=query)
    assert shared.segmented_control(key=state.IMAGE_SOURCE).value == "Upload"
    notices = [i.value for i in shared.main.info]
    assert any("link was made on an uploaded image" in n and name in n for n in notices), notices
    assert not shared.get("plotly_chart"), "a sample was explained in place of the linked upload"
    assert not hasattr(selection(shared), "image")  # a Problem (the empty state), no Selection
    assert _query(shared)["image"] == "upload:mine.png"  # the link still names the file

    shared.file_uploader(key=state.UPLOADS).set_value(coffee).run()
    assert not shared.exception
    assert not [i.value for i in shared.main.info if "link was made" in i.value]
    assert selection(shared).image_name == name
    assert heatmap(shared).title.startswith("Grad-CAM · ")  # the link's method, on the upload


def test_a_sample_link_is_still_a_sample():
    at = start(query={"image": "upload:"})  # an empty name is no upload: the default sample, no notice
    assert at.segmented_control(key=state.IMAGE_SOURCE).value == "Samples"
    assert not [i.value for i in at.main.info if "link was made" in i.value]
    assert "image" not in _query(at)


# ---- issue 18, item 21: reset the current page's controls -------------------------------------------------------


def test_reset_brings_this_pages_controls_back_and_keeps_image_uploads_and_model():
    at = start()
    defaults = {state.METHOD: at.selectbox(key=state.METHOD).value,
                state.view_key(state.VIEW, "colormap"): at.selectbox(key=state.view_key(state.VIEW, "colormap")).value}
    at.selectbox(key=state.MODEL).set_value("lenet_digits").run()  # a small model: Compare's default grid is quick
    at.segmented_control(key=state.IMAGE_SOURCE).set_value("Upload").run()
    at.file_uploader(key=state.UPLOADS).set_value(("mine.png", sample_path("coffee.png").read_bytes(),
                                                   "image/png")).run()
    at.selectbox(key=state.METHOD).set_value("input_x_gradient").run()
    at.selectbox(key=state.view_key(state.VIEW, "colormap")).set_value("viridis").run()
    at.switch_page(COMPARE).run()
    assert not at.exception
    panel_kind = at.radio(key=state.COMPARE_PANEL_KIND).value
    other_kind = next(o for o in at.radio(key=state.COMPARE_PANEL_KIND).options if o != panel_kind)
    at.radio(key=state.COMPARE_PANEL_KIND).set_value(other_kind).run()

    at.button(key=state.RESET_PAGE).click().run()  # on Compare: Compare's controls only
    assert not at.exception
    assert at.radio(key=state.COMPARE_PANEL_KIND).value == panel_kind
    at.switch_page(EXPLORE).run()
    assert at.selectbox(key=state.METHOD).value == "input_x_gradient"  # Explore's were not touched

    at.button(key=state.RESET_PAGE).click().run()  # on Explore
    assert not at.exception
    for key, value in defaults.items():
        assert at.selectbox(key=key).value == value, key
    assert at.selectbox(key=state.MODEL).value == "lenet_digits"
    assert at.segmented_control(key=state.IMAGE_SOURCE).value == "Upload"
    assert selection(at).image_name == "mine.png"
    assert heatmap(at).title.startswith("Vanilla gradient · ")


def test_page_control_keys_are_the_pages_own():
    keys = ["method", "view.sign", "param.rise.n_masks", "layer_scope", "compare.methods", "sweep.method", "model",
            "sample", "uploads", "image_source", "preprocessing", "faith.steps", "batch.folder", "batch.filter.classes",
            "_kept_uploads", "methodical"]
    assert state.page_control_keys("explore", keys) == ["method", "view.sign", "param.rise.n_masks", "layer_scope"]
    assert state.page_control_keys("compare", keys) == ["compare.methods", "sweep.method"]
    assert state.page_control_keys("batch", keys) == ["batch.filter.classes"]  # the run folder stays
    assert state.page_control_keys("methods", keys) == []


def test_a_linked_file_name_is_text_not_markdown():
    at = start(query={"image": "upload:[click](http://example.com) **x**.png"})
    (notice,) = [i.value for i in at.main.info if "link was made" in i.value]
    assert "\\[click\\]" in notice and "\\*\\*x\\*\\*" in notice  # escaped: no link, no emphasis
