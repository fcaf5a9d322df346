"""FullGrad: the input-gradient map plus one bias-gradient map per biased layer (Srinivas & Fleuret 2019,
arXiv:1905.00780)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..batching import forward
from ..core import Attribution, Call, as_logits
from ..errors import SaliencyError
from ..registry import NEEDS_MODEL, ONE_PASS, Reference, Sanity, register

SRINIVAS = Reference(
    "Srinivas & Fleuret", 2019, "Full-Gradient Representation for Neural Network Visualization", "1905.00780",
)
# pytorch-grad-cam's min-max normalisation of each map divides by this plus the map's range
NORMALISE_EPSILON = 1e-7


def biased_layers(model: nn.Module) -> list[nn.Module]:
    """The layers whose bias has a spatial map of gradients: Conv2d with a bias, and BatchNorm2d with a shift and
    running statistics (its bias as evaluated, see :func:`effective_bias`), as the authors' code and
    pytorch-grad-cam collect them. A linear layer's bias gradient has no place in the image, so it is left out."""
    return [
        module for module in model.modules()
        if (isinstance(module, nn.Conv2d) and module.bias is not None)
        or (isinstance(module, nn.BatchNorm2d) and module.bias is not None and module.running_mean is not None)
    ]


def effective_bias(module: nn.Module) -> torch.Tensor:
    """What the layer adds to every place of channel k in eval mode [C]: the conv's bias, or BatchNorm's
    β − μ·γ / √(σ² + ε)."""
    with torch.no_grad():
        if isinstance(module, nn.BatchNorm2d):
            return (module.bias - module.running_mean * module.weight
                    / torch.sqrt(module.running_var + module.eps)).detach()
        return module.bias.detach()


def model_check(model: nn.Module) -> str | None:
    """Why FullGrad cannot run on ``model`` (no biased convolution or BatchNorm, or no hooks), or None."""
    if getattr(model, "supports_hooks", True) is False:
        return ("FullGrad needs module hooks to read each layer's bias gradient, and this model refuses them (a "
                "TorchScript module); gradient and perturbation methods work")
    if not biased_layers(model):
        return ("FullGrad sums bias-gradient maps of Conv2d layers with a bias and of BatchNorm2d layers, and this "
                "model has none (transformers, bias-free convolutions without BatchNorm); pick Input × Gradient, "
                "its bias-free part, or another gradient method")
    return None


def normalised(maps: torch.Tensor) -> torch.Tensor:
    """Each [h, w] map of ``maps`` [B, C, h, w] shifted to 0 and divided by (1e-7 + its range), as
    pytorch-grad-cam post-processes FullGrad's maps."""
    shifted = maps - maps.amin(dim=(2, 3), keepdim=True)
    return shifted / (NORMALISE_EPSILON + shifted.amax(dim=(2, 3), keepdim=True))


def layer_map(gradient: torch.Tensor, bias: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """One layer's bias-gradient map at input size [B, 1, H, W]: |b ⊙ ∂S/∂z| normalised per channel, summed over
    channels and upsampled bilinearly (the sum first: the upsampling is linear, so the order does not matter)."""
    bias_gradient = (gradient * bias.to(gradient.dtype).view(1, -1, 1, 1)).abs()
    summed = normalised(bias_gradient).sum(dim=1, keepdim=True)
    if tuple(summed.shape[-2:]) == tuple(size):
        return summed
    return F.interpolate(summed, size=size, mode="bilinear", align_corners=False)


@register(
    "fullgrad",
    display_name="FullGrad",
    family="Gradient",
    reference=SRINIVAS,
    summary=(
        "Input × gradient plus, for every convolution and BatchNorm layer, its bias times the gradient at its "
        "output: the biases' share of the score, which plain gradients leave out, drawn as maps, each made "
        "positive, normalised and upsampled, then summed."
    ),
    weaknesses=(
        "The per-map absolute value and normalisation discard sign and scale: the map says where, not for or "
        "against, and its sum is no longer the score the full-gradient decomposition adds up to. Deep layers' "
        "maps are coarse and their many channels dominate the sum. Needs convolutions with a bias or BatchNorm."
    ),
    formula="L = ψ(|∇_x S_c ⊙ x|) + Σ_l Σ_k ψ(|b^l_k ∇_{z^l_k} S_c|), ψ = min-max normalise, upsample",
    cost=ONE_PASS,
    attribution_channels=1,
    sanity=Sanity.UNTESTED,
    sanity_note=(
        "measured here on efficientnet_lite0 (cat.png, all 19 cascade steps, `python -m explainers sanity`): "
        "FAILS model randomisation on Spearman (0.58) and SSIM (0.55), passes on HOG (0.10); class-sensitive "
        "on 1 of 4 random logits only: its bias terms carry image structure whatever the weights"
    ),
    requires=frozenset({NEEDS_MODEL}),
    model_check=model_check,
)
def fullgrad(call: Call, inputs: torch.Tensor) -> Attribution:
    """Srinivas & Fleuret 2019, arXiv:1905.00780, post-processed as pytorch-grad-cam 1.5.7 does (its FullGrad).

    One forward pass per batch, one backward per target: a forward hook on each biased layer puts a tensor hook
    on its output, which turns that layer's gradient into its map as the backward passes (the map is built
    batch by batch, never every layer's gradient at once). Tensor hooks see the gradient of the layer's own
    output even where an in-place ReLU later overwrites it.
    """
    layers = biased_layers(call.model)
    reason = model_check(call.model)
    if reason is not None:
        raise SaliencyError(reason)
    biases = {module: effective_bias(module) for module in layers}
    size = tuple(inputs.shape[-2:])
    count = len(call.targets)
    state: dict = {}

    def watch(module, args, output):
        if not isinstance(output, torch.Tensor) or not output.requires_grad or output.dim() != 4:
            return  # a layer fed nothing that depends on the input adds no map

        def to_map(gradient, bias=biases[module]):
            state["maps"][state["target"]] += layer_map(gradient.detach(), bias, size)

        output.register_hook(to_map)

    def compute(start, stop):
        batch = inputs[start:stop].detach().requires_grad_(True)
        state["maps"] = torch.zeros((count, stop - start, 1, *size), dtype=inputs.dtype, device=inputs.device)
        with torch.enable_grad():
            logits = as_logits(forward(call.model, batch))
            scores = call.scores(logits, slice(start, stop))
            for t in range(count):
                state["target"] = t
                (gradient,) = torch.autograd.grad(scores[t].sum(), batch, retain_graph=t < count - 1)
                state["maps"][t] += normalised((gradient.detach() * batch.detach()).abs()).sum(dim=1, keepdim=True)
        return state.pop("maps"), logits.detach()

    attribution = torch.empty((count, len(inputs), 1, *size), dtype=inputs.dtype, device=inputs.device)
    logits = []
    handles = [module.register_forward_hook(watch) for module in dict.fromkeys(layers)]
    try:
        for start, stop, (maps, batch_logits) in call.batches.run(len(inputs), compute):
            attribution[:, start:stop] = maps
            logits.append(batch_logits)
            call.progress.advance(stop - start)
    finally:
        for handle in handles:
            handle.remove()
        state.clear()
    return Attribution(attribution, logits=torch.cat(logits))
