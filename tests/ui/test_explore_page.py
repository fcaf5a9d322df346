"""AppTest: the Explore page renders, reacts to its widgets, and re-renders view changes from the cache."""

from __future__ import annotations

import json

import pytest
from streamlit.testing.v1 import AppTest

from tests.conftest import ROOT
from ui.explanations import explanation_cache

TIMEOUT = 120


@pytest.fixture
def app():
    explanation_cache().clear()
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, at.exception
    return at


def _trace_type(chart) -> str:
    return json.loads(chart.proto.spec)["data"][0].get("type", "")


def _heatmap_json(at) -> str:
    charts = [c for c in at.get("plotly_chart") if _trace_type(c) == "heatmap"]
    assert charts, "no heatmap on the page"
    return charts[0].proto.spec


def test_explore_renders_predictions_and_heatmap(app):
    assert not app.error, [e.value for e in app.error]
    assert app.title[0].value == "Explore"
    specs = [c.proto.spec for c in app.get("plotly_chart")]
    assert any("Egyptian cat" in s for s in specs), "predictions chart should list the cat sample's top class"
    assert any(_trace_type(c) == "heatmap" for c in app.get("plotly_chart"))
    assert len(app.get("imgs")) >= 1 or len(app.get("image")) >= 1


def test_changing_method_target_and_colormap_changes_output(app):
    first = _heatmap_json(app)
    app.selectbox(key="method").set_value("input_x_gradient").run()
    assert not app.exception
    second = _heatmap_json(app)
    assert second != first
    app.segmented_control(key="target_mode").set_value("Runner-up").run()
    assert not app.exception
    third = _heatmap_json(app)
    assert third != second
    app.selectbox(key="view.colormap").set_value("viridis").run()
    assert _heatmap_json(app) != third


def test_view_change_does_not_call_the_explainer(app):
    calls = explanation_cache().calls
    assert calls >= 1
    app.selectbox(key="view.colormap").set_value("hot").run()
    app.slider(key="view.alpha").set_value(0.8).run()
    app.selectbox(key="view.sign").set_value("signed").run()
    assert not app.exception
    assert explanation_cache().calls == calls
    # and returning to an earlier method is instant: cached, no new call
    app.selectbox(key="method").set_value("input_x_gradient").run()
    after_new = explanation_cache().calls
    assert after_new == calls + 1
    app.selectbox(key="method").set_value("vanilla").run()
    assert explanation_cache().calls == after_new


def test_url_query_string_restores_the_selection():
    """A shared link restores model, sample, method, target and layer (widgets bound to query params)."""
    explanation_cache().clear()
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    at.query_params["sample"] = "coffee.png"
    at.query_params["model"] = "efficientnet_lite0 · offline default"
    at.query_params["method"] = "CAM · Grad-CAM"
    at.query_params["target_mode"] = "Runner-up"
    at.query_params["layer"] = "_blocks.15 [320×7×7]"
    at.run()
    assert not at.exception, at.exception
    assert at.selectbox(key="sample").value == "coffee.png"
    assert at.selectbox(key="method").value == "gradcam"
    assert at.segmented_control(key="target_mode").value == "Runner-up"
    assert at.selectbox(key="layer").value == "_blocks.15"
    heatmap = _heatmap_json(at)
    assert "gradcam" in heatmap and "espresso" not in json.loads(heatmap)["layout"]["title"]["text"]
