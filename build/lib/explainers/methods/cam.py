"""The CAM family: one capture of a layer's activations and gradients; each method only weights the channels.

Every method here returns, per target, ``attribution`` [N, 1, H, W] (bilinearly upsampled to the input) and
``layer_attribution`` [N, 1, h, w] at the layer's own resolution. By default the ReLU the papers use is
applied; ``relu=False`` keeps negative evidence.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..batching import forward
from ..core import Attribution, Call, as_logits
from ..errors import SaliencyError
from ..hooks import capture_layer
from ..layers import to_nchw
from ..registry import FORWARD_ONLY, NEEDS_LAYER, NEEDS_MODEL, ONE_PASS, Cost, Param, Reference, Sanity, register

LAYER = frozenset({NEEDS_MODEL, NEEDS_LAYER})
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
    """A layer's activations [N, C, h, w], the gradients of every target's score [T, N, C, h, w] (or None),
    and the logits of the inputs [N, K]."""

    def __init__(self, activations: torch.Tensor, gradients: torch.Tensor | None, logits: torch.Tensor):
        self.activations = activations
        self.gradients = gradients
        self.logits = logits


def capture(call: Call, inputs: torch.Tensor, gradients: bool = True) -> Captured:
    """One batched forward pass recording the layer's output, and one backward per target of d score / d output."""
    layout, grid = call.layer.layout, call.layer.grid
    activations, grads, logits = [], [], []
    count = len(call.targets)
    with capture_layer(call.layer_module) as layer:

        def compute(start, stop):
            batch = inputs[start:stop].detach()
            batch_grads = None
            if gradients:
                # requires_grad on the input guarantees a graph even for a model with frozen parameters
                batch.requires_grad_(True)
                with torch.enable_grad():
                    batch_logits = as_logits(call.model(batch))
                    scores = call.scores(batch_logits, slice(start, stop))
                    per_target = [
                        torch.autograd.grad(scores[t].sum(), layer.output, retain_graph=t < count - 1)[0]
                        for t in range(count)
                    ]
                batch_grads = torch.stack([to_nchw(g.detach(), layout, grid) for g in per_target])
            else:
                with torch.inference_mode():
                    batch_logits = as_logits(call.model(batch))
            return to_nchw(layer.output.detach(), layout, grid), batch_grads, batch_logits.detach()

        for start, stop, (batch_activations, batch_grads, batch_logits) in call.batches.run(len(inputs), compute):
            activations.append(batch_activations)
            if batch_grads is not None:
                grads.append(batch_grads)
            logits.append(batch_logits)
            call.progress.advance(stop - start)
    return Captured(torch.cat(activations), torch.cat(grads, dim=1) if gradients else None, torch.cat(logits))


def finish(inputs, layer_maps: torch.Tensor, relu: bool, logits: torch.Tensor | None = None) -> Attribution:
    """[T, N, h, w] layer maps: ReLU (optional), kept at the layer's resolution, and upsampled bilinearly to the
    input size."""
    if relu:
        layer_maps = layer_maps.clamp(min=0)
    count, rows, h, w = layer_maps.shape
    layer_maps = layer_maps.reshape(count, rows, 1, h, w)
    upsampled = F.interpolate(layer_maps.flatten(0, 1), size=inputs.shape[-2:], mode="bilinear",
                              align_corners=False)
    return Attribution(upsampled.view(count, rows, 1, *inputs.shape[-2:]), layer_attribution=layer_maps,
                       logits=logits)


def _register_cam(name, display_name, reference, summary, weaknesses, formula, sanity=Sanity.PASSES, cost=ONE_PASS,
                  params=None, class_sensitive=True):
    def decorate(fn):
        return register(
            name,
            display_name=display_name,
            family="CAM",
            reference=reference,
            summary=summary,
            weaknesses=weaknesses,
            formula=formula,
            sanity=sanity,
            params={"relu": RELU, **(params or {})},
            cost=cost,
            requires=LAYER,
            attribution_channels=1,
            class_sensitive=class_sensitive,
            sweepable=True,
        )(fn)

    return decorate


def _ratio(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    """numerator / denominator, 0 where the denominator is 0 or the quotient overflows: a channel with nothing
    to normalise by carries no weight, and NaN must not spread through the channel sum."""
    quotient = numerator / torch.where(denominator == 0, torch.ones_like(denominator), denominator)
    return torch.where((denominator == 0) | ~torch.isfinite(quotient), torch.zeros_like(quotient), quotient)


def _weighted(captured: Captured, weights: torch.Tensor) -> torch.Tensor:
    """Σ_k w_k A^k for every target: weights [T, N, C, 1, 1] (or [T, N, C, h, w]) -> maps [T, N, h, w]."""
    return (weights * captured.activations.unsqueeze(0)).sum(dim=2)


@_register_cam(
    "gradcam", "Grad-CAM", SELVARAJU,
    "Weights each channel of a layer by its spatially averaged gradient and sums the weighted activation maps: "
    "where the layer's features that raise the class score are.",
    f"{WEAKNESS_RESOLUTION} Averaging the gradient can miss small or repeated objects. Passes the "
    "model-randomisation check.",
    "L = ReLU(Σ_k α_k A^k), α_k = mean_ij ∂S_c/∂A^k_ij",
)
def gradcam(call, inputs, relu=True):
    """Selvaraju et al. 2017, arXiv:1610.02391."""
    captured = capture(call, inputs)
    return finish(inputs, gradcam_maps(captured), relu, captured.logits)


def gradcam_maps(captured: Captured) -> torch.Tensor:
    """Grad-CAM's layer maps [T, N, h, w] before the ReLU: channels weighted by their mean gradient."""
    weights = captured.gradients.mean(dim=(3, 4), keepdim=True)
    return _weighted(captured, weights)


@_register_cam(
    "gradcam_pp", "Grad-CAM++", CHATTOPADHYAY,
    "Like Grad-CAM, but each location's positive gradient gets its own weight from higher-order terms, so "
    "several instances of a class all light up.",
    f"{WEAKNESS_RESOLUTION} The closed-form weights assume an exponential score; numerically touchy where "
    "gradients are tiny.",
    "α_k = Σ_ij a^k_ij ReLU(g^k_ij), a^k_ij = g² / (2g² + Σ_ab A^k_ab g³)",
)
def gradcam_pp(call, inputs, relu=True):
    """Chattopadhyay et al. 2018, arXiv:1710.11063 (eq. 19)."""
    captured = capture(call, inputs)
    return finish(inputs, gradcam_pp_maps(captured), relu, captured.logits)


def gradcam_pp_maps(captured: Captured) -> torch.Tensor:
    """Grad-CAM++'s layer maps [T, N, h, w] before the ReLU (Chattopadhyay et al. 2018, eq. 19)."""
    grads, activations = captured.gradients, captured.activations.unsqueeze(0)
    squared = grads**2
    denominator = 2 * squared + activations.sum(dim=(3, 4), keepdim=True) * squared * grads
    alpha = torch.where(grads != 0, _ratio(squared, denominator + 1e-6), torch.zeros_like(grads))
    weights = (alpha * grads.clamp(min=0)).sum(dim=(3, 4), keepdim=True)
    return _weighted(captured, weights)


@_register_cam(
    "xgradcam", "XGrad-CAM", FU,
    "Weights each channel by its gradient averaged with the channel's own activations as weights, which makes "
    "the map satisfy the sensitivity and conservation axioms more closely.",
    f"{WEAKNESS_RESOLUTION} Channels with negative activation sums (non-ReLU layers) get unstable weights.",
    "α_k = Σ_ij (A^k_ij / Σ_ab A^k_ab) ∂S_c/∂A^k_ij",
)
def xgradcam(call, inputs, relu=True):
    """Fu et al. 2020, arXiv:2008.02312."""
    captured = capture(call, inputs)
    return finish(inputs, xgradcam_maps(captured), relu, captured.logits)


def xgradcam_maps(captured: Captured) -> torch.Tensor:
    """XGrad-CAM's layer maps [T, N, h, w] before the ReLU: gradients averaged with activation weights."""
    activations = captured.activations
    normalised = _ratio(activations, activations.sum(dim=(2, 3), keepdim=True) + 1e-7)
    weights = (captured.gradients * normalised.unsqueeze(0)).sum(dim=(3, 4), keepdim=True)
    return _weighted(captured, weights)


@_register_cam(
    "layercam", "LayerCAM", JIANG,
    "Weights every location of every channel by its own positive gradient instead of a channel average, so "
    "it also gives fine maps from early layers.",
    "Maps from early layers are noisy and edge-like; from the last layer it is close to Grad-CAM.",
    "L = ReLU(Σ_k ReLU(∂S_c/∂A^k) ⊙ A^k)",
)
def layercam(call, inputs, relu=True):
    """Jiang et al. 2021, IEEE Trans. Image Processing 30:5875."""
    captured = capture(call, inputs)
    return finish(inputs, layercam_maps(captured), relu, captured.logits)


def layercam_maps(captured: Captured) -> torch.Tensor:
    """LayerCAM's layer maps [T, N, h, w] before the ReLU: every location weighted by its positive gradient."""
    return _weighted(captured, captured.gradients.clamp(min=0))


@_register_cam(
    "hirescam", "HiResCAM", DRAELOS,
    "Multiplies gradients and activations element-wise before summing over channels, so the map reflects "
    "exactly the locations the score used (no gradient averaging).",
    f"{WEAKNESS_RESOLUTION} Faithful to the layer, not to the input pixels.",
    "L = Σ_k ∂S_c/∂A^k ⊙ A^k",
)
def hirescam(call, inputs, relu=True):
    """Draelos & Carin 2020, arXiv:2011.08891."""
    captured = capture(call, inputs)
    return finish(inputs, hirescam_maps(captured), relu, captured.logits)


def hirescam_maps(captured: Captured) -> torch.Tensor:
    """HiResCAM's layer maps [T, N, h, w] before the ReLU: gradient times activation, summed over channels."""
    return _weighted(captured, captured.gradients)


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
    "L = A · v₁, v₁ the first right-singular vector of the centred activations [hw × C]",
    sanity=Sanity.CLASS_INSENSITIVE,
    cost=FORWARD_ONLY,
    class_sensitive=False,
)
def eigencam(call, inputs, relu=True):
    """Muhammad & Yeasin 2020, arXiv:2008.00299."""
    captured = capture(call, inputs, gradients=False)
    layer_map = eigencam_maps(captured)
    return finish(inputs, layer_map.expand(len(call.targets), *layer_map.shape[1:]), relu, captured.logits)


def eigencam_maps(captured: Captured) -> torch.Tensor:
    """Eigen-CAM's layer map [1, N, h, w] before the ReLU: the same for every target (no gradients needed)."""
    return principal_projection(captured.activations).unsqueeze(0)


# The one-capture CAMs by name: what each does with a capture, before the ReLU and the upsampling, so that
# explain_many can compute them all from one shared capture. None of them changes the passes with its params.
LAYER_MAPS = {
    "gradcam": gradcam_maps,
    "gradcam_pp": gradcam_pp_maps,
    "xgradcam": xgradcam_maps,
    "layercam": layercam_maps,
    "hirescam": hirescam_maps,
    "eigencam": eigencam_maps,
}


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
    formula="α = softmax_k S_c(x ⊙ norm(up(A^k))), L = ReLU(Σ_k α_k A^k)",
    sanity=Sanity.PASSES,
    params={"relu": RELU},
    # the clean pass that captures the layer, then one masked pass per channel
    cost=Cost(fixed=(1, 0), per_channel=(1, 0)),
    requires=LAYER,
    attribution_channels=1,
)
def scorecam(call, inputs, relu=True):
    """Wang et al. 2020, arXiv:1910.01279. Gradient-free, batched; constant channels share one pass, and every
    target is scored from the same masked passes.

    Masks are built batch by batch (corner-aligned bilinear upsampling of the batch's channels, then min-max per
    channel), so memory grows with ``batch_size`` and not with the channel count. The host learns how many
    channels vary in each row once, before the loops; nothing inside them waits for the device.
    """
    captured = capture(call, inputs, gradients=False)
    activations = captured.activations
    n, c = activations.shape[:2]
    size = inputs.shape[-2:]
    count = len(call.targets)
    flat_layer = activations.flatten(2)
    # judged at the layer's resolution: interpolating a constant map is not bit-exact constant
    constant = flat_layer.amax(dim=2) == flat_layer.amin(dim=2)  # [N, C]
    varying_counts = (~constant).sum(dim=1).tolist()  # the one wait: how many passes each row makes
    scores = torch.empty((count, n, c), device=inputs.device, dtype=inputs.dtype)
    if not all(varying == c for varying in varying_counts):
        # a constant channel's normalised mask is all zeros: every such channel scores the blank input, the same
        # image for every row, so one pass serves them all
        with torch.inference_mode():
            blank_logits = as_logits(forward(call.model, torch.zeros_like(inputs[:1]))).expand(n, -1)
            blank = call.scores(blank_logits, torch.arange(n)).to(scores.dtype)  # [T, N]
        scores.copy_(blank.unsqueeze(2).expand(count, n, c))
    varying_channels = torch.nonzero(~constant)[:, 1].split(varying_counts)  # row-major: each row's channels
    for i, varying in enumerate(varying_channels):
        row_activations = activations[i]

        def masked_scores(start, stop, i=i, varying=varying, row_activations=row_activations):
            with torch.inference_mode():
                channels = varying[start:stop]
                upsampled = F.interpolate(row_activations[channels].unsqueeze(1), size=size, mode="bilinear",
                                          align_corners=True)  # [B, 1, H, W]
                low = upsampled.amin(dim=(2, 3), keepdim=True)
                spread = upsampled.amax(dim=(2, 3), keepdim=True) - low
                # a map the upsampling flattened to a constant gets the blank mask, as a constant channel does
                masks = torch.where(spread > 0, (upsampled - low) / torch.where(spread > 0, spread, 1.0), 0.0)
                logits = as_logits(forward(call.model, inputs[i : i + 1] * masks))
                return call.scores(logits, torch.full((stop - start,), i, dtype=torch.long))

        for start, stop, batch_scores in call.batches.run(varying_counts[i], masked_scores):
            scores[:, i, varying[start:stop]] = batch_scores.to(scores.dtype)
            call.progress.advance(stop - start)
        if varying_counts[i] < c:
            call.progress.advance(c - varying_counts[i])
    skipped = n * c - sum(varying_counts)
    # every channel's mask scoring the same means the score ignores the masks: the softmax would weight the
    # channels uniformly and draw the mean activation, which says nothing about the class
    flat = (scores.amax(dim=2) == scores.amin(dim=2)) & (c > 1)  # [T, N]; one channel has nothing to compare
    weights = torch.where(flat.unsqueeze(2), 0.0, scores.softmax(dim=2))  # [T, N, C]
    layer_maps = torch.einsum("tnc,nchw->tnhw", weights, activations)
    result = finish(inputs, layer_maps, relu, captured.logits)
    result.extras = [{"skipped_constant_channels": skipped, "channels": c * n} for _ in range(count)]
    note = ("the map is all zero: every channel's masked copy got the same score, so no channel carries weight",)
    result.target_notes = [[note if empty else () for empty in row] for row in flat.tolist()]  # [T][N]
    return result


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
    formula="L = Σ_k w^c_k A^k, w^c the final linear layer's row for class c",
    sanity=Sanity.PASSES,
    params={"relu": RELU},
    cost=FORWARD_ONLY,
    requires=LAYER,
    attribution_channels=1,
)
def cam(call, inputs, relu=True):
    """Zhou et al. 2016, arXiv:1512.04150. The layer must feed global average pooling and one linear layer."""
    if any(target.objective != "logit" for target in call.targets):
        raise SaliencyError("CAM explains the logit; use objective='logit' or pick Grad-CAM")
    captured = capture(call, inputs, gradients=False)
    logits = captured.logits
    fc = _final_linear(call.model, logits.shape[-1])
    activations = captured.activations
    pooled = activations.mean(dim=(2, 3))
    with torch.inference_mode():
        fits = (
            fc is not None
            and fc.in_features == activations.shape[1]
            and torch.allclose(fc(pooled), logits, rtol=1e-3, atol=1e-3 * float(logits.abs().max()) + 1e-5)
        )
    if not fits:
        raise SaliencyError(
            f"CAM needs a model whose layer {call.layer.name!r} feeds global average pooling and one linear layer "
            f"straight into the logits; this model does not (its {activations.shape[1]} channels there do not "
            "reproduce the logits that way). Pick Grad-CAM, which generalises CAM to any model, or the last "
            "convolutional block"
        )
    weight = fc.weight.detach()
    class_weights = []
    for target in call.targets:
        classes = target.classes.to(weight.device)
        rows = weight[classes[:, 0]]
        class_weights.append(rows - weight[classes[:, 1]] if target.contrast else rows)
    layer_maps = torch.einsum("tnc,nchw->tnhw", torch.stack(class_weights), activations)
    return finish(inputs, layer_maps, relu, logits)
