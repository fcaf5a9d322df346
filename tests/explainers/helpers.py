"""Small models and checks shared by the explainer tests."""

from __future__ import annotations

import torch
from torch import nn


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
