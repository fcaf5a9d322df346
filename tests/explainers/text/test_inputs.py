"""Texts that are hard to read: accents, CJK, emoji, empty or blank, too long, one word; and the methods that do
not apply to text, refused with the registry's message."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from explainers import METHODS, InputError, SaliencyError, explain
from explainers.registry import TEXT
from explainers.text import explain_text

from .method_models import lively_bundle

TEXT_METHODS = [name for name, info in METHODS.items() if info.applies_to(TEXT)]
# one method of each kind: gradient, path, perturbation by word, surrogate, attention, propagation
SAMPLED = {"vanilla": {}, "integrated_gradients": {"n_steps": 4}, "occlusion": {}, "kernel_shap": {"n_samples": 64},
           "lime": {"n_samples": 30}, "attention_rollout": {}, "attnlrp": {}}


@pytest.fixture(scope="module")
def bundle():
    return lively_bundle()


def assert_offsets_cover_the_text(encoded):
    """Every content token spans the characters it came from; a word's tokens tile the word's span."""
    text = encoded.text
    for token, (start, end), special in zip(encoded.tokens, encoded.offsets, encoded.special, strict=True):
        if special:
            assert (start, end) == (0, 0)
            continue
        assert 0 <= start < end <= len(text) and text[start:end].strip() == text[start:end]
        if token != "[UNK]":  # a piece reads as the (lower-cased, accent-stripped) characters it spans
            assert len(token.removeprefix("##")) == end - start
    for word, (start, end) in enumerate(encoded.words):
        spans = [encoded.offsets[i] for i, w in enumerate(encoded.word_ids) if w == word]
        assert spans[0][0] == start and spans[-1][1] == end
        assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))  # no gap inside a word


@pytest.mark.parametrize("text, tokens, words", [
    ("Café naïve résumé", ["c", "##a", "##f", "##e"], ["Café", "naïve", "résumé"]),  # accents stripped, offsets kept
    ("映画は素晴らしい", ["[UNK]", "[UNK]"], ["映", "画", "は", "素", "晴", "らしい"]),  # CJK ideographs one word each
    ("great 😀 movie", ["great", "[UNK]", "movie"], ["great", "😀", "movie"]),  # an emoji: an unknown word
    ("great👍🏽film!", ["[UNK]", "!"], ["great👍🏽film", "!"]),  # an emoji with its skin tone inside a word
])
def test_unicode_and_emoji_keep_their_offsets_and_every_method_runs(bundle, text, tokens, words):
    scored = bundle.scored(text)
    encoded = scored.encoded
    content = [t for t, special in zip(encoded.tokens, encoded.special, strict=True) if not special]
    assert content[: len(tokens)] == tokens
    assert encoded.word_texts == words
    assert_offsets_cover_the_text(encoded)
    maps = explain_text(scored, None, list(SAMPLED), ["top1"], params=SAMPLED, seed=0)
    for (method, _), token_map in maps.items():
        assert token_map.scores.shape == (len(encoded),) and np.isfinite(token_map.scores).all(), method
        record = token_map.as_json(bundle.categories)
        assert [t["end"] - t["start"] for t in record["tokens"]] == [b - a for a, b in encoded.offsets]
        assert [w["word"] for w in record["words"]] == words


@pytest.mark.parametrize("text", ["", "   ", "\n\t "])
def test_an_empty_or_blank_text_is_a_clear_input_error(bundle, text):
    with pytest.raises(InputError, match="the text is empty"):
        bundle.scored(text)
    with pytest.raises(InputError, match="the text is empty"):
        explain_text(bundle, text, "occlusion")


def test_an_over_length_text_is_cut_and_the_cut_is_said(bundle):
    text = " ".join(["the film was good"] * 12)  # 48 words, 50 tokens with [CLS] and [SEP]
    scored = bundle.scored(text)
    encoded = scored.encoded
    assert len(encoded) == bundle.max_length == 32 and encoded.dropped == 50 - 32
    assert encoded.tokens[-1] == "[SEP]"  # the cut keeps the closing special token
    note = encoded.truncation_note()
    assert "32 tokens" in note and f"the last {encoded.dropped} tokens" in note
    assert f"character {encoded.kept_chars}" in note and len(text[: encoded.kept_chars].split()) == 30
    for method, params in SAMPLED.items():
        (token_map,) = explain_text(scored, None, method, ["top1"], params={method: params}, seed=0).values()
        assert token_map.scores.shape == (32,)
        assert note in token_map.notes  # said beside every map, never silent
        assert token_map.as_json()["truncated_tokens"] == encoded.dropped


@pytest.mark.parametrize("method", TEXT_METHODS)
def test_a_one_word_text_is_explained_by_every_method(bundle, method):
    scored = bundle.scored("great")
    assert scored.encoded.tokens == ("[CLS]", "great", "[SEP]")
    params = {"smoothgrad": {"n_samples": 3}, "smoothgrad_sq": {"n_samples": 3}, "vargrad": {"n_samples": 3},
              "lime": {"n_samples": 20}, "kernel_shap": {"n_samples": 20}}.get(method, {})
    (token_map,) = explain_text(scored, None, method, ["top1"], params={method: params}, seed=0).values()
    assert token_map.scores.shape == (3,) and np.isfinite(token_map.scores).all()
    if method in ("occlusion", "kernel_shap"):  # one feature: its value is the whole drop to the baseline text
        base = scored.baseline("pad")
        with torch.no_grad():
            logits = scored.model(scored.inputs)[0], scored.model(base)[0]
        target = token_map.record.target[0]
        assert token_map.scores[1] == pytest.approx(float(logits[0][target] - logits[1][target]), abs=1e-5)
        assert token_map.scores[0] == token_map.scores[2] == 0


REFUSED = [name for name in METHODS if name not in TEXT_METHODS]


@pytest.mark.parametrize("method", REFUSED)
def test_a_method_without_text_support_is_refused_with_the_registrys_message(bundle, method):
    scored = bundle.scored("the film was good")
    info = METHODS[method]
    assert info.text is None and info.unavailable_reason(scored.model) is not None
    with pytest.raises(SaliencyError, match=f"{re.escape(info.modality_reason(TEXT))}; pick another"):
        explain(scored, scored.inputs, method, "top1")
    with pytest.raises(SaliencyError, match="does not apply to text"):
        explain_text(scored, None, ["vanilla", method])
