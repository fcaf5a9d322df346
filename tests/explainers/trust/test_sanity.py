"""Sanity checks: the cascade's blocks and randomisation, the Adebayo pattern on the default model, the random-logit
test, data randomisation, input invariance and the verdict. The similarity metrics are test_similarity.py's; the
``sanity`` command is tests/explainers/cli/test_sanity.py's; Quantus' MPRT and RandomLogit as oracles live in
tests/explainers/test_interop.py."""

from __future__ import annotations

import json
from copy import deepcopy

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

import explainers
from explainers import Cancelled
from explainers.digits.data import gallery
from explainers.models.digits import load_digits_bundle
from explainers.trust import sanity, similarity

from ...conftest import sample_path
from ..helpers import assert_untouched, small_convnet, snapshot

METRICS = similarity.METRICS


# ---------------------------------------------------------------------------------------------------------
# Blocks and randomisation
# ---------------------------------------------------------------------------------------------------------


def _assert_covers_every_parameter(model: nn.Module, blocks: list[sanity.Block]) -> None:
    owners: dict[int, str] = {}
    modules = dict(model.named_modules())
    for block in blocks:
        for name in block.modules:
            for param in modules[name].parameters():
                assert id(param) not in owners, f"parameter in {owners.get(id(param))} and {block.name}"
                owners[id(param)] = block.name
    assert set(owners) == {id(p) for p in model.parameters()}


def test_efficientnet_lite0_cascade_has_19_steps(default_bundle):
    blocks = sanity.cascade_blocks(default_bundle.model)
    names = [b.name for b in reversed(blocks)]  # the cascade's order: output first
    assert names == ["_fc", "_conv_head+_bn1", *[f"_blocks.{i}" for i in range(15, -1, -1)], "_conv_stem+_bn0"]
    _assert_covers_every_parameter(default_bundle.model, blocks)


def test_resnet18_cascade_follows_the_same_rule(seeded_resnet18):
    blocks = sanity.cascade_blocks(seeded_resnet18)
    assert [b.name for b in blocks] == ["conv1+bn1", "layer1.0", "layer1.1", "layer2.0", "layer2.1", "layer3.0",
                                        "layer3.1", "layer4.0", "layer4.1", "fc"]
    _assert_covers_every_parameter(seeded_resnet18, blocks)
    # a Sequential subclass (torchvision's Conv2dNormActivation) is one block, not opened
    mobilenet = torchvision.models.mobilenet_v2(weights=None)
    names = [b.name for b in sanity.cascade_blocks(mobilenet)]
    assert names[0] == "features.0" and names[-2:] == ["features.18", "classifier.1"] and len(names) == 20
    _assert_covers_every_parameter(mobilenet, sanity.cascade_blocks(mobilenet))


def test_randomise_resets_only_its_block_and_keeps_the_global_rng(seeded_resnet18):
    copy = __import__("copy").deepcopy(seeded_resnet18)
    before = snapshot(copy)
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    sanity.randomise(copy, sanity.Block("layer4.1", ("layer4.1",)), seed=7)
    assert torch.equal(torch.rand(3), expected_next), "randomise changed the caller's random state"
    after = copy.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("layer4.1.") for k in changed)
    # batch norm is reset to the identity with fresh statistics, as reset_parameters() defines
    assert torch.equal(after["layer4.1.bn1.running_var"], torch.ones(512))


class _OwnParameters(nn.Module):
    """A model holding a parameter itself (as a ViT holds its class token), and a model-wide reset that must
    not run."""

    def __init__(self):
        super().__init__()
        self.token = nn.Parameter(torch.linspace(-1, 1, 4))
        self.fc = nn.Linear(4, 3)

    def reset_parameters(self):
        raise AssertionError("randomise() must not reset the whole model")


def test_parameters_a_model_holds_itself_are_a_block_of_their_own():
    model = _OwnParameters()
    blocks = sanity.cascade_blocks(model)
    assert [b.name for b in blocks] == ["(model)", "fc"]
    _assert_covers_every_parameter_with_own(model, blocks)
    fc_before = model.fc.weight.detach().clone()
    sanity.randomise(model, blocks[0], seed=0)
    assert not torch.equal(model.token.detach(), torch.linspace(-1, 1, 4))
    assert torch.equal(model.fc.weight.detach(), fc_before)


def _assert_covers_every_parameter_with_own(model, blocks):
    own = {id(p) for p in model.parameters(recurse=False)}
    inner = [b for b in blocks if b.modules != ("(model)",)]
    covered = {id(p) for b in inner for name in b.modules for p in model.get_submodule(name).parameters()}
    assert own | covered == {id(p) for p in model.parameters()} and not own & covered


def test_cascade_never_alters_the_model_and_cancels_cleanly():
    model = small_convnet(0)
    before = snapshot(model)
    inputs = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    result = sanity.model_randomisation(model, inputs, ["vanilla", "gradcam"], seed=3)
    assert_untouched(model, before)
    assert [s.name for s in result.steps] == ["original", "fc", "features.5", "features.3", "features.0+features.1"]
    copy = deepcopy(model)
    for step in result.steps[1:]:  # each step reports the copy's own prediction after its block
        sanity.randomise(copy, step.block, seed=3)
        with torch.no_grad():
            logits = copy(inputs)
        np.testing.assert_allclose(step.target_logit, logits[[0, 1], result.target].numpy(), rtol=1e-5, atol=1e-6)
        assert step.top1.tolist() == logits.argmax(1).tolist()
        assert step.logit_range == pytest.approx(float((logits.amax(0) - logits.amin(0)).max()), rel=1e-4)
    calls = []

    def stop_at_third(done, total):
        calls.append((done, total))
        return len(calls) < 3

    with pytest.raises(Cancelled):
        sanity.model_randomisation(model, inputs, ["vanilla"], progress=stop_at_third)
    assert len(calls) == 3
    assert_untouched(model, before)


def test_progress_counts_every_pass_to_the_total():
    model = small_convnet(1)
    inputs = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    seen = []
    sanity.model_randomisation(model, inputs, ["vanilla", ("smoothgrad", {"n_samples": 3})], steps=2,
                               progress=lambda done, total: seen.append((done, total)))
    totals = {total for _, total in seen}
    assert len(totals) == 1
    total = totals.pop()
    # 3 steps (original + 2) x 3 rows x (1 vanilla + 3 noisy copies); the controls run no passes
    assert total == 3 * 3 * (1 + 3)
    assert seen[-1][0] == total and [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_run_sanity_progress_covers_every_check_and_never_goes_back():
    model = small_convnet(1)
    inputs = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    seen = []
    report = sanity.run_sanity(model, inputs, ["vanilla"], steps=1, random_classes_count=2, shift=0.5,
                               progress=lambda done, total: seen.append((done, total)))
    assert report.input_invariance is not None
    done = [d for d, _ in seen]
    assert done == sorted(done) and all(d <= t for d, t in seen)
    # the model's own maps for the target are computed once, by the random-logit test (first): the cascade's step
    # 0 and input invariance's unshifted maps are those, and run no passes of their own
    logit = 2  # 2 rows, one pass each: the 3 classes share it (a backward each)
    cascade = 1 * 2  # 1 randomised step x 2 rows x 1 vanilla pass
    invariance = 2  # the shifted copy
    totals = list(dict.fromkeys(t for _, t in seen))
    assert totals == [logit, logit + cascade, logit + cascade + invariance]
    assert seen[-1] == (totals[-1], totals[-1])
    # each check stops when asked: cancelling inside the last check still raises Cancelled
    with pytest.raises(Cancelled):
        sanity.run_sanity(model, inputs, ["vanilla"], steps=1, random_classes_count=2, shift=0.5,
                          progress=lambda done, total: done < seen[-1][1] - 1)


def _values(table) -> list:
    """Every similarity value of a nested list/dict of {metric: Similarity}, flattened (NaN for undefined)."""
    if isinstance(table, similarity.Similarity):
        return [np.nan if table.value is None else table.value]
    items = table.values() if isinstance(table, dict) else table
    return [v for item in items for v in _values(item)]


def test_run_sanity_computes_the_models_own_maps_once_and_equals_each_check_alone():
    """The target's maps on the model are computed once (with the random-logit test's other classes) and taken by
    the cascade's step 0, input invariance and data randomisation: the report equals the checks run one by one, to
    float rounding, with fewer forward passes of the model itself."""
    model, other = small_convnet(3), small_convnet(5)
    inputs = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    methods = ["vanilla", ("smoothgrad", {"n_samples": 3}), "gradcam",
               ("integrated_gradients", {"n_steps": 4, "baseline": "zero"})]
    forwards = []
    handle = model.register_forward_hook(lambda module, args, output: forwards.append(module is model))
    try:
        report = sanity.run_sanity(model, inputs, methods, steps=2, random_classes_count=2, shift=0.5,
                                   randomised=other)
        together = sum(forwards)
        forwards.clear()
        cascade = sanity.model_randomisation(model, inputs, methods, steps=2)
        logit = sanity.random_logit(model, inputs, methods, classes=2)
        invariance = sanity.input_invariance(model, inputs, methods, shift=0.5)
        data = sanity.data_randomisation(model, other, inputs, methods)
        alone = sum(forwards)  # forwards of the model itself (its copies are other modules)
    finally:
        handle.remove()
    assert together < alone
    for key in cascade.methods:
        np.testing.assert_allclose(_values(report.cascade.methods[key].similarity),
                                   _values(cascade.methods[key].similarity), rtol=0, atol=1e-6)
        np.testing.assert_allclose(report.cascade.methods[key].thumbnails, cascade.methods[key].thumbnails,
                                   rtol=1e-5, atol=1e-7)
    assert [s.top1.tolist() for s in report.cascade.steps] == [s.top1.tolist() for s in cascade.steps]
    np.testing.assert_allclose(_values(report.random_logit.methods), _values(logit.methods), rtol=0, atol=1e-6)
    for key in invariance.similarity:
        np.testing.assert_allclose(report.input_invariance.relative_change[key], invariance.relative_change[key],
                                   rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(_values(report.input_invariance.similarity[key]),
                                   _values(invariance.similarity[key]), rtol=0, atol=1e-6)
    np.testing.assert_allclose(_values(report.data_randomisation.methods), _values(data.methods), rtol=0, atol=1e-6)


def test_checks_reuse_maps_only_for_the_same_computation():
    """A check takes another's maps only when they are the same computation: another seed, batch size, target
    or parameter set is computed afresh."""
    model = small_convnet(3)
    inputs = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    methods = ["vanilla", ("smoothgrad", {"n_samples": 3})]
    tracker = explainers.batching.Progress(1)
    plans = sanity._plans(sanity.method_specs(methods), model)
    runner = sanity._Runner(model, None, inputs, plans, None, 4, 42, tracker)
    target, _ = sanity._resolve_target(model, None, inputs, None, "logit", 4)
    results, logits = runner.run(model, (target,))
    known = runner.original(model, target, results, logits)
    assert set(known.maps_for(runner, model, (target,), inputs)) == {"vanilla", "smoothgrad"}
    other_class = type(target)((target.classes + 1) % 10, target.objective, 9)
    assert known.maps_for(runner, model, (other_class,), inputs) == {}
    assert known.maps_for(runner, deepcopy(model), (target,), inputs) == {}
    assert known.maps_for(runner, model, (target,), inputs + 1) == {}
    for changed in (sanity._Runner(model, None, inputs, plans, None, 4, 7, tracker),
                    sanity._Runner(model, None, inputs, plans, None, 2, 42, tracker)):
        assert known.maps_for(changed, model, (target,), inputs) == {}
    noisier = sanity._plans(sanity.method_specs(["vanilla", ("smoothgrad", {"n_samples": 5})]), model)
    assert set(known.maps_for(sanity._Runner(model, None, inputs, noisier, None, 4, 42, tracker), model,
                              (target,), inputs)) == {"vanilla"}


class _ZeroingLinear(nn.Linear):
    """A head whose re-initialisation is all zeros: after it, every input gradient is exactly zero."""

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)


def test_a_map_that_becomes_constant_is_undefined_in_results_and_json():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), _ZeroingLinear(4 * 24 * 24, 5))
    with torch.no_grad():
        model[3].weight.normal_(0, 0.05)  # its constructor zeroed it; the trained head is random
    model.eval()
    inputs = torch.randn(1, 3, 24, 24, generator=torch.Generator().manual_seed(2))
    result = sanity.model_randomisation(model, inputs, ["vanilla"], controls=(), steps=1)
    assert all(cell.defined for cell in result.methods["vanilla"].similarity[0][0].values())
    after_head = result.methods["vanilla"].similarity[1][0]
    assert after_head["spearman_abs"] == similarity.Similarity(None, "undefined: constant map")
    assert after_head["spearman"].value is None and after_head["hog"].value is None
    check = sanity.verdict(result).rows["vanilla"]["model_randomisation"].measures["spearman_abs"]
    assert check.value is None and check.passed is True and "constant" in check.note
    text = json.dumps(result.to_dict(), allow_nan=False)
    assert '"undefined: constant map"' in text


def test_the_shared_set_comes_from_one_shared_pass_per_step(default_bundle):
    inputs = default_bundle.preprocess(explainers.open_image(sample_path("cat.png")))
    shared = ["gradcam", "guided_backprop", "guided_gradcam", "vanilla", "input_x_gradient"]
    result = sanity.model_randomisation(default_bundle, inputs, [*shared, sanity.MethodSpec("smoothgrad",
                                        {"n_samples": 2})], controls=(), steps=1, thumbnail_size=None)
    for method in shared:
        assert "shared forward pass" in result.methods[method].shared
    assert result.methods["smoothgrad"].shared == ""
    assert any(note.startswith("gradcam, guided_backprop, guided_gradcam, vanilla, input_x_gradient: one forward")
               for note in result.shared)
    # the shared maps are the registered methods' maps: the same numbers explain() gives on the original
    for method in shared:
        direct = explainers.explain(default_bundle, inputs, method, target=int(result.target[0]), seed=42)
        expected = np.abs(sanity.signed_map(direct.attribution[0]))
        np.testing.assert_allclose(result.methods[method].thumbnails[0, 0], expected, rtol=1e-4,
                                   atol=1e-6 * float(expected.max()))


# ---------------------------------------------------------------------------------------------------------
# The Adebayo pattern on the default model
# ---------------------------------------------------------------------------------------------------------


ADEBAYO_METHODS = [
    "vanilla",
    sanity.MethodSpec("smoothgrad", {"n_samples": 4}),
    sanity.MethodSpec("integrated_gradients", {"n_steps": 4}),
    "gradcam",
    "guided_backprop",
    "guided_gradcam",
]


def test_the_cascade_batches_each_call_as_explain_does(monkeypatch):
    """A method's rows in a cascade step are batched by explain()'s own rule (core.method_batches): here the CPU's
    largest-tensor cap, patched to three rows' worth, binds in both (the cascade had run every call at the
    device's preferred 16 rows, 1.25x slower a step on the default model)."""
    from explainers import batching

    from ..helpers import MaxBatch

    model = MaxBatch(small_convnet().eval())
    inputs = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    monkeypatch.setattr(batching, "CPU_LARGEST_TENSOR", 3 * batching.largest_tensor_bytes(model, inputs))
    ig = sanity.MethodSpec("integrated_gradients", {"n_steps": 16, "baseline": "zero"})
    explainers.explain(model, inputs, ig.method, target=0, **dict(ig.params))
    alone = model.largest
    model.tally.largest = 0
    sanity.model_randomisation(model, inputs, [ig], target=0, controls=(), steps=2)
    assert alone == 3
    assert model.largest == alone
    model.tally.largest = 0
    sanity.model_randomisation(model, inputs, [ig], target=0, controls=(), steps=2, batch_size=16)
    assert model.largest == 16  # a batch size asked for is the one used


@pytest.mark.slow
def test_adebayo_pattern_on_the_default_model(default_bundle):
    """Over the top 7 of 19 steps (head, conv head, blocks 15-11), vanilla, SmoothGrad, IG and Grad-CAM average
    below 0.5 on every similarity measure, guided backprop above 0.9; Guided Grad-CAM changes little by the signed
    Spearman while the head is randomised (step 2), where Grad-CAM has already changed; the sobel control stays
    at 1 and the random control near 0 at every step; the cached model is bit-identical afterwards."""
    before = snapshot(default_bundle.model)
    inputs = default_bundle.preprocess(explainers.open_image(sample_path("cat.png")))
    step = 7
    result = sanity.model_randomisation(default_bundle, inputs, ADEBAYO_METHODS, steps=step)
    assert_untouched(default_bundle.model, before)
    assert [s.name for s in result.steps[1:]] == ["_fc", "_conv_head+_bn1", "_blocks.15", "_blocks.14",
                                                  "_blocks.13", "_blocks.12", "_blocks.11"]
    assert all(int(s.target_logit.size) == 1 for s in result.steps)
    table = sanity.verdict(result)
    for key in ("vanilla", "smoothgrad", "integrated_gradients", "gradcam"):
        check = table.rows[key]["model_randomisation"]
        assert check.passed, f"{key}: {check.summary()}"
        assert table.disagreement(key) is None  # the paper found they pass, and so do they here
    gbp = result.methods["guided_backprop"]
    for metric in METRICS:
        assert np.mean(gbp.curve(metric)[1:]) > 0.9, gbp.curve(metric)
    assert table.rows["guided_backprop"]["model_randomisation"].passed is False
    assert table.disagreement("guided_backprop") is None
    ggc, gradcam = result.methods["guided_gradcam"], result.methods["gradcam"]
    assert ggc.curve("spearman")[2] > 0.8, ggc.curve("spearman")
    assert gradcam.curve("spearman_abs")[2] < 0.6 < ggc.curve("spearman")[2]
    for metric in METRICS:
        assert result.methods["sobel"].curve(metric) == pytest.approx([1.0] * (step + 1), abs=1e-12)
        assert all(abs(v) < 0.1 for v in result.methods["random"].curve(metric)[1:])
    assert table.rows["sobel"]["model_randomisation"].passed is False and table.disagreement("sobel") is None


# ---------------------------------------------------------------------------------------------------------
# Random logit, data randomisation, input invariance
# ---------------------------------------------------------------------------------------------------------


def test_random_logit_guided_backprop_is_class_insensitive(default_bundle):
    inputs = default_bundle.preprocess(explainers.open_image(sample_path("cat.png")))
    result = sanity.random_logit(default_bundle, inputs, ["vanilla", "guided_backprop"], classes=2, seed=0)
    assert result.classes.shape == (1, 2) and result.target[0] not in result.classes[0]
    gbp, vanilla = result.mean("guided_backprop", "spearman_abs"), result.mean("vanilla", "spearman_abs")
    assert gbp > 0.95 and vanilla < 0.9 and vanilla < gbp
    assert result.mean("sobel", "ssim") == pytest.approx(1.0)
    rows = sanity.verdict(logit=result).rows
    assert rows["vanilla"]["random_logit"].measures["spearman_abs"].passed
    assert rows["guided_backprop"]["random_logit"].measures["spearman_abs"].passed is False


def test_random_classes_are_distinct_seeded_and_never_the_target():
    target = np.array([3, 0, 9])
    first = sanity.random_classes(target, 10, 4, seed=5)
    assert np.array_equal(first, sanity.random_classes(target, 10, 4, seed=5))
    assert all(len(set(row)) == 4 and t not in row for row, t in zip(first, target))
    with pytest.raises(explainers.ParameterError):
        sanity.random_classes(target, 10, 10, seed=0)


def test_random_logit_draws_the_same_classes_for_an_image_whatever_its_row():
    """The random classes (and so the scores) of an image depend on the image and the seed, not on its position in
    the batch: the same photo alone and as row 2 of 3 (issue 18: 0.18 alone, 0.42 as row 2 of 3 before)."""
    model = small_convnet(0)
    generator = torch.Generator().manual_seed(7)
    image, others = torch.randn(1, 3, 16, 16, generator=generator), torch.randn(2, 3, 16, 16, generator=generator)
    alone = sanity.random_logit(model, image, ["vanilla"], classes=3, controls=())
    batch = sanity.random_logit(model, torch.cat([others[:1], image, others[1:]]), ["vanilla"], classes=3,
                                controls=())
    np.testing.assert_array_equal(alone.classes[0], batch.classes[1])
    for k in range(3):
        assert alone.methods["vanilla"][0][k]["spearman"].value == pytest.approx(
            batch.methods["vanilla"][1][k]["spearman"].value, abs=1e-6)
    # the rows are drawn apart: another image draws its own classes, and another seed other ones
    keys = sanity.row_keys(torch.cat([image, image, others[:1]]))
    assert keys[0] == keys[1] != keys[2]
    target = np.array([0, 0])
    assert not np.array_equal(sanity.random_classes(target, 1000, 3, seed=1, keys=[5, 5]),
                              sanity.random_classes(target, 1000, 3, seed=2, keys=[5, 5]))


def test_data_randomisation_accepts_any_two_models():
    inputs = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    model, twin, other = small_convnet(0), small_convnet(0), small_convnet(1)
    same = sanity.data_randomisation(model, twin, inputs, ["vanilla", "gradcam"])
    for key in ("vanilla", "gradcam", "sobel"):
        assert same.mean(key, "spearman_abs") == pytest.approx(1.0)
    different = sanity.data_randomisation(model, other, inputs, ["vanilla", "gradcam"])
    assert different.mean("vanilla", "spearman_abs") < 0.9
    assert different.mean("sobel", "spearman_abs") == pytest.approx(1.0)
    assert different.thumbnails["vanilla"].shape == (2, 2, 16, 16)
    json.dumps(different.to_dict(thumbnails=True), allow_nan=False)


def test_data_randomisation_on_the_digits_models():
    """The shipped LeNet-5 against its shipped copy trained on shuffled labels, on ten gallery digits: a missing
    module or weights file fails here."""
    real, shuffled = explainers.load_model("lenet_digits"), load_digits_bundle("shuffled")
    inputs = torch.cat([real.preprocess(item.image) for item in gallery(10)])
    result = sanity.data_randomisation(real, shuffled, inputs, ["vanilla", "gradcam", "guided_backprop"])
    for key in ("vanilla", "gradcam"):
        assert result.mean(key, "spearman_abs") < result.mean("sobel", "spearman_abs") == pytest.approx(1.0)
    assert set(sanity.verdict(data=result).rows) == {"vanilla", "gradcam", "guided_backprop", "sobel"}


def test_input_invariance_input_x_gradient_changes_vanilla_does_not():
    model = small_convnet(2)  # its first conv pads with zeros: the absorbed bias must handle the border
    before = snapshot(model)
    inputs = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    result = sanity.input_invariance(model, inputs, ["vanilla", "input_x_gradient", "gradcam"], shift=(-1.0, 0.5, 2))
    assert_untouched(model, before)
    assert result.first_layer == "features.0"
    assert result.logit_difference <= 1e-4 * max(1.0, result.logit_scale)
    assert result.relative_change["vanilla"].max() < 1e-3
    assert result.relative_change["gradcam"].max() < 1e-3
    assert result.relative_change["input_x_gradient"].min() > 0.1
    rows = sanity.verdict(invariance=result).rows
    assert rows["vanilla"]["input_invariance"].passed and not rows["input_x_gradient"]["input_invariance"].passed


def test_input_invariance_needs_the_border_correction():
    """With a plain constant bias b - W·shift the zero-padded border would differ: the check's outputs match
    only because the absorbed bias is the layer's own response to the shifted constant image."""
    conv = small_convnet(2).features[0]
    shift = torch.full((1, 3, 8, 8), -1.0)
    with torch.no_grad():
        response = conv(shift) - conv(torch.zeros_like(shift))
        interior = (conv.weight.sum(dim=(2, 3)) * -1.0).sum(dim=1)
    assert torch.allclose(response[0, :, 3, 3], interior, atol=1e-5)
    assert not torch.allclose(response[0, :, 0, 0], interior, atol=1e-3)


class _ChannelMean(nn.Module):
    def forward(self, x):
        return x.mean(dim=1, keepdim=True)


def test_input_invariance_absorbs_into_any_affine_first_layer_and_refuses_others():
    torch.manual_seed(0)
    head = [nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 14 * 14, 5)]
    gray_first = nn.Sequential(_ChannelMean(), *head).eval()  # a parameter-free linear step, as lenet_digits has
    inputs = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(6))
    result = sanity.input_invariance(gray_first, inputs, ["vanilla", "input_x_gradient"], shift=0.5)
    assert result.first_layer == "0"
    assert result.relative_change["vanilla"].max() < 1e-3 < 0.1 < result.relative_change["input_x_gradient"].min()
    relu_first = nn.Sequential(nn.ReLU(), nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 14 * 14, 5)).eval()
    with pytest.raises(explainers.SaliencyError, match="not affine"):
        sanity.input_invariance(relu_first, inputs, ["vanilla"])


def test_input_invariance_on_the_default_model_keeps_the_logits(default_bundle):
    inputs = default_bundle.preprocess(explainers.open_image(sample_path("cat.png")))
    result = sanity.input_invariance(default_bundle, inputs, ["vanilla", "input_x_gradient"])
    assert result.first_layer == "_conv_stem"
    assert result.logit_difference <= 1e-4 * result.logit_scale
    assert result.relative_change["vanilla"][0] < 0.05 < result.relative_change["input_x_gradient"][0]


# ---------------------------------------------------------------------------------------------------------
# Verdict
# ---------------------------------------------------------------------------------------------------------


def test_verdict_table_shows_thresholds_and_decides_by_them():
    model = small_convnet(0)
    inputs = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    result = sanity.model_randomisation(model, inputs, ["vanilla"], controls=("sobel",))
    for below in (0.0, 1.01):
        table = sanity.verdict(result, thresholds=sanity.Thresholds(model_below=below))
        checks = table.rows["vanilla"]["model_randomisation"].measures
        assert set(checks) == set(METRICS)
        for check in checks.values():
            if check.value is not None:
                assert check.passed is (check.value < below) and check.threshold == below
        assert f"is below {below:g}" in table.table() and "vanilla" in table.table()
    json.dumps(table.to_dict(), allow_nan=False)
