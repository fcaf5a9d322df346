"""Integrated gradients and the path methods built on it: Blur IG and Guided IG."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from ..baselines import BASELINES, RANDOM_BASELINES, TEXT_BASELINE, make_baseline
from ..batching import forward
from ..core import Attribution, Call, as_logits, completeness, same_input
from ..registry import Cost, Param, Reference, Sanity, TextUse, register

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
    text=TextUse(params={"baseline": TEXT_BASELINE}, reduction="sum",
                 note="On the token embeddings, from a baseline text whose tokens are all [PAD], all [MASK] or zero "
                      "vectors ([CLS] and [SEP] kept); the token scores add up to the score difference."),
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


# ---------------------------------------------------------------------------------------------------------
# Blur IG: the path from a blurred copy to the input
# ---------------------------------------------------------------------------------------------------------

XU = Reference(
    "Xu, Venugopalan, Sivaraman, Vasanawala & Dahl", 2020,
    "Attribution in Scale and Space", "2004.03383",
)
# Kernel radius in widths, and zeros beyond the border: the blur of the paper's code (scipy.ndimage's
# gaussian_filter, mode "constant"), so the path and its end point are the ones the paper integrates along.
BLUR_TRUNCATE = 4.0


def blur_matrices(sigmas: torch.Tensor, size: int) -> torch.Tensor:
    """[B, size, size]: row i of matrix b weighs the pixels of one image line by a Gaussian of width ``sigmas[b]``
    centred on pixel i, cut at int(BLUR_TRUNCATE·σ + 0.5) pixels and normalised over the whole kernel, so what
    falls past the border is lost (zero padding). Width 0 (or below 1/8 pixel: a radius of 0) is the identity."""
    sigma = sigmas.view(-1, 1, 1)
    radius = torch.floor(BLUR_TRUNCATE * sigma + 0.5)
    positions = torch.arange(size, dtype=sigmas.dtype, device=sigmas.device)
    offsets = (positions.view(-1, 1) - positions.view(1, -1)).unsqueeze(0)
    safe = sigma.clamp_min(1e-12)  # only offset 0 is kept where the radius is 0, and exp(0) = 1 there
    weights = torch.where(offsets.abs() <= radius, torch.exp(-0.5 * (offsets / safe) ** 2), 0.0)
    widest = int(radius.max())
    kernel = torch.arange(-widest, widest + 1, dtype=sigmas.dtype, device=sigmas.device).view(1, 1, -1)
    norm = torch.where(kernel.abs() <= radius, torch.exp(-0.5 * (kernel / safe) ** 2), 0.0).sum(dim=-1, keepdim=True)
    return weights / norm


def blur(images: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """Image b of ``images`` [B, C, H, W] blurred with width ``sigmas[b]`` (see :func:`blur_matrices`), as two
    matrix products: one for the columns, one for the rows."""
    sigmas = sigmas.to(device=images.device, dtype=images.dtype)
    vertical = blur_matrices(sigmas, images.shape[-2]).unsqueeze(1)
    horizontal = blur_matrices(sigmas, images.shape[-1]).unsqueeze(1)
    return vertical @ images @ horizontal.transpose(-1, -2)


@register(
    "blur_ig",
    display_name="Blur IG",
    family="Gradient",
    reference=XU,
    summary=(
        "Integrated gradients along a path of ever stronger Gaussian blurs of the input instead of a straight "
        "line from a baseline: nothing is added that the image does not hold, and no baseline is chosen."
    ),
    weaknesses=(
        "The blur's end point still scores something: the attributions add up to S(x) − S(blurred x), not to "
        "the score. max_sigma is in pixels (50 suits 224 px images); the finite-difference derivative of the "
        "blur and the left Riemann sum make the sum approximate. Not tested by Adebayo et al. 2018."
    ),
    formula=("A = −Σ_k (σ_{k+1} − σ_k) · ∂x(σ_k)/∂σ ⊙ ∂S_c(x(σ_k))/∂x, x(σ) = G_σ ∗ x, σ_k = k·σ_max/n, "
             "∂x/∂σ ≈ (x(σ + h) − x(σ))/h"),
    sanity_note=(
        "a path method like integrated gradients, which passes; its own verdict is not published. Measured here "
        "on efficientnet_lite0 (cat.png, all 19 cascade steps): passes model randomisation on every measure "
        "(Spearman |map| 0.30), class-sensitive (4/4 random logits), not input invariant (1.07): the zero-padded "
        "blur does not follow a constant shift at the border"
    ),
    params={
        "n_steps": Param("int", 100, "Blur widths on the path from the input to its most blurred copy.",
                         minimum=1, maximum=1000),
        "max_sigma": Param("float", 50.0, "Width (pixels) of the most blurred copy, where the path starts.",
                           minimum=0.1, maximum=1000.0),
        "grad_step": Param("float", 0.01, "Width step of the finite difference that estimates how the blurred "
                           "image changes with the width.", minimum=1e-4, maximum=1.0),
    },
    # the input and its most blurred copy for the completeness check, then a forward+backward per width
    cost=Cost(fixed=(2, 0), per_step=(1, 1), steps="n_steps"),
    attribution_channels=None,
)
def blur_ig(call, inputs, n_steps=100, max_sigma=50.0, grad_step=0.01):
    """Xu et al. 2020, arXiv:2004.03383. The widths and the blur are those of the paper's code (PAIR's
    ``saliency``); every (row, width) point is independent, so they share batched passes. Reports completeness
    against S(x) − S(x blurred at max_sigma) in ``extras``."""
    # widths as the paper's code spells them (Python floats), so the path points are the same numbers
    sigmas = [i * max_sigma / n_steps for i in range(n_steps + 1)]
    widths = torch.tensor(sigmas, dtype=torch.float64, device=inputs.device)
    spacing = torch.tensor([b - a for a, b in zip(sigmas, sigmas[1:])], dtype=torch.float64, device=inputs.device)
    # float64 throughout the path: the finite difference over grad_step loses 4 digits in float32
    source = inputs.double()
    total = torch.zeros((len(call.targets), *inputs.shape), dtype=torch.float64, device=inputs.device)
    blurred: dict[tuple[int, int], torch.Tensor] = {}

    def split(start, stop):
        index = torch.arange(start, stop, device=inputs.device)
        return index // n_steps, index % n_steps

    def make_batch(start, stop):
        row, step = split(start, stop)
        blurred.clear()  # a batch retried smaller after out-of-memory replaces the failed one
        blurred[start, stop] = points = blur(source[row], widths[step])
        return points.to(inputs.dtype), row

    def consume(start, stop, batch, grads, logits):
        row, step = split(start, stop)
        points = blurred.pop((start, stop))
        slope = (blur(source[row], widths[step] + grad_step) - points) / grad_step
        weighted = slope * spacing[step].view(-1, 1, 1, 1)
        for t in range(len(grads)):
            total[t].index_add_(0, row, weighted * grads[t].double())

    call.gradients(len(inputs) * n_steps, make_batch, consume)
    attribution = (-total).to(inputs.dtype)
    end = blur(source, torch.full((len(inputs),), float(max_sigma), dtype=torch.float64)).to(inputs.dtype)
    both = call.predict(torch.cat([inputs, end]))
    logits, end_logits = both[: len(inputs)], both[len(inputs) :]
    extras = [completeness(attribution[t], target.score(logits) - target.score(end_logits))
              for t, target in enumerate(call.targets)]
    return Attribution(attribution, extras=extras, logits=logits)


# ---------------------------------------------------------------------------------------------------------
# Guided IG: a path that moves the features with the smallest gradient first
# ---------------------------------------------------------------------------------------------------------

KAPISHNIKOV_2021 = Reference(
    "Kapishnikov, Venugopalan, Avci, Wedin, Terry & Bolukbasi", 2021,
    "Guided Integrated Gradients: An Adaptive Path Method for Removing Noise", "2106.09788",
)
# Two L1 distances this close (absolute and relative) are the step's target reached, as in the paper's code.
L1_TOLERANCE = 1e-9


def target_gradients(call: Call, points: torch.Tensor, rows: torch.Tensor, target_of: torch.Tensor,
                     units: Callable[[int], int]) -> torch.Tensor:
    """∂S/∂x at each of ``points`` [P, ...] for its own target ``target_of[p]`` of row ``rows[p]``: one forward
    and one backward per batch, whatever the number of targets. ``units(stop)`` is the progress reached once
    points ..stop are done."""
    grads = torch.empty_like(points)

    def compute(start, stop):
        batch = points[start:stop].detach().requires_grad_(True)
        with torch.enable_grad():
            scores = call.scores(as_logits(forward(call.model, batch)), rows[start:stop])  # [T, B]
            picked = scores.gather(0, target_of[start:stop].view(1, -1))
            (grad,) = torch.autograd.grad(picked.sum(), batch)
        return grad

    done = call.progress.done
    for start, stop, grad in call.batches.run(len(points), compute):
        grads[start:stop] = grad
        now = units(stop)
        if now > done:  # several targets share a row's units: a small batch may not finish one
            call.progress.advance(now - done)
            done = now
    return grads


def guided_paths(call: Call, source: torch.Tensor, start: torch.Tensor, rows: torch.Tensor,
                 target_of: torch.Tensor, n_steps: int, fraction: float, max_dist: float, dtype: torch.dtype,
                 shape: tuple[int, ...], row_count: int) -> torch.Tensor:
    """Guided IG of P paths at once, each from ``start`` [P, F] to ``source`` [P, F] (float64), path p explaining
    target ``target_of[p]`` of row ``rows[p]`` (of ``row_count`` rows, ``shape`` each, run in ``dtype``);
    returns the attributions [P, F] (float64).

    Each step aims to close 1/n_steps of the L1 distance to the input: it first pulls the features that fell
    more than ``max_dist`` behind the straight path up to it, then moves the ``fraction`` of the features with
    the smallest |gradient| toward the front of the allowed band, repeating until the step's distance is met.
    The path stays on the paper's rules step for step (PAIR's ``saliency``); only the paths are batched.
    """
    paths, count = source.shape
    rank = math.floor(fraction * (count - 1)) + 1  # the "lower" quantile: an element, so ties compare exactly
    span = source - start
    moving = span != 0
    l1_total = span.abs().sum(dim=1)
    x = start.clone()
    attribution = torch.zeros_like(source)
    for step in range(n_steps):
        # progress counts backward passes per row (n_steps per row): path p of step k completes unit k·N + p·N/P
        grad_actual = target_gradients(
            call, x.to(dtype).view(paths, *shape), rows, target_of,
            lambda stop, step=step: ((step * paths + stop) * row_count) // paths,
        ).double().flatten(1)
        grad = grad_actual.clone()
        alpha = (step + 1.0) / n_steps
        alpha_min, alpha_max = max(alpha - max_dist, 0.0), min(alpha + max_dist, 1.0)
        x_min, x_max = start + span * alpha_min, start + span * alpha_max
        l1_target = l1_total * (1 - (step + 1) / n_steps)
        active = torch.ones(paths, dtype=torch.bool, device=source.device)
        while bool(active.any()):
            x_old = x.clone()
            # where a feature stands along the straight path, in alphas; an unmoving feature counts as ahead
            along = torch.where(moving, (x - start) / torch.where(moving, span, 1.0), alpha_max)
            behind = (along < alpha_min) & active.view(-1, 1)
            x = torch.where(behind, x_min, x)
            l1_current = (x - source).abs().sum(dim=1)
            gap = l1_current - l1_target
            # reached (math.isclose as the paper's code), or passed, which the code would not survive (its
            # gamma would go negative): either way the step is done
            reached = (gap.abs() <= torch.clamp(L1_TOLERANCE * torch.maximum(l1_target.abs(), l1_current.abs()),
                                                min=L1_TOLERANCE)) | (gap < 0)
            finishing = active & reached
            attribution += torch.where(finishing.view(-1, 1), (x - x_old) * grad_actual, 0.0)
            active &= ~reached
            if not bool(active.any()):
                break
            grad = torch.where((x == x_max) & active.view(-1, 1), torch.inf, grad)
            magnitude = grad.abs()
            threshold = magnitude.kthvalue(rank, dim=1, keepdim=True).values
            selected = (magnitude <= threshold) & (grad != torch.inf) & active.view(-1, 1)
            l1_selected = ((x - x_max).abs() * selected).sum(dim=1)
            gamma = torch.where(l1_selected > 0, gap / torch.where(l1_selected > 0, l1_selected, 1.0), torch.inf)
            full = (gamma > 1.0).view(-1, 1)
            moved = torch.where(full, x_max, x + (x_max - x) * gamma.clamp(max=1.0).view(-1, 1))
            x = torch.where(selected, moved, x)
            attribution += torch.where(active.view(-1, 1), (x - x_old) * grad_actual, 0.0)
            # the paper's code loops forever when nothing is left to select; here that path's step just ends
            active &= (gamma > 1.0) & selected.any(dim=1)
    return attribution


@register(
    "guided_ig",
    display_name="Guided IG",
    family="Gradient",
    reference=KAPISHNIKOV_2021,
    summary=(
        "Integrated gradients along a path chosen as it goes: each step moves first the features whose gradient "
        "is smallest, keeping the path near the straight line; the noise that large off-path gradients bring "
        "to integrated gradients drops out."
    ),
    weaknesses=(
        "Sequential: each step needs the previous one's gradient, so only rows and targets share a pass, not "
        "steps. Depends on the baseline like integrated gradients; the path, so the map, depends on the "
        "target. Not tested by Adebayo et al. 2018."
    ),
    formula=("A = Σ_k (x_{k+1} − x_k) ⊙ ∂S_c(x_k)/∂x, x_{k+1} − x_k moving the features of smallest |∂S_c/∂x| "
             "until ‖x − x_{k+1}‖₁ = (1 − (k+1)/n)‖x − x′‖₁, each within max_dist of the straight path"),
    sanity_note=(
        "a path method like integrated gradients, which passes; its own verdict is not published. Measured here "
        "on efficientnet_lite0 (cat.png, all 19 cascade steps): passes model randomisation on every measure "
        "(Spearman |map| 0.13), class-sensitive (4/4 random logits), not input invariant (0.63) with the black "
        "baseline, like integrated gradients (Kindermans et al. 2019, arXiv:1711.00867)"
    ),
    stochastic_params={"baseline": RANDOM_BASELINES},
    params={
        "n_steps": Param("int", 200, "Steps on the path from the baseline to the input.", minimum=1, maximum=1000),
        "fraction": Param("float", 0.25, "Share of the features moved at once: those with the smallest gradient.",
                          minimum=0.0, maximum=1.0),
        "max_dist": Param("float", 0.02, "How far (as a share of the way) a feature may lead or lag the straight "
                          "path: 0 is integrated gradients, 1 leaves the path free.", minimum=0.0, maximum=1.0),
        "baseline": Param(
            "choice", "black", "Where the path starts: as integrated gradients' baseline.", choices=BASELINES,
            allow_tensor=True,
        ),
    },
    # the input and its baseline for the completeness check, then a forward+backward per step
    cost=Cost(fixed=(2, 0), per_step=(1, 1), steps="n_steps"),
    attribution_channels=None,
)
def guided_ig(call, inputs, n_steps=200, fraction=0.25, max_dist=0.02, baseline="black"):
    """Kapishnikov et al. 2021, arXiv:2106.09788. One path per (target, row), all advanced together; reports
    the completeness delta against S(x) − S(x′) in ``extras``."""
    reference = make_baseline(baseline, inputs, call.bundle, call.generator(offset=1))
    # a feature equal to its baseline up to rounding has no path, as in integrated gradients
    reference = torch.where(same_input(inputs, reference), inputs, reference)
    both = call.predict(torch.cat([inputs, reference]))
    logits, baseline_logits = both[: len(inputs)], both[len(inputs) :]
    count, targets = len(inputs), len(call.targets)
    index = torch.arange(targets * count, device=inputs.device)
    rows, target_of = index % count, index // count  # path j explains target j // count on row j % count
    attribution = guided_paths(
        call, inputs.double().flatten(1)[rows], reference.double().flatten(1)[rows], rows, target_of, n_steps,
        fraction, max_dist, inputs.dtype, tuple(inputs.shape[1:]), count,
    ).to(inputs.dtype).view(targets, *inputs.shape)
    no_path = same_input(inputs, reference).flatten(1).all(dim=1)
    gaps = [torch.where(no_path, 0.0, target.score(logits) - target.score(baseline_logits)) for target in call.targets]
    extras = [completeness(attribution[t], gap) for t, gap in enumerate(gaps)]
    named = f"the {baseline} baseline" if isinstance(baseline, str) else "the baseline"
    notes = [(f"the map is all zero: {named} equals this input, so there is no path to integrate; pick another "
              "baseline",) if empty else () for empty in no_path.tolist()]
    return Attribution(attribution, extras=extras, logits=logits, notes=notes)
