"""The attention catalogue: every family's attention written out gives the model's own output, and the token
layout (class, distillation and register tokens, the patch grid, Swin's windows, the read-out tokens) is found
from the forward, for seeded models built from configs (no weights are downloaded)."""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn
from torchvision.models import resnet18
from torchvision.models.swin_transformer import SwinTransformer

from explainers.attention import attention_probabilities, find_layout, has_attention, patch_map
from explainers.errors import SaliencyError

from .helpers import tiny_hugging_face_vit, tiny_torchvision_vit

TINY = {"img_size": 32, "patch_size": 8, "depth": 2, "embed_dim": 16, "num_heads": 2, "num_classes": 5}


def torchvision_vit():
    return tiny_torchvision_vit(2, head_std=0.1)


def torchvision_swin():
    return SwinTransformer(patch_size=[4, 4], embed_dim=16, depths=[2, 2], num_heads=[2, 2], window_size=[4, 4],
                           num_classes=5)


def hugging_face_vit(implementation):
    return tiny_hugging_face_vit(2, implementation, logits=False)


# (builder, tokens before the patches, read-out tokens, windowed attentions)
FAMILIES = {
    "torchvision_vit": (torchvision_vit, 1, (0,), 0),
    "torchvision_swin": (torchvision_swin, 0, tuple(range(16)), 2),
    "timm_vit": (lambda: timm.create_model("vit_tiny_patch16_224", **TINY), 1, (0,), 0),
    "timm_vit_registers": (lambda: timm.create_model("vit_small_patch16_224", reg_tokens=4, no_embed_class=True,
                                                     **TINY), 5, (0,), 0),
    "timm_vit_average_pool": (lambda: timm.create_model("vit_tiny_patch16_224", global_pool="avg",
                                                        class_token=False, **TINY), 0, tuple(range(16)), 0),
    "timm_vit_attention_pool": (lambda: timm.create_model("vit_tiny_patch16_224", global_pool="map",
                                                          class_token=False, **TINY), 0, tuple(range(16)), 0),
    "timm_deit_distilled": (lambda: timm.create_model("deit_tiny_distilled_patch16_224", **TINY), 2, (0, 1), 0),
    "timm_beit": (lambda: timm.create_model("beit_base_patch16_224", **TINY), 1, tuple(range(1, 17)), 0),
    "timm_swin": (lambda: timm.create_model("swin_tiny_patch4_window7_224", img_size=32, patch_size=4, window_size=4,
                                            depths=(2, 2), num_heads=(2, 2), embed_dim=16, num_classes=5), 0,
                  tuple(range(16)), 2),
    "hugging_face_vit_eager": (lambda: hugging_face_vit("eager"), 1, (0,), 0),
    "hugging_face_vit_sdpa": (lambda: hugging_face_vit("sdpa"), 1, (0,), 0),
}


def logits_of(output):
    return output.logits if hasattr(output, "logits") else output


@pytest.mark.parametrize("family", FAMILIES)
def test_every_familys_attention_written_out_gives_the_models_own_output_and_its_layout(family):
    build, prefix, readout, windowed = FAMILIES[family]
    torch.manual_seed(0)
    model = build().eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        reference = logits_of(model(x))
        with attention_probabilities() as kept:
            written_out = logits_of(model(x))
    torch.testing.assert_close(written_out, reference, atol=1e-5, rtol=1e-5)
    assert kept and all(p.dim() == 4 for p in kept)
    torch.testing.assert_close(kept[-1].sum(-1), torch.ones_like(kept[-1].sum(-1)))  # rows of probabilities
    assert has_attention(model)
    layout = find_layout(model, x)
    assert layout.prefix == prefix and layout.grid == (4, 4)
    assert layout.readout == readout
    assert sum(site.windows > 1 for site in layout.sites) == windowed
    assert len(layout.global_sites) == 2  # an attention-pooling head's cross-attention is not one of them
    assert all(layout.sites[i].tokens == prefix + 16 for i in layout.global_sites)


def test_the_explicit_attention_keeps_gradients_with_respect_to_the_probabilities():
    torch.manual_seed(0)
    model = torchvision_vit().eval()
    x = torch.randn(2, 3, 32, 32)
    with attention_probabilities() as kept:
        score = model(x)[:, 1].sum()
    gradients = torch.autograd.grad(score, kept)
    assert all(g.shape == p.shape for g, p in zip(gradients, kept, strict=True))
    assert gradients[-1][:, :, 0].abs().sum() > 0  # the class token's row reaches the head
    assert gradients[-1][:, :, 1:].abs().sum() == 0  # the other rows of the last layer do not


def test_patch_map_drops_the_tokens_before_the_patches():
    torch.manual_seed(0)
    model = timm.create_model("deit_tiny_distilled_patch16_224", **TINY).eval()
    layout = find_layout(model, torch.randn(1, 3, 32, 32))
    values = torch.arange(18.0).unsqueeze(0)
    grid = patch_map(values, layout.sites[layout.global_sites[-1]])
    assert grid.shape == (1, 1, 4, 4) and grid[0, 0, 0, 0] == 2 and grid[0, 0, -1, -1] == 17


def test_convolutional_models_and_plain_mlps_have_no_attention():
    assert not has_attention(resnet18(num_classes=3))
    assert not has_attention(nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8)))
    assert not has_attention(None)
    layout = find_layout(resnet18(num_classes=3).eval(), torch.randn(1, 3, 32, 32))
    assert layout.sites == () and layout.global_sites == ()
    with pytest.raises(SaliencyError, match="computes no attention"):
        layout.require_global("LeGrad")


def test_swin_at_a_size_where_every_stage_is_windowed_is_refused_naming_the_windows():
    torch.manual_seed(0)
    model = torchvision_swin().eval()
    layout = find_layout(model, torch.randn(1, 3, 64, 64))  # last stage 8x8 tokens in four 4x4 windows
    assert layout.global_sites == ()
    with pytest.raises(SaliencyError, match=r"over windows \(up to \d+ per image\)"):
        layout.require_global("Transformer attribution")


def test_a_frozen_model_in_mixed_modes_gets_its_read_out_found_and_is_left_as_it_was():
    """The layout's gradient needs no trainable parameter and no grad mode; every module keeps its own flag."""
    torch.manual_seed(0)
    model = timm.create_model("beit_base_patch16_224", **TINY).eval()
    model.requires_grad_(False)
    model.blocks[1].train()
    with torch.inference_mode():
        x = torch.randn(1, 3, 32, 32)
        layout = find_layout(model, x)
    assert layout.readout == tuple(range(1, 17))  # BEiT averages its patches; a guess would say the class token
    assert model.blocks[1].training and not model.training and not model.blocks[0].training
    assert not any(p.requires_grad for p in model.parameters())
