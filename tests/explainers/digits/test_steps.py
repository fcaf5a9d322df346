"""The digits page's two columns: the NumPy reference and autograd, step by step, agree."""

from __future__ import annotations

import numpy as np

import explainers
from explainers.digits import gallery
from explainers.digits.autograd_steps import side_by_side


def test_side_by_side_steps_agree_and_end_in_the_vanilla_gradient():
    bundle = explainers.load_model("lenet_digits")
    item = gallery()[3]
    x = bundle.preprocess(item.image)
    rows = side_by_side(bundle.model, x, item.label)
    assert [r.name for r in rows][:3] == ["input", "gray", "conv1"] and rows[-1].name == "fc3"
    for row in rows:  # float64 NumPy against float32 autograd
        assert row.forward_difference < 1e-4, row.name
        assert row.backward_difference is None or row.backward_difference < 1e-5, row.name
    vanilla = explainers.explain(bundle, x, "vanilla", target=item.label).attribution.numpy()
    np.testing.assert_allclose(rows[0].backward_numpy, vanilla, atol=1e-6)
    seed = rows[-1].backward_numpy[0]  # d score / d logits: the target's one-hot vector
    assert seed[item.label] == 1 and np.count_nonzero(seed) == 1
