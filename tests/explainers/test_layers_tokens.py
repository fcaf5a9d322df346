"""CAMs on a transformer's tokens for every family, with no reshaping by the user: the tokens before the patch grid
(a DeiT's class and distillation tokens, a ViT's class token and four registers, BEiT's class token) are found from
the model, dropped, and the rest laid on the patch grid; Swin's channels-last stage outputs are offered as they are.
pytorch-grad-cam (test-only oracle), told the prefix by hand, gives the same Grad-CAM."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest
import timm
import torch
from torch import nn
from torchvision.models.swin_transformer import SwinTransformer

from explainers import explain
from explainers.layers import LayerInfo, layer_catalogue, to_nchw

from .helpers import hook_counts, tiny_hugging_face_vit

TINY = {"img_size": 32, "patch_size": 8, "depth": 2, "embed_dim": 16, "num_heads": 2, "num_classes": 5}


def hugging_face_vit():
    return tiny_hugging_face_vit(2)


# (builder, tokens before the patches, a block's output to explain)
FAMILIES = {
    "timm_vit": (lambda: timm.create_model("vit_tiny_patch16_224", **TINY), 1, "blocks.0"),
    "timm_deit_distilled": (lambda: timm.create_model("deit_tiny_distilled_patch16_224", **TINY), 2, "blocks.0"),
    "timm_vit_registers": (lambda: timm.create_model("vit_small_patch16_224", reg_tokens=4, no_embed_class=True,
                                                     **TINY), 5, "blocks.0"),
    "timm_beit": (lambda: timm.create_model("beit_base_patch16_224", **TINY), 1, "blocks.0"),
    "hugging_face_vit": (hugging_face_vit, 1, "hf.vit.layers.0"),
}


def seeded(build):
    torch.manual_seed(0)
    model = build().eval()
    head = getattr(model, "head", None)
    if isinstance(head, nn.Linear):
        nn.init.normal_(head.weight, std=0.5)  # BEiT's head starts at 1e-3 scale: its maps would be rounding
    return model


def oracle_gradcam(model, module, x, target, reshape):
    """pytorch-grad-cam's Grad-CAM (min-max normalised, resized to the input) with the user's reshape."""
    gradcam_lib = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    with gradcam_lib.GradCAM(model=model, target_layers=[module], reshape_transform=reshape) as oracle:
        return oracle(input_tensor=x.clone(), targets=[ClassifierOutputTarget(target)] * len(x))


def same_pipeline(layer_map: torch.Tensor, size: int) -> np.ndarray:
    """The oracle's own normalise-resize-normalise applied to our layer-resolution map."""
    from pytorch_grad_cam.utils.image import scale_cam_image

    return scale_cam_image(scale_cam_image(layer_map[:, 0].detach().numpy(), (size, size)))


@pytest.mark.parametrize("family", FAMILIES)
def test_the_tokens_before_the_patches_come_from_the_model(family):
    build, prefix, layer = FAMILIES[family]
    model = seeded(build)
    entries = {info.name: info for info in layer_catalogue(model, (1, 3, 32, 32))}
    info = entries[layer]
    assert (info.layout, info.grid, info.prefix) == ("tokens", (4, 4), prefix)
    tokens = torch.arange(float(prefix + 16)).view(1, -1, 1)
    assert to_nchw(tokens, info.layout, info.grid).flatten().tolist() == list(range(prefix, prefix + 16))
    assert pickle.loads(pickle.dumps(info)).grid == copy.deepcopy(info).grid == (4, 4)
    assert hook_counts(model) == (hook_counts(build()) if family == "hugging_face_vit" else 0)


@pytest.mark.parametrize("family", FAMILIES)
def test_gradcam_on_a_blocks_tokens_matches_pytorch_grad_cam_told_the_prefix(family):
    build, prefix, layer = FAMILIES[family]
    model = seeded(build)
    torch.manual_seed(1)
    x = torch.randn(2, 3, 32, 32)
    ours = explain(model, x, "gradcam", target=3, layer=layer)
    assert ours.layer_attribution.shape == (2, 1, 4, 4) and ours.layer_attribution.abs().sum() > 0

    def drop_prefix(tokens):  # what a user would otherwise write for this model
        return tokens[:, prefix:].reshape(tokens.shape[0], 4, 4, -1).permute(0, 3, 1, 2)

    theirs = oracle_gradcam(model, model.get_submodule(layer), x, 3, drop_prefix)
    np.testing.assert_allclose(same_pipeline(ours.layer_attribution, 32), theirs, atol=1e-4)


def test_the_default_layer_of_a_deit_runs_without_a_layer_named():
    model = seeded(FAMILIES["timm_deit_distilled"][0])
    result = explain(model, torch.randn(1, 3, 32, 32), "gradcam", target=0)
    assert result.layer == "blocks.1.norm1" and result.layer_attribution.shape == (1, 1, 4, 4)


SWINS = {
    "timm_swin": (lambda: timm.create_model("swin_tiny_patch4_window7_224", img_size=32, patch_size=4, window_size=4,
                                            depths=(2, 2), num_heads=(2, 2), embed_dim=16, num_classes=5),
                  ("layers.0", "layers.1")),
    "torchvision_swin": (lambda: SwinTransformer(patch_size=[4, 4], embed_dim=16, depths=[2, 2], num_heads=[2, 2],
                                                 window_size=[4, 4], num_classes=5), ("features.1", "features.3")),
}


@pytest.mark.parametrize("family", SWINS)
def test_swin_stage_outputs_are_channels_last_layers_and_gradcam_runs_on_them(family):
    build, stages = SWINS[family]
    model = seeded(build)
    entries = {info.name: info for info in layer_catalogue(model, (1, 3, 32, 32))}
    assert [entries[s].layout for s in stages] == ["nhwc", "nhwc"]
    assert [entries[s].grid for s in stages] == [(8, 8), (4, 4)]
    torch.manual_seed(1)
    x = torch.randn(2, 3, 32, 32)
    ours = explain(model, x, "gradcam", target=2, layer=stages[0])
    assert ours.layer_attribution.shape == (2, 1, 8, 8) and ours.layer_attribution.abs().sum() > 0
    theirs = oracle_gradcam(model, model.get_submodule(stages[0]), x, 2, lambda t: t.permute(0, 3, 1, 2))
    np.testing.assert_allclose(same_pipeline(ours.layer_attribution, 32), theirs, atol=1e-4)


def test_a_layer_info_compares_as_its_name_shape_and_layout():
    info = LayerInfo("blocks.0", (1, 18, 16), "tokens", (4, 4))
    assert info == ("blocks.0", (1, 18, 16), "tokens") and info.prefix == 2
    assert LayerInfo("blocks.0", (1, 17, 16), "tokens").grid == (4, 4)  # no grid: one class token, a square
