"""Every text method on the seeded tiny BERT, through the registry: one score per token, special tokens never
perturbed, batch size without effect, hooks gone after an exception, progress and cancel, the targets, and each
family's own properties (SmoothGrad's zero noise, rollout's read-out, AttnLRP's conservation and refusals)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from explainers import METHODS, Cancelled, ParameterError, SaliencyError, explain, explain_many
from explainers.attention import find_layout, has_attention
from explainers.lrp import attention_lrp
from explainers.registry import TEXT
from explainers.text import explain_text

from ..helpers import hook_counts, snapshot
from .lrp_oracle import gradient_x_input_bert
from .method_models import lively_bundle

SENTENCE = "the film was not very goodish , awful plot !"
TEXT_METHODS = [name for name, info in METHODS.items() if info.applies_to(TEXT)]
# small settings: the properties hold at any size
QUICK = {
    "integrated_gradients": {"n_steps": 8},
    "smoothgrad": {"n_samples": 4},
    "smoothgrad_sq": {"n_samples": 4},
    "vargrad": {"n_samples": 4},
    "lime": {"n_samples": 40},
    "kernel_shap": {"n_samples": 40},
}
PERTURBING = {"occlusion": {}, "lime": {"n_samples": 40}, "kernel_shap": {"n_samples": 40}}
# methods whose map is linear in the explained score: a contrast's map is the difference of its two classes' maps
LINEAR = ["vanilla", "input_x_gradient", "integrated_gradients", "smoothgrad", "occlusion", "kernel_shap", "lime",
          "attnlrp"]


@pytest.fixture(scope="module")
def bundle():
    return lively_bundle()


@pytest.fixture(scope="module")
def scored(bundle):
    return bundle.scored(SENTENCE)


def scores_of(scored, method, targets=("top1",), batch_size=None, **params):
    params = {**QUICK.get(method, {}), **params}
    maps = explain_text(scored, None, method, list(targets), params={method: params}, seed=3, batch_size=batch_size)
    return {key: token_map for (_, key), token_map in maps.items()}


def test_the_text_methods_are_the_ones_decided():
    assert set(TEXT_METHODS) == {
        "vanilla", "input_x_gradient", "integrated_gradients", "smoothgrad", "smoothgrad_sq", "vargrad", "occlusion",
        "lime", "kernel_shap", "attention_rollout", "chefer_generic", "transformer_attribution", "attnlrp", "random"}


@pytest.mark.parametrize("method", TEXT_METHODS)
def test_every_text_method_gives_one_finite_score_per_token(scored, method):
    (token_map,) = scores_of(scored, method).values()
    assert token_map.scores.shape == (len(scored.encoded),)
    assert np.isfinite(token_map.scores).all()
    content = ~np.array(scored.encoded.special)
    assert np.abs(token_map.scores[content]).max() > 0, token_map.record.notes


@pytest.mark.parametrize("method", TEXT_METHODS)
def test_batch_size_does_not_change_the_result(scored, method):
    one, three = (scores_of(scored, method, ("top1", "top2"), batch_size=size) for size in (1, 3))
    for key in one:
        assert np.allclose(one[key].scores, three[key].scores, rtol=1e-5, atol=1e-6 * np.abs(one[key].scores).max())


class Recorder(nn.Module):
    """A text model that keeps every batch of token embeddings it is given."""

    modality = TEXT

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner
        self.seen: list[torch.Tensor] = []

    def forward(self, inputs):
        self.seen.append(inputs.detach().clone())
        return self.inner(inputs)


@pytest.mark.parametrize("unit", ["word", "token"])
@pytest.mark.parametrize("method", list(PERTURBING))
def test_perturbation_methods_never_touch_the_special_tokens(scored, method, unit):
    recorder = Recorder(scored.model)
    watched = dataclasses.replace(scored, model=recorder)
    # a batch size given: no memory-measuring pass (on zeros) among the batches seen
    explain(watched, watched.inputs, method, "top1", unit=unit, baseline="mask", seed=0, batch_size=8,
            **PERTURBING[method])
    seen = torch.cat(recorder.seen)
    special = torch.tensor(scored.encoded.special)
    assert torch.equal(seen[..., special], scored.inputs[..., special].expand(len(seen), -1, -1, -1))
    changed = (seen != scored.inputs).any(dim=1)[:, 0]  # [passes, L]: which tokens each pass replaced
    assert changed[:, ~special].any(dim=0).all()  # every content token is switched off somewhere
    labels = scored.regions(unit).flatten()
    for row in changed:  # whole features at a time: a word's tokens together
        touched = labels[row].unique()
        assert torch.equal(row[labels >= 0], torch.isin(labels[labels >= 0], touched))


def test_occlusion_runs_one_pass_per_feature_and_its_cost_bounds_them(scored):
    info = METHODS["occlusion"]
    length = len(scored.encoded)
    for unit, features in (("word", len(scored.encoded.words)), ("token", length - 2)):
        recorder = Recorder(scored.model)
        seen: list[tuple[int, int]] = []
        explain(dataclasses.replace(scored, model=recorder), scored.inputs, "occlusion", "top1", unit=unit,
                batch_size=4, progress=lambda done, total, seen=seen: seen.append((done, total)))
        passes = sum(len(batch) for batch in recorder.seen)
        assert passes == 1 + features + 1  # the clean pass, one per feature, and the logits' own
        cost = info.cost.passes(info.validate({"unit": unit}, TEXT), (1, length), None)
        assert cost.forward == 1 + length >= 1 + features  # at most one feature per token
        assert seen[-1] == (cost.forward, cost.forward) and [d for d, _ in seen] == sorted(d for d, _ in seen)


@pytest.mark.parametrize("method", TEXT_METHODS)
def test_an_exception_or_a_cancel_leaves_no_hook_and_the_model_as_it_was(bundle, scored, method):
    before = snapshot(bundle.net)
    flags = [p.requires_grad for p in bundle.net.parameters()]

    def fail(done, total):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        explain(scored, scored.inputs, method, "top1", progress=fail, **QUICK.get(method, {}))
    calls = []

    def stop_at_second(done, total):
        calls.append(done)
        return len(calls) < 2

    try:
        explain(scored, scored.inputs, method, "top1", progress=stop_at_second, batch_size=2, **QUICK.get(method, {}))
    except Cancelled:
        assert len(calls) == 2
    else:
        assert len(calls) == 1  # a one-pass method reports once, at its end: nothing left to cancel
    assert hook_counts(scored.model) == 0 and hook_counts(bundle.net) == 0
    after = bundle.net.state_dict()
    assert all(torch.equal(value, after[key]) for key, value in before.items())
    assert not any(module.training for module in bundle.net.modules())
    assert [p.requires_grad for p in bundle.net.parameters()] == flags


@pytest.mark.parametrize("method", LINEAR)
def test_a_contrast_is_the_difference_of_its_two_classes_maps(scored, method):
    maps = scores_of(scored, method, ("top1", "top2", "neg vs pos", 0, 2))
    difference = maps[0].record.attribution - maps[2].record.attribution  # before the reduction (l2 is not linear)
    contrast = maps["neg vs pos"].record.attribution
    assert np.allclose(contrast, difference, rtol=1e-4, atol=1e-5 * np.abs(difference).max())
    assert maps["top1"].record.target != maps["top2"].record.target
    assert not np.allclose(maps["top1"].scores, maps["top2"].scores)  # class-sensitive


# ---------------------------------------------------------------------------------------------------------
# SmoothGrad on the embeddings
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("base, params", [("vanilla", {}), ("input_x_gradient", {}),
                                          ("integrated_gradients", {"n_steps": 6, "baseline": "mask"}),
                                          ("attnlrp", {"attention_rule": "cp"})])
def test_smoothgrad_without_noise_is_its_base_on_text(scored, base, params):
    (plain,) = scores_of(scored, base, **params).values()
    (smoothed,) = scores_of(scored, "smoothgrad", base=base, noise_level=0.0, n_samples=2, **params).values()
    assert np.allclose(smoothed.scores, plain.scores, rtol=1e-5, atol=1e-7)
    (squared,) = scores_of(scored, "smoothgrad_sq", base=base, noise_level=0.0, n_samples=2, **params).values()
    raw = plain.record.attribution[:, 0, :]
    assert np.allclose(squared.scores, (raw**2).sum(axis=0), rtol=1e-5, atol=1e-9)  # Σ_d E[a_d²]
    (variance,) = scores_of(scored, "vargrad", base=base, noise_level=0.0, n_samples=2, **params).values()
    assert np.all(variance.scores == 0)


@pytest.mark.parametrize("method", ["smoothgrad", "vargrad"])
def test_smoothgrad_never_puts_noise_on_the_special_tokens(scored, method, monkeypatch):
    """[CLS] and [SEP] are never perturbed on text, as the baselines keep them: the noisy copies the base sees hold
    them as they are (every base), and with IG, which gives them exactly 0 on the clean text, the noise-averaged
    map does too."""
    from explainers.methods import smoothing

    special = list(scored.encoded.special)
    (clean,) = scores_of(scored, "integrated_gradients", n_steps=4, baseline="pad").values()
    assert np.all(clean.record.attribution[..., special] == 0)
    (smoothed,) = scores_of(scored, method, base="integrated_gradients", n_steps=4, baseline="pad",
                            noise_level=0.2, n_samples=3).values()
    assert np.all(smoothed.record.attribution[..., special] == 0)
    assert np.abs(smoothed.record.attribution).sum() > 0

    seen = []
    real = smoothing.run_method

    def spying(info, call, inputs, params):
        seen.append(inputs.detach().clone())
        return real(info, call, inputs, params)

    monkeypatch.setattr(smoothing, "run_method", spying)
    scores_of(scored, method, base="vanilla", noise_level=0.2, n_samples=3)
    (noisy,) = seen
    clean_inputs = scored.inputs.expand_as(noisy)
    assert torch.equal(noisy[..., special], clean_inputs[..., special])
    assert not torch.equal(noisy[..., [not s for s in special]], clean_inputs[..., [not s for s in special]])


def test_smoothgrad_takes_the_text_parameters_of_its_bases(scored):
    info = METHODS["smoothgrad"]
    text_params = info.params_for(TEXT)
    assert set(text_params["base"].choices) == {"vanilla", "input_x_gradient", "integrated_gradients", "attnlrp"}
    assert text_params["baseline"].choices == ("pad", "mask", "zero")
    assert "composite" not in text_params and "composite" in info.params  # LRP's: an image-only base's
    with pytest.raises(ParameterError, match="'black'"):
        explain(scored, scored.inputs, "smoothgrad", base="integrated_gradients", baseline="black")
    with pytest.raises(ParameterError, match="guided_backprop"):
        explain(scored, scored.inputs, "smoothgrad", base="guided_backprop")
    with pytest.raises(ParameterError, match="on text"):
        explain(scored, scored.inputs, "smoothgrad", composite="epsilon_plus_flat")
    noisy = scores_of(scored, "smoothgrad", base="integrated_gradients", n_steps=4, baseline="zero",
                      noise_level=0.1)["top1"]
    assert noisy.record.params["baseline"] == "zero"


# ---------------------------------------------------------------------------------------------------------
# Attention: rollout and Chefer's methods read [CLS]
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("length", [4, 9])  # 4 tokens would also be a 2 × 2 grid: the layout says 1 × L
def test_the_token_layout_is_a_one_by_l_strip_read_at_cls(bundle, length):
    scored = bundle.scored(" ".join(["good"] * (length - 2)))
    assert has_attention(scored.model)
    layout = find_layout(scored.model, scored.inputs)
    assert layout.patch_grid == (1, length) and layout.grid == (1, length) and layout.prefix == 0
    assert layout.readout == (0,)  # the pooler reads [CLS]
    assert len(layout.global_sites) == bundle.net.config.num_hidden_layers


def test_rollout_is_the_same_on_sdpa_and_eager_attention_and_flows_one_unit_into_cls():
    maps = {}
    for attention in ("sdpa", "eager"):
        scored = lively_bundle(attention=attention).scored(SENTENCE)
        maps[attention] = scores_of(scored, "attention_rollout", ("top1", "top2"))
    assert np.allclose(maps["sdpa"]["top1"].scores, maps["eager"]["top1"].scores, atol=1e-6)
    assert np.array_equal(maps["sdpa"]["top1"].scores, maps["sdpa"]["top2"].scores)  # class-agnostic
    assert maps["sdpa"]["top1"].scores.sum() == pytest.approx(1.0, abs=1e-5)  # a row of a product of stochastic maps


def test_rollout_discards_on_request_but_never_attention_paid_to_cls(scored):
    (kept,) = scores_of(scored, "attention_rollout").values()
    assert METHODS["attention_rollout"].defaults(TEXT)["discard_ratio"] == 0.0
    (dropped,) = scores_of(scored, "attention_rollout", discard_ratio=0.5).values()
    assert not np.allclose(kept.scores, dropped.scores) and dropped.scores[0] > 0


@pytest.mark.parametrize("method", ["chefer_generic", "transformer_attribution"])
def test_chefer_methods_on_text_are_class_sensitive_and_the_same_for_both_attentions(method):
    maps = {attention: scores_of(lively_bundle(attention=attention).scored(SENTENCE), method, ("top1", "top2"))
            for attention in ("sdpa", "eager")}
    assert np.allclose(maps["sdpa"]["top1"].scores, maps["eager"]["top1"].scores, rtol=1e-4, atol=1e-6)
    assert not np.allclose(maps["sdpa"]["top1"].scores, maps["sdpa"]["top2"].scores)


# ---------------------------------------------------------------------------------------------------------
# AttnLRP on BERT
# ---------------------------------------------------------------------------------------------------------


def without_constants(bundle):
    """``bundle`` with every bias and the position and token-type embeddings zeroed: nothing but the input
    carries relevance, so a conservative rule hands the whole score to the word embeddings."""
    with torch.no_grad():
        for name, parameter in bundle.net.named_parameters():
            if name.endswith("bias") or "position_embeddings" in name or "token_type_embeddings" in name:
                parameter.zero_()
    return bundle


def test_attnlrp_conserves_the_score_when_only_the_input_carries_relevance():
    """With the attention probabilities constant (CP-LRP), every rule left is conservative: the word embeddings'
    relevance adds up to the logit. The paper's softmax rule is not (its bias term), and the sum is off."""
    scored = without_constants(lively_bundle()).scored(SENTENCE)
    with torch.no_grad():
        target = int(scored.model(scored.inputs)[0].abs().argmax())  # the logit farthest from 0
    cp = explain(scored, scored.inputs, "attnlrp", target, attention_rule="cp")
    assert abs(float(cp.extras["relevance_in"][0])) > 0.5
    assert float(cp.extras["conservation"][0]) == pytest.approx(1.0, abs=1e-4)
    softmax = explain(scored, scored.inputs, "attnlrp", target)
    assert abs(float(softmax.extras["conservation"][0]) - 1) > 0.01


def test_attnlrp_on_a_linear_text_model_is_input_times_gradient(scored):
    """The linear-model property: LRP-ε of a bias-free linear map is x ⊙ w, relevance at each embedding value."""

    class Linear(nn.Module):
        modality = TEXT

        def __init__(self, inputs):
            super().__init__()
            self.linear = nn.Linear(inputs[0].numel(), 3, bias=False)

        def forward(self, inputs):
            return self.linear(inputs.flatten(1))

    torch.manual_seed(0)
    model = Linear(scored.inputs)
    x = scored.inputs.clone().requires_grad_(True)
    with torch.enable_grad(), attention_lrp(model, epsilon=1e-12):
        (relevance,) = torch.autograd.grad(model(x)[0, 1], x)
    expected = scored.inputs * model.linear.weight[1].detach().view_as(scored.inputs)
    assert torch.allclose(relevance, expected, rtol=1e-4, atol=1e-7)


def test_attnlrp_rules_hugging_face_activation_modules_as_one_unit(bundle):
    """gelu_new is written with pow and tanh, quick_gelu as x · sigmoid(1.702 x): as modules of
    transformers.activations they get the identity rule whole (a product rule would split quick_gelu's)."""
    from transformers.activations import ACT2FN

    for name in ("gelu_new", "quick_gelu"):
        net = lively_bundle().net
        for layer in net.bert.encoder.layer:
            layer.intermediate.intermediate_act_fn = ACT2FN[name]
        scored = dataclasses.replace(bundle, net=net).scored(SENTENCE)
        explanation = explain(scored, scored.inputs, "attnlrp", 1, epsilon=1e-9)
        embedded = scored.inputs[:, :, 0].transpose(1, 2).clone().requires_grad_(True)
        with torch.enable_grad():
            logits = gradient_x_input_bert(net, embedded, "attnlrp", activation=ACT2FN[name])
            (gradient,) = torch.autograd.grad(logits[0, 1], embedded)
        theirs = (gradient * embedded)[0].sum(dim=-1).detach()
        ours = torch.from_numpy(explanation.attribution[0, :, 0].sum(dim=0).numpy())
        assert float((ours - theirs).abs().max() / theirs.abs().max()) <= 1e-3, name


def test_attnlrp_refuses_an_operation_it_has_no_rule_for_by_name(bundle):
    class Erf(nn.Module):
        def forward(self, x):
            return torch.erf(x)

    net = lively_bundle().net
    net.bert.encoder.layer[0].intermediate.intermediate_act_fn = Erf()
    scored = dataclasses.replace(bundle, net=net).scored(SENTENCE)
    with pytest.raises(SaliencyError, match="'erf'.*bert.encoder.layer.0.intermediate.dense"):
        explain(scored, scored.inputs, "attnlrp", "top1")
    assert hook_counts(scored.model) == 0


# ---------------------------------------------------------------------------------------------------------
# The random control, and explain_many's shared pass
# ---------------------------------------------------------------------------------------------------------


def test_the_random_control_is_seeded_noise_per_token(scored):
    first = explain_text(scored, None, "random", ["top1", "top2"], seed=4)
    again = explain_text(scored, None, "random", ["top1"], seed=4)
    other = explain_text(scored, None, "random", ["top1"], seed=5)
    scores = first[("random", "top1")].scores
    assert np.array_equal(scores, again[("random", "top1")].scores)
    assert np.array_equal(scores, first[("random", "top2")].scores)
    assert not np.array_equal(scores, other[("random", "top1")].scores)
    assert scores.min() >= 0 and scores.max() < 1


def test_explain_many_on_text_gives_what_separate_calls_give(scored):
    methods = ["vanilla", "input_x_gradient", "integrated_gradients", "occlusion", "attention_rollout"]
    params = {"integrated_gradients": {"n_steps": 8, "baseline": "mask"}, "occlusion": {"unit": "token"}}
    targets = ["top1", "top2", "neg vs pos"]
    together = explain_many(scored, scored.inputs, methods, targets, params=params, seed=1)
    for method in methods:
        for target in targets:
            alone = explain(scored, scored.inputs, method, target, seed=1, **params.get(method, {}))
            assert torch.allclose(together[(method, target)].attribution, alone.attribution, rtol=1e-5, atol=1e-7)
            assert torch.equal(together[(method, target)].target, alone.target)
