"""The CAM family: one capture of a layer's activations and gradients; each method only weights the channels.

Every method here returns ``attribution`` [N, 1, H, W] (bilinearly upsampled to the input) and sets
``layer_attribution`` [N, 1, h, w] at the layer's own resolution. By default the ReLU the papers use is
applied; ``relu=False`` keeps negative evidence.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..batching import batch_slices
from ..errors import SaliencyError
from ..hooks import capture_layer
from ..layers import to_nchw
from ..registry import Param, Reference, register

RELU = Param("bool", True, "Keep only positive evidence, as the papers do; off shows negative evidence too.")
WEAKNESS_RESOLUTION = "Coarse: the map has the layer's resolution (7x7 for most final blocks), upsampled."

SELVARAJU = Reference(
    "Selvaraju, Cogswell, Das, Vedantam, Parikh & Batra", 2017,
    "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based Localization", "1610.02391",
)
CHATTOPADHYAY = Reference(
    "Chattopadhyay, Sarkar, Howlader & Balasubramanian", 2018,
    "Grad-CAM++: Improved Visual Explanations for Deep Convolutional Networks", "1710.11063",
)
FU = Reference(
    "Fu, Hu, Dong, Guo, Gao & Zhang", 2020, "Axiom-based Grad-CAM: Towards Accurate Visualization and "
    "Explanation of CNNs", "2008.02312",
)
JIANG = Reference(
    "Jiang, Zhang, Hou, Cheng & Wei", 2021, "LayerCAM: Exploring Hierarchical Class Activation Maps for "
    "Localization", url="https://doi.org/10.1109/TIP.2021.3089943",
)
DRAELOS = Reference(
    "Draelos & Carin", 2020, "Use HiResCAM instead of Grad-CAM for faithful explanations of convolutional "
    "neural networks", "2011.08891",
)
MUHAMMAD = Reference(
    "Muhammad & Yeasin", 2020, "Eigen-CAM: Class Activation Map using Principal Components", "2008.00299",
)
WANG = Reference(
    "Wang, Wang, Du, Yang, Zhang, Ding, Mardziel & Hu", 2020, "Score-CAM: Score-Weighted Visual Explanations "
    "for Convolutional Neural Networks", "1910.01279",
)
ZHOU = Reference(
    "Zhou, Khosla, Lapedriza, Oliva & Torralba", 2016, "Learning Deep Features for Discriminative Localization",
    "1512.04150",
)


class Captured:
    """A layer's activations and (optionally) gradients for every input row, as [N, C, h, w] maps."""

    def __init__(self, activations: torch.Tensor, gradients: torch.Tensor | None):
        self.activations = activations
        self.gradients = gradients


def capture(ctx, inputs, rows, gradients: bool = True) -> Captured:
    """One batched forward (and backward) pass recording the layer's output and d score / d output."""
    layout = ctx.layer_info.layout
    grid = ctx.layer_info.grid
    clean = inputs is ctx.inputs
    activations, grads = [], []
    with capture_layer(ctx.layer_module) as layer:
        for start, stop in batch_slices(len(inputs), ctx.batch_size):
            batch = inputs[start:stop].detach()
            if gradients:
                # requires_grad on the input guarantees a graph even for a model with frozen parameters
                batch.requires_grad_(True)
                with torch.enable_grad():
                    logits = ctx.model(batch)
                    if clean:
                        ctx.record_clean_logits(logits, rows[start:stop])
                    elif ctx.target.needs_logits:
                        ctx.ensure_logits()
                    score = ctx.target.score(logits, rows[start:stop]).sum()
                    (grad,) = torch.autograd.grad(score, layer.output)
                grads.append(to_nchw(grad.detach(), layout, grid))
            else:
                with torch.no_grad():
                    logits = ctx.model(batch)
                if clean:
                    ctx.record_clean_logits(logits, rows[start:stop])
            activations.append(to_nchw(layer.output.detach(), layout, grid))
            ctx.progress.advance(stop - start)
    return Captured(torch.cat(activations), torch.cat(grads) if gradients else None)


def finish(ctx, inputs, layer_map: torch.Tensor, relu: bool) -> torch.Tensor:
    """ReLU (optional), keep the layer-resolution map, and upsample it bilinearly to the input size."""
    if relu:
        layer_map = layer_map.clamp(min=0)
    layer_map = layer_map.unsqueeze(1)
    if inputs is ctx.inputs:
        ctx.layer_attribution = layer_map
    return F.interpolate(layer_map, size=inputs.shape[-2:], mode="bilinear", align_corners=False)


def _register_cam(name, display_name, reference, summary, weaknesses, sanity="passes", cost=(1, 1), params=None):
    def decorate(fn):
        return register(
            name,
            display_name=display_name,
            family="CAM",
            reference=reference,
            summary=summary,
            weaknesses=weaknesses,
            sanity_check=sanity,
            params={"relu": RELU, **(params or {})},
            cost=lambda p, hw, channels: cost,
            needs_layer=True,
            attribution_channels=1,
        )(fn)

    return decorate


@_register_cam(
    "gradcam", "Grad-CAM", SELVARAJU,
    "Weights each channel of a layer by its spatially averaged gradient and sums the weighted activation maps: "
    "where the layer's features that raise the class score are.",
    f"{WEAKNESS_RESOLUTION} Averaging the gradient can miss small or repeated objects. Passes the "
    "model-randomisation check.",
)
def gradcam(ctx, inputs, rows, relu=True):
    """Selvaraju et al. 2017, arXiv:1610.02391."""
    captured = capture(ctx, inputs, rows)
    weights = captured.gradients.mean(dim=(2, 3), keepdim=True)
    return finish(ctx, inputs, (weights * captured.activations).sum(dim=1), relu)


@_register_cam(
    "gradcam_pp", "Grad-CAM++", CHATTOPADHYAY,
    "Like Grad-CAM, but each location's positive gradient gets its own weight from higher-order terms, so "
    "several instances of a class all light up.",
    f"{WEAKNESS_RESOLUTION} The closed-form weights assume an exponential score; numerically touchy where "
    "gradients are tiny.",
)
def gradcam_pp(ctx, inputs, rows, relu=True):
    """Chattopadhyay et al. 2018, arXiv:1710.11063 (eq. 19)."""
    captured = capture(ctx, inputs, rows)
    grads, activations = captured.gradients, captured.activations
    squared = grads**2
    denominator = 2 * squared + activations.sum(dim=(2, 3), keepdim=True) * squared * grads
    alpha = torch.where(grads != 0, squared / (denominator + 1e-6), torch.zeros_like(grads))
    weights = (alpha * grads.clamp(min=0)).sum(dim=(2, 3), keepdim=True)
    return finish(ctx, inputs, (weights * activations).sum(dim=1), relu)


@_register_cam(
    "xgradcam", "XGrad-CAM", FU,
    "Weights each channel by its gradient averaged with the channel's own activations as weights, which makes "
    "the map satisfy the sensitivity and conservation axioms more closely.",
    f"{WEAKNESS_RESOLUTION} Channels with negative activation sums (non-ReLU layers) get unstable weights.",
)
def xgradcam(ctx, inputs, rows, relu=True):
    """Fu et al. 2020, arXiv:2008.02312."""
    captured = capture(ctx, inputs, rows)
    activations = captured.activations
    normalised = activations / (activations.sum(dim=(2, 3), keepdim=True) + 1e-7)
    weights = (captured.gradients * normalised).sum(dim=(2, 3), keepdim=True)
    return finish(ctx, inputs, (weights * activations).sum(dim=1), relu)


@_register_cam(
    "layercam", "LayerCAM", JIANG,
    "Weights every location of every channel by its own positive gradient instead of a channel average, so "
    "it also gives fine maps from early layers.",
    "Maps from early layers are noisy and edge-like; from the last layer it is close to Grad-CAM.",
)
def layercam(ctx, inputs, rows, relu=True):
    """Jiang et al. 2021, IEEE Trans. Image Processing 30:5875."""
    captured = capture(ctx, inputs, rows)
    return finish(ctx, inputs, (captured.gradients.clamp(min=0) * captured.activations).sum(dim=1), relu)


@_register_cam(
    "hirescam", "HiResCAM", DRAELOS,
    "Multiplies gradients and activations element-wise before summing over channels, so the map reflects "
    "exactly the locations the score used (no gradient averaging).",
    f"{WEAKNESS_RESOLUTION} Faithful to the layer, not to the input pixels.",
)
def hirescam(ctx, inputs, rows, relu=True):
    """Draelos & Carin 2020, arXiv:2011.08891."""
    captured = capture(ctx, inputs, rows)
    return finish(ctx, inputs, (captured.gradients * captured.activations).sum(dim=1), relu)


def principal_projection(activations: torch.Tensor) -> torch.Tensor:
    """Project each position's (channel-centred) activation vector onto the first principal component.

    The SVD's sign is arbitrary; we orient the component so the projection correlates positively with the
    channel-summed activation, i.e. the map points where the layer is most active.
    """
    n, c, h, w = activations.shape
    flat = activations.reshape(n, c, h * w).transpose(1, 2).double()  # [N, hw, C]
    centred = flat - flat.mean(dim=1, keepdim=True)
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    projection = centred @ vh[:, 0, :].unsqueeze(-1)  # [N, hw, 1]
    projection = projection.squeeze(-1)
    energy = flat.sum(dim=2)
    orientation = torch.sign(((projection - projection.mean(1, keepdim=True))
                              * (energy - energy.mean(1, keepdim=True))).sum(dim=1, keepdim=True))
    orientation[orientation == 0] = 1
    return (projection * orientation).reshape(n, h, w).to(activations.dtype)


@_register_cam(
    "eigencam", "Eigen-CAM", MUHAMMAD,
    "The first principal component of the layer's activations, without gradients or the class: the "
    "dominant spatial pattern the layer responds to.",
    "Class-agnostic: the target class does not change the map, so it cannot answer 'why A rather than B'. "
    "The component's sign is a convention (oriented towards the strongest activations).",
    sanity="class-insensitive",
    cost=(1, 0),
)
def eigencam(ctx, inputs, rows, relu=True):
    """Muhammad & Yeasin 2020, arXiv:2008.00299."""
    captured = capture(ctx, inputs, rows, gradients=False)
    return finish(ctx, inputs, principal_projection(captured.activations), relu)


def _scorecam_cost(p, hw, channels):
    return ((channels or 512) + 1, 0)


@register(
    "scorecam",
    display_name="Score-CAM",
    family="CAM",
    reference=WANG,
    summary=(
        "Masks the input with each upsampled activation map in turn and weights the channel by how much the "
        "class score then rises (softmax over channels): gradient-free."
    ),
    weaknesses=(
        "One forward pass per channel (hundreds to thousands); masks from constant channels are skipped, and "
        "the map is coarse like every CAM."
    ),
    sanity_check="passes",
    params={"relu": RELU},
    cost=_scorecam_cost,
    needs_layer=True,
    attribution_channels=1,
)
def scorecam(ctx, inputs, rows, relu=True):
    """Wang et al. 2020, arXiv:1910.01279. Gradient-free, batched; constant channels share one pass."""
    captured = capture(ctx, inputs, rows, gradients=False)
    activations = captured.activations
    n, c = activations.shape[:2]
    ctx.progress.total = max(ctx.progress.total, n * (c + 1))
    if ctx.target.needs_logits:
        ctx.ensure_logits()
    maps = []
    skipped = 0
    for i in range(n):
        # masks: bilinear (corner-aligned) upsampling, then min-max per channel
        upsampled = F.interpolate(activations[i : i + 1], size=inputs.shape[-2:], mode="bilinear",
                                  align_corners=True)[0]
        low = upsampled.amin(dim=(1, 2), keepdim=True)
        high = upsampled.amax(dim=(1, 2), keepdim=True)
        # judged at the layer's resolution: interpolating a constant map is not bit-exact constant
        constant = activations[i].flatten(1).amax(dim=1) == activations[i].flatten(1).amin(dim=1)
        constant |= (high - low).flatten() <= 0
        varying = torch.nonzero(~constant).flatten()
        masks = (upsampled[varying] - low[varying]) / (high[varying] - low[varying])
        scores = torch.empty(c, device=inputs.device, dtype=inputs.dtype)
        row = rows[i : i + 1]
        with torch.inference_mode():
            for start, stop in batch_slices(len(varying), ctx.batch_size):
                masked = inputs[i : i + 1] * masks[start:stop].unsqueeze(1)
                logits = ctx.model(masked)
                scores[varying[start:stop]] = ctx.target.score(logits, row.expand(stop - start)).to(scores.dtype)
                ctx.progress.advance(stop - start)
            if constant.any():
                # a constant channel's normalised mask is all zeros: every such channel scores the blank input
                blank_logits = ctx.model(torch.zeros_like(inputs[i : i + 1]))
                scores[constant] = ctx.target.score(blank_logits, row).to(scores.dtype)
                ctx.progress.advance(int(constant.sum()))
        skipped += int(constant.sum())
        weights = scores.softmax(dim=0).view(c, 1, 1)
        maps.append((weights * activations[i]).sum(dim=0))
    ctx.extras["skipped_constant_channels"] = skipped
    ctx.extras["channels"] = c * n
    return finish(ctx, inputs, torch.stack(maps), relu)


def _final_linear(model: nn.Module, classes: int) -> nn.Linear | None:
    linears = [m for m in model.modules() if isinstance(m, nn.Linear) and m.out_features == classes]
    return linears[-1] if linears else None


@register(
    "cam",
    display_name="CAM",
    family="CAM",
    reference=ZHOU,
    summary=(
        "For networks ending in global average pooling and one linear layer: the class's linear weights "
        "applied to the last feature maps, exactly the per-location share of the logit."
    ),
    weaknesses=(
        "Only for that architecture (ResNet, EfficientNet, MobileNet, DenseNet…); not for VGG's MLP head or "
        "transformers. Explains the logit only."
    ),
    sanity_check="passes",
    params={"relu": RELU},
    cost=lambda p, hw, channels: (1, 0),
    needs_layer=True,
    attribution_channels=1,
)
def cam(ctx, inputs, rows, relu=True):
    """Zhou et al. 2016, arXiv:1512.04150. The layer must feed global average pooling and one linear layer."""
    if ctx.target.objective != "logit":
        raise SaliencyError("CAM explains the logit; use objective='logit' or pick Grad-CAM")
    captured = capture(ctx, inputs, rows, gradients=False)
    logits = ctx.ensure_logits() if inputs is ctx.inputs else ctx.predict(inputs)
    fc = _final_linear(ctx.model, logits.shape[-1])
    activations = captured.activations
    pooled = activations.mean(dim=(2, 3))
    fits = (
        fc is not None
        and fc.in_features == activations.shape[1]
        and torch.allclose(fc(pooled), logits, rtol=1e-3, atol=1e-3 * float(logits.abs().max()) + 1e-5)
    )
    if not fits:
        raise SaliencyError(
            f"CAM needs a model whose layer {ctx.layer!r} feeds global average pooling and one linear layer "
            f"straight into the logits; this model does not (its {activations.shape[1]} channels there do not "
            "reproduce the logits that way). Pick Grad-CAM, which generalises CAM to any model, or the last "
            "convolutional block"
        )
    indices = ctx.target.indices.to(inputs.device)[rows]
    weight = fc.weight.detach()
    class_weights = weight[indices[:, 0]] - weight[indices[:, 1]] if ctx.target.contrast else weight[indices]
    return finish(ctx, inputs, torch.einsum("nc,nchw->nhw", class_weights, activations), relu)
