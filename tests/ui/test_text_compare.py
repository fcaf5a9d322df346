"""The Text page's Compare: methods × targets (predicted and runner-up, classes added), the text in every panel,
linked colour ranges per method row, and the agreement matrix, checked against ``explain_text`` and
``explainers.trust.agreement`` on a model loaded apart from the app's."""

from __future__ import annotations

import json

import numpy as np
import pytest

from explainers import class_probabilities
from explainers import render as rnd
from explainers.models.text import DEFAULT_TEXT_MODEL, load_text_model
from explainers.text import TokenView, explain_text
from explainers.text.render import shown_values
from explainers.trust import agreement
from tests.ui.helpers import decode_array, start, texts
from ui import state
from ui.text_compare import LINKED, TOP_FRACTION

TEXT_PAGE = "app_pages/text.py"
METHODS_SHOWN = ["vanilla", "input_x_gradient"]


@pytest.fixture(scope="module")
def bundle():
    return load_text_model(DEFAULT_TEXT_MODEL)


@pytest.fixture
def compare():
    at = start(page=TEXT_PAGE, session={state.TEXT_METHODS: METHODS_SHOWN, state.TEXT_SHOW: "Compare"})
    assert not at.exception and not at.error, [e.value for e in at.error]
    return at


def ranking(bundle, text: str) -> list[int]:
    scored = bundle.scored(text)
    return [int(i) for i in np.argsort(-class_probabilities(scored, scored.inputs)[0])]


def cell_ranges(at, method: str, target: int) -> tuple[float, float]:
    """The (lo, hi) a grid cell states under its text."""
    cell = at.get_by_key(state.text_cell_key(method, str(target)))
    caption = next(c.value for c in cell.caption if "colour range" in c.value)
    lo, hi = caption.split("[", 1)[1].split("]", 1)[0].split(", ")
    return float(lo), float(hi)


def test_the_grid_is_methods_by_predicted_and_runner_up_with_the_text_in_every_cell(compare, bundle):
    at = compare
    text = at.text_area(key=state.TEXT_BOX).value
    order = ranking(bundle, text)
    headers = " ".join(texts(at))
    for position, role in ((0, "the target, predicted"), (1, "runner-up")):
        assert f"**{bundle.categories[order[position]]}** · {role}" in headers
    for method in METHODS_SHOWN:
        for target in order[:2]:
            cell = at.get_by_key(state.text_cell_key(method, str(target)))
            (body,) = [h.proto.body for h in cell.html if 'class="saliency-text"' in h.proto.body]
            assert body.count('class="tok"') == len(bundle.scored(text).encoded.content)
    # a third class added as a column
    at.multiselect(key=state.TEXT_COMPARE_TARGETS).set_value([order[2]]).run()
    assert not at.exception
    assert at.get_by_key(state.text_cell_key("vanilla", str(order[2]))) is not None


def test_linked_ranges_are_one_per_method_row(compare, bundle):
    at = compare
    text = at.text_area(key=state.TEXT_BOX).value
    targets = ranking(bundle, text)[:2]
    own = [cell_ranges(at, "input_x_gradient", t) for t in targets]
    assert own[0] != own[1]  # per panel: each its own range
    at.segmented_control(key=state.TEXT_COMPARE_SCALE).set_value(LINKED).run()
    assert not at.exception
    maps = explain_text(bundle, text, ["input_x_gradient"], targets)
    view = TokenView()
    lo, hi = rnd.value_range([shown_values(maps[("input_x_gradient", t)].encoded, maps[("input_x_gradient", t)].scores,
                                           view) for t in targets], view.clip, True)
    for target in targets:
        np.testing.assert_allclose(cell_ranges(at, "input_x_gradient", target), (lo, hi), rtol=1e-2)


def test_the_agreement_matrix_is_the_backends_on_the_maps_shown(compare, bundle):
    at = compare
    text = at.text_area(key=state.TEXT_BOX).value
    targets = ranking(bundle, text)[:2]
    maps = explain_text(bundle, text, METHODS_SHOWN, targets)
    magnitudes = {f"{m}/{t}": shown_values(maps[(m, t)].encoded, maps[(m, t)].scores, TokenView(sign="absolute"))
                  for m in METHODS_SHOWN for t in targets}
    _, rho, iou = agreement.agreement_matrix(magnitudes, fraction=TOP_FRACTION)
    figures = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    matrices = [f["data"][0] for f in figures if f["data"] and f["data"][0].get("type") == "heatmap"]
    assert len(matrices) == 2
    np.testing.assert_allclose(decode_array(matrices[0]["z"]).reshape(rho.shape), rho, atol=1e-6)
    np.testing.assert_allclose(decode_array(matrices[1]["z"]).reshape(iou.shape), iou, atol=1e-6)
    assert len(matrices[0]["x"]) == 4 and matrices[0]["x"][0].startswith("Vanilla gradient · ")
    assert np.allclose(np.diag(rho), 1) and not np.allclose(rho, 1)  # the maps do not all agree


def test_one_method_and_two_columns_still_agree_between_columns(bundle):
    at = start(page=TEXT_PAGE, session={state.TEXT_METHODS: ["vanilla"], state.TEXT_SHOW: "Compare"})
    assert not at.exception
    assert any("Agreement between the maps" in t for t in texts(at))
    figures = [json.loads(c.proto.spec)["data"] for c in at.get("plotly_chart")]
    assert len([data for data in figures if data and data[0].get("type") == "heatmap"]) == 2
