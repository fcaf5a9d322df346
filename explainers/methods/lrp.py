"""Layer-wise Relevance Propagation, our own implementation (``explainers.lrp``)."""

from __future__ import annotations

import torch
from torch import nn

from ..attention import has_attention
from ..core import Attribution, Call
from ..lrp import ATTENTION_RULES, COMPOSITES, attention_lrp, lrp_rules, transformer_uncovered, uncovered
from ..registry import NEEDS_ATTENTION, NEEDS_MODEL, ONE_PASS, Param, Reference, Sanity, TextUse, register
from .gradient import input_gradient

BACH = Reference(
    "Bach, Binder, Montavon, Klauschen, Müller & Samek", 2015,
    "On Pixel-Wise Explanations for Non-Linear Classifier Decisions by Layer-Wise Relevance Propagation",
    url="https://doi.org/10.1371/journal.pone.0130140",
)
ACHTIBAT = Reference(
    "Achtibat, Hatefi, Dreyer, Jain, Wiegand, Lapuschkin & Samek", 2024,
    "AttnLRP: Attention-Aware Layer-Wise Relevance Propagation for Transformers", arxiv="2402.05602",
)
COMPOSITE_HELP = "Which rule each layer gets. " + " ".join(
    f"{name}: {composite.summary}." for name, composite in COMPOSITES.items()
)


def input_bounds(call: Call, inputs: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The z^B rule's box: pixels 0 and 1 through the bundle's normalisation, per channel [1, C, 1, 1]; (None,
    None) without a bundle, so that each row's own minimum and maximum bound it."""
    normalize = getattr(call.bundle, "normalize", None)
    if normalize is None:
        return None, None
    pixels = torch.zeros_like(inputs[:1], dtype=torch.float32)
    black, white = normalize(pixels), normalize(pixels + 1)
    low = torch.minimum(black, white).amin(dim=(0, 2, 3), keepdim=True)
    high = torch.maximum(black, white).amax(dim=(0, 2, 3), keepdim=True)
    return low.to(inputs.device, inputs.dtype), high.to(inputs.device, inputs.dtype)


def seeded_relevance(call: Call, logits: torch.Tensor) -> torch.Tensor:
    """[T, N]: the relevance LRP starts from, Σ_k ∂S/∂z_k · z_k over the logits z (the score itself for a logit or
    a contrast target)."""
    z = logits.detach().double().requires_grad_(True)
    rows = torch.arange(len(z))
    with torch.enable_grad():
        seeds = []
        for target in call.targets:
            (gradient,) = torch.autograd.grad(target.score(z, rows).sum(), z)
            seeds.append((gradient * z).sum(dim=1).detach())
    return torch.stack(seeds).to(logits.dtype)


def convolutional_check(model: nn.Module) -> str | None:
    """LRP's model check, pointing transformers to AttnLRP."""
    reason = uncovered(model)
    if reason is not None and has_attention(model):
        reason += "; for a vision transformer pick AttnLRP, which has rules for attention and LayerNorm"
    return reason


@register(
    "lrp",
    display_name="LRP",
    family="Propagation",
    reference=BACH,
    summary=(
        "Layer-wise Relevance Propagation: the score is handed back layer by layer, each neuron passing its "
        "relevance to its inputs in proportion to their contributions, under a rule chosen per layer (the "
        "composite). The relevance is approximately conserved, so the map adds up to about the score."
    ),
    weaknesses=(
        "The map depends on the composite and its parameters, and each layer type needs a rule: models with "
        "attention, LayerNorm or multiplicative gates are refused. With z⁺/α1β0 rules in the lower layers the map "
        "becomes nearly independent of the class and of the upper layers (Sixt, Granz & Landgraf 2020, "
        "arXiv:1912.09818)."
    ),
    formula="R_j = Σ_k a_j ρ(w_jk) / (ε + Σ_j a_j ρ(w_jk)) · R_k, from R = S_c(x) at the logit down to the pixels",
    cost=ONE_PASS,
    attribution_channels=None,
    sanity=Sanity.UNTESTED,
    sanity_note=(
        "not in Adebayo et al. 2018; Sixt, Granz & Landgraf 2020 (arXiv:1912.09818, 'When Explanations Lie') show "
        "that z⁺/α1β0 rules converge to a map that barely changes with the class or the upper layers' weights"
    ),
    smoothgrad_base=True,
    licence_note=(
        "The method's authors' institutions hold patents on it: Canadian patent CA 2979579, 'Relevance score "
        "assignment for artificial neural networks' (granted 2020-02-18; owner Fraunhofer-Gesellschaft, applicants "
        "Fraunhofer and TU Berlin; inventors Lapuschkin, Samek, Müller, Binder, Montavon; PCT/EP2015/056008, "
        "WO 2016/150472), per the Canadian Intellectual Property Office's record; a US application of the same "
        "title (15/710,455) is cited by third parties. We could not read heatmapping.org's own patent and "
        "licensing statement offline, so its wording, the US publication number and the licensing contacts are "
        "unconfirmed here. The reference implementation zennit is LGPL-3.0; this implementation shares no code "
        "with it."
    ),
    model_check=convolutional_check,
    params={
        "composite": Param("choice", "epsilon_plus_flat", COMPOSITE_HELP, choices=tuple(COMPOSITES)),
        "epsilon": Param("float", 1e-6, "ε of the dense layers' ε rule (zennit's default 1e-6; larger values "
                         "absorb weak, contradictory relevance and give sparser maps).", minimum=0.0, maximum=10.0),
        "gamma": Param("float", 0.25, "γ of the convolutions' γ rule: how much positive contributions are "
                       "favoured (zennit's default 0.25).", minimum=0.0, maximum=100.0,
                       only_when=("composite", ("epsilon_gamma_box",))),
    },
)
def lrp(call, inputs, composite="epsilon_plus_flat", epsilon=1e-6, gamma=0.25):
    """Bach et al. 2015 (doi:10.1371/journal.pone.0130140), composites as in zennit (Anders et al. 2021,
    arXiv:2106.13200). One forward and one backward per batch; targets share the forward. ``extras`` per target:
    ``relevance_sum`` (the map's sum), ``target_score``, ``relevance_in`` (what the logits received) and
    ``conservation`` = relevance_sum / relevance_in."""
    low, high = input_bounds(call, inputs)
    rules = COMPOSITES[composite].assign(call.model, epsilon=epsilon, gamma=gamma, low=low, high=high)
    with lrp_rules(call.model, rules):
        relevance, logits = input_gradient(call, inputs)
    return _with_conservation(call, inputs, relevance, logits)


def _with_conservation(call: Call, inputs: torch.Tensor, relevance: torch.Tensor,
                       logits: torch.Tensor) -> Attribution:
    """The attribution with LRP's ``extras`` per target (see :func:`lrp`)."""
    seeds = seeded_relevance(call, logits)
    rows = torch.arange(len(inputs))
    extras = []
    for t, target in enumerate(call.targets):
        total = relevance[t].sum(dim=tuple(range(1, relevance.dim() - 1)))
        seed = seeds[t]
        tiny = seed.abs() < 1e-12
        extras.append({
            "relevance_sum": total.detach().cpu(),
            "target_score": target.score(logits, rows).detach().cpu(),
            "relevance_in": seed.detach().cpu(),
            "conservation": torch.where(tiny, torch.nan, total / torch.where(tiny, 1.0, seed)).detach().cpu(),
        })
    return Attribution(relevance, extras=extras, logits=logits)


@register(
    "attnlrp",
    display_name="AttnLRP",
    family="Propagation",
    reference=ACHTIBAT,
    summary=(
        "Layer-wise Relevance Propagation for transformers: the score is handed back through every layer with "
        "rules made for attention — the softmax's own rule, products such as queries × keys and attention × "
        "values split half and half, LayerNorm's scale held constant, GELU passing relevance whole — in one "
        "forward and one backward pass. The map adds up to about the score."
    ),
    weaknesses=(
        "Relevance is not exactly conserved through the softmax (its rule gives a share to a bias term), and "
        "maps of vision transformers can be noisy; the γ rule on the linear layers (gamma > 0) or CP-LRP inside "
        "attention (attention_rule=cp, Ali et al. 2022, arXiv:2202.07304) give cleaner maps, as the authors do "
        "for ViTs. Each operation needs a rule: a model computing something none covers is refused by name."
    ),
    formula=("softmax: R_i = x_i (R_i − s_i Σ_j R_j); A·V and Q·Kᵀ: ε on the sum, half to each factor; "
             "LayerNorm: 1/σ held constant; linear: R_j = Σ_k a_j w_jk / (z_k + ε) R_k"),
    cost=ONE_PASS,
    attribution_channels=None,
    requires=frozenset({NEEDS_MODEL, NEEDS_ATTENTION}),
    sanity=Sanity.UNTESTED,
    sanity_note=(
        "not in Adebayo et al. 2018 (which predates it). Measured here on vit_digits (a digit, all 4 cascade "
        "steps): passes model randomisation on the signed map (Spearman −0.10), SSIM and HOG, but not on |map| "
        "(0.62): the magnitudes keep following the input; class-sensitive (4/4 random logits); not input "
        "invariant (0.48)"
    ),
    smoothgrad_base=True,
    licence_note=(
        "The reference implementation, LRP-eXplains-Transformers (lxt), is under the Clear BSD licence, which "
        "grants no patent rights; LRP itself is covered by patents of its authors' institutions (see LRP). This "
        "implementation shares no code with lxt."
    ),
    model_check=transformer_uncovered,
    text=TextUse(reduction="sum", note="The relevance reaches the token embeddings (the word embeddings, before "
                 "BERT adds its position and token-type embeddings, which keep their proportional share); a token's "
                 "score is its relevance summed over the embedding: signed, about the score in total."),
    params={
        "epsilon": Param("float", 1e-6, "ε of the linear layers' ε rule (larger values absorb weak, contradictory "
                         "relevance and give sparser maps).", minimum=0.0, maximum=10.0),
        "gamma": Param("float", 0.0, "γ of the linear layers and the patch convolution: 0 keeps the ε rule; "
                       "> 0 favours positive contributions (the authors use about 0.05 to 1 for ViTs to reduce "
                       "noise).", minimum=0.0, maximum=100.0),
        "attention_rule": Param("choice", "attnlrp", "Inside attention: attnlrp (the paper's softmax and uniform "
                                "product rules, relevance reaches queries and keys) or cp (attention weights as "
                                "constants, CP-LRP: relevance flows through the values only).",
                                choices=ATTENTION_RULES),
    },
)
def attnlrp(call, inputs, epsilon=1e-6, gamma=0.0, attention_rule="attnlrp"):
    """Achtibat et al. 2024 (arXiv:2402.05602); attention_rule "cp": Ali et al. 2022 (arXiv:2202.07304). One
    forward and one backward per batch; targets share the forward. ``extras`` per target as for :func:`lrp`."""
    with attention_lrp(call.model, epsilon=epsilon, gamma=gamma, attention_rule=attention_rule):
        relevance, logits = input_gradient(call, inputs)
    return _with_conservation(call, inputs, relevance, logits)
