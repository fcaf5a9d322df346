"""Chefer, Gur & Wolf's relevance for transformers: the attention of every global block weighted by its gradient
(generic attention explainability) or by its gradient and its LRP relevance (transformer attribution), rolled out
through the residual stream.

Both share one aggregation: for each global block b in order, Ā_b = E_heads[(∇A_b ⊙ W_b)⁺] (the positive part of
the gradient-weighted attention, averaged over the heads) and R ← R + Ā_b · R from R = I; the map is R's rows of the
read-out tokens (class token; class and distillation tokens; every patch for an average-pooled head) over the patch
grid. They differ in W_b: the attention probabilities A_b themselves (arXiv:2103.15679) or their LRP relevance R_{A_b}
(arXiv:2012.09838). The attention, its layout and its gradients come from :mod:`explainers.attention`: no module is
named, so torchvision, timm and Hugging Face transformers all work, and Swin where its last stage is one window.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..attention import TokenLayout, attention_probabilities, find_layout, patch_map
from ..core import Attribution, Call, as_logits
from ..errors import SaliencyError
from ..lrp import attention_lrp, stabilize, transformer_uncovered
from ..lrp.rules import DEFAULT_STABILIZER
from ..registry import NEEDS_ATTENTION, NEEDS_MODEL, ONE_PASS, Cost, Reference, Sanity, TextUse, register

GENERIC = Reference(
    "Chefer, Gur & Wolf", 2021,
    "Generic Attention-model Explainability for Interpreting Bi-Modal and Encoder-Decoder Transformers", "2103.15679",
)
BEYOND = Reference(
    "Chefer, Gur & Wolf", 2021, "Transformer Interpretability Beyond Attention Visualization", "2012.09838",
)

# (batch [B, C, H, W], its target rows [B]) -> for each target, what weighs each global block's gradient: the LRP
# relevance at its probabilities (transformer attribution); None weighs by the probabilities themselves (generic)
Weighing = Callable[[torch.Tensor, torch.Tensor], list[list[torch.Tensor]]]


def head_mean(gradient: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Ā = E_heads[(∇A ⊙ W)⁺]: [B, heads, T, T] twice -> [B, T, T]."""
    return (gradient * weight).clamp_min(0).mean(dim=1)


def roll_out(contributions: list[torch.Tensor]) -> torch.Tensor:
    """R = I, then R ← R + Ā_b · R for each block's Ā_b [B, T, T] in order (the residual keeps each token's own
    relevance, the attention mixes in the others'): [B, T, T]."""
    first = contributions[0]
    relevance = torch.eye(first.shape[-1], dtype=first.dtype, device=first.device).expand_as(first)
    for contribution in contributions:
        relevance = relevance + contribution @ relevance
    return relevance


def readout_map(relevance: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
    """The read-out tokens' rows of R [B, T, T] (their mean where the head reads several), over the patch grid:
    [B, 1, h, w]."""
    rows = relevance[:, list(layout.readout)].mean(dim=1)
    return patch_map(rows, layout.sites[layout.global_sites[-1]])


def global_probabilities(kept: list[torch.Tensor], layout: TokenLayout, method: str) -> list[torch.Tensor]:
    """The probabilities of the layout's global attentions among those one forward kept, in block order."""
    if len(kept) != len(layout.sites):
        raise SaliencyError(f"{method}: this batch's forward computed {len(kept)} attentions where the layout "
                            f"found {len(layout.sites)} ({layout.describe()}); the model's forward changes with its "
                            "input, which this method cannot follow. Pick a gradient method")
    return [kept[i] for i in layout.global_sites]


def relevance_maps(call: Call, inputs: torch.Tensor, method: str, weighing: Weighing | None = None,
                   passes: int = 1) -> Attribution:
    """The rolled-out relevance of every target, batched: one forward, one backward per target for the gradients
    w.r.t. the global attentions; ``weighing`` (None: the probabilities) may run passes of its own, ``passes`` in
    all per row counting the gradient's."""
    layout = find_layout(call.model, inputs)
    layout.require_global(method)
    count = len(call.targets)

    def compute(start, stop):
        rows = torch.arange(start, stop)
        # first, so that its graph is gone before the gradient's is built
        weights = None if weighing is None else weighing(inputs[start:stop], rows)
        batch = inputs[start:stop].detach().requires_grad_(True)  # the graph exists even for a frozen model
        with torch.enable_grad():
            with attention_probabilities() as kept:
                logits = as_logits(call.model(batch))
            probabilities = global_probabilities(kept, layout, method)
            scores = call.scores(logits, rows)
            maps = []
            for t in range(count):
                gradients = torch.autograd.grad(scores[t].sum(), probabilities, retain_graph=t < count - 1)
                weighed = [p.detach() for p in probabilities] if weights is None else weights[t]
                contributions = [head_mean(g.float(), w.float()) for g, w in zip(gradients, weighed, strict=True)]
                maps.append(readout_map(roll_out(contributions), layout))
        return torch.stack(maps).to(inputs.dtype), logits.detach()

    maps, logits = [], []
    for start, stop, (batch_maps, batch_logits) in call.batches.run(len(inputs), compute):
        maps.append(batch_maps)
        logits.append(batch_logits)
        for _ in range(passes):  # one report per pass through the rows, so each report is at most a batch
            call.progress.advance(stop - start)
    layer_map = torch.cat(maps, dim=1)
    count, rows = layer_map.shape[:2]
    upsampled = F.interpolate(layer_map.flatten(0, 1), size=inputs.shape[-2:], mode="bilinear", align_corners=False)
    return Attribution(upsampled.reshape(count, rows, *upsampled.shape[1:]), layer_attribution=layer_map,
                       logits=torch.cat(logits))


@register(
    "chefer_generic",
    display_name="Generic attention explainability",
    family="Attention",
    reference=GENERIC,
    summary=(
        "Weighs each attention map by its gradient for the target class, keeps the positive part averaged over the "
        "heads, and rolls it out through the blocks with the residual (R ← R + Ā·R): how much each patch flows "
        "into the class token, for this class. One forward and one backward pass."
    ),
    weaknesses=(
        "Sees only the attention (the MLPs and value vectors enter only through the gradient); the map is at the "
        "patch grid's resolution. Needs attention over the whole grid (every ViT, DeiT, BEiT block; Swin only "
        "where its last stage is one window)."
    ),
    formula="R = I; for each block: Ā = E_h[(∇A ⊙ A)⁺], R ← R + Ā·R; map = R[read-out, patches]",
    sanity=Sanity.UNTESTED,
    sanity_note=(
        "measured here on vit_digits (a digit, all 4 cascade steps): passes model randomisation on every "
        "measure (Spearman 0.04), class-sensitive (4/4), input invariant"
    ),
    class_sensitive=True,
    requires=frozenset({NEEDS_MODEL, NEEDS_ATTENTION}),
    cost=ONE_PASS,
    attribution_channels=1,
    text=TextUse(reduction="map", note="Every token is one \"patch\"; the map is the row of the token the classifier "
                 "reads ([CLS] for BERT-style encoders). The paper's own examples include BERT text classification."),
)
def chefer_generic(call, inputs):
    """Chefer, Gur & Wolf 2021, arXiv:2103.15679 (self-attention rule: R ← R + Ā·R, Ā = E_h[(∇A ⊙ A)⁺])."""
    return relevance_maps(call, inputs, "Generic attention explainability")



def lrp_at_attention(call: Call, layout: TokenLayout, method: str) -> Weighing:
    """For a batch, each target's AttnLRP relevance at the global attentions' probabilities, R_A = A ⊙ ∂/∂A in the
    LRP backward, from one LRP forward (a backward per target).

    The relevance starts at the target's score with size 1, as the authors' relprop starts from a one-hot vector
    (the engine starts from the score itself), and with the score's sign: AttnLRP's ε rules are signed, so
    relevance then means a share of the score (what raises it is positive), as under the authors' α1β0 rules; a
    plain 1 at a negative score would make what lowers it relevant, and clip the map to nothing."""

    def weigh(inputs: torch.Tensor, rows: torch.Tensor) -> list[list[torch.Tensor]]:
        batch = inputs.detach().requires_grad_(True)
        count = len(call.targets)
        with torch.enable_grad(), attention_lrp(call.model), attention_probabilities() as kept:
            scores = call.scores(as_logits(call.model(batch)), rows)
            probabilities = global_probabilities(kept, layout, method)
            relevance = []
            for t in range(count):
                start = 1 / stabilize(scores[t].detach(), DEFAULT_STABILIZER).abs()  # relevance sign(score)
                gradients = torch.autograd.grad(scores[t], probabilities, grad_outputs=start,
                                                retain_graph=t < count - 1)
                relevance.append([(p * g).detach() for p, g in zip(probabilities, gradients, strict=True)])
        return relevance

    return weigh


@register(
    "transformer_attribution",
    display_name="Transformer attribution",
    family="Attention",
    reference=BEYOND,
    summary=(
        "Weighs each attention map by its gradient and by its LRP relevance for the target class (AttnLRP's rules), "
        "keeps the positive part averaged over the heads, and rolls it out through the blocks with the residual "
        "(R ← R + Ā·R). Two forward and two backward passes: the gradient's and the relevance's."
    ),
    weaknesses=(
        "The relevance comes from AttnLRP (Achtibat et al. 2024, arXiv:2402.05602), not the paper's own LRP rules "
        "(α1β0 on linear layers), so maps differ from the authors' code in detail; the map is at the patch grid's "
        "resolution. Needs attention over the whole grid and layers AttnLRP has rules for."
    ),
    formula="R = I; for each block: Ā = E_h[(∇A ⊙ R_A)⁺] (R_A: LRP relevance at A), R ← R + Ā·R; "
            "map = R[read-out, patches]",
    sanity=Sanity.UNTESTED,
    sanity_note=(
        "measured here on vit_digits (a digit, all 4 cascade steps): passes model randomisation on every "
        "measure (Spearman 0.02), class-sensitive (4/4), input invariant"
    ),
    class_sensitive=True,
    requires=frozenset({NEEDS_MODEL, NEEDS_ATTENTION}),
    cost=Cost(fixed=(2, 2)),  # the gradient's pass and the relevance's
    attribution_channels=1,
    model_check=transformer_uncovered,
    text=TextUse(reduction="map", note="Every token is one \"patch\"; the map is the row of the token the classifier "
                 "reads ([CLS] for BERT-style encoders), as the paper ran it on BERT (ERASER's movie reviews); the "
                 "relevance at the attention comes from AttnLRP's rules for BERT."),
)
def transformer_attribution(call, inputs):
    """Chefer, Gur & Wolf 2021, arXiv:2012.09838: Ā = E_h[(∇A ⊙ R_A)⁺], rolled out as R ← R + Ā·R."""
    method = "Transformer attribution"
    layout = find_layout(call.model, inputs)
    layout.require_global(method)
    return relevance_maps(call, inputs, method, lrp_at_attention(call, layout, method), passes=2)
