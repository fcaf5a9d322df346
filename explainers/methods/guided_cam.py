"""Guided Grad-CAM: guided backpropagation sharpened by the class-discriminative Grad-CAM map."""

from __future__ import annotations

from ..registry import Param, register
from .cam import SELVARAJU, gradcam
from .guided import guided_backprop


@register(
    "guided_gradcam",
    display_name="Guided Grad-CAM",
    family="CAM",
    reference=SELVARAJU,
    summary=(
        "The guided-backprop map multiplied by the upsampled Grad-CAM map: pixel-sharp detail, restricted to "
        "where Grad-CAM says the class evidence is."
    ),
    weaknesses=(
        "Inherits guided backprop's failure of Adebayo et al.'s (2018, arXiv:1810.03292) model-randomisation "
        "sanity check: its fine detail comes from the image, not from what the model learned."
    ),
    sanity_check="fails model randomisation",
    params={"relu": Param("bool", True, "Apply Grad-CAM's ReLU before multiplying.")},
    cost=lambda p, hw, channels: (2, 2),
    needs_layer=True,
    attribution_channels=3,
)
def guided_gradcam(ctx, inputs, rows, relu=True):
    """Selvaraju et al. 2017, arXiv:1610.02391, section 3.1."""
    coarse = gradcam(ctx, inputs, rows, relu=relu)  # [N, 1, H, W]
    fine = guided_backprop(ctx, inputs, rows)  # [N, 3, H, W]
    return fine * coarse
