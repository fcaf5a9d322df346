"""The Text page after its review: the random control among the picked methods (faithfulness adds it itself), the
sanity checks of the picked objective, a text the tokenizer makes nothing of (the text's fix, not an image's),
Compare's columns following the target, maps that cannot be negative on the magnitude scale, a default first
picture that colours the evidence word for its class, a session model named by its file and loaded once, and the
predictions' click and caption shared with Explore. Oracles: the backend run apart from the app."""

from __future__ import annotations

import io
import json
import re
import zipfile

import numpy as np
import pytest

from explainers import METHODS, Contrast, class_probabilities
from explainers.models.text import DEFAULT_TEXT_MODEL, load_text_model
from explainers.text import explain_text, group_words
from explainers.trust.text import text_sanity
from tests.text_models import tiny_bert, tiny_tokenizer
from tests.ui.helpers import start, texts
from ui import controls, state
from ui import method_docs as docs
from ui.text import TEXT_TARGET, text_methods
from ui.text_compare import first_columns
from ui.text_trust import FAITHFULNESS, RANDOM_LABEL, requests_of

TEXT_PAGE = "app_pages/text.py"
SIGNED_END = re.compile(r'<div class="text-legend"[^>]*><span>([^<]+)</span>')


@pytest.fixture(scope="module")
def bundle():
    return load_text_model(DEFAULT_TEXT_MODEL)


def open_text(session: dict | None = None):
    at = start(page=TEXT_PAGE, session=session)
    assert not at.exception, at.exception
    return at


def ranking(bundle, text: str) -> np.ndarray:
    scored = bundle.scored(text)
    probs = class_probabilities(scored, scored.inputs)[0]
    return np.argsort(-probs)


def keyed(at, key: str):
    """The element (a container) of ``key``, or None."""
    try:
        return at.get_by_key(key)
    except KeyError:
        return None


def panel_legends(at) -> dict[str, str]:
    """{method: the left end of its panel's colour bar} of Explain's panels."""
    found = {}
    for method in METHODS:
        panel = keyed(at, state.text_panel_key(method))
        if panel is None:
            continue
        (legend,) = [h.proto.body for h in panel.html if 'class="text-legend"' in h.proto.body]
        found[method] = SIGNED_END.search(legend).group(1)
    return found


# ---- 1, 2: Trust --------------------------------------------------------------------------------------------


def test_faithfulness_with_the_random_control_picked_lists_the_control_once():
    at = open_text({state.TEXT_METHODS: ["vanilla", "random"], state.TEXT_SHOW: "Trust",
                    state.TEXT_TRUST_CHECK: FAITHFULNESS})
    assert not at.error, [e.value for e in at.error]
    (table,) = at.table
    assert list(table.value["Method"]) == ["Vanilla gradient", RANDOM_LABEL]
    assert any("control always included" in t for t in texts(at))


def test_the_sanity_checks_explain_the_objective_picked(bundle):
    at = open_text({state.TEXT_METHODS: ["vanilla"], state.TEXT_SHOW: "Trust",
                    state.TEXT_OBJECTIVE: "probability"})
    assert not at.error, [e.value for e in at.error]
    text = at.text_area(key=state.TEXT_BOX).value
    top = int(ranking(bundle, text)[0])
    probability = text_sanity(bundle, text, ["vanilla"], top, objective="probability", seed=0)
    logit = text_sanity(bundle, text, ["vanilla"], top, objective="logit", seed=0)
    curve = [1.0] + [step.similarity["vanilla"] for step in probability.steps]
    assert not np.allclose(curve, [1.0] + [step.similarity["vanilla"] for step in logit.steps], atol=1e-3)
    (figure,) = [json.loads(c.proto.spec) for c in at.get("plotly_chart")
                 if c.proto.id and state.TEXT_TRUST_CHART in c.proto.id]
    np.testing.assert_allclose(figure["data"][0]["y"], curve, atol=1e-6)
    assert any("probability" in t and "objective picked above" in t for t in texts(at))
    # the charts are the Trust view's own, not under the agreement's prefix
    assert not [c for c in at.get("plotly_chart") if c.proto.id and state.TEXT_AGREEMENT in c.proto.id]


def test_the_checks_are_kept_under_canonical_requests():
    target = controls.TargetChoice(0, "negative", (0,))
    assert requests_of(["integrated_gradients"], {}, target, "logit") == requests_of(
        ["integrated_gradients"], {"integrated_gradients": {"n_steps": 50.0, "baseline": "pad"}}, target, "logit")


# ---- 3: errors ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["\u200b", "\x00", "\u200b\u200b \x00"])
def test_a_text_the_tokenizer_makes_nothing_of_gets_the_texts_fix(text):
    at = open_text({state.TEXT_BOX: text, state.TEXT_METHODS: ["vanilla"]})
    (error,) = [e.value for e in at.error]
    assert "InputError" in error and "made no tokens" in error
    assert "Type or paste a sentence" in error and "PNG" not in error and "photo" not in error


# ---- 4: the Methods page's text facts -----------------------------------------------------------------------


def test_the_cards_say_why_a_method_is_not_on_text_and_never_contradict_a_sign():
    for name in ("guided_backprop", "deconvnet", "expected_gradients", "gradient_shap", "deeplift", "lrp",
                 "guided_ig", "gradcam"):
        card = docs.card(METHODS[name]).text
        assert card.startswith("Not on text") and "ReLU" in card and "reference" in card and "attention" in card
    for name in text_methods():
        card = docs.card(METHODS[name]).text
        assert card.count("Token score:") == 1
        assert not ("≥ 0" in card and "signed" in card), (name, card)  # SmoothGrad², VarGrad: magnitudes
    rows = {row["Name"]: row["Text"] for row in docs.overview_rows(METHODS.values())}
    assert "signed" not in rows["smoothgrad_sq"] and "signed" not in rows["vargrad"]


# ---- 5: Compare follows the target --------------------------------------------------------------------------


def test_compare_columns_follow_the_picked_class_and_a_contrast(bundle):
    at = open_text({state.TEXT_METHODS: ["input_x_gradient"], state.TEXT_SHOW: "Compare"})
    text = at.text_area(key=state.TEXT_BOX).value
    order = [int(i) for i in ranking(bundle, text)]
    third = order[2]
    at.segmented_control(key=state.TEXT_TARGET_MODE).set_value("Class").run()
    at.selectbox(key=state.TEXT_TARGET_CLASS).set_value(third).run()
    assert not at.exception and not at.error
    assert keyed(at, state.text_cell_key("input_x_gradient", str(third))) is not None
    assert keyed(at, state.text_cell_key("input_x_gradient", str(order[0]))) is not None  # told apart from
    assert keyed(at, state.text_cell_key("input_x_gradient", str(order[1]))) is None
    headers = " ".join(texts(at))
    assert f"**{bundle.categories[third]}** · the target, rank 3" in headers
    at.segmented_control(key=state.TEXT_TARGET_MODE).set_value("Contrast").run()
    a, b = at.selectbox(key=state.TEXT_CONTRAST_A).value, at.selectbox(key=state.TEXT_CONTRAST_B).value
    for column in (f"{a}-vs-{b}", str(a), str(b)):
        assert keyed(at, state.text_cell_key("input_x_gradient", column)) is not None, column
    cell = keyed(at, state.text_cell_key("input_x_gradient", f"{a}-vs-{b}"))
    spans = [h.proto.body for h in cell.html if 'class="saliency-text"' in h.proto.body]
    scores = explain_text(bundle, text, ["input_x_gradient"], [Contrast(a, b)])[
        ("input_x_gradient", Contrast(a, b))].scores
    drawn = [float(v) for v in re.findall(r'data-score="([^"]+)"', spans[0])]
    np.testing.assert_allclose(drawn, scores[bundle.scored(text).encoded.content], rtol=1e-4, atol=1e-7)


def test_first_columns_of_each_target_kind():
    probs = np.array([0.1, 0.6, 0.3])
    choice = controls.TargetChoice
    assert first_columns(probs, choice(1, "b", (1,))) == [1, 2]
    assert first_columns(probs, choice(2, "c", (2,))) == [2, 1]
    assert first_columns(probs, choice(0, "a", (0,))) == [0, 1]
    assert first_columns(probs, choice(Contrast(0, 2), "a vs c", (0, 2))) == [Contrast(0, 2), 0, 2]


# ---- 6: defaults --------------------------------------------------------------------------------------------


def test_the_first_picture_colours_the_evidence_word_for_its_class(bundle):
    at = open_text()
    text = at.text_area(key=state.TEXT_BOX).value
    top = int(ranking(bundle, text)[0])
    methods = at.multiselect(key=state.TEXT_METHODS).value
    maps = explain_text(bundle, text, methods, [top])
    for method in methods:
        token_map = maps[(method, top)]
        words = group_words(token_map.scores, token_map.encoded, "sum")
        strongest = int(np.argmax(np.abs(words)))
        assert words[strongest] > 0, (method, token_map.encoded.word_texts[strongest], words[strongest])


def test_a_map_that_cannot_be_negative_is_drawn_on_the_magnitude_scale():
    at = open_text({state.TEXT_METHODS: ["vanilla", "smoothgrad_sq", "input_x_gradient"],
                    state.view_key(state.TEXT_PARAM, "smoothgrad_sq.n_samples"): 4})
    assert not at.error, [e.value for e in at.error]
    ends = panel_legends(at)
    for method in ("vanilla", "smoothgrad_sq"):  # a length; a mean of squares
        assert not ends[method].startswith(("+", "-")) and float(ends[method]) >= 0, (method, ends[method])
    assert ends["input_x_gradient"].startswith("-")  # a signed map keeps its diverging scale
    for method, said in (("vanilla", True), ("smoothgrad_sq", True), ("input_x_gradient", False)):
        captions = [c.value for c in keyed(at, state.text_panel_key(method)).caption]
        assert any("no negative scores: drawn on the magnitude scale" in c for c in captions) == said, method


def test_a_sensitivity_summed_into_words_says_what_the_sum_favours():
    at = open_text({state.TEXT_METHODS: ["vanilla"], state.view_key(state.TEXT_VIEW, "group"): "sum"})
    assert any("words · max compares words fairly" in t for t in texts(at))
    assert any("hover a word for its raw value" in t for t in texts(at))
    at.segmented_control(key=state.view_key(state.TEXT_VIEW, "group")).set_value("max").run()
    assert not any("words · max compares words fairly" in t for t in texts(at))


def test_the_unknown_characters_warning_has_its_own_icon():
    long_unknown = " ".join(["😀"] * 200)
    at = open_text({state.TEXT_BOX: long_unknown, state.TEXT_METHODS: ["vanilla"]})
    icons = [w.proto.icon for w in at.warning]
    assert len(icons) == 2 and len(set(icons)) == 2, icons


# ---- 7: your own classifier ---------------------------------------------------------------------------------


def zipped(tmp_path, labels: int = 8) -> bytes:
    folder = tmp_path / "tiny"
    tiny_bert(seed=3, num_labels=labels).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in folder.iterdir():
            archive.write(path, f"tiny/{path.name}")
    return buffer.getvalue()


def uploader(at):
    (found,) = [u for u in at.get("file_uploader") if u.key and u.key.startswith(f"{state.TEXT_UPLOAD}.")]
    return found


def test_an_own_classifier_is_named_by_its_file_loaded_once_and_its_outside_target_said(tmp_path):
    data = zipped(tmp_path)
    at = open_text({state.TEXT_METHODS: ["vanilla"]})
    for _ in range(2):  # the same zip twice: one model, picked again
        uploader(at).set_value(("my-model.zip", data, "application/zip")).run()
        at.button(key=state.TEXT_LOAD).click().run()
        assert not at.exception and not at.error, [e.value for e in at.error]
    own = [label for label in at.selectbox(key=state.TEXT_MODEL).options if label.endswith("· yours")]
    assert own == ["my-model.zip · yours"] and at.selectbox(key=state.TEXT_MODEL).value.startswith("text-user:")
    assert any("already loaded" in i.value for i in at.info)
    shown = " ".join(texts(at))
    assert "my-model.zip" in shown and "hf-text:" not in shown and "text-user:" not in shown
    assert len(re.findall(r"\d+ tokens", shown)) == 1  # the token limit, said once
    # a class below the top 5 (8 classes) is on no bar: its probability and rank are said under the chart
    at.segmented_control(key=state.TEXT_TARGET_MODE).set_value("Class").run()
    assert len(at.selectbox(key=state.TEXT_TARGET_CLASS).options) == 8
    for index in range(8):
        at.selectbox(key=state.TEXT_TARGET_CLASS).set_value(index).run()
        said = [c.value for c in at.caption if re.search(r"%, rank [6-8]\b", c.value)]
        if said:
            assert said[0].startswith(f"class {index} ({index}):")
            break
    else:
        pytest.fail("no class below the top 5 was said under the predictions")


# ---- 8: one step, one place ---------------------------------------------------------------------------------


def test_a_click_on_a_text_bar_sets_the_text_pages_target_only(monkeypatch):
    session = {state.TEXT_PREDICTIONS: {"selection": {"points": [{"customdata": [2]}]}},
               state.TARGET_MODE: "Predicted"}

    class Fake:
        session_state = session

    monkeypatch.setattr(controls, "st", Fake)
    controls.on_prediction_click(TEXT_TARGET)
    assert session[state.TEXT_TARGET_MODE] == "Class" and session[state.TEXT_TARGET_CLASS] == 2
    assert session[state.TARGET_MODE] == "Predicted" and state.TARGET_CLASS not in session
