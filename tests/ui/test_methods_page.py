"""The Methods page: one card per registered method, generated from the registry; search and family filters."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from explainers import METHODS, Cost, MethodInfo, Param, Reference, Sanity
from explainers.registry import ONE_PASS
from tests.conftest import ROOT
from ui import method_docs as docs

TIMEOUT = 120
PAGE = "app_pages/methods.py"


@pytest.fixture
def page():
    at = AppTest.from_file(str(ROOT / PAGE), default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, at.exception
    return at


def _card(at, name: str):
    return at.get_by_key(docs.card(METHODS[name]).key)


def _card_text(at, name: str) -> str:
    block = _card(at, name)
    return "\n".join([m.value for m in block.markdown] + [c.value for c in block.caption])


def _titles(at) -> list[str]:
    return [s.value for s in at.subheader]


# ---- the page -------------------------------------------------------------------------------------------


def test_page_renders_a_card_for_every_method(page):
    assert not page.error, [e.value for e in page.error]
    assert page.title[0].value == "Methods"
    titles = _titles(page)
    assert len(titles) == len(METHODS)
    for name, info in METHODS.items():
        block = _card(page, name)
        (subheader,) = block.subheader
        assert info.display_name in subheader.value and f"`{name}`" in subheader.value
        assert any(info.display_name in title for title in titles)


def test_one_header_per_family(page):
    headers = [h.value for h in page.header]
    assert sorted(headers) == sorted({info.family for info in METHODS.values()})


def test_guided_methods_show_the_failed_sanity_check(page):
    for name in ("guided_backprop", "guided_gradcam"):
        text = _card_text(page, name)
        assert ":red-badge[" in text and "fails model randomisation" in text
    assert ":green-badge[" in _card_text(page, "vanilla")
    assert ":red-badge[" not in _card_text(page, "eigencam")


def test_cards_attribute_the_published_verdict_to_the_paper(page):
    """The badge is Adebayo et al.'s finding on their networks, said as theirs; with no sanity run in this session
    no card claims a measurement."""
    for name, info in METHODS.items():
        text = _card_text(page, name)
        published = info.published_verdict().sanity
        if published in (Sanity.PASSES, Sanity.FAILS):
            assert "Adebayo et al. (2018) found that it" in text, name
            assert f"found that it {'passes' if published is Sanity.PASSES else 'fails'}" in text, name
        else:
            assert "found that" not in text, name
        assert "Here (on" not in text
        assert not _card(page, name).info and not _card(page, name).warning
    assert docs.finding_text(METHODS["smoothgrad"]).startswith("As its base method (Vanilla gradient): Adebayo")


def test_every_card_links_its_paper(page):
    for name, info in METHODS.items():
        link = info.reference.link
        assert link, f"{name} has no paper link"
        text = _card_text(page, name)
        assert f"]({link})" in text
        assert str(info.reference.year) in text


def test_cards_show_cost_layer_output_and_weaknesses(page):
    vanilla = _card_text(page, "vanilla")
    assert "1 forward + 1 backward" in vanilla and "no layer needed" in vanilla
    assert "input-shaped attribution (a value per pixel and colour channel)" in vanilla
    scorecam = _card_text(page, "scorecam")
    assert "1 forward + one forward per channel of the layer" in scorecam
    assert "needs a layer" in scorecam and "1-channel" in scorecam
    assert METHODS["scorecam"].weaknesses[:40] in scorecam


def test_cards_say_which_methods_are_class_sensitive(page):
    assert "class-sensitive (each target class gets its own map)" in _card_text(page, "vanilla")
    for name in ("attention_rollout", "eigencam"):
        assert not METHODS[name].class_sensitive
        assert "class-agnostic (the same map whatever the target class)" in _card_text(page, name)


def test_parameter_table(page):
    (table,) = _card(page, "integrated_gradients").table
    frame = table.value
    assert list(frame.columns) == list(docs.PARAM_COLUMNS)
    row = frame[frame["Parameter"] == "n_steps"].iloc[0]
    assert row["Range / choices"] == "1..1000" and row["Default"] == "50"
    assert not _card(page, "vanilla").table  # no parameters: no table


def test_search_filters_cards(page):
    page.text_input(key="method_search").input("cam").run()
    assert not page.exception
    titles = " ".join(_titles(page))
    assert "Grad-CAM" in titles and "Score-CAM" in titles
    assert "SmoothGrad" not in titles and "Vanilla gradient" not in titles
    page.text_input(key="method_search").input("no such method xyz").run()
    assert not _titles(page) and page.info
    page.text_input(key="method_search").input("").run()
    assert len(_titles(page)) == len(METHODS)


def test_family_filter(page):
    page.pills(key="method_families").set_value(["Perturbation"]).run()
    assert not page.exception
    expected = [info.display_name for info in METHODS.values() if info.family == "Perturbation"]
    assert expected and [t.split(" `")[0] for t in _titles(page)] == expected
    assert [h.value for h in page.header] == ["Perturbation"]


def test_reachable_through_navigation():
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    at.run()
    at.switch_page(PAGE).run()
    assert not at.exception, at.exception
    assert at.title[0].value == "Methods"
    assert len(_titles(at)) == len(METHODS)


# ---- ui/method_docs helpers -----------------------------------------------------------------------------


def _fake(cost, **overrides) -> MethodInfo:
    fields = dict(
        name="fake", display_name="Fake", family="Test", reference=Reference("A & B", 2020, "T"),
        summary="s", weaknesses="w", params={}, cost=cost, fn=lambda *a: None,
    )
    return MethodInfo(**{**fields, **overrides})


def test_cost_text():
    assert docs.cost_text(METHODS["vanilla"]) == "1 forward + 1 backward"
    forwards, backwards = METHODS["integrated_gradients"].passes()  # n_steps backward, plus the clean/baseline pass
    assert backwards == 50 and forwards > backwards
    assert docs.cost_text(METHODS["integrated_gradients"]) == f"{forwards} forward + {backwards} backward"
    forwards, backwards = METHODS["integrated_gradients"].passes({"n_steps": 10})
    assert backwards == 10
    assert docs.cost_text(METHODS["integrated_gradients"], {"n_steps": 10}) == f"{forwards} forward + 10 backward"
    assert docs.cost_text(METHODS["occlusion"]) == "170 forward"
    assert docs.cost_text(METHODS["scorecam"]) == "1 forward + one forward per channel of the layer"
    assert not METHODS["gradcam"].cost.depends_on_channels and METHODS["scorecam"].cost.depends_on_channels
    # a wrapper costs its base, repeated (n_samples × vanilla's forward and backward), plus its own fixed passes
    samples = METHODS["smoothgrad"].params["n_samples"].default
    own_forward, own_backward = METHODS["smoothgrad"].cost.fixed
    assert docs.cost_text(METHODS["smoothgrad"]) == (
        f"{samples + own_forward} forward + {samples + own_backward} backward")


def test_cost_text_is_derived_from_the_cost_data():
    per_channel = _fake(Cost(fixed=(3, 0), per_channel=(2, 1)))
    assert docs.cost_text(per_channel) == (
        "3 forward + 2 forward per channel of the layer + one backward per channel of the layer"
    )
    only_per_channel = _fake(Cost(fixed=(0, 0), per_channel=(1, 0)))
    assert docs.cost_text(only_per_channel) == "one forward per channel of the layer"
    steps = _fake(Cost(fixed=(1, 0), per_step=(1, 1), steps="n"), params={"n": Param("int", 7, "steps", 1, 100)})
    assert docs.cost_text(steps) == "8 forward + 7 backward"
    assert docs.cost_text(steps, {"n": 3}) == "4 forward + 3 backward"
    wrapper = _fake(
        Cost(fixed=(0, 0), repeats="k", base="base"),
        params={"base": Param("choice", "vanilla", "base", choices=("vanilla",)), "k": Param("int", 4, "k", 1, 9)},
    )
    assert docs.cost_text(wrapper) == "4 forward + 4 backward"
    assert docs.cost_text(_fake(Cost(fixed=(0, 0)))) == "no passes"


def test_param_rows():
    rows = {row["Parameter"]: row for row in docs.param_rows(METHODS["integrated_gradients"])}
    assert rows["n_steps"] == {
        "Parameter": "n_steps", "Type": "int", "Default": "50", "Range / choices": "1..1000",
        "Help": METHODS["integrated_gradients"].params["n_steps"].help,
    }
    assert "gausslegendre" in rows["rule"]["Range / choices"]
    assert rows["baseline"]["Type"] == "choice or tensor"
    rise = {row["Parameter"]: row for row in docs.param_rows(METHODS["rise"])}
    assert rise["p"]["Range / choices"] == "0.01..1" and rise["p"]["Default"] == "0.5"
    relu = docs.param_rows(METHODS["gradcam"])[0]
    assert relu["Default"] == "true" and relu["Range / choices"] == "true / false"
    assert docs.param_rows(METHODS["vanilla"]) == []


def test_verdicts():
    assert docs.verdict(METHODS["guided_backprop"]).tone == "fails"
    assert METHODS["guided_gradcam"].sanity is Sanity.FAILS and docs.verdict(METHODS["guided_gradcam"]).color == "red"
    assert docs.verdict(METHODS["vanilla"]).color == "green"
    # class-insensitive is not a model-randomisation failure: no red badge under "Sanity check (model randomisation)"
    assert docs.verdict(METHODS["eigencam"]).color == "gray"
    for info in METHODS.values():  # red means "fails model randomisation", and only that
        if info.sanity is not Sanity.AS_BASE:
            assert (docs.verdict(info).tone == "fails") == (info.sanity is Sanity.FAILS), info.name
    occlusion = docs.verdict(METHODS["occlusion"])
    assert occlusion.label == "not tested by Adebayo et al. 2018" and "outputs" in occlusion.note
    assert docs.verdict(METHODS["smoothgrad"]).note == "default base, Vanilla gradient: passes model randomisation"
    unassessed = docs.verdict(_fake(ONE_PASS))
    assert (unassessed.label, unassessed.tone, unassessed.note) == (Sanity.UNTESTED.label, "neutral", "")
    assert docs.badge_markdown(docs.verdict(METHODS["guided_backprop"])).startswith(":red-badge[")


def test_search_and_family_filters():
    methods = list(METHODS.values())
    names = [m.name for m in docs.filter_methods(methods, "cam")]
    assert "gradcam" in names and "scorecam" in names and "smoothgrad" not in names
    found = [m.name for m in docs.filter_methods(methods, "  GRAD-CAM   guided ")]
    assert "guided_gradcam" in found and "gradcam" not in found  # every word must match, any case and spacing
    assert docs.filter_methods(methods, "") == methods
    assert {m.family for m in docs.filter_methods(methods, "", ["CAM"])} == {"CAM"}
    assert set(docs.families(methods)) == {m.family for m in methods}
    grouped = docs.group_by_family(methods)
    assert sum(len(v) for v in grouped.values()) == len(methods)


def test_markdown_helpers():
    assert docs.md_escape("a*b_[c]$") == "a\\*b\\_\\[c\\]\\$"
    assert "](" not in docs.paper_markdown(Reference("A", 2000, "No link"))
    assert docs.paper_markdown(METHODS["layercam"].reference).endswith("(https://doi.org/10.1109/TIP.2021.3089943)")
    rows = docs.overview_rows(METHODS.values())
    assert len(rows) == len(METHODS) and rows[0]["Name"] == next(iter(METHODS))
