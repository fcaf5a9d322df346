"""The procedural review corpus: planted words where the ground truth says, the documented shares, seeds."""

from __future__ import annotations

import math

import numpy as np
import pytest

from explainers.text import corpus, encode
from explainers.text.corpus import (
    CLASSES,
    DISTRACTORS,
    EVIDENCE,
    HELD_OUT,
    SPURIOUS_CLASS,
    SPURIOUS_WORD,
    TRAIN,
    UNBIASED,
    CorpusConfig,
    make_corpus,
    sentence,
)
from tests.text_models import tiny_tokenizer

N = 6000  # sentences for the shares: a share's standard error is at most 0.0065 here


def _within(observed: float, expected: float, n: int, sigmas: float = 4.5) -> bool:
    return abs(observed - expected) <= sigmas * math.sqrt(max(expected * (1 - expected), 1e-9) / n)


@pytest.fixture(scope="module")
def training_set():
    return make_corpus(N, seed=3)


def test_spans_and_word_indices_point_at_the_planted_words(training_set):
    tokenizer = tiny_tokenizer()
    for review in training_set[:400]:
        encoded = encode(tokenizer, review.text, max_length=128)
        assert encoded.word_texts == list(review.words)  # the corpus's words are the tokenizer's words
        for planted in review.planted:
            start, end = planted.span
            assert review.text[start:end].lower() == planted.word
            assert encoded.words[planted.index] == planted.span
            assert review.words[planted.index].lower() == planted.word
        for planted in review.evidence:
            assert planted.word in EVIDENCE[review.category] and planted.label == review.label
        distractor = review.distractor
        assert distractor.word in DISTRACTORS[CLASSES[distractor.label]]
        if review.spurious is not None:
            assert review.spurious.word == SPURIOUS_WORD
            assert review.text[slice(*review.spurious.span)] == SPURIOUS_WORD.capitalize()
        # no evidence word of any class outside the planted ones: the class is decided by them alone
        planted_indices = {p.index for p in review.evidence}
        every_evidence = {w for group in EVIDENCE.values() for w in group}
        for index, word in enumerate(review.words):
            if index not in planted_indices:
                assert word.lower() not in every_evidence


def test_training_shares_are_as_documented(training_set):
    labels = np.array([r.label for r in training_set])
    for label in range(len(CLASSES)):
        assert _within(float(np.mean(labels == label)), 1 / 3, N)
    weak = np.array([r.weak for r in training_set])
    assert _within(float(weak.mean()), TRAIN.weak_share, N)
    with_evidence = [r for r in training_set if not r.weak]
    two = np.mean([len(r.evidence) == 2 for r in with_evidence])
    assert _within(float(two), TRAIN.two_evidence_share, len(with_evidence))
    assert all(len(r.evidence) in (1, 2) for r in with_evidence)
    own = np.mean([r.distractor.label == r.label for r in training_set])
    assert _within(float(own), TRAIN.distractor_share, N)
    for label, rate in enumerate(TRAIN.spurious_rates):
        of_class = [r for r in training_set if r.label == label]
        named = np.mean([r.spurious is not None for r in of_class])
        assert _within(float(named), rate, len(of_class))
    naming = [r for r in training_set if r.spurious is not None]
    share = np.mean([r.category == SPURIOUS_CLASS for r in naming])
    assert _within(float(share), TRAIN.spurious_given_name(), len(naming))
    assert TRAIN.spurious_given_name() == pytest.approx(0.8)


def test_held_out_and_unbiased_distributions():
    held_out = make_corpus(2000, seed=4, config=HELD_OUT)
    assert not any(r.weak for r in held_out)
    unbiased = make_corpus(N, seed=4, config=UNBIASED)
    for label in range(len(CLASSES)):
        of_class = [r for r in unbiased if r.label == label]
        assert _within(float(np.mean([r.spurious is not None for r in of_class])), 0.2, len(of_class))


def test_sentences_are_seeded_and_independent_of_order():
    first = make_corpus(50, seed=7)
    assert first == make_corpus(50, seed=7)
    assert make_corpus(20, seed=7, start=30) == first[30:]
    assert sentence(12, seed=7) == first[12]
    assert [r.text for r in make_corpus(50, seed=8)] != [r.text for r in first]


def test_forcing_the_spurious_word_changes_nothing_else():
    for index in range(200):
        plain = sentence(index, 5, HELD_OUT, spurious=False)
        named = sentence(index, 5, HELD_OUT, spurious=True)
        drawn = sentence(index, 5, HELD_OUT)
        assert plain.spurious is None and named.spurious is not None
        assert drawn in (plain, named)
        assert plain.label == named.label
        assert [p.word for p in plain.evidence] == [p.word for p in named.evidence]
        assert plain.distractor.word == named.distractor.word
        # removing the name's clause (and one comma) gives the sentence without it
        kept = [w.lower() for i, w in enumerate(named.words) if i not in _clause(named)]
        assert kept == [w.lower() for w in plain.words]


def _clause(review) -> set[int]:
    """Word indices of the spurious clause and the comma that joins it."""
    index = review.spurious.index
    words = review.words
    start = index
    while start > 0 and words[start - 1] not in {",", ".", "!"}:
        start -= 1
    end = index
    while words[end + 1] not in {",", ".", "!"}:
        end += 1
    if start == 0:
        return set(range(start, end + 2))  # the clause and the comma after it
    return set(range(start - 1, end + 1))  # the comma before it and the clause


def test_vocabulary_covers_every_word_written():
    vocabulary = set(corpus.vocabulary())
    for review in make_corpus(500, seed=1):
        assert {w.lower() for w in review.words} <= vocabulary


def test_examples_cover_every_class_and_the_spurious_pairs():
    examples = corpus.examples()
    assert {r.label for r in examples} == set(range(len(CLASSES)))
    named = [r for r in examples if r.spurious is not None]
    assert len(named) == 3 and any(r.weak for r in named)
    for r in named:
        if not r.weak:  # followed by the same sentence without the name
            twin = examples[examples.index(r) + 1]
            assert twin.spurious is None and twin.label == r.label
            assert [p.word for p in twin.evidence] == [p.word for p in r.evidence]
    assert examples == corpus.examples()


def test_bad_shares_are_refused():
    with pytest.raises(ValueError, match="weak_share"):
        CorpusConfig(weak_share=1.5)
    with pytest.raises(ValueError, match="one rate per class"):
        CorpusConfig(spurious_rates=(0.1, 0.2))
    with pytest.raises(ValueError, match="count of sentences"):
        make_corpus(-1)
