"""Ablation-CAM and FullGrad: the same maps as pytorch-grad-cam 1.5.7 (a test-only oracle), and the batching
properties every multi-pass method keeps."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from explainers import METHODS, SaliencyError, explain, explain_many
from explainers.layers import cached_catalogue
from explainers.methods import cam

from ..helpers import assert_cancel_stops_cleanly, assert_untouched, hook_counts, snapshot, spread_batch_norm

TOLERANCE = 1e-4  # on min-max normalised maps in [0, 1]


class SmallVGG(nn.Module):
    """Convolutions with biases, in-place ReLUs and an MLP head (no global pooling). It flattens to the row count
    read before the features, so copies made after a layer cannot share the part before it."""

    def __init__(self, classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            # not in place: on the CPU the oracle's saved activations alias the layer's output, so an in-place
            # ReLU after the probed conv would rectify what it ablates and weights
            nn.Conv2d(32, 24, 3, padding=1), nn.ReLU(),
        )
        self.classifier = nn.Sequential(nn.Linear(24 * 8 * 8, 64), nn.ReLU(inplace=True), nn.Dropout(),
                                        nn.Linear(64, classes))

    def forward(self, x):
        rows = x.shape[0]
        return self.classifier(self.features(x).reshape(rows, -1))


def small_vgg() -> SmallVGG:
    torch.manual_seed(1)
    model = SmallVGG()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                module.bias.uniform_(-0.2, 0.2)  # biases that matter, for FullGrad's bias maps
    return model.eval()


def small_resnet() -> nn.Module:
    torch.manual_seed(0)
    return spread_batch_norm(torchvision.models.resnet18(num_classes=10), bias=True).eval()


@pytest.fixture(scope="module")
def resnet():
    return small_resnet()


@pytest.fixture(scope="module")
def vgg():
    return small_vgg()


def inputs(rows: int, size: int, seed: int = 2) -> torch.Tensor:
    return torch.randn(rows, 3, size, size, generator=torch.Generator().manual_seed(seed))


def normalise(maps: np.ndarray) -> np.ndarray:
    """pytorch-grad-cam's final min-max normalisation of each map."""
    from pytorch_grad_cam.utils.image import scale_cam_image

    return scale_cam_image(maps)


def differences(mine: np.ndarray, theirs: np.ndarray) -> tuple[float, float]:
    absolute = float(np.abs(mine - theirs).max())
    return absolute, absolute / float(np.abs(theirs).max())


def peer_ablation(model, module, x, targets, batch_size, ratio=1.0, vit=False, reshape=None):
    gradcam_lib = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.ablation_layer import AblationLayer, AblationLayerVit
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    layer = AblationLayerVit() if vit else AblationLayer()
    with gradcam_lib.AblationCAM(model, [module], reshape_transform=reshape, ablation_layer=layer,
                                 batch_size=batch_size, ratio_channels_to_ablate=ratio) as oracle:
        return oracle(input_tensor=x.clone(), targets=[ClassifierOutputTarget(t) for t in targets])


def ours_like_peer(result, size: int) -> np.ndarray:
    """The oracle's pipeline on our layer-resolution map: normalise, resize, normalise again."""
    from pytorch_grad_cam.utils.image import scale_cam_image

    return scale_cam_image(scale_cam_image(result.layer_attribution[:, 0].detach().numpy(), (size, size)))


# ---------------------------------------------------------------------------------------------------------
# Ablation-CAM against pytorch_grad_cam.AblationCAM
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_ablationcam_matches_the_oracle_on_a_resnet(resnet):
    """layer4 ends in a ReLU: ablated channels are set to 0, as in the paper; the oracle at its default batch."""
    pytest.importorskip("pytorch_grad_cam")
    x, targets = inputs(1, 64), [7]  # one row: the oracle runs the whole network 512 times
    before = snapshot(resnet)
    ours = explain(resnet, x, "ablationcam", target=targets, layer="layer4")
    theirs = peer_ablation(resnet, resnet.layer4, x, targets, batch_size=32)
    absolute, relative = differences(ours_like_peer(ours, 64), theirs)
    assert absolute <= TOLERANCE, (absolute, relative)
    assert 0 < ours.extras["ablated_channels"] <= ours.extras["channels"] == 512
    assert_untouched(resnet, before)


@pytest.mark.parametrize("layer, index, ratio", [("features.7", 7, 1.0), ("features.6", 6, 1.0),
                                                 ("features.6", 6, 0.25)])
def test_ablationcam_matches_the_oracle_on_a_vgg(vgg, layer, index, ratio):
    """features.6 is a convolution with negative outputs: channels are set 1e7 below the row's minimum. The
    oracle subtracts another 1e7 for each earlier copy in its batch, so only its batch of 1 is the method."""
    pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.ablation_layer import AblationLayer

    x, targets = inputs(2, 32), [1, 4]
    if ratio < 1:  # the same channels, or the comparison says nothing (NumPy breaks ties by chance; none here)
        activations = {}
        handle = vgg.features[index].register_forward_hook(lambda m, a, o: activations.update(a=o.detach().clone()))
        vgg(x)
        handle.remove()
        chosen = cam.channels_to_ablate(activations["a"], ratio)
        for row in range(len(x)):
            theirs = AblationLayer().activations_to_be_ablated(activations["a"][row].numpy(), ratio)
            assert set(theirs.tolist()) == set(torch.nonzero(chosen[row]).flatten().tolist())
        assert chosen.sum() == 2 * 2 * int(24 * ratio)
    ours = explain(vgg, x, "ablationcam", target=targets, layer=layer, ratio_channels_to_ablate=ratio)
    theirs = peer_ablation(vgg, vgg.features[index], x, targets, batch_size=1 if index == 6 else 16, ratio=ratio)
    absolute, relative = differences(ours_like_peer(ours, 32), theirs)
    assert absolute <= TOLERANCE, (absolute, relative)
    assert theirs.max() > 0.5


def _tokens_to_maps(tensor):
    if tensor.dim() == 3:  # ViT: drop the class token, lay the patches on their grid
        side = int((tensor.shape[1] - 1) ** 0.5)
        tensor = tensor[:, 1:].reshape(tensor.shape[0], side, side, tensor.shape[2])
    return tensor.permute(0, 3, 1, 2)


@pytest.mark.parametrize("kind", ["vit", "swin"])
def test_ablationcam_on_small_transformers_matches_the_oracle(kind):
    """Token and channels-last layers: the channel is the last dimension (every token's, the class token's too)."""
    pytest.importorskip("pytorch_grad_cam")
    from torchvision.models.swin_transformer import SwinTransformer
    from torchvision.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    if kind == "vit":
        model = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32,
                                  num_classes=5).eval()
        torch.nn.init.normal_(model.heads.head.weight, std=0.5)
    else:
        model = SwinTransformer(patch_size=[4, 4], embed_dim=16, depths=[2, 2], num_heads=[2, 2],
                                window_size=[4, 4], num_classes=5).eval()
    x, targets = inputs(2, 32), [1, 3]
    ours = explain(model, x, "ablationcam", target=targets)
    module = model.get_submodule(ours.layer)
    theirs = peer_ablation(model, module, x, targets, batch_size=1, vit=True, reshape=_tokens_to_maps)
    absolute, relative = differences(ours_like_peer(ours, 32), theirs)
    assert absolute <= TOLERANCE, (ours.layer, absolute, relative)
    assert hook_counts(model) == 0


# ---------------------------------------------------------------------------------------------------------
# Ablation-CAM's own properties
# ---------------------------------------------------------------------------------------------------------


class RowsFixedFirst(nn.Module):
    """The ResNet, reshaping its logits to the row count it was given: copies made after a layer come out as one
    wide row, so Ablation-CAM must run full copies."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x).reshape(x.shape[0], -1)


def test_ablationcam_shares_the_part_before_the_layer_only_where_the_model_allows(resnet, vgg):
    """ResNet takes more copies after a layer than it saw rows before it: each batch runs one row through the
    model. SmallVGG (an error) and RowsFixedFirst (a wrong shape) fix the row count first and get full copies
    after one failed try. Both ways give the same map."""
    rows_in = []

    def count(module, args):
        rows_in.append(len(args[0]))

    x = inputs(2, 32)
    fixed = RowsFixedFirst(resnet)
    results = {}
    for name, model, layer, batch in [("resnet", resnet, "layer2.1.conv2", 64), ("vgg", vgg, "features.6", 16),
                                      ("fixed", fixed, "model.layer2.1.conv2", 64)]:
        cached_catalogue(model, x.shape)  # the layer measurement's dummy forward is not one of the passes
        rows_in.clear()
        handle = model.register_forward_pre_hook(count)
        try:
            results[name] = explain(model, x, "ablationcam", target=[3, 7], layer=layer, batch_size=batch)
        finally:
            handle.remove()
        copies = results[name].extras["ablated_channels"]
        if name == "resnet":  # the clean pass, then one row per batch of 64 copies (128 channels, per row)
            assert rows_in == [2] + [1] * 4 and copies == 2 * 128
        else:  # the clean pass, the failed try (twice on the CPU: channels-last, then contiguous), every copy whole
            tries = rows_in[1:].count(1)
            assert rows_in[0] == 2 and tries in (1, 2) and rows_in[1 : 1 + tries] == [1] * tries, rows_in
            assert sum(rows_in[1 + tries :]) == copies > 0 and min(rows_in[1 + tries :]) > 1, rows_in
        assert hook_counts(model) == 0
    torch.testing.assert_close(results["fixed"].layer_attribution, results["resnet"].layer_attribution,
                               rtol=1e-4, atol=1e-4 * float(results["resnet"].layer_attribution.abs().max()))


def test_ablationcam_copies_fill_batches_sized_for_the_part_after_the_layer(resnet, monkeypatch):
    """Where no batch size is asked for, the first batch has the call's size (whole passes, in case the model
    cannot share the part before the layer); once it can, the copies come as many at a time as the part after the
    layer allows, here more than whole passes may hold. The map is the one of any batch size."""
    from explainers import batching

    x = inputs(2, 32)
    layer = "layer2.1.conv2"
    cached_catalogue(resnet, x.shape)
    reference = explain(resnet, x, "ablationcam", target=3, layer=layer, batch_size=64)
    # whole passes get 2 rows; the part after the layer has smaller tensors, so it gets more
    monkeypatch.setattr(batching, "CPU_LARGEST_TENSOR", 2 * batching.largest_tensor_bytes(resnet, x, True))
    batching.row_bytes(resnet, x, True, after=resnet.get_submodule(layer))  # measured (one row) before counting
    copies = []
    module = resnet.get_submodule("layer2.1.bn2")  # the first module after the layer: it sees every copy
    handle = module.register_forward_pre_hook(lambda mod, args: copies.append(len(args[0])))
    try:
        result = explain(resnet, x, "ablationcam", target=3, layer=layer)
    finally:
        handle.remove()
    assert copies[0] == 2  # the capture of both rows
    assert result.batch_size_used == 2 and copies[1] == 2 and max(copies[2:]) > 2, copies
    assert sum(copies[1:]) == result.extras["ablated_channels"] == 2 * 128
    scale = float(reference.attribution.abs().max())
    torch.testing.assert_close(result.attribution, reference.attribution, rtol=1e-5, atol=1e-6 * scale)


@pytest.mark.parametrize("method, layer", [("ablationcam", "features.6"), ("fullgrad", None)])
def test_batch_size_and_a_row_alone_do_not_change_the_map(vgg, method, layer):
    x = inputs(3, 32, seed=5)
    targets = [1, 4, 2]
    whole = explain(vgg, x, method, target=targets, layer=layer, batch_size=64).attribution
    small = explain(vgg, x, method, target=targets, layer=layer, batch_size=5).attribution
    alone = explain(vgg, x[1:2], method, target=targets[1], layer=layer, batch_size=7).attribution
    scale = float(whole.abs().max())
    assert scale > 0
    torch.testing.assert_close(small, whole, rtol=1e-5, atol=1e-6 * scale)
    torch.testing.assert_close(alone[0], whole[1], rtol=1e-5, atol=1e-6 * scale)


@pytest.mark.parametrize("method, layer", [("ablationcam", "features.6"), ("fullgrad", None)])
def test_several_targets_share_the_passes(vgg, method, layer):
    x = inputs(2, 32)
    calls = []
    handle = vgg.register_forward_pre_hook(lambda module, args: calls.append(len(args[0])))
    try:
        one = explain_many(vgg, x, method, [1], layer=layer, batch_size=16)
        passes_one = list(calls)
        calls.clear()
        three = explain_many(vgg, x, method, [1, 4, 7], layer=layer, batch_size=16)
        passes_three = list(calls)
    finally:
        handle.remove()
    assert passes_three == passes_one
    key = next(iter(one))
    torch.testing.assert_close(three[key].attribution, one[key].attribution)
    assert not torch.allclose(three[(method, 4)].attribution, three[(method, 1)].attribution)


@pytest.mark.parametrize("method, params", [("ablationcam", {"layer": "features.6", "batch_size": 4}),
                                            ("fullgrad", {"batch_size": 1})])
def test_cancel_stops_and_leaves_the_model_untouched(vgg, method, params):
    assert_cancel_stops_cleanly(vgg, inputs(4, 32), method, **params)


def test_ablationcam_ratio_runs_fewer_passes_and_zeroes_the_other_channels(vgg):
    x = inputs(1, 32)
    full = explain(vgg, x, "ablationcam", target=1, layer="features.6", relu=False)
    part = explain(vgg, x, "ablationcam", target=1, layer="features.6", relu=False, ratio_channels_to_ablate=0.25)
    assert part.extras["ablated_channels"] == 2 * int(24 * 0.25) < full.extras["ablated_channels"] == 24
    half = explain(vgg, x, "ablationcam", target=1, layer="features.6", relu=False, ratio_channels_to_ablate=0.5)
    torch.testing.assert_close(half.attribution, full.attribution)  # both ends of the ranking: every channel
    assert not torch.allclose(part.attribution, full.attribution)


# ---------------------------------------------------------------------------------------------------------
# FullGrad against pytorch_grad_cam.FullGrad
# ---------------------------------------------------------------------------------------------------------


def peer_fullgrad(model, x, targets):
    gradcam_lib = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    with gradcam_lib.FullGrad(model, []) as oracle:
        return oracle(input_tensor=x.clone(), targets=[ClassifierOutputTarget(t) for t in targets])


@pytest.mark.parametrize("case", ["resnet", "vgg"])
def test_fullgrad_matches_the_oracle(request, case):
    """ResNet: BatchNorm biases after bias-free convolutions (in-place ReLUs after them); SmallVGG: conv biases.

    The ResNet runs in float64: among its ~10⁵ float32 pre-activations one lies within rounding of 0, and our
    channels-last kernels (see explainers.batching.forward) round it to the other side of its ReLU than the
    oracle's contiguous ones; that one gradient moves a normalised layer map by 0.2 and the map by 1.5e-3.
    In float64 no pre-activation comes that close, so the comparison tests the method, not the rounding."""
    pytest.importorskip("pytorch_grad_cam")
    model = request.getfixturevalue(case)
    size = 64 if case == "resnet" else 32
    x, targets = inputs(3, size), [3, 7, 0]
    if case == "resnet":
        model, x = copy.deepcopy(model).double(), x.double()
    before = snapshot(model)
    ours = explain(model, x, "fullgrad", target=targets)
    assert ours.attribution.shape == (3, 1, size, size)
    assert_untouched(model, before)
    theirs = peer_fullgrad(model, x, targets)
    absolute, relative = differences(normalise(ours.attribution[:, 0].numpy()), theirs)
    assert absolute <= TOLERANCE, (absolute, relative)


def test_fullgrad_refuses_a_model_without_biased_layers(vgg):
    torch.manual_seed(0)
    bare = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 3)).eval()
    reason = METHODS["fullgrad"].unavailable_reason(bare)
    assert reason is not None and "BatchNorm2d" in reason
    with pytest.raises(SaliencyError, match="bias"):
        explain(bare, inputs(1, 16), "fullgrad", target=0)
    assert hook_counts(bare) == 0
    assert METHODS["fullgrad"].unavailable_reason(vgg) is None
