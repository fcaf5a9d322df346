"""Attention rollout (Abnar & Zuidema 2020, arXiv:2005.00928) on every family with global attention: the same map
as a plain rollout written here over the attention each library itself reports (nn.MultiheadAttention's weights,
timm's attention dropout input, Hugging Face's output_attentions), with the right tokens kept and read out."""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn
from torchvision.models import VisionTransformer
from torchvision.models.swin_transformer import SwinTransformer

from explainers import SaliencyError, explain

from ..helpers import HuggingFaceLogits, hook_counts, snapshot, tiny_hugging_face_vit, tiny_torchvision_vit

TINY = {"img_size": 32, "patch_size": 8, "depth": 3, "embed_dim": 16, "num_heads": 2, "num_classes": 5}


def torchvision_vit():
    return tiny_torchvision_vit(3, head_std=None)  # rollout reads no gradient: the zero head is kept


def hugging_face_vit():
    return tiny_hugging_face_vit(3, "eager")


# (builder, tokens before the patches, tokens the head reads)
FAMILIES = {
    "torchvision_vit": (torchvision_vit, 1, (0,)),
    "timm_vit": (lambda: timm.create_model("vit_tiny_patch16_224", **TINY), 1, (0,)),
    "timm_vit_registers": (lambda: timm.create_model("vit_small_patch16_224", reg_tokens=4, no_embed_class=True,
                                                     **TINY), 5, (0,)),
    "timm_deit_distilled": (lambda: timm.create_model("deit_tiny_distilled_patch16_224", **TINY), 2, (0, 1)),
    "timm_beit": (lambda: timm.create_model("beit_base_patch16_224", **TINY), 1, tuple(range(1, 17))),
    "hugging_face_vit": (hugging_face_vit, 1, (0,)),
}


def library_attention(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Each layer's attention [N, heads, T, T] as the library itself reports it."""
    if isinstance(model, HuggingFaceLogits):
        with torch.no_grad():
            return list(model.hf(x, output_attentions=True).attentions)
    found = []
    if isinstance(model, VisionTransformer):
        modules = [m for m in model.modules() if isinstance(m, nn.MultiheadAttention)]

        def ask(module, args, kwargs):
            return args, {**kwargs, "need_weights": True, "average_attn_weights": False}

        def keep(module, args, kwargs, output):
            found.append(output[1])

        handles = [h for m in modules for h in (m.register_forward_pre_hook(ask, with_kwargs=True),
                                                m.register_forward_hook(keep, with_kwargs=True))]
    else:  # timm: the unfused path hands its probabilities to the attention dropout
        blocks = [m for m in model.modules() if hasattr(m, "attn_drop") and hasattr(m, "fused_attn")]
        fused = [m.fused_attn for m in blocks]
        for m in blocks:
            m.fused_attn = False
        handles = [m.attn_drop.register_forward_hook(lambda mod, args, out: found.append(out)) for m in blocks]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
        if not isinstance(model, VisionTransformer):
            for m, flag in zip(blocks, fused, strict=True):
                m.fused_attn = flag
    return found


def plain_rollout(attentions, prefix, readout, discard_ratio, grid=(4, 4)):
    """Abnar & Zuidema's rollout, one image at a time, heads averaged; the discard keeps the prefix columns."""
    maps = []
    for row in range(attentions[0].shape[0]):
        tokens = attentions[0].shape[-1]
        rollout = torch.eye(tokens)
        for attention in attentions:
            mixed = attention[row].mean(dim=0)
            drop = int(mixed.numel() * discard_ratio)
            if drop:
                flat = mixed.flatten().clone()
                weakest = flat.argsort()[:drop]
                weakest = weakest[weakest % tokens >= prefix]
                flat[weakest] = 0
                mixed = flat.view(tokens, tokens)
            mixed = 0.5 * mixed + 0.5 * torch.eye(tokens)
            rollout = (mixed / mixed.sum(dim=-1, keepdim=True)) @ rollout
        maps.append(rollout[list(readout)].mean(dim=0)[prefix:].reshape(grid))
    return torch.stack(maps)


@pytest.mark.parametrize("discard_ratio", [0.0, 0.5])
@pytest.mark.parametrize("family", FAMILIES)
def test_rollout_over_each_librarys_own_attention(family, discard_ratio):
    build, prefix, readout = FAMILIES[family]
    torch.manual_seed(0)
    model = build().eval()
    torch.manual_seed(1)
    x = torch.randn(2, 3, 32, 32)
    expected = plain_rollout(library_attention(model, x), prefix, readout, discard_ratio)
    # Hugging Face adds hooks of its own the first time it is asked for its attentions
    before, hooks = snapshot(model), hook_counts(model)
    ours = explain(model, x, "attention_rollout", target=0, discard_ratio=discard_ratio, batch_size=1)
    torch.testing.assert_close(ours.layer_attribution[:, 0], expected, atol=1e-6, rtol=1e-4)
    assert ours.attribution.shape == (2, 1, 32, 32)
    assert hook_counts(model) == hooks and not any(m.training for m in model.modules())
    assert all(torch.equal(value, model.state_dict()[key]) for key, value in before.items())


def test_swin_is_refused_naming_its_windows():
    torch.manual_seed(0)
    swin = SwinTransformer(patch_size=[4, 4], embed_dim=16, depths=[2, 2], num_heads=[2, 2], window_size=[4, 4],
                           num_classes=5).eval()
    with pytest.raises(SaliencyError, match=r"every attention spans the whole patch grid.*windows"):
        explain(swin, torch.randn(1, 3, 32, 32), "attention_rollout", target=0)
