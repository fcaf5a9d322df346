"""The CAM family: one capture of a layer's activations and gradients; each method only weights the channels.

Every method here returns, per target, ``attribution`` [N, 1, H, W] (bilinearly upsampled to the input) and
``layer_attribution`` [N, 1, h, w] at the layer's own resolution. By default the ReLU the papers use is
applied; ``relu=False`` keeps negative evidence.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..batching import Batches, default_batch_size, forward
from ..core import Attribution, Call, as_logits
from ..errors import SaliencyError
from ..folding import FLOAT32, fast_call, precision_param
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
# What bfloat16 passes cost the maps (Score-CAM: the masked passes; Ablation-CAM: the ablated ones and their
# clean pass), measured with bfloat16 emulated on a CPU without bfloat16 units.
SCORECAM_BFLOAT16 = ("correlation 0.9996 on efficientnet_lite0, the largest difference 5.7% of the map's largest "
                     "value; 1.0000 and 0.1% on a seeded ResNet-50 at 64 px.")
ABLATION_BFLOAT16 = ("correlation 0.9957 on efficientnet_lite0, the largest difference 28.5% of the map's largest "
                     "value: a channel's weight is a small difference of two scores, which bfloat16 rounds coarsely.")
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
        "One forward pass per channel (hundreds to thousands); masks from constant channels are skipped, channels "
        "with the same map up to scale and shift share one pass, and the map is coarse like every CAM."
    ),
    formula="α = softmax_k S_c(x ⊙ norm(up(A^k))), L = ReLU(Σ_k α_k A^k)",
    sanity=Sanity.PASSES,
    params={"relu": RELU, "precision": precision_param(SCORECAM_BFLOAT16)},
    # the clean pass that captures the layer, then one masked pass per channel
    cost=Cost(fixed=(1, 0), per_channel=(1, 0)),
    requires=LAYER,
    attribution_channels=1,
)
def scorecam(call, inputs, relu=True, precision=FLOAT32):
    """Wang et al. 2020, arXiv:1910.01279. Gradient-free, batched; constant channels share one pass, so do
    channels whose maps differ by a positive scale and shift (the same mask), and every target is scored from the
    same masked passes.

    Masks are built batch by batch (corner-aligned bilinear upsampling of the batch's channels, then min-max per
    channel), so memory grows with ``batch_size`` and not with the channel count. The host learns how many
    channels vary in each row once, before the loops; nothing inside them waits for the device. The layer is
    captured on the model itself; the masked passes, which need only the scores, run on its folded copy
    (``explainers.folding``), in ``precision``.
    """
    captured = capture(call, inputs, gradients=False)
    activations = captured.activations
    n, c = activations.shape[:2]
    masked = fast_call(call, inputs, n * c, precision)
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
            blank_logits = as_logits(forward(masked.model, torch.zeros_like(inputs[:1]))).expand(n, -1)
            blank = call.scores(blank_logits, torch.arange(n)).to(scores.dtype)  # [T, N]
        scores.copy_(blank.unsqueeze(2).expand(count, n, c))
    varying_channels = torch.nonzero(~constant)[:, 1].split(varying_counts)  # row-major: each row's channels
    # two channels whose maps differ by a positive affine change (A_j = a A_k + b, a > 0) get the same mask, since
    # upsampling commutes with it and the min-max undoes it: one pass serves both (often on trained networks,
    # whose sparse late layers have many maps with one active place). Judged on the min-max normalised maps at
    # the layer's resolution, bit for bit.
    low = flat_layer.amin(dim=2, keepdim=True)
    spread = flat_layer.amax(dim=2, keepdim=True) - low
    shapes = (flat_layer - low) / torch.where(spread > 0, spread, 1.0)  # [N, C, hw]
    shared = 0
    for i, varying in enumerate(varying_channels):
        row_activations = activations[i]
        runs, slot = _distinct(shapes[i, varying])  # which of the row's channels run, and whose score each takes
        channels_run = varying[runs]
        shared += len(varying) - len(runs)
        row_scores = torch.empty((count, len(runs)), device=inputs.device, dtype=inputs.dtype)

        def masked_scores(start, stop, i=i, channels_run=channels_run, row_activations=row_activations):
            with torch.inference_mode():
                channels = channels_run[start:stop]
                upsampled = F.interpolate(row_activations[channels].unsqueeze(1), size=size, mode="bilinear",
                                          align_corners=True)  # [B, 1, H, W]
                low = upsampled.amin(dim=(2, 3), keepdim=True)
                spread = upsampled.amax(dim=(2, 3), keepdim=True) - low
                # a map the upsampling flattened to a constant gets the blank mask, as a constant channel does
                masks = torch.where(spread > 0, (upsampled - low) / torch.where(spread > 0, spread, 1.0), 0.0)
                logits = as_logits(forward(masked.model, inputs[i : i + 1] * masks))
                return call.scores(logits, torch.full((stop - start,), i, dtype=torch.long))

        for start, stop, batch_scores in call.batches.run(len(runs), masked_scores):
            row_scores[:, start:stop] = batch_scores.to(scores.dtype)
            call.progress.advance(stop - start)
        scores[:, i, varying] = row_scores[:, slot]
        if len(runs) < c:
            call.progress.advance(c - len(runs))
    skipped = n * c - sum(varying_counts)
    # every channel's mask scoring the same means the score ignores the masks: the softmax would weight the
    # channels uniformly and draw the mean activation, which says nothing about the class
    flat = (scores.amax(dim=2) == scores.amin(dim=2)) & (c > 1)  # [T, N]; one channel has nothing to compare
    weights = torch.where(flat.unsqueeze(2), 0.0, scores.softmax(dim=2))  # [T, N, C]
    layer_maps = torch.einsum("tnc,nchw->tnhw", weights, activations)
    result = finish(inputs, layer_maps, relu, captured.logits)
    result.extras = [{"skipped_constant_channels": skipped, "shared_mask_channels": shared, "channels": c * n}
                     for _ in range(count)]
    note = ("the map is all zero: every channel's masked copy got the same score, so no channel carries weight",)
    result.target_notes = [[note if empty else () for empty in row] for row in flat.tolist()]  # [T][N]
    return result


def _distinct(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(runs, slot) for ``rows`` [V, D]: ``runs`` the index of the first of each group of equal rows, ascending;
    ``slot`` [V] the position in ``runs`` of each row's group."""
    if len(rows) < 2:
        return torch.arange(len(rows), device=rows.device), torch.arange(len(rows), device=rows.device)
    _, group = torch.unique(rows, dim=0, return_inverse=True)
    index = torch.arange(len(rows), device=rows.device)
    first = torch.full((int(group.max()) + 1,), len(rows), device=rows.device).scatter_reduce(0, group, index, "amin")
    runs, order = first.sort()
    position = torch.empty_like(order)
    position[order] = torch.arange(len(order), device=rows.device)
    return runs, position[group]


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


DESAI = Reference(
    "Desai & Ramaswamy", 2020, "Ablation-CAM: Visual Explanation for Deep Convolutional Network via Gradient-free "
    "Localization (WACV 2020)",
    url="https://openaccess.thecvf.com/content_WACV_2020/papers/Desai_Ablation-CAM_Visual_Explanations_for_Deep_"
    "Convolutional_Network_via_Gradient-free_Localization_WACV_2020_paper.pdf",
)
# Where a row's activations go below zero, zero is no "absence" of a channel: the channel is then set this far
# below the row's minimum instead, as pytorch-grad-cam does (its first ablated copy of each batch).
ABLATION_OFFSET = 1e7
# A layer whose activations are nearly 0 at every place the first principal component leaves out: the share of
# the (min-max normalised) |projection| below which a place counts as outside, as pytorch-grad-cam ranks channels.
RANKING_THRESHOLD = 0.01


def ablation_ranking(activations: torch.Tensor) -> torch.Tensor:
    """Each channel's share of its (min-max normalised) |activation| inside the Eigen-CAM mask [N, C]: places where
    the normalised |first principal projection| exceeds RANKING_THRESHOLD. NaN for a constant channel (nothing
    to normalise), which ranks above every number, as NumPy's sort puts it (pytorch-grad-cam's ranking)."""
    projection = principal_projection(activations).abs()  # [N, h, w]; abs makes the SVD's sign irrelevant
    projection = projection - projection.amin(dim=(1, 2), keepdim=True)
    mask = (projection / projection.amax(dim=(1, 2), keepdim=True)) > RANKING_THRESHOLD
    magnitude = activations.abs()
    magnitude = magnitude - magnitude.amin(dim=(2, 3), keepdim=True)
    magnitude = magnitude / magnitude.amax(dim=(2, 3), keepdim=True)  # 0/0 = NaN for a constant channel
    return (magnitude * mask.unsqueeze(1)).sum(dim=(2, 3)) / magnitude.sum(dim=(2, 3))


def channels_to_ablate(activations: torch.Tensor, ratio: float) -> torch.Tensor:
    """[N, C] bool: which channels each row ablates. All of them at ratio 1; else, by :func:`ablation_ranking`,
    the int(ratio·C) ranked highest (NaN first) and the int(ratio·C) ranked lowest, as pytorch-grad-cam picks them
    (so a ratio of 0.5 or more ablates every channel)."""
    n, c = activations.shape[:2]
    if ratio >= 1.0:
        return torch.ones((n, c), dtype=torch.bool, device=activations.device)
    share = int(c * ratio)
    ranking = ablation_ranking(activations)
    chosen = torch.zeros((n, c), dtype=torch.bool, device=activations.device)
    if share:
        # stable sorts: among equal shares (often 1, on small layers) the lower channel index goes first at either
        # end; NumPy's unstable sort leaves that order to chance, so pytorch-grad-cam may pick others among ties
        chosen.scatter_(1, torch.sort(ranking, dim=1, descending=True, stable=True).indices[:, :share], True)
        chosen.scatter_(1, torch.sort(ranking, dim=1, stable=True).indices[:, :share], True)
    return chosen


class _Ablation:
    """The forward hook of one Ablation-CAM call: it replaces the layer's output by copies of it, copy j being a
    copy of output row ``source[j]`` with channel ``channels[j]`` set to 0, or far below the row's minimum where
    the row goes below 0 (see ABLATION_OFFSET)."""

    def __init__(self, channel_dim: int):
        self.channel_dim = channel_dim
        self.source: torch.Tensor | None = None
        self.channels: torch.Tensor | None = None

    def __call__(self, module, args, output):
        if self.source is None:
            return None  # the clean pass: the layer's own output
        if not isinstance(output, torch.Tensor):
            raise TypeError(f"expected the layer to output one tensor, got {type(output).__name__}")
        copies = output.detach()[self.source.to(output.device)].clone()
        low = copies.flatten(1).amin(dim=1)
        value = torch.where(low == 0, torch.zeros_like(low), low - ABLATION_OFFSET)
        rows = torch.arange(len(copies), device=output.device)
        copies.movedim(self.channel_dim, 1)[rows, self.channels.to(output.device)] = (
            value.view(-1, *([1] * (copies.dim() - 2))))
        return copies


@register(
    "ablationcam",
    display_name="Ablation-CAM",
    family="CAM",
    reference=DESAI,
    summary=(
        "Removes each channel of the layer in turn (sets it to 0) and weights the channel by the share of the class "
        "score that is then lost: gradient-free, the channel's measured effect rather than its local slope."
    ),
    weaknesses=(
        "One forward pass per channel (hundreds to thousands), though only the part of the network after the layer "
        "is run per channel. Where the layer's activations go below 0 a channel is set far below the row's minimum "
        "instead of to 0, as pytorch-grad-cam does: weights are then very large but keep their order. Dividing by "
        "the score flips the weights when the score is negative. ratio_channels_to_ablate < 1 trades weights for "
        "speed: only the channels ranked at both ends by their overlap with an Eigen-CAM mask are ablated, the "
        "rest get weight 0 and vanish from the map. Coarse like every CAM."
    ),
    formula="α_k = (S_c − S_c(A with A^k ablated)) / S_c, L = ReLU(Σ_k α_k A^k)",
    sanity=Sanity.UNTESTED,
    sanity_note=(
        "measured here on efficientnet_lite0 (cat.png, all 19 cascade steps, `python -m explainers sanity`): "
        "passes model randomisation on Spearman |map| (0.47) and HOG (0.17) but not on SSIM (0.56); "
        "class-sensitive (4/4 random logits); input invariant"
    ),
    params={
        "relu": RELU,
        "ratio_channels_to_ablate": Param(
            "float", 1.0,
            "Share of channels to ablate: 1 ablates all (one pass each). Below 1 is pytorch-grad-cam's experimental "
            "speed-up: the int(share·C) channels most inside the Eigen-CAM mask and the int(share·C) least inside "
            "it are ablated (so 0.5 or more ablates all), every other channel gets weight 0. Fewer passes, a "
            "map with channels missing.",
            minimum=0.0, maximum=1.0,
        ),
        "precision": precision_param(ABLATION_BFLOAT16),
    },
    # the clean pass that captures the layer, then one pass per ablated channel (all of them at the default ratio)
    cost=Cost(fixed=(1, 0), per_channel=(1, 0)),
    requires=LAYER,
    attribution_channels=1,
)
def ablationcam(call, inputs, relu=True, ratio_channels_to_ablate=1.0, precision=FLOAT32):
    """Desai & Ramaswamy 2020, WACV. Gradient-free and batched over (row, channel) pairs; every target is scored
    from the same ablated passes.

    A forward hook replaces the layer's output by ablated copies, so only the network after the layer runs once
    per channel: the part before it runs once per batch of one row's copies, where the model allows. Channels
    that are all zero on a row whose activations are ≥ 0 are not run: ablating them changes nothing, their
    weight is 0. The layer is captured on the model itself; the ablated passes run on its folded copy
    (``explainers.folding``, the layer kept at its path), in ``precision``, and so does the clean score they are
    compared with, so that a channel whose ablation changes nothing gets the same rounding as the clean pass.
    """
    captured = capture(call, inputs, gradients=False)
    activations, logits = captured.activations, captured.logits
    n, c = activations.shape[:2]
    chosen = channels_to_ablate(activations, float(ratio_channels_to_ablate))
    flat = activations.flatten(2)
    # ablating these to 0 changes nothing; judged on maps only (a class token, left out of them, may go below 0)
    silent = (flat == 0).all(dim=2) & (flat.flatten(1).amin(dim=1) == 0).unsqueeze(1)
    if call.layer.layout not in ("nchw", "nhwc"):
        silent.zero_()
    run = chosen & ~silent
    job_rows, job_channels = torch.nonzero(run, as_tuple=True)  # row-major
    per_row = run.sum(dim=1).tolist()  # the one wait: how many passes each row makes
    total = len(job_rows)
    fast = fast_call(call, inputs, total, precision, keep_layer=True)
    # copies made after the layer cost only the part of the pass after it: where no one asked for a batch size,
    # as many as that part allows once the model is seen to take them (measured before the hook is in place)
    wide_size = (default_batch_size(call.device, True, model=call.model, inputs=inputs, after=call.layer_module)
                 if call.batches.automatic and total else 0)
    channel_dim = 1 if call.layer.layout == "nchw" else -1
    ablation = _Ablation(channel_dim)
    handle = fast.layer_module.register_forward_hook(ablation)
    try:
        clean = call.scores(logits if fast is call else fast.predict(inputs), torch.arange(n))  # [T, N]
        ablated = clean.unsqueeze(2).expand(-1, -1, c).clone()  # [T, N, C]; channels not run keep the clean score
        # the part before the layer runs once per batch on one row, its copies made after it; a model that fixes
        # the batch size there (a reshape to the row count it read first) fails on the first batch and gets
        # full copies from then on (a kept tensor, a skip connection, broadcasts from one row: same values)
        shared = [True]
        ends = torch.tensor(per_row, dtype=torch.long).cumsum(0).tolist()
        segments = list(zip([0, *ends[:-1]], ends))  # segment i: row i's copies

        def ablated_scores(start, stop, row):
            rows, channels = job_rows[start:stop], job_channels[start:stop]
            ablation.channels = channels
            with torch.inference_mode():
                if shared[0]:
                    ablation.source = torch.zeros(stop - start, dtype=torch.long)
                    try:
                        scored = as_logits(forward(fast.model, inputs[row : row + 1]))
                        if scored.shape == (stop - start, logits.shape[1]):
                            return call.scores(scored, rows.cpu())
                    except torch.cuda.OutOfMemoryError:
                        raise
                    except Exception:  # noqa: BLE001  (full copies below repeat any error that is the model's own)
                        pass
                    shared[0] = False
                ablation.source = torch.arange(stop - start)
                scored = as_logits(forward(fast.model, inputs[row : row + 1].expand(stop - start, *inputs.shape[1:])))
                return call.scores(scored, rows.cpu())

        wide, decided = None, False
        for row, (begin, end) in enumerate(segments):
            done = begin
            while done < end:
                batches = wide or call.batches
                for start, stop, scores in batches.run(
                    end - done, lambda start, stop, done=done, row=row: ablated_scores(done + start, done + stop, row)
                ):
                    ablated[:, job_rows[done + start : done + stop], job_channels[done + start : done + stop]] = (
                        scores.to(ablated.dtype))
                    call.progress.advance(stop - start)
                    if not decided:  # the first batch said whether the model takes copies after the layer
                        decided = True
                        if shared[0] and wide_size > call.batches.size:
                            wide = Batches(wide_size, call.device)
                            done += stop
                            break
                else:
                    done = end
    finally:
        handle.remove()
    if n * c > total:
        call.progress.advance(n * c - total)  # the channels not run
    # a score of 0 leaves nothing to take a share of: those weights are 0 (pytorch-grad-cam gives NaN)
    weights = _ratio(clean.unsqueeze(2) - ablated, clean.unsqueeze(2).expand_as(ablated))
    layer_maps = torch.einsum("tnc,nchw->tnhw", weights, activations)
    result = finish(inputs, layer_maps, relu, logits)
    result.extras = [{"ablated_channels": total, "channels": n * c} for _ in call.targets]
    return result
