"""In Chromium: a TorchScript detector (tests/dense_models.py's planted one) uploaded on the Models page, the
scene uploaded as the image; Explore draws its boxes, a click on a box makes it the target and its map is drawn
with no error; Compare's columns are the two boxes. A segmenter's legend and a box dragged on it (a drawn
region) likewise. The server trusts code (SALIENCY_TRUST_CODE=1): TorchScript is refused otherwise."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from PIL import Image

from explainers.models import dense_zoo, zoo
from tests.dense_models import CATEGORIES, PlantedDetector, PlantedSegmenter, scene_image
from ui.figures import LABELLED_BOXES

from .conftest import (
    browser_page,
    choose,
    keyed,
    open_selectbox,
    page_problems,
    require_browser,
    screenshot,
    start_server,
    stop_server,
    wait_idle,
)

pytestmark = pytest.mark.e2e

LOAD_MS = 180_000
HEATMAP_TITLE = f"{keyed('heatmap_chart')} .gtitle"


def write_inputs(folder: Path) -> dict[str, Path]:
    """The scripted planted models, their class names and the scene (four times the model's 64 px)."""
    files = {"detector": folder / "planted_detector.pt", "segmenter": folder / "planted_segmenter.pt",
             "labels": folder / "planted_labels.txt", "scene": folder / "scene.png"}
    torch.jit.save(torch.jit.script(PlantedDetector()), str(files["detector"]))
    torch.jit.save(torch.jit.script(PlantedSegmenter()), str(files["segmenter"]))
    files["labels"].write_text("\n".join(CATEGORIES) + "\n")
    scene_image(64).resize((256, 256), Image.Resampling.NEAREST).save(files["scene"])
    return files


def open_page(page, base_url: str, path: str = "") -> None:
    page.goto(f"{base_url}/{path}")
    page.locator('[data-testid="stSidebarNav"]').wait_for(timeout=LOAD_MS)
    wait_idle(page, LOAD_MS)


def go(page, name: str) -> None:
    page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name=name).click()
    page.get_by_role("heading", name=name).first.wait_for(timeout=LOAD_MS)
    wait_idle(page, LOAD_MS)


def load_scripted(page, base_url: str, model: Path, labels: Path, *, plain_pixels: bool = False) -> None:
    """Upload a TorchScript model on the Models page at 64 px (no architecture is asked for: the file is told
    apart by its content), with its class names; ``plain_pixels`` sets mean 0 and std 1 (a segmenter)."""
    open_page(page, base_url, "models")
    page.locator(f"{keyed('models.file')} input[type=file]").set_input_files(str(model))
    page.locator(keyed("models.file")).get_by_text(model.name).first.wait_for()
    assert not page.locator(keyed("models.architecture")).count()  # TorchScript: told apart by its content
    if not page.locator(keyed("models.forget_labels")).count():  # the session keeps the last class-names file
        page.locator(f"{keyed('models.labels')} input[type=file]").set_input_files(str(labels))
        page.locator(keyed("models.labels")).get_by_text(labels.name).first.wait_for()
        wait_idle(page)
    page.locator(keyed("models.custom_preprocessing")).locator("label").first.click()
    size = page.locator(f"{keyed('models.input_size.torchscript')} input")
    size.wait_for()
    size.fill("64")
    size.press("Enter")
    if plain_pixels:
        for key, text in (("models.mean.torchscript", "0, 0, 0"), ("models.std.torchscript", "1, 1, 1")):
            field = page.locator(f"{keyed(key)} input")
            field.fill(text)
            field.press("Enter")
    wait_idle(page)
    page.locator(keyed("models.load")).get_by_role("button").click()
    page.get_by_text("Loaded in this session").wait_for(timeout=LOAD_MS)
    wait_idle(page)


def upload_image(page, image: Path) -> None:
    page.locator(keyed("image_source")).get_by_role("radio", name="Upload").click()
    page.locator(f"{keyed('uploads')} input[type=file]").set_input_files(str(image))
    page.locator(keyed("uploads")).get_by_text(image.name).first.wait_for()
    wait_idle(page, LOAD_MS)


def wait_title(page, pattern: str) -> str:
    title = page.locator(HEATMAP_TITLE, has_text=re.compile(pattern))
    title.wait_for(timeout=LOAD_MS)
    wait_idle(page, LOAD_MS)
    return title.text_content()


def click_box(page, index: int) -> None:
    """Click box ``index``'s centre marker on Explore's boxes figure (five markers a box, the centre first)."""
    points = page.locator(f"{keyed('dense_chart')} .scatterlayer .trace").last.locator("path.point")
    points.nth(5 * index).click(force=True)


@pytest.fixture(scope="module")
def trusted_server():
    require_browser()
    server = start_server(log_name="streamlit-dense.log", extra_env={"SALIENCY_TRUST_CODE": "1"})
    try:
        yield server
    finally:
        stop_server(server)


@pytest.fixture
def trusted_page(browser, trusted_server, artifacts_dir, request):
    with browser_page(browser, trusted_server, artifacts_dir, request) as opened:
        yield opened


def test_scripted_detector_boxes_click_explore_and_compare(trusted_page, trusted_server, artifacts_dir, tmp_path):
    page, files = trusted_page, write_inputs(tmp_path)
    load_scripted(page, trusted_server.url, files["detector"], files["labels"])
    go(page, "Explore")
    upload_image(page, files["scene"])
    figure = page.locator(keyed("dense_chart"))
    figure.locator(".annotation").first.wait_for(timeout=LOAD_MS)
    shown = figure.inner_text()
    assert "#1 red" in shown and "#2 blue" in shown, shown
    assert wait_title(page, r"^Vanilla gradient · #1 red").startswith("Vanilla gradient · #1 red")
    click_box(page, 1)
    assert "#2 blue" in wait_title(page, r"#2 blue")
    assert page_problems(page) == [] and page.js_errors == []
    screenshot(page, artifacts_dir / "dense_explore.png")

    go(page, "Compare")
    main = page.locator('[data-testid="stMain"]')
    main.get_by_text(re.compile(r"#1 red")).first.wait_for(timeout=LOAD_MS)
    main.get_by_text(re.compile(r"#2 blue")).first.wait_for(timeout=LOAD_MS)
    wait_idle(page, LOAD_MS)
    assert page_problems(page) == []
    screenshot(page, artifacts_dir / "dense_compare.png")


ZOO_DETECTOR = "fasterrcnn_mobilenet_v3_large_320_fpn"


def seed_zoo_weights(home: Path, name: str) -> Path:
    """A seeded state dict of the zoo model ``name`` where the offline loader looks for its weights."""
    folder = home / "hub" / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / zoo.weights_url(zoo.default_weights(name)).rsplit("/", 1)[-1]
    torch.manual_seed(0)
    torch.save(dense_zoo.construct(name).state_dict(), path)
    return path


def layer_options(page, text: str) -> list[str]:
    """The layer picker's options matching ``text`` (the list is virtual: only what is typed is rendered)."""
    found = open_selectbox(page, "layer", text).get_by_role("option").all_inner_texts()
    page.keyboard.press("Escape")
    return [option for option in found if option != "No results"]


@pytest.fixture(scope="module")
def zoo_server(tmp_path_factory):
    require_browser()
    home = tmp_path_factory.mktemp("torch_home")
    seed_zoo_weights(home, ZOO_DETECTOR)
    server = start_server(log_name="streamlit-dense-zoo.log",
                          extra_env={"TORCH_HOME": str(home), "SALIENCY_OFFLINE": "1"})
    try:
        yield server
    finally:
        stop_server(server)


def test_seeded_zoo_detector_lists_many_boxes_and_grad_cam_reads_backbone_and_fpn(trusted_page, zoo_server,
                                                                                 artifacts_dir):
    """A seeded torchvision detector (scores ~0.01): at threshold 0 it lists many boxes, the best few labelled;
    Grad-CAM draws a map of the best box on a backbone layer, and the layer picker offers the FPN's layers."""
    page = trusted_page
    open_page(page, zoo_server.url)
    choose(page, "model", re.compile(ZOO_DETECTOR), text="fasterrcnn_mobilenet")
    wait_idle(page, LOAD_MS)
    slider = page.locator(keyed("dense.score_threshold")).get_by_role("slider")
    slider.wait_for(timeout=LOAD_MS)
    slider.focus()
    slider.press("Home")
    caption = page.get_by_text(re.compile(r"(\d+) boxes at or above score 0\.00"))
    caption.wait_for(timeout=LOAD_MS)
    wait_idle(page, LOAD_MS)
    count = int(re.search(r"(\d+) boxes", caption.text_content()).group(1))
    assert count > LABELLED_BOXES
    assert f"the best {LABELLED_BOXES}" in caption.text_content()
    assert page.locator(f"{keyed('dense_chart')} .annotation").count() == LABELLED_BOXES
    choose(page, "method", "CAM · Grad-CAM", text="Grad-CAM")
    title = wait_title(page, r"^Grad-CAM · #1 .* · backbone\.")
    assert "backbone.fpn" not in title  # the default layer is the backbone's last
    assert layer_options(page, "backbone.body") and layer_options(page, "backbone.fpn")
    page.get_by_text("the explained box in cyan").first.wait_for()
    assert page_problems(page) == [] and page.js_errors == []
    screenshot(page, artifacts_dir / "dense_zoo_gradcam.png")
    # the threshold persists as every control does: after a classifier (the control not drawn) it is back as set,
    # in the browser too (the slider's own value, not only the server's)
    iou = page.locator(keyed("dense.iou_threshold"))
    iou.get_by_role("slider").focus()
    iou.get_by_role("slider").press("ArrowRight")  # 0.55: neither the control's minimum nor its default
    iou.get_by_test_id("stSliderThumbValue").filter(has_text="0.55").wait_for()
    wait_idle(page, LOAD_MS)
    choose(page, "model", re.compile(r"lenet_digits"), text="lenet_digits")
    page.locator(keyed("dense.score_threshold")).wait_for(state="detached", timeout=LOAD_MS)
    wait_idle(page, LOAD_MS)
    choose(page, "model", re.compile(ZOO_DETECTOR), text="fasterrcnn_mobilenet")
    page.get_by_text(re.compile(r"boxes at or above score 0\.00")).first.wait_for(timeout=LOAD_MS)
    wait_idle(page, LOAD_MS)
    shown = page.locator(keyed("dense.score_threshold")).get_by_test_id("stSliderThumbValue")
    assert float(shown.inner_text()) == 0.0, shown.inner_text()
    assert iou.get_by_test_id("stSliderThumbValue").inner_text() == "0.55"  # as set, in the browser too
