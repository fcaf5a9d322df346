"""A batch run over texts: the texts of a source (a .txt file, one text a line; or a column of a .csv/.parquet
list), each explained by every method and target through ``explain_text`` into table rows with the per-token map.

A text row is an image row (``pipeline.COLUMNS``: the row key in ``path``, label, method, target, prediction and
top 5, target probability, params, elapsed time) plus :data:`TEXT_COLUMNS`: the text and its tokenisation whole
(tokens, token ids, character offsets, special flags, each token's word id, the words' character spans, how many
tokens truncation cut and the model's token limit: :func:`encoded_of` gives back the very ``Encoded``), each
token's score, the words with their scores (the sum of their tokens'), the logits, the seed and the notes. Maps
live in the table (no maps/ shard): a text's map is one score per token. A text the tokenizer makes nothing of
(an empty line of a CSV) is an error row.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ParameterError, SaliencyError
from ..targets import target_key
from ..text.explain import explain_text
from ..text.tokens import Encoded, group_words
from .pipeline import NO_LABEL, Item, Settings, _label_of, _row, not_utf8, prediction_columns, read_list

TEXT_SUFFIXES = (".txt", ".csv", ".parquet")
TEXT_COLUMN = "text"  # a list's text column when --text-column is not given
TEXT_COLUMNS = ("text", "tokens", "token_ids", "offsets", "special", "word_ids", "scores", "words", "word_spans",
                "word_scores", "logits", "objective", "seed", "notes", "truncated_tokens", "max_length")
WORD_COLUMNS = ("words", "word_spans", "word_ids", "token_ids", "max_length")  # what encoded_of reads besides tokens
TEXT_MAPS = ("per-token maps in the table: tokens, token_ids, offsets [start, end] (characters), special, word_ids "
             "(each token's word, -1 for special tokens), scores (one per token, the method's own reduction over the "
             "embedding); words with their word_spans [start, end] (characters) and word_scores (the sum of a word's "
             "token scores); truncated_tokens cut off the end of a text longer than max_length tokens")


def is_text_source(source: str, text_column: str | None) -> bool:
    """A run over texts: a .txt source, or a list read by its text column."""
    return text_column is not None or Path(str(source)).suffix.lower() == ".txt"


def read_texts(source: str, categories: Sequence[str], text_column: str | None = None,
               limit: int | None = None) -> list[Item]:
    """The texts of ``source``, in order, each an :class:`~.pipeline.Item` keyed "<file name>:<line>" (the line of
    the .txt file, or the list's row number counting the header as 1) with its ``text``: a .txt file, one text a
    line (blank lines are no texts and are skipped), or a .csv/.parquet list whose ``text_column`` (default
    "text") holds the texts and whose optional ``label`` column a class index or name."""
    path = Path(str(source))
    suffix = path.suffix.lower()
    if not path.is_file():
        raise ParameterError(f"the text source {str(source)!r} does not exist (a .txt file, one text a line, or a "
                             ".csv/.parquet list with a text column)")
    if suffix not in TEXT_SUFFIXES:
        raise ParameterError(f"expected a .txt file (one text a line) or a .csv/.parquet list as the text source, "
                             f"got {path.name!r}")
    if suffix == ".txt":
        if text_column is not None:
            raise ParameterError(f"--text-column names a column of a .csv or .parquet list; {path.name!r} is a text "
                                 "file, one text a line")
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            raise not_utf8(path, "the text source", "a text file") from None
        # "\n" ends a line ("\r\n" too): str.splitlines would also split at U+2028, form feeds and \x1c..\x1e,
        # which a text may hold, and the keys "file:N" would no longer be the file's line numbers
        lines = [line.removesuffix("\r") for line in text.split("\n")]
        items = [Item(f"{path.name}:{number}", text=line) for number, line in enumerate(lines, start=1)
                 if line.strip()]
    else:
        items = _read_text_list(path, categories, text_column or TEXT_COLUMN)
    if not items:
        raise ParameterError(f"the text source {str(source)!r} holds no texts")
    return items[:limit] if limit else items


def _read_text_list(path: Path, categories: Sequence[str], column: str) -> list[Item]:
    rows, names = read_list(path)
    if column not in names:
        listed = ", ".join(repr(n) for n in names[:12]) or "none"
        raise ParameterError(f"the list {path.name!r} has no column {column!r} (its columns: {listed}); name the "
                             "text column with --text-column")
    items = []
    for number, row in enumerate(rows, start=2):
        value = row.get(column)
        text = "" if value is None else str(value)
        items.append(Item(f"{path.name}:{number}", _label_of(row.get("label"), categories, f"{path.name} row {number}"),
                          text=text))
    return items


def _text_row(item: Item, method: str, target: str, token_map, categories: Sequence[str]) -> dict[str, Any]:
    """One explained row: the prediction, the target and the per-token map."""
    record, encoded = token_map.record, token_map.encoded
    logits = np.asarray(record.logits, dtype=np.float64).ravel()
    probabilities = np.exp(logits - logits.max())
    probabilities /= probabilities.sum()
    scores = np.asarray(token_map.scores, dtype=np.float64)
    row = _row(item, None, method=method, target=target)
    row.update({
        **prediction_columns(item, logits, probabilities, int(record.target[0]), record.params, categories),
        "text": encoded.text,
        "tokens": list(encoded.tokens),
        "token_ids": list(encoded.ids),
        "offsets": [list(span) for span in encoded.offsets],
        "special": list(encoded.special),
        "word_ids": encoded.word_labels().tolist(),
        "scores": scores.tolist(),
        "words": encoded.word_texts,
        "word_spans": [list(span) for span in encoded.words],
        "word_scores": group_words(scores, encoded, "sum").tolist(),
        "logits": logits.tolist(),
        "objective": record.objective,
        "seed": record.seed,
        "notes": list(token_map.notes),
        "truncated_tokens": int(encoded.dropped),
        "max_length": int(encoded.max_length),
    })
    return row


def encoded_of(row: Mapping[str, Any]) -> Encoded:
    """The ``Encoded`` a text row was written from (a row of ``read_table`` or :func:`_text_row`'s dict), rebuilt
    from its columns alone: nothing is tokenised or searched again, and it equals the encoding it was written from,
    field by field. A SaliencyError names what does not fit when a column is missing or the row's columns disagree
    (a damaged or crafted table)."""
    text, tokens, offsets, special, dropped = _token_columns(row)
    count = len(tokens)
    scores = _stored(row, "scores")
    if scores is not None and len(scores) != count:
        raise SaliencyError(f"this row's per-token map does not fit together: {count} tokens, {len(scores)} scores")
    missing = [name for name in WORD_COLUMNS if _stored(row, name) is None]
    if missing:
        raise SaliencyError(f"this row's per-token map cannot be read: it has no {', '.join(missing)}")
    try:
        words = [str(w) for w in row["words"]]
        spans = tuple((int(a), int(b)) for a, b in row["word_spans"])
        labels = [int(w) for w in row["word_ids"]]
        token_ids = tuple(int(i) for i in row["token_ids"])
        max_length = int(row["max_length"])
    except (TypeError, ValueError) as exc:
        raise SaliencyError(f"this row's words cannot be read ({type(exc).__name__}: {exc})") from None
    _check_words(text, tokens, offsets, special, words, spans, labels, token_ids)
    return Encoded(text=text, ids=token_ids, tokens=tokens, offsets=offsets, special=special,
                   word_ids=tuple(None if w < 0 else w for w in labels), words=spans, dropped=dropped,
                   max_length=max_length)


def _stored(row: Mapping[str, Any], name: str, default: Any = None) -> Any:
    """A column's value, or ``default`` where the row has no such column or holds nothing there (a table read
    together with parts that lack the column)."""
    value = row.get(name)
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return default
    return value


def _token_columns(row: Mapping[str, Any]):
    """(text, tokens, offsets, special, dropped) of a text row, checked to fit together."""
    try:
        text = str(row["text"])
        tokens = tuple(str(t) for t in row["tokens"])
        offsets = tuple((int(a), int(b)) for a, b in row["offsets"])
        special = tuple(bool(s) for s in row["special"])
        dropped = int(_stored(row, "truncated_tokens", 0))
    except (TypeError, ValueError, KeyError) as exc:
        raise SaliencyError(f"this row's per-token map cannot be read ({type(exc).__name__}: {exc})") from None
    count = len(tokens)
    if not (len(offsets) == len(special) == count) or count == 0:
        raise SaliencyError(f"this row's per-token map does not fit together: {count} tokens, {len(offsets)} "
                            f"offsets, {len(special)} special flags")
    if any(not (0 <= a <= b <= len(text)) for (a, b), s in zip(offsets, special, strict=True) if not s):
        raise SaliencyError("this row's token offsets lie outside its text")
    return text, tokens, offsets, special, dropped


def _check_words(text: str, tokens: Sequence[str], offsets: Sequence[tuple[int, int]], special: Sequence[bool],
                 words: Sequence[str], spans: Sequence[tuple[int, int]], labels: Sequence[int],
                 token_ids: Sequence[int]) -> None:
    """A row's words against its tokens: one word id and one token id per token, -1 on every special token, each
    text token inside its word's span, each span inside the text and the stored word its text."""
    count = len(tokens)
    if len(labels) != count or len(token_ids) != count:
        raise SaliencyError(f"this row's per-token map does not fit together: {count} tokens, {len(labels)} word "
                            f"ids, {len(token_ids)} token ids")
    if any(not (0 <= a <= b <= len(text)) for a, b in spans):
        raise SaliencyError("this row's word spans lie outside its text")
    if len(words) != len(spans) or any(text[a:b] != w for w, (a, b) in zip(words, spans, strict=True)):
        raise SaliencyError(f"this row's words ({len(words)}) are not its text at its word spans ({len(spans)})")
    for position, (word, (a, b), is_special) in enumerate(zip(labels, offsets, special, strict=True)):
        if is_special and word != -1:
            raise SaliencyError(f"this row's special token {tokens[position]!r} has word id {word} (expected -1)")
        if word >= len(spans) or word < -1:
            raise SaliencyError(f"this row's token {tokens[position]!r} has word id {word}; the row has "
                                f"{len(spans)} words")
        if word >= 0 and not (spans[word][0] <= a and b <= spans[word][1]):
            raise SaliencyError(f"this row's token {tokens[position]!r} at characters {a}-{b} does not lie inside "
                                f"its word {text[spans[word][0]:spans[word][1]]!r}")


def explain_texts(bundle, items: Sequence[Item], settings: Settings) -> list[dict[str, Any]]:
    """The rows of a batch of texts: every text × method × target through ``explain_text`` (the methods of one
    text share passes); a text that cannot be explained is one error row, and a text without a label gets one
    error row per method when the target "label" is asked for.

    As for images (``pipeline.Decoder``): whatever the tokenizer raises on one text is that text's error row (with
    the exception's type), never the end of the run; while explaining, a SaliencyError (a method refuses this
    text) is the text's error row and anything else stops the run, as it stops an image run."""
    rows: list[dict[str, Any]] = []
    plain = [t for t in settings.targets if t != "label"]
    for item in items:
        started = time.perf_counter()
        try:
            encoded = bundle.encode(item.text if item.text is not None else "")
        except Exception as exc:  # an unreadable text is an error row, as an image that cannot be decoded is
            rows.append(_row(item, None, error=f"{type(exc).__name__}: {exc}"))
            continue
        explained = []
        try:
            if plain:
                maps = explain_text(bundle, encoded, settings.methods, plain, seed=settings.seed,
                                    params=settings.params)
                explained += [(method, next(t for t in plain if target_key(t) == key), token_map)
                              for (method, key), token_map in maps.items()]
            if "label" in settings.targets and item.label is not None:
                maps = explain_text(bundle, encoded, settings.methods, [item.label], seed=settings.seed,
                                    params=settings.params)
                explained += [(method, "label", token_map) for (method, _), token_map in maps.items()]
        except SaliencyError as exc:  # a text a method cannot explain is an error row, never the end of the run
            rows.append(_row(item, None, error=f"{type(exc).__name__}: {exc}"))
            continue
        if "label" in settings.targets and item.label is None:
            rows += [_row(item, None, method=m, target="label", error=NO_LABEL) for m in settings.methods]
        per_row_s = (time.perf_counter() - started) / max(1, len(explained))
        for method, target, token_map in explained:
            row = _text_row(item, method, target, token_map, bundle.categories)
            row["elapsed_s"] = per_row_s
            rows.append(row)
    return rows
