"""AppTest: the Compare page renders its grid, reacts to its widgets, and re-renders view changes from the cache."""

from __future__ import annotations

import json

import pytest
from streamlit.testing.v1 import AppTest

from tests.conftest import ROOT
from ui.explanations import explanation_cache

TIMEOUT = 300


@pytest.fixture
def app():
    explanation_cache().clear()
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    at.run()
    at.switch_page("app_pages/compare.py")
    at.session_state["compare.methods"] = ["vanilla", "gradcam", "input_x_gradient"]  # quick rows
    at.run()
    assert not at.exception, at.exception
    return at


def _images(at) -> list:
    """The st.image elements of the main area (the sidebar's gallery and model view excluded)."""
    return list(at.main.get("image"))


def _image_fingerprint(at) -> str:
    return json.dumps([str(i.proto) for i in _images(at)])


def test_compare_renders_grid_difference_and_agreement(app):
    assert app.title[0].value == "Compare"
    assert not app.error, [e.value for e in app.error]
    # 3 method rows x (2 targets + difference column), each an st.image
    assert len(_images(app)) >= 9
    markdown = " ".join(m.value for m in app.markdown)
    assert "Egyptian cat" in markdown and "tiger cat" in markdown
    assert "logit margin" in markdown
    charts = [json.loads(c.proto.spec) for c in app.get("plotly_chart")]
    agreement = [c for c in charts if c["data"][0].get("type") == "heatmap"]
    assert len(agreement) == 2  # Spearman and IoU
    names = agreement[0]["data"][0]["x"]
    assert set(names) == {"Vanilla gradient", "Grad-CAM", "Input × Gradient"}
    assert "Per panel" in " ".join(c.value for c in app.caption)


def test_linked_scale_adds_the_shared_colorbar_and_changes_panels(app):
    before = _image_fingerprint(app)
    app.radio(key="compare.scale").set_value("Linked per method row (raw units)").run()
    assert not app.exception
    captions = " ".join(c.value for c in app.caption)
    assert captions.count("linked scale") == 3
    assert _image_fingerprint(app) != before


def test_method_and_target_changes_change_the_grid_view_changes_do_not_recompute(app):
    calls = explanation_cache().calls
    assert calls == 6  # 3 methods x 2 targets, each computed once
    app.selectbox(key="compare.view.colormap").set_value("viridis").run()
    app.radio(key="compare.panel_kind").set_value("Heatmap").run()
    assert explanation_cache().calls == calls
    app.multiselect(key="compare.extra_targets").set_value([281]).run()  # add "tabby"
    assert not app.exception
    assert explanation_cache().calls == calls + 3
    assert "tabby" in " ".join(m.value for m in app.markdown)
    app.multiselect(key="compare.methods").set_value(["vanilla", "gradcam"]).run()
    assert explanation_cache().calls == calls + 3  # fewer rows: all cached
    assert len(_images(app)) >= 2 * 4


def test_layer_sweep_runs_over_blocks(app):
    app.toggle(key="sweep.run").set_value(True).run()
    assert not app.exception
    captions = [entry.caption for image in _images(app) for entry in image.proto.imgs]
    assert "_blocks.15" in captions and "_head_act" in captions
