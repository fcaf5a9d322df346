"""Turning "top2", "tabby", 281, [281, 285] or Contrast("tabby", "tiger cat") into per-row scores.

``TargetSpec`` parses what a caller wrote; ``TargetSpec.resolve(logits)`` turns it into a :class:`Target`, the
explicit per-row class indices a method scores. Ranks ("topK") need the clean logits, so ``explain()`` resolves
them before it calls a method; class names and indices resolve at once.
"""

from __future__ import annotations

import copy
import difflib
import numbers
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .errors import TargetError

OBJECTIVES = ("logit", "probability", "log_probability")
_TOPK = re.compile(r"^top(\d+)$")
_VS = re.compile(r"\s+(?:vs\.?|versus)\s+", re.IGNORECASE)


@dataclass(frozen=True)
class Contrast:
    """Why ``a`` rather than ``b``: the explained score is score(a) − score(b). Each side is an index, a name
    or "topK"."""

    a: Any
    b: Any

    def __str__(self) -> str:
        return f"{self.a} vs {self.b}"


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


def _scalar(spec: Any) -> Any:
    """A one-element tensor or array, or a NumPy scalar, as a plain Python value."""
    if isinstance(spec, torch.Tensor) and spec.numel() == 1:
        return spec.item()
    if isinstance(spec, (np.ndarray, np.generic)) and np.size(spec) == 1:
        return spec.item()
    return spec


def _parse_one(spec: Any, categories: Sequence[str] | None, num_classes: int | None):
    """One class: an int index, a name, or 'topK'. Returns an int or a _Rank."""
    spec = _scalar(spec)
    if isinstance(spec, bool):
        raise TargetError(f"target must be a class index, name or 'topK'; got {spec!r}")
    if isinstance(spec, numbers.Integral):
        spec = int(spec)
        if num_classes is not None and not 0 <= spec < num_classes:
            raise TargetError(f"class index {spec} is out of range: this model has classes 0..{num_classes - 1}")
        if spec < 0:
            raise TargetError(f"class index {spec} is negative; class indices start at 0")
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


def per_row_items(target: Any) -> list | None:
    """The per-row items of a list, tuple, 1-D array or tensor; None for anything that is one target."""
    if isinstance(target, (torch.Tensor, np.ndarray)):
        if np.size(target) == 1 if isinstance(target, np.ndarray) else target.numel() == 1:
            return None  # one target, for every row
        if target.ndim != 1:
            raise TargetError(f"a target array must be 1-D, one class per row; got shape {list(target.shape)}")
        return target.tolist()
    if isinstance(target, (list, tuple)):
        return list(target)
    return None


@dataclass(frozen=True)
class Target:
    """Resolved targets: ``classes`` [N, 1] (one class per row) or [N, 2] (a contrast, a − b), on one device."""

    classes: torch.Tensor
    objective: str = "logit"
    max_class: int = -1  # the largest index, known on the CPU, so scoring checks the range without a device sync

    @property
    def contrast(self) -> bool:
        return self.classes.shape[1] == 2

    @property
    def indices(self) -> torch.Tensor:
        """[N] class indices, or [N, 2] for a contrast."""
        return self.classes if self.contrast else self.classes[:, 0]

    def __len__(self) -> int:
        return len(self.classes)

    def take(self, rows: torch.Tensor) -> Target:
        """The targets of rows ``rows`` (e.g. each input row repeated once per noisy copy)."""
        return Target(self.classes[rows.to(self.classes.device)], self.objective, self.max_class)

    def to(self, device: torch.device) -> Target:
        if self.classes.device == torch.device(device):
            return self
        return Target(self.classes.to(device), self.objective, self.max_class)

    def _class_score(self, logits: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        if self.objective == "probability":
            values = logits.softmax(dim=-1)
        elif self.objective == "log_probability":
            values = logits.log_softmax(dim=-1)
        else:
            values = logits
        return values.gather(1, classes.view(-1, 1)).squeeze(1)

    def score(self, logits: torch.Tensor, rows: torch.Tensor | slice | None = None) -> torch.Tensor:
        """The explained score of each row of ``logits`` [B, K]; ``rows`` says which target row each belongs to
        (None: rows 0..B-1 in order)."""
        if self.max_class >= logits.shape[-1]:
            raise TargetError(
                f"class index {self.max_class} is out of range: the model has classes 0..{logits.shape[-1] - 1}"
            )
        if rows is None:
            rows = slice(0, len(logits))
        elif isinstance(rows, torch.Tensor) and rows.device != self.classes.device:
            rows = rows.to(self.classes.device)
        classes = self.classes[rows]
        if classes.device != logits.device:
            classes = classes.to(logits.device)
        score = self._class_score(logits, classes[:, 0])
        if self.contrast:
            score = score - self._class_score(logits, classes[:, 1])
        return score


class TargetSpec:
    """A parsed target for a batch of ``n_rows`` inputs.

    Accepted: an int (NumPy integers and one-element tensors too), a class name, "topK", a :class:`Contrast`
    or the string "A vs B"; or one of those per row as a list, tuple, 1-D array or tensor of length ``n_rows``.
    A tuple that is not one item per row is ambiguous (a contrast? two rows?) and an error: write a contrast
    as ``Contrast(a, b)`` or "a vs b".
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
        items = per_row_items(target)
        if items is not None:
            if len(items) != n_rows:
                if isinstance(target, tuple) and len(items) == 2:
                    raise TargetError(
                        f"a tuple of 2 targets for {n_rows} input(s) is ambiguous; for a contrast write "
                        f"Contrast({items[0]!r}, {items[1]!r}) or \"{items[0]} vs {items[1]}\", for one target "
                        "per row give one per input"
                    )
                raise TargetError(f"got {len(items)} targets for {n_rows} inputs; give one per row or a single one")
            specs = [self._parse_row(item, categories, num_classes) for item in items]
        else:
            specs = [self._parse_row(target, categories, num_classes)] * n_rows
        widths = {len(s) for s in specs}
        if len(widths) > 1:
            raise TargetError("mix of contrasts and single classes across rows; give every row the same kind")
        self.contrast = widths == {2}
        self._per_row = specs
        # class indices where known, -1 where a rank waits for the logits; one tensor built at once
        known = [[spec if isinstance(spec, int) else -1 for spec in row_specs] for row_specs in specs]
        self._resolved = torch.tensor(known, dtype=torch.long).reshape(n_rows, 2 if self.contrast else 1)
        self._ranked = bool((self._resolved < 0).any())  # read on every call: kept, not recomputed
        if self.contrast and not self.needs_logits and bool((self._resolved[:, 0] == self._resolved[:, 1]).any()):
            raise TargetError("a contrast needs two different classes")

    @staticmethod
    def _parse_row(item: Any, categories, num_classes) -> tuple:
        if isinstance(item, str) and _VS.search(item):
            item = Contrast(*_VS.split(item, maxsplit=1))
        if isinstance(item, Contrast):
            return (_parse_one(item.a, categories, num_classes), _parse_one(item.b, categories, num_classes))
        if isinstance(item, (tuple, list)):
            raise TargetError(
                f"a nested {type(item).__name__} {item!r} is not a target; for a contrast write Contrast(a, b) "
                "or \"a vs b\""
            )
        return (_parse_one(item, categories, num_classes),)

    @property
    def indices(self) -> torch.Tensor:
        """[N] class indices, or [N, 2] for a contrast; ranks must have been resolved (see ``resolve``)."""
        return self.resolve().indices

    @property
    def needs_logits(self) -> bool:
        """Whether a rank ("topK") still waits for the clean logits."""
        return self._ranked

    def resolve_rows(self, logits: torch.Tensor, start: int, stop: int,
                     device: torch.device | str = "cpu") -> Target:
        """Rows ``start:stop`` resolved from those rows' own ``logits`` [stop - start, K], as a batched pass computes
        them: a rank costs no separate clean pass."""
        if not self.needs_logits:
            return self.resolve(None, device).take(torch.arange(start, stop))
        part = copy.copy(self)
        part.n_rows, part._per_row, part._resolved = stop - start, self._per_row[start:stop], self._resolved[start:stop]
        part._ranked = bool((part._resolved < 0).any())
        return part.resolve(logits, device)

    def resolve(self, logits: torch.Tensor | None = None, device: torch.device | str = "cpu") -> Target:
        """The explicit :class:`Target`; ranks are read from the clean ``logits`` [N, K] of the inputs."""
        resolved = self._resolved.clone()
        if self.needs_logits:
            if logits is None:
                raise TargetError("ranked targets ('topK') need the model's logits to resolve")
            order = logits.detach().argsort(dim=-1, descending=True).cpu()
            for row, row_specs in enumerate(self._per_row):
                for j, spec in enumerate(row_specs):
                    if isinstance(spec, _Rank):
                        if spec.k > order.shape[-1]:
                            raise TargetError(f"top{spec.k} asked of a model with {order.shape[-1]} outputs")
                        resolved[row, j] = order[row, spec.k - 1]
            if self.contrast and bool((resolved[:, 0] == resolved[:, 1]).any()):
                raise TargetError("a contrast needs two different classes; both sides name the same one here")
        if logits is not None and bool((resolved >= logits.shape[-1]).any()):
            raise TargetError(
                f"class index {int(resolved.max())} is out of range for a model with {logits.shape[-1]} outputs"
            )
        return Target(resolved.to(device), self.objective, int(resolved.max()))


def target_key(target: Any) -> Any:
    """A target as a dictionary key (``explain_many``'s results): the target as given (an int, a name, "topK", a
    Contrast, None), a plain int for a one-element tensor or NumPy scalar, a tuple for one target per row."""
    if isinstance(target, (torch.Tensor, np.ndarray, np.generic)):
        size = target.numel() if isinstance(target, torch.Tensor) else np.size(target)
        return target.item() if size == 1 else tuple(target.tolist())
    if isinstance(target, list):
        return tuple(target_key(item) for item in target)
    if isinstance(target, numbers.Integral) and not isinstance(target, bool):
        return int(target)
    return target


def join_targets(parts: Sequence[Target]) -> Target:
    """One Target from the targets of consecutive row ranges (the batches of one pass)."""
    return Target(torch.cat([p.classes for p in parts]), parts[0].objective, max(p.max_class for p in parts))


def resolve_target(target: Any, categories: Sequence[str] | None = None, scores: Any = None) -> int | Contrast:
    """One image's ``target`` as a class index, or a Contrast of two indices: ranks ("top1") read from ``scores``
    [K] (the image's logits or probabilities: they rank alike), names looked up, indices checked. What a cache
    keys on, however the target was spelled."""
    spec = TargetSpec(target, 1, categories)
    ranking = None
    if spec.needs_logits and scores is not None:
        ranking = torch.as_tensor(np.asarray(scores, dtype=np.float64)).reshape(1, -1)
    classes = [int(c) for c in spec.resolve(ranking).classes[0]]
    return Contrast(*classes) if len(classes) == 2 else classes[0]
