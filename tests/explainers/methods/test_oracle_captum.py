"""Our gradient methods compute the same numbers as Captum (a test-only oracle), relative max difference ≤ 1e-4."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from explainers import explain

from ...conftest import sample_path
from ..helpers import hook_counts, imagenet_input, relative_max_difference

captum_attr = pytest.importorskip("captum.attr")

TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def cat_imagenet():
    """The cat sample, 160 px (resnet18 accepts any size; smaller keeps the test quick), ImageNet-normalised."""
    return imagenet_input("cat.png", 160)


@pytest.fixture(scope="module")
def cat_default(default_bundle):
    return default_bundle.preprocess(Image.open(sample_path("cat.png"))).contiguous()


def _captum(model, name, x, target, **kwargs):
    method = getattr(captum_attr, name)(model)
    return method.attribute(x.clone(), target=target, **kwargs)


CASES = [
    ("vanilla", {}, "Saliency", {"abs": False}),
    ("input_x_gradient", {}, "InputXGradient", {}),
    ("integrated_gradients", {"n_steps": 50, "rule": "gausslegendre", "baseline": "zero"}, "IntegratedGradients",
     {"n_steps": 50, "method": "gausslegendre"}),
    ("integrated_gradients", {"n_steps": 20, "rule": "riemann_middle", "baseline": "zero"}, "IntegratedGradients",
     {"n_steps": 20, "method": "riemann_middle"}),
]


def test_trapezoid_rule_differs_from_captum_by_its_weight_sum(seeded_resnet18, cat_imagenet):
    """Captum's trapezoid uses alphas linspace(0, 1, n) with steps 1/n (ends halved), so its weights sum to
    (n-1)/n instead of 1; ours is the textbook trapezoid (steps 1/(n-1)). The two differ by exactly that factor."""
    n = 20
    expected = _captum(seeded_resnet18, "IntegratedGradients", cat_imagenet, 281, n_steps=n, method="riemann_trapezoid")
    ours = explain(seeded_resnet18, cat_imagenet, "integrated_gradients", target=281, n_steps=n,
                   rule="riemann_trapezoid", baseline="zero", batch_size=64).attribution
    assert relative_max_difference(ours * (n - 1) / n, expected) <= TOLERANCE
    assert relative_max_difference(ours, expected) > 0.01


@pytest.mark.parametrize("ours, params, theirs, their_kwargs", CASES, ids=lambda v: v if isinstance(v, str) else "")
def test_resnet18_matches_captum(seeded_resnet18, cat_imagenet, ours, params, theirs, their_kwargs):
    target = 281
    expected = _captum(seeded_resnet18, theirs, cat_imagenet, target, **their_kwargs)
    result = explain(seeded_resnet18, cat_imagenet, ours, target=target, batch_size=64, **params)
    assert relative_max_difference(result.attribution, expected) <= TOLERANCE
    assert hook_counts(seeded_resnet18) == 0


@pytest.mark.parametrize("ours, theirs", [("guided_backprop", "GuidedBackprop"), ("deconvnet", "Deconvolution")])
def test_resnet18_rectified_methods_match_captum(seeded_resnet18, cat_imagenet, ours, theirs):
    """torchvision's ResNet uses in-place ReLUs: both implementations must cope with them."""
    expected = _captum(seeded_resnet18, theirs, cat_imagenet, 3)
    result = explain(seeded_resnet18, cat_imagenet, ours, target=3)
    assert relative_max_difference(result.attribution, expected) <= TOLERANCE
    # and it is not just the plain gradient
    plain = explain(seeded_resnet18, cat_imagenet, "vanilla", target=3).attribution
    assert relative_max_difference(plain, expected) > 0.1
    assert hook_counts(seeded_resnet18) == 0


@pytest.mark.parametrize("ours, params, theirs, their_kwargs", CASES[:3], ids=lambda v: v if isinstance(v, str) else "")
def test_default_model_matches_captum(default_bundle, cat_default, ours, params, theirs, their_kwargs):
    model = default_bundle.model
    target = 285  # Egyptian cat
    baseline = params.get("baseline")
    if baseline is not None:
        # our "black" baseline is a black image normalised the model's way; hand Captum the same tensor
        params = {**params, "baseline": "black"}
        their_kwargs = {**their_kwargs, "baselines": default_bundle.normalize(torch.zeros_like(cat_default))}
    expected = _captum(model, theirs, cat_default, target, **their_kwargs)
    # Captum runs all path points as one batch; so do we here. Batch composition changes float rounding in the
    # convolutions, and on a ReLU6 network a last-digit change can flip a unit at a kink on some path point.
    result = explain(default_bundle, cat_default, ours, target=target, batch_size=64, **params)
    assert relative_max_difference(result.attribution, expected) <= TOLERANCE
    assert hook_counts(model) == 0


def test_default_model_guided_backprop_obeys_relu6_rule(default_bundle, cat_default):
    """Captum only overrides nn.ReLU, so on ReLU6 we test the defining property directly: the gradient reaching
    every ReLU6's input is non-negative, and zero wherever that input was outside (0, 6)."""
    model = default_bundle.model
    relu6s = [m for m in model.modules() if isinstance(m, torch.nn.ReLU6)]
    assert len(relu6s) > 30
    seen = []

    def watch(module, args):
        x = args[0]
        saved = x.detach().clone()
        x.register_hook(lambda grad: seen.append((saved, grad.detach().clone())))

    handles = [m.register_forward_pre_hook(watch) for m in relu6s]
    try:
        explain(default_bundle, cat_default, "guided_backprop", target=285)
    finally:
        for handle in handles:
            handle.remove()
    assert len(seen) == len(relu6s)
    nonzero = 0
    for x, grad in seen:
        assert (grad >= 0).all()
        outside = (x <= 0) | (x >= 6)
        assert (grad[outside] == 0).all()
        nonzero += int((grad > 0).sum())
    assert nonzero > 0
    assert hook_counts(model) == 0
