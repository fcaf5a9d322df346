"""The public target API: what a caller may write, what it means, and which forms are refused as ambiguous."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from explainers import Contrast, TargetError, TargetSpec, explain, resolve_target

CATEGORIES = ["tabby", "tiger cat", "crane", "espresso", "goldfish"]


def rows(target, n_rows: int = 3, logits: torch.Tensor | None = None) -> list:
    """The resolved indices, one entry per row ([a, b] for a contrast)."""
    return TargetSpec(target, n_rows, CATEGORIES).resolve(logits).indices.tolist()


@pytest.mark.parametrize("one", [2, np.int64(2), np.int32(2), np.uint8(2), np.array(2), np.array([2]),
                                 torch.tensor(2), torch.tensor([2]), "2", "crane", " Crane "])
def test_one_target_of_any_integer_type_applies_to_every_row(one):
    assert rows(one) == [2, 2, 2]


@pytest.mark.parametrize("per_row", [
    [4, 0, 3], (4, 0, 3), np.array([4, 0, 3]), np.array([4, 0, 3], dtype=np.int32), torch.tensor([4, 0, 3]),
    [np.int64(4), np.int16(0), torch.tensor(3)], ["goldfish", "tabby", "espresso"], ["4", 0, "espresso"],
])
def test_lists_tuples_arrays_and_tensors_give_one_target_per_row(per_row):
    assert rows(per_row) == [4, 0, 3]


def test_a_plain_tuple_of_two_ints_on_two_rows_is_one_target_per_row_not_a_contrast():
    spec = TargetSpec((0, 2), 2, CATEGORIES)
    assert not spec.contrast
    assert spec.indices.tolist() == [0, 2]


@pytest.mark.parametrize("contrast", [Contrast(0, 1), Contrast("tabby", "tiger cat"), "tabby vs tiger cat",
                                      "0 vs 1", "Tabby VS tiger cat", "tabby versus tiger cat", "0 vs. 1",
                                      Contrast(np.int64(0), torch.tensor(1))])
def test_a_contrast_is_explicit(contrast):
    spec = TargetSpec(contrast, 2, CATEGORIES)
    assert spec.contrast
    assert spec.indices.tolist() == [[0, 1], [0, 1]]


def test_contrasts_per_row_and_ranks():
    assert rows([Contrast(0, 1), "crane vs espresso"], 2) == [[0, 1], [2, 3]]
    logits = torch.tensor([[0.0, 5.0, 1.0, 3.0, 2.0], [9.0, 1.0, 8.0, 0.0, 7.0]])
    assert rows("top1", 2, logits) == [1, 0]
    assert rows("top3", 2, logits) == [4, 4]
    assert rows("top1 vs top2", 2, logits) == [[1, 3], [0, 2]]
    assert rows(["top2", 4], 2, logits) == [3, 4]
    assert rows(None, 2, logits) == [1, 0]  # no target: the top prediction


@pytest.mark.parametrize("target, n_rows, message", [
    ((0, 2), 1, r"a tuple of 2 targets for 1 input\(s\) is ambiguous; for a contrast write Contrast\(0, 2\) or "
                r"\"0 vs 2\""),
    ((0, 2), 3, r"a tuple of 2 targets for 3 input\(s\) is ambiguous"),
    ([0, 2], 3, "got 2 targets for 3 inputs; give one per row or a single one"),
    ((0, 1, 2), 2, "got 3 targets for 2 inputs"),
    ([(0, 2)], 1, r"a nested tuple \(0, 2\) is not a target; for a contrast write Contrast\(a, b\) or \"a vs b\""),
    ([[0, 2], [1, 3]], 2, "a nested list"),
    (np.array([[0, 2]]), 1, r"a target array must be 1-D, one class per row; got shape \[1, 2\]"),
    (torch.tensor([[0, 2], [1, 3]]), 2, r"must be 1-D.*\[2, 2\]"),
    ([Contrast(0, 1), 2], 2, "mix of contrasts and single classes"),
    (Contrast(1, 1), 1, "two different classes"),
    ("tabby vs Tabby", 1, "two different classes"),
    (True, 1, "class index, name or 'topK'; got True"),
    (2.0, 1, "got float 2.0"),
    (np.float64(2.5), 1, "got float 2.5"),
    (np.array([1.0, 2.0]), 2, "got float 1.0"),
    (-1, 1, r"class index -1 is out of range: this model has classes 0..4"),
    (5, 1, r"class index 5 is out of range: this model has classes 0..4"),
    ("top6", 1, "rank must be between 1 and 5"),
    ("tabbby", 1, "no class named 'tabbby'; did you mean: tabby"),
    ({"class": 1}, 1, "got dict"),
])
def test_ambiguous_and_invalid_forms_are_clear_errors(target, n_rows, message):
    with pytest.raises(TargetError, match=message):
        TargetSpec(target, n_rows, CATEGORIES)


def test_without_a_class_list_names_and_negative_indices_are_errors():
    with pytest.raises(TargetError, match="class index -1 is negative; class indices start at 0"):
        TargetSpec(-1, 1)
    with pytest.raises(TargetError, match="no class names; pass an index"):
        TargetSpec("tabby", 1)
    assert TargetSpec(np.int64(7), 2).indices.tolist() == [7, 7]


def test_ranks_across_sides_resolving_to_one_class_are_an_error():
    logits = torch.tensor([[0.0, 5.0, 1.0, 3.0, 2.0]])
    with pytest.raises(TargetError, match="both sides name the same one"):
        TargetSpec("top1 vs tiger cat", 1, CATEGORIES).resolve(logits)


def test_explain_takes_tensor_and_numpy_targets_per_row():
    """The gradient of a linear model for class c is row c of its weights: each row got its own class."""
    torch.manual_seed(1)
    linear = nn.Sequential(nn.Flatten(), nn.Linear(3 * 2 * 2, 5)).eval()
    x = torch.randn(3, 3, 2, 2)
    weights = linear[1].weight.detach()
    for target in (torch.tensor([4, 0, 3]), np.array([4, 0, 3]), (np.int64(4), 0, torch.tensor(3))):
        result = explain(linear, x, "vanilla", target=target)
        assert result.target.tolist() == [4, 0, 3]
        for row, cls in enumerate((4, 0, 3)):
            assert torch.allclose(result.attribution[row].flatten(), weights[cls])
    contrast = explain(linear, x[:1], "vanilla", target=Contrast(np.int64(4), 0))
    assert contrast.target.tolist() == [[4, 0]]
    assert torch.allclose(contrast.attribution[0].flatten(), weights[4] - weights[0], atol=1e-6)


def test_resolve_target_gives_one_canonical_form_for_every_spelling():
    """A cache keys on the resolved target: a rank, an index and a name that mean the same class resolve alike,
    and a contrast resolves to its pair of indices."""
    categories = ["cat", "dog", "fox"]
    scores = np.array([0.1, 0.7, 0.2])
    assert resolve_target("top1", categories, scores) == resolve_target(1, categories) == 1
    assert resolve_target("dog", categories) == 1
    assert resolve_target("top2", categories, scores) == 2
    assert resolve_target("top1 vs top3", categories, scores) == Contrast(1, 0)
    assert resolve_target(Contrast("fox", "cat"), categories) == Contrast(2, 0)
    with pytest.raises(TargetError):
        resolve_target("top1", categories)  # a rank without scores cannot be resolved
