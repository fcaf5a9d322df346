"""The Text page's Trust view, on the same text, target and methods: the sanity cascade and the random-logit test
(``text_sanity``) and ERASER's comprehensiveness and sufficiency with deletion and insertion curves
(``text_faithfulness``), their numbers checked against the backend run apart from the app; a Cancel keeps the
checks waiting for Run."""

from __future__ import annotations

import json

import numpy as np
import pytest

from explainers import class_probabilities
from explainers.models.text import DEFAULT_TEXT_MODEL, load_text_model
from explainers.text import explain_text
from explainers.trust.text import text_faithfulness, text_sanity
from tests.ui.helpers import start, texts
from ui import state
from ui.text_trust import FAITHFULNESS, RANDOM_LABEL

TEXT_PAGE = "app_pages/text.py"
METHODS_SHOWN = ["vanilla", "input_x_gradient"]


@pytest.fixture(scope="module")
def bundle():
    return load_text_model(DEFAULT_TEXT_MODEL)


def trust(check: str | None = None):
    session = {state.TEXT_METHODS: METHODS_SHOWN, state.TEXT_SHOW: "Trust"}
    if check:
        session[state.TEXT_TRUST_CHECK] = check
    at = start(page=TEXT_PAGE, session=session)
    assert not at.exception and not at.error, [e.value for e in at.error]
    return at


def top(bundle, text: str) -> int:
    scored = bundle.scored(text)
    return int(np.argmax(class_probabilities(scored, scored.inputs)[0]))


def test_the_sanity_cascade_and_random_logit_are_the_backends(bundle):
    at = trust()
    text = at.text_area(key=state.TEXT_BOX).value
    oracle = text_sanity(bundle, text, METHODS_SHOWN, top(bundle, text), seed=0)
    (figure,) = [json.loads(c.proto.spec) for c in at.get("plotly_chart")
                 if json.loads(c.proto.spec)["layout"].get("yaxis", {}).get("title", {}).get("text", "").startswith(
                     "Spearman")]
    lines = {trace["name"]: trace["y"] for trace in figure["data"]}
    assert set(lines) == {"Vanilla gradient", "Input × Gradient"}
    expected = [1.0] + [step.similarity["vanilla"] for step in oracle.steps]
    np.testing.assert_allclose(lines["Vanilla gradient"], expected, atol=1e-6)
    (table,) = at.dataframe
    frame = table.value
    for name, method in (("Vanilla gradient", "vanilla"), ("Input × Gradient", "input_x_gradient")):
        shown = frame[frame["Method"] == name].iloc[0]["ρ to a random class's map"]
        assert shown == pytest.approx(oracle.random_logit[method], abs=1e-3)
    # the maps after the chosen step, beside the original ones
    titles = " ".join(h.proto.body for h in at.html)
    assert f"after {oracle.steps[-1].label}" in titles and "original model" in titles


def test_faithfulness_rows_and_curves_are_the_backends_on_the_maps_shown(bundle):
    at = trust(FAITHFULNESS)
    text = at.text_area(key=state.TEXT_BOX).value
    target = top(bundle, text)
    maps = explain_text(bundle, text, METHODS_SHOWN, [target])
    oracle = text_faithfulness(bundle, text, {m: maps[(m, target)].scores for m in METHODS_SHOWN}, target, seed=0)
    (table,) = at.table
    frame = table.value
    assert list(frame["Method"]) == ["Vanilla gradient", "Input × Gradient", RANDOM_LABEL]
    for label, row in zip(frame["Method"], oracle.rows):
        shown = frame[frame["Method"] == label].iloc[0]
        for column, value in (("Comprehensiveness ↑", row.comprehensiveness), ("Sufficiency ↓", row.sufficiency),
                              ("Deletion AUC ↓", row.deletion_auc), ("Insertion AUC ↑", row.insertion_auc)):
            assert shown[column] == pytest.approx(value, abs=1e-3), (label, column)
    curves = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    deletion = next(f for f in curves if f["layout"].get("title", {}).get("text", "").startswith("Deletion"))
    control = next(trace for trace in deletion["data"] if trace["name"].startswith(RANDOM_LABEL))
    assert control["line"]["dash"] == "dash"
    np.testing.assert_allclose(control["y"], oracle.row("random").deletion, atol=1e-6)
    assert any("ERASER" in t for t in texts(at))


def test_a_contrast_target_says_the_random_logit_test_is_left_out():
    at = trust()
    at.segmented_control(key=state.TEXT_TARGET_MODE).set_value("Contrast").run()
    assert not at.exception and not at.error
    assert any("random-logit test skipped" in t.lower() for t in texts(at))
