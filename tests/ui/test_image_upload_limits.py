"""AppTest: the image uploader's 25 MB limit (set on the widget, and checked again after upload, before decoding)
and the loader's notices (an animated GIF's first frame) shown to the user."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

import ui.sidebar
from explainers.images import MAX_IMAGE_BYTES, MAX_IMAGE_MB
from tests.ui.helpers import selection, start
from ui import state
from ui.sidebar import Problem


def _uploaded(name: str, data: bytes, mime: str):
    at = start()
    at.segmented_control(key=state.IMAGE_SOURCE).set_value("Upload").run()
    assert not at.exception
    return at, at.file_uploader(key=state.UPLOADS)


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
    at, uploader = _uploaded("huge.png", data, "image/png")
    assert uploader.proto.max_upload_size_mb == MAX_IMAGE_MB  # the browser refuses it before sending, too
    uploader.set_value(("huge.png", data, "image/png")).run()
    assert not at.exception
    (error,) = [e.value for e in at.main.error]
    assert "'huge.png' is 25.1 MB, over the 25 MB limit for images" in error
    assert not at.sidebar.error
    assert isinstance(selection(at), Problem)
    assert decoded == []  # refused on its size: load_image never saw the bytes


def test_an_animated_gif_shows_which_frame_is_used():
    frames = [Image.new("RGB", (16, 16), colour) for colour in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    at, uploader = _uploaded("spin.gif", buffer.getvalue(), "image/gif")
    uploader.set_value(("spin.gif", buffer.getvalue(), "image/gif")).run()
    assert not at.exception
    assert "animated GIF: using the first of 3 frames" in [i.value for i in at.sidebar.info]
    chosen = selection(at)
    assert chosen.image_name == "spin.gif"
    assert tuple(np.asarray(chosen.image)[8, 8]) == (255, 0, 0)  # the first frame, not a later one
