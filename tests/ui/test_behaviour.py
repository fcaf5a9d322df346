"""Dashboard behaviour: clear errors instead of tracebacks, bar clicks set the target, shared models stay safe."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from explainers import Contrast
from tests.conftest import ROOT
from tests.ui.helpers import assert_heatmap_shows, expected, heatmap, record, view_of
from ui.explanations import explanation_cache

TIMEOUT = 120


def _app() -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    at.run()
    assert not at.exception
    return at


def test_offline_zoo_model_shows_the_missing_file_message(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty cache: resnet18's weights are not there
    monkeypatch.setenv("SALIENCY_OFFLINE", "1")
    at = _app()
    at.selectbox(key="model").set_value("resnet18").run()
    assert not at.exception, "a traceback reached the page"
    errors = " ".join(e.value for e in at.error)
    assert "ModelUnavailableError" in errors
    assert "resnet18" in errors and "checkpoints" in errors and ".pth" in errors
    assert "efficientnet_lite0" in errors  # the fix: the offline default works
    # and the server keeps serving: back to the default model, the page works again
    at.selectbox(key="model").set_value("efficientnet_lite0").run()
    assert not at.exception and not at.error
    assert any('"type":"heatmap"' in c.proto.spec.replace(" ", "") for c in at.get("plotly_chart"))


def test_upload_mode_without_a_file_says_what_to_do():
    at = _app()
    at.segmented_control(key="image_source").set_value("Upload").run()
    assert not at.exception
    assert any("Upload an image" in i.value for i in at.main.info)
    assert not at.error
    # a real upload of an unreadable file: tests/ui/test_uploads.py::test_bad_upload_shows_a_clear_error


def test_clicking_a_prediction_bar_sets_the_target(monkeypatch):
    import streamlit as st

    from ui.controls import on_prediction_click

    state = {"predictions_chart": {"selection": {"points": [{"customdata": 282, "x": 0.1}]}}}
    monkeypatch.setattr(st, "session_state", state)
    on_prediction_click()
    assert state["target_mode"] == "Class" and state["target_class"] == 282
    state = {"predictions_chart": {"selection": {"points": []}}}
    monkeypatch.setattr(st, "session_state", state)
    on_prediction_click()
    assert "target_class" not in state


def test_class_target_from_the_searchable_list_changes_the_heatmap():
    at = _app()
    assert heatmap(at).title == "Vanilla gradient · Egyptian cat"
    at.segmented_control(key="target_mode").set_value("Class").run()
    at.selectbox(key="target_class").set_value(281).run()  # tabby
    assert not at.exception
    # what changed: the title names the class, and the map is the tabby record's
    shown = assert_heatmap_shows(at, expected(at, record(at, "vanilla", {}, 281), view_of(at)))
    assert shown.title == "Vanilla gradient · tabby"
    at.segmented_control(key="target_mode").set_value("Contrast").run()
    assert not at.exception
    contrast = assert_heatmap_shows(at, expected(at, record(at, "vanilla", {}, Contrast(285, 282)), view_of(at)))
    assert contrast.title == "Vanilla gradient · Egyptian cat vs tiger cat"


def test_cam_method_shows_the_layer_catalogue_with_shapes():
    at = _app()
    at.selectbox(key="method").set_value("gradcam").run()
    assert not at.exception
    layer = at.selectbox(key="layer")
    assert layer.value == "_head_act"
    assert len(layer.options) > 20 and any("[1280×7×7]" in option for option in layer.options)
    assert heatmap(at).title == "Grad-CAM · Egyptian cat · _head_act"
    at.selectbox(key="layer").set_value("_blocks.10").run()
    assert not at.exception
    # another layer, another map: the title names it and the map is that layer's record
    shown = assert_heatmap_shows(at, expected(at, record(at, "gradcam", {"relu": True}, 285, "_blocks.10"),
                                              view_of(at)))
    assert shown.title == "Grad-CAM · Egyptian cat · _blocks.10"


def test_two_sessions_explaining_on_one_shared_model_at_once(default_bundle):
    """Sessions share the cached model; the per-model lock keeps one call's hooks out of the other's."""
    from explainers import explain, load_image
    from ui.explanations import explain_cached
    from ui.sidebar import Selection

    explanation_cache().clear()
    image = load_image(ROOT / "assets/samples/cat.png")
    x = default_bundle.preprocess(image)
    expected_maps = {m: explain(default_bundle, x, m, target=285).attribution[0].numpy()
                     for m in ("guided_backprop", "vanilla")}
    results, errors = {}, []

    def worker(method):
        try:
            for image_hash in ("a", "b", "c"):  # distinct keys: every call really runs the explainer
                selection = Selection(image, "cat.png", f"{method}-{image_hash}", "efficientnet_lite0", "resize",
                                      default_bundle, x)
                result, from_cache = explain_cached(selection, method, {}, 285)
                assert not from_cache
                results[(method, image_hash)] = result.attribution
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(m,)) for m in expected_maps]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert len(results) == 6
    for (method, _), attribution in results.items():
        np.testing.assert_allclose(attribution, expected_maps[method], rtol=1e-5, atol=1e-7)
    from tests.explainers.helpers import hook_counts

    assert hook_counts(default_bundle.model) == 0
    assert explanation_cache().calls == 6


@pytest.mark.parametrize("page", ["app_pages/explore.py", "app_pages/compare.py", "app_pages/methods.py"])
def test_every_page_renders_without_exception(page):
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    at.run()
    at.switch_page(page)
    if page.endswith("compare.py"):
        at.session_state["compare.methods"] = ["vanilla", "gradcam"]
    at.run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]


def test_zoo_model_from_a_pre_seeded_cache_works_end_to_end(monkeypatch, tmp_path):
    """No download: the hub cache is filled with a seeded state dict under the expected file name."""
    import torch
    import torchvision

    from explainers.models import zoo
    from ui import models as ui_models

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("SALIENCY_OFFLINE", "1")
    torch.manual_seed(0)
    path = zoo.weights_file("resnet18")
    path.parent.mkdir(parents=True)
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    ui_models._cached_bundle.clear()
    ui_models.describe_model.clear()
    try:
        at = _app()
        assert "cached" in ui_models.describe_model("resnet18")
        at.selectbox(key="model").set_value("resnet18").run()
        assert not at.exception and not at.error, [e.value for e in at.error]
        at.selectbox(key="method").set_value("gradcam").run()
        assert not at.exception and not at.error
        assert at.selectbox(key="layer").value == "layer4"
        title = heatmap(at).title
        assert title.startswith("Grad-CAM · ") and title.endswith(" · layer4")
    finally:
        ui_models._cached_bundle.clear()
        ui_models.describe_model.clear()
