"""AttnLRP (explainers.lrp.attention_lrp, method "attnlrp"): lxt 2.1 as the oracle (its explicit functional rules
and its own torchvision-ViT CP-LRP map), the relevance at the attention probabilities, conservation, every
transformer family, refusals by name."""

from __future__ import annotations

import math
import sys
import types

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import explainers
from explainers import METHODS, SaliencyError
from explainers.attention import attention_probabilities
from explainers.lrp import attention_lrp

from ..helpers import assert_untouched, snapshot
from ..test_attention import FAMILIES, logits_of, torchvision_vit

lxt_functional = pytest.importorskip("lxt.explicit.functional")  # the oracle only; our own modules never skip
lxt_rules = pytest.importorskip("lxt.explicit.rules")
TINY = 1e-12  # every stabiliser on both sides, so that both compute the rules themselves


def seeded_vit() -> nn.Module:
    """A seeded torchvision ViT in float64 with non-trivial biases, norms, class token and position embedding."""
    torch.manual_seed(0)
    model = torchvision_vit().double().eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.normal_(0, 0.1)
        model.encoder.pos_embedding.normal_(0, 0.1)
        model.class_token.normal_(0, 0.3)
    return model


def lxt_vit(model, x, rule, kept):
    """The torchvision ViT's forward written with lxt's explicit rules (Achtibat et al. 2024's own code)."""
    lf, epsilon_lrp = lxt_functional, lxt_rules.epsilon_lrp
    conv = model.conv_proj
    h = epsilon_lrp(lambda t: F.conv2d(t, conv.weight, conv.bias, conv.stride), TINY, x)
    n, d = h.shape[:2]
    h = torch.cat([model.class_token.expand(n, -1, -1), h.reshape(n, d, -1).permute(0, 2, 1)], dim=1)
    encoder = model.encoder
    h = lf.add2(h, encoder.pos_embedding.expand_as(h), epsilon=TINY)

    def norm(t, ln):
        return lf.layer_norm_grad_fn.apply(t, ln.weight, ln.bias, ln.eps, TINY)

    for block in encoder.layers:
        y = norm(h, block.ln_1)
        mha = block.self_attention
        heads = mha.num_heads
        weights, biases = mha.in_proj_weight.chunk(3), mha.in_proj_bias.chunk(3)
        q, k, v = (lf.linear_epsilon(y, w, b, TINY).reshape(n, -1, heads, d // heads).permute(0, 2, 1, 3)
                   for w, b in zip(weights, biases, strict=True))
        q = lf.mul2(q, 1 / math.sqrt(d // heads))  # a constant factor: relevance passes whole
        if rule == "attnlrp":
            probabilities = lf.softmax(lf.matmul(q, k.transpose(-1, -2), epsilon=TINY), -1)
            probabilities.retain_grad()
            kept.append(probabilities)
            out = lf.matmul(probabilities, v, epsilon=TINY)
        else:  # lxt's own CP-LRP attention (lxt.explicit.special.multi_head_attention_cp)
            probabilities = torch.softmax(q @ k.transpose(-1, -2), -1).detach()
            out = epsilon_lrp(torch.matmul, TINY, probabilities, v)
        out = lf.linear_epsilon(out.permute(0, 2, 1, 3).reshape(n, -1, d), mha.out_proj.weight, mha.out_proj.bias,
                                TINY)
        h = lf.add2(out, h, epsilon=TINY)
        y = norm(h, block.ln_2)
        y = lf.linear_epsilon(y, block.mlp[0].weight, block.mlp[0].bias, TINY)
        y = lxt_rules.identity(F.gelu, y)
        y = lf.linear_epsilon(y, block.mlp[3].weight, block.mlp[3].bias, TINY)
        h = lf.add2(y, h, epsilon=TINY)
    h = norm(h, encoder.ln)[:, 0]
    return lf.linear_epsilon(h, model.heads.head.weight, model.heads.head.bias, TINY)


def relative(ours, theirs):
    return float((ours - theirs).detach().abs().max() / theirs.detach().abs().max())


@pytest.mark.parametrize("rule", ["attnlrp", "cp"])
def test_matches_lxts_explicit_rules_on_a_torchvision_vit_and_keeps_the_relevance_at_the_probabilities(rule):
    model = seeded_vit()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    target = 1
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        theirs_x, kept = x.clone().requires_grad_(True), []
        logits = lxt_vit(model, theirs_x, rule, kept)
        seed = torch.zeros_like(logits)
        seed[:, target] = logits[:, target]
        logits.backward(seed)
    finally:
        for p, requires_grad in flags:
            p.requires_grad_(requires_grad)
    torch.testing.assert_close(logits.detach(), model(x).detach())
    before = snapshot(model)
    ours_x = x.clone().requires_grad_(True)
    with attention_lrp(model, epsilon=TINY, attention_rule=rule, stabilizer=TINY):
        with attention_probabilities() as probabilities:
            output = model(ours_x)
        wanted = [ours_x, *probabilities] if rule == "attnlrp" else [ours_x]
        relevance, *at_probabilities = torch.autograd.grad(output[:, target].sum(), wanted)
    assert_untouched(model, before)
    assert relative(relevance, theirs_x.grad) <= 1e-3
    assert len(probabilities) == 2
    if rule == "cp":  # constants: no relevance reaches them
        assert not any(p.requires_grad for p in probabilities)
        return
    for ours_a, gradient, theirs_a in zip(probabilities, at_probabilities, kept, strict=True):
        assert relative(ours_a * gradient, theirs_a.grad) <= 1e-3  # relevance at A = A · ∂/∂A


def _lxt_efficient():
    """lxt.efficient.patches and rules, importable although lxt.efficient.models imports names transformers 5
    removed: a stand-in for that package (restored afterwards by the caller)."""
    stub = types.ModuleType("lxt.efficient.models")
    stub.get_default_map = lambda module: {}
    saved = {name: sys.modules.get(name) for name in ("lxt.efficient.models",)}
    sys.modules["lxt.efficient.models"] = stub
    try:
        import lxt.efficient.patches as patches  # noqa: PLC0415 - the oracle, imported behind the stand-in
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
    return patches


def test_cp_matches_lxts_own_torchvision_vit_map():
    """lxt's map for torchvision's ViT (models/vit_torch.py cp_LRP: identity on GELU, LayerNorm's σ constant,
    queries and keys cut off), gradient × input with plain linear layers: ours with ε → 0."""
    patches = _lxt_efficient()
    model = seeded_vit()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    classes = {nn.GELU: patches.non_linear_forward, nn.LayerNorm: patches.layer_norm_forward,
               nn.MultiheadAttention: patches.cp_multi_head_attention_forward}
    originals = {cls: cls.forward for cls in classes}
    try:
        for cls, forward in classes.items():
            cls.original_forward = cls.forward
            cls.forward = forward
        theirs_x = x.clone().requires_grad_(True)
        logits = model(theirs_x)
        (gradient,) = torch.autograd.grad(logits[:, 1].sum(), theirs_x)
        theirs = gradient * x
    finally:
        for cls, forward in originals.items():
            cls.forward = forward
            del cls.original_forward
    ours_x = x.clone().requires_grad_(True)
    with attention_lrp(model, epsilon=TINY, attention_rule="cp", stabilizer=TINY):
        (ours,) = torch.autograd.grad(model(ours_x)[:, 1].sum(), ours_x)
    assert relative(ours, theirs) <= 1e-3


def test_cp_conserves_the_logit_without_biases_or_constant_tokens():
    model = seeded_vit()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or name in ("class_token", "encoder.pos_embedding"):
                p.zero_()
    x = torch.randn(3, 3, 32, 32, dtype=torch.float64)
    inputs = x.clone().requires_grad_(True)
    with attention_lrp(model, epsilon=1e-12, attention_rule="cp", stabilizer=1e-12):
        logits = model(inputs)
        (relevance,) = torch.autograd.grad(logits[:, 2].sum(), inputs)
    torch.testing.assert_close(relevance.sum(dim=(1, 2, 3)), logits[:, 2].detach(), rtol=1e-6, atol=1e-9)


def test_the_softmax_rule_by_hand():
    """Prop. 3.1: R_x = x ⊙ (R − s Σ R) for the relevance R handed to the probabilities s."""

    class Scores(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4, bias=False)

        def forward(self, x):
            return self.fc(torch.softmax(x, dim=-1))

    torch.manual_seed(4)
    model = Scores().double().eval()
    x = torch.randn(3, 4, dtype=torch.float64)
    inputs = x.clone().requires_grad_(True)
    with attention_lrp(model, epsilon=1e-12, stabilizer=1e-12):
        logits = model(inputs)
        (ours,) = torch.autograd.grad(logits[:, 0].sum(), inputs)
    s = torch.softmax(x, dim=-1)
    r_s = s * model.fc.weight[0].detach()  # ε rule of the last layer, the logit as relevance
    torch.testing.assert_close(ours, x * (r_s - s * r_s.sum(-1, keepdim=True)))


@pytest.mark.parametrize("family", [f for f in FAMILIES if not f.startswith("hugging_face")])
def test_every_family_runs_both_rules_with_rows_independent_of_the_batch(family):
    build = FAMILIES[family][0]
    torch.manual_seed(0)
    model = build().eval()
    assert METHODS["attnlrp"].unavailable_reason(model) is None
    x = torch.randn(3, 3, 32, 32)
    before = snapshot(model)
    for rule in ("attnlrp", "cp"):
        together = explainers.explain(model, x, "attnlrp", target=1, attention_rule=rule, batch_size=3)
        alone = explainers.explain(model, x[2:], "attnlrp", target=1, attention_rule=rule, batch_size=1)
        assert torch.isfinite(together.attribution).all() and together.attribution.abs().sum() > 0
        torch.testing.assert_close(together.attribution[2:], alone.attribution, rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(together.logits, model(x), rtol=1e-5, atol=1e-6)
        extras = together.extras
        torch.testing.assert_close(extras["conservation"], extras["relevance_sum"] / extras["relevance_in"])
    assert_untouched(model, before)


def test_hugging_face_vit_eager_and_sdpa_give_the_same_relevance():
    maps = []
    for family in ("hugging_face_vit_eager", "hugging_face_vit_sdpa"):
        torch.manual_seed(0)
        model = FAMILIES[family][0]().eval()
        x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)).requires_grad_(True)
        with attention_lrp(model, gamma=0.25):
            (relevance,) = torch.autograd.grad(logits_of(model(x))[:, 3].sum(), x)
        maps.append(relevance)
    torch.testing.assert_close(maps[0], maps[1], rtol=1e-4, atol=1e-7)
    assert maps[0].abs().sum() > 0


class Squared(nn.Module):
    """A block that squares its features: no rule covers it."""

    def __init__(self):
        super().__init__()
        self.vit = torchvision_vit()

    def forward(self, x):
        tokens = self.vit.encoder(torch.cat([self.vit.class_token.expand(len(x), -1, -1),
                                             self.vit.conv_proj(x).flatten(2).transpose(1, 2)], dim=1))
        return self.vit.heads(tokens[:, 0].pow(2))


def test_operations_no_rule_covers_are_refused_by_name_and_the_model_is_left_clean():
    torch.manual_seed(0)
    model = Squared().eval()
    before = snapshot(model)
    with pytest.raises(SaliencyError, match="'pow'"):
        explainers.explain(model, torch.randn(1, 3, 32, 32), "attnlrp", target=0)
    assert_untouched(model, before)
    assert all(p.requires_grad for p in model.parameters())
    with_lrn = nn.Sequential(torchvision_vit(), nn.Unflatten(1, (5, 1, 1)), nn.LocalResponseNorm(2))
    assert "LocalResponseNorm" in METHODS["attnlrp"].unavailable_reason(with_lrn)
    swin_v2 = torchvision.models.swin_v2_t(num_classes=3).eval()
    with pytest.raises(SaliencyError, match="AttnLRP"):  # cosine attention: F.normalize and a clamp
        explainers.explain(swin_v2, torch.randn(1, 3, 64, 64), "attnlrp", target=0)


def test_lrp_stays_for_convolutional_networks_and_points_transformers_to_attnlrp():
    reason = METHODS["lrp"].unavailable_reason(torchvision_vit())
    assert reason is not None and "AttnLRP" in reason and "MultiheadAttention" in reason
    assert METHODS["attnlrp"].unavailable_reason(torchvision.models.resnet18(num_classes=3)) is not None
