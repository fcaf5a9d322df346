"""Layer-wise Relevance Propagation (Bach et al. 2015, doi:10.1371/journal.pone.0130140; Montavon et al. 2019,
"Layer-Wise Relevance Propagation: An Overview"), our own implementation: rules (``rules.py``), which rule goes
to which layer (``composites.py``), model rewrites (``canonizers.py``) and the block that applies them
(``engine.py``). The method itself registers in ``explainers.methods.lrp``."""

from .canonizers import batch_norm_pairs, merged, uncovered
from .composites import COMPOSITES, Composite
from .engine import Session, lrp_rules
from .rules import AlphaBeta, Epsilon, Flat, Gamma, Norm, Pass, Rule, WSquare, ZBox, ZPlus, stabilize

__all__ = [
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
    "WSquare",
    "ZBox",
    "ZPlus",
    "batch_norm_pairs",
    "lrp_rules",
    "merged",
    "stabilize",
    "uncovered",
]
