"""DeepLIFT rows for bench/peers.py: ours against Captum's DeepLift and DeepLiftShap.

Neither Captum method has a batch option (DeepLift runs input and baseline as one batch; DeepLiftShap expands
every (input, baseline) pair and runs them all at once), so each method gets one row, not a tuned and a default
one. Known differences on Captum's side, read from its source (captum/attr/_core/deep_lift.py) and checked in
tests/explainers/methods/test_deeplift.py, are detected on the model and reported as expected:
- it raises on a module called twice in one forward (torchvision ResNet's ``relu``): no row;
- activations outside its table (ReLU6, SiLU, GELU, Hardswish ...) pass their plain gradient;
- a hooked module feeding another directly (ReLU → MaxPool) records its output gradient before the next module's
  rule rewrites it;
- overlapping max-pool windows are unpooled by overwriting instead of adding.
"""

from __future__ import annotations

import copy

import torch
from common import agreement
from peerkit import describe, make_row, missing_row, verdict
from torch import nn

from explainers import explain
from explainers.baselines import sample_baselines
from explainers.methods.deeplift import ACTIVATIONS, SHAP_DRAWS

SEED = 0
TINY_BASELINES, BASELINES = 4, 16


def _captum_rules():
    from captum.attr._core.deep_lift import SUPPORTED_NON_LINEAR

    return tuple(SUPPORTED_NON_LINEAR)


def _chained(model: nn.Module, x: torch.Tensor, hooked: tuple) -> bool:
    """Whether a module Captum hooks receives, as its input, the very output of another it hooks."""
    outputs: set[int] = set()
    found = []
    handles = []

    def pre(module, args):
        if args and isinstance(args[0], torch.Tensor) and id(args[0]) in outputs:
            found.append(type(module).__name__)

    def post(module, args, output):
        if isinstance(output, torch.Tensor):
            outputs.add(id(output))

    try:
        for module in model.modules():
            if type(module) in hooked:
                handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return bool(found)


class Spacer(nn.Module):
    """A linear identity that returns a new tensor: Captum's hooks on the modules either side stay apart."""

    def forward(self, x):
        return x.clone()


def _spaced(module: nn.Module, hooked: tuple) -> nn.Module:
    """A copy of ``module`` with a Spacer after each hooked child: the same function, for Captum's hooks."""
    module = copy.deepcopy(module)
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if type(child) in hooked:
                setattr(parent, name, nn.Sequential(child, Spacer()))
    return module


def captum_issues(model: nn.Module, x: torch.Tensor) -> dict[str, str]:
    """Captum's known differences that apply to ``model``: {kind: what it does}."""
    hooked = _captum_rules()
    issues = {}
    missing = sorted({type(m).__name__ for m in model.modules() if isinstance(m, ACTIVATIONS)
                      and type(m) not in hooked})
    if missing:
        issues["rules"] = f"it has no rule for {', '.join(missing)} (plain gradient there)"
    if _chained(model, x, hooked):
        issues["chained"] = ("a hooked module feeds another directly (e.g. ReLU → MaxPool), and the first records "
                             "its output gradient before the second's rule rewrites it")
    if any(isinstance(m, nn.MaxPool2d) and _overlaps(m) for m in model.modules()):
        issues["overlap"] = "its max-pool rule unpools overlapping windows by overwriting instead of adding"
    return issues


def expected_difference(issues: dict[str, str]) -> tuple[str, str] | None:
    if not issues:
        return None
    return ("Captum's DeepLift hooks", "Captum's DeepLift/DeepLiftShap (0.9) differ from the Rescale rule on this "
            f"model: {'; '.join(issues.values())}. Its own attributions then stop adding up to f(x) − f(x′); ours "
            "do (tests/explainers/methods/test_deeplift.py compares the two where Captum's hooks do not interfere).")


def _overlaps(pool: nn.MaxPool2d) -> bool:
    kernel = pool.kernel_size if isinstance(pool.kernel_size, tuple) else (pool.kernel_size,) * 2
    stride = pool.stride if isinstance(pool.stride, tuple) else (pool.stride,) * 2
    return any(k > s for k, s in zip(kernel, stride))


def rows(s, run, device) -> list[dict]:
    try:
        from captum.attr import DeepLift, DeepLiftShap
    except ImportError:
        return [missing_row(s, "Captum", "deeplift vs DeepLift", "captum is not installed"),
                missing_row(s, "Captum", "deeplift_shap vs DeepLiftShap", "captum is not installed")]
    x, target, model = s.x, s.target, s.model
    count = TINY_BASELINES if s.name == "tiny" else BASELINES
    draws = sample_baselines("blur", x, count, torch.Generator().manual_seed(SEED + SHAP_DRAWS))[0]
    zero = torch.zeros_like(x)

    def deep_lift(on):
        return lambda: DeepLift(on).attribute(x.clone(), baselines=zero, target=target)

    def deep_lift_shap(on):
        return lambda: DeepLiftShap(on).attribute(x.clone(), baselines=draws, target=target)

    cases = [
        ("deeplift vs DeepLift (no batch option: one row)", "deeplift", {"baseline": "zero"}, deep_lift,
         "baselines=0 (ours: baseline='zero', its default batch size)"),
        (f"deeplift_shap vs DeepLiftShap, {count} blurred baselines (no batch option: one row)", "deeplift_shap",
         {"distribution": "blur", "n_baselines": count, "seed": SEED}, deep_lift_shap,
         f"the same {count} blurred baselines ours draws (seed {SEED}), all {2 * count} rows in one pass"),
    ]
    issues = captum_issues(model, x)
    # where chained hooks are Captum's only trouble, its map on a spaced copy (the same function) must be ours
    spaced = _spaced(model, _captum_rules()) if set(issues) == {"chained"} else None
    out = []
    for case, method, params, peer, peer_settings in cases:
        try:
            peer(model)()  # a model Captum refuses (a module called twice) is a missing row, not a crash
        except RuntimeError as exc:
            out.append(missing_row(s, "Captum", case, f"Captum raises: {str(exc).split('.')[0]}"))
            continue
        times, outputs = run({"ours": lambda m=method, p=params: explain(s.explained, x, m, target=target, **p),
                              "captum": peer(model)})
        ours = outputs["ours"]
        agree = agreement(ours.attribution, outputs["captum"])
        delta = float(ours.extras["completeness_relative"][0])
        text = f"{describe(agree)}; ours adds up to f(x) − f(x′) within {abs(delta):.1e} of it"
        expected = expected_difference(issues)
        if spaced is not None:
            on_copy = agreement(ours.attribution, peer(spaced)())
            text += f"; Captum on a copy with an identity after each hooked module: {describe(on_copy)}"
            expected = expected if verdict(on_copy) == "yes" else None
        out.append(make_row(s, "Captum", case, times, "captum", peer_settings, verdict(agree, expected), text))
    return out
