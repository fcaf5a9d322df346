"""explain_many(): the shared set from one shared forward pass, and every other method run once for all its
targets, equal separate explain() calls (bit for bit, or within 1e-6 where the split rounds differently)."""

from __future__ import annotations

import threading

import pytest
import torch
import torchvision

import explainers
from explainers import (
    Cancelled,
    Contrast,
    LayerError,
    ParameterError,
    SaliencyError,
    UnknownMethodError,
    explain,
    explain_many,
)
from explainers.hooks import lock_for
from explainers.many import shared_methods
from explainers.methods import cam
from explainers.targets import target_key

from .helpers import assert_untouched, hook_counts, sample_pixels, small_convnet, snapshot

ONE_PASS = ("vanilla", "input_x_gradient", "gradcam", "gradcam_pp", "xgradcam", "layercam", "hirescam", "eigencam")
RECTIFIED = ("guided_backprop", "deconvnet", "guided_gradcam")
SHARED = ONE_PASS + RECTIFIED
SMALL_LAYER = "features.5"


def test_the_shared_set_is_the_one_pass_set_plus_the_rectified_ones_and_every_name_is_registered():
    assert set(shared_methods()) == set(SHARED)
    assert all(name in explainers.METHODS for name in SHARED)


def assert_same(ours, ref):
    """What explain() returns, field by field; the arithmetic is the same, so the tensors are equal exactly."""
    assert torch.equal(ours.attribution, ref.attribution), ours.method
    assert torch.equal(ours.logits, ref.logits)
    assert torch.equal(ours.target, ref.target)
    assert (ours.layer_attribution is None) == (ref.layer_attribution is None)
    if ref.layer_attribution is not None:
        assert torch.equal(ours.layer_attribution, ref.layer_attribution)
    assert ours.notes == ref.notes
    assert ours.layer == ref.layer
    assert ours.params == ref.params
    assert ours.seed == ref.seed
    assert ours.method == ref.method
    assert ours.objective == ref.objective
    assert ours.extras.keys() == ref.extras.keys()
    for key, value in ref.extras.items():
        if isinstance(value, torch.Tensor):
            assert torch.allclose(ours.extras[key], value, rtol=1e-6, atol=0)
        else:
            assert ours.extras[key] == value


def separate(model, x, method, target, layer, **params):
    info = explainers.get_method(method)
    return explain(model, x, method, target, layer=layer if info.needs_layer else None, seed=0, **params)


@pytest.fixture(scope="module")
def small():
    torch.manual_seed(1)
    return small_convnet(), torch.randn(2, 3, 32, 32)


@pytest.mark.parametrize("targets", [["top1", "top2"], [3, Contrast("top1", 2)]])
def test_shared_set_equals_separate_calls_on_the_small_cnn(small, targets):
    model, x = small
    before = snapshot(model)
    results = explain_many(model, x, SHARED, targets, layer=SMALL_LAYER)
    assert list(results) == [(m, target_key(t)) for m in SHARED for t in targets]
    for (method, key), ours in results.items():
        assert_same(ours, separate(model, x, method, key, SMALL_LAYER))
    assert_untouched(model, before)


def test_shared_set_equals_separate_calls_on_the_default_model(default_bundle):
    x = torch.cat([default_bundle.normalize(sample_pixels(name, 160)) for name in ("cat.png", "coffee.png")])
    before = snapshot(default_bundle.model)
    results = explain_many(default_bundle, x, SHARED, ["top1", "top2"])
    assert len(results) == 2 * len(SHARED)
    for (method, target), ours in results.items():
        assert ours.attribution.shape[0] == 2
        assert_same(ours, separate(default_bundle, x, method, target, None))
    assert results[("gradcam", "top1")].layer == default_bundle.default_layer
    assert_untouched(default_bundle.model, before)


def test_subsets_take_only_the_passes_they_need_and_still_match(small):
    model, x = small
    for methods in (["vanilla"], ["gradcam", "hirescam"], ["eigencam"], ["eigencam", "input_x_gradient"],
                    ["guided_backprop"], ["deconvnet", "guided_backprop"], ["guided_gradcam", "eigencam"]):
        layer = SMALL_LAYER if any(explainers.METHODS[m].needs_layer for m in methods) else None
        results = explain_many(model, x, methods, ["top1"], layer=layer)
        for (method, target), ours in results.items():
            assert_same(ours, separate(model, x, method, target, SMALL_LAYER))


def test_relu_off_and_targets_by_name_index_or_tensor(small):
    model, x = small
    results = explain_many(model, x, ["gradcam", "vanilla"], [torch.tensor(4), [1, 2]], layer=SMALL_LAYER,
                           params={"gradcam": {"relu": False}})
    assert set(results) == {(m, k) for m in ("gradcam", "vanilla") for k in (4, (1, 2))}
    assert_same(results[("gradcam", 4)], separate(model, x, "gradcam", 4, SMALL_LAYER, relu=False))
    assert_same(results[("vanilla", (1, 2))], separate(model, x, "vanilla", [1, 2], None))
    assert (results[("gradcam", 4)].attribution < 0).any()  # relu=False kept negative evidence


def test_methods_outside_the_set_are_their_own_calls(small):
    model, x = small
    params = {"smoothgrad": {"n_samples": 3}, "occlusion": {"window": 16, "stride": 16}}
    results = explain_many(model, x, ["vanilla", "smoothgrad", "occlusion", "scorecam"], ["top1", "top2"],
                           layer=SMALL_LAYER, params=params, seed=5)
    for (method, target), ours in results.items():
        ref = explain(model, x, method, target, seed=5, layer=SMALL_LAYER if method == "scorecam" else None,
                      **params.get(method, {}))
        assert_close(ours, ref)


def count_forwards(model):
    calls = []
    handle = model.register_forward_pre_hook(lambda module, args: calls.append(len(args[0])))
    return calls, handle


def test_one_forward_for_the_whole_set_and_two_targets_against_one_per_call(small):
    model, x = small
    calls, handle = count_forwards(model)
    try:
        explain_many(model, x, SHARED, ["top1", "top2"], layer=SMALL_LAYER)
        assert calls == [len(x)]  # one forward, batched over both rows; the ranks come from its logits
        calls.clear()
        for method in ONE_PASS:
            for target in (3, 5):
                separate(model, x, method, target, SMALL_LAYER)
        assert calls == [len(x)] * (len(ONE_PASS) * 2)  # one per method and target
        calls.clear()
        separate(model, x, "gradcam", "top2", SMALL_LAYER)
        assert len(calls) == 2  # a rank costs explain() a clean pass first
    finally:
        handle.remove()


def test_several_batches_resolve_ranks_row_by_row(small):
    model, x = small
    x = torch.cat([x, x.flip(0), x * 0.5])  # six rows
    results = explain_many(model, x, ["vanilla", "gradcam"], ["top2", Contrast("top1", "top3")], layer=SMALL_LAYER,
                           batch_size=4)
    for (method, target), ours in results.items():
        ref = explain(model, x, method, target, layer=SMALL_LAYER if method == "gradcam" else None, seed=0,
                      batch_size=4)
        assert_same(ours, ref)
        assert ours.batch_size_used == 4


def test_errors_are_those_explain_gives(small):
    model, x = small
    with pytest.raises(UnknownMethodError) as ours:
        explain_many(model, x, ["vanilla", "nonsense"], ["top1"])
    with pytest.raises(UnknownMethodError) as theirs:
        explain(model, x, "nonsense")
    assert str(ours.value) == str(theirs.value)
    with pytest.raises(LayerError) as ours:
        explain_many(model, x, ["vanilla", "gradcam"], ["top1"], layer="nonexistent")
    with pytest.raises(LayerError) as theirs:
        explain(model, x, "gradcam", layer="nonexistent")
    assert str(ours.value) == str(theirs.value)
    with pytest.raises(SaliencyError, match="does not use a layer"):
        explain_many(model, x, ["vanilla"], ["top1"], layer=SMALL_LAYER)
    with pytest.raises(ParameterError, match="relu"):
        explain_many(model, x, ["gradcam"], ["top1"], params={"gradcam": {"relu": "maybe"}})
    with pytest.raises(ParameterError, match="not among"):
        explain_many(model, x, ["gradcam"], ["top1"], params={"vanilla": {}})
    with pytest.raises(explainers.TargetError) as ours:
        explain_many(model, x, ["vanilla"], ["top1", "no such class"])
    with pytest.raises(explainers.TargetError) as theirs:
        explain(model, x, "vanilla", "no such class")
    assert str(ours.value) == str(theirs.value)
    assert hook_counts(model) == 0


def assert_lock_free(model):
    """Another thread can take the model's lock: the call released it."""
    taken = []

    def take():
        lock = lock_for(model)
        taken.append(lock.acquire(timeout=5))
        if taken[-1]:
            lock.release()

    thread = threading.Thread(target=take)
    thread.start()
    thread.join()
    assert taken == [True]


def test_no_hooks_left_and_model_untouched_after_an_exception_inside(small, monkeypatch):
    model, x = small
    before = snapshot(model)

    def broken(captured):
        raise RuntimeError("weights failed")

    monkeypatch.setitem(cam.LAYER_MAPS, "gradcam", broken)
    with pytest.raises(RuntimeError, match="weights failed"):
        explain_many(model, x, ONE_PASS, ["top1", "top2"], layer=SMALL_LAYER)
    assert_untouched(model, before)
    assert_lock_free(model)

    # an exception raised inside the hooked pass itself
    def fail_in_pass(*args):
        raise RuntimeError("inside the pass")

    monkeypatch.setattr("explainers.many.to_nchw", fail_in_pass)
    model.train()  # a model left in train mode must come back in train mode
    try:
        with pytest.raises(RuntimeError, match="inside the pass"):
            explain_many(model, x, ["gradcam"], ["top1"], layer=SMALL_LAYER)
        assert_untouched(model, before, training=True)
        assert_lock_free(model)
    finally:
        model.eval()


def test_progress_covers_the_run_and_a_cancel_stops_it(small):
    model, x = small
    seen = []
    explain_many(model, x, ["vanilla", "gradcam", "smoothgrad"], ["top1", "top2"], layer=SMALL_LAYER,
                 params={"smoothgrad": {"n_samples": 3}}, progress=lambda done, total: seen.append((done, total)))
    assert seen[-1][0] == seen[-1][1]
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)
    assert len({total for _, total in seen}) == 1
    before = snapshot(model)
    with pytest.raises(Cancelled):
        explain_many(model, x, ["vanilla", "smoothgrad"], ["top1", "top2"], params={"smoothgrad": {"n_samples": 3}},
                     progress=lambda done, total: done < total // 2)
    assert_untouched(model, before)


TOGETHER = {
    "scorecam": {},
    "occlusion": {"window": 16, "stride": 16},
    "rise": {"n_masks": 16},
    "kernel_shap": {"n_samples": 12, "segmentation": "grid", "n_segments": 9},
    "lime": {"n_samples": 12, "segmentation": "grid", "n_segments": 9},
    "ablationcam": {},
}


def close(ours: torch.Tensor, ref: torch.Tensor) -> bool:
    """Equal within 1e-5 of the reference's largest magnitude (the issue's bound): what a different grouping of
    the same float32 sums (several targets in one einsum) can change."""
    return ours.shape == ref.shape and bool((ours - ref).abs().max() <= 1e-5 * ref.abs().max())


def assert_close(ours, ref):
    """assert_same, within 1e-5 (``close``) where the split arithmetic may round differently than one target
    alone."""
    try:
        assert_same(ours, ref)
    except AssertionError:
        assert close(ours.attribution, ref.attribution), ours.method
        assert (ours.layer_attribution is None) == (ref.layer_attribution is None)
        if ref.layer_attribution is not None:
            assert close(ours.layer_attribution, ref.layer_attribution), ours.method
        assert torch.equal(ours.logits, ref.logits)
        assert torch.equal(ours.target, ref.target)
        assert ours.notes == ref.notes
        assert (ours.layer, ours.params, ours.seed, ours.method) == (ref.layer, ref.params, ref.seed, ref.method)
        assert ours.extras.keys() == ref.extras.keys()
        for key, value in ref.extras.items():
            if isinstance(value, torch.Tensor):
                assert close(ours.extras[key], value), key
            else:
                assert ours.extras[key] == value


def test_target_free_methods_run_once_and_each_target_equals_its_own_call(small):
    model, x = small
    targets = ["top1", "top2", 4]
    before = snapshot(model)
    results = explain_many(model, x, list(TOGETHER), targets, layer=SMALL_LAYER, params=TOGETHER, seed=3)
    assert list(results) == [(m, target_key(t)) for m in TOGETHER for t in targets]
    for (method, key), ours in results.items():
        layer = SMALL_LAYER if explainers.METHODS[method].needs_layer else None
        ref = explain(model, x, method, key, layer=layer, seed=3, **TOGETHER[method])
        assert_close(ours, ref)
        assert ours.batch_size_used == ref.batch_size_used
    assert_untouched(model, before)
    # the targets really differ, so the split is not one map copied
    assert not torch.equal(results[("rise", "top1")].attribution, results[("rise", "top2")].attribution)


class WithConstantClass(torch.nn.Module):
    """The small CNN with one more class whose logit is always 0, whatever the input."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        logits = self.net(x)
        return torch.cat([logits, torch.zeros_like(logits[:, :1])], dim=1)


def test_per_target_notes_when_one_target_ignores_every_mask(small):
    net, x = small
    model = WithConstantClass(net).eval()
    constant = model(x).shape[1] - 1
    # the constant class scores the same whatever is masked: RISE and Score-CAM say so for that target only
    targets = [constant, "top1"]
    results = explain_many(model, x, ["rise", "scorecam"], [*targets, constant - 1], layer="net." + SMALL_LAYER,
                           params={"rise": {"n_masks": 16}}, seed=3)
    for (method, key), ours in results.items():
        ref = explain(model, x, method, key, layer="net." + SMALL_LAYER if method == "scorecam" else None, seed=3,
                      **({"n_masks": 16} if method == "rise" else {}))
        assert_close(ours, ref)
    for method in ("rise", "scorecam"):
        assert all(note and note[0].startswith("the map is all zero") for note in results[(method, constant)].notes)
        assert results[(method, "top1")].notes == [(), ()]
    # the same with the constant class second, where the method's own first-target judgement does not reach
    results = explain_many(model, x, ["rise", "scorecam"], ["top1", constant], layer="net." + SMALL_LAYER,
                           params={"rise": {"n_masks": 16}}, seed=3)
    for (method, key), ours in results.items():
        ref = explain(model, x, method, key, layer="net." + SMALL_LAYER if method == "scorecam" else None, seed=3,
                      **({"n_masks": 16} if method == "rise" else {}))
        assert_close(ours, ref)


@pytest.mark.parametrize("method", list(TOGETHER))
def test_two_targets_take_the_forward_passes_of_one(small, method):
    model, x = small
    calls, handle = count_forwards(model)
    layer = SMALL_LAYER if method == "scorecam" else None
    try:
        explain_many(model, x, [method], ["top1"], layer=layer, params={method: TOGETHER[method]}, seed=3)
        calls.clear()  # the first call may measure the layer catalogue (one more pass, cached after)
        explain_many(model, x, [method], ["top1"], layer=layer, params={method: TOGETHER[method]}, seed=3)
        one = list(calls)
        calls.clear()
        explain_many(model, x, [method], ["top1", "top2"], layer=layer, params={method: TOGETHER[method]}, seed=3)
        assert calls == one
        assert len(one) > 2  # the perturbed passes are counted, not only the clean ones
    finally:
        handle.remove()


# Small settings, so that every method runs in a moment on the small CNN.
QUICK = {
    "smoothgrad": {"n_samples": 3},
    "smoothgrad_sq": {"n_samples": 3, "base": "integrated_gradients", "n_steps": 3, "baseline": "zero"},
    "vargrad": {"n_samples": 3, "base": "guided_backprop"},
    "integrated_gradients": {"n_steps": 5, "baseline": "uniform_noise"},  # random: the targets share the draw
    "occlusion": {"window": 16, "stride": 16},
    "rise": {"n_masks": 16},
    "expected_gradients": {"n_samples": 3},
    "gradient_shap": {"n_samples": 3},
    "deeplift": {"baseline": "zero"},
    "deeplift_shap": {"n_baselines": 3},
    "kernel_shap": {"n_samples": 12, "segmentation": "grid", "n_segments": 9},
    "lime": {"n_samples": 12, "segmentation": "grid", "n_segments": 9},
    "extremal_perturbation": {"max_iter": 5},
    "blur_ig": {"n_steps": 4, "max_sigma": 4.0},
    "guided_ig": {"n_steps": 4, "baseline": "zero"},
    "xrai": {"n_steps": 3, "baselines": "min_max", "scales": "250,500,1200"},
}
TRANSFORMER_METHODS = ("attention_rollout", "legrad", "chefer_generic", "transformer_attribution", "attnlrp")


def tiny_vit():
    torch.manual_seed(2)
    vit = torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2,
                                               hidden_dim=16, mlp_dim=32, num_classes=7).eval()
    torch.nn.init.normal_(vit.heads.head.weight, std=0.5)  # torchvision zero-initialises the head
    return vit


@pytest.mark.parametrize("targets", [["top2"], ["top1", 4, Contrast("top1", "top2")]], ids=["1 target", "3 targets"])
def test_every_method_equals_its_separate_calls(small, targets):
    model, x = small
    methods = [m for m, info in explainers.METHODS.items() if info.unavailable_reason(model) is None]
    assert len(methods) >= 18  # every method but the transformer's rollout runs on the small CNN
    before = snapshot(model)
    layer = "features.6"  # the last ReLU, which feeds the pooling and the linear layer as CAM requires
    results = explain_many(model, x, methods, targets, layer=layer, seed=7,
                           params={m: p for m, p in QUICK.items() if m in methods})
    assert list(results) == [(m, target_key(t)) for m in methods for t in targets]
    for (method, key), ours in results.items():
        target = next(t for t in targets if target_key(t) == key)
        ref = explain(model, x, method, target, layer=layer if explainers.METHODS[method].needs_layer else None,
                      seed=7, **QUICK.get(method, {}))
        assert_close(ours, ref)
    assert_untouched(model, before)
    vit = tiny_vit()
    xv = torch.randn(2, 3, 32, 32)
    for key, ours in explain_many(vit, xv, [*TRANSFORMER_METHODS, "gradcam"], targets).items():
        target = next(t for t in targets if target_key(t) == key[1])
        assert_close(ours, explain(vit, xv, key[0], target, seed=0))


def test_gradient_methods_share_the_noisy_and_path_inputs_across_targets(small):
    model, x = small
    calls, handle = count_forwards(model)
    try:
        for method in ("smoothgrad", "integrated_gradients", "guided_backprop", "guided_gradcam"):
            layer = SMALL_LAYER if method == "guided_gradcam" else None
            explain_many(model, x, [method], [3], layer=layer, params={m: QUICK[m] for m in [method] if m in QUICK})
            one = list(calls)
            calls.clear()
            explain_many(model, x, [method], [3, 5], layer=layer, params={m: QUICK[m] for m in [method] if m in QUICK})
            assert calls == one, method  # the second target costs backward passes only
            calls.clear()
    finally:
        handle.remove()


def test_a_shared_backward_rule_leaves_the_plain_gradient_alone(small):
    """With guided backprop in the set the ReLUs are hooked for every backward; the plain ones must be ReLU's own."""
    model, x = small
    both = explain_many(model, x, ["vanilla", "guided_backprop", "gradcam"], [2], layer=SMALL_LAYER)
    alone = explain_many(model, x, ["vanilla", "gradcam"], [2], layer=SMALL_LAYER)
    assert torch.equal(both[("vanilla", 2)].attribution, alone[("vanilla", 2)].attribution)
    assert torch.equal(both[("gradcam", 2)].attribution, alone[("gradcam", 2)].attribution)
    assert not torch.equal(both[("vanilla", 2)].attribution, both[("guided_backprop", 2)].attribution)
    assert (both[("guided_backprop", 2)].attribution != 0).any()
    assert hook_counts(model) == 0


def test_a_layer_sweep_in_one_pass_equals_one_call_per_layer(small, default_bundle):
    model, x = small
    layers = ["features.0", "features.2", "features.4", "features.5", "features.6"]
    explainers.many.explain_layers(model, x, "gradcam", "top2", layers)  # the catalogue may measure itself first
    calls, handle = count_forwards(model)
    try:
        sweep = explainers.many.explain_layers(model, x, "gradcam", "top2", layers)
        assert calls == [len(x)]  # one forward for every layer
    finally:
        handle.remove()
    assert list(sweep) == layers
    for layer, ours in sweep.items():
        assert_same(ours, separate(model, x, "gradcam", "top2", layer))
    assert hook_counts(model) == 0
    x = default_bundle.normalize(sample_pixels("cat.png", 160))
    blocks = [entry.name for entry in default_bundle.layers][-4:]
    for layer, ours in explainers.many.explain_layers(default_bundle, x, "layercam", 3, blocks, relu=False).items():
        assert_close(ours, separate(default_bundle, x, "layercam", 3, layer, relu=False))
    with pytest.raises(ParameterError, match="one-capture CAM"):
        explainers.many.explain_layers(model, x, "scorecam", 1, layers)
