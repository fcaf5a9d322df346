"""DeepLIFT (Rescale rule) and DeepLIFT-SHAP: summation-to-delta, per-call rules on reused modules, the max-pool
rule, and Captum's DeepLift / DeepLiftShap as oracles (test-only), relative max difference ≤ 1e-4.

Captum 0.9 is right only where its hooks do not interfere, so its side of each comparison runs on a copy of the
model built for it (the copy computes the same function, and our own map on it equals our map on the original):
- a module called twice (torchvision ResNet's ``relu``) makes it raise: the copy gives each call its own module;
- a hooked module that feeds another hooked module directly (ReLU → MaxPool) records its output gradient before
  the next one's rule rewrites it, and its attributions stop adding up to f(x) − f(x′): the copy puts a linear
  identity (a ``Spacer``) between them;
- overlapping max-pool windows (ResNet's 3×3 stride-2 stem pool) are unpooled by overwriting, not adding: that
  comparison uses a 2×2 pool, and the overlapping pool is checked against a direct computation instead.
"""

from __future__ import annotations

import copy
import types

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torch import nn
from torchvision.models.resnet import BasicBlock

import explainers
from explainers import METHODS, ParameterError, SaliencyError, explain
from explainers.baselines import sample_baselines
from explainers.methods.deeplift import SHAP_DRAWS, _secant, uncovered_modules
from explainers.models.user import ScriptedClassifier

from ...conftest import sample_path
from ..helpers import (
    assert_cancel_stops_cleanly,
    assert_untouched,
    hook_counts,
    imagenet_input,
    relative_max_difference,
    small_convnet,
    snapshot,
    spread_batch_norm,
    tiny_bundle,
)

captum_attr = pytest.importorskip("captum.attr")

TOLERANCE = 1e-4
CAPTUM_NONLINEAR = (nn.ReLU, nn.MaxPool2d)  # the hooked modules of the models compared here


class Spacer(nn.Module):
    """A linear identity that returns a new tensor: Captum's hooks on the modules either side stay apart."""

    def forward(self, x):
        return x.clone()


def spaced(module: nn.Module) -> nn.Module:
    """``module`` with a Spacer after each of its hooked children, recursively, sharing every parameter."""
    for name, child in list(module.named_children()):
        if isinstance(child, CAPTUM_NONLINEAR):
            setattr(module, name, nn.Sequential(child, Spacer()))
        else:
            spaced(child)
    return module


def spaced_vgg(vgg: nn.Module) -> nn.Module:
    """The same VGG function (same parameters, no copy of them) with Spacers: features, pool, classifier."""
    features = spaced(nn.Sequential(*vgg.features))
    classifier = spaced(nn.Sequential(*vgg.classifier))
    return nn.Sequential(features, vgg.avgpool, nn.Flatten(1), classifier).eval()


def _block_forward(self, x):
    """BasicBlock's forward with its second ReLU call on a module of its own."""
    identity = x if self.downsample is None else self.downsample(x)
    out = self.relu(self.bn1(self.conv1(x)))
    return self.relu_after_add(self.bn2(self.conv2(out)) + identity)


def unshared(resnet: nn.Module) -> nn.Module:
    """A copy of a torchvision ResNet in which every BasicBlock calls two ReLU modules instead of one twice."""
    resnet = copy.deepcopy(resnet)
    for block in resnet.modules():
        if isinstance(block, BasicBlock):
            block.relu_after_add = copy.deepcopy(block.relu)
            block.forward = types.MethodType(_block_forward, block)
    return resnet


@pytest.fixture(scope="module")
def vgg11():
    torch.manual_seed(0)
    return torchvision.models.vgg11(weights=None).eval()


@pytest.fixture(scope="module")
def resnet18():
    """Seeded ResNet-18 with spread BatchNorm statistics (the fresh ones make every block nearly the identity)."""
    torch.manual_seed(0)
    return spread_batch_norm(torchvision.models.resnet18(weights=None).eval())


@pytest.fixture(scope="module")
def cat64():
    return imagenet_input("cat.png", 64)


def blurred(x: torch.Tensor, seed: int = 0) -> torch.Tensor:
    return sample_baselines("blur", x, 1, torch.Generator().manual_seed(seed))[:, 0]


# ---- the oracle ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("baseline", ["zero", "blur"])
def test_vgg11_matches_captum_deeplift(vgg11, cat64, baseline):
    reference = torch.zeros_like(cat64) if baseline == "zero" else blurred(cat64)
    ours = explain(vgg11, cat64, "deeplift", target=3, baseline=reference)
    theirs_model = spaced_vgg(vgg11)
    on_copy = explain(theirs_model, cat64, "deeplift", target=3, baseline=reference).attribution
    theirs, delta = captum_attr.DeepLift(theirs_model).attribute(cat64.clone(), baselines=reference, target=3,
                                                                 return_convergence_delta=True)
    assert torch.equal(ours.attribution, on_copy)  # the Spacers change nothing for us
    assert relative_max_difference(ours.attribution, theirs) <= TOLERANCE
    gap = float(ours.extras["score_gap"][0])
    assert abs(float(ours.extras["completeness_delta"][0])) <= 1e-4 * abs(gap) + 1e-6
    assert abs(float(delta[0])) <= 1e-4 * abs(gap) + 1e-6  # and Captum's own sum agrees on its copy


def test_vgg11_deeplift_shap_matches_captum_with_the_same_draws(vgg11, cat64):
    """Captum gets the baselines our seeded draw makes: sample_baselines from the call's generator at SHAP_DRAWS."""
    seed, count = 5, 3
    ours = explain(vgg11, cat64, "deeplift_shap", target=3, seed=seed, distribution="blur", n_baselines=count)
    draws = sample_baselines("blur", cat64, count, torch.Generator().manual_seed(seed + SHAP_DRAWS))[0]
    theirs = captum_attr.DeepLiftShap(spaced_vgg(vgg11)).attribute(cat64.clone(), baselines=draws, target=3)
    assert relative_max_difference(ours.attribution, theirs) <= TOLERANCE
    with torch.no_grad():
        logits = vgg11(torch.cat([cat64, draws]))
    assert float(ours.extras["score_gap"][0]) == pytest.approx(float(logits[0, 3] - logits[1:, 3].mean()), abs=1e-5)
    assert abs(float(ours.extras["completeness_delta"][0])) <= 1e-4 * abs(float(ours.extras["score_gap"][0]))


def test_a_reused_relu_gets_each_calls_own_rule(resnet18, cat64):
    """torchvision's BasicBlock calls one ReLU module twice: our map equals the map of a copy with two modules, and
    Captum's on that copy (where Captum can run: see the module doc for the Spacer and the 2×2 stem pool)."""
    reference = blurred(cat64)
    ours = explain(resnet18, cat64, "deeplift", target=7, baseline=reference)
    copied = unshared(resnet18)
    assert relative_max_difference(explain(copied, cat64, "deeplift", target=7, baseline=reference).attribution,
                                   ours.attribution) <= 1e-6
    assert abs(float(ours.extras["completeness_relative"][0])) <= 1e-4

    for model in (resnet18, copied):
        model.maxpool = nn.MaxPool2d(2)
    try:
        ours = explain(resnet18, cat64, "deeplift", target=7, baseline=reference).attribution
        captum_model = copy.deepcopy(copied)
        captum_model.relu = nn.Sequential(captum_model.relu, Spacer())
        theirs = captum_attr.DeepLift(captum_model).attribute(cat64.clone(), baselines=reference, target=7)
    finally:
        resnet18.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
    assert relative_max_difference(ours, theirs) <= TOLERANCE


# ---- the rules, checked directly -----------------------------------------------------------------------------


def test_overlapping_max_pool_windows_add_up():
    """A 3×3 stride-2 pool (windows share positions), then a linear layer: each window's change of maximum goes
    to the argmax of the larger of its two maxima, times the linear layer's weight, and overlaps add up."""
    torch.manual_seed(3)
    pool = nn.MaxPool2d(3, stride=2, padding=1)
    linear = nn.Linear(2 * 4 * 4, 3)
    model = nn.Sequential(pool, nn.Flatten(), linear).eval()
    x, reference = torch.randn(1, 2, 8, 8), torch.randn(1, 2, 8, 8)
    result = explain(model, x, "deeplift", target=1, baseline=reference).attribution[0]

    expected = torch.zeros(2, 8, 8, dtype=torch.float64)
    weights = linear.weight[1].detach().view(2, 4, 4).double()
    padded = [nn.functional.pad(t[0].double(), (1, 1, 1, 1), value=float("-inf")) for t in (x, reference)]
    for c in range(2):
        for i in range(4):
            for j in range(4):
                windows = [p[c, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3] for p in padded]
                top = [w.max() for w in windows]
                winner = 0 if top[0] >= top[1] else 1
                row, col = divmod(int(windows[winner].flatten().argmax()), 3)
                expected[c, 2 * i + row - 1, 2 * j + col - 1] += weights[c, i, j] * (top[0] - top[1])
    assert torch.allclose(result.double(), expected, atol=1e-6)


def test_chained_activations_take_the_secant_of_their_composition():
    """Linear → ReLU → Sigmoid → Linear: the multiplier through the two activations is the secant slope of
    sigmoid∘relu between the two hidden values (chained rules; Captum's hooks get this chain wrong)."""
    torch.manual_seed(4)
    first, last = nn.Linear(6, 5), nn.Linear(5, 3)
    model = nn.Sequential(first, nn.ReLU(), nn.Sigmoid(), last).eval()
    x, reference = torch.randn(1, 6) * 2, torch.randn(1, 6) * 2
    inputs, baseline = x.view(1, 6, 1, 1), reference.view(1, 6, 1, 1)  # explain takes [N, C, H, W]
    flat = nn.Sequential(nn.Flatten(), model).eval()
    result = explain(flat, inputs, "deeplift", target=2, baseline=baseline).attribution.view(6).double()
    with torch.no_grad():
        h, h_ref = first(x).double()[0], first(reference).double()[0]
        composite = (torch.sigmoid(torch.relu(h)) - torch.sigmoid(torch.relu(h_ref))) / (h - h_ref)
        multiplier = first.weight.double().T @ (last.weight[2].double() * composite)
    assert torch.allclose(result, (x - reference).double()[0] * multiplier, atol=1e-5)


@pytest.mark.parametrize("activation", [nn.ReLU(), nn.ReLU6(), nn.Hardtanh(-1.0, 2.0), nn.Threshold(0.5, -2.0),
                                        nn.Hardshrink(0.5)], ids=lambda m: type(m).__name__)
def test_a_copying_activation_takes_its_derivative_exactly_where_the_step_is_nil(activation):
    """The secant (f(x) − f(x′))/(x − x′) where the inputs differ, PyTorch's f′(x) where they are equal, kinks and
    bounds included (ReLU′(0) = 0, 0 at a Hardtanh's bounds), written out elementwise against the rule's own."""
    kinks = torch.tensor([-7.0, -2.0, -1.0, -0.5, 0.0, 0.25, 0.5, 1.0, 2.0, 5.9, 6.0, 7.0])
    x_in = torch.cat([kinks, kinks, torch.linspace(-8, 8, 12)]).view(1, 3, 12)
    x_ref = torch.cat([kinks, kinks + 0.3, torch.linspace(8, -8, 12)]).view(1, 3, 12)  # the first third nil
    with torch.no_grad():
        y_in, y_ref = activation(x_in), activation(x_ref)
        slope = _secant(activation, x_in, x_ref, y_in, y_ref)
        leaf = x_in.clone().requires_grad_(True)
    with torch.enable_grad():
        derivative = torch.autograd.grad(activation(leaf).sum(), leaf)[0]
    expected = torch.where(x_in == x_ref, derivative, (y_in - y_ref) / (x_in - x_ref))
    assert torch.equal(slope, expected)
    assert set(slope[0, 0].tolist()) == {0.0, 1.0}  # the nil steps meet both sides of the kinks


class Mixed(nn.Module):
    """Every activation family with a rule, a residual add, average and max pools (overlapping, adaptive)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.SiLU())
        self.body = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.GELU(), nn.Conv2d(8, 8, 1), nn.Tanh())
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.head = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.Hardswish(), nn.LeakyReLU(0.1), nn.ELU(),
                                  nn.Conv2d(8, 8, 1), nn.Sigmoid(), nn.Softplus(), nn.ReLU6(inplace=True),
                                  nn.AdaptiveMaxPool2d(3), nn.AvgPool2d(3))
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        stem = self.stem(x)
        return self.fc(self.head(self.pool(stem + self.body(stem))).flatten(1))


def mixed() -> nn.Module:
    torch.manual_seed(5)
    model = Mixed()
    with torch.no_grad():
        model.fc.weight.mul_(300)  # scores that move by whole units, past the squashing activations
        model.stem[1].running_mean.uniform_(-0.3, 0.3)
    return model.eval()


def test_summation_to_delta_on_every_activation_and_pool():
    model = mixed()
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(6))
    for baseline in ("zero", "blur", "mean"):
        result = explain(model, x, "deeplift", target=[1, 4], baseline=baseline)
        gap = result.extras["score_gap"]
        assert (gap.abs() > 0.05).all()
        assert (result.extras["completeness_delta"].abs() <= 1e-4 * gap.abs()).all(), baseline
        assert not any(result.notes), result.notes
    shap = explain(model, x, "deeplift_shap", target=2, seed=1, distribution="uniform_noise", n_baselines=4)
    assert (shap.extras["completeness_relative"].abs() <= 1e-4).all()
    assert uncovered_modules(model) == []


def test_an_uncovered_module_is_named_where_the_sum_misses():
    """LayerNorm is not linear and has no rule: the sum misses f(x) − f(x′), and the note says where."""
    torch.manual_seed(7)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.LayerNorm(4 * 6 * 6), nn.Tanh(),
                          nn.Linear(4 * 6 * 6, 3)).eval()
    with torch.no_grad():
        model[5].weight.mul_(20)
    x = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(8))
    result = explain(model, x, "deeplift", target=0, baseline="zero")
    assert abs(float(result.extras["completeness_relative"][0])) > 0.01
    assert any("LayerNorm" in note for note in result.notes[0]), result.notes


# ---- the method contract -------------------------------------------------------------------------------------


@pytest.mark.parametrize("method, params", [("deeplift", {"baseline": "uniform_noise"}),
                                            ("deeplift_shap", {"n_baselines": 3})])
def test_batch_size_rows_and_targets_do_not_change_a_map(method, params):
    model = small_convnet()
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(9))
    whole = explain(model, x, method, target=2, seed=4, batch_size=64, **params).attribution
    for batch_size in (1, 3, 4):
        assert torch.allclose(explain(model, x, method, target=2, seed=4, batch_size=batch_size,
                                      **params).attribution, whole, atol=1e-6), batch_size
    alone = explain(model, x[1:2], method, target=2, seed=4, **params).attribution
    assert torch.allclose(alone, whole[1:2], atol=1e-6)
    many = explainers.explain_many(model, x, [method], [2, 5], seed=4, params={method: params})
    assert torch.allclose(many[(method, 2)].attribution, whole, atol=1e-6)
    assert torch.allclose(many[(method, 5)].attribution,
                          explain(model, x, method, target=5, seed=4, **params).attribution, atol=1e-6)


def test_targets_share_one_forward_per_pass():
    model = small_convnet()
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(10))
    rows = []
    handle = model.register_forward_hook(lambda module, args, output: rows.append(len(args[0])))
    try:
        explainers.explain_many(model, x, ["deeplift"], [0, 1, 2], batch_size=4, params={
            "deeplift": {"baseline": "zero"}})
    finally:
        handle.remove()
    assert rows == [2, 2]  # the baselines' forward, the images' forward; three backward passes of the images


class _WritesIntoAnActivation(nn.Module):
    """small_convnet's function, but its forward multiplies a ReLU's output by 1 in place (``touch``): the values
    stay, the tensor's version moves."""

    def __init__(self, touch: bool):
        super().__init__()
        self.net, self.touch = small_convnet(), touch

    def forward(self, x):
        features = self.net.features
        h = features[2](features[1](features[0](x)))
        if self.touch:
            h.mul_(1.0)
        return self.net.fc(self.net.pool(features[3:](h)).flatten(1))


def test_a_network_that_writes_into_a_kept_activation_runs_as_one_batch_with_the_same_map():
    """The baselines' pass keeps each activation's tensors for the inputs' pass; a network that writes into one in
    place makes that pairing unsafe, and the call falls back to one batch [inputs; baselines]."""
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(14))
    plain, touching = _WritesIntoAnActivation(False).eval(), _WritesIntoAnActivation(True).eval()
    assert isinstance(plain.net.features[2], nn.ReLU) and plain.net.fc.in_features == touching.net.fc.in_features
    rows = {}
    handles = [m.register_forward_hook(lambda module, args, output, m=m: rows.setdefault(m, []).append(len(args[0])))
               for m in (plain, touching)]
    try:
        split = explain(plain, x, "deeplift", target=1, baseline="blur", batch_size=4)
        joint = explain(touching, x, "deeplift", target=1, baseline="blur", batch_size=4)
    finally:
        for handle in handles:
            handle.remove()
    assert rows[plain] == [2, 2, 1, 1]  # pairs 0-1, then pair 2: baselines' pass, inputs' pass
    # the baselines' pass, then the inputs' pass stops at the touched activation (the model's own hook never
    # fires) and is redone as one batch [inputs; baselines], as every pass after it
    assert rows[touching] == [2, 4, 2]
    assert relative_max_difference(joint.attribution, split.attribution) <= 1e-5
    assert abs(float(joint.extras["completeness_relative"][0])) <= 1e-4
    assert hook_counts(touching) == 0


def test_seeded_draws():
    model = small_convnet()
    x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(11))
    first, again, other = (explain(model, x, "deeplift_shap", target=1, seed=s, n_baselines=2).attribution
                           for s in (3, 3, 4))
    assert torch.equal(first, again) and not torch.allclose(first, other)
    assert METHODS["deeplift_shap"].is_stochastic()
    assert METHODS["deeplift"].is_stochastic({"baseline": "uniform_noise"})
    assert not METHODS["deeplift"].is_stochastic()


def test_cost_progress_cancel_and_hooks():
    model = small_convnet()
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(12))
    assert METHODS["deeplift"].passes() == (2, 1)  # the backward runs over the inputs' rows only
    assert METHODS["deeplift_shap"].passes({"n_baselines": 5}) == (10, 5)
    seen = []
    explain(model, x, "deeplift_shap", target=0, n_baselines=3, batch_size=4,
            progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (6, 6) and len(seen) == 3  # a unit per pair (one backward row each), two pairs a batch
    assert_cancel_stops_cleanly(model, x, "deeplift_shap", n_baselines=24, distribution="blur")  # > 2 batches
    before = snapshot(model)
    in_place = [m for m in model.modules() if getattr(m, "inplace", False)]
    assert in_place  # the small CNN's ReLU and ReLU6 run in place; the rule runs them out of place meanwhile
    with pytest.raises(SaliencyError, match="class index 99"):
        explain(model, x, "deeplift", target=99, baseline="zero")
    assert_untouched(model, before)
    assert hook_counts(model) == 0 and all(m.inplace for m in in_place)


def test_smoothgrad_can_wrap_deeplift():
    """With zero noise every copy is the input itself, so SmoothGrad over DeepLIFT is DeepLIFT."""
    model = small_convnet()
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(13))
    plain = explain(model, x, "deeplift", target=3, baseline="blur").attribution
    smoothed = explain(model, x, "smoothgrad", target=3, base="deeplift", baseline="blur", n_samples=2,
                       noise_level=0.0).attribution
    assert torch.allclose(smoothed, plain, atol=1e-6)
    assert METHODS["smoothgrad"].passes({"base": "deeplift", "n_samples": 4}) == (9, 4)


def test_models_it_cannot_run_on_say_why():
    no_activation_module = nn.Sequential(nn.Conv2d(3, 2, 3), nn.Flatten(), nn.Linear(2 * 14 * 14, 3))
    assert "activation modules" in METHODS["deeplift"].unavailable_reason(no_activation_module)
    scripted = ScriptedClassifier(torch.jit.script(small_convnet()))
    assert "TorchScript" in METHODS["deeplift_shap"].unavailable_reason(scripted)


# ---- references, and the shipped models ----------------------------------------------------------------------


def test_reference_folder(tmp_path):
    bundle = tiny_bundle()
    x = bundle.preprocess(Image.open(sample_path("cat.png")))
    with pytest.raises(ParameterError, match="holds no images"):
        explain(bundle, x, "deeplift_shap", distribution="references", references=str(tmp_path), n_baselines=2)
    for i, colour in enumerate([(0, 0, 0), (200, 30, 30)]):
        Image.new("RGB", (60, 50), colour).save(tmp_path / f"ref{i}.png")
    result = explain(bundle, x, "deeplift_shap", target=1, seed=0, distribution="references",
                     references=str(tmp_path), n_baselines=3)
    assert abs(float(result.extras["completeness_relative"][0])) <= 1e-4


def test_default_model_digits_and_the_cat(default_bundle):
    """The shipped EfficientNet-Lite0 (ReLU6, residual adds) on the cat adds up to f(x) − f(black); so does the
    digits LeNet (ReLU, max-pools)."""
    x = default_bundle.preprocess(Image.open(sample_path("cat.png")))
    result = explain(default_bundle, x, "deeplift", target="top1")
    assert abs(float(result.extras["completeness_relative"][0])) <= 1e-4
    assert float(result.extras["score_gap"][0]) > 1

    digits = explainers.load_model("lenet_digits")
    image = digits.preprocess(Image.fromarray(np.pad(np.full((12, 8), 255, np.uint8), 10)))
    for method in ("deeplift", "deeplift_shap"):
        result = explain(digits, image, method, target="top1", seed=0)
        assert abs(float(result.extras["completeness_relative"][0])) <= 1e-4, method
