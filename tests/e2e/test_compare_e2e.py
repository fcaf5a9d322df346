"""In Chromium: Compare's models mode (issue 18) fills a grid with one column per model, a difference column and
the agreement of the two models' maps; the per-model target notice shows where the class lists differ."""

from __future__ import annotations

import re
import time

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from ui import state

from .conftest import keyed, page_problems, screenshot, wait_idle, wait_run, watch_run

pytestmark = pytest.mark.e2e

LOAD_MS = 180_000
KEEP = ("Vanilla gradient", "Grad-CAM")  # two rows of the shared pass: the grid is quick on both models


def _act(page, action) -> None:
    """Do ``action`` and wait for the whole rerun it starts."""
    watch_run(page)
    action()
    wait_run(page, timeout_ms=LOAD_MS)


def _remove(page, chip_button) -> None:
    """Remove one multiselect chip and wait for the rerun to end. A click that lands while the widget redraws
    after the previous removal is lost, so it is retried until the chip is gone."""
    for _ in range(3):
        chip_button.click()
        try:
            chip_button.wait_for(state="detached", timeout=20_000)
            break
        except PlaywrightTimeout:
            wait_idle(page, LOAD_MS)
    assert chip_button.count() == 0
    wait_idle(page, LOAD_MS)


def test_models_mode_fills_a_two_model_grid(page, base_url, artifacts_dir):
    page.goto(f"{base_url}/compare")
    page.locator('[data-testid="stSidebarNav"]').wait_for(timeout=LOAD_MS)
    page.get_by_role("heading", name="Compare").wait_for(timeout=LOAD_MS)
    wait_idle(page, LOAD_MS)
    started = time.monotonic()
    methods = page.locator(keyed(state.COMPARE_METHODS))
    labels = methods.locator("[data-tag]").evaluate_all("tags => tags.map(t => t.getAttribute('aria-label'))")
    for label in labels:
        if not label.endswith(KEEP):
            _remove(page, methods.get_by_role("button", name=f"Remove {label}"))
    _act(page, lambda: page.locator(keyed(state.COMPARE_COLUMNS)).get_by_text("Models", exact=True).click())
    page.locator(f"{keyed(state.COMPARE_MODELS)} [role=combobox]").click()
    _act(page, lambda: page.get_by_role("option", name=re.compile(r"^lenet_digits · ")).click())
    page.keyboard.press("Escape")

    grid = page.locator(keyed(state.COMPARE_GRID))
    header = grid.inner_text().replace("\u200b", "")
    assert "efficientnet_lite0" in header and "lenet_digits" in header and "Difference" in header
    images = grid.locator('[data-testid="stImage"] img')
    assert images.count() == len(KEEP) * 3  # two models and their difference, per method
    assert all(images.nth(i).evaluate("img => img.complete && img.naturalWidth > 0") for i in range(images.count()))
    assert "class lists differ" in page.locator('[data-testid="stAlert"]').first.inner_text()
    page.get_by_role("heading", name="Model agreement").wait_for()
    page.locator('[data-testid="stDataFrame"]').first.wait_for()  # the agreement table (a canvas grid)
    assert page_problems(page) == [] and page.js_errors == []
    assert time.monotonic() - started < 90
    screenshot(page, artifacts_dir / "compare_models.png")
