"""LRP (explainers.lrp, method "lrp"): zennit 0.5.1 as the oracle, conservation, hand-checkable cases, refusals."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

import explainers
from explainers import METHODS, SaliencyError
from explainers.lrp import COMPOSITES, Epsilon, lrp_rules, stabilize, uncovered

from ..helpers import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    assert_untouched,
    imagenet_input,
    relative_max_difference,
    small_convnet,
    snapshot,
    spread_batch_norm,
)

zennit_composites = pytest.importorskip("zennit.composites")  # the oracle only; our own modules never skip
zennit_torchvision = pytest.importorskip("zennit.torchvision")
zennit_attribution = pytest.importorskip("zennit.attribution")


def seeded(name: str) -> nn.Module:
    """A seeded torchvision model in float64 with non-trivial BatchNorm statistics. BatchNorm eps = 0: zennit's
    merge leaves each BatchNorm computing x / sqrt(1 + eps), a 5e-6 scaling per layer that is zennit's, not LRP's;
    with eps = 0 both sides compute the same function and must agree to float64 rounding."""
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None)
    if isinstance(model, torchvision.models.VGG):
        # VGG-16's 13 convolutions and BatchNorms as they are; its three dense layers narrowed (25088 x 4096 in
        # float64 would take most of this file's time budget) and fed by a global average pool
        model.avgpool = nn.AdaptiveAvgPool2d(1)
        model.classifier = nn.Sequential(nn.Linear(512, 256), nn.ReLU(True), nn.Dropout(), nn.Linear(256, 256),
                                         nn.ReLU(True), nn.Dropout(), nn.Linear(256, 1000))
    model = spread_batch_norm(model.double().eval(), bias=True)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.eps = 0.0
    return model


def zennit_lrp(model, x, target, composite_name, low, high):
    canonizer = (zennit_torchvision.ResNetCanonizer if isinstance(model, torchvision.models.ResNet)
                 else zennit_torchvision.VGGCanonizer)
    composite = {
        "epsilon_plus_flat": lambda: zennit_composites.EpsilonPlusFlat(canonizers=[canonizer()]),
        "epsilon_gamma_box": lambda: zennit_composites.EpsilonGammaBox(low=low, high=high, canonizers=[canonizer()]),
        "epsilon_alpha2_beta1": lambda: zennit_composites.EpsilonAlpha2Beta1(canonizers=[canonizer()]),
    }[composite_name]()
    with torch.no_grad():
        logit = model(x)[:, target : target + 1]
    seed = torch.zeros(1, 1000, dtype=x.dtype)
    seed[:, target] = logit[:, 0]  # relevance starts as the logit, as ours does
    with zennit_attribution.Gradient(model=model, composite=composite) as attributor:
        _, relevance = attributor(x, seed)
    return relevance


@pytest.mark.slow
@pytest.mark.parametrize("name", ["vgg16_bn", "resnet18"])
def test_matches_zennit_for_every_composite(name):
    model = seeded(name)
    x = imagenet_input(size=64).double()
    low, high = ((0 - IMAGENET_MEAN) / IMAGENET_STD).double(), ((1 - IMAGENET_MEAN) / IMAGENET_STD).double()
    target = int(model(x).argmax())
    before = snapshot(model)
    for composite in COMPOSITES:
        theirs = zennit_lrp(model, x, target, composite, low, high)
        assert_untouched(model, before)  # zennit restores the model too, so both see the same one
        rules = COMPOSITES[composite].assign(model, epsilon=1e-6, gamma=0.25, low=low, high=high)
        inputs = x.clone().requires_grad_(True)
        with lrp_rules(model, rules):
            (ours,) = torch.autograd.grad(model(inputs)[0, target] * 1.0, inputs)
        assert_untouched(model, before)
        assert relative_max_difference(ours, theirs) <= 1e-9, composite


def test_one_linear_layer_under_tiny_epsilon_is_input_times_weight():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 5)).eval()
    nn.init.zeros_(model[1].bias)
    x = torch.randn(2, 3, 4, 4)
    # epsilon_gamma_box's first-layer rule is for convolutions only, so the one linear layer gets ε
    result = explainers.explain(model, x, "lrp", target=3, composite="epsilon_gamma_box", epsilon=1e-12)
    expected = x * model[1].weight[3].view(1, 3, 4, 4)
    torch.testing.assert_close(result.attribution, expected.detach(), rtol=1e-5, atol=1e-6)


def test_epsilon_rule_matches_a_hand_computation_and_the_biases_absorb_the_rest():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 6), nn.ReLU(), nn.Linear(6, 4)).double().eval()
    x = torch.randn(3, 3, 2, 2, dtype=torch.float64)
    eps = 0.01
    rules = {model[1]: Epsilon(eps), model[3]: Epsilon(eps)}
    inputs = x.clone().requires_grad_(True)
    with lrp_rules(model, rules):
        logits = model(inputs)
        (ours,) = torch.autograd.grad(logits[:, 2].sum(), inputs)
    # by hand: R3 = logit at the target; each layer hands R_k · (a_j w_jk) / stab(z_k) down, b_k's share stays
    a0 = x.flatten(1)
    z1 = a0 @ model[1].weight.T + model[1].bias
    a1 = z1.clamp(min=0)
    z2 = a1 @ model[3].weight.T + model[3].bias
    r2 = torch.zeros_like(z2)
    r2[:, 2] = z2[:, 2]
    s2 = r2 / stabilize(z2, eps)
    r1 = a1 * (s2 @ model[3].weight)
    s1 = r1 / stabilize(z1, eps)
    r0 = a0 * (s1 @ model[1].weight)
    torch.testing.assert_close(ours.flatten(1), r0.detach(), rtol=1e-10, atol=1e-12)
    absorbed = (model[3].bias * s2).sum(1) + (model[1].bias * s1).sum(1) + eps * (
        torch.sign(z2) * s2).sum(1) + eps * (torch.where(z1 >= 0, 1.0, -1.0) * s1).sum(1)
    torch.testing.assert_close(ours.flatten(1).sum(1) + absorbed.detach(), z2[:, 2].detach(), rtol=1e-9, atol=1e-9)


def test_epsilon_conserves_the_logit_without_biases_through_batchnorm_and_residual_sums():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(8, 8, 3, padding=1, bias=False)
            self.bn = nn.BatchNorm2d(8)
            self.relu = nn.ReLU(inplace=True)

        def forward(self, x):
            out = self.bn(self.conv(x))
            out += x  # a residual sum, in place as torchvision's blocks write it
            return self.relu(out)

    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.ReLU(), Block(), Block(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5, bias=False)).eval()
    with torch.no_grad():
        for block in (model[2], model[3]):
            block.bn.running_var.uniform_(0.5, 2.0)
            block.bn.weight.uniform_(0.5, 1.5)  # running_mean and bias stay 0: the merged bias is 0
    x = torch.randn(2, 3, 8, 8)
    rules = {m: Epsilon(1e-9) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    inputs = x.clone().requires_grad_(True)
    with lrp_rules(model, rules) as session:
        logits = model(inputs)
        (relevance,) = torch.autograd.grad(logits[:, 1].sum(), inputs)
    assert session.sums == 2
    torch.testing.assert_close(relevance.sum(dim=(1, 2, 3)), logits[:, 1].detach(), rtol=1e-4, atol=1e-5)


def test_extras_report_conservation_and_rows_do_not_depend_on_the_batch():
    model = small_convnet(4)
    x = torch.randn(3, 3, 16, 16)
    before = snapshot(model)
    together = explainers.explain(model, x, "lrp", target=2, composite="epsilon_gamma_box", batch_size=3)
    alone = explainers.explain(model, x[1:2], "lrp", target=2, composite="epsilon_gamma_box", batch_size=1)
    assert_untouched(model, before)
    torch.testing.assert_close(together.attribution[1:2], alone.attribution, rtol=1e-4, atol=1e-6)
    extras = together.extras
    torch.testing.assert_close(extras["relevance_sum"], together.attribution.sum(dim=(1, 2, 3)))
    torch.testing.assert_close(extras["target_score"], together.logits[:, 2])
    torch.testing.assert_close(extras["conservation"], extras["relevance_sum"] / extras["relevance_in"])


def test_several_targets_share_the_forward_and_match_one_at_a_time():
    model = small_convnet(5)
    x = torch.randn(2, 3, 16, 16)
    both = explainers.explain_many(model, x, ["lrp"], [0, 4], params={"lrp": {"composite": "epsilon_alpha2_beta1"}})
    for target in (0, 4):
        one = explainers.explain(model, x, "lrp", target=target, composite="epsilon_alpha2_beta1")
        torch.testing.assert_close(both[("lrp", target)].attribution, one.attribution, rtol=1e-5, atol=1e-7)


def test_runs_on_the_default_model_and_the_digits_lenet():
    for name, size in ((explainers.DEFAULT_MODEL, 64), ("lenet_digits", 32)):
        bundle = explainers.load_model(name)
        assert METHODS["lrp"].unavailable_reason(bundle.model) is None
        x = torch.rand(1, 3, size, size)
        before = snapshot(bundle.model)
        for composite in COMPOSITES:
            result = explainers.explain(bundle, bundle.normalize(x), "lrp", target="top1", composite=composite)
            assert torch.isfinite(result.attribution).all() and result.attribution.abs().sum() > 0
        assert_untouched(bundle.model, before)


def test_model_check_names_the_layers_no_rule_covers():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.LayerNorm(4 * 6 * 6), nn.Linear(4 * 6 * 6, 2))
    reason = METHODS["lrp"].unavailable_reason(model)
    assert reason is not None and "LayerNorm ('2')" in reason
    orphan = nn.Sequential(nn.BatchNorm2d(3), nn.Conv2d(3, 4, 3))
    assert "BatchNorm2d not right after" in uncovered(orphan)
    batch_statistics = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, track_running_stats=False), nn.ReLU())
    assert "without running statistics" in uncovered(batch_statistics)  # nothing to merge: refused, not a crash
    assert uncovered(torchvision.models.resnet18(weights=None)) is None


class Gated(nn.Module):
    """Two branches multiplied: no LRP rule covers it."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.gate = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc((self.conv(x) * torch.sigmoid(self.gate(x))).mean(dim=(2, 3)))


class Shortcut(nn.Module):
    """A BatchNorm that takes its convolution's output only after another operation."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.bn(self.conv(x) * 2).mean(dim=(2, 3)))


@pytest.mark.parametrize(("model", "words"), [(Gated(), "'mul'"), (Shortcut(), "'conv'")])
def test_uncovered_operations_are_refused_by_name_and_leave_the_model_clean(model, words):
    model.eval()
    before = snapshot(model)
    with pytest.raises(SaliencyError, match=words):
        explainers.explain(model, torch.randn(1, 3, 8, 8), "lrp", target=0)
    assert_untouched(model, before)
    assert all(p.requires_grad for p in model.parameters())


class _Head(nn.Module):
    """conv → ReLU → global pooling → linear, the pooling as a module or as ``x.mean([2, 3])`` (MnasNet's head),
    optionally behind the model's own input transform ``x * scale`` (as Inception's ``transform_input``)."""

    def __init__(self, functional: bool, scale: float = 1.0):
        super().__init__()
        torch.manual_seed(0)
        self.conv, self.relu, self.fc = nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Linear(8, 4)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.functional, self.scale = functional, scale

    def forward(self, x):
        if self.scale != 1.0:
            x = x * self.scale
        x = self.relu(self.conv(x))
        x = x.mean([2, 3]) if self.functional else torch.flatten(self.pool(x), 1)
        return self.fc(x)


@pytest.mark.parametrize("composite", list(COMPOSITES))
def test_functional_mean_pooling_and_an_input_scale_get_the_rules_of_their_module_forms(composite):
    """A functional mean over the positions is the average pool's proportional rule, not its gradient (which would
    hand relevance to positions the ReLU zeroed); a constant scale before the first layer passes the relevance to
    the pixels whole (its gradient would scale it by the constant)."""
    torch.manual_seed(1)
    x = torch.randn(2, 3, 12, 12)
    module_form = explainers.explain(_Head(functional=False).eval(), x, "lrp", target=0, composite=composite)
    functional = explainers.explain(_Head(functional=True).eval(), x, "lrp", target=0, composite=composite)
    assert torch.allclose(functional.attribution, module_form.attribution, rtol=1e-5, atol=1e-7)
    scaled = _Head(functional=True, scale=2.0).eval()
    with torch.no_grad():
        scaled.conv.weight.div_(2.0)  # the same logits as the unscaled model
    moved = explainers.explain(scaled, x, "lrp", target=0, composite=composite)
    assert torch.allclose(moved.logits, functional.logits, rtol=1e-5, atol=1e-6)
    assert torch.allclose(moved.attribution.sum(), functional.attribution.sum(), rtol=1e-4, atol=1e-6)
