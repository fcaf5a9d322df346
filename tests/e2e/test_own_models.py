"""In Chromium: a user's own weights and class names uploaded on the Models page are explained on Explore; eight
sessions at once all finish the default Explore flow."""

from __future__ import annotations

import re

import pytest
import torch
import torchvision
from safetensors.torch import save_file

from .conftest import choose, keyed, page_problems, screenshot, wait_idle

pytestmark = pytest.mark.e2e

LOAD_MS = 180_000
LABELS = ["apple", "banana", "cherry", "damson"]


def _open(page, base_url: str, path: str = "") -> None:
    page.goto(f"{base_url}/{path}")
    page.locator('[data-testid="stSidebarNav"]').wait_for(timeout=LOAD_MS)
    wait_idle(page, LOAD_MS)


def test_uploaded_weights_and_labels_are_explained_on_explore(page, base_url, artifacts_dir, tmp_path):
    torch.manual_seed(5)
    model = torchvision.models.mobilenet_v3_small(num_classes=len(LABELS)).eval()
    weights = tmp_path / "fruit.safetensors"
    save_file(model.state_dict(), str(weights))
    labels = tmp_path / "fruit.txt"
    labels.write_text("\n".join(LABELS) + "\n")

    _open(page, base_url, "models")
    page.get_by_role("heading", name="Your model").wait_for()
    page.locator(f"{keyed('models.file')} input[type=file]").set_input_files(str(weights))
    page.locator(keyed("models.file")).get_by_text(weights.name).first.wait_for()
    choose(page, "models.architecture", "mobilenet_v3_small", text="mobilenet_v3_sm")
    page.locator(f"{keyed('models.labels')} input[type=file]").set_input_files(str(labels))
    page.locator(keyed("models.labels")).get_by_text(labels.name).first.wait_for()
    wait_idle(page)
    page.locator(keyed("models.load")).get_by_role("button").click()
    page.get_by_text("Loaded in this session").wait_for(timeout=LOAD_MS)
    wait_idle(page)
    assert page.locator(f"{keyed('model')} [role=combobox]").input_value() == (
        "fruit.safetensors · mobilenet_v3_small state dict · your model (4 classes)")
    assert page_problems(page) == []
    screenshot(page, artifacts_dir / "models_loaded.png")

    page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name="Explore").click()
    title = page.locator(f"{keyed('heatmap_chart')} .gtitle", has_text=re.compile(r"^Vanilla gradient · "))
    title.wait_for(timeout=LOAD_MS)
    wait_idle(page)
    shown = title.text_content()
    assert shown.split(" · ")[1] in LABELS, shown
    chart = page.locator(keyed("predictions_chart")).inner_text()
    assert all(name in chart for name in LABELS), chart
    assert page_problems(page) == [] and page.js_errors == []
    screenshot(page, artifacts_dir / "models_explore.png")


@pytest.mark.slow
def test_eight_sessions_at_once_finish_the_default_explore_flow(browser, base_url, artifacts_dir):
    contexts = [browser.new_context(viewport={"width": 1200, "height": 900}) for _ in range(8)]
    try:
        pages = [context.new_page() for context in contexts]
        errors: list[list[str]] = [[] for _ in pages]
        for page, found in zip(pages, errors):
            page.on("pageerror", lambda exc, found=found: found.append(str(exc)))
            page.set_default_timeout(LOAD_MS)
        for i, page in enumerate(pages):  # all eight start before any is waited for
            page.goto(f"{base_url}/?method={'gradcam' if i % 2 else 'vanilla'}", wait_until="commit")
        for i, page in enumerate(pages):
            name = "Grad-CAM" if i % 2 else "Vanilla gradient"
            page.locator(f"{keyed('heatmap_chart')} .gtitle", has_text=re.compile(rf"^{name} · ")).wait_for(
                timeout=LOAD_MS * 2)
            wait_idle(page, LOAD_MS)
            assert page_problems(page) == [], (i, page_problems(page))
            assert errors[i] == [], (i, errors[i])
        screenshot(pages[-1], artifacts_dir / "eight_sessions_last.png")
    finally:
        for context in contexts:
            context.close()


def _start_over_budget(page, cancel) -> None:
    """Start the chosen method: RISE is over Explore's budget on a slow machine, so it waits for Run (pressed
    here) before it starts; on a fast one it starts at once. Either way its Cancel button shows."""
    run = page.locator(keyed("run_again")).get_by_role("button")
    run.or_(cancel).first.wait_for(timeout=LOAD_MS)
    if run.count():
        assert "about" in run.inner_text()  # the Run button names its estimate
        run.click()
    cancel.wait_for(timeout=LOAD_MS)


def test_a_widget_change_mid_run_stops_the_old_run_and_shows_no_stale_map(page, base_url, artifacts_dir):
    """RISE (2000 masks, about 100 s here) is running when the user picks another method: the old run stops at its
    next batch (the progress callback is where Streamlit's rerun lands), the new method's map shows, no RISE map
    is ever drawn, and RISE never reached the cache (picking it again starts it afresh)."""
    page.goto(f"{base_url}/?method=rise")  # not _open: it would wait for the whole run to end
    cancel = page.locator(keyed("cancel_run")).get_by_role("button")
    _start_over_budget(page, cancel)  # RISE has started
    titles = []
    page.expose_function("sawTitle", lambda text: titles.append(text))
    page.evaluate("""() => new MutationObserver(() => document.querySelectorAll('.st-key-heatmap_chart .gtitle')
        .forEach(t => window.sawTitle(t.textContent))).observe(document.body, {subtree: true, childList: true,
        characterData: true})""")
    choose(page, "method", "Gradient · Vanilla gradient", text="Vanilla")
    page.locator(f"{keyed('heatmap_chart')} .gtitle", has_text=re.compile(r"^Vanilla gradient · ")).wait_for(
        timeout=90_000)
    wait_idle(page)
    assert not [t for t in titles if t.startswith("RISE")], titles  # no stale RISE map was ever drawn
    assert page_problems(page) == [] and page.js_errors == []
    screenshot(page, artifacts_dir / "rerun_mid_run.png")
    choose(page, "method", "Perturbation · RISE", text="RISE")
    _start_over_budget(page, cancel)  # not in the cache (no map shows): the stopped run never finished
    cancel.click()
    page.get_by_text(re.compile(r"^Cancelled\. ")).wait_for(timeout=60_000)  # then why it waits
    assert not [t for t in titles if t.startswith("RISE")], titles
