"""AppTest: Compare's models mode (issue 18): one column per model, each model's maps equal to separate explain()
calls on that model's own preprocessing, the agreement per method, and per-model targets where class lists
differ."""

from __future__ import annotations

import re

import numpy as np
import pytest
from scipy.stats import spearmanr

from explainers import class_probabilities, explain, load_model
from explainers import render as rnd
from explainers.models import DIGITS_MODEL
from tests.ui.helpers import COMPARE, main_images, panel_captions, printed, selection, start
from ui import state
from ui.compare import MODELS
from ui.compare_models import TWIN, model_selection
from ui.explanations import cached, canonical

DEFAULT = "efficientnet_lite0"
METHODS = ["vanilla", "gradcam", "integrated_gradients"]  # two of the shared pass, one computed on its own


@pytest.fixture(scope="module")
def digits_bundle():
    return load_model(DIGITS_MODEL)


def _models_app(methods=METHODS, extra=(DIGITS_MODEL,), **session):
    return start(session={state.COMPARE_METHODS: list(methods), state.COMPARE_COLUMNS: MODELS,
                          state.COMPARE_MODELS: list(extra), **session}, page=COMPARE)


def _header(at) -> list[str]:
    """The grid's header cells as the reader sees their text: without the zero-width break points and the
    markdown escapes (a user model's file name is escaped)."""
    return [re.sub(r"\\(.)", r"\1", m.value.replace("\u200b", "")) for m in at.markdown
            if m.value.startswith("**") and "gray[" in m.value]


def _record(at, bundle, model: str, method: str, target: int):
    """The cached record of one panel: the sidebar's image on ``model`` (its own preprocessing), as the cache
    keys it."""
    sel = model_selection(selection(at), model, bundle)
    found = cached(sel, canonical(sel, method, {}, target))
    assert found is not None, f"no cached {method} record on {model} for class {target}"
    return found


@pytest.mark.slow
def test_two_model_grid_equals_separate_explain_calls_per_model(default_bundle, digits_bundle):
    """Every panel of the two-model grid is the map explain() gives on that model alone, the image through that
    model's own preprocessing (224 px ImageNet normalisation; 32 px digits normalisation), for that model's own
    predicted class; the panel shows that map's range."""
    at = _models_app()
    assert not at.exception and not at.error, [e.value for e in at.error]
    image = selection(at).image
    captions = panel_captions(at)
    assert len(main_images(at)) == len(METHODS) * 3  # two models and the difference
    for model, bundle in ((DEFAULT, default_bundle), (DIGITS_MODEL, digits_bundle)):
        inputs = bundle.preprocess(image, "resize")
        target = int(np.argmax(class_probabilities(bundle, inputs)[0]))
        for method in METHODS:
            want = explain(bundle, inputs, method, target, seed=0).record(0).attribution
            got = _record(at, bundle, model, method, target).attribution
            assert np.shape(got) == np.shape(want)
            assert float(np.abs(np.asarray(got) - np.asarray(want)).max()) <= 1e-6
            lo, hi = printed(*rnd.value_range(rnd.to_map(want, "absolute", "max"), rnd.DEFAULT_CLIP_PERCENTILE))
            assert f"[{lo}, {hi}]" in captions, (model, method, captions)
    assert inputs.shape[-1] == 32 and default_bundle.input_size == 224  # the premise: two input sizes


def _maps_on_one_grid(first, second, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """|map| of two models' maps (each saw the whole image, resized) stretched to size = (width, height)."""
    return tuple(rnd.resize(rnd.to_map(a, "absolute", "max"), size) for a in (first, second))


def test_models_mode_draws_a_column_per_model_and_their_agreement(default_bundle, digits_bundle):
    at = _models_app(methods=["vanilla", "gradcam"])
    assert not at.exception and not at.error
    header = _header(at)
    assert any(h.startswith(f"**{DEFAULT}**") for h in header) and any(h.startswith(f"**{DIGITS_MODEL}**")
                                                                      for h in header)
    assert any(h.startswith("**Difference**") for h in header)
    assert len(main_images(at)) == 2 * 3
    (table,) = at.dataframe
    frame = table.value
    assert list(frame["Method"]) == ["Vanilla gradient", "Grad-CAM"]
    assert list(frame.columns) == ["Method", "Spearman (|map|)", "Top-10% IoU"]  # one pair: named in the caption
    image = selection(at).image
    for method, row in zip(("vanilla", "gradcam"), frame.itertuples(index=False)):
        records = []
        for model, bundle in ((DEFAULT, default_bundle), (DIGITS_MODEL, digits_bundle)):
            inputs = bundle.preprocess(image, "resize")
            target = int(np.argmax(class_probabilities(bundle, inputs)[0]))
            records.append(_record(at, bundle, model, method, target).attribution)
        # whole-image resizing: both maps cover the image; one grid with the image's aspect, 224 px on its
        # longest side (the larger map's)
        width, height = image.size
        assert width > height  # the premise of the grid's size below
        a, b = _maps_on_one_grid(*records, (224, round(height * 224 / width)))
        assert row[1] == pytest.approx(spearmanr(a.ravel(), b.ravel()).statistic, abs=1e-6)
        top_a, top_b = a.ravel() >= np.sort(a.ravel())[-round(0.1 * a.size)], \
            b.ravel() >= np.sort(b.ravel())[-round(0.1 * b.size)]
        assert row[2] == pytest.approx((top_a & top_b).sum() / (top_a | top_b).sum(), abs=0.02)  # ties aside


def test_per_model_targets_when_class_lists_differ(digits_bundle):
    at = _models_app(methods=["vanilla"])
    notices = [i.value for i in at.info if "class lists differ" in i.value]
    assert len(notices) == 1 and "1000 classes" in notices[0] and "10 classes" in notices[0]
    pickers = [s for s in at.selectbox if s.key and s.key.startswith(state.COMPARE_MODEL_TARGET + ".")]
    assert [p.label for p in pickers] == [f"Target on {DEFAULT}", f"Target on {DIGITS_MODEL}"]
    # a class picked for the digits model changes its column only
    image = selection(at).image
    predicted = int(np.argmax(class_probabilities(digits_bundle, digits_bundle.preprocess(image, "resize"))[0]))
    other = (predicted + 1) % 10
    at.selectbox(key=f"{state.COMPARE_MODEL_TARGET}.{DIGITS_MODEL}").set_value(other).run()
    assert not at.exception
    header = _header(at)
    assert any(h.startswith(f"**{DIGITS_MODEL}**") and f"({other}) · picked" in h for h in header), header
    assert any(h.startswith(f"**{DEFAULT}**") and "· predicted" in h for h in header), header
    _record(at, digits_bundle, DIGITS_MODEL, "vanilla", other)


def test_digits_twins_share_one_target_and_no_notice():
    """The sidebar's digits model is compared with its shuffled-label twin by default: same classes, one target."""
    at = start(session={state.MODEL: DIGITS_MODEL, state.COMPARE_METHODS: ["vanilla", "gradcam"],
                        state.COMPARE_COLUMNS: MODELS}, page=COMPARE)
    assert not at.exception and not at.error
    assert at.multiselect(key=state.COMPARE_MODELS).value == [TWIN]
    assert not [i.value for i in at.info if "class lists differ" in i.value]
    assert at.selectbox(key=state.COMPARE_MODEL_TARGET).label == "Target class (every model)"
    header = _header(at)
    twin_header = [h for h in header if h.startswith(f"**{TWIN}**")]
    real_header = [h for h in header if h.startswith(f"**{DIGITS_MODEL}**")]
    assert twin_header and real_header
    target = real_header[0].split("[")[1].split(" · ")[0]
    assert twin_header[0].split("[")[1].startswith(f"{target} · {DIGITS_MODEL}'s prediction")  # the same class
    assert len(main_images(at)) == 2 * 3


def test_one_model_asks_for_another():
    at = _models_app(methods=["vanilla"], extra=())
    assert [i.value for i in at.info if i.value.startswith("Pick a model to compare")]
    assert len(main_images(at)) == 1
    assert not at.dataframe


@pytest.mark.slow
def test_a_long_models_grid_waits_for_run_behind_an_estimate(twice_as_slow):
    """The classes grid's budget rule holds here: Score-CAM on the default model's 1280 channels is over the budget,
    so both models' Score-CAM panels wait for Run, while the shared-pass rows come at once."""
    at = _models_app(methods=["vanilla", "scorecam"])
    (notice,) = [i.value for i in at.info if "panels to compute" in i.value]
    assert notice.startswith("2 panels to compute")
    (run,) = [b for b in at.button if b.key == state.COMPARE_RUN_BUTTON]
    assert run.label.startswith("Run the grid (about ")
    captions = [c.value for c in at.caption]
    assert "not computed yet" in captions
    run.click().run()
    assert not at.exception
    assert "not computed yet" not in [c.value for c in at.caption]
    assert len(main_images(at)) == 2 * 3
