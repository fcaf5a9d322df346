"""Gradients through modified ReLU backward rules."""

from __future__ import annotations

from ..core import Attribution
from ..errors import SaliencyError
from ..hooks import BackwardRule, rectified_backward
from ..registry import NEEDS_MODEL, NEEDS_RELU_MODULES, ONE_PASS, Reference, Sanity, register
from .gradient import input_gradient

SPRINGENBERG = Reference(
    "Springenberg, Dosovitskiy, Brox & Riedmiller", 2015, "Striving for Simplicity: The All Convolutional Net",
    "1412.6806",
)
ZEILER = Reference(
    "Zeiler & Fergus", 2014, "Visualizing and Understanding Convolutional Networks", "1311.2901",
)


# Each method's backward rule through the rectified activations (hooks.BackwardRule), read by explain_many too.
RULE_OF = {"guided_backprop": "guided", "deconvnet": "deconvnet"}
NO_RELU = (
    "this method changes the backward pass of nn.ReLU / nn.ReLU6 modules, and the model has none (activations "
    "called as functions, or GELU as in vision transformers, cannot be changed); pick a gradient or CAM method "
    "instead"
)


def _rectified_gradient(call, inputs, method: str) -> Attribution:
    with rectified_backward(call.model, rule=BackwardRule(RULE_OF[method])) as count:
        if count == 0:
            raise SaliencyError(NO_RELU)
        gradient, logits = input_gradient(call, inputs)
    return Attribution(gradient, logits=logits)


RECTIFIED = frozenset({NEEDS_MODEL, NEEDS_RELU_MODULES})


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
        "Adebayo et al. (2018, arXiv:1810.03292) found that it fails their model-randomisation sanity check: "
        "the map barely changes when the weights are randomised, so it largely reconstructs the image rather "
        "than explaining the class. It is also nearly class-insensitive."
    ),
    formula="backward through ReLU: g_in = relu(g_out) · [x > 0]",
    sanity=Sanity.FAILS,
    cost=ONE_PASS,
    requires=RECTIFIED,
    attribution_channels=None,
    smoothgrad_base=True,
)
def guided_backprop(call, inputs):
    """Springenberg et al. 2015, arXiv:1412.6806. Works on in-place ReLU and on ReLU6."""
    return _rectified_gradient(call, inputs, "guided_backprop")


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
    formula="backward through ReLU: g_in = relu(g_out)",
    sanity=Sanity.CLASS_INSENSITIVE,
    sanity_note="largely insensitive to the class; not in Adebayo et al.'s randomisation study",
    cost=ONE_PASS,
    requires=RECTIFIED,
    attribution_channels=None,
)
def deconvnet(call, inputs):
    """Zeiler & Fergus 2014, arXiv:1311.2901."""
    return _rectified_gradient(call, inputs, "deconvnet")
