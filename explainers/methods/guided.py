"""Gradients through modified ReLU backward rules."""

from __future__ import annotations

from ..errors import SaliencyError
from ..hooks import rectified_backward
from ..registry import Reference, register
from .gradient import input_gradient

SPRINGENBERG = Reference(
    "Springenberg, Dosovitskiy, Brox & Riedmiller", 2015, "Striving for Simplicity: The All Convolutional Net",
    "1412.6806",
)
ZEILER = Reference(
    "Zeiler & Fergus", 2014, "Visualizing and Understanding Convolutional Networks", "1311.2901",
)


def _rectified_gradient(ctx, inputs, rows, guided: bool):
    with rectified_backward(ctx.model, guided=guided) as count:
        if count == 0:
            raise SaliencyError(
                "this method changes the backward pass of nn.ReLU / nn.ReLU6 modules, and the model has none "
                "(activations called as functions, or GELU as in vision transformers, cannot be changed); "
                "pick a gradient or CAM method instead"
            )
        return input_gradient(ctx, inputs, rows)


@register(
    "guided_backprop",
    display_name="Guided backpropagation",
    family="Gradient",
    reference=SPRINGENBERG,
    summary=(
        "Back-propagates only positive gradients, and only through units that were active on the forward "
        "pass, giving sharp, edge-like maps."
    ),
    weaknesses=(
        "Fails Adebayo et al.'s (2018, arXiv:1810.03292) model-randomisation sanity check: the map barely "
        "changes when the weights are randomised, so it largely reconstructs the image rather than explaining "
        "the class. It is also nearly class-insensitive."
    ),
    sanity_check="fails model randomisation",
    cost=lambda p, hw, channels: (1, 1),
)
def guided_backprop(ctx, inputs, rows):
    """Springenberg et al. 2015, arXiv:1412.6806. Works on in-place ReLU and on ReLU6."""
    return _rectified_gradient(ctx, inputs, rows, guided=True)


@register(
    "deconvnet",
    display_name="Deconvnet",
    family="Gradient",
    reference=ZEILER,
    summary=(
        "Back-propagates through each ReLU as if it were a ReLU on the gradient itself, ignoring which units "
        "were active on the forward pass."
    ),
    weaknesses=(
        "Largely class-insensitive and reconstructs image edges; like guided backprop it is not a faithful "
        "attribution of the score."
    ),
    sanity_check="largely insensitive to the class",
    cost=lambda p, hw, channels: (1, 1),
)
def deconvnet(ctx, inputs, rows):
    """Zeiler & Fergus 2014, arXiv:1311.2901."""
    return _rectified_gradient(ctx, inputs, rows, guided=False)
