"""A ModelBundle's geometry (explainers.models.base): the model's view of an image (resize or centre crop), and a
heatmap mapped back onto the original image."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from explainers.errors import ParameterError
from explainers.models import CENTER_CROP, RESIZE, base

from ...conftest import sample_path


def test_preprocess_shapes_and_crop(default_bundle):
    image = Image.open(sample_path("cat.png"))  # 451 x 300, not square
    resized = default_bundle.preprocess(image, RESIZE)
    cropped = default_bundle.preprocess(image, CENTER_CROP)
    assert resized.shape == cropped.shape == (1, 3, 224, 224)
    assert not torch.allclose(resized, cropped)
    assert default_bundle.model_view(image, CENTER_CROP).size == (224, 224)
    with pytest.raises(ParameterError, match="center_crop"):
        default_bundle.preprocess(image, "squash")


def test_to_original_maps_back_to_image_size(default_bundle):
    width, height = 451, 300
    heatmap = np.random.default_rng(0).random((224, 224)).astype(np.float32)

    whole = default_bundle.to_original(heatmap, (width, height), RESIZE)
    assert whole.shape == (height, width)
    assert np.isfinite(whole).all()
    whole[0, 0] = 1.0  # callers may edit the result in place

    crop = default_bundle.to_original(heatmap, (width, height), CENTER_CROP)
    assert crop.shape == (height, width)
    left, top, right, bottom = default_bundle.crop_geometry((width, height), CENTER_CROP)
    assert 0 < left < right < width and 0 <= top < bottom <= height
    assert abs((right - left) - (bottom - top)) <= 1  # a square crop
    assert np.isnan(crop[:, : left - 1]).all() and np.isnan(crop[:, right + 1 :]).all()
    assert np.isfinite(crop[top:bottom, left:right]).all()


def test_crop_geometry_matches_model_view(default_bundle):
    """The box crop_geometry reports, cut from the original and resized, is what model_view shows."""
    image = Image.open(sample_path("coffee.png")).convert("RGB")
    box = default_bundle.crop_geometry(image.size, CENTER_CROP)
    ours = np.asarray(image.crop(box).resize((224, 224), Image.Resampling.BICUBIC), dtype=np.float32)
    view = np.asarray(default_bundle.model_view(image, CENTER_CROP), dtype=np.float32)
    assert np.abs(ours - view).mean() < 6  # same region up to a pixel of rounding


def test_centre_crop_of_a_long_thin_image_resamples_only_its_box(default_bundle, monkeypatch):
    """10×10000 would be resized to 256000×256 (200 MB) to keep 224×224 of it; the box path gives the same pixels."""
    image = Image.fromarray((np.random.default_rng(0).random((10, 10000, 3)) * 255).astype("uint8"))
    resized, _, _ = default_bundle.crop_plan(image.size)
    assert resized[0] * resized[1] > base.LARGE_RESIZE  # this image takes the box path
    fast = np.asarray(default_bundle.model_view(image, "center_crop"))
    monkeypatch.setattr(base, "LARGE_RESIZE", 10**12)
    full = np.asarray(default_bundle.model_view(image, "center_crop"))
    assert fast.shape == (224, 224, 3)
    np.testing.assert_array_equal(fast, full)
