"""Tests for explainers.render: reductions, sign modes, normalisation, colormaps, overlay, one-call render."""

import numpy as np
import plotly.colors as pcolors
import pytest
import torch
from PIL import Image

from explainers import render as R
from explainers.render import (
    COLORMAPS,
    REDUCTIONS,
    SIGNS,
    RenderedMap,
    apply_sign,
    colorize,
    colormap_lut,
    coloured_gradient,
    normalize,
    overlay,
    percentile_of,
    plotly_colorscale,
    reduce_channels,
    render,
    resize_map,
    suggested_colormap,
    to_pil,
)

# Two channels, 1x3 pixels; every reduction gives a different answer on at least one pixel.
G = np.array(
    [
        [[1.0, -4.0, 0.0]],
        [[-3.0, 2.0, 0.0]],
    ],
    dtype=np.float32,
)


def _luminance(rgb):
    rgb = np.asarray(rgb, dtype=np.float64)
    return 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]


# ----------------------------------------------------------------------------------------------------- reduce


@pytest.mark.parametrize(
    "reduction, expected",
    [
        ("max_abs", [[3.0, 4.0, 0.0]]),
        ("max_positive", [[1.0, 2.0, 0.0]]),
        ("sum", [[-2.0, -2.0, 0.0]]),
        ("sum_abs", [[4.0, 6.0, 0.0]]),
        ("l2", [[np.sqrt(10.0), np.sqrt(20.0), 0.0]]),
    ],
)
def test_reductions_match_hand_computed(reduction, expected):
    out = reduce_channels(G, reduction)
    assert out.dtype == np.float32
    assert out.shape == (1, 3)
    np.testing.assert_allclose(out, expected, rtol=1e-6)


def test_reductions_tuple_is_complete():
    assert set(REDUCTIONS) == {"max_abs", "max_positive", "sum", "sum_abs", "l2"}


def test_max_positive_ignores_negative_only_pixels():
    g = np.array([[[-5.0]], [[-1.0]]], dtype=np.float32)
    assert reduce_channels(g, "max_positive")[0, 0] == 0.0
    assert reduce_channels(g, "max_abs")[0, 0] == 5.0


@pytest.mark.parametrize(
    "reduction, expected",
    [
        ("max_abs", [[2.0, 3.0]]),
        ("max_positive", [[0.0, 3.0]]),
        ("sum", [[-2.0, 3.0]]),
        ("sum_abs", [[2.0, 3.0]]),
        ("l2", [[2.0, 3.0]]),
    ],
)
def test_single_channel_and_2d_inputs(reduction, expected):
    single = np.array([[[-2.0, 3.0]]], dtype=np.float32)
    np.testing.assert_allclose(reduce_channels(single, reduction), expected, rtol=1e-6)
    np.testing.assert_allclose(reduce_channels(single[0], reduction), expected, rtol=1e-6)


def test_batch_of_one_and_torch_tensor_accepted():
    t = torch.tensor(G).unsqueeze(0).requires_grad_(True)
    out = reduce_channels(t, "sum_abs")
    assert isinstance(out, np.ndarray)
    np.testing.assert_allclose(out, [[4.0, 6.0, 0.0]])


def test_batch_larger_than_one_rejected():
    with pytest.raises(ValueError):
        reduce_channels(np.zeros((2, 3, 4, 4), np.float32))


def test_nan_in_attribution_does_not_propagate():
    g = G.copy()
    g[0, 0, 2] = np.nan
    out = reduce_channels(g, "l2")
    assert np.isfinite(out).all()
    assert out[0, 2] == 0.0


# ------------------------------------------------------------------------------------------------------- sign


def test_sign_modes():
    m = np.array([[-2.0, 0.0, 3.0]], dtype=np.float32)
    np.testing.assert_array_equal(apply_sign(m, "absolute"), [[2.0, 0.0, 3.0]])
    np.testing.assert_array_equal(apply_sign(m, "positive"), [[0.0, 0.0, 3.0]])
    np.testing.assert_array_equal(apply_sign(m, "negative"), [[2.0, 0.0, 0.0]])
    np.testing.assert_array_equal(apply_sign(m, "signed"), m)
    assert set(SIGNS) == {"absolute", "positive", "negative", "signed"}


# -------------------------------------------------------------------------------------------------- normalise


@pytest.mark.parametrize("value", [0.0, 3.5, -2.0])
def test_normalize_constant_map_is_zero_and_finite(value):
    m = np.full((4, 5), value, dtype=np.float32)
    out, lo, hi = normalize(m)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, 0.0)
    assert lo == hi == value


def test_signed_normalize_all_zero_is_zero_and_finite():
    out, lo, hi = normalize(np.zeros((4, 5), np.float32), signed=True)
    np.testing.assert_array_equal(out, 0.0)
    assert (lo, hi) == (0.0, 0.0)


@pytest.mark.parametrize("value", [3.5, -2.0])
def test_signed_normalize_constant_nonzero_keeps_its_sign(value):
    # Signed scaling is anchored at zero, so a constant non-zero map is not degenerate: it is all +-1.
    out, lo, hi = normalize(np.full((4, 5), value, dtype=np.float32), signed=True)
    assert np.isfinite(out).all()
    np.testing.assert_array_equal(out, np.sign(value))
    assert hi == abs(value) and lo == -abs(value)


def test_normalize_nan_treated_as_zero():
    m = np.array([[np.nan, 1.0], [2.0, 4.0]], dtype=np.float32)
    out, lo, hi = normalize(m, clip_percentile=100)
    assert np.isfinite(out).all()
    assert lo == 0.0 and hi == 4.0
    np.testing.assert_allclose(out, [[0.0, 0.25], [0.5, 1.0]])
    out_s, _, _ = normalize(np.full((2, 2), np.nan), signed=True)
    assert np.isfinite(out_s).all()


def test_percentile_clip_keeps_outlier_from_crushing_the_rest():
    m = np.linspace(0.0, 1.0, 1000, dtype=np.float32).reshape(25, 40)
    m[0, 0] = 1e6
    out, _, hi = normalize(m, clip_percentile=99.0)
    assert hi < 2.0  # the outlier did not set the top
    assert out[0, 0] == 1.0  # it is clipped
    # A mid-range pixel still sits mid-range instead of ~0 as it would with max scaling.
    assert 0.4 < out.flat[500] < 0.6
    # Without the clip (100th percentile) the same pixel collapses near zero: the clip really matters.
    out100, _, _ = normalize(m, clip_percentile=100)
    assert out100.flat[500] < 1e-5


def test_unsigned_normalize_lo_hi_are_raw_units():
    m = np.array([[2.0, 4.0], [6.0, 10.0]], dtype=np.float32)
    out, lo, hi = normalize(m, clip_percentile=100)
    assert (lo, hi) == (2.0, 10.0)
    np.testing.assert_allclose(lo + out * (hi - lo), m, rtol=1e-6)


def test_sparse_map_is_not_wiped_out_by_zero_percentile():
    m = np.zeros((100, 100), dtype=np.float32)
    m[0, 0] = 5.0  # 99.5th percentile is 0 here
    out, _, hi = normalize(m)
    assert out[0, 0] == 1.0 and hi == 5.0


def test_signed_normalize_keeps_sign_and_zero_at_centre():
    m = np.array([[-4.0, -1.0, 0.0, 2.0, 4.0]], dtype=np.float32)
    out, lo, hi = normalize(m, clip_percentile=100, signed=True)
    assert (lo, hi) == (-4.0, 4.0)
    np.testing.assert_allclose(out, [[-1.0, -0.25, 0.0, 0.5, 1.0]])
    assert np.array_equal(np.sign(out), np.sign(m))


def test_signed_normalize_clips_outliers_symmetrically():
    m = np.linspace(-1.0, 1.0, 1001, dtype=np.float32)[None]
    m[0, 0] = -1e6
    out, lo, hi = normalize(m, clip_percentile=99.0, signed=True)
    assert out[0, 0] == -1.0
    assert lo == -hi and hi < 2.0


def test_bad_clip_percentile_rejected():
    with pytest.raises(ValueError):
        normalize(np.ones((2, 2)), clip_percentile=0)
    with pytest.raises(ValueError):
        normalize(np.ones((2, 2)), clip_percentile=150)


def test_percentile_of():
    values = np.arange(100, dtype=np.float32).reshape(10, 10)
    assert percentile_of(values, 49.0) == pytest.approx(50.0)
    assert percentile_of(values, -1.0) == 0.0
    assert percentile_of(values, 1000.0) == 100.0
    np.testing.assert_allclose(percentile_of(values, np.array([0.0, 99.0])), [1.0, 100.0])


# --------------------------------------------------------------------------------------------------- colormaps


def test_diverging_colormap_zero_white_positive_red_negative_blue():
    rgb = colorize(np.array([[-1.0, 0.0, 1.0]], dtype=np.float32), "rdbu").astype(int)
    neg, zero, pos = rgb[0]
    assert (zero > 240).all()
    assert pos[0] > pos[1] + 50 and pos[0] > pos[2] + 50  # red dominant
    assert neg[2] > neg[0] + 50 and neg[2] > neg[1] + 20  # blue dominant


def test_diverging_lut_centre_is_exact_scale_centre():
    centre = pcolors.unlabel_rgb(pcolors.sample_colorscale(plotly_colorscale("rdbu"), [0.5])[0])
    np.testing.assert_allclose(colorize(np.zeros((1, 1)), "rdbu")[0, 0], centre, atol=1)


def test_diverging_sides_and_brightness():
    v = np.linspace(-1, 1, 201, dtype=np.float32)[None]
    rgb = colorize(v, "rdbu").astype(int)[0]
    # Blue wins on the whole negative side, red on the whole positive side.
    assert (rgb[:100, 2] > rgb[:100, 0]).all()
    assert (rgb[101:, 0] > rgb[101:, 2]).all()
    # Brightness rises towards zero from both ends (stronger evidence = more saturated/darker).
    lum = _luminance(rgb)
    assert (np.diff(lum[:101]) >= -1).all() and (np.diff(lum[100:]) <= 1).all()
    assert lum.argmax() == 100


def test_gray_is_monotone_in_luminance():
    v = np.linspace(0, 1, 256, dtype=np.float32)[None]
    lum = _luminance(colorize(v, "gray")[0])
    assert (np.diff(lum) >= 0).all()
    assert lum[-1] - lum[0] > 240


@pytest.mark.parametrize("name", ["inferno", "viridis"])
def test_perceptual_sequential_maps_increase_in_luminance(name):
    lum = _luminance(colorize(np.array([[0.0, 0.5, 1.0]]), name)[0])
    assert lum[0] < lum[1] < lum[2]


def test_hot_endpoints_black_to_white():
    rgb = colorize(np.array([[0.0, 1.0]], dtype=np.float32), "hot").astype(int)[0]
    assert (rgb[0] < 15).all()
    assert (rgb[1] > 240).all()


def test_sequential_clips_out_of_range_values():
    rgb = colorize(np.array([[-5.0, 0.0, 1.0, 7.0, np.nan]]), "gray")[0]
    np.testing.assert_array_equal(rgb[0], rgb[1])
    np.testing.assert_array_equal(rgb[2], rgb[3])
    np.testing.assert_array_equal(rgb[4], rgb[1])


@pytest.mark.parametrize("name", COLORMAPS)
def test_lut_comes_from_plotly_scale(name):
    lut = colormap_lut(name)
    assert lut.shape == (R.LUT_SIZE, 3) and lut.dtype == np.uint8
    scale = plotly_colorscale(name)
    # Sequential LUT entry i samples position i/255.
    if name in R.SEQUENTIAL_COLORMAPS:
        for i in (0, 37, 128, 200, 255):
            expected = pcolors.unlabel_rgb(pcolors.sample_colorscale(scale, [i / 255])[0])
            np.testing.assert_allclose(lut[i], expected, atol=1)
    # Whatever the layout, colorize at the scale's endpoints must give plotly's endpoint colours.
    lo_v, hi_v = (-1.0, 1.0) if name in R.DIVERGING_COLORMAPS else (0.0, 1.0)
    rgb = colorize(np.array([[lo_v, hi_v]]), name)[0]
    np.testing.assert_allclose(rgb[0], pcolors.unlabel_rgb(pcolors.sample_colorscale(scale, [0.0])[0]), atol=1)
    np.testing.assert_allclose(rgb[1], pcolors.unlabel_rgb(pcolors.sample_colorscale(scale, [1.0])[0]), atol=1)


def test_lut_matches_plotly_builtin_scale_not_a_hand_table():
    # "viridis" must be plotly's own Viridis, not a re-typed copy.
    ref = pcolors.unlabel_rgb(pcolors.sample_colorscale("Viridis", [0.3])[0])
    got = colorize(np.array([[0.3]]), "viridis")[0, 0]
    np.testing.assert_allclose(got, ref, atol=2)


def test_lut_is_cached_and_read_only():
    assert colormap_lut("inferno") is colormap_lut("inferno")
    with pytest.raises(ValueError):
        colormap_lut("inferno")[0, 0] = 1


def test_plotly_colorscale_format():
    scale = plotly_colorscale("inferno")
    assert scale[0][0] == 0.0 and scale[-1][0] == 1.0
    assert all(isinstance(p, float) and c.startswith("rgb(") for p, c in scale)
    # rdbu runs blue (low) -> red (high) so a plotly figure with zmin=-s, zmax=s shows positive as red.
    lo = pcolors.unlabel_rgb(plotly_colorscale("rdbu")[0][1])
    hi = pcolors.unlabel_rgb(plotly_colorscale("rdbu")[-1][1])
    assert lo[2] > lo[0] and hi[0] > hi[2]


def test_suggested_colormap():
    assert suggested_colormap("signed") == "rdbu"
    for s in ("absolute", "positive", "negative"):
        assert suggested_colormap(s) == "inferno"


@pytest.mark.parametrize(
    "call",
    [
        lambda: colorize(np.zeros((2, 2)), "jet"),
        lambda: colormap_lut("jet"),
        lambda: plotly_colorscale("jet"),
        lambda: reduce_channels(G, "mean"),
        lambda: apply_sign(G[0], "both"),
        lambda: suggested_colormap("both"),
        lambda: render(G, colormap="jet"),
        lambda: render(G, reduction="mean"),
        lambda: render(G, sign="both"),
    ],
)
def test_unknown_names_raise_value_error_listing_options(call):
    with pytest.raises(ValueError, match="valid options"):
        call()


def test_error_message_names_the_options():
    with pytest.raises(ValueError) as err:
        colorize(np.zeros((2, 2)), "jet")
    for name in COLORMAPS:
        assert name in str(err.value)


# ---------------------------------------------------------------------------------------------------- images


def _image(h=6, w=8):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def test_overlay_alpha_endpoints():
    img = _image()
    heat = _image()[::-1].copy()
    np.testing.assert_array_equal(overlay(img, heat, alpha=0.0), img)
    np.testing.assert_array_equal(overlay(img, heat, alpha=1.0), heat)
    half = overlay(img, heat, alpha=0.5).astype(int)
    np.testing.assert_allclose(half, (img.astype(int) + heat.astype(int)) / 2, atol=1)


def test_overlay_accepts_pil_and_resizes_heatmap():
    img = Image.fromarray(_image(20, 30))
    heat = np.zeros((5, 5, 3), np.uint8)
    heat[..., 0] = 255
    out = overlay(img, heat, alpha=1.0)
    assert out.shape == (20, 30, 3) and out.dtype == np.uint8
    assert (out[..., 0] == 255).all() and (out[..., 1:] == 0).all()


@pytest.mark.parametrize("alpha", [-0.1, 1.5])
def test_overlay_bad_alpha(alpha):
    with pytest.raises(ValueError):
        overlay(_image(), _image(), alpha=alpha)


def test_coloured_gradient_zero_is_mid_grey():
    out = coloured_gradient(np.zeros((3, 4, 5), np.float32))
    assert out.shape == (4, 5, 3) and out.dtype == np.uint8
    assert (out == 128).all()


def test_coloured_gradient_maps_sign_to_brightness():
    g = np.zeros((3, 2, 2), np.float32)
    g[0, 0, 0] = 1.0
    g[1, 0, 0] = -1.0
    out = coloured_gradient(torch.tensor(g), clip_percentile=100)
    np.testing.assert_array_equal(out[0, 0], [255, 0, 128])
    assert (out[1, 1] == 128).all()


def test_coloured_gradient_needs_three_channels():
    with pytest.raises(ValueError):
        coloured_gradient(np.zeros((2, 4, 4), np.float32))


def test_resize_map_keeps_float_values():
    m = np.array([[0.0, 1.0], [1.0, 0.25]], dtype=np.float32)
    out = resize_map(m, size=(6, 4))
    assert out.shape == (4, 6) and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    # Bilinear, not nearest: intermediate, non-quantised values appear.
    assert len(np.unique(out)) > 4
    ramp = np.tile(np.linspace(0, 1, 10, dtype=np.float32), (3, 1))
    wide = resize_map(ramp, size=(20, 3))
    assert (np.diff(wide[1]) >= -1e-6).all()


def test_to_pil():
    img = to_pil(_image(3, 4))
    assert img.size == (4, 3) and img.mode == "RGB"
    gray = to_pil(np.array([[0.0, 1.0]], dtype=np.float32))
    assert gray.mode == "L" and list(np.asarray(gray)[0]) == [0, 255]


# ---------------------------------------------------------------------------------------------------- render


def test_render_defaults_absolute_inferno():
    out = render(torch.tensor(G))
    assert isinstance(out, RenderedMap)
    assert out.colormap == "inferno" and out.signed is False
    np.testing.assert_allclose(out.values, [[3.0, 4.0, 0.0]])
    assert out.rgb.shape == (1, 3, 3) and out.rgb.dtype == np.uint8
    assert out.normalized.min() >= 0 and out.normalized.max() <= 1
    # Brightest pixel is the largest raw value.
    lum = _luminance(out.rgb[0])
    assert lum.argmax() == 1 and lum.argmin() == 2


def test_render_signed_uses_diverging_and_keeps_sign():
    out = render(G, reduction="sum", sign="signed", clip_percentile=100)
    assert out.colormap == "rdbu" and out.signed
    assert out.lo == -out.hi
    np.testing.assert_allclose(out.values, [[-2.0, -2.0, 0.0]])
    assert (out.rgb[0, 2] > 240).all()  # zero is white
    assert out.rgb[0, 0, 2] > out.rgb[0, 0, 0]  # negative is blue


def test_render_negative_sign_shows_negative_evidence():
    out = render(G, reduction="sum", sign="negative")
    np.testing.assert_allclose(out.values, [[2.0, 2.0, 0.0]])


def test_render_colormap_change_does_not_change_values():
    a = render(G, colormap="hot")
    b = render(G, colormap="gray")
    np.testing.assert_array_equal(a.values, b.values)
    np.testing.assert_array_equal(a.normalized, b.normalized)
    assert not np.array_equal(a.rgb, b.rgb)


def test_render_colorscale_reproduces_rgb():
    # The scale handed to plotly, spread over [lo, hi], must give the PNG's colours.
    for kwargs in (
        {"sign": "absolute", "colormap": "viridis"},
        {"sign": "signed", "reduction": "sum", "colormap": "rdbu"},
        {"sign": "signed", "reduction": "sum", "colormap": "gray"},
        {"sign": "absolute", "colormap": "rdbu"},
    ):
        g = np.random.default_rng(1).normal(size=(3, 6, 6)).astype(np.float32)
        out = render(g, clip_percentile=100, **kwargs)
        pos = (out.values - out.lo) / (out.hi - out.lo)
        for idx in [(0, 0), (2, 3), (5, 5)]:
            ref = pcolors.unlabel_rgb(pcolors.sample_colorscale(out.colorscale, [float(pos[idx])])[0])
            np.testing.assert_allclose(out.rgb[idx], ref, atol=3, err_msg=str(kwargs))


def test_render_absolute_on_diverging_uses_white_to_red_half():
    out = render(G, sign="absolute", colormap="rdbu", clip_percentile=100)
    assert (out.rgb[0, 2] > 240).all()  # zero magnitude is white, not blue
    assert out.rgb[0, 1, 0] > out.rgb[0, 1, 2]  # largest is red


def test_render_all_zero_attribution_is_safe():
    for sign in SIGNS:
        out = render(np.zeros((3, 4, 4), np.float32), sign=sign)
        assert np.isfinite(out.normalized).all()
        assert np.isfinite([out.lo, out.hi]).all()
        assert (out.rgb == out.rgb[0, 0]).all()


def test_linked_range_spans_all_maps_and_fixed_range_is_used():
    import numpy as np

    from explainers.render import render, value_range

    small = np.linspace(0, 1, 100, dtype=np.float32).reshape(10, 10)
    large = small * 10
    lo, hi = value_range([small, large], clip_percentile=100)
    assert (lo, hi) == (0.0, 10.0)
    linked_small = render(small, reduction="sum", fixed_range=(lo, hi))
    linked_large = render(large, reduction="sum", fixed_range=(lo, hi))
    assert linked_small.normalized.max() <= 0.1 + 1e-6  # on the shared scale the small map stays dim
    assert linked_large.normalized.max() == 1.0
    alone = render(small, reduction="sum", clip_percentile=100)
    assert alone.normalized.max() == 1.0  # on its own scale it would fill the colormap
    s_lo, s_hi = value_range([small - 0.5, large], clip_percentile=100, signed=True)
    assert s_lo == -s_hi == -10.0
