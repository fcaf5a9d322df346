"""Sanity checks in Chromium (issue 18, item 4): the verdict per similarity measure beside the paper's, a flag with
its sentence where they differ, an unclipped table at 900 px, and the Methods card saying what was measured here.

Run with ``pytest tests/e2e``; needs /usr/bin/chromium (skips without it unless SALIENCY_REQUIRE_BROWSER=1).
"""

from __future__ import annotations

import re

import pytest

from ui import state
from ui.sanity import FLAG, SHORT_LABELS

from .conftest import keyed, page_problems, screenshot, wait_idle

pytestmark = pytest.mark.e2e

LOAD_MS = 180_000


def test_sanity_verdict_per_measure_flags_the_paper_and_reaches_the_methods_card(page, base_url, artifacts_dir):
    page.set_viewport_size({"width": 900, "height": 1000})
    page.goto(f"{base_url}/sanity")
    page.get_by_role("heading", name="Sanity checks").wait_for(timeout=LOAD_MS)
    wait_idle(page, LOAD_MS)
    methods = page.locator(keyed(state.SANITY_METHODS))
    for name in ("Vanilla gradient", "SmoothGrad", "Integrated gradients", "Guided Grad-CAM"):
        methods.get_by_role("button", name=re.compile(f"Remove .*· {re.escape(name)}$")).first.click()
        wait_idle(page)
    steps = page.locator(f"{keyed(state.SANITY_STEPS)} input")
    steps.fill("2")
    steps.press("Enter")
    wait_idle(page)
    page.locator(keyed(state.SANITY_RUN)).locator("label").first.click()
    page.get_by_role("heading", name="Verdict").wait_for(timeout=300_000)
    wait_idle(page, 300_000)
    table = page.locator('[data-testid="stTable"]').first
    table.locator("th", has_text="HOG").first.wait_for(timeout=60_000)
    headers = table.locator("th").all_inner_texts()
    for label in SHORT_LABELS.values():
        assert label in headers, headers
    assert "Adebayo et al." in headers and "flag" in headers
    # nothing clipped at 900 px: the table is no wider than the column it sits in
    table_width, column_width = page.evaluate("""() => {
        const t = document.querySelector('[data-testid="stTable"] table');
        return [t.scrollWidth, t.closest('[data-testid="stVerticalBlock"]').clientWidth];
    }""")
    assert table_width <= column_width, (table_width, column_width)
    # two steps on the cat: Grad-CAM's ranks still follow the original, so it is flagged against the paper
    gradcam_row = table.locator("tr", has_text="gradcam").first
    assert FLAG in gradcam_row.inner_text()
    warning = page.locator('[data-testid="stAlert"]', has_text="Adebayo et al. found that it passes")
    assert "gradcam" in warning.first.inner_text() and "but not on" in warning.first.inner_text()
    assert page_problems(page) == [] and page.js_errors == []
    screenshot(page, artifacts_dir / "sanity_verdict_900.png")
    # the Methods page, same session: the card attributes the finding and adds what was measured here
    page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name="Methods").click()
    card = page.locator(keyed("method_card_gradcam"))
    card.wait_for(timeout=60_000)
    text = card.inner_text()
    assert "Adebayo et al. (2018) found that it passes" in text
    assert "Here (on cat.png, efficientnet_lite0, 2 of 19 cascade steps)" in text and "Unlike the paper" in text
