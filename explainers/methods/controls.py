"""Control "methods": maps that explain nothing, the yardsticks of sanity checks and faithfulness curves.

Adebayo et al. 2018 (arXiv:1810.03292) showed that some saliency methods look like an edge detector and change
little when the model is randomised: the ``sobel`` control is that edge detector, with no model at all, and the
``random`` control is what a map worth nothing scores on a deletion curve or a pointing game.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..core import Attribution
from ..registry import Cost, Reference, Sanity, TextUse, register

ADEBAYO = Reference(
    "Adebayo, Gilmer, Muelly, Goodfellow, Hardt & Kim", 2018, "Sanity Checks for Saliency Maps", "1810.03292"
)
PREDICTION = Cost(fixed=(1, 0))  # no pass of its own; explain() predicts once for the logits it reports


def _repeat(call, attribution: torch.Tensor) -> Attribution:
    """The same map for every target (a control cannot depend on the class)."""
    return Attribution(attribution.unsqueeze(0).expand(len(call.targets), *attribution.shape).contiguous())


@register(
    "random",
    display_name="Random (control)",
    family="Control",
    reference=ADEBAYO,
    summary="Seeded uniform noise in [0, 1), the same for every image and class: what a map that explains "
    "nothing scores. A method that does no better than this on a deletion curve or a pointing game explains "
    "nothing either.",
    weaknesses="Not an explanation: a yardstick for the others.",
    formula="A(x) ~ U[0, 1)^(H×W), drawn from the seed",
    params={},
    cost=PREDICTION,
    attribution_channels=1,
    sanity=Sanity.CONTROL,
    class_sensitive=False,
    stochastic=True,
    requires=frozenset(),
    text=TextUse(reduction="map", note="One seeded uniform value per token (special tokens included, as they are "
                 "for every method): the yardstick of the faithfulness curves and the token pointing game."),
)
def random_map(call, inputs):
    height, width = inputs.shape[-2:]
    noise = torch.rand((1, 1, height, width), generator=call.generator(), dtype=torch.float32)
    return _repeat(call, noise.to(device=inputs.device, dtype=inputs.dtype).expand(len(inputs), -1, -1, -1))


@register(
    "sobel",
    display_name="Sobel edges (control)",
    family="Control",
    reference=ADEBAYO,
    summary="The input's edge magnitude (the 3×3 Sobel operator, Sobel & Feldman 1968), with no model at all. "
    "Adebayo et al. 2018, whose edge-detector control this is, showed that some saliency "
    "methods resemble an edge detector; a method whose map looks like this one, and stays so when the model is "
    "randomised, shows the image rather than what the model learned.",
    weaknesses="Not an explanation: it ignores the model and the class.",
    formula="A = Σ_c sqrt((K_x * x_c)² + (K_y * x_c)²), K the 3×3 Sobel kernels",
    params={},
    cost=PREDICTION,
    attribution_channels=1,
    sanity=Sanity.CONTROL,
    class_sensitive=False,
    requires=frozenset(),
)
def sobel_map(call, inputs):
    # the separable form: a central difference first, then the [1, 2, 1] smoothing across it. Differences come
    # first so a flat region gives exactly 0, not the rounding noise of -a - 2a - a + a + 2a + a
    padded = F.pad(inputs.detach(), (1, 1, 1, 1), mode="replicate")
    dx = padded[..., 2:] - padded[..., :-2]  # [N, C, H + 2, W]
    dy = padded[..., 2:, :] - padded[..., :-2, :]  # [N, C, H, W + 2]
    gx = dx[..., :-2, :] + 2 * dx[..., 1:-1, :] + dx[..., 2:, :]
    gy = dy[..., :-2] + 2 * dy[..., 1:-1] + dy[..., 2:]
    magnitude = (gx.square() + gy.square()).sqrt().sum(dim=1, keepdim=True)
    return _repeat(call, magnitude)
