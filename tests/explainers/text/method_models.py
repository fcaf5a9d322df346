"""The seeded tiny BERT of ``tests.text_models`` with weights large enough to matter, for the method tests.

A freshly built BERT draws its weights with σ = 0.02: its logits then hardly move with the text (about 10⁻³),
and every attribution is rounding noise. Redrawing the weights (not the LayerNorms) with σ = 0.3 from a seeded
generator gives logits of a few units that change with each word, so oracles and properties compare real numbers.
"""

from __future__ import annotations

import torch

from explainers.text import TextBundle
from tests.text_models import tiny_text_bundle

LIVELY_STD = 0.3


def lively(bundle: TextBundle, seed: int = 1, std: float = LIVELY_STD) -> TextBundle:
    """``bundle`` with its net's weights and biases (all but the LayerNorms') redrawn from N(0, std²), seeded."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in bundle.net.named_parameters():
            if "LayerNorm" not in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * std)
    return bundle


def lively_bundle(seed: int = 0, attention: str = "sdpa", **kwargs) -> TextBundle:
    """:func:`tests.text_models.tiny_text_bundle` made lively, with ``attention`` ("sdpa" or "eager") as the
    attention implementation."""
    bundle = lively(tiny_text_bundle(seed=seed, **kwargs), seed=seed + 1)
    bundle.net.config._attn_implementation = attention
    return bundle
