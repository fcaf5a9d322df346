"""The fast forward-only copy of a model (explainers.folding): the same outputs as the model, BatchNorm folded only
where that is exact, the caller's model untouched, the copy kept only while the model is unchanged, and the
forward-only methods giving the maps they give on the model itself."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from explainers import ParameterError, explain, folding
from explainers.hooks import model_guard

from .helpers import assert_untouched, relative_max_difference, small_convnet, snapshot, spread_batch_norm


class Block(nn.Module):
    """A residual block as torchvision's: conv→BN→ReLU→conv→BN, plus a downsampling conv→BN on the skip."""

    def __init__(self, channels: int, out: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, out, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out)
        self.conv2 = nn.Conv2d(out, out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out)
        self.downsample = nn.Sequential(nn.Conv2d(channels, out, 1, stride=2, bias=False), nn.BatchNorm2d(out))

    def forward(self, x):
        return torch.relu(self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))) + self.downsample(x))


class TinyResNet(nn.Module):
    def __init__(self, classes: int = 5):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True))
        self.layer = Block(8, 16)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, classes)

    def forward(self, x):
        return self.fc(self.pool(self.layer(self.stem(x))).flatten(1))


class PreNormSkip(nn.Module):
    """The convolution's output feeds its BatchNorm and, unnormalised, a skip: folding would change the skip."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.norm_in = nn.BatchNorm2d(3)  # a BatchNorm on the input: no convolution before it
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        y = self.conv(self.norm_in(x))
        return self.fc((self.bn(y) + y).mean(dim=(2, 3)))


def calibrated(model: nn.Module, seed: int = 0) -> nn.Module:
    """In eval mode, BatchNorm statistics far from the identity, so that a wrong fold shows."""
    torch.manual_seed(seed)
    return spread_batch_norm(model, bias=True).eval()


@pytest.fixture(autouse=True)
def no_kept_copies():
    folding.KEPT_COPIES.clear()
    yield
    folding.KEPT_COPIES.clear()


@pytest.fixture
def images():
    torch.manual_seed(2)
    return torch.randn(3, 3, 24, 24)


def outputs(model, x):
    with torch.inference_mode():
        return model(x)


def norms(model):
    return [name for name, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)]


def test_every_conv_bn_pair_is_folded_and_the_outputs_match(images):
    model = calibrated(TinyResNet())
    state = snapshot(model)
    with model_guard(model):
        twin = folding.forward_model(model, images, rows=10**6)
    assert twin is not model
    assert norms(twin) == [] and len(norms(model)) == 4
    assert relative_max_difference(outputs(twin, images), outputs(model, images)) < 1e-5
    # the weights it did not change are the model's own tensors, not copies; the model is as it was
    assert twin.fc.weight is model.fc.weight
    assert_untouched(model, state)


def test_convolution_weights_follow_the_devices_layout(images):
    model = calibrated(TinyResNet())
    with model_guard(model):
        twin = folding.forward_model(model, images, rows=10**6)
    wanted = folding.CHANNELS_LAST.get(images.device.type, False)
    assert twin.layer.conv1.weight.is_contiguous(memory_format=torch.channels_last) == wanted
    assert model.layer.conv1.weight.is_contiguous()


def test_a_batchnorm_whose_convolution_output_is_used_elsewhere_is_kept(images):
    model = calibrated(PreNormSkip())
    assert folding.conv_bn_pairs(model, images[:1]) == []
    with model_guard(model):
        assert folding.forward_model(model, images, rows=10**6) is model  # nothing to fold: the model itself


def test_a_kept_layer_keeps_its_batchnorm_and_its_output(images):
    model = calibrated(TinyResNet())
    with model_guard(model):
        twin = folding.forward_model(model, images, rows=10**6, keep=("layer.bn1",))
    assert norms(twin) == ["layer.bn1"]
    seen = {}
    for name, net in (("model", model), ("twin", twin)):
        module = net.get_submodule("layer.bn1")
        handle = module.register_forward_hook(lambda m, a, out, name=name: seen.update({name: out.clone()}))
        try:
            outputs(net, images)
        finally:
            handle.remove()
    assert relative_max_difference(seen["twin"], seen["model"]) < 1e-5
    module = model.get_submodule("layer.bn1")
    assert folding.counterpart(model, twin, module) is twin.get_submodule("layer.bn1")


def test_the_copy_is_kept_until_a_weight_changes_in_place(images):
    model = calibrated(TinyResNet())
    with model_guard(model):
        first = folding.forward_model(model, images, rows=10**6)
        assert folding.forward_model(model, images, rows=1) is first  # kept: reused whatever the call's size
        with torch.no_grad():
            model.layer.bn2.running_var.mul_(4)  # in place, as the sanity cascade randomises layers
        second = folding.forward_model(model, images, rows=10**6)
    assert second is not first
    assert relative_max_difference(outputs(second, images), outputs(model, images)) < 1e-5
    assert relative_max_difference(outputs(first, images), outputs(model, images)) > 1e-3  # the stale one differs


def test_a_small_call_runs_the_model_itself(images):
    model = calibrated(TinyResNet())
    with model_guard(model):
        assert folding.forward_model(model, images, rows=folding.MIN_ROWS - 1) is model


@pytest.mark.parametrize("case", ["scripted", "hooked", "refuses deepcopy"])
def test_models_that_cannot_be_copied_safely_run_as_they_are(images, case):
    model = calibrated(TinyResNet())
    if case == "scripted":
        model = torch.jit.script(model)
    elif case == "hooked":
        model.layer.conv1.register_forward_hook(lambda m, a, out: out * 2)
    else:
        model.__deepcopy__ = lambda memo: (_ for _ in ()).throw(TypeError("no copies"))
    with model_guard(model):
        assert folding.forward_model(model, images, rows=10**6) is model


def test_a_training_mode_batchnorm_is_not_folded(images):
    model = calibrated(TinyResNet())
    model.layer.bn1.train()
    with torch.no_grad():
        twin = folding.folded_copy(model, images)
    assert "layer.bn1" in norms(twin) and len(norms(twin)) == 1


def test_bfloat16_is_refused_without_bfloat16_units(images, monkeypatch):
    """A CPU without AVX512-BF16 or AMX gets the refusal with its reason; one with either is offered bfloat16 (both
    read from PyTorch's own probes, patched here so that the test means the same on every machine)."""
    for bf16, amx in ((False, False), (True, False), (False, True)):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda bf16=bf16: bf16)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda amx=amx: amx)
        assert (folding.bfloat16_unavailable(images.device) is None) == (bf16 or amx)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert "no bfloat16 units" in folding.bfloat16_unavailable(images.device)
    with pytest.raises(ParameterError, match="bfloat16 units"):
        explain(small_convnet(), images, "occlusion", target=0, window=8, stride=8, precision="bfloat16")
    with pytest.raises(ParameterError, match="must be one of"):
        explain(small_convnet(), images, "occlusion", target=0, precision="float16")


def test_a_bfloat16_copy_answers_in_float32_close_to_the_model(images, monkeypatch):
    monkeypatch.setattr(folding, "bfloat16_unavailable", lambda device: None)  # emulated where there are no units
    model = calibrated(TinyResNet())
    with model_guard(model):
        twin = folding.forward_model(model, images, rows=1, precision="bfloat16")  # a copy whatever the size
    assert twin.layer.conv1.weight.dtype == torch.bfloat16 and model.layer.conv1.weight.dtype == torch.float32
    ours, theirs = outputs(twin, images), outputs(model, images)
    assert ours.dtype == torch.float32
    assert 0 < relative_max_difference(ours, theirs) < 5e-2


@pytest.mark.parametrize("method, params", [
    ("scorecam", {"layer": "layer"}),
    ("ablationcam", {"layer": "layer"}),
    ("ablationcam", {"layer": "layer.bn2"}),  # the hooked layer is a BatchNorm: kept, its pair left unfolded
    ("occlusion", {"window": 8, "stride": 4}),
    ("rise", {"n_masks": 80, "grid": 3}),
    ("kernel_shap", {"n_samples": 40, "segmentation": "grid", "n_segments": 9}),
    ("lime", {"n_samples": 40, "segmentation": "grid", "n_segments": 9}),
])
def test_methods_give_the_maps_of_the_model_itself(images, monkeypatch, method, params):
    model = calibrated(TinyResNet())
    monkeypatch.setattr(folding, "MIN_ROWS", 0)
    folded = explain(model, images, method, target=1, seed=3, **params).attribution
    assert folding.KEPT_COPIES.entries, "the call should have run on a folded copy"
    monkeypatch.setattr(folding, "MIN_ROWS", 10**9)
    folding.KEPT_COPIES.clear()
    plain = explain(model, images, method, target=1, seed=3, **params).attribution
    assert not folding.KEPT_COPIES.entries
    assert relative_max_difference(folded, plain) < 1e-4


def test_a_copy_is_not_the_model_so_the_model_is_left_untouched(images):
    model = calibrated(TinyResNet())
    state = snapshot(model)
    explain(model, images, "occlusion", target=0, window=8, stride=4)
    assert_untouched(model, state)
    assert norms(model) == norms(copy.deepcopy(model)) and len(norms(model)) == 4
