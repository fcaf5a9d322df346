"""Text classifiers: which tokens made the decision. A text is explained through its token embeddings, laid out
as [N, D, 1, L], so the image methods that make sense on text run unchanged (``explainers.registry.TextUse``)."""

from .bundle import UNITS, TextBundle, TokenBundle
from .explain import TokenMap, explain_text
from .render import TokenView, token_html, token_record, token_scores
from .scores import EmbeddingScores
from .tokens import GROUPINGS, Encoded, encode, group_words

__all__ = ["GROUPINGS", "UNITS", "EmbeddingScores", "Encoded", "TextBundle", "TokenBundle", "TokenMap", "TokenView",
           "encode", "explain_text", "group_words", "token_html", "token_record", "token_scores"]
