"""LeGrad (Bousselham et al. 2024, arXiv:2404.03214): torchcam 0.5's numbers on the torchvision ViT it supports, and
on every other family the attention catalogue reads (timm ViT, registers, DeiT, BEiT, Swin's global stage, Hugging
Face ViT): class-sensitive, the same map for a row alone or in a batch, clear refusals, the model left as found."""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn
from torchvision.models import resnet18
from torchvision.models.swin_transformer import SwinTransformer

from explainers import SaliencyError, explain
from explainers.attention import find_layout
from explainers.methods.legrad import block_names

from ..helpers import hook_counts, snapshot, tiny_hugging_face_vit, tiny_torchvision_vit

TINY = {"img_size": 32, "patch_size": 8, "depth": 3, "embed_dim": 16, "num_heads": 2, "num_classes": 5}


def torchvision_vit(layers=3):
    return tiny_torchvision_vit(layers)


def hugging_face_vit():
    return tiny_hugging_face_vit(3)


def timm_beit():
    model = timm.create_model("beit_base_patch16_224", **TINY)
    nn.init.normal_(model.head.weight, std=0.5)  # timm scales BEiT's head init by 1e-3: maps would be ~1e-6
    return model


FAMILIES = {
    "torchvision_vit": torchvision_vit,
    "timm_vit": lambda: timm.create_model("vit_tiny_patch16_224", **TINY),
    "timm_vit_registers": lambda: timm.create_model("vit_small_patch16_224", reg_tokens=4, no_embed_class=True,
                                                    **TINY),
    "timm_deit_distilled": lambda: timm.create_model("deit_tiny_distilled_patch16_224", **TINY),
    "timm_beit": timm_beit,
    "timm_swin": lambda: timm.create_model("swin_tiny_patch4_window7_224", img_size=32, patch_size=4, window_size=4,
                                           depths=(2, 2), num_heads=(2, 2), embed_dim=16, num_classes=5),
    "torchvision_swin": lambda: SwinTransformer(patch_size=[4, 4], embed_dim=16, depths=[2, 2], num_heads=[2, 2],
                                                window_size=[4, 4], num_classes=5),
    "hugging_face_vit": hugging_face_vit,
}


def seeded(build):
    torch.manual_seed(0)
    return build().eval()


def torchcam_legrad(model, blocks, x, classes):
    """torchcam 0.5's LeGrad (test-only oracle), unnormalised: [N, h, w]."""
    from torchcam.methods import LeGrad

    with LeGrad(model, blocks) as extractor:
        scores = model(x)
        return extractor(classes, scores, normalized=False)[0]


@pytest.mark.parametrize("last", [0, 2])
def test_the_same_maps_as_torchcam_on_torchvisions_vit(last):
    model = seeded(torchvision_vit)
    torch.manual_seed(1)
    x = torch.randn(3, 3, 32, 32)
    classes = [1, 4, 2]
    ours = explain(model, x, "legrad", target=classes, blocks=last)
    layers = list(model.encoder.layers)
    theirs = torchcam_legrad(model, layers[-last:] if last else layers, x, classes)
    assert ours.layer_attribution.shape == (3, 1, 4, 4)
    assert theirs.abs().max() > 1e-3  # a map worth comparing
    error = (ours.layer_attribution[:, 0] - theirs).abs().max()
    assert error <= 1e-4 * theirs.abs().max(), float(error)
    assert ours.attribution.shape == (3, 1, 32, 32)


def test_several_targets_share_the_forward_and_match_one_target_at_a_time():
    model = seeded(torchvision_vit)
    x = torch.randn(2, 3, 32, 32)
    both = explain(model, x, "legrad", target=[0, 3], batch_size=2)
    again = explain(model, x, "legrad", target=[0, 3], batch_size=1)
    torch.testing.assert_close(both.attribution, again.attribution, atol=1e-7, rtol=1e-5)
    first = explain(model, x[:1], "legrad", target=0)
    torch.testing.assert_close(both.attribution[:1], first.attribution, atol=1e-7, rtol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(both.logits, model(x))


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_class_sensitive_batch_invariant_and_left_as_found(family):
    model = seeded(FAMILIES[family])
    torch.manual_seed(2)
    x = torch.randn(3, 3, 32, 32)
    before, hooks = snapshot(model), hook_counts(model)  # Hugging Face models carry hooks of their own
    one = explain(model, x, "legrad", target=1, batch_size=2)
    other = explain(model, x, "legrad", target=3, batch_size=2)
    alone = explain(model, x[2:], "legrad", target=1, batch_size=1)
    assert one.attribution.shape == (3, 1, 32, 32) and torch.isfinite(one.attribution).all()
    assert (one.attribution >= 0).all() and one.attribution.abs().sum() > 0
    assert not torch.allclose(one.attribution, other.attribution, rtol=1e-3, atol=0)  # the class changes the map
    torch.testing.assert_close(alone.attribution, one.attribution[2:], atol=1e-8, rtol=1e-5)
    with torch.no_grad():
        reference = model(x)
    torch.testing.assert_close(one.logits, reference.logits if hasattr(reference, "logits") else reference)
    assert hook_counts(model) == hooks and not any(m.training for m in model.modules())
    assert all(torch.equal(value, model.state_dict()[key]) for key, value in before.items())


def test_the_blocks_are_found_from_the_forward_not_from_names():
    expected = {
        "torchvision_vit": ["encoder.layers.encoder_layer_0", "encoder.layers.encoder_layer_1",
                            "encoder.layers.encoder_layer_2"],
        "timm_deit_distilled": ["blocks.0", "blocks.1", "blocks.2"],
        "timm_swin": ["layers.1.blocks.0", "layers.1.blocks.1"],
        "torchvision_swin": ["features.3.0", "features.3.1"],
        "hugging_face_vit": ["hf.vit.layers.0", "hf.vit.layers.1", "hf.vit.layers.2"],
    }
    for family, names in expected.items():
        model = seeded(FAMILIES[family])
        layout = find_layout(model, torch.randn(1, 3, 32, 32))
        assert block_names(layout, layout.global_sites) == names


def test_progress_is_advanced_per_row_and_cancel_stops_it():
    model = seeded(torchvision_vit)
    seen = []
    explain(model, torch.randn(3, 3, 32, 32), "legrad", target=0, batch_size=2, progress=lambda d, t: seen.append(d))
    assert seen and seen[-1] == 3


def test_a_cnn_and_a_swin_without_global_attention_are_refused_clearly():
    with pytest.raises(SaliencyError, match="vision transformer|no attention"):
        explain(seeded(lambda: resnet18(num_classes=3)), torch.randn(1, 3, 32, 32), "legrad", target=0)
    swin = seeded(FAMILIES["torchvision_swin"])
    with pytest.raises(SaliencyError, match=r"spans the whole patch grid.*over windows"):
        explain(swin, torch.randn(1, 3, 64, 64), "legrad", target=0)  # the last stage is four 4x4 windows
    assert hook_counts(swin) == 0
