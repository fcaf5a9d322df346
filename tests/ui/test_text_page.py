"""The Text page on the shipped text model: only text methods are offered, each map is the text with coloured
token spans whose titles are the backend's raw scores, grouping into words is stated and drawn, a cut text says
so, the downloads are there, bad input gets a message (never a traceback), and the page keeps its text (and the
image pages their image) across page switches. Oracles: ``explain_text`` and ``group_words`` on a model loaded
apart from the app's."""

from __future__ import annotations

import html
import json
import re

import numpy as np
import pytest

from explainers import METHODS, class_probabilities
from explainers import render as rnd
from explainers.models.text import DEFAULT_TEXT_MODEL, load_text_model
from explainers.text import TokenView, explain_text, group_words, token_html
from explainers.text.render import shown_values
from tests.conftest import sample_path
from tests.text_models import tiny_text_bundle
from tests.ui.helpers import EXPLORE, selection, start, texts
from ui import state
from ui.text import (
    DEFAULT_METHODS,
    MAX_TEXT_CHARS,
    TEXT_COLORMAPS,
    canonical,
    digest,
    download_json,
    method_label,
    multi_pass,
)
from ui.text_cache import text_cache

TEXT_PAGE = "app_pages/text.py"
SPAN = re.compile(r'<span class="tok" title="([^"]+)" data-score="([^"]+)" style="background:(#[0-9a-f]{6});'
                  r'color:(#[0-9a-f]{3});[^"]*">(.*?)</span>', re.S)


@pytest.fixture(scope="module")
def bundle():
    """The shipped model, loaded apart from the app's cached one: the oracle."""
    return load_text_model(DEFAULT_TEXT_MODEL)


def open_text(session: dict | None = None):
    at = start(page=TEXT_PAGE, session=session)
    assert not at.exception, at.exception
    return at


def panels(at) -> dict[str, list[tuple[str, float, str, str]]]:
    """{panel title: [(shown text, raw score, background, ink), ...]} of every coloured text on the page."""
    found = {}
    for element in at.html:
        body = element.proto.body
        if 'class="saliency-text"' not in body:
            continue
        title = re.search(r'<div class="title"[^>]*>(.*?)</div>', body)
        found[html.unescape(title.group(1)) if title else f"untitled {len(found)}"] = [
            (html.unescape(text), float(score), background, ink)
            for _title, score, background, ink, text in SPAN.findall(body)]
    return found


def predicted(bundle, text: str) -> tuple[int, int]:
    scored = bundle.scored(text)
    order = np.argsort(-class_probabilities(scored, scored.inputs)[0])
    return int(order[0]), int(order[1])


def test_the_page_lists_only_text_methods_and_draws_each_as_coloured_spans(bundle):
    at = open_text()
    assert at.title[0].value == "Text" and not at.error
    options = at.multiselect(key=state.TEXT_METHODS).options
    text = at.text_area(key=state.TEXT_BOX).value
    # known refusals (a spatial layer, pixels, ReLU modules, references) absent; the token methods there
    for refused in ("gradcam", "rise", "guided_backprop", "expected_gradients", "xrai", "sobel"):
        assert method_label(refused) not in options, refused
    for offered in ("vanilla", "integrated_gradients", "occlusion", "attnlrp", "attention_rollout"):
        assert method_label(offered) in options, offered
    # and every listed method runs on another text model (the seeded tiny BERT), giving a finite score per token
    labels = {method_label(name): name for name in METHODS}
    tiny = tiny_text_bundle(seed=1)
    fast = {"n_samples": 16}  # LIME and KernelSHAP: a few coalitions are enough to run
    params = {labels[o]: {k: v for k, v in fast.items() if k in METHODS[labels[o]].params_for("text")}
              for o in options}
    maps = explain_text(tiny, "the movie was great", [labels[o] for o in options], ["top1"], params=params)
    for option in options:
        scores = maps[(labels[option], "top1")].scores
        assert scores.shape == (len(tiny.encode("the movie was great").tokens),) and np.isfinite(scores).all()
    methods = at.multiselect(key=state.TEXT_METHODS).value
    assert text == bundle.examples[0]  # the model's first example to start with
    top, _ = predicted(bundle, text)
    oracle = explain_text(bundle, text, methods, [top])
    shown = panels(at)
    encoded = bundle.scored(text).encoded
    for method in methods:
        title = f"{METHODS[method].display_name} · {bundle.categories[top]} · logit"
        spans = shown[title]
        content = encoded.content
        assert [s[0] for s in spans] == [encoded.text[slice(*encoded.offsets[i])] for i in content]
        np.testing.assert_allclose([s[1] for s in spans], oracle[(method, top)].scores[content], rtol=1e-4,
                                   atol=1e-7)
        assert len({s[2] for s in spans}) > 1  # the backgrounds differ: the colours follow the scores
        assert {s[3] for s in spans} <= {"#000", "#fff"}


def test_grouping_into_words_is_stated_and_drawn(bundle):
    at = open_text({state.TEXT_BOX: "Unbelievably, the screenplay was wonderful!",
                    state.TEXT_METHODS: ["input_x_gradient"]})
    text = at.text_area(key=state.TEXT_BOX).value
    encoded = bundle.scored(text).encoded
    assert len(encoded.words) < len(encoded.content)  # the premise: some word is split into subword tokens
    at.segmented_control(key=state.view_key(state.TEXT_VIEW, "group")).set_value("sum").run()
    assert not at.exception
    assert any(TokenView(group="sum").grouping_said().capitalize() in caption for caption in texts(at))
    top, _ = predicted(bundle, text)
    scores = explain_text(bundle, text, ["input_x_gradient"], [top])[("input_x_gradient", top)].scores
    (spans,) = panels(at).values()
    assert [s[0] for s in spans] == encoded.word_texts
    np.testing.assert_allclose([s[1] for s in spans], group_words(scores, encoded, "sum"), rtol=1e-4, atol=1e-7)


def test_a_view_change_recomputes_nothing():
    at = open_text()
    calls = text_cache().calls
    at.segmented_control(key=state.view_key(state.TEXT_VIEW, "sign")).set_value("absolute").run()
    at.segmented_control(key=state.view_key(state.TEXT_VIEW, "group")).set_value("max").run()
    assert not at.exception and text_cache().calls == calls
    assert at.selectbox(key=state.view_key(state.TEXT_VIEW, "colormap")).value == "Reds"  # a sequential map now


def test_a_cut_text_is_said_and_drawn_struck_through(bundle):
    long_text = " ".join(["the plot was moving"] * 40)
    encoded = bundle.scored(long_text).encoded
    assert encoded.dropped > 0
    at = open_text({state.TEXT_BOX: long_text, state.TEXT_METHODS: ["vanilla"]})
    warnings = [w.value for w in at.warning]
    assert any(f"the last {encoded.dropped} tokens" in w and "cut off" in w for w in warnings), warnings
    body = next(h.proto.body for h in at.html if 'class="saliency-text"' in h.proto.body)
    assert 'class="cut"' in body


def test_downloads_serve_the_maps_json_and_its_coloured_text(bundle, served):
    at = open_text({state.TEXT_METHODS: ["input_x_gradient"]})
    buttons = at.get("download_button")
    assert [d.label for d in buttons] == ["Tokens and scores (JSON)", "Coloured text (HTML)"]
    text = at.text_area(key=state.TEXT_BOX).value
    top, _ = predicted(bundle, text)
    token_map = explain_text(bundle, text, ["input_x_gradient"], [top])[("input_x_gradient", top)]
    record = json.loads(served(buttons[0]).decode("utf-8"))
    assert record == json.loads(download_json(token_map, bundle.categories))  # the served file is the map's
    assert record["tokens"] == token_map.as_json(bundle.categories)["tokens"]
    page = served(buttons[1]).decode("utf-8")
    view = TokenView(colormap=TEXT_COLORMAPS["signed"][0])  # the page's default view: signed, tokens, no clip
    value_range = rnd.value_range(shown_values(token_map.encoded, token_map.scores, view), view.clip, True)
    oracle = token_html(token_map.encoded, token_map.scores, view, value_range,
                        title=f"Input × Gradient · {bundle.categories[top]} · logit")
    body = next(h.proto.body for h in at.html if 'class="saliency-text"' in h.proto.body)
    assert body == oracle and oracle in page  # the coloured text exactly as drawn, token_html's ...
    # ... in a small complete document: UTF-8, a title, the colour bar and the range
    assert page.startswith("<!DOCTYPE html>") and '<meta charset="utf-8">' in page and "<title>" in page
    assert 'class="text-legend"' in page and "raw" in page and page.rstrip().endswith("</html>")
    assert [t["token"] for t in record["tokens"]] == list(token_map.encoded.tokens)
    assert [(t["start"], t["end"]) for t in record["tokens"]] == [tuple(o) for o in token_map.encoded.offsets]
    np.testing.assert_allclose([t["score"] for t in record["tokens"]], token_map.scores)
    assert record["method"] == "input_x_gradient" and record["target_names"] == [bundle.categories[top]]


@pytest.mark.parametrize(("text", "expected"), [
    ("", "The text is empty"),
    ("   \n  ", "The text is empty"),
    ("x" * (MAX_TEXT_CHARS + 1), f"{MAX_TEXT_CHARS + 1:,} characters long"),
])
def test_empty_and_huge_texts_get_a_message(text, expected):
    at = open_text({state.TEXT_BOX: text})
    assert not at.error
    assert any(expected in message for message in texts(at)), texts(at)
    assert not panels(at)


def test_an_emoji_only_text_is_explained_with_a_note():
    at = open_text({state.TEXT_BOX: "😀😀 🎬", state.TEXT_METHODS: ["vanilla"]})
    assert not at.error
    assert any("knows none of these characters" in w.value for w in at.warning)
    assert panels(at)


def test_runner_up_and_contrast_targets(bundle):
    at = open_text({state.TEXT_METHODS: ["input_x_gradient"]})
    text = at.text_area(key=state.TEXT_BOX).value
    top, second = predicted(bundle, text)
    at.segmented_control(key=state.TEXT_TARGET_MODE).set_value("Runner-up").run()
    assert not at.exception
    (title,) = panels(at)
    assert title == f"Input × Gradient · {bundle.categories[second]} · logit"
    at.segmented_control(key=state.TEXT_TARGET_MODE).set_value("Contrast").run()
    (title,) = panels(at)
    assert title == f"Input × Gradient · {bundle.categories[top]} vs {bundle.categories[second]} · logit"
    at.segmented_control(key=state.TEXT_OBJECTIVE).set_value("probability").run()
    (title,) = panels(at)
    assert title.endswith("· probability")


def test_the_text_and_the_image_pages_choices_survive_switching_pages():
    at = start()
    at.selectbox(key=state.SAMPLE).set_value("coffee.png").run()
    at.switch_page(TEXT_PAGE).run()
    assert not at.exception
    assert not at.sidebar.get("selectbox") or all(s.key != state.SAMPLE for s in at.sidebar.selectbox)
    at.text_area(key=state.TEXT_BOX).input("The plot was wonderful.").run()
    at.switch_page(EXPLORE).run()
    assert not at.exception and selection(at).image_name == "coffee.png"
    at.segmented_control(key=state.IMAGE_SOURCE).set_value("Upload").run()
    at.file_uploader(key=state.UPLOADS).set_value(("mine.png", sample_path("cat.png").read_bytes(), "image/png")).run()
    assert selection(at).image_name == "mine.png"
    at.switch_page(TEXT_PAGE).run()
    assert at.text_area(key=state.TEXT_BOX).value == "The plot was wonderful."
    at.switch_page(EXPLORE).run()
    assert not at.exception
    assert at.segmented_control(key=state.IMAGE_SOURCE).value == "Upload" and selection(at).image_name == "mine.png"
    at.segmented_control(key=state.IMAGE_SOURCE).set_value("Samples").run()
    assert selection(at).image_name == "coffee.png"
    at.switch_page(TEXT_PAGE).run()
    assert at.text_area(key=state.TEXT_BOX).value == "The plot was wonderful."


def test_reset_keeps_the_text_and_the_model():
    at = open_text()
    at.text_area(key=state.TEXT_BOX).input("The acting was tedious.").run()
    at.multiselect(key=state.TEXT_METHODS).set_value(["integrated_gradients"]).run()
    at.button(key=state.RESET_PAGE).click().run()
    assert not at.exception
    assert at.text_area(key=state.TEXT_BOX).value == "The acting was tedious."
    assert at.multiselect(key=state.TEXT_METHODS).value == list(DEFAULT_METHODS) != ["integrated_gradients"]
    assert at.selectbox(key=state.TEXT_MODEL).value == DEFAULT_TEXT_MODEL


def test_a_request_is_cached_once_however_it_is_spelled():
    spelled = canonical("integrated_gradients", {}, 0, "logit")
    assert spelled == canonical("integrated_gradients", {"n_steps": 50, "baseline": "pad"}, 0, "logit")
    assert spelled != canonical("integrated_gradients", {"baseline": "mask"}, 0, "logit")
    assert spelled != canonical("integrated_gradients", {}, 0, "probability")


def test_a_cancelled_map_waits_for_run(bundle):
    at = open_text({state.TEXT_METHODS: ["integrated_gradients"]})
    text = at.text_area(key=state.TEXT_BOX).value
    top, _ = predicted(bundle, text)
    request = canonical("integrated_gradients", {}, top, "logit")
    assert multi_pass(request, len(bundle.scored(text).encoded))  # the premise: a progress bar and a Cancel button
    text_cache().clear()
    at.session_state[state.TEXT_CANCELLED] = (DEFAULT_TEXT_MODEL, digest(text), (request,))
    at.run()
    assert not at.exception and not panels(at)
    assert any(i.value.startswith("Cancelled.") for i in at.info)
    at.button(key=state.TEXT_RUN).click().run()
    assert not at.exception
    (title,) = panels(at)
    assert title.startswith("Integrated gradients · ")
