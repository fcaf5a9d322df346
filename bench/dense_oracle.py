"""The largest difference between our Grad-CAM of a detected box or a segmented region and pytorch-grad-cam's
(``FasterRCNNBoxScoreTarget``, ``SemanticSegmentationTarget``), on the seeded models and layers the oracle tests
use (tests/explainers/dense/test_oracle_gradcam.py), printed as a share of the map's largest value: the figures
the tests bound by 1e-4.

    .venv/bin/python bench/dense_oracle.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from explainers import explain  # noqa: E402
from explainers.dense import BoxTarget  # noqa: E402
from tests.explainers.dense import test_oracle_gradcam as oracle  # noqa: E402


def worst(scored, x, index, layer, theirs) -> float:
    scale = float(np.abs(theirs).max())
    ours = explain(scored, x, "gradcam", target=index, layer=layer, relu=False).layer_attribution[0, 0].numpy()
    return float(np.abs(ours - theirs).max()) / scale


def main() -> None:
    torch.set_num_threads(1)
    bundle, x = oracle.detector.__wrapped__()
    detected = bundle.targets(bundle.predict(x))
    shift = torch.tensor([1.5, -1.0, 1.0, 2.0])
    targets = [BoxTarget(tuple((torch.tensor(t.box) + shift).tolist()), t.label, t.name) for t in detected[:3]]
    scored = bundle.scored(targets, x, with_iou=True)
    for layer in ("backbone.body.16", "backbone.body.6"):
        module = dict(bundle.model.named_modules())[layer]
        for index in (0, 2):
            box = torch.tensor(targets[index].box)
            theirs = oracle.oracle_map(bundle.model, module, x, oracle.model_targets.FasterRCNNBoxScoreTarget(
                [targets[index].label], [box]))
            print(f"detector {oracle.DETECTOR} {oracle.SIDE}px, {layer}, box {index}: max |ours - theirs| / max = "
                  f"{worst(scored, x, index, layer, theirs):.2e}")
    bundle, x = oracle.segmenter.__wrapped__()
    prediction = bundle.predict(x)
    label = next(iter(prediction.shares))
    drawn = np.zeros((128, 128), dtype=bool)
    drawn[20:60, 70:120] = True
    other = (label + 1) % len(bundle.categories)
    scored = bundle.scored([bundle.targets(prediction)[0], bundle.region_target(other, drawn, "sum")], x)
    wrapped = oracle.Logits(bundle.model)
    for layer in ("backbone.16", "backbone.6"):
        module = dict(bundle.model.named_modules())[layer]
        for index, (target, mask) in enumerate(((label, prediction.classes == label), (other, drawn))):
            theirs = oracle.oracle_map(wrapped, module, x, oracle.model_targets.SemanticSegmentationTarget(
                target, mask.astype(np.float32)))
            what = "predicted mask" if index == 0 else "drawn region"
            print(f"segmenter {oracle.SEGMENTER} 128px, {layer}, {what}: max |ours - theirs| / max = "
                  f"{worst(scored, x, index, layer, theirs):.2e}")


if __name__ == "__main__":
    main()
