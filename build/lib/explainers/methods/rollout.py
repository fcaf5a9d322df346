"""Attention rollout for vision transformers."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..core import Attribution, as_logits
from ..errors import SaliencyError
from ..hooks import HookSet
from ..registry import FORWARD_ONLY, NEEDS_ATTENTION, NEEDS_MODEL, Param, Reference, Sanity, register

ABNAR = Reference("Abnar & Zuidema", 2020, "Quantifying Attention Flow in Transformers", "2005.00928")


def _attention_modules(model: nn.Module) -> list[nn.MultiheadAttention]:
    return [m for m in model.modules() if isinstance(m, nn.MultiheadAttention)]


def _fuse(weights: torch.Tensor, head_fusion: str) -> torch.Tensor:
    if head_fusion == "mean":
        return weights.mean(dim=1)
    if head_fusion == "max":
        return weights.amax(dim=1)
    return weights.amin(dim=1)


def _discard(attention: torch.Tensor, ratio: float) -> torch.Tensor:
    """Zero the weakest ``ratio`` of each matrix's entries, keeping attention to the class token."""
    if ratio <= 0:
        return attention
    n, t, _ = attention.shape
    flat = attention.reshape(n, -1).clone()
    count = int(flat.shape[1] * ratio)
    if count == 0:
        return attention
    _, weakest = flat.topk(count, dim=1, largest=False)
    keep_cls = (weakest % t) == 0  # column 0: attention paid to the class token
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
        "to estimate how much each patch flows into the class token."
    ),
    weaknesses=(
        "Class-agnostic: the target class does not change it. Only for ViT-style models with a class token and "
        "global attention (not Swin). Ignores the MLPs and value vectors."
    ),
    formula="R = Π_l (0.5·Ā_l + 0.5·I) (rows renormalised), map = R[cls, patches]",
    sanity=Sanity.CLASS_INSENSITIVE,
    class_sensitive=False,
    requires=frozenset({NEEDS_MODEL, NEEDS_ATTENTION}),
    params={
        "head_fusion": Param(
            "choice", "mean", "How the heads of a layer are combined.", choices=("mean", "max", "min")
        ),
        "discard_ratio": Param("float", 0.9, "Fraction of the weakest attention weights dropped per layer "
                               "(never those to the class token).", minimum=0.0, maximum=0.99),
    },
    cost=FORWARD_ONLY,
    attribution_channels=1,
)
def attention_rollout(call, inputs, head_fusion="mean", discard_ratio=0.9):
    """Abnar & Zuidema 2020, arXiv:2005.00928. Attention weights are requested from each
    nn.MultiheadAttention inside the call (hooks removed in finally)."""
    modules = _attention_modules(call.model)
    if not modules:
        raise SaliencyError(
            "attention rollout needs a vision transformer with nn.MultiheadAttention blocks (e.g. vit_b_16); "
            "this model has none. Pick a gradient or CAM method"
        )
    hooks = HookSet()
    captured: list[torch.Tensor] = []

    def ask_for_weights(module, args, kwargs):
        kwargs = dict(kwargs)
        kwargs["need_weights"] = True
        kwargs["average_attn_weights"] = False
        return args, kwargs

    def keep_weights(module, args, kwargs, output):
        captured.append(output[1].detach())

    maps, logits = [], []
    try:
        for module in modules:
            hooks.add(module.register_forward_pre_hook(ask_for_weights, with_kwargs=True))
            hooks.add(module.register_forward_hook(keep_weights, with_kwargs=True))

        def forward(start, stop):
            captured.clear()
            with torch.inference_mode():
                return as_logits(call.model(inputs[start:stop]))

        for start, stop, batch_logits in call.batches.run(len(inputs), forward):
            logits.append(batch_logits)
            tokens = captured[0].shape[-1]
            grid = int(round((tokens - 1) ** 0.5))
            if grid * grid != tokens - 1:
                raise SaliencyError(
                    f"attention rollout expects a class token plus a square grid of patches; got {tokens} tokens"
                )
            eye = torch.eye(tokens, device=inputs.device, dtype=captured[0].dtype)
            rollout = eye.expand(stop - start, tokens, tokens)
            for weights in captured:
                attention = _discard(_fuse(weights, head_fusion), discard_ratio)
                attention = 0.5 * attention + 0.5 * eye
                attention = attention / attention.sum(dim=-1, keepdim=True)
                rollout = attention @ rollout
            patch_flow = rollout[:, 0, 1:].reshape(-1, 1, grid, grid)
            maps.append(patch_flow)
            call.progress.advance(stop - start)
    finally:
        hooks.remove()
        captured.clear()
    layer_map = torch.cat(maps).to(inputs.dtype)
    upsampled = F.interpolate(layer_map, size=inputs.shape[-2:], mode="bilinear", align_corners=False)
    count = len(call.targets)  # class-agnostic: every target gets the same map
    return Attribution(upsampled.unsqueeze(0).expand(count, *upsampled.shape),
                       layer_attribution=layer_map.unsqueeze(0).expand(count, *layer_map.shape),
                       logits=torch.cat(logits))
