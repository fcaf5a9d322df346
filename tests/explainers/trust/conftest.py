"""Fixtures shared by the trust tests."""

from __future__ import annotations

import pytest

import explainers
from explainers.render import to_map

from ...conftest import sample_path


@pytest.fixture(scope="package")
def cat(default_bundle):
    """The cat sample, its Grad-CAM and random-control maps (top-1 class) on the default model."""
    inputs = default_bundle.preprocess(explainers.open_image(sample_path("cat.png")))
    maps = {m: to_map(explainers.explain(default_bundle, inputs, m, "top1", seed=0).attribution[0])
            for m in ("gradcam", "random")}
    return inputs, maps
