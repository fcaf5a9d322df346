"""The layer catalogue on the curated torchvision architectures (random weights, no downloads) and bare modules."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from explainers.errors import LayerError
from explainers.layers import LayerInfo, default_layer, layer_catalogue, resolve_layer, to_nchw
from explainers.models import CURATED
from explainers.models.efficientnet_lite import EfficientNetLite0

from .helpers import hook_counts

EXPECTED_DEFAULT = {
    "efficientnet_lite0": "_head_act",
    "resnet18": "layer4",
    "resnet50": "layer4",
    "vgg16": "features",
    "mobilenet_v2": "features",
    "mobilenet_v3_large": "features",
    "densenet121": "features",
    "efficientnet_b0": "features",
    "convnext_tiny": "features",
    "vit_b_16": "encoder.layers.encoder_layer_11.ln_1",
    "swin_t": "features.7.1.norm1",
}
# (name, shape, layout) entries each catalogue must contain.
EXPECTED_ENTRIES = {
    "efficientnet_lite0": [("_conv_stem", (1, 32, 112, 112), "nchw"), ("_blocks.15", (1, 320, 7, 7), "nchw")],
    "resnet18": [
        ("conv1", (1, 64, 112, 112), "nchw"),
        ("layer1.0", (1, 64, 56, 56), "nchw"),
        ("layer1", (1, 64, 56, 56), "nchw"),
        ("layer3.1.conv2", (1, 256, 14, 14), "nchw"),
        ("layer4", (1, 512, 7, 7), "nchw"),
    ],
    "resnet50": [("layer4", (1, 2048, 7, 7), "nchw"), ("layer2.3.conv3", (1, 512, 28, 28), "nchw")],
    "vgg16": [
        ("features.29", (1, 512, 14, 14), "nchw"),
        ("features", (1, 512, 7, 7), "nchw"),
        ("avgpool", (1, 512, 7, 7), "nchw"),
    ],
    "mobilenet_v2": [("features", (1, 1280, 7, 7), "nchw"), ("features.1", (1, 16, 112, 112), "nchw")],
    "mobilenet_v3_large": [("features", (1, 960, 7, 7), "nchw")],
    "densenet121": [("features", (1, 1024, 7, 7), "nchw"), ("features.denseblock4", (1, 1024, 7, 7), "nchw")],
    "efficientnet_b0": [("features", (1, 1280, 7, 7), "nchw")],
    "convnext_tiny": [("features", (1, 768, 7, 7), "nchw"), ("features.1.0.block.2", (1, 56, 56, 96), "nhwc")],
    "vit_b_16": [
        ("conv_proj", (1, 768, 14, 14), "nchw"),
        ("encoder.layers.encoder_layer_11.ln_1", (1, 197, 768), "tokens"),
        ("encoder.layers.encoder_layer_0", (1, 197, 768), "tokens"),
    ],
    "swin_t": [
        ("features.0.0", (1, 96, 56, 56), "nchw"),
        ("features.1.0.norm1", (1, 56, 56, 96), "nhwc"),
        ("features.7.1.norm1", (1, 7, 7, 768), "nhwc"),
        ("features", (1, 7, 7, 768), "nhwc"),
    ],
}
# Modules that must not be in the catalogue: not spatial, 1x1, tuple outputs, or called twice per forward.
EXCLUDED = {
    "efficientnet_lite0": ["_fc", "_avg_pooling"],
    "resnet18": ["fc", "avgpool", "layer1.0.relu"],
    "resnet50": ["layer4.2.relu"],
    "vgg16": ["classifier", "classifier.0"],
    "vit_b_16": ["heads", "encoder.layers.encoder_layer_0.self_attention"],
    "swin_t": ["head", "avgpool", "features.1.0.stochastic_depth"],
}

_BUILT: dict[str, tuple[nn.Module, list[LayerInfo]]] = {}


def build(name: str) -> tuple[nn.Module, list[LayerInfo]]:
    """A seeded random-weight model in eval mode and its catalogue, built once per test session."""
    if name not in _BUILT:
        torch.manual_seed(0)
        model = (
            EfficientNetLite0() if name == "efficientnet_lite0" else torchvision.models.get_model(name, weights=None)
        )
        model.eval()
        _BUILT[name] = (model, layer_catalogue(model, (1, 3, 224, 224)))
    return _BUILT[name]


@pytest.fixture(scope="module", autouse=True)
def free_models():
    """One intra-op thread: two stall for seconds per forward on small shared VMs, one is 10-60x faster."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    _BUILT.clear()


ALL = ["efficientnet_lite0", *CURATED]


def test_expectations_cover_the_curated_models():
    assert set(EXPECTED_DEFAULT) == set(ALL)


@pytest.mark.parametrize("name", ALL)
def test_catalogue_entries_and_default(name):
    model, catalogue = build(name)
    entries = {info.name: info for info in catalogue}
    for layer, shape, layout in EXPECTED_ENTRIES.get(name, []):
        assert entries[layer] == (layer, shape, layout), entries.get(layer)
    for layer in EXCLUDED.get(name, []):
        assert layer not in entries
    assert "" not in entries
    assert len(entries) == len(catalogue)
    for info in catalogue:
        assert info.layout in ("nchw", "nhwc", "tokens")
        h, w = info.grid
        assert h * w >= 2

    chosen = default_layer(model, catalogue)
    assert chosen == EXPECTED_DEFAULT[name]
    assert chosen in entries
    assert resolve_layer(model, None, catalogue) == (chosen, model.get_submodule(chosen))
    assert hook_counts(model) == 0


def test_catalogue_is_in_completion_order():
    _, catalogue = build("resnet18")
    names = [info.name for info in catalogue]
    assert names.index("layer1.0.conv1") < names.index("layer1.0") < names.index("layer1.1") < names.index("layer1")
    assert names[-1] == "layer4"


def test_pooling_is_not_the_default_even_when_spatial():
    model, catalogue = build("vgg16")
    assert catalogue[-1].name == "avgpool"
    assert default_layer(model, catalogue) == "features"


def test_catalogue_leaves_no_hooks_and_restores_modes():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None)
    model.train()
    model.layer2.eval()  # a mixed state must come back exactly
    modes = {name: m.training for name, m in model.named_modules()}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    layer_catalogue(model)
    for module in model.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks
    assert {name: m.training for name, m in model.named_modules()} == modes
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BatchNorm statistics untouched


def test_failing_forward_raises_layer_error_and_cleans_up():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(10, 2))
    with pytest.raises(LayerError, match=r"\[1,3,224,224\]"):
        layer_catalogue(model)
    assert hook_counts(model) == 0


def test_bad_layer_names_list_every_valid_layer_with_shapes():
    model, catalogue = build("resnet18")
    with pytest.raises(LayerError) as caught:
        resolve_layer(model, "fc", catalogue)
    message = str(caught.value)
    assert "layer 'fc' has output [1,1000] (not spatial)" in message
    assert "layer1 [1,64,56,56]" in message and "layer4 [1,512,7,7]" in message
    assert all(info.describe() in message for info in catalogue)

    with pytest.raises(LayerError, match=r"no layer 'layer5'.*layer4 \[1,512,7,7\]"):
        resolve_layer(model, "layer5", catalogue)
    with pytest.raises(LayerError, match=r"'layer1\.0\.relu' runs 2 times"):
        resolve_layer(model, "layer1.0.relu", catalogue)
    with pytest.raises(LayerError, match="avgpool.*not spatial"):
        resolve_layer(model, "avgpool", catalogue)
    with pytest.raises(LayerError, match="not part of it"):
        resolve_layer(model, nn.Conv2d(1, 1, 1), catalogue)
    with pytest.raises(LayerError, match="whole model"):
        resolve_layer(model, "", catalogue)


def test_module_instances_and_names_resolve():
    model, catalogue = build("resnet18")
    assert resolve_layer(model, model.layer3, catalogue) == ("layer3", model.layer3)
    assert resolve_layer(model, "layer2.1.bn2", catalogue) == ("layer2.1.bn2", model.layer2[1].bn2)
    assert resolve_layer(model, model.layer4) == ("layer4", model.layer4)  # measures its own catalogue


def capture(model: nn.Module, layer: str, inputs: torch.Tensor) -> torch.Tensor:
    seen = []
    handle = model.get_submodule(layer).register_forward_hook(lambda m, a, out: seen.append(out.detach().clone()))
    try:
        with torch.no_grad():
            model(inputs)
    finally:
        handle.remove()
    return seen[0]


def test_to_nchw_on_vit_tokens():
    model, catalogue = build("vit_b_16")
    layer = default_layer(model, catalogue)
    tokens = capture(model, layer, torch.rand(2, 3, 224, 224))
    assert tokens.shape == (2, 197, 768)
    maps = to_nchw(tokens, "tokens")
    assert maps.shape == (2, 768, 14, 14)
    assert torch.equal(maps[1, :, 0, 0], tokens[1, 1])  # the class token is dropped
    assert torch.equal(maps[0, :, 2, 3], tokens[0, 1 + 2 * 14 + 3])  # row-major patch grid
    assert to_nchw(tokens, "tokens", grid=(7, 28)).shape == (2, 768, 7, 28)


def test_to_nchw_on_swin_channels_last():
    model, catalogue = build("swin_t")
    layer = default_layer(model, catalogue)
    features = capture(model, layer, torch.rand(1, 3, 224, 224))
    assert features.shape == (1, 7, 7, 768)
    maps = to_nchw(features, "nhwc")
    assert maps.shape == (1, 768, 7, 7)
    assert torch.equal(maps[0, :, 3, 5], features[0, 3, 5])


def test_to_nchw_rejects_wrong_shapes():
    with pytest.raises(LayerError, match="198 tokens"):
        to_nchw(torch.zeros(1, 198, 8), "tokens")
    with pytest.raises(LayerError, match=r"\[N,C,H,W\]"):
        to_nchw(torch.zeros(1, 8), "nchw")
    with pytest.raises(LayerError, match="layout must be one of"):
        to_nchw(torch.zeros(1, 8, 2, 2), "nwhc")
    x = torch.zeros(1, 8, 2, 2)
    assert to_nchw(x, "nchw") is x


class TinyConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU())
        self.body = nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.fc = nn.Linear(16, 3)

    def forward(self, x):
        return self.fc(self.pool(self.body(self.stem(x))).flatten(1))


def test_bare_user_modules():
    torch.manual_seed(0)
    net = TinyConvNet()
    catalogue = layer_catalogue(net, (1, 3, 64, 96))  # not square
    assert ("body", (1, 16, 16, 24), "nchw") in catalogue
    assert default_layer(net, catalogue) == "body"
    assert resolve_layer(net, None) == ("body", net.body)  # reuses the 64x96 measurement

    vit = torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32, num_classes=3
    )
    catalogue = layer_catalogue(vit, (1, 3, 32, 32))
    layer = default_layer(vit, catalogue)
    assert layer == "encoder.layers.encoder_layer_1.ln_1"
    info = next(i for i in catalogue if i.name == layer)
    assert (info.shape, info.layout, info.grid) == ((1, 17, 16), "tokens", (4, 4))


def test_block_layers_are_the_stages_and_blocks_with_the_default():
    """The short layer menu: top-level modules, containers (residual blocks, stages), and the default layer."""
    from explainers.layers import block_layers

    torch.manual_seed(0)
    resnet = torchvision.models.resnet18(weights=None).eval()
    blocks = block_layers(resnet, layer_catalogue(resnet), "layer4")
    expected = ["conv1", "bn1", "relu", "maxpool", "layer1.0", "layer1.1", "layer1"]
    for stage in (2, 3, 4):  # stages 2-4 open with a strided block whose shortcut is a downsample container
        expected += [f"layer{stage}.0.downsample", f"layer{stage}.0", f"layer{stage}.1", f"layer{stage}"]
    assert blocks == expected
    # a leaf deep inside a block is listed when it is the default, and only then
    with_leaf = block_layers(resnet, layer_catalogue(resnet), "layer3.1.conv2")
    assert set(with_leaf) - set(blocks) == {"layer3.1.conv2"}
    assert with_leaf.index("layer3.1.conv2") == with_leaf.index("layer3.1") - 1  # in forward order


def test_default_bundle_block_layers_and_layer_entry(default_bundle):
    from explainers.layers import block_layers

    blocks = block_layers(default_bundle.model, default_bundle.layers, default_bundle.default_layer)
    assert blocks == ["_conv_stem", "_bn0", "_stem_act", *[f"_blocks.{i}" for i in range(16)], "_blocks",
                      "_conv_head", "_bn1", "_head_act"]
    assert len(default_bundle.layers) == 148  # every module stays one click further
    entry = default_bundle.layer_entry()
    assert (entry.name, entry.shape, entry.channels) == ("_head_act", (1, 1280, 7, 7), 1280)
    assert default_bundle.layer_entry("_blocks.3").channels == 40
    assert default_bundle.layer_entry("no_such_layer") is None
