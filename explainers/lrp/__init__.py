"""Layer-wise Relevance Propagation (Bach et al. 2015, doi:10.1371/journal.pone.0130140; Montavon et al. 2019,
"Layer-Wise Relevance Propagation: An Overview"), our own implementation: rules (``rules.py``), which rule goes
to which layer (``composites.py``), model rewrites (``canonizers.py``) and the block that applies them
(``engine.py``); AttnLRP's rules for transformers (``transformers.py``: :func:`attention_lrp`). The methods
register in ``explainers.methods.lrp``."""

from .canonizers import batch_norm_pairs, merged, uncovered
from .composites import COMPOSITES, Composite
from .engine import Session, lrp_rules
from .rules import AlphaBeta, Epsilon, Flat, Gamma, Norm, Pass, Rule, WSquare, ZBox, ZPlus, stabilize
from .transformers import ATTENTION_RULES, TransformerSession, attention_lrp, transformer_uncovered

__all__ = [
    "ATTENTION_RULES",
    "COMPOSITES",
    "AlphaBeta",
    "Composite",
    "Epsilon",
    "Flat",
    "Gamma",
    "Norm",
    "Pass",
    "Rule",
    "Session",
    "TransformerSession",
    "WSquare",
    "attention_lrp",
    "ZBox",
    "ZPlus",
    "batch_norm_pairs",
    "lrp_rules",
    "merged",
    "stabilize",
    "transformer_uncovered",
    "uncovered",
]
