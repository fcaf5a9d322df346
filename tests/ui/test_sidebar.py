"""The shared sidebar's image: uploads (st.file_uploader) that cannot be used give a clear message in the main
area, an upload is the image on every page, the uploader's 25 MB limit holds (set on the widget, and checked again
before decoding), and the loader's notices (an animated GIF's first frame) are shown."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

import ui.sidebar
from explainers.images import MAX_IMAGE_BYTES, MAX_IMAGE_MB, MAX_PIXELS
from tests.conftest import sample_path
from tests.ui.helpers import COMPARE, EXPLORE, heatmap, selection, solid_png, start, top_class
from ui import state
from ui.sidebar import RUN_SOURCE, Problem


def _upload_mode():
    at = start()
    at.segmented_control(key=state.IMAGE_SOURCE).set_value("Upload").run()
    assert not at.exception
    return at


def _upload(name: str, data: bytes, mime: str = "image/png"):
    at = _upload_mode()
    at.file_uploader(key=state.UPLOADS).set_value((name, data, mime)).run()
    assert not at.exception, "a traceback reached the page"
    return at


def test_upload_mode_without_a_file_says_what_to_do():
    at = _upload_mode()
    assert any("Upload an image" in i.value for i in at.main.info)
    assert not at.error


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


def test_an_upload_over_25_mb_gets_a_clear_error_and_is_never_decoded(monkeypatch):
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), (255, 0, 0)).save(buffer, format="PNG")
    data = buffer.getvalue() + b"\0" * (MAX_IMAGE_BYTES + 1 - len(buffer.getvalue()))  # decodable, 1 byte too big
    decoded = []
    real = ui.sidebar.load_image

    def counting(source, *args, **kwargs):
        if isinstance(source, (bytes, bytearray)):
            decoded.append(len(source))
        return real(source, *args, **kwargs)

    monkeypatch.setattr(ui.sidebar, "load_image", counting)
    at = _upload("huge.png", data)
    assert at.file_uploader(key=state.UPLOADS).proto.max_upload_size_mb == MAX_IMAGE_MB  # the browser refuses it too
    (error,) = _main_errors(at)
    assert "'huge.png' is 25.1 MB, over the 25 MB limit for images" in error
    assert not at.sidebar.error
    assert isinstance(selection(at), Problem)
    assert decoded == []  # refused on its size: load_image never saw the bytes


def test_an_animated_gif_shows_which_frame_is_used():
    frames = [Image.new("RGB", (16, 16), colour) for colour in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    at = _upload("spin.gif", buffer.getvalue(), "image/gif")
    assert "animated GIF: using the first of 3 frames" in [i.value for i in at.sidebar.info]
    chosen = selection(at)
    assert chosen.image_name == "spin.gif"
    assert tuple(np.asarray(chosen.image)[8, 8]) == (255, 0, 0)  # the first frame, not a later one


def test_uploads_survive_switching_the_source_to_samples_and_back():
    """Issue 18: the uploader's state is dropped while Samples is shown; the session keeps its uploads itself."""
    cat, coffee = sample_path("cat.png").read_bytes(), sample_path("coffee.png").read_bytes()
    at = _upload_mode()
    at.file_uploader(key=state.UPLOADS).set_value([("pet.png", cat, "image/png"),
                                                   ("mine.png", coffee, "image/png")]).run()
    at.radio(key=state.UPLOAD_PICK).set_value("mine.png").run()
    uploaded = selection(at)
    assert uploaded.image_name == "mine.png"
    at.segmented_control(key=state.IMAGE_SOURCE).set_value("Samples").run()
    assert not at.exception
    assert selection(at).image_hash != uploaded.image_hash
    at.segmented_control(key=state.IMAGE_SOURCE).set_value("Upload").run()
    assert not at.exception
    assert not [i.value for i in at.main.info if "Upload an image" in i.value]
    back = selection(at)
    assert (back.image_name, back.image_hash) == ("mine.png", uploaded.image_hash)  # the chosen one, too
    assert at.radio(key=state.UPLOAD_PICK).options == ["pet.png", "mine.png"]
    at.button(key=state.CLEAR_UPLOADS).click().run()
    assert any("Upload an image" in i.value for i in at.main.info)
    assert state.KEPT_UPLOADS not in at.session_state  # their bytes are gone


def test_uploads_survive_a_batch_runs_image_opened_on_explore_and_the_way_back():
    """Issue 18, item 1: upload, open a batch run's image on Explore (the Batch page's "Open on Explore" sets the
    sidebar's pending image, as ui.batch.open_on_explore does), click Upload: the upload is still the image."""
    at = _upload("mine.png", sample_path("coffee.png").read_bytes())
    uploaded = selection(at)
    at.session_state[state.PENDING_IMAGE] = str(sample_path("cat.png"))  # the run's local image file
    at.switch_page(EXPLORE).run()
    assert not at.exception
    assert at.segmented_control(key=state.IMAGE_SOURCE).value == RUN_SOURCE
    assert selection(at).image_name == "cat.png"
    at.segmented_control(key=state.IMAGE_SOURCE).set_value("Upload").run()
    assert not at.exception
    assert not [i.value for i in at.main.info if "Upload an image" in i.value], "the upload was lost"
    back = selection(at)
    assert (back.image_name, back.image_hash) == ("mine.png", uploaded.image_hash)
    assert any("mine.png" in c.value for c in at.sidebar.caption)  # named in the sidebar, with Clear uploads
    at.segmented_control(key=state.IMAGE_SOURCE).set_value(RUN_SOURCE).run()  # and the run's image is still offered
    assert selection(at).image_name == "cat.png"
