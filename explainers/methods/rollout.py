"""Attention rollout for vision transformers (every family whose attention spans the whole patch grid) and text
encoders (every token a patch of a 1 × L grid, read at [CLS])."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..attention import attention_probabilities, find_layout, patch_map
from ..core import Attribution, as_logits
from ..errors import SaliencyError
from ..registry import (
    FORWARD_ONLY,
    NEEDS_ATTENTION,
    NEEDS_MODEL,
    TEXT,
    Param,
    Reference,
    Sanity,
    TextUse,
    modality_of,
    register,
)

ABNAR = Reference("Abnar & Zuidema", 2020, "Quantifying Attention Flow in Transformers", "2005.00928")


def _fuse(weights: torch.Tensor, head_fusion: str) -> torch.Tensor:
    if head_fusion == "mean":
        return weights.mean(dim=1)
    if head_fusion == "max":
        return weights.amax(dim=1)
    return weights.amin(dim=1)


def _discard(attention: torch.Tensor, ratio: float, kept: torch.Tensor) -> torch.Tensor:
    """Zero the weakest ``ratio`` of each matrix's entries, keeping attention paid to the ``kept`` tokens (bool
    [T]: an image's class, distillation and register tokens; a text's read-out token, [CLS])."""
    if ratio <= 0:
        return attention
    n, t, _ = attention.shape
    flat = attention.reshape(n, -1).clone()
    count = int(flat.shape[1] * ratio)
    if count == 0:
        return attention
    _, weakest = flat.topk(count, dim=1, largest=False)
    keep_cls = kept[weakest % t]  # the columns of the kept tokens: attention paid to them
    flat.scatter_(1, weakest, torch.where(keep_cls, flat.gather(1, weakest), torch.zeros_like(weakest,
                                                                                              dtype=flat.dtype)))
    return flat.reshape(n, t, t)


@register(
    "attention_rollout",
    display_name="Attention rollout",
    family="Attention",
    reference=ABNAR,
    summary=(
        "Multiplies the attention matrices of all layers (each mixed with the identity for the residual path) "
        "to estimate how much each patch flows into the tokens the head reads (the class token; a DeiT's class "
        "and distillation tokens; every patch of an average-pooled head)."
    ),
    weaknesses=(
        "Class-agnostic: the target class does not change it. Only for transformers whose every attention spans "
        "the whole patch grid (ViT, DeiT, BEiT; not Swin's windows). Ignores the MLPs and value vectors."
    ),
    formula="R = Π_l (0.5·Ā_l + 0.5·I) (rows renormalised), map = mean_{r ∈ readout} R[r, patches]",
    sanity=Sanity.CLASS_INSENSITIVE,
    class_sensitive=False,
    requires=frozenset({NEEDS_MODEL, NEEDS_ATTENTION}),
    params={
        "head_fusion": Param(
            "choice", "mean", "How the heads of a layer are combined.", choices=("mean", "max", "min")
        ),
        "discard_ratio": Param("float", 0.9, "Fraction of the weakest attention weights dropped per layer "
                               "(never those to the class and other prefix tokens).", minimum=0.0, maximum=0.99),
    },
    cost=FORWARD_ONLY,
    attribution_channels=1,
    text=TextUse(
        params={"discard_ratio": Param(
            "float", 0.0, "Fraction of the weakest attention weights dropped per layer (never those to the read-out "
            "token, [CLS]). 0 on text, as Abnar & Zuidema ran it on BERT: a sentence's attention matrix has few "
            "entries, and dropping most of them leaves almost none.", minimum=0.0, maximum=0.99)},
        reduction="map",
        note="Every token is one \"patch\": the attention of all layers, mixed with the identity for the residual, "
             "multiplied through, and read at the token the classifier reads ([CLS] for BERT-style encoders). "
             "Class-agnostic: the target does not change it, and attention alone is not an explanation "
             "(Jain & Wallace 2019, arXiv:1902.10186)."),
)
def attention_rollout(call, inputs, head_fusion="mean", discard_ratio=0.9):
    """Abnar & Zuidema 2020, arXiv:2005.00928. The attention probabilities come from the forward itself
    (:func:`explainers.attention.attention_probabilities`), the token layout from :func:`find_layout`: the
    product runs over the global attentions, the map is the read-out tokens' rows averaged, prefix dropped."""
    layout = find_layout(call.model, inputs)
    sites = layout.require_global("attention rollout")
    if len(sites) != len(layout.sites):
        # windowed stages mix tokens locally and patch merging changes the tokens between stages: a product of
        # attention matrices through them is not defined
        raise SaliencyError(
            "attention rollout multiplies every layer's attention, so it needs a vision transformer whose every "
            f"attention spans the whole patch grid (ViT, DeiT, BEiT); this model has {layout.describe()}. Pick "
            "LeGrad (it reads the global blocks only) or a CAM on tokens")
    last = layout.sites[sites[-1]]
    readout = torch.tensor(layout.readout, device=inputs.device)
    # the columns never discarded: the tokens before the patches (class, distillation, register); on text, where
    # [CLS] is one of the tokens, the read-out ones
    kept = torch.zeros(last.tokens, dtype=torch.bool, device=inputs.device)
    kept[: last.prefix] = True
    if modality_of(call.model) == TEXT:
        kept[readout] = True
    maps, logits = [], []

    def forward(start, stop):
        with torch.inference_mode(), attention_probabilities() as kept:
            batch_logits = as_logits(call.model(inputs[start:stop]))
        return batch_logits, [kept[i] for i in sites]

    for start, stop, (batch_logits, weights) in call.batches.run(len(inputs), forward):
        logits.append(batch_logits)
        tokens = last.tokens
        eye = torch.eye(tokens, device=inputs.device, dtype=weights[0].dtype)
        rollout = eye.expand(stop - start, tokens, tokens)
        for attention in weights:
            attention = _discard(_fuse(attention, head_fusion), discard_ratio, kept)
            attention = 0.5 * attention + 0.5 * eye
            attention = attention / attention.sum(dim=-1, keepdim=True)
            rollout = attention @ rollout
        flow = rollout.index_select(1, readout).mean(dim=1)  # [B, tokens]: into the tokens the head reads
        maps.append(patch_map(flow, last))
        call.progress.advance(stop - start)
    layer_map = torch.cat(maps).to(inputs.dtype)
    upsampled = F.interpolate(layer_map, size=inputs.shape[-2:], mode="bilinear", align_corners=False)
    count = len(call.targets)  # class-agnostic: every target gets the same map
    return Attribution(upsampled.unsqueeze(0).expand(count, *upsampled.shape),
                       layer_attribution=layer_map.unsqueeze(0).expand(count, *layer_map.shape),
                       logits=torch.cat(logits))
