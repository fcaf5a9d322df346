"""Text faithfulness: ERASER's comprehensiveness and sufficiency equal ferret's (the test-only oracle) on the same
attributions, and equal the exact answer of a linear bag-of-words model; the curves and the random control."""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types

import numpy as np
import pytest
import torch
from torch import nn

from explainers.errors import ParameterError
from explainers.text import TextBundle, explain_text
from explainers.trust.text import ERASER_BINS, RANDOM, REMOVALS, ferret_rationale, text_faithfulness

from ...text_models import VOCAB, tiny_text_bundle, tiny_tokenizer

SENTENCES = ["the movie was great and the plot was very good !",
             "a bad film , not good . the plot is awful ?",
             "the movie is not very great , the film was good and the plot is not bad"]


@pytest.fixture
def ferret_measures(monkeypatch):
    """ferret's faithfulness evaluators, imported without running ferret/__init__.py (which pulls in its
    explainers' dependencies, pinned against our stack): a stub package whose __path__ is the installed folder."""
    spec = importlib.util.find_spec("ferret")
    if spec is None:
        pytest.fail("ferret-xai is a dev dependency (requirements-nodeps.txt, installed with --no-deps by make test)")
    stub = types.ModuleType("ferret")
    stub.__path__ = list(spec.submodule_search_locations)
    for name in [m for m in sys.modules if m == "ferret" or m.startswith("ferret.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "ferret", stub)
    try:
        yield importlib.import_module("ferret.evaluators.faithfulness_measures")
    finally:
        for name in [m for m in sys.modules if m.startswith("ferret.")]:
            del sys.modules[name]


def _ferret_scores(measures, bundle, text, scores, target, bins, remove_tokens=True):
    explanation_class = importlib.import_module("ferret.explainers.explanation").Explanation
    encoded = bundle.encode(text)
    explanation = explanation_class(text=text, tokens=list(encoded.tokens), scores=np.asarray(scores),
                                    explainer="ours", target=target)
    args = {"removal_args": {"remove_tokens": remove_tokens, "based_on": "perc", "thresholds": list(bins)}}
    comprehensiveness = measures.AOPC_Comprehensiveness_Evaluation(bundle.net, bundle.tokenizer)
    sufficiency = measures.AOPC_Sufficiency_Evaluation(bundle.net, bundle.tokenizer)
    return (float(comprehensiveness.compute_evaluation(explanation, target, **args).score),
            float(sufficiency.compute_evaluation(explanation, target, **args).score))


@pytest.mark.parametrize("text", [*SENTENCES, "the plot was zany and the film quirky !"])
def test_comprehensiveness_and_sufficiency_equal_ferret(ferret_measures, text):
    """Deleting tokens (our default, ferret's remove_tokens=True), the same attributions and bins: equal numbers,
    subword tokens too (the last text's unknown words split into pieces). The bins are ERASER's and ferret's own
    default (10% .. 100%), so several rationales are distinct."""
    bundle = tiny_text_bundle(seed=3)
    methods = ["vanilla", "input_x_gradient", "integrated_gradients"]
    maps = explain_text(bundle, text, methods, "top1", objective="probability")
    scores = {m: maps[(m, "top1")].scores for m in methods}
    target = int(maps[(methods[0], "top1")].record.target[0])
    for bins in (ERASER_BINS, tuple(np.arange(0.1, 1.1, 0.1))):
        ours = text_faithfulness(bundle, text, scores, target, bins=bins)
        assert ours.removal == "delete" and ours.target == (target,)
        checked = 0
        for method, values in scores.items():
            theirs = _ferret_scores(ferret_measures, bundle, text, values, target, bins)
            row = ours.row(method)
            if np.isnan(row.comprehensiveness):  # no bin selects a token: ferret says 0 and 1 there
                assert theirs == (0.0, 1.0)
                continue
            np.testing.assert_allclose([row.comprehensiveness, row.sufficiency], theirs, rtol=0, atol=1e-6)
            checked += 1
        assert checked >= 2


def test_mask_removal_equals_ferret_mask_on_whole_words(ferret_measures):
    """ferret's remove_tokens=False writes [MASK] in place and re-tokenises; on whole-word tokens that is our
    "mask" removal (ids replaced in place), equal numbers; "delete" differs from it."""
    bundle = tiny_text_bundle(seed=5)
    text = SENTENCES[0]
    assert not any(t.startswith("##") for t in bundle.encode(text).tokens)
    maps = explain_text(bundle, text, ["vanilla"], "top1", objective="probability")
    scores = maps[("vanilla", "top1")].scores
    target = int(maps[("vanilla", "top1")].record.target[0])
    bins = tuple(np.arange(0.1, 1.1, 0.1))
    ours = text_faithfulness(bundle, text, {"vanilla": scores}, target, bins=bins, removal="mask").row("vanilla")
    theirs = _ferret_scores(ferret_measures, bundle, text, scores, target, bins, remove_tokens=False)
    np.testing.assert_allclose([ours.comprehensiveness, ours.sufficiency], theirs, rtol=0, atol=1e-6)
    deleted = text_faithfulness(bundle, text, {"vanilla": scores}, target, bins=bins).row("vanilla")
    assert abs(deleted.sufficiency - ours.sufficiency) > 1e-6


def test_ferret_rationale_rounds_down_and_keeps_positive_scores():
    scores = np.array([0.5, -1.0, 2.0, 0.0, 1.0, 3.0, -2.0, 0.1, 0.2, 0.3])
    assert ferret_rationale(scores, 0.05) is None  # int(0.5) = 0 tokens
    assert ferret_rationale(scores, 0.1) == [5]
    assert ferret_rationale(scores, 0.29) == [5, 2]  # int(2.9) = 2
    assert sorted(ferret_rationale(scores, 1.0)) == [0, 2, 4, 5, 7, 8, 9]  # the non-positive ones never
    assert ferret_rationale(-np.abs(scores), 0.5) is None


# ---- a linear bag-of-words model: every answer is known ------------------------------------------------------


class BagOfWords(nn.Module):
    """logits = Σ_t W e_t: a token's contribution to class c is W_c · e_t, whatever its position or company, and a
    zero embedding ([PAD], row 0 of the table) contributes nothing."""

    def __init__(self, seed: int = 0, dim: int = 8, classes: int = 2):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.table = nn.Embedding(len(VOCAB), dim)
        self.head = nn.Linear(dim, classes, bias=False)
        with torch.no_grad():
            self.table.weight.copy_(torch.randn(len(VOCAB), dim, generator=generator))
            self.table.weight[VOCAB.index("[PAD]")] = 0
            self.table.weight[VOCAB.index("[CLS]")] = 0
            self.table.weight[VOCAB.index("[SEP]")] = 0
            self.head.weight.copy_(torch.randn(classes, dim, generator=generator))

    def get_input_embeddings(self) -> nn.Embedding:
        return self.table

    def forward(self, inputs_embeds: torch.Tensor) -> torch.Tensor:
        return self.head(inputs_embeds.sum(dim=1))


def _linear_bundle(seed: int = 0) -> TextBundle:
    return TextBundle(name="bag-of-words", net=BagOfWords(seed).eval().double(), tokenizer=tiny_tokenizer(),
                      categories=["neg", "pos"], max_length=32)


def _contributions(bundle: TextBundle, text: str, target: int) -> np.ndarray:
    encoded = bundle.encode(text)
    with torch.no_grad():
        vectors = bundle.net.table(torch.tensor(encoded.ids))
        return (vectors @ bundle.net.head.weight[target]).numpy()[encoded.content]


@pytest.mark.parametrize("removal", ["delete", "pad"])
def test_linear_model_aopc_and_curves_are_the_removed_contributions(removal):
    """On the bag of words with the logit objective, removing a set of tokens lowers the logit by exactly their
    contributions; input × gradient gives those contributions, so its comprehensiveness is the mean over the
    bins of the top tokens' summed contributions and its sufficiency the mean of the other tokens' sum."""
    bundle = _linear_bundle()
    text = SENTENCES[2]
    result = text_faithfulness(bundle, text, ["input_x_gradient"], 1, objective="logit", removal=removal)
    contributions = _contributions(bundle, text, 1)
    n = len(contributions)
    row = result.row("input_x_gradient")
    removed, kept, last = [], [], None
    for b in ERASER_BINS:
        k = int(b * n)
        top = [i for i in np.argsort(contributions)[::-1][:k] if contributions[i] > 0]
        if not top or set(top) == last:
            continue
        last = set(top)
        removed.append(contributions[top].sum())
        kept.append(contributions.sum() - contributions[top].sum())
    np.testing.assert_allclose(row.comprehensiveness, np.mean(removed), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(row.sufficiency, np.mean(kept), rtol=1e-6, atol=1e-6)
    # deletion: the logit after removing the top k tokens (highest contribution first); insertion: of them alone
    order = np.argsort(-contributions, kind="stable")
    counts = np.rint(result.curve_fractions * n).astype(int)
    full = contributions.sum()
    np.testing.assert_allclose(row.deletion, [full - contributions[order[:k]].sum() for k in counts], atol=1e-5)
    np.testing.assert_allclose(row.insertion, [contributions[order[:k]].sum() for k in counts], atol=1e-5)
    # with the exact contributions, no ranking deletes faster: the random control's curve lies above everywhere
    random = result.row(RANDOM)
    assert np.all(random.deletion >= row.deletion - 1e-9) and random.deletion_auc > row.deletion_auc
    assert np.all(random.insertion <= row.insertion + 1e-9) and random.insertion_auc < row.insertion_auc


def test_rows_fractions_and_endpoints():
    bundle = tiny_text_bundle(seed=1)
    text = SENTENCES[0]
    result = text_faithfulness(bundle, text, ["vanilla", "input_x_gradient"], "top2", removal="mask", seed=3)
    assert [r.method for r in result.rows] == ["vanilla", "input_x_gradient", RANDOM]
    assert result.bins == ERASER_BINS and result.objective == "probability" and result.removal == "mask"
    n = len(bundle.encode(text).content)
    np.testing.assert_allclose(result.curve_fractions, np.linspace(0, 1, n + 1))
    for row in result.rows:  # the text itself at both ends of the two curves
        assert row.deletion.shape == row.insertion.shape == result.curve_fractions.shape
        assert row.deletion[0] == pytest.approx(row.insertion[-1], abs=1e-7)
        assert row.deletion[-1] == pytest.approx(row.insertion[0], abs=1e-7)
        assert row.deletion_auc == pytest.approx(np.trapezoid(row.deletion, result.curve_fractions))
    again = text_faithfulness(bundle, text, ["vanilla"], "top2", removal="mask", seed=3)
    np.testing.assert_array_equal(again.row(RANDOM).deletion, result.row(RANDOM).deletion)  # seeded control
    other = text_faithfulness(bundle, text, ["vanilla"], "top2", removal="mask", seed=4)
    assert not np.array_equal(other.row(RANDOM).deletion, result.row(RANDOM).deletion)
    assert any("[MASK]" in note for note in result.notes)


def test_faithfulness_leaves_the_model_unchanged_and_refuses_bad_input():
    bundle = tiny_text_bundle(seed=2)
    before = {k: v.clone() for k, v in bundle.net.state_dict().items()}
    text_faithfulness(bundle, SENTENCES[1], ["vanilla"], "neg vs pos", removal="pad", objective="logit")
    assert all(torch.equal(before[k], v) for k, v in bundle.net.state_dict().items())
    assert set(REMOVALS) == {"delete", "mask", "pad"}
    with pytest.raises(ParameterError, match="removal must be one of"):
        text_faithfulness(bundle, SENTENCES[1], ["vanilla"], removal="drop")
    with pytest.raises(ParameterError, match="bins"):
        text_faithfulness(bundle, SENTENCES[1], ["vanilla"], bins=(0.0, 0.5))
    with pytest.raises(ParameterError, match="control"):
        text_faithfulness(bundle, SENTENCES[1], ["random"])
    with pytest.raises(ParameterError, match="control"):
        text_faithfulness(bundle, SENTENCES[1], {"random": np.ones(13)})
    with pytest.raises(ParameterError, match="tokens"):
        text_faithfulness(bundle, SENTENCES[1], {"mine": np.ones(3)})


def test_a_cut_text_is_said_in_the_notes_and_a_whole_one_is_not():
    bundle = tiny_text_bundle(seed=3, max_length=8)
    cut = text_faithfulness(bundle, SENTENCES[0], ["vanilla"], removal="mask")
    note = bundle.encode(SENTENCES[0]).truncation_note()
    assert note is not None and note in cut.notes[1:]  # the CLI prints notes[1:] (the first is in its header)
    whole = text_faithfulness(bundle, "the movie was great", ["vanilla"], removal="mask")
    assert not any("cut off" in n for n in whole.notes)
