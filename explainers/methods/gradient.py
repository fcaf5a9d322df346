"""Plain input gradients."""

from __future__ import annotations

import torch

from ..registry import Reference, register

SIMONYAN = Reference(
    "Simonyan, Vedaldi & Zisserman",
    2013,
    "Deep Inside Convolutional Networks: Visualising Image Classification Models and Saliency Maps",
    "1312.6034",
)
SHRIKUMAR = Reference(
    "Shrikumar, Greenside, Shcherbina & Kundaje",
    2016,
    "Not Just a Black Box: Learning Important Features Through Propagating Activation Differences",
    "1605.01713",
)


def input_gradient(ctx, inputs: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """d score / d input for each row, batched; the shared core of the gradient family."""
    gradient = torch.empty_like(inputs)

    def make_batch(start, stop):
        return inputs[start:stop], rows[start:stop]

    def consume(start, stop, batch, grad):
        gradient[start:stop] = grad

    ctx.gradients(len(inputs), make_batch, consume, clean=inputs is ctx.inputs)
    return gradient


@register(
    "vanilla",
    display_name="Vanilla gradient",
    family="Gradient",
    reference=SIMONYAN,
    summary=(
        "The gradient of the class score with respect to each input pixel: how much a tiny change of that "
        "pixel would move the score. One forward and one backward pass."
    ),
    weaknesses=(
        "Visually noisy; measures local sensitivity, not contribution, so it saturates where the score is "
        "flat. Passes Adebayo et al.'s model-randomisation test."
    ),
    sanity_check="passes",
    cost=lambda p, hw, channels: (1, 1),
)
def vanilla(ctx, inputs, rows):
    """Simonyan et al. 2013, arXiv:1312.6034. Signed gradient; sign and channel reduction are render's job."""
    return input_gradient(ctx, inputs, rows)


@register(
    "input_x_gradient",
    display_name="Input × Gradient",
    family="Gradient",
    reference=SHRIKUMAR,
    summary=(
        "The input multiplied element-wise by its gradient: a first-order estimate of each pixel's "
        "contribution relative to an all-zero input."
    ),
    weaknesses=(
        "Inherits the gradient's noise and saturation; the implicit zero baseline depends on the model's "
        "normalisation, so 'zero' is not black for most models."
    ),
    sanity_check="passes",
    cost=lambda p, hw, channels: (1, 1),
)
def input_x_gradient(ctx, inputs, rows):
    """Shrikumar et al. 2016, arXiv:1605.01713."""
    return inputs * input_gradient(ctx, inputs, rows)
