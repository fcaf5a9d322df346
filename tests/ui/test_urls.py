"""AppTest: the URL holds stable values (model id, method id, class indices), and a link restores them, on every
page."""

from __future__ import annotations

from tests.ui.helpers import COMPARE, heatmap, selection, start, top_class


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
