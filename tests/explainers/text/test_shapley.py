"""KernelSHAP over words is exact when every coalition is scored: the Shapley values of the seeded tiny BERT's
score, computed by brute force over all coalitions of a four-word sentence, to 1e-5."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from explainers.text import explain_text
from explainers.text.tokens import group_words

from .method_models import lively_bundle

FOUR_WORDS = "the movie was goodish"  # "goodish" is not in the vocabulary: good ##i ##s ##h, one word


@pytest.fixture(scope="module")
def bundle():
    return lively_bundle()


def coalition_value(scored, labels: np.ndarray, kept: set[int], kind: str, target) -> float:
    """f(text with every feature outside ``kept`` replaced by the ``kind`` baseline token), one pass alone."""
    switched_off = torch.from_numpy(np.isin(labels, list(kept), invert=True) & (labels >= 0))
    inputs = torch.where(switched_off.view(1, 1, 1, -1), scored.baseline(kind), scored.inputs)
    with torch.no_grad():
        logits = scored.model(inputs)[0].double()
    return float(logits[target[0]] - logits[target[1]]) if isinstance(target, tuple) else float(logits[target])


def brute_force_shapley(scored, labels: np.ndarray, kind: str, target) -> np.ndarray:
    """φ_i = Σ_{S ⊆ N∖{i}} |S|! (M − |S| − 1)! / M! · (v(S ∪ {i}) − v(S)) over all 2^M coalitions."""
    m = int(labels.max()) + 1
    value = {frozenset(s): coalition_value(scored, labels, set(s), kind, target)
             for size in range(m + 1) for s in itertools.combinations(range(m), size)}
    phi = np.zeros(m)
    for i in range(m):
        for coalition, v in value.items():
            if i not in coalition:
                weight = math.factorial(len(coalition)) * math.factorial(m - len(coalition) - 1) / math.factorial(m)
                phi[i] += weight * (value[coalition | {i}] - v)
    return phi


@pytest.mark.parametrize("kind", ["pad", "mask"])
def test_kernel_shap_by_word_is_the_exact_shapley_value_of_each_word(bundle, kind):
    scored = bundle.scored(FOUR_WORDS)
    words = scored.encoded.word_labels()
    assert int(words.max()) + 1 == 4 and len(scored.encoded) == 9
    targets = {"top1": None, "neg vs pos": (0, 2)}
    maps = explain_text(scored, None, "kernel_shap", list(targets),
                        params={"kernel_shap": {"unit": "word", "baseline": kind, "n_samples": 1000}})
    for key, pair in targets.items():
        token_map = maps[("kernel_shap", key)]
        target = pair or token_map.record.target[0]
        expected = brute_force_shapley(scored, words, kind, target)
        ours = group_words(token_map.scores, scored.encoded, "sum")
        assert np.abs(ours - expected).max() <= 1e-5, (ours, expected)
        assert np.abs(expected).max() > 0.05  # the words move the score: the comparison is not of zeros
        assert bool(token_map.record.extras["exact"])
        # each word's value shared equally among its tokens, [CLS] and [SEP] never switched off
        assert np.all(token_map.scores[words < 0] == 0)
        pieces = token_map.scores[words == 3]
        assert len(pieces) == 4 and np.allclose(pieces, expected[3] / 4, atol=1e-6)


def test_kernel_shap_by_token_is_the_exact_shapley_value_of_each_token(bundle):
    scored = bundle.scored("not a good film")
    tokens = scored.regions("token").flatten().numpy()
    assert int(tokens.max()) + 1 == 4
    (token_map,) = explain_text(scored, None, "kernel_shap", ["top2"],
                                params={"kernel_shap": {"unit": "token", "n_samples": 15}}).values()
    expected = brute_force_shapley(scored, tokens, "pad", token_map.record.target[0])
    assert np.abs(token_map.scores[tokens >= 0] - expected).max() <= 1e-5
    gap = token_map.record.extras["score_gap"]  # efficiency: the tokens add up to f(text) − f(all [PAD])
    assert token_map.scores.sum() == pytest.approx(gap, abs=1e-6)
