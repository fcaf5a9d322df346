"""Token maps: each token's one score from a method's raw attribution, and the text drawn with those scores.

The one place where a text attribution becomes a picture: the Text page, its Compare view, the downloads, the
CLI and the batch command all call :func:`token_scores` and :func:`token_html`. Colours come from
``explainers.render`` (the same colormaps, clip and sign rules as the image maps).
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ParameterError
from ..registry import METHODS
from ..render import apply_sign, colorize, colour_scale, scale_to_range, suggested_colormap, value_range
from .tokens import Encoded, group_words

TEXT_SIGNS = ("signed", "absolute")  # a diverging scale of the signed scores, or a sequential one of magnitudes
# text is read over its background: a sequential map that starts white keeps weak tokens readable (an image map's
# inferno starts black)
TEXT_SEQUENTIAL = "Reds"


def reduction_of(method: str, params: dict[str, Any] | None = None) -> str:
    """How ``method`` (with ``params``) turns a token's D embedding values into one score: "sum", "l2" or "map"
    (the registry's ``TextUse.reduction``, a wrapper's resolved through its base)."""
    info = METHODS[method]
    if info.text is None:
        raise ParameterError(f"{info.display_name} does not apply to text")
    reduction = info.text.reduction
    if reduction == "base":
        base = (params or {}).get("base", info.defaults("text").get("base"))
        return reduction_of(base, params)
    return reduction


def token_scores(attribution: Any, method: str, params: dict[str, Any] | None = None) -> np.ndarray:
    """float [L]: one score per token from a raw attribution [C, 1, L] (C = D embedding values, or 1 for a
    method that maps tokens directly): their sum ("sum": a signed contribution, x ⊙ ∇ summed), the length of the
    vector ("l2": a sensitivity, ≥ 0), or the one value ("map")."""
    values = np.asarray(attribution, dtype=np.float64)
    if values.ndim == 4 and values.shape[0] == 1:
        values = values[0]
    if values.ndim != 3 or values.shape[1] != 1:
        raise ParameterError(f"expected a token attribution [C, 1, L]; got shape {list(values.shape)}")
    values = np.where(np.isfinite(values), values, 0.0)[:, 0, :]
    reduction = reduction_of(method, params)
    if values.shape[0] == 1:
        return values[0]
    if reduction == "l2":
        return np.sqrt(np.square(values).sum(axis=0))
    return values.sum(axis=0)


@dataclass(frozen=True)
class TokenView:
    """How to draw token scores: ``sign`` ("signed": diverging, both directions; "absolute": sequential
    magnitudes), ``group`` ("" for tokens, else "sum"/"max" into words), ``clip`` the percentile of the colour
    range, ``colormap`` (None: the suggestion for the sign), ``show_special`` whether [CLS]/[SEP] are drawn."""

    sign: str = "signed"
    group: str = ""
    clip: float = 100.0
    colormap: str | None = None
    show_special: bool = False

    def __post_init__(self) -> None:
        if self.sign not in TEXT_SIGNS:
            raise ParameterError(f"sign must be one of {', '.join(TEXT_SIGNS)}; got {self.sign!r}")
        if self.group not in ("", "sum", "max"):
            raise ParameterError(f"group must be '', 'sum' or 'max'; got {self.group!r}")

    @property
    def cmap(self) -> str:
        return self.colormap or (suggested_colormap("signed") if self.sign == "signed" else TEXT_SEQUENTIAL)

    def grouping_said(self, encoded: Encoded | None = None) -> str:
        """The grouping in words, to state beside the text; with ``encoded``, also that tokens sharing characters
        were drawn as one, where that happened."""
        if not self.group:
            shared = encoded is not None and any(len(positions) > 1 for positions, _, _ in token_pieces(encoded))
            return "one score per token (subword tokens shown apart" + (
                "; tokens that share characters, as a byte-level tokenizer's pieces of one emoji, drawn as one with "
                "their summed score)" if shared else ")")
        return (f"one score per word: the {'sum' if self.group == 'sum' else 'largest-magnitude value'} of its "
                "subword tokens")


@dataclass(frozen=True)
class Piece:
    """One coloured span of the drawn text: ``text`` as written (or the token, for a special one), its raw
    ``score``, ``rgb`` its background, ``start``/``end`` its characters in the text (−1 for special tokens)."""

    text: str
    score: float
    rgb: tuple[int, int, int]
    start: int
    end: int


def token_pieces(encoded: Encoded) -> list[tuple[list[int], int, int]]:
    """The content tokens as drawn one by one: (positions, start, end) per piece, in text order. Consecutive content
    tokens whose character spans overlap are one piece over their characters: a byte-level BPE tokenizer (GPT-2's,
    RoBERTa's) cuts one character (an emoji, an "ï") into several tokens that each span the whole character, which
    drawn apart would repeat it. A token that spans no character (such a tokenizer's lone space, its offsets
    trimmed) joins the next piece (the last one: the piece before), as it joins that word (``encode``). Every other
    token is a piece of its own."""
    groups: list[tuple[list[int], int, int]] = []
    for position in encoded.content:
        start, end = encoded.offsets[position]
        if groups:
            members, first, last = groups[-1]
            if members[-1] == position - 1 and (first == last or (start < last and first < end)):
                groups[-1] = (members + [position], min(first, start), max(last, end))
                continue
        groups.append(([position], start, end))
    if len(groups) > 1 and groups[-1][1] == groups[-1][2]:  # a trailing empty piece: into the one before
        (members, first, last), (tail, start, end) = groups[-2], groups[-1]
        groups[-2:] = [(members + tail, min(first, start), max(last, end))]
    return groups


def pieces(encoded: Encoded, scores: Sequence[float], view: TokenView,
           value_range_: tuple[float, float] | None = None) -> list[Piece]:
    """The spans to draw for token ``scores`` [L] under ``view``: words or tokens, each with its colour on a
    range of its own (or ``value_range_``, to link several panels). By token, the tokens of one character (see
    :func:`token_pieces`) are one span whose score is their sum; :func:`token_record` keeps every token."""
    scores = np.asarray(scores, dtype=np.float64)
    if view.group:
        values = group_words(scores, encoded, view.group)
        spans = [(encoded.text[a:b], float(v), a, b) for (a, b), v in zip(encoded.words, values, strict=True)]
        if view.show_special:
            spans = ([(encoded.tokens[i], float(scores[i]), -1, -1) for i in range(len(encoded))
                      if encoded.special[i] and i == 0] + spans
                     + [(encoded.tokens[i], float(scores[i]), -1, -1) for i in range(len(encoded))
                        if encoded.special[i] and i > 0])
    else:
        starts = {members[0]: (members, a, b) for members, a, b in token_pieces(encoded)}
        spans = []
        for i in range(len(encoded)):
            if encoded.special[i]:
                if view.show_special:
                    spans.append((encoded.tokens[i], float(scores[i]), -1, -1))
            elif i in starts:
                members, a, b = starts[i]
                spans.append((encoded.text[a:b], float(scores[members].sum()), a, b))
    raw = np.array([s for _, s, _, _ in spans], dtype=np.float64)
    shown = apply_sign(raw, view.sign)
    signed = view.sign == "signed"
    lo, hi = value_range_ if value_range_ is not None else value_range(shown, view.clip, signed)
    colours = colorize(scale_to_range(shown, lo, hi, signed), view.cmap) if len(raw) else np.zeros((0, 3))
    return [Piece(text, score, tuple(int(c) for c in np.asarray(colour)[:3]), a, b)
            for (text, score, a, b), colour in zip(spans, colours, strict=True)]


def shown_values(encoded: Encoded, scores: Sequence[float], view: TokenView) -> np.ndarray:
    """The values ``view`` colours (words or drawn tokens, sign applied): what linked ranges are taken over."""
    scores = np.asarray(scores, dtype=np.float64)
    if view.group:
        values = group_words(scores, encoded, view.group)
    else:
        values = np.array([scores[members].sum() for members, _, _ in token_pieces(encoded)], dtype=np.float64)
    return apply_sign(values, view.sign)


def _ink(rgb: tuple[int, int, int]) -> str:
    return "#000" if 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2] > 140 else "#fff"


def token_html(encoded: Encoded, scores: Sequence[float], view: TokenView,
               value_range_: tuple[float, float] | None = None, title: str = "") -> str:
    """The text as HTML, each token's (or word's) background coloured by its score, its raw value on hover;
    no side padding, so the subword pieces of one word read as one word and the text's own spaces are the only
    gaps; the text between tokens (spaces, what the tokenizer dropped) kept as written; a cut-off tail said. A
    self-contained snippet: the page shows it and the download is the same string."""
    parts = []
    cursor = 0
    for piece in pieces(encoded, scores, view, value_range_):
        if piece.start >= 0:
            if piece.start > cursor:
                parts.append(html.escape(encoded.text[cursor:piece.start]))
            cursor = max(cursor, piece.end)
        else:
            parts.append(" ")
        colour = "#{:02x}{:02x}{:02x}".format(*piece.rgb)
        parts.append(f'<span class="tok" title="{piece.score:+.4g}" data-score="{piece.score:.6g}" '
                     f'style="background:{colour};color:{_ink(piece.rgb)};padding:1px 0">'
                     f"{html.escape(piece.text)}</span>")
    tail = encoded.text[cursor:]
    if encoded.dropped:
        parts.append(f'<span class="cut" style="color:#888;text-decoration:line-through" '
                     f'title="cut off: the model reads {encoded.max_length} tokens">{html.escape(tail)}</span>')
    else:
        parts.append(html.escape(tail))
    heading = (f'<div class="title" style="font-weight:600;margin-bottom:4px">{html.escape(title)}</div>'
               if title else "")
    return (f'<div class="saliency-text" style="line-height:2;font-size:1.05em;white-space:pre-wrap">{heading}'
            f'{"".join(parts)}</div>')


def token_record(encoded: Encoded, scores: Sequence[float], **about: Any) -> dict[str, Any]:
    """A JSON-ready record of a token map: the text, each token with its character offsets and score (every token,
    also those drawn as one piece: :func:`token_pieces`), the words with their summed and max scores, the cut, and
    ``about`` (method, target, parameters...)."""
    scores = np.asarray(scores, dtype=np.float64)
    return {
        **about,
        "text": encoded.text,
        "tokens": [{"token": token, "start": int(a), "end": int(b), "special": bool(special),
                    "word": word, "score": float(score)}
                   for token, (a, b), special, word, score in zip(encoded.tokens, encoded.offsets, encoded.special,
                                                                   encoded.word_ids, scores, strict=True)],
        "words": [{"word": encoded.text[a:b], "start": int(a), "end": int(b), "sum": float(s), "max": float(m)}
                  for (a, b), s, m in zip(encoded.words, group_words(scores, encoded, "sum"),
                                          group_words(scores, encoded, "max"), strict=True)],
        "truncated_tokens": int(encoded.dropped),
        "max_length": int(encoded.max_length),
    }


def legend_html(view: TokenView, lo: float, hi: float) -> str:
    """A small colour bar of ``view``'s scale from ``lo`` to ``hi``, the ends labelled in raw units."""
    signed = view.sign == "signed"
    colours = colour_scale(view.cmap, signed, steps=9)
    stops = ", ".join("#{:02x}{:02x}{:02x}".format(*map(int, colour)) for colour in colours)
    left = f"{-hi:+.3g}" if signed else f"{lo:.3g}"
    right = f"{hi:+.3g}" if signed else f"{hi:.3g}"
    return (f'<div class="text-legend" style="display:flex;align-items:center;gap:6px;font-size:0.8em;color:#555">'
            f"<span>{left}</span><span style=\"display:inline-block;width:140px;height:10px;border-radius:2px;"
            f'border:1px solid #ccc;background:linear-gradient(to right, {stops})"></span><span>{right}</span>'
            f"</div>")


def text_document(title: str, body: str, legend: str = "", caption: str = "") -> str:
    """A small complete HTML document (UTF-8, its title) holding coloured texts as drawn (``token_html``), a colour
    bar and the line that states the range and the grouping: the page's download and the CLI's ``--html``."""
    return ("<!DOCTYPE html>\n"
            f'<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title or "Token map")}</title></head>'
            '<body style="font-family:sans-serif;max-width:60em;margin:2em auto;padding:0 1em">\n'
            f"{body}\n{legend}\n"
            + (f'<p class="caption" style="color:#555;font-size:0.85em">{html.escape(caption)}</p>\n'
               if caption else "")
            + "</body></html>\n")
