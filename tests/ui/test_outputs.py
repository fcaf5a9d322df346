"""One result: its panels are the same size whatever the picture's aspect, and its downloads are named for the image,
the method, the target and the layer."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from explainers import ExplanationRecord
from explainers import render as rnd
from ui.figures import PANEL_MAX_HEIGHT, PANEL_WIDTH, TITLE_HEIGHT, heatmap_figure, panel_size
from ui.outputs import download_stem


def _record(method: str, target: tuple[int, ...], layer: str | None) -> ExplanationRecord:
    return ExplanationRecord(attribution=np.zeros((1, 4, 4), np.float32), target=target, logits=np.zeros(3),
                             method=method, params={}, elapsed_s=0.0, layer=layer)


def test_two_downloads_of_one_image_and_method_never_share_a_name():
    """The predicted class and the runner-up, or two layers, used to download as the same ``cat_gradcam.png``."""
    names = {download_stem("cat.png", _record("gradcam", (285,), "_blocks.15")),
             download_stem("cat.png", _record("gradcam", (282,), "_blocks.15")),
             download_stem("cat.png", _record("gradcam", (285,), "_head_act")),
             download_stem("cat.png", _record("gradcam", (285, 282), "_head_act"))}
    assert len(names) == 4
    assert download_stem("cat.png", _record("gradcam", (285,), "_blocks.15")) == "cat_gradcam_285__blocks.15"
    assert download_stem("my photo.jpg", _record("vanilla", (3, 5), None)) == "my-photo_vanilla_3-vs-5"


# ---- issue 18, item 13: the heatmap panel is as tall as its neighbours ------------------------------------------


def _rendered(width: int, height: int, preprocessing: str, bundle):
    image = Image.new("RGB", (width, height), (120, 90, 60))
    attribution = np.random.default_rng(0).normal(size=(3, 224, 224)).astype(np.float32)
    return rnd.render_for_image(attribution, rnd.View(), image=image, bundle=bundle, preprocessing=preprocessing)


def test_the_heatmap_figure_is_as_tall_as_the_picture_panels_beside_it(default_bundle):
    for width, height in ((400, 900), (900, 400), (300, 300)):
        rendered = _rendered(width, height, "resize", default_bundle)
        panel_width, panel_height = panel_size(rendered.values.shape)
        assert panel_width <= PANEL_WIDTH and panel_height <= PANEL_MAX_HEIGHT
        assert abs(panel_width / panel_height - width / height) < 0.01  # the picture's aspect
        assert heatmap_figure(rendered, title="t").layout.height == panel_height + TITLE_HEIGHT
    tall = panel_size((900, 400))
    assert tall[1] == PANEL_MAX_HEIGHT  # a tall picture: as tall as allowed, narrower than a wide one
    assert heatmap_figure(_rendered(400, 900, "resize", default_bundle)).layout.height == PANEL_MAX_HEIGHT


def test_under_centre_crop_the_heatmap_spans_the_whole_picture_not_the_crop(default_bundle):
    rendered = _rendered(400, 900, "center_crop", default_bundle)
    assert np.isnan(rendered.values[0]).all()  # the premise: the model never saw the top rows
    figure = heatmap_figure(rendered)
    layout = figure.layout
    values, outside = (np.asarray(trace.z, dtype=np.float32) for trace in figure.data)
    np.testing.assert_array_equal(np.isnan(values), ~np.isnan(outside))  # grey exactly where the map is not
    x_lo, x_hi = sorted(layout.xaxis.range)
    y_lo, y_hi = sorted(layout.yaxis.range)
    assert (x_hi - x_lo, y_hi - y_lo) == pytest.approx((400, 900), abs=8)  # the whole picture, not the square
    assert layout.yaxis.range[0] > layout.yaxis.range[1]  # top row at the top
