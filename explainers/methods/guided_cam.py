"""Guided Grad-CAM: guided backpropagation sharpened by the class-discriminative Grad-CAM map."""

from __future__ import annotations

from ..core import Attribution
from ..registry import NEEDS_LAYER, NEEDS_MODEL, NEEDS_RELU_MODULES, Cost, Param, Sanity, register
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
        "Adebayo et al. (2018, arXiv:1810.03292) found that it fails their model-randomisation sanity check, "
        "as guided backprop does: its fine detail comes from the image, not from what the model learned."
    ),
    formula="A = GuidedBackprop(x) ⊙ up(Grad-CAM(x))",
    sanity=Sanity.FAILS,
    params={"relu": Param("bool", True, "Apply Grad-CAM's ReLU before multiplying.")},
    cost=Cost(fixed=(2, 2)),
    requires=frozenset({NEEDS_MODEL, NEEDS_LAYER, NEEDS_RELU_MODULES}),
    attribution_channels=None,
)
def guided_gradcam(call, inputs, relu=True):
    """Selvaraju et al. 2017, arXiv:1610.02391, section 3.1."""
    coarse = gradcam(call, inputs, relu=relu)  # [T, N, 1, H, W]
    fine = guided_backprop(call, inputs)  # [T, N, C, H, W]
    return Attribution(fine.attribution * coarse.attribution, layer_attribution=coarse.layer_attribution,
                       logits=coarse.logits)
