"""The one manifest module: the same keys on every surface, JSON that always serialises, a schema version."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from explainers import explain
from explainers.manifest import (
    SCHEMA,
    SCHEMA_VERSION,
    collection_manifest,
    explanation_manifest,
    jsonable,
    top_predictions,
)
from explainers.render import View

from .helpers import small_convnet

KEYS = {"schema", "schema_version", "role", "image", "model", "preprocessing", "method", "method_name",
        "class_sensitive", "params", "target", "objective", "layer", "seed", "elapsed_s", "extras", "predictions",
        "view", "range", "files", "device", "versions", "notes", "batch_size_used"}
CATEGORIES = ["zero", "one", "two", "three", "four", "five", "six"]


def manifest_of(method: str, target, **params) -> dict:
    model = small_convnet()
    x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    record = explain(model, x, method, target=target, seed=3, **params).record(0)
    return explanation_manifest(record, image_name="cat.png", image_hash="0123456789abcdef", image_size=(451, 300),
                                model="small", preprocessing="resize", categories=CATEGORIES,
                                view=View(sign="signed"), value_range=(-2.5, float("nan")), scale="linear")


def test_every_manifest_has_the_same_keys_and_serialises_strictly():
    for method, target, params in (("vanilla", 1, {}), ("eigencam", 2, {}),
                                   ("integrated_gradients", "3 vs 5", {"n_steps": 2, "baseline": "zero"})):
        manifest = manifest_of(method, target, **params)
        assert set(manifest) == KEYS, method
        json.dumps(manifest, allow_nan=False)  # NaN and inf became null
        assert (manifest["schema"], manifest["schema_version"]) == (SCHEMA, SCHEMA_VERSION)


def test_manifest_values():
    manifest = manifest_of("integrated_gradients", "3 vs 5", n_steps=2, baseline="zero")
    assert manifest["target"] == {"indices": [3, 5], "names": ["three", "five"], "contrast": True}
    assert manifest["method_name"] == "Integrated gradients" and manifest["class_sensitive"] is True
    assert manifest["params"] == {"n_steps": 2, "rule": "gausslegendre", "baseline": "zero"}
    assert manifest["view"] == {"sign": "signed", "reduction": "max", "clip": 99.5, "colormap": "RdBu_r",
                                "alpha": 0.5, "original_aspect": True}
    assert manifest["range"] == {"lo": -2.5, "hi": None, "scale": "linear"}
    assert manifest["image"] == {"name": "cat.png", "sha256_16": "0123456789abcdef", "size": [451, 300]}
    assert manifest["seed"] == 3 and manifest["role"] == "explanation" and manifest["layer"] is None
    assert set(manifest["extras"]) == {"completeness_delta", "score_gap", "completeness_relative"}
    assert all(isinstance(v, float) for v in manifest["extras"].values())
    with torch.no_grad():
        logits = small_convnet()(torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(0)))[0]
    assert [p["index"] for p in manifest["predictions"]] == logits.argsort(descending=True)[:5].tolist()
    eigen = manifest_of("eigencam", 2)
    assert eigen["class_sensitive"] is False and eigen["layer"] == "features"


def test_top_predictions_are_softmax_probabilities_in_order():
    top = top_predictions(np.array([1.0, 3.0, 2.0]), ["a", "b", "c"], k=2)
    z = np.exp([1.0, 3.0, 2.0])
    assert top == [{"index": 1, "name": "b", "probability": pytest.approx(z[1] / z.sum())},
                   {"index": 2, "name": "c", "probability": pytest.approx(z[2] / z.sum())}]
    assert top_predictions(torch.tensor([0.0, 0.0]), None, k=1) == [{"index": 0, "name": None, "probability": 0.5}]


def test_jsonable():
    assert jsonable(torch.tensor(2.5)) == 2.5
    assert jsonable(np.float32(0.25)) == 0.25 and isinstance(jsonable(np.int64(3)), int)
    assert jsonable({"a": (1, np.array([1.0, math.inf])), 2: float("nan")}) == {"a": [1, [1.0, None]], "2": None}
    assert jsonable(np.bool_(True)) is True
    assert jsonable(View) == str(View)


def test_collection_wraps_panels_with_what_they_share():
    panel = manifest_of("vanilla", 1)
    collection = collection_manifest([panel, panel], scale="linked", range=(np.float32(-1), 1.0))
    assert collection == {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, "scale": "linked",
                          "range": [-1.0, 1.0], "panels": [panel, panel]}
