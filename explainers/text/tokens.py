"""A text as a classifier reads it: tokens, their character spans, which word each belongs to, and what was cut.

Words are the tokenizer's own pre-tokenised words (a fast Hugging Face tokenizer's ``word_ids``): "don't!" may
be three words, a long word one word of several subword tokens. Special tokens ([CLS], [SEP]) belong to no word.
A word of no characters (a byte-level BPE tokenizer's lone space, its offsets trimmed) joins the next word.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import InputError

GROUPINGS = ("sum", "max")  # how a word's subword scores become the word's: their sum, or the largest magnitude


@dataclass(frozen=True)
class Encoded:
    """One text tokenised: ``ids``, ``tokens`` and ``offsets`` (character spans in ``text``; (0, 0) for special
    tokens) per token, ``special`` per token, ``word_ids`` per token (None for special tokens), ``words`` the
    character span of each word, ``dropped`` how many tokens truncation to ``max_length`` cut off the end."""

    text: str
    ids: tuple[int, ...]
    tokens: tuple[str, ...]
    offsets: tuple[tuple[int, int], ...]
    special: tuple[bool, ...]
    word_ids: tuple[int | None, ...]
    words: tuple[tuple[int, int], ...]
    dropped: int
    max_length: int

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def content(self) -> list[int]:
        """Positions of the tokens that come from the text (not special tokens)."""
        return [i for i, special in enumerate(self.special) if not special]

    @property
    def word_texts(self) -> list[str]:
        return [self.text[start:end] for start, end in self.words]

    @property
    def kept_chars(self) -> int:
        """Characters of ``text`` the model reads: up to the end of the last kept token."""
        ends = [end for (start, end), special in zip(self.offsets, self.special, strict=True) if not special]
        return max(ends, default=0)

    def truncation_note(self) -> str | None:
        """What the user must be told when the text was cut, or None."""
        if not self.dropped:
            return None
        return (f"the text is longer than the model reads ({self.max_length} tokens): the last {self.dropped} "
                f"tokens (from character {self.kept_chars} on) were cut off and are not explained")

    def word_labels(self) -> np.ndarray:
        """int [L]: each token's word index, −1 for special tokens (never switched off, never grouped)."""
        return np.array([-1 if w is None else w for w in self.word_ids], dtype=np.int64)


def encode(tokenizer, text: str, max_length: int) -> Encoded:
    """``text`` through a fast Hugging Face ``tokenizer``, truncated to ``max_length`` tokens (the cut counted).

    InputError for a text that is not a string, holds nothing to read (empty or only spaces), or that the
    tokenizer turns into no tokens."""
    if not isinstance(text, str):
        raise InputError(f"expected a text (a string); got {type(text).__name__}")
    if not text.strip():
        raise InputError("the text is empty: type or paste a sentence to explain")
    if not getattr(tokenizer, "is_fast", False):
        raise InputError("this tokenizer gives no character offsets (it is not a fast tokenizer); save the model's "
                         "tokenizer with its tokenizer.json (Hugging Face's fast tokenizers) to explain it")
    full = tokenizer(text, add_special_tokens=True, truncation=False, return_offsets_mapping=True,
                     return_special_tokens_mask=True)
    kept = tokenizer(text, add_special_tokens=True, truncation=True, max_length=max_length,
                     return_offsets_mapping=True, return_special_tokens_mask=True)
    ids = tuple(int(i) for i in kept["input_ids"])
    special = tuple(bool(s) for s in kept["special_tokens_mask"])
    if all(special):
        raise InputError(f"the tokenizer made no tokens of this text ({text[:40]!r}): nothing to explain")
    raw_words = kept.word_ids()
    # renumber words 0..W-1 in order of appearance (a tokenizer may skip numbers)
    numbering: dict[int, int] = {}
    word_ids = []
    spans: list[list[int]] = []
    offsets = tuple((int(a), int(b)) for a, b in kept["offset_mapping"])
    for position, word in enumerate(raw_words):
        if word is None or special[position]:
            word_ids.append(None)
            continue
        if word not in numbering:
            numbering[word] = len(numbering)
            spans.append(list(offsets[position]))
        index = numbering[word]
        spans[index][0] = min(spans[index][0], offsets[position][0])
        spans[index][1] = max(spans[index][1], offsets[position][1])
        word_ids.append(index)
    word_ids, spans = _fold_empty_words(word_ids, spans)
    return Encoded(
        text=text,
        ids=ids,
        tokens=tuple(tokenizer.convert_ids_to_tokens(list(ids))),
        offsets=offsets,
        special=special,
        word_ids=tuple(word_ids),
        words=tuple((a, b) for a, b in spans),
        dropped=max(0, len(full["input_ids"]) - len(ids)),
        max_length=int(max_length),
    )


def _fold_empty_words(word_ids: list[int | None], spans: list[list[int]]) -> tuple[list[int | None], list[list[int]]]:
    """Words that span no character joined to the next word (the last one to the word before), whose span then
    covers them: a byte-level BPE tokenizer (GPT-2's, RoBERTa's) makes a word of a lone space (the first of two,
    or a trailing one) and trims its offsets to nothing, and a word of no characters cannot be drawn."""
    drawn = [w for w, (start, end) in enumerate(spans) if end > start]
    if not drawn or len(drawn) == len(spans):
        return word_ids, spans
    into = {}
    for word in range(len(spans)):
        later = [w for w in drawn if w >= word]
        into[word] = later[0] if later else drawn[-1]
    merged = {w: list(spans[w]) for w in drawn}
    for word, target in into.items():
        merged[target][0] = min(merged[target][0], spans[word][0])
        merged[target][1] = max(merged[target][1], spans[word][1])
    renumber = {w: i for i, w in enumerate(drawn)}
    return ([None if w is None else renumber[into[w]] for w in word_ids], [merged[w] for w in drawn])


def group_words(scores: Sequence[float], encoded: Encoded, how: str = "sum") -> np.ndarray:
    """float [W]: each word's score from its tokens' ``scores`` [L]: their ``sum``, or the one of largest
    magnitude (``max``, sign kept). Special tokens are left out."""
    if how not in GROUPINGS:
        raise InputError(f"grouping must be one of {', '.join(GROUPINGS)}; got {how!r}")
    values = np.asarray(scores, dtype=np.float64)
    if values.shape != (len(encoded),):
        raise InputError(f"expected one score per token ({len(encoded)}); got shape {list(values.shape)}")
    words = np.zeros(len(encoded.words))
    for word in range(len(encoded.words)):
        members = values[[i for i, w in enumerate(encoded.word_ids) if w == word]]
        words[word] = members.sum() if how == "sum" else members[np.abs(members).argmax()]
    return words
