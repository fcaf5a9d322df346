"""Property tests of the gradient family: each checks a fact the method must satisfy, not a stored output."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import explainers
from explainers import Cancelled, ParameterError, TargetError, explain, explain_many
from explainers.hooks import BackwardRule, rectified_backward

from ..helpers import assert_untouched, hook_counts, small_convnet, snapshot

GRADIENT_METHODS = ["vanilla", "input_x_gradient", "integrated_gradients", "guided_backprop", "deconvnet"]
SMOOTHING = ["smoothgrad", "smoothgrad_sq", "vargrad"]


@pytest.fixture
def linear():
    torch.manual_seed(1)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 5 * 5, 4)).eval()


@pytest.fixture
def net():
    return small_convnet()


@pytest.fixture
def images():
    torch.manual_seed(2)
    return torch.randn(3, 3, 16, 16)


def test_vanilla_gradient_of_linear_model_is_its_weights(linear):
    x = torch.randn(2, 3, 5, 5)
    result = explain(linear, x, "vanilla", target=[3, 1])
    weights = linear[1].weight.detach()
    assert torch.allclose(result.attribution[0].flatten(), weights[3])
    assert torch.allclose(result.attribution[1].flatten(), weights[1])
    assert result.attribution.shape == x.shape
    assert result.target.tolist() == [3, 1]


def test_input_x_gradient_of_linear_model(linear):
    x = torch.randn(1, 3, 5, 5)
    result = explain(linear, x, "input_x_gradient", target=2)
    expected = x[0].flatten() * linear[1].weight.detach()[2]
    assert torch.allclose(result.attribution[0].flatten(), expected, atol=1e-6)


def test_contrast_target_is_difference_of_gradients(linear):
    x = torch.randn(1, 3, 5, 5)
    contrast = explain(linear, x, "vanilla", target=explainers.Contrast(0, 2)).attribution
    weights = linear[1].weight.detach()
    assert torch.allclose(contrast[0].flatten(), weights[0] - weights[2], atol=1e-6)
    as_text = explain(linear, x, "vanilla", target="0 vs 2").attribution
    assert torch.equal(as_text, contrast)


def test_tuple_targets_are_per_row_and_an_ambiguous_tuple_is_an_error(linear):
    x = torch.randn(2, 3, 5, 5)
    weights = linear[1].weight.detach()
    per_row = explain(linear, x, "vanilla", target=(0, 2)).attribution
    assert torch.allclose(per_row[0].flatten(), weights[0]) and torch.allclose(per_row[1].flatten(), weights[2])
    with pytest.raises(TargetError, match="ambiguous.*Contrast"):
        explain(linear, x[:1], "vanilla", target=(0, 2))


def test_numpy_integers_and_arrays_are_targets(linear):
    import numpy as np

    x = torch.randn(2, 3, 5, 5)
    weights = linear[1].weight.detach()
    scalar = explain(linear, x, "vanilla", target=np.int64(3)).attribution
    assert torch.allclose(scalar[1].flatten(), weights[3])
    array = explain(linear, x, "vanilla", target=np.array([1, 2])).attribution
    assert torch.allclose(array[0].flatten(), weights[1]) and torch.allclose(array[1].flatten(), weights[2])


def test_objectives_match_autograd_of_softmax(net, images):
    x = images[:1]
    for objective, transform in [
        ("probability", lambda z: z.softmax(-1)),
        ("log_probability", lambda z: z.log_softmax(-1)),
    ]:
        ours = explain(net, x, "vanilla", target=4, objective=objective).attribution
        leaf = x.clone().requires_grad_(True)
        (expected,) = torch.autograd.grad(transform(net(leaf))[0, 4], leaf)
        assert torch.allclose(ours, expected, atol=1e-6), objective


def test_rank_targets_follow_the_logits(net, images):
    logits = net(images).detach()
    order = logits.argsort(dim=1, descending=True)
    first = explain(net, images, "vanilla", target="top1")
    second = explain(net, images, "integrated_gradients", target="top2", n_steps=4, baseline="zero")
    assert first.target.tolist() == order[:, 0].tolist()
    assert second.target.tolist() == order[:, 1].tolist()
    assert torch.allclose(first.logits, logits, atol=1e-5)


@pytest.mark.parametrize("rule", ["gausslegendre", "riemann_trapezoid", "riemann_middle"])
def test_integrated_gradients_completeness(net, images, rule):
    bright = images * 4  # far from the zero baseline, so f(x) - f(x') is large against float32 rounding
    result = explain(net, bright, "integrated_gradients", target="top1", n_steps=300, rule=rule, baseline="zero")
    delta = result.extras["completeness_delta"]
    gap = result.extras["score_gap"]
    assert (gap.abs() > 0.1).all(), "the test needs a real score gap"
    assert (delta.abs() <= 1e-3 * gap.abs()).all(), (delta, gap)


def test_completeness_delta_is_also_given_as_a_share_of_the_score_gap(net, images):
    """With 2 steps the quadrature misses a visible part of f(x) - f(x'); the share is delta / |gap|."""
    result = explain(net, images * 4, "integrated_gradients", target=0, n_steps=2, baseline="zero")
    attribution_sum = result.attribution.double().sum(dim=(1, 2, 3))
    logits = net(images * 4).detach().double()[:, 0]
    baseline_logit = net(torch.zeros(1, 3, 16, 16)).detach().double()[0, 0]
    gap = logits - baseline_logit
    delta = attribution_sum - gap
    assert torch.allclose(result.extras["score_gap"].double(), gap, atol=1e-4)
    assert torch.allclose(result.extras["completeness_delta"].double(), delta, atol=1e-3)
    assert (delta.abs() > 0.01 * gap.abs()).all(), "the test needs a visible quadrature error"
    assert torch.allclose(result.extras["completeness_relative"].double(), delta / gap.abs(), atol=1e-4)


def test_integrated_gradients_baselines_differ_and_tensor_baseline_is_used(net, images):
    x = images[:1]
    maps = {b: explain(net, x, "integrated_gradients", target=0, n_steps=8, baseline=b, seed=0).attribution
            for b in ["zero", "blur", "mean", "uniform_noise"]}
    for a in maps:
        for b in maps:
            if a < b:
                assert not torch.allclose(maps[a], maps[b]), (a, b)
    tensor = explain(net, x, "integrated_gradients", target=0, n_steps=8, baseline=torch.zeros(1, 3, 16, 16))
    assert torch.allclose(tensor.attribution, maps["zero"], atol=1e-6)
    # a baseline equal to the input gives zero attribution
    same = explain(net, x, "integrated_gradients", target=0, n_steps=8, baseline=x.clone())
    assert same.attribution.abs().max() == 0


@pytest.mark.parametrize("method", SMOOTHING[:1])
@pytest.mark.parametrize("base", ["vanilla", "input_x_gradient", "integrated_gradients", "guided_backprop"])
def test_smoothgrad_with_zero_noise_equals_base(net, images, method, base):
    extra = {"n_steps": 6, "baseline": "zero"} if base == "integrated_gradients" else {}
    smoothed = explain(net, images, method, target=1, base=base, n_samples=3, noise_level=0.0, **extra)
    plain = explain(net, images, base, target=1, **extra)
    assert torch.allclose(smoothed.attribution, plain.attribution, atol=1e-6, rtol=1e-5)


def test_vargrad_with_zero_noise_is_zero_and_squared_is_square(net, images):
    var = explain(net, images, "vargrad", target=1, n_samples=4, noise_level=0.0).attribution
    assert var.abs().max() < 1e-10
    squared = explain(net, images, "smoothgrad_sq", target=1, n_samples=4, noise_level=0.0).attribution
    plain = explain(net, images, "vanilla", target=1).attribution
    assert torch.allclose(squared, plain**2, atol=1e-8, rtol=1e-5)


@pytest.mark.parametrize(
    "method, params",
    [
        ("vanilla", {}),
        ("integrated_gradients", {"n_steps": 10, "baseline": "zero"}),
        ("smoothgrad", {"n_samples": 6}),
        ("vargrad", {"n_samples": 5, "base": "integrated_gradients", "n_steps": 3, "baseline": "mean"}),
        ("smoothgrad", {"n_samples": 5, "base": "guided_backprop"}),
        ("integrated_gradients", {"n_steps": 7, "baseline": "uniform_noise"}),
    ],
)
def test_batch_size_does_not_change_the_result(net, images, method, params):
    reference = explain(net, images, method, target="top1", seed=3, **params).attribution
    for batch_size in (1, 4, 1000):
        other = explain(net, images, method, target="top1", seed=3, batch_size=batch_size, **params).attribution
        assert torch.allclose(reference, other, atol=1e-6, rtol=1e-4), batch_size


def test_same_seed_same_result_other_seed_other_result(net, images):
    first = explain(net, images, "smoothgrad", target=0, seed=11, n_samples=4).attribution
    again = explain(net, images, "smoothgrad", target=0, seed=11, n_samples=4).attribution
    other = explain(net, images, "smoothgrad", target=0, seed=12, n_samples=4).attribution
    assert torch.equal(first, again)
    assert not torch.allclose(first, other)


@pytest.mark.parametrize("method", ["smoothgrad", "integrated_gradients"])
def test_exception_midway_leaves_model_untouched(net, images, method):
    before = snapshot(net)
    calls = []

    def explode(done, total):
        calls.append(done)
        if len(calls) == 2:
            raise RuntimeError("boom")

    params = {"base": "guided_backprop", "n_samples": 8} if method == "smoothgrad" else {"n_steps": 20,
                                                                                        "baseline": "zero"}
    with pytest.raises(RuntimeError, match="boom"):
        explain(net, images, method, target=0, batch_size=4, progress=explode, **params)
    assert len(calls) == 2
    assert_untouched(net, before, training=False)


def test_cancel_by_returning_false_or_raising(net, images):
    before = snapshot(net)
    with pytest.raises(Cancelled):
        explain(net, images, "smoothgrad", target=0, batch_size=2, n_samples=10, progress=lambda d, t: d < 4)

    def cancel(done, total):
        raise Cancelled("user pressed cancel")

    with pytest.raises(Cancelled):
        explain(net, images, "integrated_gradients", target=0, batch_size=2, progress=cancel, baseline="zero")
    assert_untouched(net, before)


def test_progress_reports_every_pass(net, images):
    """IG with 10 steps: the registry's cost is 10 backward passes per image, 30 for 3 images; batches of 7
    report after each batch, 7, 14, 21, 28, then 30 (every method is checked in test_contract.py)."""
    params = {"n_steps": 10, "baseline": "zero"}
    assert explainers.METHODS["integrated_gradients"].passes(params, (16, 16)) == (12, 10)
    seen = []
    explain(net, images, "integrated_gradients", target=0, batch_size=7, progress=lambda d, t: seen.append((d, t)),
            **params)
    assert seen == [(7, 30), (14, 30), (21, 30), (28, 30), (30, 30)]


def test_train_mode_is_restored(net, images):
    net.train()
    try:
        explain(net, images, "guided_backprop", target=0)
        assert all(m.training for m in net.modules())
        assert hook_counts(net) == 0
    finally:
        net.eval()


@pytest.mark.parametrize("method", ["vanilla", "smoothgrad", "gradcam", "occlusion"])
def test_a_model_in_train_mode_is_explained_in_eval_mode_and_left_bit_identical(method):
    """BatchNorm statistics must not move and dropout must be off: the map equals the eval-mode map."""
    model = nn.Sequential(small_convnet().features, nn.Dropout2d(0.5), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(16, 5))
    torch.manual_seed(4)
    x = torch.randn(2, 3, 16, 16)
    params = {"window": 8, "stride": 4} if method == "occlusion" else {}
    expected = explain(model.eval(), x, method, target=1, seed=0, **params).attribution
    model.train()
    before = snapshot(model)
    got = explain(model, x, method, target=1, seed=0, **params).attribution
    assert_untouched(model, before, training=True)  # every buffer (BN running stats, counters) bit-identical
    assert torch.equal(got, expected)


def test_mixed_train_and_eval_flags_are_restored_module_by_module():
    """A model partly in train mode (BatchNorm frozen in eval, the rest training) gets each flag back."""
    model = nn.Sequential(small_convnet().features, nn.Dropout2d(0.5), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(16, 5))
    model.train()
    model[0][1].eval()  # a frozen BatchNorm, as in fine-tuning
    flags = [m.training for m in model.modules()]
    before = snapshot(model)
    torch.manual_seed(4)
    x = torch.randn(2, 3, 16, 16)
    got = explain(model, x, "integrated_gradients", target=3, n_steps=3, baseline="zero").attribution
    assert [m.training for m in model.modules()] == flags
    assert flags.count(False) == 1
    for key, value in before.items():
        assert torch.equal(value, model.state_dict()[key]), key
    expected = explain(model.eval(), x, "integrated_gradients", target=3, n_steps=3, baseline="zero").attribution
    assert torch.equal(got, expected)


def test_pixel_space_baseline_needs_the_preprocessing(net, images):
    """A bare module has no preprocessing, so "black" cannot be known: an error, never silent zeros."""
    with pytest.raises(ParameterError, match="pixel-space.*ModelBundle"):
        explain(net, images, "integrated_gradients", target=0, n_steps=2)
    with pytest.raises(ParameterError, match="pixel-space"):
        explain(net, images, "smoothgrad", target=0, base="integrated_gradients", n_steps=2, n_samples=2)


def test_bundle_black_baseline_is_black_pixels(default_bundle):
    """With a bundle, 'black' is normalize(0): for the default model that is -127/128, not zero; explain() on the
    bundle uses exactly that image, and the same call on the bare module refuses to guess it."""
    from explainers.baselines import make_baseline

    x = torch.zeros(1, 3, 8, 8)
    black = make_baseline("black", x, default_bundle)
    assert torch.allclose(black, torch.full_like(x, -127 / 128), atol=1e-7, rtol=0)
    inputs = default_bundle.normalize(torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0)))
    by_name = explain(default_bundle, inputs, "integrated_gradients", target=1, n_steps=2, baseline="black")
    by_tensor = explain(default_bundle.model, inputs, "integrated_gradients", target=1, n_steps=2,
                        baseline=default_bundle.normalize(torch.zeros(1, 3, 32, 32)))
    assert torch.equal(by_name.attribution, by_tensor.attribution)
    assert torch.equal(by_name.extras["score_gap"], by_tensor.extras["score_gap"])
    with pytest.raises(ParameterError, match="'black' is a pixel-space baseline and needs the model's preprocessing; "
                                             r"pass a ModelBundle \(explainers.load_model\)"):
        explain(default_bundle.model, inputs, "integrated_gradients", target=1, n_steps=2, baseline="black")


@pytest.mark.parametrize("method, params", [
    ("smoothgrad", {"n_samples": 4}),
    ("vargrad", {"n_samples": 4}),
    ("smoothgrad", {"n_samples": 3, "base": "integrated_gradients", "n_steps": 3, "baseline": "uniform_noise"}),
    ("integrated_gradients", {"n_steps": 4, "baseline": "uniform_noise"}),
    ("rise", {"n_masks": 20}),
])
def test_a_row_of_a_batch_equals_the_single_call_with_the_same_seed(net, images, method, params):
    """Noise is drawn per call and shared by the rows: the same image four times gives four equal maps, each
    equal to the image explained alone."""
    four = images[:1].repeat(4, 1, 1, 1)
    batch = explain(net, four, method, target=2, seed=5, **params).attribution
    alone = explain(net, images[:1], method, target=2, seed=5, **params).attribution
    for row in range(4):
        assert torch.allclose(batch[row], alone[0], atol=1e-6, rtol=1e-5), row
    mixed = explain(net, torch.cat([images[1:2], images[:1]]), method, target=2, seed=5, **params).attribution
    assert torch.allclose(mixed[1], alone[0], atol=1e-6, rtol=1e-5)


def test_guided_backprop_on_relu6_passes_only_positive_gradients_inside_0_6():
    """Linear -> ReLU6 -> Linear: the guided gradient is W1^T (relu(W2^T e_c) * 1[0 < h < 6])."""
    torch.manual_seed(5)
    first, second = nn.Linear(12, 20), nn.Linear(20, 3)
    model = nn.Sequential(nn.Flatten(), first, nn.ReLU6(inplace=True), second).eval()
    with torch.no_grad():
        first.weight.mul_(8)  # push some hidden units above 6
    x = torch.randn(2, 3, 2, 2)
    hidden = first(x.flatten(1)).detach()
    inside = (hidden > 0) & (hidden < 6)
    assert inside.any() and (~inside).any() and (hidden >= 6).any()
    result = explain(model, x, "guided_backprop", target=1).attribution
    upstream = second.weight.detach()[1].clamp(min=0)
    expected = (upstream * inside) @ first.weight.detach()
    assert torch.allclose(result.flatten(1), expected, atol=1e-5)
    deconv = explain(model, x, "deconvnet", target=1).attribution
    assert torch.allclose(deconv.flatten(1), (upstream.expand(2, -1)) @ first.weight.detach(), atol=1e-5)
    assert hook_counts(model) == 0


class _ReferenceRule(torch.autograd.Function):
    """The rules written out on their own: clamp to [low, high]; backward relu(g) · [low < x < high] (guided),
    relu(g) (deconvnet) or g · [low < x < high] (none)."""

    @staticmethod
    def forward(ctx, x, low, high, rule):
        ctx.rule = rule
        ctx.save_for_backward(((x > low) & (x < high)).to(x.dtype))
        return x.clamp(min=low, max=high)

    @staticmethod
    def backward(ctx, grad):
        (inside,) = ctx.saved_tensors
        if ctx.rule is None:
            return grad * inside, None, None, None
        if ctx.rule == "guided":
            return grad.clamp(min=0) * inside, None, None, None
        return grad.clamp(min=0), None, None, None


class _OwnForwardReLU(nn.ReLU):
    def forward(self, x):
        return torch.maximum(x, torch.zeros_like(x))


class _EveryKindOfReLU(nn.Module):
    """In-place ReLU used twice (as a torchvision ResNet block does), in-place ReLU6 with inputs above 6, an in-place
    ReLU on a view, a plain ReLU and a subclass with its own forward; ``rule`` set: every activation is the
    reference rule instead."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(7)
        self.conv1, self.conv2, self.conv3 = nn.Conv2d(3, 6, 3, padding=1), nn.Conv2d(6, 6, 3, padding=1), \
            nn.Conv2d(6, 6, 1)
        self.bn = nn.BatchNorm2d(6).eval()
        self.relu, self.relu6, self.on_view = nn.ReLU(inplace=True), nn.ReLU6(inplace=True), nn.ReLU(inplace=True)
        self.plain, self.own = nn.ReLU(), _OwnForwardReLU()
        self.fc = nn.Linear(6, 4)
        with torch.no_grad():
            self.conv2.weight.mul_(20)  # some ReLU6 inputs above 6
        self.rule = None

    def act(self, module, x, low=0.0, high=float("inf")):
        return module(x) if self.rule is None else _ReferenceRule.apply(x, low, high, self.rule[0])

    def forward(self, x):
        h = self.act(self.relu, self.bn(self.conv1(x)))
        h = self.act(self.relu6, self.conv2(h), high=6.0)
        g = self.conv3(h)
        g = torch.cat([self.act(self.on_view, g[:, :3]), g[:, 3:]], dim=1)
        h = self.act(self.relu, g + h)
        h = self.act(self.own, self.act(self.plain, self.conv3(h) - 0.1))
        return self.fc(h.mean((2, 3)))


def _reference_gradient(model, x, target, rule):
    model.rule = (rule,)
    try:
        x = x.detach().requires_grad_(True)
        return torch.autograd.grad(model(x)[:, target].sum(), x)[0]
    finally:
        model.rule = None


@pytest.mark.parametrize("method, rule", [("guided_backprop", "guided"), ("deconvnet", "deconvnet")])
def test_rectified_methods_equal_the_rule_written_out_on_every_kind_of_relu(method, rule):
    model = _EveryKindOfReLU().eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert (model.conv2(model.relu(model.bn(model.conv1(x)))) > 6).any()
    expected = _reference_gradient(model, x, 1, rule)
    assert torch.allclose(explain(model, x, method, target=1).attribution, expected, atol=1e-6, rtol=1e-5)
    assert not torch.allclose(expected, _reference_gradient(model, x, 1, None), atol=1e-3)  # the rule matters
    assert hook_counts(model) == 0


def test_the_shared_pass_gives_each_rule_and_the_plain_gradient_from_one_forward():
    model = _EveryKindOfReLU().eval()
    x = torch.randn(2, 3, 8, 8)
    maps = explain_many(model, x, ["vanilla", "guided_backprop", "deconvnet"], [1, 3])
    for target in (1, 3):
        for method, rule in (("vanilla", None), ("guided_backprop", "guided"), ("deconvnet", "deconvnet")):
            expected = _reference_gradient(model, x, target, rule)
            assert torch.allclose(maps[(method, target)].attribution, expected, atol=1e-6, rtol=1e-5), (method, target)
    assert hook_counts(model) == 0


def test_a_graph_kept_past_the_rectified_block_back_propagates_plainly():
    model = _EveryKindOfReLU().eval()
    x = torch.randn(1, 3, 8, 8, requires_grad=True)
    with rectified_backward(model, BackwardRule("deconvnet")) as count:
        score = model(x)[0, 2]
    assert count == 5
    kept = torch.autograd.grad(score, x)[0]
    assert torch.allclose(kept, _reference_gradient(model, x, 2, None), atol=1e-6, rtol=1e-5)


def test_guided_backprop_without_relu_modules_is_a_clear_error(linear):
    with pytest.raises(explainers.SaliencyError, match="nn.ReLU"):
        explain(linear, torch.randn(1, 3, 5, 5), "guided_backprop", target=0)
    assert hook_counts(linear) == 0


def test_bad_parameters_and_targets_are_clear_errors(net, images):
    with pytest.raises(ParameterError, match="n_steps"):
        explain(net, images, "integrated_gradients", n_steps=0)
    with pytest.raises(ParameterError, match="rule"):
        explain(net, images, "integrated_gradients", rule="simpson")
    with pytest.raises(ParameterError, match="no parameter 'steps'"):
        explain(net, images, "integrated_gradients", steps=3)
    for method, extra in [("vanilla", {}), ("integrated_gradients", {"baseline": "zero"}), ("smoothgrad", {}),
                          ("gradcam", {}),
                          ("occlusion", {"window": 8, "stride": 4})]:
        with pytest.raises(TargetError, match="out of range"):
            explain(net, images, method, target=99, **extra)
    with pytest.raises(TargetError, match="3 inputs"):
        explain(net, images, "vanilla", target=[1, 2])
    with pytest.raises(explainers.UnknownMethodError, match="vanilla"):
        explain(net, images, "vanila")
    with pytest.raises(explainers.SaliencyError, match=r"\[N, C, H, W\]"):
        explain(net, images[0], "vanilla")


def test_class_names_and_ambiguity():
    categories = ["tabby", "tiger cat", "crane", "crane", "espresso"]
    assert explainers.class_index("Tiger Cat", categories) == 1
    with pytest.raises(TargetError, match="2, 3"):
        explainers.class_index("crane", categories)
    with pytest.raises(TargetError, match="did you mean: tabby"):
        explainers.class_index("tabbby", categories)
    spec = explainers.TargetSpec("tabby vs tiger cat", 2, categories)
    assert spec.indices.tolist() == [[0, 1], [0, 1]]


def test_every_method_declares_metadata():
    for name, info in explainers.METHODS.items():
        assert info.display_name and info.summary and info.weaknesses, name
        assert info.reference.authors and info.reference.year, name
        forwards, backwards = info.passes(channels=512)
        assert forwards >= 1 and backwards >= 0, name
        assert isinstance(info.sanity, explainers.Sanity), name
        for pname, param in info.params.items():
            assert param.help, (name, pname)
            assert param.coerce(pname, param.default) == param.default
