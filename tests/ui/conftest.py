"""Fixtures of the dashboard's tests."""

from __future__ import annotations

import pytest

from explainers import image_hash, load_image
from tests.conftest import sample_path
from ui.sidebar import Selection


@pytest.fixture
def cat_selection(default_bundle) -> Selection:
    """A Selection built the way ui/sidebar.py builds one, for the cat sample and the default model."""
    image = load_image(sample_path("cat.png"))
    return Selection(image, "cat.png", image_hash(image), "efficientnet_lite0", "resize", default_bundle,
                     default_bundle.preprocess(image, "resize"))
