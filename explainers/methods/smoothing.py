"""Noise-averaged wrappers around any gradient method (NoiseTunnel-style: the base is a parameter)."""

from __future__ import annotations

import torch

from ..registry import METHODS, Param, Reference, register

SMILKOV = Reference(
    "Smilkov, Thorat, Kim, Viégas & Wattenberg", 2017, "SmoothGrad: removing noise by adding noise", "1706.03825"
)
ADEBAYO_VARGRAD = Reference(
    "Adebayo, Gilmer, Goodfellow & Kim", 2018, "Local Explanation Methods for Deep Neural Networks Lack Sensitivity "
    "to Parameter Values", "1810.03307",
)
BASES = ("vanilla", "input_x_gradient", "integrated_gradients", "guided_backprop")

PARAMS = {
    "base": Param("choice", "vanilla", "The gradient method averaged over the noisy copies.", choices=BASES),
    "n_samples": Param("int", 25, "Noisy copies of the input.", minimum=1, maximum=500),
    "noise_level": Param(
        "float", 0.15, "Noise σ as a fraction of the input's value range (max - min).", minimum=0.0, maximum=1.0
    ),
    "n_steps": Param(
        "int", 50, "Path steps, used only when base is integrated_gradients.", minimum=1, maximum=1000
    ),
}


def _base_cost(p, hw, channels) -> tuple[int, int]:
    base = METHODS[p["base"]]
    base_params = {"n_steps": p["n_steps"]} if p["base"] == "integrated_gradients" else {}
    forwards, backwards = base.passes(base_params, hw, channels)
    if p["base"] == "integrated_gradients":
        forwards -= 1  # the completeness check runs only on the clean input, not on each noisy copy
    return forwards * p["n_samples"], backwards * p["n_samples"]


def noisy_attributions(ctx, inputs, rows, base, n_samples, noise_level, n_steps) -> torch.Tensor:
    """Base attributions of ``n_samples`` noisy copies of each row: [N, n_samples, C, H, W]."""
    count = len(inputs)
    value_range = (inputs.amax(dim=(1, 2, 3)) - inputs.amin(dim=(1, 2, 3))).view(-1, 1, 1, 1, 1)
    noise = torch.randn((count, n_samples, *inputs.shape[1:]), generator=ctx.generator(), dtype=inputs.dtype)
    noisy = inputs.unsqueeze(1) + noise.to(inputs.device) * (noise_level * value_range)
    noisy = noisy.flatten(0, 1)
    noisy_rows = rows.repeat_interleave(n_samples)
    base_params = {"n_steps": n_steps} if base == "integrated_gradients" else {}
    attribution = METHODS[base].fn(ctx, noisy, noisy_rows, **METHODS[base].validate(base_params))
    return attribution.view(count, n_samples, *attribution.shape[1:])


def _register(name, display_name, summary, reduce, reference=SMILKOV):
    @register(
        name,
        display_name=display_name,
        family="Gradient (noise-averaged)",
        reference=reference,
        summary=summary,
        weaknesses=(
            "Costs n_samples times the base method; the noise level changes the map and must be tuned (the "
            "paper suggests 10-20%). Inherits the base method's sanity-check verdict."
        ),
        sanity_check="as its base method",
        params=PARAMS,
        cost=_base_cost,
    )
    def method(ctx, inputs, rows, base="vanilla", n_samples=25, noise_level=0.15, n_steps=50):
        return reduce(noisy_attributions(ctx, inputs, rows, base, n_samples, noise_level, n_steps))

    method.__doc__ = f"{display_name}: {SMILKOV if reference is SMILKOV else reference}."
    return method


smoothgrad = _register(
    "smoothgrad",
    "SmoothGrad",
    "Averages the base method's map over copies of the input with Gaussian noise added, which cancels the "
    "high-frequency noise of raw gradients.",
    lambda a: a.mean(dim=1),
)
smoothgrad_sq = _register(
    "smoothgrad_sq",
    "SmoothGrad²",
    "Averages the squared base attributions over noisy copies: a magnitude map that emphasises consistent "
    "evidence.",
    lambda a: (a * a).mean(dim=1),
)
vargrad = _register(
    "vargrad",
    "VarGrad",
    "The variance of the base attributions over noisy copies of the input: where the explanation is unstable "
    "under noise.",
    lambda a: (a * a).mean(dim=1) - a.mean(dim=1) ** 2,
    reference=ADEBAYO_VARGRAD,
)
