"""Plain input gradients."""

from __future__ import annotations

import torch

from ..core import Attribution, Call
from ..registry import ONE_PASS, Reference, Sanity, TextUse, register

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


def input_gradient(call: Call, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(d score / d input for every target and row [T, N, C, H, W], logits of the inputs [N, K]), batched:
    the shared core of the gradient family."""
    gradient = torch.empty((len(call.targets), *inputs.shape), dtype=inputs.dtype, device=inputs.device)
    logits: list[torch.Tensor] = []

    def make_batch(start, stop):
        return inputs[start:stop], torch.arange(start, stop)

    def consume(start, stop, batch, grads, batch_logits):
        gradient[:, start:stop] = grads
        logits.append(batch_logits)

    call.gradients(len(inputs), make_batch, consume)
    return gradient, torch.cat(logits)


# What each input-gradient method makes of d score / d input: the methods below and explain_many's shared pass.
INPUT_MAPS = {
    "vanilla": lambda inputs, gradient: gradient,
    "input_x_gradient": lambda inputs, gradient: inputs * gradient,
}


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
        "flat. Adebayo et al. (2018, arXiv:1810.03292) found that it passes their model-randomisation test."
    ),
    formula="A = ∂S_c(x) / ∂x",
    sanity=Sanity.PASSES,
    cost=ONE_PASS,
    attribution_channels=None,
    smoothgrad_base=True,
    text=TextUse(reduction="l2", note="The gradient with respect to each token's embedding; a token's score is "
                 "the gradient's length (L2 norm over the embedding), a sensitivity without sign."),
)
def vanilla(call, inputs):
    """Simonyan et al. 2013, arXiv:1312.6034. Signed gradient; sign and channel reduction are render's job."""
    gradient, logits = input_gradient(call, inputs)
    return Attribution(INPUT_MAPS["vanilla"](inputs, gradient), logits=logits)


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
    formula="A = x ⊙ ∂S_c(x) / ∂x",
    sanity=Sanity.PASSES,
    cost=ONE_PASS,
    attribution_channels=None,
    smoothgrad_base=True,
    text=TextUse(reduction="sum", note="The embedding times its gradient, summed over the embedding: a signed "
                 "estimate of each token's contribution against an all-zero embedding."),
)
def input_x_gradient(call, inputs):
    """Shrikumar et al. 2016, arXiv:1605.01713."""
    gradient, logits = input_gradient(call, inputs)
    return Attribution(INPUT_MAPS["input_x_gradient"](inputs, gradient), logits=logits)
