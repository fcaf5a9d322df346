"""Expected gradients and GradientSHAP: integrated gradients averaged over baselines drawn from a distribution,
one random point on each path (a Monte Carlo estimate of both integrals at once)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..baselines import DISTRIBUTIONS, sample_baselines
from ..core import Attribution, Call, completeness, same_input
from ..registry import Cost, Param, Reference, Sanity, register
from . import gradient, guided, integrated  # noqa: F401  (registered first: the Gradient family lists them first)

LUNDBERG = Reference("Lundberg & Lee", 2017, "A Unified Approach to Interpreting Model Predictions", "1705.07874")
ERION = Reference(
    "Erion, Janizek, Sturmfels, Lundberg & Lee", 2021,
    "Improving performance of deep learning models with axiomatic attribution priors and expected gradients",
    "1906.10670",
)
# The seed offsets of the three independent draws, so changing one count never shifts another's numbers.
BASELINE_DRAW, ALPHA_DRAW, NOISE_DRAW = 1, 2, 3


@dataclass(frozen=True)
class Draws:
    """One call's random numbers, shared by every row: ``baselines`` [N, n, C, H, W] (one per sample, from the
    distribution), ``alphas`` [n] positions on the path, ``noise`` [n, C, H, W] standard normal, or None."""

    baselines: torch.Tensor
    alphas: torch.Tensor
    noise: torch.Tensor | None


def draw(call: Call, inputs: torch.Tensor, n_samples: int, distribution: str, references: str,
         noisy: bool) -> Draws:
    """Every random number the estimate uses, from the call's seeded generators; the tests replace this to feed
    Captum's own draws through the same arithmetic."""
    baselines = sample_baselines(distribution, inputs, n_samples, call.generator(BASELINE_DRAW), call.bundle,
                                 references)
    alphas = torch.rand(n_samples, generator=call.generator(ALPHA_DRAW), dtype=torch.float64)
    noise = None
    if noisy:
        noise = torch.randn((n_samples, *inputs.shape[1:]), generator=call.generator(NOISE_DRAW), dtype=inputs.dtype)
    return Draws(baselines.to(device=inputs.device, dtype=inputs.dtype), alphas.to(inputs.device, inputs.dtype),
                 None if noise is None else noise.to(inputs.device))


def estimate(call: Call, inputs: torch.Tensor, n_samples: int, distribution: str, references: str,
             noise_level: float = 0.0) -> Attribution:
    """1/n Σ_i (x̃_i − x′_i) ⊙ ∇S(x′_i + α_i (x̃_i − x′_i)) for every target, x̃_i = x + σ ε_i (σ a share of each
    row's value range; x̃_i = x without noise), batched over (row, sample) pairs. Extras as integrated gradients'
    (completeness against the mean of S(x) − S(x′_i) over the drawn baselines)."""
    count = len(inputs)
    # noise as a share of each row's range, like SmoothGrad: a single-colour image gets none
    sigma = noise_level * (inputs.amax(dim=(1, 2, 3)) - inputs.amin(dim=(1, 2, 3)))
    draws = draw(call, inputs, n_samples, distribution, references, noise_level > 0)
    baselines, alphas, noise = draws.baselines, draws.alphas, draws.noise

    # completeness needs S(x) and every S(x′_i): clean, batched forwards (no concatenated copy of the baselines,
    # which already hold n images per row)
    logits, baseline_logits = call.predict(inputs), call.predict(baselines.flatten(0, 1))

    def split(start, stop):
        index = torch.arange(start, stop, device=inputs.device)
        return index // n_samples, index % n_samples

    def difference(row, sample):
        start = inputs[row]
        if noise is not None:
            start = start + noise[sample] * sigma[row].view(-1, 1, 1, 1)
        baseline = baselines[row, sample]
        # a baseline equal to the input up to rounding (the blur of a flat region) has no path: without this the
        # map would be float noise, drawn at full contrast
        return baseline, torch.where(same_input(start, baseline), torch.zeros_like(start), start - baseline)

    deltas: dict[tuple[int, int], torch.Tensor] = {}  # each batch's x̃ − x′, from make_batch to its consume

    def make_batch(start, stop):
        row, sample = split(start, stop)
        baseline, delta = difference(row, sample)
        deltas.clear()  # what a batch that ran out of memory left (it is retried smaller): free it first
        deltas[(start, stop)] = delta
        return baseline + alphas[sample].view(-1, 1, 1, 1) * delta, row

    # float64 accumulator: n samples of terms that cancel, summed in whatever batches the call cuts
    total = torch.zeros((len(call.targets), *inputs.shape), dtype=torch.float64, device=inputs.device)

    def consume(start, stop, batch, grads, batch_logits):
        row, _ = split(start, stop)
        delta = deltas.pop((start, stop))
        terms = (grads * delta.unsqueeze(0)).double()
        for t in range(len(grads)):
            total[t].index_add_(0, row, terms[t])

    call.gradients(count * n_samples, make_batch, consume)
    attribution = (total / n_samples).to(inputs.dtype)

    # rows with no path at all: every baseline is the input and no noise moves it (a single-colour image's blur)
    no_path = same_input(inputs.unsqueeze(1), baselines).flatten(1).all(dim=1) & (sigma == 0)
    rows = torch.arange(count, device=inputs.device).repeat_interleave(n_samples)
    extras = []
    for t, target in enumerate(call.targets):
        gaps = target.score(logits).unsqueeze(1) - target.score(baseline_logits, rows).view(count, n_samples)
        score_gap = torch.where(no_path, 0.0, gaps.mean(dim=1))
        extras.append(completeness(attribution[t], score_gap))
    notes = [(f"the map is all zero: every drawn {distribution} baseline equals this input, so there is no path "
              "to integrate; pick another distribution",) if empty else () for empty in no_path.tolist()]
    return Attribution(attribution, extras=extras, logits=logits, notes=notes)


# 50 samples: integrated gradients' default 50 steps plus 50 forward passes, a few seconds for one 224 px image on
# a CPU with the default model (3-8 s measured on a shared 2-core machine), and a usable map: on the cat sample two
# seeds' maps correlate about 0.83 and the completeness error is a few % to ~40% of the gap, shrinking as 1/√n.
# Blur: no folder needed, works with a bare module, and unlike a black image it can credit dark pixels; uniform
# noise baselines gave a blotchier map there.
PARAMS = {
    "n_samples": Param("int", 50, "Random (baseline, path position) pairs averaged.", minimum=1, maximum=1000),
    "distribution": Param(
        "choice", "blur",
        "Where the baselines come from: blurred copies of the input at random widths, uniform noise images in "
        "the input's range, or images from a folder of references.",
        choices=DISTRIBUTIONS,
    ),
    "references": Param(
        "folder", "",
        "A folder of reference images (e.g. a few dozen from the same dataset); baselines are drawn from them.",
        only_when=("distribution", ("references",)),
    ),
}
# the input, then per sample its baseline's clean forward (for the completeness check) and one forward+backward
COST = Cost(fixed=(1, 0), per_step=(2, 1), steps="n_samples")
SANITY_NOTE = ("Not in Adebayo et al. 2018's test; it is integrated gradients averaged over baselines, and "
               "integrated gradients passes model randomisation there.")
COMPLETENESS = ("The attributions add up, in expectation, to the mean of S(x) − S(x′) over the drawn baselines; "
                "the completeness error reported shrinks as 1/√n_samples.")


@register(
    "expected_gradients",
    display_name="Expected gradients",
    family="Gradient",
    reference=ERION,
    summary=("Integrated gradients averaged over many baselines drawn from a distribution (blurred copies, noise, "
             "or reference images), each at one random point on its path. " + COMPLETENESS),
    weaknesses=("Random: the map changes with the seed until n_samples is large; depends on the baseline "
                "distribution (references from another domain credit the wrong things); one pass per sample."),
    formula="A = E_{x′∼D, α∼U(0,1)} [(x − x′) ⊙ ∂S_c(x′ + α(x − x′))/∂x] ≈ 1/n Σ_i (x − x′_i) ⊙ "
            "∂S_c(x′_i + α_i(x − x′_i))/∂x",
    params=PARAMS,
    cost=COST,
    attribution_channels=None,
    stochastic=True,
    sanity=Sanity.UNTESTED,
    sanity_note=SANITY_NOTE,
    smoothgrad_base=False,
)
def expected_gradients(call, inputs, n_samples=50, distribution="blur", references=""):
    """Erion et al. 2021, arXiv:1906.10670: expected gradients, no input noise."""
    return estimate(call, inputs, n_samples, distribution, references)


@register(
    "gradient_shap",
    display_name="GradientSHAP",
    family="Gradient",
    reference=LUNDBERG,
    summary=("Expected gradients with Gaussian noise added to the input for each sample (as Captum's "
             "GradientShap): an estimate of SHAP values for a differentiable model. " + COMPLETENESS),
    weaknesses=("Random, and depends on the baseline distribution, as expected gradients; the noise smooths the "
                "map but moves the explained point, so with noise the completeness error also holds "
                "E[S(x + ε)] − S(x). SHAP's independence assumption does not hold for pixels."),
    formula="A = E_{x′∼D, α∼U(0,1), ε∼N(0,σ²)} [(x̃ − x′) ⊙ ∂S_c(x′ + α(x̃ − x′))/∂x], x̃ = x + ε",
    params={
        **PARAMS,
        # 2% of the range (about ±5 of 255 grey levels) smooths the gradients while the explained point stays
        # near x: on the cat sample with the default model, the noisy copies' mean score moved 4% of the score gap
        # at 2%, 33% at 10% (SmoothGrad's 10-20% explains x + ε, not x; Captum's default is no noise)
        "noise_level": Param("float", 0.02, "Noise σ as a fraction of the input's value range (max - min); 0 "
                             "gives expected gradients.", minimum=0.0, maximum=1.0),
    },
    cost=COST,
    attribution_channels=None,
    stochastic=True,
    sanity=Sanity.UNTESTED,
    sanity_note=SANITY_NOTE,
    smoothgrad_base=False,
)
def gradient_shap(call, inputs, n_samples=50, distribution="blur", references="", noise_level=0.02):
    """Lundberg & Lee 2017, arXiv:1705.07874, as Captum's GradientShap computes it: expected gradients with
    Gaussian noise on the input."""
    return estimate(call, inputs, n_samples, distribution, references, noise_level)
