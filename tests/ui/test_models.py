"""The shared models: a zoo model whose weights cannot be had says what to do and the server keeps serving; one
whose weights are in the cache works end to end, offline."""

from __future__ import annotations

import torch
import torchvision

from explainers.models import zoo
from tests.ui.helpers import heatmap, start
from ui import models, state


def test_offline_zoo_model_shows_the_missing_file_message(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty cache: resnet18's weights are not there
    monkeypatch.setenv("SALIENCY_OFFLINE", "1")
    at = start()
    at.selectbox(key=state.MODEL).set_value("resnet18").run()
    assert not at.exception, "a traceback reached the page"
    errors = " ".join(e.value for e in at.error)
    assert "ModelUnavailableError" in errors
    assert "resnet18" in errors and "checkpoints" in errors and ".pth" in errors
    assert "efficientnet_lite0" in errors  # the fix: the offline default works
    # and the server keeps serving: back to the default model, the page works again
    at.selectbox(key=state.MODEL).set_value("efficientnet_lite0").run()
    assert not at.exception and not at.error
    assert heatmap(at).title == "Vanilla gradient · Egyptian cat"


def test_zoo_model_from_a_pre_seeded_cache_works_end_to_end(monkeypatch, tmp_path):
    """No download: the hub cache is filled with a seeded state dict under the expected file name."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("SALIENCY_OFFLINE", "1")
    torch.manual_seed(0)
    path = zoo.weights_file("resnet18")
    path.parent.mkdir(parents=True)
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    models.cached_bundle.clear()
    models.describe_model.clear()
    try:
        at = start()
        assert "cached" in models.describe_model("resnet18")
        at.selectbox(key=state.MODEL).set_value("resnet18").run()
        assert not at.exception and not at.error, [e.value for e in at.error]
        at.selectbox(key=state.METHOD).set_value("gradcam").run()
        assert not at.exception and not at.error
        assert at.selectbox(key=state.LAYER).value == "layer4"
        title = heatmap(at).title
        assert title.startswith("Grad-CAM · ") and title.endswith(" · layer4")
    finally:
        models.cached_bundle.clear()
        models.describe_model.clear()
