"""Noise-averaged wrappers around any gradient method (NoiseTunnel-style: the base is a parameter)."""

from __future__ import annotations

import torch

from ..core import Attribution, run_method
from ..registry import IMAGE, METHODS, TEXT, Cost, Param, Reference, Sanity, TextUse, modality_of, register
from . import gradient, guided, integrated  # noqa: F401  (the bases register first)

SMILKOV = Reference(
    "Smilkov, Thorat, Kim, Viégas & Wattenberg", 2017, "SmoothGrad: removing noise by adding noise", "1706.03825"
)
ADEBAYO_VARGRAD = Reference(
    "Adebayo, Gilmer, Goodfellow & Kim", 2018, "Local Explanation Methods for Deep Neural Networks Lack Sensitivity "
    "to Parameter Values", "1810.03307",
)
# Every method flagged as a SmoothGrad base, in registry order: composition, not a whitelist.
BASES = tuple(name for name, info in METHODS.items() if info.smoothgrad_base)
# those of them that run on text (the gradient, input × gradient, IG, AttnLRP on the token embeddings)
TEXT_BASES = tuple(name for name in BASES if METHODS[name].applies_to(TEXT))


def _base_params(bases: tuple[str, ...], modality: str = IMAGE) -> dict[str, Param]:
    """The bases' own parameters for ``modality`` (on text IG's baseline is pad, mask or zero), each shown only
    when its base is chosen (n_steps only with IG)."""
    owners: dict[str, list[str]] = {}
    params: dict[str, Param] = {}
    for base in bases:
        for name, param in METHODS[base].params_for(modality).items():
            owners.setdefault(name, []).append(base)
            params.setdefault(name, param)
    return {
        name: Param(p.kind, p.default, f"{p.help} (a parameter of the base method)", p.minimum, p.maximum, p.choices,
                    p.allow_tensor, only_when=("base", tuple(owners[name])))
        for name, p in params.items()
    }


PARAMS = {
    "base": Param("choice", "vanilla", "The gradient method averaged over the noisy copies.", choices=BASES),
    "n_samples": Param("int", 25, "Noisy copies of the input.", minimum=1, maximum=500),
    "noise_level": Param(
        "float", 0.15, "Noise σ as a fraction of the input's value range (max - min).", minimum=0.0, maximum=1.0
    ),
    **_base_params(BASES),
}
# On text: the bases that run on text, with their text parameters; the image-only bases' parameters hidden
TEXT_PARAMS = {
    "base": Param("choice", "vanilla", "The gradient method averaged over the noisy copies of the token "
                  "embeddings.", choices=TEXT_BASES),
    "noise_level": Param(
        "float", 0.15, "Noise σ as a fraction of the embeddings' value range (max - min over the text's tokens "
        "and dimensions).", minimum=0.0, maximum=1.0),
    **_base_params(TEXT_BASES, TEXT),
}
TEXT_HIDDEN = frozenset(PARAMS) - frozenset(TEXT_PARAMS) - {"n_samples"}


def noisy_attributions(call, inputs, params) -> torch.Tensor:
    """Base attributions of ``n_samples`` noisy copies of each row: [T, N, n_samples, C, H, W].

    Every row gets the same noise draws (one generator, seeded by the call), so a row's map equals the map of
    that image alone with the same seed, whatever else is in its batch. On text only the content tokens get noise:
    [CLS] and [SEP] are never perturbed (the text baselines keep them too, so a base such as IG gives them 0).
    """
    count, samples = len(inputs), params["n_samples"]
    value_range = (inputs.amax(dim=(1, 2, 3)) - inputs.amin(dim=(1, 2, 3))).view(-1, 1, 1, 1, 1)
    noise = torch.randn((samples, *inputs.shape[1:]), generator=call.generator(), dtype=inputs.dtype)
    noise = noise.to(inputs.device)
    modality = modality_of(call.model)  # on text the base's text parameters (IG's pad/mask/zero baseline)
    if modality == TEXT:
        noise = noise * call.bundle.content_mask().to(noise.dtype)
    noisy = inputs.unsqueeze(1) + noise.unsqueeze(0) * (params["noise_level"] * value_range)
    rows = torch.arange(count).repeat_interleave(samples)
    base = METHODS[params["base"]]
    declared = base.params_for(modality)
    base_params = base.validate({k: v for k, v in params.items() if k in declared}, modality)
    result = run_method(base, call.take(rows), noisy.flatten(0, 1), base_params)
    return result.attribution.view(len(call.targets), count, samples, *result.attribution.shape[2:])


def _variance(a: torch.Tensor) -> torch.Tensor:
    """Variance over the copies (dim 2), shifted by the first copy: identical copies give exactly 0 and nearby
    ones lose no digits to E[a²] − E[a]²."""
    shifted = a - a[:, :, :1]
    return (shifted * shifted).mean(dim=2) - shifted.mean(dim=2) ** 2


def _flat_rows(inputs: torch.Tensor) -> list[bool]:
    return (inputs.amax(dim=(1, 2, 3)) == inputs.amin(dim=(1, 2, 3))).tolist()


NO_NOISE = ("the input has a single value, so the noise (a share of its value range) is zero: every copy is the "
            "input itself")


def _register(name, display_name, summary, formula, reduce, text, reference=SMILKOV, flat_note=None):
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
        formula=formula,
        sanity=Sanity.AS_BASE,
        params=PARAMS,
        cost=Cost(fixed=(1, 0), repeats="n_samples", base="base"),  # the clean prediction, then the noisy copies
        attribution_channels=None,
        stochastic=True,
        text=text,
    )
    def method(call, inputs, **params):
        # noise is a share of the value range, so an image of one value gets none: say so beside the map
        note = flat_note or f"{NO_NOISE}, and {display_name} is the base method's map"
        notes = [(note,) if flat else () for flat in _flat_rows(inputs)]
        return Attribution(reduce(noisy_attributions(call, inputs, params)), notes=notes)

    method.__doc__ = f"{display_name}: {reference}. {formula}"
    return method


smoothgrad = _register(
    "smoothgrad",
    "SmoothGrad",
    "Averages the base method's map over copies of the input with Gaussian noise added, which cancels the "
    "high-frequency noise of raw gradients.",
    "A = 1/n Σ_i A_base(x + ε_i), ε_i ~ N(0, σ²)",
    lambda a: a.mean(dim=2),
    TextUse(params=TEXT_PARAMS, hidden=TEXT_HIDDEN, reduction="base",
            note="Noise added to the token embeddings; each token's score is then reduced as its base's is (the "
                 "gradient's length for the gradient, the sum over the embedding for input × gradient, IG and "
                 "AttnLRP)."),
)
smoothgrad_sq = _register(
    "smoothgrad_sq",
    "SmoothGrad²",
    "Averages the squared base attributions over noisy copies: a magnitude map that emphasises consistent "
    "evidence.",
    "A = 1/n Σ_i A_base(x + ε_i)²",
    lambda a: (a * a).mean(dim=2),
    TextUse(params=TEXT_PARAMS, hidden=TEXT_HIDDEN, reduction="sum",
            note="Noise added to the token embeddings; a token's score is the mean squared length of its base "
                 "attribution vector over the copies (the squares summed over the embedding): a magnitude, ≥ 0."),
)
vargrad = _register(
    "vargrad",
    "VarGrad",
    "The variance of the base attributions over noisy copies of the input: where the explanation is unstable "
    "under noise.",
    "A = 1/n Σ_i A_base(x + ε_i)² − (1/n Σ_i A_base(x + ε_i))²",
    _variance,
    TextUse(params=TEXT_PARAMS, hidden=TEXT_HIDDEN, reduction="sum",
            note="Noise added to the token embeddings; a token's score is the total variance of its base "
                 "attribution vector over the copies (the variances summed over the embedding): ≥ 0."),
    reference=ADEBAYO_VARGRAD,
    flat_note=f"the map is all zero: {NO_NOISE}, and identical copies have no variance",
)
