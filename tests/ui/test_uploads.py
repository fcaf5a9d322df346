"""AppTest with real uploads (st.file_uploader): unusable files give a clear message in the main area, an upload is
the image on every page, and an oversized picture is reported as such."""

from __future__ import annotations

from explainers.images import MAX_PIXELS
from tests.conftest import sample_path
from tests.ui.helpers import COMPARE, heatmap, selection, solid_png, start, top_class
from ui import state


def _upload(name: str, data: bytes, mime: str = "image/png"):
    at = start()
    at.segmented_control(key=state.IMAGE_SOURCE).set_value("Upload").run()
    assert not at.exception
    at.file_uploader(key=state.UPLOADS).set_value((name, data, mime)).run()
    assert not at.exception, "a traceback reached the page"
    return at


def _main_errors(at) -> list[str]:
    return [e.value for e in at.main.error]


def test_bad_upload_shows_a_clear_error():
    at = _upload("notes.png", b"shopping list: milk, eggs, coffee\n")
    (error,) = _main_errors(at)
    assert "'notes.png' is not an image" in error and "text file" in error
    assert "PNG" in error and "JPEG" in error  # what it accepts
    assert not at.sidebar.error  # shown where the user looks, not in the 240 px sidebar
    assert not [c for c in at.get("plotly_chart")]  # and nothing is explained


def test_an_upload_is_still_the_image_on_compare(default_bundle):
    at = _upload("mine.png", sample_path("coffee.png").read_bytes())
    assert not _main_errors(at)
    assert selection(at).image_name == "mine.png"
    coffee = default_bundle.categories[top_class(default_bundle, "coffee.png")]
    assert heatmap(at).title == f"Vanilla gradient · {coffee}"
    at.session_state[state.COMPARE_METHODS] = ["vanilla"]
    at.switch_page(COMPARE).run()
    assert not at.exception
    assert at.title[0].value == "Compare"
    assert not [i.value for i in at.main.info if "Upload an image" in i.value]
    assert selection(at).image_name == "mine.png"
    headers = [m.value for m in at.main.markdown]
    assert any(text.startswith(f"**{coffee} (") and "predicted" in text for text in headers), headers


def test_an_oversized_png_says_it_is_over_the_pixel_limit_and_how_to_downscale():
    data = solid_png(12000, 12000)
    assert 12000 * 12000 > MAX_PIXELS and len(data) < 1_000_000  # the premise: over the limit, small on disk
    at = _upload("huge.png", data)
    (error,) = _main_errors(at)
    assert "12000x12000" in error and "over the limit" in error and "megapixels" in error
    assert "downscale" in error and "-resize" in error
    assert "not an image" not in error
    assert not at.sidebar.error
