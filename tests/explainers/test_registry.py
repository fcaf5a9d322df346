"""The typed registry: capability flags, requirements, the sanity enum, cost as data and panel titles."""

from __future__ import annotations

import pytest
import torch
from torchvision.models.vision_transformer import VisionTransformer

from explainers import (
    METHODS,
    ParameterError,
    SaliencyError,
    Sanity,
    UnknownMethodError,
    available_methods,
    explain,
    get_method,
    method_order,
)
from explainers.methods.smoothing import BASES

from .helpers import small_convnet

CAMS = {"gradcam", "gradcam_pp", "xgradcam", "layercam", "hirescam", "eigencam", "scorecam", "cam", "ablationcam",
        "guided_gradcam"}
GRADIENTS = {"vanilla", "input_x_gradient", "guided_backprop", "deconvnet", "integrated_gradients", "blur_ig",
             "guided_ig", "expected_gradients", "gradient_shap", "fullgrad", "xrai"}
SMOOTHING = {"smoothgrad", "smoothgrad_sq", "vargrad"}
PERTURBATION = {"occlusion", "rise", "extremal_perturbation"}
PROPAGATION = {"deeplift", "deeplift_shap", "lrp", "attnlrp"}
SURROGATE = {"kernel_shap", "lime"}
CONTROLS = {"random", "sobel"}
ATTENTION = {"chefer_generic", "transformer_attribution", "legrad", "attention_rollout"}


def tiny_vit() -> VisionTransformer:
    torch.manual_seed(0)
    return VisionTransformer(image_size=32, patch_size=8, num_layers=1, num_heads=2, hidden_dim=8, mlp_dim=16,
                             num_classes=3).eval()


def test_every_method_is_accounted_for():
    assert set(METHODS) == (CAMS | GRADIENTS | SMOOTHING | PROPAGATION | PERTURBATION | SURROGATE | CONTROLS
                            | ATTENTION)
    assert sorted(method_order()) == sorted(METHODS)


def test_method_order_groups_the_families_in_the_methods_pages_order():
    assert method_order() == [
        "vanilla", "input_x_gradient", "guided_backprop", "deconvnet", "integrated_gradients",  # Gradient
        "blur_ig", "guided_ig", "expected_gradients", "gradient_shap", "fullgrad", "xrai",
        "smoothgrad", "smoothgrad_sq", "vargrad",  # Gradient (noise-averaged)
        "deeplift", "deeplift_shap", "lrp", "attnlrp",  # Propagation
        "gradcam", "gradcam_pp", "xgradcam", "layercam", "hirescam", "eigencam", "scorecam", "cam", "ablationcam",
        "guided_gradcam",
        "extremal_perturbation", "occlusion", "rise",  # Perturbation
        "kernel_shap", "lime",  # Surrogate
        "chefer_generic", "transformer_attribution", "legrad", "attention_rollout",  # Attention
        "random", "sobel",  # Control
    ]


def test_smoothgrad_shows_only_its_bases_parameters():
    """n_steps and rule belong to integrated gradients, baseline to IG and DeepLIFT, composite, epsilon and gamma
    to LRP: each applies only with its base."""
    params = METHODS["smoothgrad"].params
    assert set(params) == {"base", "n_samples", "noise_level", "n_steps", "rule", "baseline", "composite", "epsilon",
                           "gamma", "attention_rule"}
    assert params["attention_rule"].applies({"base": "attnlrp"}) and not params["attention_rule"].applies(
        {"base": "lrp"})
    assert params["baseline"].applies({"base": "deeplift"})
    for name in ("composite", "epsilon", "gamma"):
        assert params[name].applies({"base": "lrp"}) and not params[name].applies({"base": "vanilla"}), name
    for name in ("n_steps", "rule", "baseline"):
        assert params[name].applies({"base": "integrated_gradients"}), name
        for base in ("vanilla", "input_x_gradient", "guided_backprop", "lrp"):
            assert not params[name].applies({"base": base}), (name, base)
    for name in ("base", "n_samples", "noise_level"):
        assert params[name].applies({"base": "vanilla"}), name
    assert params["n_steps"].default == METHODS["integrated_gradients"].params["n_steps"].default


def test_available_methods_on_the_default_cnn_offer_the_cams_but_not_attention_rollout(default_bundle):
    available = available_methods(default_bundle.model)
    assert "attention_rollout" not in available
    assert CAMS <= set(available)
    transformers = {n for n, i in METHODS.items() if "attention" in i.requires}
    assert transformers == ATTENTION | {"attnlrp"}
    assert set(available) == set(METHODS) - transformers  # its ReLU6 modules allow the guided methods
    reason = METHODS["attention_rollout"].unavailable_reason(default_bundle.model)
    assert reason.startswith("Attention rollout needs a vision transformer: no attention was found in this model's "
                             "modules")


def test_available_methods_on_a_vision_transformer_offer_rollout_but_not_the_relu_methods():
    vit = tiny_vit()
    available = set(available_methods(vit))
    assert "attention_rollout" in available
    # torchvision's ViT uses GELU: nothing for guided backprop / deconvnet to replace
    # and LayerNorm / attention: no LRP rule covers them
    assert available == set(METHODS) - {"guided_backprop", "deconvnet", "guided_gradcam", "lrp"}
    assert ATTENTION | {"attnlrp"} <= available
    assert "LayerNorm" in METHODS["lrp"].unavailable_reason(vit)
    assert "GELU" in METHODS["guided_backprop"].unavailable_reason(vit)
    assert available_methods(None) == [n for n, i in METHODS.items() if not i.requires & {"attention",
                                                                                          "relu_modules"}]


def test_an_unavailable_method_is_refused_by_explain_with_its_reason(default_bundle):
    with pytest.raises(SaliencyError, match=r"needs a vision transformer.*; pick another method"):
        explain(default_bundle.model, torch.zeros(1, 3, 32, 32), "attention_rollout")


def test_capability_flags():
    def flagged(flag):
        return {name for name, info in METHODS.items() if getattr(info, flag)}

    assert {name for name, info in METHODS.items() if not info.class_sensitive} == {"eigencam", "attention_rollout",
                                                                                     *CONTROLS}
    assert flagged("smoothgrad_base") == {"vanilla", "input_x_gradient", "integrated_gradients", "guided_backprop",
                                         "deeplift", "lrp", "attnlrp"}
    assert flagged("sweepable") == {"gradcam", "gradcam_pp", "xgradcam", "layercam", "hirescam", "eigencam"}
    assert flagged("needs_layer") == CAMS
    assert flagged("stochastic") == SMOOTHING | SURROGATE | {"rise", "random", "expected_gradients", "gradient_shap",
                                                             "deeplift_shap"}
    assert {name for name, info in METHODS.items() if "relu_modules" in info.requires} == {
        "guided_backprop", "deconvnet", "guided_gradcam"}
    assert {name for name, info in METHODS.items() if "attention" in info.requires} == ATTENTION | {"attnlrp"}
    assert set(BASES) == flagged("smoothgrad_base")  # SmoothGrad's base choices come from the flag
    assert set(METHODS["smoothgrad"].params["base"].choices) == set(BASES)


def test_flags_agree_with_each_other():
    for name, info in METHODS.items():
        assert isinstance(info.sanity, Sanity), name
        if not info.class_sensitive:
            assert info.sanity in (Sanity.CLASS_INSENSITIVE, Sanity.CONTROL), name
        if info.smoothgrad_base:  # a gradient method on the input: as many channels as the input
            assert info.attribution_channels is None and not info.needs_layer and not info.stochastic, name
        if info.sweepable:  # cheap enough to run once per layer
            assert info.needs_layer and not info.cost.depends_on_channels and info.cost.per_step == (0, 0), name
        if info.family == "Gradient (noise-averaged)":
            assert info.sanity is Sanity.AS_BASE and info.cost.base == "base", name
    assert METHODS["guided_backprop"].sanity is Sanity.FAILS
    assert METHODS["gradcam"].sanity is Sanity.PASSES
    assert Sanity.CLASS_INSENSITIVE.label == "class-insensitive"


def test_class_agnostic_methods_give_the_same_map_for_every_target():
    """What class_sensitive=False promises: the target does not change the map."""
    model = small_convnet()
    x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    first = explain(model, x, "eigencam", target=0, relu=False)
    other = explain(model, x, "eigencam", target=5, relu=False)
    assert torch.equal(first.attribution, other.attribution)
    assert first.target.tolist() == [0] and other.target.tolist() == [5]


def test_titles_say_when_the_target_cannot_matter():
    assert METHODS["eigencam"].title("tiger cat") == "Eigen-CAM · class-agnostic"
    assert METHODS["eigencam"].title(None) == "Eigen-CAM · class-agnostic"
    assert METHODS["attention_rollout"].title("tabby") == "Attention rollout · class-agnostic"
    assert METHODS["gradcam"].title("tabby") == "Grad-CAM · tabby"
    assert METHODS["gradcam"].title(None) == "Grad-CAM"


def test_cost_is_data():
    assert METHODS["vanilla"].passes() == (1, 1)
    assert METHODS["integrated_gradients"].passes({"n_steps": 20}) == (22, 20)  # input + baseline, 20 steps
    # the clean prediction, then 4 noisy copies of IG's 5 forwards and 3 backwards
    assert METHODS["smoothgrad"].passes({"n_samples": 4, "base": "integrated_gradients", "n_steps": 3}) == (21, 12)
    assert METHODS["smoothgrad"].passes({"n_samples": 4}) == (5, 4)
    assert METHODS["scorecam"].passes(channels=1280) == (1281, 0)
    assert METHODS["scorecam"].passes(channels=512) == (513, 0)
    assert METHODS["guided_gradcam"].passes(channels=1280) == (2, 2)  # a layer method, but not per channel
    with pytest.raises(ParameterError, match="depends on the layer's channel count; resolve the layer first"):
        METHODS["scorecam"].passes()
    assert str(METHODS["scorecam"].passes(channels=1)) == "2 forward passes"
    assert str(METHODS["cam"].passes()) == "1 forward pass"
    assert str(METHODS["vanilla"].passes()) == "1 forward + 1 backward pass"


def test_unknown_method_lists_the_known_ones():
    with pytest.raises(UnknownMethodError, match="unknown method 'gradcm'; available: gradcam, ") as caught:
        get_method("gradcm")
    assert "attention_rollout" in str(caught.value)


def test_controls_explain_nothing_and_need_no_model_for_it():
    """random: seeded uniform noise, the same for every row and class; sobel: the input's edge magnitude."""
    model = small_convnet()
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    x[1] = x[0].flip(-1)
    first = explain(model, x, "random", target=0, seed=7)
    again = explain(model, x, "random", target=3, seed=7)
    other = explain(model, x, "random", target=0, seed=8)
    assert first.attribution.shape == (2, 1, 16, 16)
    assert torch.equal(first.attribution, again.attribution)  # neither the class nor a rerun changes it
    assert torch.equal(first.attribution[0], first.attribution[1])  # nor the image
    assert not torch.equal(first.attribution, other.attribution)  # the seed does
    assert 0 <= float(first.attribution.min()) and float(first.attribution.max()) < 1

    edges = explain(model, x, "sobel", target=0).attribution
    # a vertical step of height 1 in every channel: |K_x * x| = 4 per channel on the two columns beside it
    step = torch.zeros(1, 3, 8, 8)
    step[..., 4:] = 1.0
    sobel = explain(model, step, "sobel", target=0).attribution[0, 0]
    assert torch.allclose(sobel[:, 3:5], torch.full((8, 2), 12.0)) and float(sobel[:, :3].abs().max()) == 0
    assert torch.allclose(edges[1], edges[0].flip(-1), atol=1e-5)  # it follows the image, not the model
    for name in CONTROLS:
        info = METHODS[name]
        assert info.sanity is Sanity.CONTROL and not info.class_sensitive and info.family == "Control"
        assert info.unavailable_reason(None) is None  # a control needs no particular model


def test_stochastic_follows_the_parameters():
    from explainers.registry import get_method

    assert get_method("smoothgrad").is_stochastic() and get_method("random").is_stochastic()
    assert not get_method("integrated_gradients").is_stochastic()
    assert get_method("integrated_gradients").is_stochastic({"baseline": "uniform_noise"})
    assert not get_method("integrated_gradients").is_stochastic({"baseline": "blur"})
    assert not get_method("vanilla").is_stochastic({})


def test_a_random_baseline_really_follows_the_seed(default_bundle):
    """What is_stochastic claims is what explain() does: the noise baseline changes with the seed, black does not."""
    import explainers

    inputs = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    inputs = default_bundle.normalize(inputs)
    for baseline, differs in (("uniform_noise", True), ("black", False)):
        a, b = (explainers.explain(default_bundle, inputs, "integrated_gradients", 0, seed=seed, n_steps=2,
                                   baseline=baseline).attribution for seed in (0, 1))
        assert (not torch.equal(a, b)) is differs, baseline


def test_a_wrapper_cannot_run_where_its_base_cannot():
    """SmoothGrad around guided backprop or LRP on a ViT: refused up front, naming the base and why, rather than a
    hook error or a plain gradient in disguise."""
    vit = tiny_vit()
    x = torch.randn(1, 3, 32, 32)
    assert METHODS["smoothgrad"].unavailable_reason(vit) is None  # its default base, vanilla, runs anywhere
    for base, why in (("guided_backprop", "GELU"), ("lrp", "LayerNorm")):
        reason = METHODS["smoothgrad"].unavailable_reason(vit, {"base": base})
        assert reason.startswith(f"SmoothGrad with base {METHODS[base].display_name}: ") and why in reason
        with pytest.raises(SaliencyError, match=f"base {METHODS[base].display_name}"):
            explain(vit, x, "smoothgrad", target=0, base=base, n_samples=2)
