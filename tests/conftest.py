"""Shared fixtures: the real default model (loaded once) and seeded torchvision models (no downloads)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "assets" / "samples"

# Tests never reach the network: zoo models load from a cache the tests fill themselves.
os.environ.setdefault("SALIENCY_OFFLINE", "1")
# One thread: on this shared 2-core machine two threads make forward passes erratic and often 5x slower.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def default_bundle():
    from explainers.models import load_model

    return load_model("efficientnet_lite0")


@pytest.fixture
def no_downloads(monkeypatch):
    """Any real download attempt of the zoo fails the test loudly (use with pytest.mark.usefixtures)."""
    from explainers.models import zoo

    def refuse(*args, **kwargs):
        raise AssertionError("a test tried to reach the network")

    monkeypatch.setattr(zoo, "urlopen", refuse)


@pytest.fixture(scope="session")
def seeded_resnet18():
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    return model


def sample_path(name: str) -> Path:
    return SAMPLES / name
