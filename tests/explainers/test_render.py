"""The render pipeline: sign, reduction, range, placement, colour and overlay, each checked as a property."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from explainers import ParameterError
from explainers import render as rnd
from explainers.render import View, render, to_map

SIGN_PEAKS = {"positive": 1.0, "negative": 2.0, "absolute": 2.0}


# ---- the sign modes (issue: positive looked like absolute, negative was empty) ------------------------------


def one_channel_ramp() -> np.ndarray:
    """A 1-channel map with values in [-2, 1]: -2 at the left edge, 1 at the right."""
    return np.linspace(-2, 1, 31, dtype=np.float32)[None, None, :].repeat(5, axis=1)


@pytest.mark.parametrize("reduction", rnd.REDUCTIONS)
@pytest.mark.parametrize("sign, peak", SIGN_PEAKS.items())
def test_one_channel_map_sign_modes_peak_where_they_should(sign, peak, reduction):
    """The reduction does nothing to a 1-channel map: "positive" peaks at 1 (right edge), "negative" and
    "absolute" at 2 (left edge), whatever reduction is chosen."""
    values = to_map(one_channel_ramp(), sign, reduction)
    assert values.max() == pytest.approx(peak)
    assert values.min() == pytest.approx(0.0)
    where = np.unravel_index(values.argmax(), values.shape)[1]
    assert where == (30 if sign == "positive" else 0)
    ramp = one_channel_ramp()[0]
    expected = {"positive": np.maximum(ramp, 0), "negative": np.maximum(-ramp, 0), "absolute": np.abs(ramp)}[sign]
    np.testing.assert_array_equal(values, expected)


@pytest.mark.parametrize("reduction", rnd.REDUCTIONS)
def test_one_channel_map_renders_the_range_each_sign_asks_for(reduction):
    """Through the whole pipeline (the issue's "Raw range [0, 0]" for negative): the colour range of each sign."""
    expected = {"positive": (0.0, 1.0), "negative": (0.0, 2.0), "absolute": (0.0, 2.0), "signed": (-2.0, 2.0)}
    for sign, (lo, hi) in expected.items():
        rendered = render(one_channel_ramp(), View(sign=sign, reduction=reduction, clip=100))
        assert (rendered.lo, rendered.hi) == pytest.approx((lo, hi)), sign
        assert not rendered.empty, sign


def three_channel_ramp() -> np.ndarray:
    """The 1-channel ramp spread over 3 channels: each pixel's value sits in channel (column % 3), the other two
    channels are 0. Every reduction of it must give back the 1-channel ramp."""
    ramp = one_channel_ramp()[0]
    a = np.zeros((3, *ramp.shape), np.float32)
    for column in range(ramp.shape[1]):
        a[column % 3, :, column] = ramp[:, column]
    return a


@pytest.mark.parametrize("reduction", rnd.REDUCTIONS)
@pytest.mark.parametrize("sign", rnd.SIGNS)
def test_three_channel_map_in_minus_2_to_1_under_each_reduction(sign, reduction):
    """Positive peaks at 1, negative at 2, absolute at 2, signed keeps both -2 and 1, for max, sum and l2."""
    values = to_map(three_channel_ramp(), sign, reduction)
    ramp = one_channel_ramp()[0]
    expected = {"positive": np.maximum(ramp, 0), "negative": np.maximum(-ramp, 0), "absolute": np.abs(ramp),
                "signed": ramp}[sign]
    np.testing.assert_allclose(values, expected, rtol=1e-6, atol=0)
    peak = {"positive": 1.0, "negative": 2.0, "absolute": 2.0, "signed": 1.0}[sign]
    assert values.max() == pytest.approx(peak)
    assert values.min() == pytest.approx(-2.0 if sign == "signed" else 0.0)


def test_one_channel_signed_keeps_both_signs_and_every_reduction_does_nothing():
    attribution = one_channel_ramp()
    for reduction in rnd.REDUCTIONS:
        values = to_map(attribution, "signed", reduction)
        assert values.min() == pytest.approx(-2.0) and values.max() == pytest.approx(1.0)
        np.testing.assert_array_equal(values, attribution[0])


def three_channel(seed: int = 0) -> np.ndarray:
    """[3, 4, 4] in [-2, 1] with one pixel whose channels are (-2, 0.5, 1): it decides every reduction."""
    rng = np.random.default_rng(seed)
    a = rng.uniform(-1, 0.5, size=(3, 4, 4)).astype(np.float32)
    a[:, 0, 0] = (-2.0, 0.5, 1.0)
    return a


@pytest.mark.parametrize("reduction", rnd.REDUCTIONS)
@pytest.mark.parametrize("sign", rnd.SIGNS)
def test_three_channel_maps_respect_the_sign_under_each_reduction(sign, reduction):
    a = three_channel()
    values = to_map(a, sign, reduction)
    selected = {"absolute": np.abs(a), "positive": np.maximum(a, 0), "negative": np.maximum(-a, 0),
                "signed": a}[sign]
    if reduction == "sum":
        expected = selected.sum(axis=0)
    elif reduction == "l2":
        expected = np.sqrt((selected**2).sum(axis=0)) * (np.sign(a.sum(axis=0)) if sign == "signed" else 1)
    else:
        expected = np.take_along_axis(selected, np.abs(selected).argmax(axis=0)[None], axis=0)[0]
    np.testing.assert_allclose(values, expected, rtol=1e-6, atol=1e-7)
    if sign != "signed":
        assert values.min() >= 0, "a one-sided view must not contain the other sign"
    if sign == "negative":
        assert values[0, 0] == pytest.approx(2.0 if reduction in ("max", "sum") else 2.0)
    if sign == "positive":
        assert values[0, 0] == pytest.approx({"max": 1.0, "sum": 1.5, "l2": np.hypot(0.5, 1.0)}[reduction])
    if sign == "signed" and reduction == "max":
        assert values[0, 0] == pytest.approx(-2.0)  # the largest magnitude keeps its sign


def test_absolute_max_is_simonyan():
    a = three_channel(1)
    np.testing.assert_allclose(to_map(a), np.abs(a).max(axis=0))


def test_nan_in_attribution_does_not_propagate():
    a = three_channel()
    a[1, 2, 2] = np.nan
    a[0, 3, 3] = np.inf
    rendered = render(a)
    assert np.isfinite(rendered.values).all() and np.isfinite(rendered.normalized).all()


def test_attribution_shapes_accepted_and_rejected():
    a = three_channel()
    np.testing.assert_array_equal(to_map(torch.from_numpy(a)[None]), to_map(a))
    assert to_map(a[0]).shape == (4, 4)
    with pytest.raises(ParameterError, match="batch of one"):
        to_map(np.zeros((2, 3, 4, 4)))


# ---- ranges ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [0.0, 3.5, -2.0])
def test_constant_map_renders_as_empty_and_finite(value):
    rendered = render(np.full((1, 8, 8), value, np.float32), View(sign="signed"))
    assert np.isfinite(rendered.normalized).all()
    if value == 0:
        assert rendered.empty
        assert (rendered.normalized == 0).all()


def test_percentile_clip_keeps_outlier_from_crushing_the_rest():
    m = np.linspace(0, 1, 10_000, dtype=np.float32).reshape(100, 100)
    m[99, 99] = 1000.0
    lo, hi = rnd.value_range(m, 99.0)
    assert lo == 0 and hi < 2
    assert rnd.scale_to_range(m, lo, hi)[50, 50] == pytest.approx(0.5, abs=0.02)


def test_sparse_map_is_not_wiped_out_by_zero_percentile():
    m = np.zeros((100, 100), np.float32)
    m[3, 4] = 5.0
    assert rnd.value_range(m, 99.0) == (0.0, 5.0)


def test_signed_range_is_symmetric_and_keeps_zero_at_centre():
    m = np.array([[-4.0, 0.0, 2.0]], np.float32)
    lo, hi = rnd.value_range(m, 100, signed=True)
    assert (lo, hi) == (-4.0, 4.0)
    np.testing.assert_allclose(rnd.scale_to_range(m, lo, hi, signed=True), [[-1, 0, 0.5]])


def test_bad_clip_percentile_rejected():
    for bad in (0, -1, 101):
        with pytest.raises(ParameterError, match="clip"):
            View(clip=bad)


def test_percentile_of():
    m = np.arange(100, dtype=np.float32).reshape(10, 10)
    assert rnd.percentile_of(m, 49.0) == pytest.approx(50.0)
    assert rnd.percentile_of(m, [-1, 99]).tolist() == [0.0, 100.0]


def test_linked_range_spans_all_maps_and_fixed_range_is_used():
    small, large = np.full((1, 4, 4), 1.0, np.float32), np.full((1, 4, 4), 4.0, np.float32)
    small[0, 0, 0] = large[0, 0, 0] = 0.0
    view = View(clip=100)
    lo, hi = rnd.linked_range([small, large], view)
    assert (lo, hi) == (0.0, 4.0)
    own = render(small, view)
    linked = render(small, view, fixed_range=(lo, hi))
    assert own.normalized.max() == pytest.approx(1.0)
    assert linked.normalized.max() == pytest.approx(0.25)
    assert (linked.lo, linked.hi) == (0.0, 4.0)


# ---- colour ---------------------------------------------------------------------------------------------------


def test_colormaps_come_from_matplotlib_and_are_grouped():
    from matplotlib import colormaps

    for name in rnd.COLORMAPS:
        assert name in colormaps, name
        expected = np.rint(colormaps[name](1.0)[:3] * np.array(255.0))
        np.testing.assert_array_equal(rnd.colormap_lut(name)[-1], expected.astype(np.uint8))
    assert rnd.COLORMAPS[: len(rnd.PERCEPTUAL_COLORMAPS)] == rnd.PERCEPTUAL_COLORMAPS  # uniform ones first
    assert {"jet", "turbo"} <= set(rnd.RAINBOW_COLORMAPS) and "lightness" in rnd.RAINBOW_NOTE
    assert len(rnd.SEQUENTIAL_COLORMAPS) >= 10 and len(rnd.DIVERGING_COLORMAPS) >= 6


def test_diverging_default_zero_is_neutral_positive_red_negative_blue():
    lut = rnd.colorize(np.array([[-1.0, 0.0, 1.0]], np.float32), rnd.DEFAULT_DIVERGING)[0].astype(int)
    negative, zero, positive = lut
    assert zero.min() > 230  # near white
    assert positive[0] > 2 * positive[2] and positive[0] > 2 * positive[1]  # red
    assert negative[2] > 2 * negative[0] and negative[2] > negative[1]  # blue


@pytest.mark.parametrize("name", rnd.PERCEPTUAL_COLORMAPS)
def test_perceptual_maps_increase_in_luminance(name):
    lut = rnd.colormap_lut(name).astype(float)
    luminance = lut @ [0.2126, 0.7152, 0.0722]
    assert (np.diff(luminance) > -1.0).all()


def test_lut_is_cached_and_read_only():
    lut = rnd.colormap_lut("inferno")
    assert lut is rnd.colormap_lut("inferno")
    with pytest.raises(ValueError):
        lut[0, 0] = 1


def test_suggested_colormap_is_diverging_for_signed_only():
    assert rnd.is_diverging(rnd.suggested_colormap("signed"))
    for sign in ("absolute", "positive", "negative"):
        assert not rnd.is_diverging(rnd.suggested_colormap(sign))
    assert View(sign="signed").cmap == rnd.DEFAULT_DIVERGING
    assert View(sign="signed", colormap="viridis").cmap == "viridis"


@pytest.mark.parametrize("call", [
    lambda: View(sign="both"), lambda: View(reduction="max_abs"), lambda: View(colormap="rainbow"),
    lambda: View(alpha=1.5), lambda: rnd.colormap_lut("nope"),
])
def test_unknown_names_and_bad_values_are_parameter_errors(call):
    with pytest.raises(ParameterError):
        call()


def test_colour_scale_reproduces_the_rgb():
    """The scale handed to colorbars and figures gives each raw value the colour the PNG has."""
    m = np.linspace(-3, 3, 64, dtype=np.float32).reshape(8, 8)
    for view in (View(), View(sign="signed"), View(sign="signed", colormap="inferno"), View(colormap="RdBu_r")):
        rendered = render(m[None], view)
        position = (rendered.values - rendered.lo) / (rendered.hi - rendered.lo)
        index = np.clip(np.floor(position * (len(rendered.scale) - 1) + 0.5), 0, len(rendered.scale) - 1)
        expected = rendered.scale[index.astype(int)]
        assert np.abs(expected.astype(int) - rendered.rgb.astype(int)).max() <= 3, view


def test_magnitudes_on_a_diverging_map_use_the_zero_to_positive_half():
    rendered = render(np.array([[[0.0, 1.0]]], np.float32), View(colormap="RdBu_r", clip=100))
    zero, top = rendered.rgb[0].astype(int)
    assert zero.min() > 230 and top[0] > 2 * top[2]


def test_colormap_change_does_not_change_values():
    a = three_channel()
    first, second = render(a, View(colormap="inferno")), render(a, View(colormap="viridis"))
    np.testing.assert_array_equal(first.values, second.values)
    assert not np.array_equal(first.rgb, second.rgb)


# ---- placement and overlay -----------------------------------------------------------------------------------


def test_overlay_alpha_endpoints_and_resizing():
    image = np.full((6, 8, 3), 200, np.uint8)
    heat = np.zeros((3, 4, 3), np.uint8)
    np.testing.assert_array_equal(rnd.overlay(image, heat, 0.0), image)
    assert (rnd.overlay(image, heat, 1.0) == 0).all()
    assert rnd.overlay(Image.fromarray(image), heat, 0.5).shape == (6, 8, 3)


def test_place_stretches_onto_the_box_and_fills_the_rest():
    m = np.ones((4, 4), np.float32)
    placed = rnd.place(m, (10, 6), box=(2, 1, 6, 5))
    assert np.isnan(placed[0, 0]) and placed[2, 3] == 1.0
    assert np.isfinite(placed).sum() == 16
    assert rnd.place(m, (10, 6)).shape == (6, 10)


def test_render_on_a_backdrop_dims_what_the_model_never_saw():
    backdrop = np.full((6, 10, 3), 200, np.uint8)
    rendered = render(np.ones((1, 4, 4), np.float32), View(alpha=1.0), backdrop=backdrop, box=(2, 1, 6, 5))
    assert rendered.overlay.shape == (6, 10, 3)
    np.testing.assert_array_equal(rendered.overlay[0, 0], [100, 100, 100])  # outside: the picture at half
    assert (rendered.rgb[0, 0] == rnd.OUTSIDE_GREY).all()


def test_render_for_image_follows_the_aspect_setting(default_bundle):
    image = Image.new("RGB", (300, 150), (90, 120, 150))
    attribution = np.random.default_rng(0).normal(size=(3, 224, 224)).astype(np.float32)
    original = rnd.render_for_image(attribution, View(), image=image, bundle=default_bundle,
                                    preprocessing="center_crop")
    square = rnd.render_for_image(attribution, View(original_aspect=False), image=image, bundle=default_bundle,
                                  preprocessing="center_crop")
    assert original.overlay.shape == (150, 300, 3) and square.overlay.shape == (224, 224, 3)
    assert np.isnan(original.values[:, :10]).all()  # the centre crop cuts the sides off
    assert (original.lo, original.hi) == (square.lo, square.hi)  # the range is measured in model space


def test_to_pil():
    assert rnd.to_pil(np.zeros((3, 4, 3), np.uint8)).size == (4, 3)
    assert np.asarray(rnd.to_pil(np.ones((2, 2), np.float32))).max() == 255
