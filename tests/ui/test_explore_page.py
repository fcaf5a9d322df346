"""AppTest: the Explore page renders, reacts to its widgets, and re-renders view changes from the cache.

Expected pictures are rebuilt from the cached record with the backend's render pipeline, never hard-coded.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from explainers import METHODS, available_methods, class_probabilities, load_image
from explainers import render as rnd
from tests.conftest import sample_path
from tests.ui.helpers import (
    assert_heatmap_shows,
    caption_range,
    expected,
    heatmap,
    printed,
    record,
    selection,
    start,
    texts,
    top_class,
    view_of,
)
from ui import state
from ui.controls import LAYER_SCOPES, method_label
from ui.explanations import cache_key, cached, canonical, explanation_cache, request_seconds
from ui.figures import plotly_scale
from ui.widgets import seconds_text

CAT_TOP, CAT_SECOND = 285, 282  # Egyptian cat, tiger cat (asserted from the model in test_cat_top_classes)
# Small occlusion parameters: a 1-channel map in a fraction of a second (16 windows instead of 169).
QUICK_OCCLUSION = {"window": 56, "stride": 56, "baseline": "zero"}


def _params(method: str, values: dict) -> dict[str, object]:
    """Session state that gives a method's parameter widgets these values before the method is first chosen."""
    return {f"{state.PARAM}.{method}.{name}": value for name, value in values.items()}


@pytest.fixture
def app():
    return start()


def test_cat_top_classes(default_bundle):
    probs = class_probabilities(default_bundle, default_bundle.preprocess(load_image(sample_path("cat.png"))))[0]
    assert [int(i) for i in np.argsort(-probs)[:2]] == [CAT_TOP, CAT_SECOND]


def test_explore_renders_predictions_and_heatmap(app):
    assert not app.error, [e.value for e in app.error]
    assert app.title[0].value == "Explore"
    specs = [c.proto.spec for c in app.get("plotly_chart")]
    assert any("Egyptian cat" in s for s in specs), "predictions chart should list the cat sample's top class"
    assert_heatmap_shows(app, expected(app, record(app, "vanilla", {}, CAT_TOP), view_of(app)))
    assert len(app.main.get("image")) >= 2  # the original and the overlay


def test_changing_method_target_and_colormap_changes_output(app):
    assert heatmap(app).title == "Vanilla gradient · Egyptian cat"
    app.selectbox(key="method").set_value("input_x_gradient").run()
    assert not app.exception
    shown = assert_heatmap_shows(app, expected(app, record(app, "input_x_gradient", {}, CAT_TOP), view_of(app)))
    assert shown.title == "Input × Gradient · Egyptian cat"
    app.segmented_control(key="target_mode").set_value("Runner-up").run()
    assert not app.exception
    runner_up = assert_heatmap_shows(
        app, expected(app, record(app, "input_x_gradient", {}, CAT_SECOND), view_of(app)))
    assert runner_up.title == "Input × Gradient · tiger cat"
    app.selectbox(key="view.colormap").set_value("viridis").run()
    recoloured = heatmap(app)
    # only the colours changed: the same values and title, on viridis's colour scale
    assert recoloured.title == runner_up.title
    np.testing.assert_array_equal(recoloured.z, runner_up.z)
    assert recoloured.colorscale == json.loads(json.dumps(plotly_scale(rnd.colour_scale("viridis", signed=False))))
    assert recoloured.colorscale != runner_up.colorscale


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
    """A shared link restores sample, model, method, target and layer, from stable ids (not display labels)."""
    at = start(query={"sample": "coffee.png", "model": "efficientnet_lite0", "method": "gradcam",
                      "target": "Runner-up", "layer": "_blocks.15"})
    assert at.selectbox(key="sample").value == "coffee.png"
    assert at.selectbox(key="model").value == "efficientnet_lite0"
    assert at.selectbox(key="method").value == "gradcam"
    assert at.segmented_control(key="target_mode").value == "Runner-up"
    assert at.selectbox(key="layer").value == "_blocks.15"
    title = heatmap(at).title
    assert title.startswith("Grad-CAM · ") and title.endswith(" · _blocks.15")
    assert "espresso" not in title  # coffee's runner-up, not its top class


# ---- issue 7 ----------------------------------------------------------------------------------------------


def test_sign_modes_on_a_one_channel_map():
    """positive is not absolute when the map has negatives, negative is not empty, each is render's picture."""
    at = start(session=_params("occlusion", QUICK_OCCLUSION))
    at.selectbox(key="method").set_value("occlusion").run()
    assert not at.exception
    rec = record(at, "occlusion", QUICK_OCCLUSION, CAT_TOP)
    assert rec.attribution.shape[0] == 1 and rec.attribution.min() < 0 < rec.attribution.max()  # the premise
    shown, captions = {}, {}
    for sign in ("absolute", "positive", "negative", "signed"):
        at.selectbox(key="view.sign").set_value(sign).run()
        assert not at.exception
        view = view_of(at)
        assert view.sign == sign
        want = expected(at, rec, view)
        shown[sign] = assert_heatmap_shows(at, want)
        captions[sign] = caption_range(at)
        assert captions[sign] == printed(want.lo, want.hi)
    raw = rec.attribution[0]
    # the map's own extremes, straight from the record: the sign is not applied on top of a |.| reduction
    assert shown["positive"].zmax <= raw.max() + 1e-6 and shown["negative"].zmax <= -raw.min() + 1e-6
    assert captions["positive"] != captions["absolute"]
    assert not np.allclose(shown["positive"].z, shown["absolute"].z, equal_nan=True)
    assert shown["negative"].zmax > 0 and captions["negative"] != ("0", "0")
    assert np.nanmax(shown["negative"].z) > 0
    assert shown["signed"].zmin < 0 < shown["signed"].zmax


def test_scorecam_cost_caption_counts_the_default_layer_channels(default_bundle):
    """Score-CAM on _head_act (1280 channels): 1 + 1280 forward passes, counted after the layer is resolved."""
    layer = default_bundle.layer_entry(default_bundle.default_layer)
    assert (layer.name, layer.channels) == ("_head_act", 1280)
    passes = 1 + layer.channels
    at = start()
    # Score-CAM takes ~30 s here: mark it as a run the user cancelled, so the page shows its cost and a Run
    # button instead of computing it.
    at.session_state[state.CANCELLED_RUN] = cache_key(selection(at), canonical(selection(at), "scorecam", {}, CAT_TOP))
    at.selectbox(key="method").set_value("scorecam").run()
    assert not at.exception
    assert at.selectbox(key="layer").value == "_head_act"
    assert any("Cancelled" in text for text in texts(at)), "Score-CAM ran; the test's shortcut broke"
    costs = [c.value for c in at.caption if "cost:" in c.value]
    assert len(costs) == 1 and f"cost: {passes} forward passes per image" in costs[0], costs


def test_smoothgrad_shows_only_its_base_methods_parameters():
    at = start(session=_params("smoothgrad", {"n_samples": 2, "n_steps": 2}))
    at.selectbox(key="method").set_value("smoothgrad").run()
    assert not at.exception
    keys = {n.key for n in at.number_input} | {s.key for s in at.selectbox}
    assert at.selectbox(key="param.smoothgrad.base").value == "vanilla"
    assert "param.smoothgrad.n_samples" in keys
    assert not {"param.smoothgrad.n_steps", "param.smoothgrad.rule", "param.smoothgrad.baseline"} & keys
    at.selectbox(key="param.smoothgrad.base").set_value("integrated_gradients").run()
    assert not at.exception
    keys = {n.key for n in at.number_input} | {s.key for s in at.selectbox}
    assert {"param.smoothgrad.n_steps", "param.smoothgrad.rule", "param.smoothgrad.baseline"} <= keys
    assert at.number_input(key="param.smoothgrad.n_steps").value == 2


def test_integrated_gradients_completeness_is_a_share_of_the_score_gap():
    at = start(session=_params("integrated_gradients", {"n_steps": 5}))
    at.selectbox(key="method").set_value("integrated_gradients").run()
    assert not at.exception
    rec = record(at, "integrated_gradients", {"n_steps": 5, "rule": "gausslegendre", "baseline": "black"}, CAT_TOP)
    delta = float(np.ravel(rec.extras["completeness_delta"])[0])
    gap = float(np.ravel(rec.extras["score_gap"])[0])
    (caption,) = [c.value for c in at.caption if "completeness" in c.value]
    match = re.search(r"completeness error ([\d.]+)% of f\(x\) − f\(baseline\) = ([-\d.e+]+)", caption)
    assert match, caption
    assert float(match.group(1)) == pytest.approx(100 * abs(delta) / abs(gap), abs=0.05)
    assert match.group(2) == f"{gap:.3g}"
    assert abs(delta) / abs(gap) > 0.05 and "raise n_steps" in caption  # 5 steps are too few: say what to do


def test_class_mode_preselects_the_current_images_top_class(default_bundle):
    coffee_top = top_class(default_bundle, "coffee.png")
    assert coffee_top != CAT_TOP
    at = start()
    at.segmented_control(key="target_mode").set_value("Class").run()
    assert at.selectbox(key="target_class").value == CAT_TOP
    at.selectbox(key="sample").set_value("coffee.png").run()
    assert not at.exception
    assert at.selectbox(key="target_class").value == coffee_top
    assert heatmap(at).title == f"Vanilla gradient · {default_bundle.categories[coffee_top]}"


def test_only_runnable_methods_are_offered_and_class_agnostic_ones_say_so(default_bundle):
    at = start()
    offered = at.selectbox(key="method").options
    assert METHODS["attention_rollout"].unavailable_reason(default_bundle.model)  # a CNN: no attention blocks
    assert method_label("attention_rollout") not in offered
    assert sorted(offered) == sorted(method_label(m) for m in available_methods(default_bundle.model))
    at.selectbox(key="method").set_value("eigencam").run()
    assert not at.exception
    title = heatmap(at).title
    assert title == "Eigen-CAM · class-agnostic · _head_act"


def test_layer_list_shows_blocks_first_and_every_module_on_request(default_bundle):
    every = len(default_bundle.layers)
    at = start()
    at.selectbox(key="method").set_value("gradcam").run()
    assert not at.exception
    assert at.radio(key="layer_scope").value == LAYER_SCOPES[0]
    blocks = at.selectbox(key="layer").options
    assert 1 < len(blocks) < every
    assert blocks[0] == "_head_act [1280×7×7] · default"
    assert heatmap(at).title == "Grad-CAM · Egyptian cat · _head_act"  # the layer is named
    at.radio(key="layer_scope").set_value(LAYER_SCOPES[1]).run()
    assert not at.exception
    modules = at.selectbox(key="layer").options
    assert len(modules) == every == 148
    assert modules[0] == blocks[0] and set(blocks) < set(modules)
    assert at.selectbox(key="layer").value == "_head_act"


def test_no_cancel_button_or_cancelled_text_after_a_finished_run():
    big = {"window": 112, "stride": 112, "baseline": "zero"}
    assert METHODS["occlusion"].passes(big).total > 2  # multi-pass: it runs with a Cancel button and a bar
    at = start(session=_params("occlusion", big))
    at.selectbox(key="method").set_value("occlusion").run()
    assert not at.exception
    record(at, "occlusion", big, CAT_TOP)  # it finished
    assert heatmap(at).title == "Occlusion · Egyptian cat"
    assert state.CANCEL_BUTTON not in {b.key for b in at.button}
    assert not [b.label for b in at.button if "Cancel" in b.label]
    assert not [t for t in texts(at) if "Cancelled" in t]
    assert not at.main.get("progress")


def test_signed_switches_to_a_diverging_colormap_the_user_can_still_change(app):
    assert app.selectbox(key="view.colormap").value == rnd.DEFAULT_SEQUENTIAL
    app.selectbox(key="view.sign").set_value("signed").run()
    assert not app.exception
    assert app.selectbox(key="view.colormap").value == "RdBu_r"
    signed = heatmap(app)
    assert signed.colorscale == json.loads(json.dumps(plotly_scale(rnd.colour_scale("RdBu_r", signed=True))))
    assert signed.zmin == -signed.zmax
    app.selectbox(key="view.colormap").set_value("viridis").run()  # the user's choice wins
    app.slider(key="view.alpha").set_value(0.7).run()  # and survives other view changes
    assert not app.exception
    assert app.selectbox(key="view.colormap").value == "viridis"
    assert app.selectbox(key="view.sign").value == "signed"
    assert heatmap(app).colorscale == json.loads(json.dumps(plotly_scale(rnd.colour_scale("viridis", signed=True))))


def test_a_single_colour_image_shows_the_backends_notes_beside_the_map():
    """A flat grey upload: the map is finite and the page says why it should not be read as structure."""
    from tests.ui.helpers import solid_png

    at = start()
    at.segmented_control(key=state.IMAGE_SOURCE).set_value("Upload").run()
    at.file_uploader(key=state.UPLOADS).set_value(("grey.png", solid_png(64, 64), "image/png")).run()
    assert not at.exception and not at.main.error
    record = selection(at)
    notes = [i.value for i in at.main.info]
    assert any(n.startswith("the image is a single colour") for n in notes), notes
    assert record.image_name == "grey.png"


# ---- issue 18 ------------------------------------------------------------------------------------------------


def test_the_layers_radio_shows_its_choice_after_a_model_change(default_bundle):
    """Item 15: the browser keeps a radio's choice as its label ("blocks (23)"); another model changes the counts,
    so the page must send the choice afresh, with the new label, or neither option looks chosen."""
    at = start()
    at.selectbox(key=state.METHOD).set_value("gradcam").run()
    radio = at.radio(key=state.LAYER_SCOPE)
    before = radio.options
    at.selectbox(key=state.MODEL).set_value("lenet_digits").run()
    assert not at.exception
    radio = at.radio(key=state.LAYER_SCOPE)
    assert radio.options != before  # the premise: the counts in the labels changed
    assert radio.value == LAYER_SCOPES[0]
    assert radio.proto.set_value and radio.proto.raw_value == radio.options[0], radio.proto
    at.radio(key=state.LAYER_SCOPE).set_value(LAYER_SCOPES[1]).run()  # the user's choice holds across models
    at.selectbox(key=state.MODEL).set_value("efficientnet_lite0").run()
    radio = at.radio(key=state.LAYER_SCOPE)
    assert radio.value == LAYER_SCOPES[1] and radio.proto.raw_value == radio.options[1]


def _rise_budget(monkeypatch, sel) -> float:
    """RISE's estimate here, and a budget below it: RISE (2000 forward passes) is about two minutes on the 2-core
    test machine, over AUTO_RUN_SECONDS; on a faster one the budget is lowered to half its estimate."""
    import ui.explanations

    seconds = request_seconds(sel, canonical(sel, "rise", {}, CAT_TOP))
    budget = min(ui.explanations.AUTO_RUN_SECONDS, seconds / 2)
    monkeypatch.setattr(ui.explanations, "AUTO_RUN_SECONDS", budget)
    return seconds


def test_a_method_over_the_time_budget_waits_for_run_and_shows_its_estimate(monkeypatch):
    """Item 9: picking RISE shows its measured estimate and a Run button instead of computing it; a cheap method
    computes at once; Run computes RISE (here with a handful of masks)."""
    at = start()
    sel = selection(at)
    assert cached(sel, canonical(sel, "vanilla", {}, CAT_TOP)) is not None  # one pass: computed at once
    seconds = _rise_budget(monkeypatch, sel)
    calls = explanation_cache().calls
    at.selectbox(key=state.METHOD).set_value("rise").run()
    assert not at.exception
    assert explanation_cache().calls == calls and cached(sel, canonical(sel, "rise", {}, CAT_TOP)) is None
    (run,) = [b for b in at.button if b.key == state.RUN_AGAIN]
    assert run.label == f"Run RISE ({seconds_text(seconds)})" and seconds_text(seconds).startswith("about ")
    assert any("wait for Run" in i.value and seconds_text(seconds) in i.value for i in at.main.info)
    costs = [c.value for c in at.caption if "cost:" in c.value]
    assert len(costs) == 1 and f"{seconds_text(seconds)} on this machine" in costs[0], costs
    assert not at.get("plotly_chart")[1:], "RISE's heatmap was drawn"  # only the predictions chart
    # a multi-pass method under the budget (occlusion on 16 windows) starts by itself
    for name, value in QUICK_OCCLUSION.items():
        at.session_state[f"{state.PARAM}.occlusion.{name}"] = value
    at.selectbox(key=state.METHOD).set_value("occlusion").run()
    assert not at.exception
    assert heatmap(at).title == "Occlusion · Egyptian cat"
    assert state.RUN_AGAIN not in {b.key for b in at.button}


def test_run_computes_the_method_that_waited(monkeypatch):
    at = start(session=_params("rise", {"n_masks": 8}))
    sel = selection(at)
    import ui.explanations

    seconds = request_seconds(sel, canonical(sel, "rise", {"n_masks": 8}, CAT_TOP))
    monkeypatch.setattr(ui.explanations, "AUTO_RUN_SECONDS", seconds / 2)  # make the small RISE wait
    at.selectbox(key=state.METHOD).set_value("rise").run()
    assert cached(sel, canonical(sel, "rise", {"n_masks": 8}, CAT_TOP)) is None
    at.button(key=state.RUN_AGAIN).click().run()
    assert not at.exception
    assert heatmap(at).title.startswith("RISE · ")
    record(at, "rise", {"n_masks": 8}, CAT_TOP)
