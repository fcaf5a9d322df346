"""Integrated gradients."""

from __future__ import annotations

import numpy as np
import torch

from ..baselines import BASELINES, make_baseline
from ..registry import Param, Reference, register

SUNDARARAJAN = Reference(
    "Sundararajan, Taly & Yan", 2017, "Axiomatic Attribution for Deep Networks", "1703.01365",
)
RULES = ("riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid", "gausslegendre")


def quadrature(rule: str, n_steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Points in [0, 1] along the straight path and their weights, for the path integral."""
    if rule == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(n_steps)
        return 0.5 * (nodes + 1), 0.5 * weights
    # evenly spaced points via torch.linspace in float32, the same numbers other PyTorch IG code uses
    if rule == "riemann_trapezoid":
        if n_steps < 2:
            return np.array([0.5]), np.array([1.0])
        weights = np.full(n_steps, 1.0 / (n_steps - 1))
        weights[[0, -1]] /= 2
        return torch.linspace(0, 1, n_steps).numpy(), weights
    first, last = {
        "riemann_left": (0.0, 1 - 1 / n_steps),
        "riemann_middle": (1 / (2 * n_steps), 1 - 1 / (2 * n_steps)),
        "riemann_right": (1 / n_steps, 1.0),
    }[rule]
    return torch.linspace(first, last, n_steps).numpy(), np.full(n_steps, 1.0 / n_steps)


def path_integral(ctx, inputs, rows, baseline, n_steps: int, rule: str) -> torch.Tensor:
    """(x - x') * sum_k w_k * grad f(x' + a_k (x - x')), batched over (row, step) pairs."""
    alphas_np, weights_np = quadrature(rule, n_steps)
    alphas = torch.as_tensor(alphas_np, dtype=inputs.dtype, device=inputs.device)
    weights = torch.as_tensor(weights_np, dtype=inputs.dtype, device=inputs.device)
    delta = inputs - baseline
    # float64 accumulator: the weighted terms cancel a lot along the path, and float32 sums lose digits there
    total_gradient = torch.zeros(inputs.shape, dtype=torch.float64, device=inputs.device)

    def split(start, stop):
        index = torch.arange(start, stop, device=inputs.device)
        return index // n_steps, index % n_steps

    def make_batch(start, stop):
        row, step = split(start, stop)
        return baseline[row] + alphas[step].view(-1, 1, 1, 1) * delta[row], rows[row]

    def consume(start, stop, batch, grad):
        row, step = split(start, stop)
        total_gradient.index_add_(0, row, (grad * weights[step].view(-1, 1, 1, 1)).double())

    ctx.gradients(len(inputs) * n_steps, make_batch, consume)
    return delta * total_gradient.to(inputs.dtype)


@register(
    "integrated_gradients",
    display_name="Integrated gradients",
    family="Gradient",
    reference=SUNDARARAJAN,
    summary=(
        "Averages the gradient along the straight path from a baseline image to the input and multiplies by "
        "the difference; the attributions add up to the score difference (completeness)."
    ),
    weaknesses=(
        "Depends strongly on the baseline (a black baseline cannot credit black pixels); needs many passes; "
        "noisy on deep image models. Passes the model-randomisation check."
    ),
    sanity_check="passes",
    params={
        "n_steps": Param("int", 50, "Points on the path from the baseline to the input.", minimum=1, maximum=1000),
        "rule": Param(
            "choice", "gausslegendre", "Quadrature rule for the path integral.", choices=RULES
        ),
        "baseline": Param(
            "choice",
            "black",
            "What 'absence' looks like: a black image, a blurred copy, uniform noise or the image's mean colour.",
            choices=BASELINES,
            allow_tensor=True,
        ),
    },
    cost=lambda p, hw, channels: (p["n_steps"] + 1, p["n_steps"]),
)
def integrated_gradients(ctx, inputs, rows, n_steps=50, rule="gausslegendre", baseline="black"):
    """Sundararajan et al. 2017, arXiv:1703.01365. Reports the completeness delta in ``extras``."""
    reference = make_baseline(baseline, inputs, ctx.bundle, ctx.generator(offset=1))
    top_level = inputs is ctx.inputs
    if top_level:
        # completeness needs f(x) and f(x'); one batch gives both, and f(x) also resolves "topK" targets
        both = ctx.predict(torch.cat([inputs, reference]))
        if ctx.logits is None:
            ctx.logits = both[: len(inputs)]
            ctx.target.resolve(ctx.logits)
        baseline_logits = both[len(inputs) :]
    attribution = path_integral(ctx, inputs, rows, reference, n_steps, rule)
    if top_level:
        # sum(attr) should equal f(x) - f(x'); the gap measures the quadrature error
        score_gap = ctx.target.score(ctx.logits, rows) - ctx.target.score(baseline_logits, rows)
        delta = attribution.sum(dim=(1, 2, 3)) - score_gap
        ctx.extras["completeness_delta"] = delta.detach().cpu()
        ctx.extras["score_gap"] = score_gap.detach().cpu()
    return attribution
