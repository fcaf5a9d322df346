"""Extremal perturbations against TorchRay's extremal_perturbation: the row bench/peers.py adds for
explainers/methods/extremal.py.

TorchRay (the paper's code) optimises the masks of one image at a time and has no batch setting, so there is one
row: ours against its only setting, goal ≤ 1.0×. Both run the paper's schedule (step 0.01, λ × 1.0035 per
iteration) for the same few iterations, so the masks must agree to float rounding. Ours is run through
``optimise``, the loop ``explain`` calls, because the public ``max_iter`` compresses the paper's 800-iteration
schedule into fewer iterations (see ``explainers.methods.extremal.schedule``) and TorchRay's cannot be
compressed; ours also scores the final kept and deleted inputs (two forward passes TorchRay skips). On a deep
model the optimisation amplifies float rounding (about tenfold every five iterations on efficientnet_lite0: 4e-7
after one, 1e-3 after 30, 0.1 after 60), so the row also shows TorchRay against itself on an input changed by
one part in a million: ours is as far from TorchRay as TorchRay is from itself.
TorchRay's area counts the mask's margin beyond the image, ours the image only: TorchRay gets the area that
gives the same number of ones.
"""

from __future__ import annotations

import warnings

import torch
from common import agreement
from peerkit import Subject, describe, make_row, missing_row, verdict

from explainers import get_method
from explainers.batching import Progress
from explainers.core import Call
from explainers.hooks import model_guard
from explainers.methods.extremal import AREA_WEIGHT_GROWTH, SmoothMask, optimise
from explainers.targets import TargetSpec

AREA = 0.1
STEP, SIGMA = 7, 21.0  # the paper's, for 224 px
TINY = {"step": 3, "sigma": 9.0}  # the 64 px --quick subject: a finer mask


def torchray_area(hw, step: int, sigma: float, area: float) -> float:
    """TorchRay's area for ours: it zeroes int(canvas·(1 − a)) sorted values, we keep round(area·H·W) ones."""
    canvas = SmoothMask(hw, step, sigma, "cpu", torch.float32).canvas
    size = canvas[0] * canvas[1]
    return 1 - (size - round(area * hw[0] * hw[1]) + 0.5) / size


def rows(s: Subject, run, device) -> list[dict]:
    case = "extremal_perturbation vs TorchRay extremal_perturbation"
    try:
        from torchray.attribution.extremal_perturbation import extremal_perturbation
    except ImportError as exc:
        return [missing_row(s, "TorchRay", case, f"torchray not importable: {exc}")]
    x, target, model = s.x, s.target, s.model
    tiny = s.name == "tiny"
    iterations = 20 if tiny else 60
    step, sigma = (TINY["step"], TINY["sigma"]) if tiny else (STEP, SIGMA)
    hw = tuple(x.shape[-2:])

    def ours():
        call = Call(model=model, targets=(TargetSpec(target, 1).resolve(device=x.device),), batch_size=1,
                    progress=Progress(1), seed=0)
        with model_guard(model):
            return optimise(call, x, area=AREA, mode="preservation", iterations=iterations, step=step, sigma=sigma,
                            blur=20.0, learning_rate=0.01, growth=AREA_WEIGHT_GROWTH, jitter=True).attribution[0]

    def theirs(inputs=x):
        flags = [p.requires_grad for p in model.parameters()]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # its torch.meshgrid without indexing=
                mask, _ = extremal_perturbation(model, inputs, target, areas=[torchray_area(hw, step, sigma, AREA)],
                                                perturbation="blur", max_iter=iterations, step=step, sigma=sigma,
                                                variant="preserve", jitter=True)
            return mask
        finally:  # it switches the model's gradients off and leaves them so
            for parameter, flag in zip(model.parameters(), flags):
                parameter.requires_grad_(flag)

    times, outputs = run({"ours": ours, "torchray": theirs})
    # optimise() is called directly (TorchRay's unstretched schedule), so no Explanation says what the call did:
    # the limit column gets it from the registry's cost at these settings
    params = {**get_method("extremal_perturbation").defaults(), "max_iter": iterations, "step": step, "sigma": sigma}
    with torch.inference_mode():
        logits = model(x).detach()
    times["ours"]["call"] = {"method": "extremal_perturbation", "params": params, "layer": None, "rows": len(x),
                             "hw": hw, "logits": logits}
    agree = agreement(outputs["ours"], outputs["torchray"])
    # the optimisation amplifies rounding (clamped parameters, sorted areas, a deep model's gradients): TorchRay
    # against itself on an input changed by one part in a million shows how far float noise alone carries it
    itself = agreement(theirs(x * (1 + 1e-6)), outputs["torchray"])
    peer = (f"preserve, area {AREA} (image share; {torchray_area(hw, step, sigma, AREA):.4f} of its canvas), blur, "
            f"{iterations} iterations, step {step}, sigma {sigma:g}, jitter, simple reward; one image (no batch "
            "setting); ours: the same schedule through optimise(), plus the final kept and deleted scores")
    text = f"{describe(agree)}; TorchRay vs itself on the input × (1 + 1e-6): {describe(itself)}"
    return [make_row(s, "TorchRay", f"{case}, {iterations} iterations", times, "torchray", peer, verdict(agree),
                     text)]
