"""Integrated gradients."""

from __future__ import annotations

import numpy as np
import torch

from ..baselines import BASELINES, RANDOM_BASELINES, make_baseline
from ..core import Attribution, Call, completeness, same_input
from ..registry import Cost, Param, Reference, Sanity, register

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


def path_integral(call: Call, inputs, baseline, n_steps: int, rule: str) -> torch.Tensor:
    """(x - x') * sum_k w_k * grad f_t(x' + a_k (x - x')) for every target t, batched over (row, step) pairs.

    Returns [T, N, C, H, W].
    """
    alphas_np, weights_np = quadrature(rule, n_steps)
    alphas = torch.as_tensor(alphas_np, dtype=inputs.dtype, device=inputs.device)
    weights = torch.as_tensor(weights_np, dtype=inputs.dtype, device=inputs.device)
    # a baseline equal to the input up to rounding (the blur or mean of a flat region) has no path: without
    # this the map would be float noise, drawn at full contrast
    delta = torch.where(same_input(inputs, baseline), torch.zeros_like(inputs), inputs - baseline)
    # float64 accumulator: the weighted terms cancel a lot along the path, and float32 sums lose digits there
    total_gradient = torch.zeros((len(call.targets), *inputs.shape), dtype=torch.float64, device=inputs.device)

    def split(start, stop):
        index = torch.arange(start, stop, device=inputs.device)
        return index // n_steps, index % n_steps

    def make_batch(start, stop):
        row, step = split(start, stop)
        return baseline[row] + alphas[step].view(-1, 1, 1, 1) * delta[row], row

    def consume(start, stop, batch, grads, logits):
        row, step = split(start, stop)
        weighted = (grads * weights[step].view(1, -1, 1, 1, 1)).double()
        for t in range(len(grads)):
            total_gradient[t].index_add_(0, row, weighted[t])

    call.gradients(len(inputs) * n_steps, make_batch, consume)
    return delta.unsqueeze(0) * total_gradient.to(inputs.dtype)


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
    formula="A = (x − x′) ⊙ ∫₀¹ ∂S_c(x′ + α(x − x′))/∂x dα ≈ (x − x′) ⊙ Σ_k w_k ∂S_c(x′ + α_k(x − x′))/∂x",
    sanity=Sanity.PASSES,
    stochastic_params={"baseline": RANDOM_BASELINES},
    params={
        "n_steps": Param("int", 50, "Points on the path from the baseline to the input.", minimum=1, maximum=1000),
        "rule": Param(
            "choice", "gausslegendre", "Quadrature rule for the path integral.", choices=RULES
        ),
        "baseline": Param(
            "choice",
            "black",
            "What 'absence' looks like: a black image, a blurred copy, uniform noise, the image's mean colour, or "
            "zeros in the model's input space.",
            choices=BASELINES,
            allow_tensor=True,
        ),
    },
    # one forward of input and baseline together for the completeness check, then a forward+backward per step
    cost=Cost(fixed=(2, 0), per_step=(1, 1), steps="n_steps"),  # the input and its baseline, then the path
    attribution_channels=None,
    smoothgrad_base=True,
)
def integrated_gradients(call, inputs, n_steps=50, rule="gausslegendre", baseline="black"):
    """Sundararajan et al. 2017, arXiv:1703.01365. Reports the completeness delta in ``extras``:
    sum(A) − (S(x) − S(x′)), and the same as a share of S(x) − S(x′)."""
    reference = make_baseline(baseline, inputs, call.bundle, call.generator(offset=1))
    # completeness needs f(x) and f(x'); one batch of both
    both = call.predict(torch.cat([inputs, reference]))
    logits, baseline_logits = both[: len(inputs)], both[len(inputs) :]
    attribution = path_integral(call, inputs, reference, n_steps, rule)
    # rows whose baseline is the input itself: the score gap is 0 by definition, not the model's rounding noise
    no_path = same_input(inputs, reference).flatten(1).all(dim=1)
    extras = []
    for t, target in enumerate(call.targets):
        # sum(attr) should equal f(x) - f(x'); the gap measures the quadrature error
        score_gap = torch.where(no_path, 0.0, target.score(logits) - target.score(baseline_logits))
        extras.append(completeness(attribution[t], score_gap))
    named = f"the {baseline} baseline" if isinstance(baseline, str) else "the baseline"
    notes = [(f"the map is all zero: {named} equals this input, so there is no path to integrate; pick another "
              "baseline",) if empty else () for empty in no_path.tolist()]
    return Attribution(attribution, extras=extras, logits=logits, notes=notes)
