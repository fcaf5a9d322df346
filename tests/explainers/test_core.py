"""The method contract and the registry's cost as data, checked against what every method really runs."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision.models.vision_transformer import VisionTransformer

from explainers import METHODS, Attribution, Call, explain
from explainers.batching import Progress
from explainers.core import run_method
from explainers.layers import cached_catalogue
from explainers.targets import TargetSpec

from .helpers import assert_untouched, small_convnet, snapshot

ROOT = Path(__file__).resolve().parents[2]

# Parameters that keep each method to a handful of passes on 2 images of 16x16 (32x32 for the ViT).
PARAMS = {
    "integrated_gradients": {"n_steps": 5, "baseline": "zero"},
    "smoothgrad": {"n_samples": 3},
    "smoothgrad_sq": {"n_samples": 2, "base": "integrated_gradients", "n_steps": 2, "baseline": "zero"},
    "vargrad": {"n_samples": 3, "base": "guided_backprop"},
    "occlusion": {"window": 8, "stride": 4},
    "rise": {"n_masks": 7},
    "expected_gradients": {"n_samples": 3},
    "gradient_shap": {"n_samples": 3},
    "deeplift": {"baseline": "zero"},
    "deeplift_shap": {"n_baselines": 3},
    "kernel_shap": {"n_samples": 10, "segmentation": "grid", "n_segments": 9},
    "lime": {"n_samples": 6, "segmentation": "grid", "n_segments": 4},
    "extremal_perturbation": {"max_iter": 3},
    "blur_ig": {"n_steps": 4, "max_sigma": 4.0},
    "guided_ig": {"n_steps": 4, "baseline": "zero"},
    "xrai": {"n_steps": 2, "baselines": "min_max", "scales": "250,500,1200"},
}
# Score-CAM on the pre-activation conv: no constant channel, so each channel really costs its own pass.
LAYERS = {"scorecam": "features.5", "ablationcam": "features.5"}
BATCH = 3


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    vit = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32,
                            num_classes=7).eval()
    return {"cnn": small_convnet(), "vit": vit}


@pytest.mark.parametrize("method", list(METHODS))
def test_cost_is_the_passes_the_method_runs_and_progress_reports_each_batch(models, method):
    """The registry's cost (per image, for the resolved layer) times the rows is the progress total, and the
    passes that dominate (backward ones for gradient methods, else forward ones) are exactly that many images
    through the model, reported batch by batch: strictly increasing, never more than a batch at a time, ending
    at the total."""
    info = METHODS[method]
    transformer = "attention" in info.requires
    model = models["vit" if transformer else "cnn"]
    size = 32 if transformer else 16
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    cached_catalogue(model, x.shape)  # the layer measurement's dummy forward is not one of the method's passes
    params = PARAMS.get(method, {})
    before = snapshot(model)
    images = {True: 0, False: 0}  # rows through the model with / without autograd

    def count(module, args, output):
        # rows in; Ablation-CAM's rows out, since it runs one row up to its layer and its copies after it (LeGrad's
        # rows out are one pass's extra head readings, not passes)
        images[torch.is_grad_enabled()] += len(output) if method == "ablationcam" else len(args[0])

    seen = []
    handle = model.register_forward_hook(count)
    try:
        result = explain(model, x, method, target=1, layer=LAYERS.get(method), batch_size=BATCH, seed=0,
                         progress=lambda done, total: seen.append((done, total)), **params)
    finally:
        handle.remove()
    assert_untouched(model, before)

    channels = None
    if info.needs_layer:
        channels = next(e.channels for e in cached_catalogue(model, x.shape) if e.name == result.layer)
    forward, backward = info.passes(params, (size, size), channels)
    if backward:
        assert images[True] == backward * len(x)  # every gradient pass is a forward with autograd
        assert images[False] == (forward - backward) * len(x)  # the rest are forwards without it
    else:
        assert images == {True: 0, False: forward * len(x)}
    total = (backward or forward) * len(x)
    done = [d for d, _ in seen]
    assert {t for _, t in seen} == {total}
    assert done[-1] == total
    steps = [b - a for a, b in zip([0, *done], done)]
    assert all(0 < step <= BATCH for step in steps), steps


def test_a_method_gets_a_frozen_call_and_cannot_write_into_it(models):
    """What a method receives is read-only: it returns results, it cannot leave them in a shared context."""
    seen = {}

    def spy(call, inputs, **params):
        seen["call"] = call
        with pytest.raises(dataclasses.FrozenInstanceError):
            call.logits = inputs  # what the old context methods did
        return METHODS["vanilla"].fn(call, inputs, **params)

    info = dataclasses.replace(METHODS["vanilla"], fn=spy)
    model = models["cnn"]
    x = torch.randn(2, 3, 16, 16)
    target = TargetSpec(3, 2).resolve()
    call = Call(model=model, targets=(target,), batch_size=4, progress=Progress(2), seed=0)
    result = run_method(info, call, x, {})
    assert seen["call"] is call
    assert isinstance(result, Attribution) and tuple(result.attribution.shape) == (1, 2, 3, 16, 16)
    assert result.logits.shape == (2, 7)


@pytest.mark.parametrize("returned, got", [
    (lambda x: x, "Tensor"),
    (lambda x: None, "NoneType"),
    (lambda x: Attribution(x.unsqueeze(0)[:, :1]), "[1, 1, 3, 16, 16]"),
    (lambda x: Attribution(torch.stack([x, x])), "[2, 2, 3, 16, 16]"),
])
def test_a_method_that_breaks_the_contract_is_caught(models, returned, got):
    """One Attribution [T, N, C, H, W], one per target for every row; anything else is a bug and says so."""
    info = dataclasses.replace(METHODS["vanilla"], fn=lambda call, inputs: returned(inputs))
    call = Call(model=models["cnn"], targets=(TargetSpec(0, 2).resolve(),), batch_size=4, progress=Progress(2),
                seed=0)
    with pytest.raises(RuntimeError, match=r"method 'vanilla' broke the contract: expected \[T=1, N=2, C, H, W\], "
                                           rf"got {re.escape(got)}"):
        run_method(info, call, torch.randn(2, 3, 16, 16), {})


def test_importing_the_backend_has_no_side_effects():
    """Importing explainers (and its CLI) sets no thread count, seed or default dtype, touches no environment
    variable or warning filter, and imports neither streamlit nor matplotlib: the app sets threads once."""
    code = """
import os, sys, warnings, logging
import numpy, PIL.Image, torch, torchvision, tqdm  # their own import-time effects are not ours
calls = []
for name in ("set_num_threads", "set_num_interop_threads", "manual_seed", "seed", "set_default_dtype",
             "set_default_device", "use_deterministic_algorithms", "set_flush_denormal", "set_printoptions",
             "set_grad_enabled", "set_float32_matmul_precision"):
    setattr(torch, name, lambda *a, _name=name, **k: calls.append(_name))
env, filters = dict(os.environ), list(warnings.filters)
handlers, level = list(logging.getLogger().handlers), logging.getLogger().level
threads = torch.get_num_threads()
import explainers, explainers.cli, explainers.models, explainers.images, explainers.manifest  # noqa: E401
assert calls == [], calls
assert torch.get_num_threads() == threads
assert torch.is_grad_enabled() and torch.get_default_dtype() == torch.float32
assert dict(os.environ) == env, set(os.environ.items()) ^ set(env.items())
assert list(warnings.filters) == filters
assert list(logging.getLogger().handlers) == handlers and logging.getLogger().level == level
assert "streamlit" not in sys.modules and "matplotlib" not in sys.modules, "heavy import at import time"
print("clean")
"""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                            env={**env, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "clean"


# ------------------------------------------------------------------------------ a model whose output is NaN (issue 17)


def _nan_bias_bundle():
    from explainers.errors import ModelOutputError

    from .helpers import tiny_bundle

    model = small_convnet()
    with torch.no_grad():
        model.fc.bias[1] = float("nan")
    return tiny_bundle(model), ModelOutputError


@pytest.mark.parametrize("target", [None, 0, "top1"])
def test_a_nan_output_is_refused_naming_the_rows_and_classes(target):
    from explainers import SaliencyError, class_probabilities, explain_many

    bundle, ModelOutputError = _nan_bias_bundle()
    x = torch.rand(2, 3, bundle.input_size, bundle.input_size, generator=torch.Generator().manual_seed(0))
    expected = r"the model's output is NaN for rows 0, 1, class 1 \(1 of 7\): the model \(or its weights\) is broken"
    for method in ("vanilla", "occlusion"):  # a gradient method, and one whose own pass gives no logits
        with pytest.raises(ModelOutputError, match=expected):
            explain(bundle, x, method, target, **({"window": 16, "stride": 16} if method == "occlusion" else {}))
    with pytest.raises(ModelOutputError, match=expected):  # the shared pass of explain_many
        explain_many(bundle, x, ["gradcam", "vanilla"], [target])
    with pytest.raises(ModelOutputError, match=expected):  # the predictions chart
        class_probabilities(bundle, x)
    assert issubclass(ModelOutputError, SaliencyError)  # shown by ui/errors.py without a traceback


def test_non_finite_says_which_rows_and_classes_grouping_rows_alike():
    from explainers.core import non_finite

    logits = torch.zeros(3, 1000)
    assert non_finite(logits) is None
    logits[0, [3, 17, 21, 40, 41, 50, 60]] = float("nan")
    logits[2, 5] = float("inf")
    assert non_finite(logits) == ("NaN or infinite for row 0, classes 3, 17, 21, 40, 41, ... (7 of 1000); "
                                  "row 2, class 5 (1 of 1000)")


@pytest.mark.parametrize("method", ["integrated_gradients", "vanilla", "occlusion"])
def test_a_text_scorer_without_its_text_is_refused_up_front(method):
    """The bare token-embedding scorer (``scored.model``) has no text to make a baseline or features of: every
    method is refused before anything runs, pointing to the scored bundle (not a baseline list that names
    black)."""
    from explainers.errors import SaliencyError
    from tests.text_models import tiny_text_bundle

    scored = tiny_text_bundle().scored("the film was good")
    with pytest.raises(SaliencyError, match=r"^explain a scored text: TextBundle.scored\(text\) gives the bundle and "
                                            r"its inputs"):
        explain(scored.model, scored.inputs, method, "top1")
    assert explain(scored, scored.inputs, method, "top1").attribution.shape[-1] == len(scored.encoded)


def test_all_finite_is_exact_even_when_the_sum_overflows():
    """The fast check sums: a finite sum proves every value finite; an overflowing sum of finite values must fall
    back to the elementwise check, not report a NaN that is not there."""
    from explainers.core import all_finite

    assert all_finite(torch.zeros(2, 3))
    big = torch.full((4,), 3e38)  # finite values whose float32 sum is infinite
    assert not bool(torch.isfinite(big.sum())) and all_finite(big)
    for bad in (float("nan"), float("inf"), float("-inf")):
        values = torch.randn(3, 5)
        values[1, 2] = bad
        assert not all_finite(values)
    assert all_finite(torch.arange(5))  # integers are always finite


def test_model_guard_restores_every_flag_a_call_changed_and_leaves_eval_models_untouched():
    """The guard switches a model in train mode to eval and back, and puts back any train flag or requires_grad a
    method changed inside, on every submodule (shared ones once), however the block ends."""
    from explainers.hooks import model_guard, submodules

    shared = nn.Linear(3, 3)
    model = nn.Sequential(nn.Conv2d(3, 3, 1), nn.Dropout(), shared, nn.Sequential(shared, nn.BatchNorm1d(3)))
    assert len(submodules(model)) == len(list(model.modules())) == 6
    model.train()
    model[1].eval()
    before = [m.training for m in model.modules()]
    grads = [p.requires_grad for p in model.parameters()]
    with pytest.raises(RuntimeError, match="boom"), model_guard(model):
        assert not any(m.training for m in model.modules())
        model[0].train()
        shared.weight.requires_grad_(False)
        raise RuntimeError("boom")
    assert [m.training for m in model.modules()] == before
    assert [p.requires_grad for p in model.parameters()] == grads
    model.eval()
    with model_guard(model):
        model[3][1].train()  # a method that flips a flag on a model that was in eval mode throughout
    assert not any(m.training for m in model.modules())


def test_a_ranked_target_split_by_rows_knows_which_rows_still_wait_for_logits():
    """Whether a spec waits for the logits is kept, not recomputed per call: a part of its rows must say it
    anew (rows with class indices only need no logits)."""
    from explainers.targets import TargetSpec

    spec = TargetSpec([3, "top1", 5], 3)
    assert spec.needs_logits
    assert spec.resolve_rows(None, 0, 1).classes.flatten().tolist() == [3]  # a row with its class: no logits
    logits = torch.zeros(1, 10)
    logits[0, 7] = 1.0
    assert spec.resolve_rows(logits, 1, 2).classes.flatten().tolist() == [7]
    assert not TargetSpec(4, 2).needs_logits
    assert TargetSpec(4, 2).resolve().classes.flatten().tolist() == [4, 4]
