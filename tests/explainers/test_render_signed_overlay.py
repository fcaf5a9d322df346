"""The signed view's overlay: its opacity follows |value|, so zero leaves the photo as it is (issue 18, item 10)."""

from __future__ import annotations

import numpy as np

from explainers import render as rnd
from explainers.render import View, render


def _signed_case(alpha: float = 0.6):
    """A photo of varied pixels and a [1, 4, 4] map with zeros, the positive maximum and the negative minimum."""
    photo = np.random.default_rng(1).integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
    attribution = np.zeros((1, 4, 4), np.float32)
    attribution[0, 0, 0], attribution[0, 3, 3], attribution[0, 1, 2] = 2.0, -2.0, 1.0
    view = View(sign="signed", alpha=alpha, clip=100.0)
    return photo, attribution, view, render(attribution, view, backdrop=photo)


def test_a_zero_value_leaves_the_photo_pixel_unchanged():
    photo, attribution, _, rendered = _signed_case()
    zero = attribution[0] == 0
    assert zero.sum() == 13  # the premise: most of the map is zero
    np.testing.assert_array_equal(rendered.overlay[zero], photo[zero])


def test_the_largest_magnitudes_get_the_full_opacity_either_sign():
    photo, _, view, rendered = _signed_case()
    for y, x in ((0, 0), (3, 3)):  # +max and -max
        want = np.rint((1 - view.alpha) * photo[y, x].astype(np.float32) + view.alpha * rendered.rgb[y, x])
        np.testing.assert_array_equal(rendered.overlay[y, x], np.clip(want, 0, 255).astype(np.uint8))


def test_a_half_magnitude_gets_half_the_opacity():
    photo, _, view, rendered = _signed_case()
    a = view.alpha * 0.5
    want = np.rint((1 - a) * photo[1, 2].astype(np.float32) + a * rendered.rgb[1, 2])
    np.testing.assert_array_equal(rendered.overlay[1, 2], np.clip(want, 0, 255).astype(np.uint8))


def test_unsigned_views_keep_one_opacity_everywhere():
    photo, attribution, _, _ = _signed_case()
    view = View(sign="absolute", alpha=0.6, clip=100.0)
    rendered = render(attribution, view, backdrop=photo)
    want = np.rint(0.4 * photo.astype(np.float32) + 0.6 * rendered.rgb.astype(np.float32))
    np.testing.assert_array_equal(rendered.overlay, np.clip(want, 0, 255).astype(np.uint8))


def test_overlay_weight_is_resized_to_the_picture():
    image = np.full((6, 8, 3), 200, np.uint8)
    heat = np.zeros((6, 8, 3), np.uint8)
    weight = np.zeros((3, 4), np.float32)
    np.testing.assert_array_equal(rnd.overlay(image, heat, 1.0, weight=weight), image)
    assert (rnd.overlay(image, heat, 1.0, weight=np.ones((3, 4), np.float32)) == 0).all()
