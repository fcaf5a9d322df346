"""The one prologue of every text surface: a text, methods and targets in; token maps out.

The Text page, its Compare view, the CLI and the batch command call :func:`explain_text`; it tokenises once,
runs ``explain_many`` on the token embeddings (the same registry, batching, progress and cancel as images) and
reduces each map to one score per token (:func:`~explainers.text.render.token_scores`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core import ExplanationRecord
from ..many import explain_many
from .bundle import TextBundle, TokenBundle
from .render import token_record, token_scores
from .tokens import Encoded


@dataclass(frozen=True)
class TokenMap:
    """One method's map of one text for one target: ``scores`` [L] per token (special tokens included), the
    raw ``record`` it came from (its logits, notes, extras, seed), and the text's ``encoded`` tokens."""

    method: str
    target_key: Any
    scores: np.ndarray
    record: ExplanationRecord
    encoded: Encoded

    @property
    def notes(self) -> tuple[str, ...]:
        note = self.encoded.truncation_note()
        return tuple(self.record.notes) + ((note,) if note else ())

    def as_json(self, categories: Sequence[str] | None = None) -> dict[str, Any]:
        """The download: tokens, offsets and scores, with what made them."""
        target = self.record.target
        names = [categories[t] if categories and 0 <= t < len(categories) else str(t) for t in target]
        return token_record(self.encoded, self.scores, method=self.method, target=list(target),
                            target_names=names, params=self.record.params, objective=self.record.objective,
                            seed=self.record.seed, notes=list(self.notes))


def explain_text(bundle: TextBundle | TokenBundle, text: str | None, methods: Sequence[str] | str,
                 targets: Sequence[Any] | Any = ("top1",), *, objective: str = "logit", seed: int = 0,
                 batch_size: int | None = None, progress: Callable[[int, int], object] | None = None,
                 params: dict[str, dict[str, Any]] | None = None) -> dict[tuple[str, Any], TokenMap]:
    """``{(method, target key): TokenMap}`` for ``text`` on ``bundle`` (a TextBundle; or a TokenBundle already
    scored, with ``text`` None). ``targets`` as for images: "top1", "top2", a class index or name, a contrast."""
    scored = bundle if isinstance(bundle, TokenBundle) else bundle.scored(text)
    explanations = explain_many(scored, scored.inputs, methods, targets, objective=objective, seed=seed,
                                batch_size=batch_size, progress=progress, params=params)
    maps = {}
    for (method, key), explanation in explanations.items():
        record = explanation.record(0)
        maps[(method, key)] = TokenMap(method=method, target_key=key,
                                       scores=token_scores(record.attribution, method, record.params),
                                       record=record, encoded=scored.encoded)
    return maps
