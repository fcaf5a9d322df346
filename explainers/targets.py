"""Turning "top2", "tabby", 281, [281, 285] or ("tabby", "tiger cat") into per-row scores.

A target is resolved per row. "topK" needs that row's clean logits, so resolution can wait for the first
forward pass on the unperturbed input; class names and indices resolve at once.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from typing import Any

import torch

from .errors import TargetError

OBJECTIVES = ("logit", "probability", "log_probability")
_TOPK = re.compile(r"^top(\d+)$")
_VS = re.compile(r"\s+(?:vs\.?|versus|-)\s+", re.IGNORECASE)


def class_index(name: str, categories: Sequence[str] | None) -> int:
    """Index of a class name (case-insensitive, exact); ambiguity and typos are errors that help."""
    if not categories:
        raise TargetError(f"class name {name!r} given, but this model has no class names; pass an index")
    wanted = name.strip().lower()
    matches = [i for i, c in enumerate(categories) if c.lower() == wanted]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        listed = ", ".join(str(i) for i in matches)
        raise TargetError(f"class name {name!r} is ambiguous: it names classes {listed}; pass the index instead")
    close = difflib.get_close_matches(wanted, [c.lower() for c in categories], n=5, cutoff=0.6)
    hint = f"; did you mean: {', '.join(close)}?" if close else ""
    raise TargetError(f"no class named {name!r}{hint}")


class _Rank:
    """The k-th ranked prediction of a row (k=1 is the top prediction)."""

    def __init__(self, k: int):
        self.k = k

    def __repr__(self) -> str:
        return f"top{self.k}"


def _parse_one(spec: Any, categories: Sequence[str] | None, num_classes: int | None):
    """One class: an int index, a name, or 'topK'. Returns an int or a _Rank."""
    if isinstance(spec, torch.Tensor) and spec.numel() == 1:
        spec = int(spec.item())
    if isinstance(spec, bool):
        raise TargetError(f"target must be a class index, name or 'topK'; got {spec!r}")
    if isinstance(spec, int):
        if num_classes is not None and not 0 <= spec < num_classes:
            raise TargetError(f"class index {spec} is out of range: this model has classes 0..{num_classes - 1}")
        return spec
    if isinstance(spec, str):
        text = spec.strip()
        match = _TOPK.match(text.lower())
        if match:
            k = int(match.group(1))
            if k < 1 or (num_classes is not None and k > num_classes):
                raise TargetError(f"{text!r}: rank must be between 1 and {num_classes or 'the class count'}")
            return _Rank(k)
        if text.isdigit():
            return _parse_one(int(text), categories, num_classes)
        return class_index(text, categories)
    raise TargetError(f"target must be a class index, name or 'topK'; got {type(spec).__name__} {spec!r}")


class TargetSpec:
    """A parsed target for a batch of ``n_rows`` inputs; ``score(logits, rows)`` is what gets explained.

    ``indices`` is a LongTensor [N] of class indices, or [N, 2] for a contrast (score of a minus score of b).
    """

    def __init__(
        self,
        target: Any,
        n_rows: int,
        categories: Sequence[str] | None = None,
        objective: str = "logit",
        num_classes: int | None = None,
    ):
        if objective not in OBJECTIVES:
            raise TargetError(f"objective must be one of {', '.join(OBJECTIVES)}; got {objective!r}")
        self.objective = objective
        self.n_rows = n_rows
        num_classes = num_classes or (len(categories) if categories else None)
        if target is None:
            target = "top1"
        if isinstance(target, str) and _VS.search(target):
            target = tuple(_VS.split(target, maxsplit=1))
        self.contrast = isinstance(target, tuple)
        if self.contrast:
            if len(target) != 2:
                raise TargetError(f"a contrast target is a pair (a, b); got {len(target)} items")
            per_row = [tuple(_parse_one(t, categories, num_classes) for t in target)] * n_rows
        elif isinstance(target, (list, torch.Tensor)) and not (
            isinstance(target, torch.Tensor) and target.numel() == 1
        ):
            items = target.tolist() if isinstance(target, torch.Tensor) else list(target)
            if len(items) != n_rows:
                raise TargetError(f"got {len(items)} targets for {n_rows} inputs; give one per row or a single one")
            per_row = [(_parse_one(t, categories, num_classes),) for t in items]
        else:
            per_row = [(_parse_one(target, categories, num_classes),)] * n_rows
        self._per_row = per_row
        width = 2 if self.contrast else 1
        self._resolved = torch.full((n_rows, width), -1, dtype=torch.long)
        for row, specs in enumerate(per_row):
            for j, spec in enumerate(specs):
                if isinstance(spec, int):
                    self._resolved[row, j] = spec
        if self.contrast and bool((self._resolved[:, 0] == self._resolved[:, 1]).any()) and not self.needs_logits:
            raise TargetError("a contrast needs two different classes")

    @property
    def needs_logits(self) -> bool:
        return bool((self._resolved < 0).any())

    def resolve(self, logits: torch.Tensor, rows: torch.Tensor | None = None) -> None:
        """Fill in rank targets from the clean logits of ``rows`` (all rows if None)."""
        rows = torch.arange(self.n_rows) if rows is None else rows.cpu()
        if logits.shape[-1] < 2 and any(isinstance(s, _Rank) for specs in self._per_row for s in specs):
            raise TargetError("ranked targets need a model with at least two outputs")
        order = None
        for pos, row in enumerate(rows.tolist()):
            for j, spec in enumerate(self._per_row[row]):
                if isinstance(spec, _Rank) and self._resolved[row, j] < 0:
                    if order is None:
                        order = logits.detach().argsort(dim=-1, descending=True).cpu()
                    if spec.k > order.shape[-1]:
                        raise TargetError(f"top{spec.k} asked of a model with {order.shape[-1]} outputs")
                    self._resolved[row, j] = order[pos, spec.k - 1]
            if logits.shape[-1] and bool((self._resolved[row] >= logits.shape[-1]).any()):
                raise TargetError(
                    f"class index {int(self._resolved[row].max())} is out of range for a model with "
                    f"{logits.shape[-1]} outputs"
                )

    @property
    def indices(self) -> torch.Tensor:
        if self.needs_logits:
            raise RuntimeError("target not resolved yet: call resolve() with the clean logits first")
        return self._resolved if self.contrast else self._resolved[:, 0]

    def _class_score(self, logits: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        if self.objective == "probability":
            values = logits.softmax(dim=-1)
        elif self.objective == "log_probability":
            values = logits.log_softmax(dim=-1)
        else:
            values = logits
        return values.gather(1, classes.view(-1, 1)).squeeze(1)

    def score(self, logits: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """The explained score of each row of ``logits``; ``rows`` maps each to its input row."""
        resolved = self._resolved.to(logits.device)[rows.to(logits.device)]
        if int(resolved.max()) >= logits.shape[-1]:
            raise TargetError(
                f"class index {int(resolved.max())} is out of range: the model has classes 0..{logits.shape[-1] - 1}"
            )
        score = self._class_score(logits, resolved[:, 0])
        if self.contrast:
            score = score - self._class_score(logits, resolved[:, 1])
        return score
