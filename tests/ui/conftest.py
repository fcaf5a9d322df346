"""Fixtures of the dashboard's tests."""

from __future__ import annotations

import pytest
from streamlit.runtime.media_file_manager import MediaFileManager
from streamlit.testing.v1 import app_test

from explainers import image_hash, load_image
from tests.conftest import sample_path
from ui import runs
from ui.sidebar import Selection


@pytest.fixture
def cat_selection(default_bundle) -> Selection:
    """A Selection built the way ui/sidebar.py builds one, for the cat sample and the default model."""
    image = load_image(sample_path("cat.png"))
    return Selection(image, "cat.png", image_hash(image), "efficientnet_lite0", "resize", default_bundle,
                     default_bundle.preprocess(image, "resize"))


@pytest.fixture
def served(monkeypatch):
    """``served(button) -> bytes``: the file a download button of the app's last run serves, read back from the
    AppTest's media store (a deferred button's callable run as the server runs it on a click)."""
    managers: list[MediaFileManager] = []

    class Recording(MediaFileManager):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            managers.append(self)

    monkeypatch.setattr(app_test, "MediaFileManager", Recording)

    def read(button) -> bytes:
        assert managers, "no run of the app since the fixture started"
        manager = managers[-1]
        deferred = button.proto.deferred_file_id
        url = manager.execute_deferred(deferred) if deferred else button.proto.url
        assert url, f"the button {button.label!r} serves nothing"
        return manager._storage.get_file(url.rsplit("/", 1)[-1]).content

    return read


@pytest.fixture
def twice_as_slow(monkeypatch):
    """The pass times this machine measures, doubled, for tests whose premise is an estimate over the budget
    (Score-CAM on 1280 channels: about 29–31 s here, so its side of 30 s would follow the machine's load). The
    measurement is real; only its scale is fixed. The cache of measured times is emptied before and after."""
    measure = runs.measure_pass_times

    def doubled(model, inputs):
        times = measure(model, inputs)
        return type(times)(2 * times.forward, 2 * times.forward_backward, 2 * times.backward)

    runs._measured.clear()
    monkeypatch.setattr(runs, "measure_pass_times", doubled)
    yield
    runs._measured.clear()
