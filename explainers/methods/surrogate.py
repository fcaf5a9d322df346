"""Surrogate methods: LIME and KernelSHAP fit a linear model of the class score over which superpixels are present.

Both switch superpixels off (replace them by a baseline), score the copies in batched forward passes and fit a
weighted linear regression of the score on the on/off pattern z ∈ {0, 1}^M; each pixel gets its superpixel's
coefficient. They differ in which patterns they draw and how they weight them: LIME draws near the image and
weights by closeness (an exponential kernel), KernelSHAP weights by the Shapley kernel, which makes the
coefficients Shapley values. On text the features are words or tokens (``unit``), switched off by a baseline token
([PAD], [MASK] or a zero embedding), the special tokens always kept.
"""

from __future__ import annotations

import bisect
import itertools
import math
from dataclasses import dataclass

import numpy as np
import torch

from ..baselines import TEXT_BASELINE, make_baseline
from ..batching import forward
from ..core import Attribution, Call, as_logits, same_input
from ..errors import ParameterError
from ..folding import FLOAT32, clean_scores, fast_call, precision_param
from ..registry import TEXT, Cost, Param, Reference, Sanity, TextUse, modality_of, register
from ..superpixels import SEGMENTATIONS, TEXT_UNIT, paint_features, segment, segment_counts, text_features
from .expected import LUNDBERG  # one reference for the SHAP family

RIBEIRO = Reference("Ribeiro, Singh & Guestrin", 2016,
                    '"Why Should I Trust You?": Explaining the Predictions of Any Classifier', "1602.04938")

REMOVED = ("mean", "blur", "black")  # what a switched-off superpixel shows (explainers.baselines)
DISTANCES = ("cosine", "euclidean")
# Coalitions are drawn this many at a time, a fixed number, so the random stream never depends on the budget left
# and the draws held at once stay small however large n_samples is.
DRAW_CHUNK = 1024
# KernelSHAP draws at most this many times its budget before it stops looking for coalitions it has not seen
# (shap's KernelExplainer stops at 4 too): only a nearly exhausted small game gets there.
MAX_DRAWS_PER_SAMPLE = 4
# Below this weighted R² the linear surrogate misses most of the score's variation over its samples (more than
# 70%), and the user is told. Not 0.5: LIME's fits on photographs commonly land between 0.3 and 0.6 (the cat on
# the default model at the defaults: LIME 0.44, KernelSHAP 0.64), and a note on every ordinary run would be
# read as noise; the R² itself is in the extras for whoever wants the stricter reading.
POOR_FIT_R2 = 0.3
# KernelSHAP enforces efficiency exactly; a larger relative gap means the solve itself went wrong (rounding in an
# ill-conditioned system), and the user is told.
EFFICIENCY_TOLERANCE = 1e-3
# A gap below this share of the scores' scale is the float64 solve's rounding, not a gap: it is reported as 0, so
# that equal calls (one target or several, any batch size) report the same extras, not different last digits.
EFFICIENCY_ROUNDING = 1e-10
# What bfloat16 passes cost the maps (300 samples, 20 SLIC superpixels), measured with bfloat16 emulated on a
# CPU without bfloat16 units.
KERNEL_SHAP_BFLOAT16 = ("correlation 0.9993 on efficientnet_lite0, the largest difference 2.3% of the map's largest "
                        "value.")
LIME_BFLOAT16 = "correlation 0.9990 on efficientnet_lite0, the largest difference 3.8% of the map's largest value."


def _only(*kinds: str) -> tuple[str, tuple[str, ...]]:
    return ("segmentation", kinds)


SEGMENT_PARAMS = {
    "segmentation": Param(
        "choice", "slic", "How the image is cut into superpixels, the features switched on and off: SLIC (compact "
        "colour clusters), Felzenszwalb's graph segmentation, quick shift, or a plain grid.", choices=SEGMENTATIONS,
    ),
    "n_segments": Param(
        "int", 50, "About how many superpixels (SLIC may give fewer or more; the grid gives rows × columns near it).",
        minimum=1, maximum=2000, only_when=_only("slic", "grid"),
    ),
    "compactness": Param(
        "float", 10.0, "SLIC's balance of colour against position: higher gives squarer superpixels.",
        minimum=0.01, maximum=1000.0, only_when=_only("slic"),
    ),
    "scale": Param(
        "float", 100.0, "Felzenszwalb's scale: higher gives fewer, larger superpixels.", minimum=1.0,
        maximum=100000.0, only_when=_only("felzenszwalb"),
    ),
    "min_size": Param(
        "int", 50, "Felzenszwalb's smallest superpixel, in pixels.", minimum=1, maximum=1000000,
        only_when=_only("felzenszwalb"),
    ),
    "kernel_size": Param(
        "float", 4.0, "Quick shift's smoothing width (pixels): higher gives fewer, larger superpixels.",
        minimum=0.5, maximum=64.0, only_when=_only("quickshift"),
    ),
    "max_dist": Param(
        "float", 200.0, "Quick shift's cut-off distance: higher merges more.", minimum=1.0, maximum=10000.0,
        only_when=_only("quickshift"),
    ),
    "ratio": Param(
        "float", 0.2, "Quick shift's balance of colour (1) against position (0).", minimum=0.0, maximum=1.0,
        only_when=_only("quickshift"),
    ),
    "baseline": Param(
        "choice", "mean", "What a switched-off superpixel shows: the image's mean colour, a blurred copy of the "
        "image, or black.", choices=REMOVED, allow_tensor=True,
    ),
}
SEGMENT_NAMES = ("n_segments", "compactness", "scale", "min_size", "kernel_size", "max_dist", "ratio")
# On text the features are words (or tokens), switched off by replacing them with a baseline token
TEXT_PARAMS = {"unit": TEXT_UNIT, "baseline": TEXT_BASELINE}
TEXT_HIDDEN = frozenset({"segmentation", *SEGMENT_NAMES, "precision"})  # bfloat16: measured on images only


# ---------------------------------------------------------------------------------------------------------
# Features, passes, fits: shared by both methods
# ---------------------------------------------------------------------------------------------------------


@dataclass
class Features:
    """One call's features: ``labels`` [N, H, W] (superpixels; on text words or tokens, −1 on the special tokens,
    which are always kept), ``counts`` M per row, ``reference`` the baseline per row, and ``inert`` per row the
    features [M] where the baseline equals the input (switching them off changes nothing, so their weight is 0 by
    definition, not the model's rounding noise between batches). ``noun`` names a feature in messages; ``text``
    says the features are a text's, whose weight is shared among their tokens (see ``paint_features``)."""

    labels: torch.Tensor
    counts: list[int]
    reference: torch.Tensor
    inert: list[torch.Tensor]
    noun: str = "superpixel"
    text: bool = False

    def index(self, n: int) -> torch.Tensor:
        """Row ``n``'s labels with the always-kept positions (−1) as feature M, a column of "on" in every design."""
        return torch.where(self.labels[n] >= 0, self.labels[n], self.counts[n])


def features(call: Call, inputs: torch.Tensor, segmentation: str, baseline, params: dict,
             unit: str | None = None) -> Features:
    """Superpixels of each row, or on text (the call's model is a text classifier) its words or tokens."""
    text = modality_of(call.model) == TEXT
    if text:
        unit = unit or TEXT_UNIT.default
        labels = text_features(call.bundle, unit, len(inputs))
    else:
        labels = segment(inputs, segmentation, call.bundle, **{k: params[k] for k in SEGMENT_NAMES if k in params})
    counts = segment_counts(labels)
    reference = make_baseline(baseline, inputs, call.bundle)
    changed = (~same_input(inputs, reference)).any(dim=1)  # [N, H, W]
    found = Features(labels, counts, reference, [], noun=unit if text else "superpixel", text=text)
    found.inert = [torch.zeros(m + 1, dtype=torch.long, device=inputs.device).index_add_(
        0, found.index(n).flatten(), changed[n].flatten().long())[:m].eq(0).cpu() for n, m in enumerate(counts)]
    return found


def coalition_scores(call: Call, inputs: torch.Tensor, found: Features, designs: list[torch.Tensor]
                     ) -> list[torch.Tensor]:
    """Every target's score [T, S_n] (float64, CPU) of each row n's coalitions ``designs[n]`` [S_n, M_n] (bool):
    the image with the superpixels of each coalition kept and the others set to the baseline.

    The pairs (row, coalition) run row-major through ``call.batches``: a batch may hold the end of one row's
    coalitions and the start of the next's, each built from its own segmentation. Perturbed copies are built
    batch by batch, so memory grows with ``batch_size``, not with ``n_samples``.
    """
    device = inputs.device
    offsets = [0, *itertools.accumulate(len(d) for d in designs)]
    on_device = {id(d): d.to(device) for d in designs}  # rows with the same segment count share their draws

    def scores(start, stop):
        with torch.inference_mode():
            pieces, rows = [], []
            n = bisect.bisect_right(offsets, start) - 1
            while n < len(designs) and offsets[n] < stop:
                low, high = max(start, offsets[n]) - offsets[n], min(stop, offsets[n + 1]) - offsets[n]
                if high > low:
                    design = on_device[id(designs[n])][low:high]
                    always = torch.ones_like(design[:, :1])  # the special tokens of a text: never switched off
                    keep = torch.cat([design, always], dim=1)[:, found.index(n)]  # [b, H, W]
                    pieces.append(torch.where(keep.unsqueeze(1), inputs[n], found.reference[n]))
                    rows.append(torch.full((high - low,), n, device=device))
                n += 1
            row = torch.cat(rows)
            return call.scores(as_logits(forward(call.model, torch.cat(pieces))), row).double()

    total = torch.empty((len(call.targets), offsets[-1]), dtype=torch.float64, device=device)
    for start, stop, batch in call.batches.run(offsets[-1], scores):
        total[:, start:stop] = batch
        call.progress.advance(stop - start)
    total = total.cpu()
    return [total[:, offsets[n] : offsets[n + 1]] for n in range(len(designs))]


def weighted_r2(y: torch.Tensor, fitted: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """[T]: 1 − Σw(y − ŷ)² / Σw(y − ȳ_w)² over the samples (sklearn's score with sample_weight); 1 where y is
    constant and fitted exactly, 0 where it is constant and not."""
    mean = (y * weights).sum(dim=1, keepdim=True) / weights.sum()
    residual = ((y - fitted) ** 2 * weights).sum(dim=1)
    spread = ((y - mean) ** 2 * weights).sum(dim=1)
    return torch.where(spread > 0, 1 - residual / spread.clamp_min(1e-300), (residual == 0).double())


# ---------------------------------------------------------------------------------------------------------
# KernelSHAP
# ---------------------------------------------------------------------------------------------------------


def shapley_kernel(m: int, sizes: torch.Tensor) -> torch.Tensor:
    """π(z) = (M − 1) / (C(M, |z|) |z| (M − |z|)) for 0 < |z| < M (Lundberg & Lee 2017, Theorem 2), float64."""
    sizes = sizes.double()
    log_binomial = torch.lgamma(torch.tensor(m + 1.0)) - torch.lgamma(sizes + 1) - torch.lgamma(m - sizes + 1)
    return (m - 1) / (torch.exp(log_binomial) * sizes * (m - sizes))


def is_exact(m: int, n_samples: int) -> bool:
    """Whether every coalition but the full one (the clean pass) fits in ``n_samples`` passes."""
    return m < 63 and 2**m - 1 <= n_samples


def kernel_shap_design(m: int, n_samples: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(coalitions [S, M] bool, weights [S] float64) for ``n_samples`` passes: the empty coalition first (weight
    0: it gives f(∅), which the constraint uses), then those the regression fits, weights summing to 1.

    With 2^M − 1 ≤ n_samples every coalition is enumerated and weighted by the Shapley kernel: the fit is then
    exactly the Shapley values. Otherwise the sizes go as in shap's KernelExplainer: a size and its complement
    (|z| = s and M − s) are enumerated whole, most kernel weight first, while the budget left would give them at
    least as many samples as they have coalitions; the rest is drawn (a size by its kernel weight, then a
    uniform subset of that size, with its complement: paired sampling), a coalition drawn again adding weight
    instead of a pass. Each coalition's weight is its size's kernel mass split over it: exactly π(z) for the
    enumerated ones, the Monte Carlo share for drawn ones.
    """
    empty = np.zeros(m, dtype=bool)
    if is_exact(m, n_samples):
        codes = torch.arange(2**m - 1)
        coalitions = ((codes.unsqueeze(1) >> torch.arange(m)) & 1).bool()
        weights = shapley_kernel(m, coalitions.sum(dim=1))
        weights[0] = 0.0
        return coalitions, weights / weights.sum()
    left = n_samples - 1
    sizes = list(range(1, m // 2 + 1))
    paired = {s: 2 * s != m for s in sizes}
    mass = {s: (m - 1) / (s * (m - s)) * (2 if paired[s] else 1) for s in sizes}
    total_mass = sum(mass.values())
    mass = {s: v / total_mass for s, v in mass.items()}
    chosen, weights = [empty], [0.0]
    remaining = 1.0
    for s in list(sizes):
        count = math.comb(m, s) * (2 if paired[s] else 1)
        if count > left or left * mass[s] / remaining < count * (1 - 1e-9):
            break
        for subset in itertools.combinations(range(m), s):
            z = empty.copy()
            z[list(subset)] = True
            chosen += [z, ~z] if paired[s] else [z]
        weights += [mass[s] / count] * count
        left -= count
        remaining -= mass[s]
        sizes.remove(s)
    if sizes and left > 0:
        probs = torch.tensor([mass[s] / (2 if paired[s] else 1) for s in sizes], dtype=torch.float64)
        seen: dict[bytes, int] = {}
        counts: list[int] = []
        draws, limit = 0, MAX_DRAWS_PER_SAMPLE * left
        while left > 0 and draws < limit:
            classes = torch.multinomial(probs, DRAW_CHUNK, replacement=True, generator=generator).numpy()
            orders = torch.rand((DRAW_CHUNK, m), generator=generator, dtype=torch.float64).argsort(dim=1).numpy()
            for k, order in zip(classes, orders):
                if left == 0 or draws >= limit:
                    break
                draws += 1
                s = sizes[k]
                z = empty.copy()
                z[order[:s]] = True
                for candidate in ((z, ~z) if paired[s] else (z,)):
                    key = candidate.tobytes()
                    if key in seen:
                        counts[seen[key]] += 1
                    elif left > 0:
                        seen[key] = len(counts)
                        counts.append(1)
                        chosen.append(candidate)
                        left -= 1
        shares = torch.tensor(counts, dtype=torch.float64)
        weights += (remaining * shares / shares.sum()).tolist()
    return torch.from_numpy(np.stack(chosen)), torch.tensor(weights, dtype=torch.float64)


def constrained_fit(coalitions: torch.Tensor, weights: torch.Tensor, y: torch.Tensor, empty: torch.Tensor,
                    gap: torch.Tensor) -> torch.Tensor:
    """[T, M]: φ minimising Σ w (y − f(∅) − z·φ)² subject to Σφ = ``gap`` (= f(x) − f(∅)), for every target at
    once, from the KKT system [[ZᵀWZ, 1], [1ᵀ, 0]] [φ; λ] = [ZᵀW(y − f(∅)); gap], solved by least squares (the
    minimum-norm solution where the samples cannot tell two segments apart).

    The constraint instead of shap's elimination of the last feature: the same solution, no feature singled
    out, and efficiency holds to the solver's rounding, not to a large finite weight as in Captum.
    """
    z = coalitions.double()
    m = z.shape[1]
    a = z.T @ (weights.unsqueeze(1) * z)
    b = z.T @ (weights.unsqueeze(1) * (y - empty.unsqueeze(1)).T)  # [M, T]
    kkt = torch.zeros((m + 1, m + 1), dtype=torch.float64)
    kkt[:m, :m] = a
    kkt[:m, m] = kkt[m, :m] = 1.0
    rhs = torch.cat([b, gap.unsqueeze(0)])
    return torch.linalg.lstsq(kkt, rhs, driver="gelsd").solution[:m].T


def _underdetermined(counts: list[int], n_samples: int, noun: str = "superpixel") -> None:
    plural = "segments" if noun == "superpixel" else f"{noun}s"
    for row, m in enumerate(counts):
        if not is_exact(m, n_samples) and n_samples < m + 1:
            relation = "<" if n_samples < m else "="
            raise ParameterError(
                f"n_samples {n_samples} {relation} {m} {plural} (row {row}): the regression is underdetermined; "
                f"give at least n_samples={m + 1} (the empty coalition and {m} others; the full one is the clean "
                f"pass), or fewer {plural}"
            )


def _flat_scores(found: Features, scores: list[torch.Tensor], clean: torch.Tensor) -> list[torch.Tensor]:
    """[T] per row: True where every pass (the clean one included) gave the same score."""
    return [(s.amin(dim=1) == s.amax(dim=1)) & (s[:, 0] == clean[:, n]) for n, s in enumerate(scores)]


SAME_SCORE_NOTE = ("the map is all zero: every copy with superpixels switched off got the same score as the image, "
                   "so no superpixel moves it")


def _same_score_note(noun: str) -> str:
    if noun == "superpixel":
        return SAME_SCORE_NOTE
    return (f"the map is all zero: every copy with {noun}s switched off got the same score as the text, so no "
            f"{noun} moves it")


def _inert_note(baseline, noun: str = "superpixel") -> str:
    named = f"the {baseline} baseline" if isinstance(baseline, str) else "the baseline"
    where = "this image" if noun == "superpixel" else "this text"
    return (f"the map is all zero: {named} equals {where} on every {noun}, so switching one off changes "
            "nothing; pick another baseline")


@register(
    "kernel_shap",
    display_name="KernelSHAP",
    family="Surrogate",
    attribution_channels=1,
    reference=LUNDBERG,
    summary=(
        "Cuts the image into superpixels, scores copies with some of them replaced by a baseline, and fits a "
        "linear model weighted by the Shapley kernel: each superpixel's weight is its Shapley value, its average "
        "contribution to the score over every order of adding superpixels, and the weights add up to the "
        "score of the image minus that of the baseline."
    ),
    weaknesses=(
        "The map is only as fine as the superpixels, and changes with the segmentation and with what a removed "
        "superpixel shows (the baseline); copies with patches of baseline are unnatural inputs; exact only when "
        "every coalition is scored (2^segments ≤ n_samples + 1), otherwise an estimate that varies with the seed "
        "and needs many passes; Shapley values average interactions away."
    ),
    formula=("φ = argmin Σ_z π(z)·(f(h(z)) − f(h(0)) − z·φ)²  s.t. Σφ = f(x) − f(h(0)),  "
             "π(z) = (M − 1) / (C(M,|z|)·|z|·(M − |z|))"),
    sanity=Sanity.UNTESTED,
    sanity_note="reads only the model's outputs, so it follows its weights",
    stochastic=True,  # exact (seed-free) only when 2^M − 1 ≤ n_samples, and M depends on the image
    params={
        "n_samples": Param(
            "int", 1000, "Coalitions scored (one forward pass each, the empty one included); with 2^segments ≤ "
            "n_samples + 1 every coalition is scored and the values are exact.", minimum=1, maximum=50000,
        ),
        **SEGMENT_PARAMS,
        "precision": precision_param(KERNEL_SHAP_BFLOAT16),
    },
    # the clean pass (the full coalition), then one pass per coalition: fewer when every coalition fits
    cost=Cost(fixed=(1, 0), per_step=(1, 0), steps="n_samples"),
    text=TextUse(
        params=TEXT_PARAMS, hidden=TEXT_HIDDEN, reduction="map",
        note="Over words (or tokens): coalitions of words kept, the others replaced by the baseline token ([CLS] "
             "and [SEP] kept); exact Shapley values when every coalition fits in n_samples (up to 9 words at the "
             "default 1000). A word's value is shared equally among its tokens, so the tokens add up to the score "
             "gap f(text) − f(baseline)."),
)
def kernel_shap(call, inputs, n_samples=1000, segmentation="slic", baseline="mean", unit=None, precision=FLOAT32,
                **params):
    """Lundberg & Lee 2017, arXiv:1705.07874, on superpixels.

    φ solves the Shapley-kernel weighted least squares over the scored coalitions with φ₀ = f(∅) and the
    efficiency constraint Σφ = f(x) − f(∅) enforced exactly (see :func:`constrained_fit`); the coalitions come
    from :func:`kernel_shap_design`. Rows with the same segment count draw the same coalitions (the call's
    seed offset by the count), so a row's map does not depend on its batch. ``extras`` per target:
    ``efficiency_gap`` Σφ − (f(x) − f(∅)) and ``efficiency_relative``, ``score_gap`` f(x) − f(∅), ``fit_r2``
    the weighted R² of the additive fit (how far the scores are from additive), ``n_segments``, ``exact``.
    """
    found = features(call, inputs, segmentation, baseline, params, unit)
    _underdetermined(found.counts, n_samples, found.noun)
    fast = fast_call(call, inputs, n_samples * len(inputs), precision)
    logits, clean = clean_scores(call, fast, inputs)
    clean = clean.cpu()  # [T, N]: f(x), the full coalition
    call.progress.advance(len(inputs))
    designs: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    for m in found.counts:
        if m not in designs:
            designs[m] = kernel_shap_design(m, n_samples, call.generator(offset=m))
    scores = coalition_scores(fast, inputs, found, [designs[m][0] for m in found.counts])
    flat = _flat_scores(found, scores, clean)
    count = len(call.targets)
    weights_per_row, notes = [], [[() for _ in found.counts] for _ in range(count)]
    extras = {key: torch.zeros((count, len(inputs)), dtype=torch.float64)
              for key in ("efficiency_gap", "efficiency_relative", "score_gap", "fit_r2")}
    for n, m in enumerate(found.counts):
        coalitions, weights = designs[m]
        y, empty = scores[n][:, 1:], scores[n][:, 0]
        z, w = coalitions[1:], weights[1:]
        active = ~found.inert[n]
        phi = torch.zeros((count, m), dtype=torch.float64)
        gap = clean[:, n] - empty
        if not active.any():
            gap = torch.zeros_like(gap)  # the baseline is the image: no score gap, whatever the rounding says
        elif m == 1:
            phi[:, 0] = gap
        else:
            phi[:, active] = constrained_fit(z[:, active], w, y, empty, gap)
        phi[flat[n]] = 0.0
        fitted = empty.unsqueeze(1) + phi @ z.double().T
        r2 = weighted_r2(y, fitted, w) if y.shape[1] else torch.ones(count, dtype=torch.float64)
        if not active.any():
            r2 = torch.ones(count, dtype=torch.float64)  # nothing to explain: the scores differ by rounding only
        efficiency = phi.sum(dim=1) - gap  # a flat row's gap is 0: its f(∅) is f(x)
        scale = torch.maximum(gap.abs(), phi.abs().sum(dim=1)).clamp_min(1.0)
        efficiency = torch.where(efficiency.abs() <= EFFICIENCY_ROUNDING * scale, 0.0, efficiency)
        extras["efficiency_gap"][:, n] = efficiency
        extras["efficiency_relative"][:, n] = efficiency / gap.abs().clamp_min(1e-12)
        extras["score_gap"][:, n] = gap
        extras["fit_r2"][:, n] = r2
        for t in range(count):
            notes[t][n] = _kernel_shap_notes(bool(active.any()), bool(flat[n][t]), float(r2[t]),
                                             float(extras["efficiency_relative"][t, n]), baseline, found.noun)
        weights_per_row.append(phi)
    attribution = _paint(found, weights_per_row, inputs.dtype)
    exact = torch.tensor([is_exact(m, n_samples) for m in found.counts])
    segments = torch.tensor(found.counts)
    return Attribution(
        attribution, logits=logits, regions=found.labels, target_notes=notes,
        extras=[{**{key: value[t] for key, value in extras.items()}, "n_segments": segments, "exact": exact}
                for t in range(count)],
    )


def _kernel_shap_notes(active: bool, flat: bool, r2: float, relative: float, baseline,
                       noun: str = "superpixel") -> tuple[str, ...]:
    if not active:
        return (_inert_note(baseline, noun),)
    if flat:
        return (_same_score_note(noun),)
    notes = []
    fewer = "segments" if noun == "superpixel" else f"{noun}s (a shorter text)"
    if r2 < POOR_FIT_R2:
        notes.append(
            f"the scores are far from additive over these {noun}s (Shapley-weighted R² = {r2:.2f} < "
            f"{POOR_FIT_R2}): each weight averages strong interactions between {noun}s, so it may not predict "
            f"what switching that {noun} off alone does"
        )
    if abs(relative) > EFFICIENCY_TOLERANCE:
        notes.append(f"the weights miss the score gap by {abs(relative):.1%} (efficiency should hold exactly): the "
                     f"regression was ill-conditioned; use more samples or fewer {fewer}")
    return tuple(notes)


def _paint(found: Features, weights: list[torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
    """[T, N, 1, H, W]: each pixel holds its superpixel's weight, per target; on text each token its word's
    weight shared among the word's tokens, and the special tokens 0."""
    maps = [paint_features(found.labels[n], w, share=found.text) for n, w in enumerate(weights)]  # each [T, H, W]
    return torch.stack(maps, dim=1).unsqueeze(2).to(dtype)


# ---------------------------------------------------------------------------------------------------------
# LIME
# ---------------------------------------------------------------------------------------------------------


def lime_design(m: int, n_samples: int, generator: torch.Generator) -> torch.Tensor:
    """[n_samples, M] bool, Ribeiro et al.'s sampling: a number of kept superpixels uniform in 0..M−1 (as lime's
    text explainer: 1..M removed), then a uniform subset of that size. Drawn DRAW_CHUNK at a time."""
    parts, left = [], n_samples
    while left > 0:
        kept = torch.randint(0, m, (DRAW_CHUNK,), generator=generator)
        order = torch.rand((DRAW_CHUNK, m), generator=generator, dtype=torch.float64).argsort(dim=1)
        take = min(left, DRAW_CHUNK)
        rank = torch.arange(m).unsqueeze(0) < kept[:take].unsqueeze(1)  # the first `kept` of a random order
        parts.append(torch.zeros((take, m), dtype=torch.bool).scatter_(1, order[:take], rank))
        left -= take
    return torch.cat(parts)


def lime_weights(coalitions: torch.Tensor, distance: str, kernel_width: float) -> torch.Tensor:
    """exp(−d² / (2 σ²)) (lime's sqrt(exp(−d²/σ²))), d the distance of z to the image's all-ones pattern:
    cosine, 1 − √(|z|/M) (1 for the empty coalition, as sklearn's cosine distance of a zero vector), or the L2
    distance divided by √M, the most it can be, so that one kernel width means the same on both."""
    m = coalitions.shape[1]
    kept = coalitions.sum(dim=1).double()
    d = 1 - torch.sqrt(kept / m) if distance == "cosine" else torch.sqrt((m - kept) / m)
    return torch.exp(-(d**2) / (2 * kernel_width**2))


def ridge_fit(coalitions: torch.Tensor, weights: torch.Tensor, y: torch.Tensor, alpha: float
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """(coefficients [T, M], intercepts [T]) of the weighted ridge regression with an unpenalised intercept,
    sklearn's Ridge(alpha).fit(Z, y, sample_weight=w): centre by the weighted means, then
    (XᵀWX + αI) β = XᵀWy (least squares where α = 0 leaves it singular)."""
    z = coalitions.double()
    total = weights.sum()
    z_mean = weights @ z / total
    y_mean = y @ weights / total
    zc, yc = z - z_mean, y - y_mean.unsqueeze(1)
    gram = zc.T @ (weights.unsqueeze(1) * zc) + alpha * torch.eye(z.shape[1], dtype=torch.float64)
    rhs = zc.T @ (weights.unsqueeze(1) * yc.T)
    beta = torch.linalg.lstsq(gram, rhs, driver="gelsd").solution.T
    return beta, y_mean - beta @ z_mean


@register(
    "lime",
    display_name="LIME",
    family="Surrogate",
    attribution_channels=1,
    reference=RIBEIRO,
    summary=(
        "Cuts the image into superpixels, scores copies with random sets of them replaced by a baseline, and "
        "fits a linear model of the score, weighting copies close to the image most: each superpixel's weight "
        "says how much its presence adds to the score near this image."
    ),
    weaknesses=(
        "The map is only as fine as the superpixels and changes with the segmentation, the baseline and the "
        "kernel width; copies with patches of baseline are unnatural inputs; a random estimate that varies with "
        "the seed; the linear surrogate can fit the model poorly (its R² is reported), and then its weights say "
        "little."
    ),
    formula="g = argmin_{b,w} Σ_z exp(−D(1, z)² / 2σ²)·(f(h(z)) − b − w·z)² + α‖w‖²,  D the cosine distance",
    sanity=Sanity.UNTESTED,
    sanity_note="reads only the model's outputs, so it follows its weights",
    stochastic=True,
    params={
        "n_samples": Param(
            "int", 1000, "Random perturbed copies scored (one forward pass each), besides the image itself.",
            minimum=1, maximum=50000,
        ),
        "kernel_width": Param(
            "float", 0.25, "Width σ of the exponential kernel on the distance to the image (lime's image default "
            "0.25): smaller trusts only copies that keep most superpixels.", minimum=0.01, maximum=100.0,
        ),
        "distance": Param(
            "choice", "cosine", "Distance of a copy's on/off pattern to the image's: cosine (lime's image "
            "default) or Euclidean divided by √segments.", choices=DISTANCES,
        ),
        "alpha": Param(
            "float", 1.0, "Ridge penalty of the surrogate (lime's default 1; 0 is plain weighted least squares).",
            minimum=0.0, maximum=1e6,
        ),
        **SEGMENT_PARAMS,
        "precision": precision_param(LIME_BFLOAT16),
    },
    # the clean pass (the image itself, one of the fitted samples), then one pass per perturbed copy
    cost=Cost(fixed=(1, 0), per_step=(1, 0), steps="n_samples"),
    text=TextUse(
        params=TEXT_PARAMS, hidden=TEXT_HIDDEN, reduction="map",
        note="Over words (or tokens), as lime's text explainer: copies of the text with random sets of words "
             "replaced by the baseline token ([CLS] and [SEP] kept), a linear model of the score fitted near the "
             "text; a word's weight is shared equally among its tokens."),
)
def lime(call, inputs, n_samples=1000, kernel_width=0.25, distance="cosine", alpha=1.0, segmentation="slic",
         baseline="mean", unit=None, precision=FLOAT32, **params):
    """Ribeiro, Singh & Guestrin 2016, arXiv:1602.04938, on superpixels as lime's image explainer.

    The samples are the image itself (the clean pass) and ``n_samples`` patterns from :func:`lime_design`,
    weighted by :func:`lime_weights` and fitted by :func:`ridge_fit` on every superpixel (lime's default keeps
    them all). Rows with the same segment count draw the same patterns. ``extras`` per target: ``fit_r2``
    (the surrogate's weighted R² over its samples, lime's ``score``), ``intercept``, ``n_segments``.

    On text (``unit``: words or tokens, as lime's text explainer switches words off) the features are a text's,
    the special tokens always kept; a one-word text is one feature, fitted as any other.
    """
    found = features(call, inputs, segmentation, baseline, params, unit)
    fewest = min(found.counts)
    if fewest < 2 and not found.text:
        row = found.counts.index(fewest)
        raise ParameterError(
            f"LIME needs at least 2 superpixels; got {fewest} (row {row}): raise n_segments, lower Felzenszwalb's "
            "scale or min_size or quick shift's kernel_size and max_dist, or use segmentation='grid'"
        )
    fast = fast_call(call, inputs, n_samples * len(inputs), precision)
    logits, clean = clean_scores(call, fast, inputs)
    clean = clean.cpu()
    call.progress.advance(len(inputs))
    designs = {m: lime_design(m, n_samples, call.generator(offset=m)) for m in dict.fromkeys(found.counts)}
    scores = coalition_scores(fast, inputs, found, [designs[m] for m in found.counts])
    flat = _flat_scores(found, scores, clean)
    count = len(call.targets)
    weights_per_row, notes = [], [[() for _ in found.counts] for _ in range(count)]
    r2_all = torch.ones((count, len(inputs)), dtype=torch.float64)
    intercepts = torch.zeros((count, len(inputs)), dtype=torch.float64)
    for n, m in enumerate(found.counts):
        z = torch.cat([designs[m], torch.ones((1, m), dtype=torch.bool)])  # the image itself, at distance 0
        y = torch.cat([scores[n], clean[:, n : n + 1]], dim=1)
        w = lime_weights(z, distance, kernel_width)
        active = ~found.inert[n]
        beta = torch.zeros((count, m), dtype=torch.float64)
        if active.any():
            beta[:, active], intercept = ridge_fit(z[:, active], w, y, alpha)
        else:
            intercept = clean[:, n].clone()
        beta[flat[n]] = 0.0
        intercept = torch.where(flat[n], clean[:, n], intercept)
        r2 = weighted_r2(y, intercept.unsqueeze(1) + beta @ z.double().T, w)
        if not active.any():
            r2 = torch.ones(count, dtype=torch.float64)  # nothing to explain: the scores differ by rounding only
        r2_all[:, n], intercepts[:, n] = r2, intercept
        for t in range(count):
            notes[t][n] = _lime_notes(bool(active.any()), bool(flat[n][t]), float(r2[t]), baseline, found.noun)
        weights_per_row.append(beta)
    segments = torch.tensor(found.counts)
    return Attribution(
        _paint(found, weights_per_row, inputs.dtype), logits=logits, regions=found.labels,
        target_notes=notes,
        extras=[{"fit_r2": r2_all[t], "intercept": intercepts[t], "n_segments": segments} for t in range(count)],
    )


def _lime_notes(active: bool, flat: bool, r2: float, baseline, noun: str = "superpixel") -> tuple[str, ...]:
    if not active:
        return (_inert_note(baseline, noun),)
    if flat:
        return (_same_score_note(noun),)
    if r2 < POOR_FIT_R2:
        fewer = "segments" if noun == "superpixel" else f"{noun}s"
        return (f"LIME's linear surrogate explains only R² = {r2:.2f} of the score over its samples (below "
                f"{POOR_FIT_R2}): read the weights with caution; more samples or fewer {fewer} help",)
    return ()
