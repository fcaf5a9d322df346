"""In Chromium, on the shipped text model: type a sentence, see two methods' coloured tokens (a hover title on each
is its raw score), switch the target to the runner-up, open Compare (the runner-up's column and the agreement
matrix) and the sanity checks, with no error on the page; the text is still there after a look at Explore, and
the image pages show their choices again after a look at the Text page."""

from __future__ import annotations

import re

import pytest

from tests.conftest import sample_path
from ui import state

from .conftest import choose, keyed, page_problems, screenshot, wait_idle

pytestmark = pytest.mark.e2e

LOAD_MS = 180_000
SENTENCE = "Honestly, the acting was wonderful and the plot truly moving."
PANEL = ".saliency-text"


def settle(page) -> None:
    page.wait_for_timeout(300)  # let the rerun a click asked for begin
    wait_idle(page, LOAD_MS)


def pick(page, key: str, name: str) -> None:
    """Click option ``name`` of the segmented control ``key``."""
    page.locator(keyed(key)).get_by_role("radio", name=name).click()
    settle(page)


def go(page, name: str) -> None:
    page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name=name).click()
    page.get_by_role("heading", name=name).first.wait_for(timeout=LOAD_MS)
    settle(page)


def panel_titles(page) -> list[str]:
    return page.locator(f"{PANEL} .title").all_inner_texts()


def test_type_explain_runner_up_compare_and_sanity(page, base_url, artifacts_dir):
    page.goto(f"{base_url}/text")
    page.locator(PANEL).first.wait_for(timeout=LOAD_MS)
    settle(page)
    box = page.locator(f"{keyed('text_box')} textarea")
    box.fill(SENTENCE)
    box.press("Control+Enter")
    page.locator(f"{PANEL} .tok", has_text="wonderful").first.wait_for(timeout=LOAD_MS)
    settle(page)

    titles = panel_titles(page)
    assert len(titles) == 2, titles  # the default two methods, each its own coloured text
    assert titles[0].startswith("Integrated gradients · ") and titles[1].startswith("Vanilla gradient · ")
    predicted = titles[0].split(" · ")[1]
    tokens = page.locator(f"{PANEL} .tok")
    assert tokens.count() >= 2 * len(SENTENCE.split())
    assert re.fullmatch(r"[+-]\d.*", tokens.first.get_attribute("title"))  # hover: the raw value
    assert page.locator(f"{PANEL} .tok", has_text="wonderful").first.evaluate(
        "e => getComputedStyle(e).backgroundColor") != "rgba(0, 0, 0, 0)"

    pick(page, "text.target_mode", "Runner-up")
    page.locator(f"{PANEL} .title").first.wait_for(timeout=LOAD_MS)
    runner_up = panel_titles(page)[0].split(" · ")[1]
    assert runner_up != predicted and all(f" · {runner_up} · " in t for t in panel_titles(page))
    assert page_problems(page) == []

    pick(page, "text.show", "Compare")
    main = page.locator('[data-testid="stMain"]')
    main.get_by_text("Agreement between the maps").wait_for(timeout=LOAD_MS)
    settle(page)
    assert main.get_by_text(re.compile(rf"^{re.escape(runner_up)}$")).count() >= 2  # its column, one per method
    assert page.locator(f"{keyed('text_agreement.spearman')} .heatmaplayer").count() == 1
    assert page_problems(page) == []
    screenshot(page, artifacts_dir / "text_compare.png")

    pick(page, "text.show", "Trust")
    main.get_by_text("Model randomisation").wait_for(timeout=LOAD_MS)
    main.get_by_text("Random logit").wait_for(timeout=LOAD_MS)
    settle(page)
    assert page.locator(f"{keyed(state.TEXT_TRUST_CHART + '.cascade')} .scatterlayer .trace").count() == 2
    assert page_problems(page) == [] and page.js_errors == []
    screenshot(page, artifacts_dir / "text_trust.png")

    go(page, "Explore")
    go(page, "Text")
    assert page.locator(f"{keyed('text_box')} textarea").input_value() == SENTENCE
    assert page_problems(page) == [] and page.js_errors == []


def checked_source(page) -> list[str]:
    radios = page.locator(keyed("image_source")).get_by_role("radio")
    return [radios.nth(i).inner_text() for i in range(radios.count())
            if radios.nth(i).get_attribute("aria-checked") == "true"]


def test_the_image_pages_choices_show_again_after_the_text_page(page, base_url):
    """The Text page draws no image sidebar; back on Explore the browser shows the same source, sample and
    preprocessing (the server kept them, and sends them again: a widget the browser did not draw shows its
    default otherwise), and an upload is still the image after a switch of source."""
    page.goto(f"{base_url}/")
    page.get_by_role("heading", name="Explore").first.wait_for(timeout=LOAD_MS)
    settle(page)
    choose(page, "sample", "coffee.png")
    settle(page)
    page.locator(keyed("preprocessing")).get_by_text("Centre crop").click()
    settle(page)
    go(page, "Text")
    go(page, "Explore")
    assert checked_source(page) == ["Samples"]
    assert page.locator(keyed("sample")).locator("[role=combobox]").input_value() == "coffee.png"
    assert "Centre crop" in page.locator(f"{keyed('preprocessing')} label:has(input:checked)").inner_text()
    pick(page, "image_source", "Upload")
    page.locator(f"{keyed('uploads')} input[type=file]").set_input_files(str(sample_path("cat.png")))
    page.locator(keyed("uploads")).get_by_text("cat.png").first.wait_for(timeout=LOAD_MS)
    settle(page)
    go(page, "Text")
    go(page, "Explore")
    assert checked_source(page) == ["Upload"]
    assert page.get_by_text("Uploaded: cat.png").count() == 1
    pick(page, "image_source", "Samples")
    assert page.locator(keyed("sample")).locator("[role=combobox]").input_value() == "coffee.png"
    assert page_problems(page) == [] and page.js_errors == []
