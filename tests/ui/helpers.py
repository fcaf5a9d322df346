"""Helpers for the dashboard's AppTests: start the app, read back what a page shows, and rebuild what it should
show from the explanation cache and the backend's render pipeline (never from hard-coded numbers)."""

from __future__ import annotations

import base64
import json
import re
import struct
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
from streamlit.testing.v1 import AppTest

from explainers import ExplanationRecord, class_probabilities, load_image
from explainers import render as rnd
from tests.conftest import ROOT, sample_path
from ui import state
from ui.explanations import cached, canonical, explanation_cache
from ui.outputs import render_record

TIMEOUT = 120
EXPLORE = "app_pages/explore.py"
COMPARE = "app_pages/compare.py"
METHODS_PAGE = "app_pages/methods.py"
RANGE = re.compile(r"Raw range \[([^,\]]+), ([^\]]+)\]")


def start(query: dict[str, str] | None = None, session: dict[str, Any] | None = None, page: str | None = None,
          clear_cache: bool = True, timeout: float = TIMEOUT) -> AppTest:
    """The app after its first run: ``query`` is the URL's query string, ``session`` session state set before
    the first run (e.g. small method parameters, so the first computation is quick), ``page`` the page to open."""
    if clear_cache:
        explanation_cache().clear()
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=timeout)
    for name, value in (query or {}).items():
        at.query_params[name] = value
    for key, value in (session or {}).items():
        at.session_state[key] = value
    if page is not None:
        at.switch_page(page)
    at.run()
    assert not at.exception, at.exception
    return at


def top_class(bundle, sample: str) -> int:
    """The model's top class for a sample image, computed outside the app."""
    image = load_image(sample_path(sample))
    return int(np.argmax(class_probabilities(bundle, bundle.preprocess(image))[0]))


def selection(at: AppTest):
    """The Selection the shared sidebar made in the last run."""
    return at.session_state[state.SELECTION]


def record(at: AppTest, method: str, params: dict | None, target: Any, layer: str | None = None
           ) -> ExplanationRecord:
    """The cached record the page computed for these settings, however spelled (it must be there)."""
    found = cached(selection(at), canonical(selection(at), method, params, target, layer))
    assert found is not None, f"no cached {method} record for target {target!r}, layer {layer!r}"
    return found


def view_of(at: AppTest, prefix: str = state.VIEW) -> rnd.View:
    """The View the page's view controls hold now."""
    key = lambda name: state.view_key(prefix, name)  # noqa: E731
    return rnd.View(
        sign=at.selectbox(key=key("sign")).value,
        reduction=at.selectbox(key=key("reduction")).value,
        clip=float(at.slider(key=key("clip")).value),
        colormap=at.selectbox(key=key("colormap")).value,
        alpha=float(at.slider(key=key("alpha")).value),
        original_aspect=bool(at.toggle(key=key("aspect")).value),
    )


def decode_array(value: Any) -> np.ndarray:
    """A plotly array from a figure's JSON: a plain list, or {"dtype", "bdata", "shape"} (base64 typed array)."""
    if isinstance(value, dict):
        array = np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
        shape = value.get("shape")
        if shape:
            array = array.reshape([int(s) for s in str(shape).split(",")])
        return array
    return np.asarray(value, dtype=np.float32)


@dataclass
class Heatmap:
    title: str
    z: np.ndarray
    zmin: float
    zmax: float
    colorscale: list


def heatmap(at: AppTest) -> Heatmap:
    """Explore's heatmap figure, decoded."""
    charts = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    figures = [c for c in charts if c["data"] and c["data"][0].get("type") == "heatmap"]
    assert figures, "no heatmap on the page"
    figure = figures[0]
    trace = figure["data"][0]
    return Heatmap(figure["layout"].get("title", {}).get("text", ""), decode_array(trace["z"]), trace["zmin"],
                   trace["zmax"], trace["colorscale"])


def shown(values: np.ndarray, z: np.ndarray) -> np.ndarray:
    """``values`` decimated the way the figure shows them (every step-th pixel, with step such that the shapes
    match), so a test compares pixels without knowing the figure's step."""
    for step in range(1, max(values.shape) + 1):
        picked = values[::step, ::step]
        if picked.shape == z.shape:
            return picked
    raise AssertionError(f"the heatmap's {z.shape} is no decimation of the rendered {values.shape} map")


def assert_heatmap_shows(at: AppTest, rendered: rnd.Rendered) -> Heatmap:
    """The page's heatmap shows exactly ``rendered``: its values, its range and its colour scale."""
    shown_map = heatmap(at)
    np.testing.assert_allclose(shown_map.z, shown(rendered.values, shown_map.z), rtol=1e-6, atol=0, equal_nan=True)
    assert (shown_map.zmin, shown_map.zmax) == (rendered.lo, rendered.hi)
    return shown_map


def caption_range(at: AppTest) -> tuple[str, str]:
    """(lo, hi) as printed in Explore's "Raw range [lo, hi]" caption."""
    found = [RANGE.search(c.value) for c in at.caption]
    found = [m for m in found if m]
    assert len(found) == 1, [c.value for c in at.caption]
    return found[0].group(1), found[0].group(2)


def printed(lo: float, hi: float) -> tuple[str, str]:
    """A range as the pages print it."""
    return f"{lo:.3g}", f"{hi:.3g}"


def texts(at: AppTest) -> list[str]:
    """Every text the page shows in markdown, captions, alerts and button labels."""
    out: list[str] = []
    for kind in ("markdown", "caption", "info", "warning", "error", "success", "title", "subheader", "header"):
        out += [str(element.value) for element in at.get(kind)]
    out += [button.label for button in at.button]
    return out


def main_images(at: AppTest) -> list:
    """The st.image elements of the main area (the sidebar's thumbnail and model view excluded)."""
    return list(at.main.get("image"))


def panel_captions(at: AppTest) -> list[str]:
    return [caption for image in main_images(at) for caption in image.captions]


def solid_png(width: int, height: int) -> bytes:
    """A valid, solid black 1-bit greyscale PNG of any size, a few kilobytes on disk: written row by row, so a
    12000×12000 picture never exists in memory."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte "none", then the packed pixels
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def expected(at: AppTest, rec: ExplanationRecord, view: rnd.View,
             fixed_range: tuple[float, float] | None = None) -> rnd.Rendered:
    """What the page should show for ``rec`` under ``view``: the backend's render on the page's own picture."""
    return render_record(rec, view, selection(at), fixed_range)
