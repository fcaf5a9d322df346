"""A byte-level BPE tokenizer (RoBERTa's and GPT-2's kind): one character it never saw (an emoji, "ï") is several
tokens that each span the whole character. Words, word scores and the drawn text must still hold each character
once; the JSON record keeps every token."""

from __future__ import annotations

import html
import re

import numpy as np
import pytest

from explainers.text import TextBundle, TokenView, encode, explain_text, group_words, token_html, token_record
from explainers.text.render import pieces, shown_values, token_pieces
from tests.text_models import byte_level_tokenizer, tiny_bert

SCORE = re.compile(r'<span class="tok" title="[^"]*" data-score="([^"]+)"[^>]*>(.*?)</span>')
TEXTS = {"good 😀 film": ("😀", ["good", "😀", "film"]), "naïve film": ("ï", ["naïve", "film"])}


@pytest.fixture(scope="module")
def tokenizer():
    return byte_level_tokenizer()


def _shared(encoded, character: str) -> list[int]:
    """The content tokens that span exactly ``character``'s position."""
    start = encoded.text.index(character)
    return [i for i in encoded.content if encoded.offsets[i] == (start, start + len(character))]


@pytest.mark.parametrize("text, words", [("good  film", ["good", " film"]), ("good film ", ["good", "film "]),
                                         ("good\n\nfilm 😀😀", ["good", "\n", "\n", "film", "😀😀"])])
def test_a_lone_space_token_joins_a_word_that_can_be_drawn(tokenizer, text, words):
    """A byte-level tokenizer makes a word of a lone space (the first of two, or a trailing one) whose offsets it
    trims to nothing: that token joins the next word (the last: the one before), whose span covers it; every word
    then has characters, every token lies in its word, and the words' scores add up to the tokens'."""
    encoded = encode(tokenizer, text, 32)
    assert any(a == b for i, (a, b) in enumerate(encoded.offsets) if not encoded.special[i])  # the premise
    assert encoded.word_texts == words
    for position in encoded.content:
        start, end = encoded.words[encoded.word_ids[position]]
        assert start <= encoded.offsets[position][0] <= encoded.offsets[position][1] <= end
    scores = np.linspace(1.0, 2.0, len(encoded))
    assert group_words(scores, encoded).sum() == pytest.approx(scores[encoded.content].sum())
    assert all(end > start for _, start, end in token_pieces(encoded))
    assert _drawn(token_html(encoded, scores, TokenView()))[0] == text


def test_a_batch_row_of_a_byte_level_text_gives_back_its_encoding(tokenizer):
    from explainers.batch import Item, Settings, explain_texts
    from explainers.batch.text import encoded_of

    bundle = TextBundle(name="tiny-bpe", net=tiny_bert(seed=2, vocab_size=len(tokenizer)), tokenizer=tokenizer,
                        categories=["neg", "neu", "pos"], max_length=32)
    settings = Settings(model="tiny-bpe", methods=["vanilla"], targets=["top1"], modality="text")
    for text in [*TEXTS, "good  film 😀 ", "naïve  film"]:
        (row,) = explain_texts(bundle, [Item("x:1", text=text)], settings)
        assert row["error"] is None and encoded_of(row) == bundle.encode(text)


@pytest.mark.parametrize("text", list(TEXTS))
def test_words_and_word_scores_hold_each_character_once(tokenizer, text):
    character, words = TEXTS[text]
    encoded = encode(tokenizer, text, 32)
    shared = _shared(encoded, character)
    assert len(shared) >= 2  # the premise: several byte tokens span the one character
    assert encoded.word_texts == words
    word = encoded.word_ids[shared[0]]
    assert all(encoded.word_ids[i] == word for i in shared)
    scores = np.arange(1.0, len(encoded) + 1)
    members = [i for i, w in enumerate(encoded.word_ids) if w == word]
    assert group_words(scores, encoded, "sum")[word] == pytest.approx(scores[members].sum())


def _drawn(snippet: str) -> tuple[str, list[tuple[str, float]]]:
    return (html.unescape(re.sub(r"<[^>]+>", "", snippet)),
            [(html.unescape(piece), float(score)) for score, piece in SCORE.findall(snippet)])


@pytest.mark.parametrize("text", list(TEXTS))
@pytest.mark.parametrize("group", ["", "sum"])
def test_the_drawn_text_holds_each_character_once_with_the_sum_of_its_tokens(tokenizer, text, group):
    character, _ = TEXTS[text]
    encoded = encode(tokenizer, text, 32)
    scores = np.linspace(-1.0, 2.0, len(encoded))
    shown, drawn = _drawn(token_html(encoded, scores, TokenView(group=group)))
    assert shown == text and shown.count(character) == 1
    assert sum(piece.count(character) for piece, _ in drawn) == 1
    if not group:  # the piece holds the character's tokens, and a lone space token just before them
        (score,) = [s for piece, s in drawn if piece == character]
        shared = _shared(encoded, character)
        before = shared[0] - 1
        members = shared + ([before] if encoded.offsets[before][0] == encoded.offsets[before][1] else [])
        assert score == pytest.approx(scores[members].sum(), rel=1e-5)
        assert len(drawn) == len(token_pieces(encoded)) == len(shown_values(encoded, scores, TokenView()))
        assert sum(len(members) for members, _, _ in token_pieces(encoded)) == len(encoded.content)
        drawn_sum = sum(p.score for p in pieces(encoded, scores, TokenView()))
        assert drawn_sum == pytest.approx(scores[encoded.content].sum())
    record = token_record(encoded, scores)
    assert len(record["tokens"]) == len(encoded)  # the download keeps every token
    assert [t["score"] for t in record["tokens"]] == pytest.approx(list(scores))


def test_a_wordpiece_text_draws_one_piece_per_token():
    """No span shared: every content token is a piece of its own (the grouping changes nothing there)."""
    from tests.text_models import tiny_tokenizer

    encoded = encode(tiny_tokenizer(), "the filmz was good", 32)
    assert [members for members, _, _ in token_pieces(encoded)] == [[i] for i in encoded.content]
    assert "drawn as one" not in TokenView().grouping_said(encoded)  # said only where it happened


def test_the_caption_says_shared_tokens_were_drawn_as_one_where_they_were(tokenizer):
    assert "drawn as one" in TokenView().grouping_said(encode(tokenizer, "good 😀 film", 32))
    assert "drawn as one" not in TokenView().grouping_said()


def test_a_byte_level_model_is_explained_and_drawn(tokenizer):
    bundle = TextBundle(name="tiny-bpe", net=tiny_bert(seed=2, vocab_size=len(tokenizer)), tokenizer=tokenizer,
                        categories=["neg", "neu", "pos"], max_length=32)
    maps = explain_text(bundle, "good 😀 film", ["vanilla", "input_x_gradient"], ["top1"], seed=0)
    for token_map in maps.values():
        assert np.isfinite(token_map.scores).all()
        shown, _ = _drawn(token_html(token_map.encoded, token_map.scores, TokenView()))
        assert shown == "good 😀 film"
        assert len(token_map.as_json()["tokens"]) == len(token_map.encoded)


@pytest.mark.parametrize("pad, mask, allowed", [(False, False, "pick 'zero'"), (False, True, "pick one of mask, zero")])
def test_a_missing_special_token_suggests_only_the_baselines_the_tokenizer_has(pad, mask, allowed):
    """GPT-2's tokenizer has neither a pad nor a mask token: the pad baseline's refusal suggests "zero" alone."""
    from explainers import ParameterError, explain
    from explainers.trust.text import text_faithfulness

    tokenizer = byte_level_tokenizer(pad=pad, mask=mask)
    bundle = TextBundle(name="tiny-gpt2-like", net=tiny_bert(seed=2, vocab_size=len(tokenizer)), tokenizer=tokenizer,
                        categories=["neg", "neu", "pos"], max_length=32)
    scored = bundle.scored("a good film")
    with pytest.raises(ParameterError, match=rf"baseline 'pad' needs the tokenizer's pad token, .*none; {allowed}$"):
        scored.baseline("pad")
    with pytest.raises(ParameterError, match=rf"; {allowed}$"):
        explain(scored, scored.inputs, "integrated_gradients", "top1", baseline="pad", n_steps=2)
    assert explain(scored, scored.inputs, "integrated_gradients", "top1", baseline="zero", n_steps=2) is not None
    removals = "pick 'delete'" if not mask else "pick 'delete' or 'mask'"
    with pytest.raises(ParameterError, match=rf"removal 'pad' needs the tokenizer's pad token, .*; {removals}$"):
        text_faithfulness(bundle, "a good film", ["vanilla"], removal="pad")
