"""How long a pass takes on this machine: what cost estimates in seconds are made of.

Measured once per model and input size, on the model's own device, warm (the first pass pays for allocations).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import nn

from .core import as_logits, prepare_inputs
from .hooks import model_guard
from .registry import Passes

FORWARD_BATCH = 8  # forward-only methods run in batches; per image they cost less than a lone forward


@dataclass(frozen=True)
class PassTimes:
    """Seconds per image: ``forward`` in a batch of ``FORWARD_BATCH`` (no gradient), ``forward_backward`` one image
    with its input gradient, ``backward`` one more backward through the same forward (another target's)."""

    forward: float
    forward_backward: float
    backward: float

    def seconds(self, passes: Passes, targets: int = 1) -> float:
        """Seconds for ``passes`` of one image for ``targets`` targets sharing them: each backward comes with its
        forward, which the other targets share (one more backward each); the other forwards are batched and
        serve every target."""
        extra_forward = max(passes.forward - passes.backward, 0)
        per_backward = self.forward_backward + (max(targets, 1) - 1) * self.backward
        return passes.backward * per_backward + extra_forward * self.forward


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_pass_times(model: nn.Module, inputs: torch.Tensor, repeats: int = 2) -> PassTimes:
    """The best of ``repeats`` warm runs of each kind of pass (the first run only warms up)."""
    inputs = prepare_inputs(model, inputs[:1])
    batch = inputs.expand(FORWARD_BATCH, *inputs.shape[1:]).contiguous()
    forward = forward_backward = backward = float("inf")
    with model_guard(model):
        for attempt in range(repeats + 1):
            started = time.perf_counter()
            with torch.inference_mode():
                as_logits(model(batch))
            _synchronize(batch.device)
            if attempt:
                forward = min(forward, (time.perf_counter() - started) / FORWARD_BATCH)
            started = time.perf_counter()
            x = inputs.detach().requires_grad_(True)
            with torch.enable_grad():
                logits = as_logits(model(x))
                torch.autograd.grad(logits[:, 0].sum(), x, retain_graph=True)
                _synchronize(x.device)
                middle = time.perf_counter()
                torch.autograd.grad(logits[:, -1].sum(), x)  # another target's, through the same forward
            _synchronize(x.device)
            if attempt:
                forward_backward = min(forward_backward, middle - started)
                backward = min(backward, time.perf_counter() - middle)
    return PassTimes(forward, forward_backward, backward)
