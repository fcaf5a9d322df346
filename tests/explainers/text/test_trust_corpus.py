"""Ground truth on the shipped model: over held-out corpus sentences the gradient methods put far more of their
magnitude on the planted evidence words than a random map does, and point at them; a batch run over sentences
without evidence surfaces the planted spurious name (and its clause) in the word view."""

from __future__ import annotations

import numpy as np
import pytest

from explainers import batch
from explainers.batch import Settings, word_table
from explainers.models.text import load_text_model
from explainers.text.corpus import (
    HELD_OUT,
    SPURIOUS_CLAUSES,
    SPURIOUS_WORD,
    TEST_SEED_OFFSET,
    CorpusConfig,
    make_corpus,
)
from explainers.trust.text import (
    RANDOM,
    corpus_evidence,
    evidence_chance,
    evidence_hit,
    evidence_share,
    span_tokens,
    text_faithfulness,
)

IG = {"integrated_gradients": {"n_steps": 16}}
# Measured on held-out sentences 0-29, 300-329 and 600-629 (seed + TEST_SEED_OFFSET): evidence share vanilla
# 0.44-0.50, input x gradient 0.69-0.70, integrated gradients 0.90-0.93, SmoothGrad 0.51-0.55, random 0.09-0.10
# (chance 0.095-0.098); pointing vanilla 0.90-1.0, IG and SmoothGrad 1.0, random 0.07-0.20. Bounds with margin:
SHARE_AT_LEAST = {"vanilla": 0.35, "input_x_gradient": 0.55, "integrated_gradients": 0.8, "smoothgrad": 0.4}
HIT_AT_LEAST = {"vanilla": 0.8, "integrated_gradients": 0.9, "smoothgrad": 0.9}


@pytest.fixture(scope="module")
def shipped():
    return load_text_model()


def test_evidence_measures_on_hand_made_maps():
    evidence = np.array([False, True, False, True])
    assert evidence_share([1.0, 2.0, -3.0, 2.0], evidence) == pytest.approx(0.5)
    assert np.isnan(evidence_share(np.zeros(4), evidence))
    assert evidence_hit([0.1, 0.9, 0.2, 0.3], evidence) == 1.0 and evidence_hit([0.9, 0.1, 0.2, 0.3], evidence) == 0
    assert evidence_hit([1.0, 1.0, 0.0, 0.0], evidence) == 0.5  # tied maxima: the share of them on evidence
    assert evidence_chance(evidence) == 0.5 and evidence_share(np.ones(4), evidence) == 0.5
    with pytest.raises(Exception, match="one evidence flag per score"):
        evidence_share([1.0, 2.0], evidence)


def test_span_tokens_marks_the_subword_tokens_of_a_planted_word(shipped):
    review = make_corpus(1, seed=TEST_SEED_OFFSET, config=HELD_OUT)[0]
    encoded = shipped.encode(review.text)
    flags = span_tokens(encoded, [p.span for p in review.evidence])
    marked = {encoded.text[encoded.offsets[i][0]:encoded.offsets[i][1]].lower() for i in np.flatnonzero(flags)}
    assert marked == {p.word for p in review.evidence} and not flags[[0, -1]].any()


def test_gradient_methods_put_their_magnitude_on_the_planted_evidence(shipped):
    reviews = make_corpus(30, seed=TEST_SEED_OFFSET, config=HELD_OUT)
    result = corpus_evidence(shipped, reviews, list(SHARE_AT_LEAST), params=IG)
    random = result.row(RANDOM)
    assert result.sentences == 30 and abs(random.share - result.chance) < 0.05
    for method, bound in SHARE_AT_LEAST.items():
        row = result.row(method)
        assert row.share > bound > random.share + 0.2, (method, row, random)
    for method, bound in HIT_AT_LEAST.items():
        assert result.row(method).hit >= bound > random.hit, (method, result.row(method), random)


def test_gradient_methods_beat_the_random_control_on_faithfulness(shipped):
    """ERASER's measures and the curves, in place [MASK] removal, probability of each sentence's class, mean over
    six held-out sentences (measured on sentences 0-5, 100-105, 200-205: comprehensiveness 0.36-0.56 against the
    control's 0.04-0.11, sufficiency ≤ 0.04 against 0.40-0.52, deletion AUC 0.37-0.47 against 0.72-0.81,
    insertion AUC ≥ 0.96 against 0.65-0.78)."""
    methods = ["vanilla", "integrated_gradients", "smoothgrad"]
    rows: dict[str, list[list[float]]] = {}
    for review in make_corpus(6, seed=TEST_SEED_OFFSET, config=HELD_OUT):
        result = text_faithfulness(shipped, review.text, methods, review.label, removal="mask", params=IG)
        for row in result.rows:
            rows.setdefault(row.method, []).append([row.comprehensiveness, row.sufficiency, row.deletion_auc,
                                                    row.insertion_auc])
    random = np.nanmean(rows.pop(RANDOM), axis=0)
    for method, values in rows.items():
        comprehensiveness, sufficiency, deletion, insertion = np.nanmean(values, axis=0)
        assert comprehensiveness > random[0] + 0.2 and sufficiency < random[1] - 0.2, (method, values)
        assert deletion < random[2] - 0.15 and insertion > random[3] + 0.1, (method, values)


def test_a_run_over_sentences_without_evidence_surfaces_the_spurious_name(shipped, tmp_path):
    """Where no evidence word decides, the model leans on what it learnt goes with a class: the name (80 % of the
    training sentences naming it are positive) and the clause around it. Over 200 such sentences the two words with
    the highest mean score are the name and a word of its clause, for each gradient method (measured: "directed"
    and "morgan" first, at 4.8-7.6 (vanilla) and 0.5-1.6 (the signed methods) against at most 2.3 and 0.2 for any
    other word in 10 rows or more); in the rows predicted positive the name is the most frequent top word."""
    reviews = make_corpus(200, seed=TEST_SEED_OFFSET, config=CorpusConfig(weak_share=1.0))
    source = tmp_path / "weak.txt"
    source.write_text("\n".join(r.text for r in reviews) + "\n", encoding="utf-8")
    methods = ["vanilla", "input_x_gradient", "integrated_gradients"]
    settings = Settings(model=shipped.name, methods=methods, targets=["top1"], params=IG, modality="text")
    batch.run(str(source), str(tmp_path / "run"), settings, bundle=shipped)
    table = batch.read_table(tmp_path / "run")
    clause = {w for c in SPURIOUS_CLAUSES for w in c if w != "{}"}
    for method in methods:
        view = word_table(table, method=method, min_rows=10)
        first = list(view["word"][:2])
        assert SPURIOUS_WORD in first and set(first) <= clause | {SPURIOUS_WORD}, (method, view.head())
        positive = word_table(table, method=method, by="target_name", min_rows=10, sort="top")
        positive = positive[positive["target_name"] == "positive"]
        assert positive.iloc[0]["word"] == SPURIOUS_WORD, (method, positive.head())
