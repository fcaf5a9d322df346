"""The real dashboard in headless Chromium: Explore with an uploaded image, and the full default Compare grid.

Run with ``pytest tests/e2e``; needs /usr/bin/chromium (skips without it unless SALIENCY_REQUIRE_BROWSER=1).
Screenshots land in test-artifacts/.
"""

from __future__ import annotations

import re

import pytest

from .conftest import ROOT, choose, keyed, page_problems, screenshot, wait_idle

pytestmark = pytest.mark.e2e

CAT = ROOT / "assets" / "samples" / "cat.png"
TOP1, RUNNER_UP = "Egyptian cat", "tiger cat"  # efficientnet_lite0 on cat.png: 77% / 10%
LOAD_MS = 180_000  # first page load includes the model load; the shared machine is slow
GRID_MS = 600_000  # the default Compare grid runs Score-CAM and occlusion on one CPU thread
GRID_IMAGES = 6 * 3  # 6 default methods x (predicted, runner-up, difference)


def open_app(page, base_url: str, path: str = "") -> None:
    page.goto(f"{base_url}/{path}")
    page.locator('[data-testid="stSidebarNav"]').wait_for(timeout=LOAD_MS)
    wait_idle(page, LOAD_MS)


def test_explore_upload_runner_up_gradcam(page, base_url, artifacts_dir):
    open_app(page, base_url)
    page.locator(keyed("heatmap_chart")).wait_for(timeout=LOAD_MS)  # the default sample's first explanation

    page.locator(keyed("image_source")).get_by_role("radio", name="Upload").click()
    file_input = page.locator(f"{keyed('uploads')} input[type=file]")
    file_input.wait_for(state="attached")
    file_input.set_input_files(str(CAT))
    page.locator(keyed("uploads")).get_by_text(CAT.name).first.wait_for()  # the uploaded file's chip

    page.locator(keyed("target_mode")).get_by_role("radio", name="Runner-up").click()
    page.locator(keyed("target_mode")).get_by_role("radio", name="Runner-up", checked=True).wait_for()
    choose(page, "method", "CAM · Grad-CAM", text="Grad-CAM")

    title = page.locator(f"{keyed('heatmap_chart')} .gtitle", has_text=re.compile(rf"^gradcam · {RUNNER_UP}$"))
    title.wait_for(timeout=120_000)
    wait_idle(page)

    assert page.locator(f"{keyed('method')} [role=combobox]").input_value() == "CAM · Grad-CAM"
    predictions = page.locator(keyed("predictions_chart"))
    assert predictions.locator(".main-svg").count() >= 1, "the predictions chart is not drawn"
    chart_text = predictions.inner_text()
    assert TOP1 in chart_text and RUNNER_UP in chart_text, chart_text
    heatmap = page.locator(keyed("heatmap_chart"))
    assert heatmap.locator(".heatmaplayer").count() == 1, "the heatmap trace is not drawn"
    assert heatmap.locator(".heatmaplayer image").count() >= 1
    captions = " ".join(page.locator('[data-testid="stCaptionContainer"]').all_inner_texts())
    assert re.search(r"computed in \d+\.\d+ s|cached", captions), captions
    assert page_problems(page) == []
    assert page.js_errors == []
    screenshot(page, artifacts_dir / "explore.png")


def test_compare_default_grid(page, base_url, artifacts_dir):
    open_app(page, base_url)
    page.locator('[data-testid="stSidebarNavLink"]', has_text="Compare").click()
    page.wait_for_url(re.compile(r"/compare(\?.*)?$"))
    page.get_by_role("heading", name="Compare").wait_for(timeout=LOAD_MS)

    # The grid fills panel by panel; the agreement matrix is drawn once all of it is done.
    page.wait_for_function(
        """n => document.querySelectorAll('[data-testid="stMain"] [data-testid="stImage"] img').length >= n
               && document.querySelector('.st-key-agreement_spearman .heatmaplayer') !== null""",
        arg=GRID_IMAGES, timeout=GRID_MS, polling=1000,
    )
    wait_idle(page, GRID_MS)

    main = page.locator('[data-testid="stMain"]')
    assert main.locator('[data-testid="stImage"] img').count() == GRID_IMAGES
    bold = main.locator('[data-testid="stMarkdownContainer"] strong').all_inner_texts()  # headers and row labels
    for method in ("Vanilla gradient", "SmoothGrad", "Integrated gradients", "Grad-CAM", "Score-CAM", "Occlusion"):
        assert method in bold, f"no grid row for {method}: {bold}"
    assert {"Egyptian cat (285)", "tiger cat (282)", "Difference"} <= set(bold), bold
    assert main.get_by_role("heading", name="Method agreement").count() == 1
    assert page.locator(f"{keyed('agreement_spearman')} .heatmaplayer").count() == 1
    assert page.locator(keyed("export_zip")).get_by_role("button").count() == 1
    assert page_problems(page) == []
    assert page.js_errors == []
    screenshot(page, artifacts_dir / "compare.png")
