"""Small models and checks shared by the explainer tests."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch import nn

import explainers
from explainers import Cancelled

from ..conftest import sample_path

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def sample_pixels(name: str = "cat.png", size: int = 224) -> torch.Tensor:
    """A sample image resized whole (bicubic) to size x size, as a [1, 3, H, W] tensor in [0, 1]."""
    image = Image.open(sample_path(name)).convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1).unsqueeze(0).contiguous()


def imagenet_input(name: str = "cat.png", size: int = 224) -> torch.Tensor:
    """The sample normalised with ImageNet's mean and std, contiguous (torchvision models' input)."""
    return ((sample_pixels(name, size) - IMAGENET_MEAN) / IMAGENET_STD).contiguous()


def assert_cancel_stops_cleanly(model: nn.Module, inputs: torch.Tensor, method: str, **params) -> None:
    """A progress callback returning False on its third call raises Cancelled there and leaves the model as it
    was: no hooks, same parameters, same mode."""
    before = snapshot(model)
    calls = []

    def stop_at_third(done, total):
        calls.append(done)
        return len(calls) < 3

    try:
        explainers.explain(model, inputs, method, target=0, progress=stop_at_third, **params)
    except Cancelled:
        pass
    else:
        raise AssertionError(f"{method} ran to the end despite the cancel")
    assert len(calls) == 3
    assert_untouched(model, before)


def hook_counts(model: nn.Module) -> int:
    """Every forward/backward hook on every submodule; 0 means nothing was left behind."""
    total = 0
    for module in model.modules():
        for name in (
            "_forward_hooks",
            "_forward_pre_hooks",
            "_backward_hooks",
            "_backward_pre_hooks",
            "_forward_hooks_with_kwargs",
            "_forward_pre_hooks_with_kwargs",
        ):
            total += len(getattr(module, name, {}) or {})
    return total


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_untouched(model: nn.Module, before: dict[str, torch.Tensor], training: bool = False) -> None:
    assert hook_counts(model) == 0, "hooks left on the model"
    after = model.state_dict()
    assert before.keys() == after.keys()
    for key, value in before.items():
        assert torch.equal(value, after[key]), f"parameter/buffer {key} changed"
    assert all(m.training == training for m in model.modules()), "train/eval mode changed"


def relative_max_difference(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    ours, theirs = ours.detach().double().cpu(), theirs.detach().double().cpu()
    return float((ours - theirs).abs().max() / theirs.abs().max().clamp_min(1e-30))


class SmallConvNet(nn.Module):
    """A small seeded CNN with in-place ReLUs, BatchNorm and ReLU6: enough structure for property tests."""

    def __init__(self, classes: int = 7):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(inplace=True),
            nn.Conv2d(8, 16, 3, stride=2, padding=1),
            nn.ReLU6(inplace=True),
            nn.Conv2d(16, 16, 3, padding=1),
            nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, classes)

    def forward(self, x):
        return self.fc(self.pool(self.features(x)).flatten(1))


def small_convnet(seed: int = 0) -> SmallConvNet:
    torch.manual_seed(seed)
    model = SmallConvNet()
    with torch.no_grad():  # non-trivial BN statistics, so eval mode differs from train mode
        model.features[1].running_mean.uniform_(-0.2, 0.2)
        model.features[1].running_var.uniform_(0.5, 2.0)
        model.fc.weight.mul_(20)  # scores that move by whole units, so float32 noise cannot fake completeness
    return model.eval()
