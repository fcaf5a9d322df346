"""Bad input on dense models: nothing detected, a box the detector does not find, an empty region, a dense model
explained without targets, a model of neither convention; each a SaliencyError that says what to do. A perturbed
image in which the object is gone scores 0: that is an answer, not an error."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from explainers import ModelLoadError, SaliencyError, TargetError, explain, explain_many
from explainers.dense import BoxTarget, DenseScores, RegionTarget
from explainers.models.dense import dense_bundle

from ...dense_models import CATEGORIES, NeitherConvention, PlantedDetector, PlantedSegmenter, scene

GREY = torch.full((1, 3, 64, 64), 0.5)


@pytest.fixture(scope="module")
def detector():
    return dense_bundle(PlantedDetector(), input_size=64, categories=CATEGORIES)


@pytest.fixture(scope="module")
def segmenter():
    return dense_bundle(PlantedSegmenter(), input_size=64, categories=CATEGORIES)


def test_nothing_detected_is_said_so(detector):
    prediction = detector.predict(GREY)
    assert prediction.detections == () and detector.targets(prediction) == []
    with pytest.raises(TargetError, match="no target to explain.*detects no box at or above score 0.5"):
        detector.scored(detector.targets(prediction), GREY)
    with pytest.raises(TargetError, match="detects no box at or above score 0.5 on this image"):
        detector.box_target((8, 10, 24, 26), prediction)
    with pytest.raises(TargetError, match="detects no box of class blue"):
        detector.box_target((8, 10, 24, 26), prediction, label=2)


def test_a_box_the_detector_does_not_find_is_named(detector):
    x = scene()
    prediction = detector.predict(x)
    red = prediction.detections[0]
    far = BoxTarget((40.0, 4.0, 56.0, 20.0), red.label, "my red box")
    with pytest.raises(TargetError) as caught:
        detector.scored([detector.targets(prediction)[0], far], x)
    message = str(caught.value)
    assert "my red box [40, 4, 56, 20]" in message and "not among the model's detections" in message
    with pytest.raises(TargetError, match=r"no detected box matches \[40, 4, 56, 20\].*nearest is red"):
        detector.box_target(far.box, prediction)
    with pytest.raises(TargetError, match="x1 > x0"):
        detector.box_target((20, 10, 8, 26), prediction)
    near = detector.box_target(tuple(v + 1 for v in red.box), prediction)  # a drawn box a pixel off
    assert near.box == red.box and near.label == red.label


def test_regions_must_have_pixels_and_a_known_class(segmenter):
    empty = np.zeros((64, 64), dtype=bool)
    with pytest.raises(TargetError, match="has no pixels"):
        RegionTarget(1, empty)
    with pytest.raises(TargetError, match="has no pixels"):
        segmenter.region_target(1, empty)
    square = empty.copy()
    square[10:20, 10:20] = True
    with pytest.raises(TargetError, match="out of range"):
        segmenter.region_target(7, square)
    with pytest.raises(TargetError, match="reduction must be one of sum, mean"):
        segmenter.region_target(1, square, reduction="max")
    with pytest.raises(TargetError, match="takes RegionTargets"):
        DenseScores(segmenter.model, segmenter.kind, [BoxTarget((0, 0, 4, 4), 1)])


def test_a_dense_model_is_explained_only_through_picked_targets(detector):
    x = scene()
    for run in (lambda: explain(detector, x, "vanilla"), lambda: explain_many(detector, x, ["vanilla"])):
        with pytest.raises(SaliencyError, match="pick them first"):
            run()


def test_a_model_of_neither_convention_is_refused_with_what_came():
    with pytest.raises(ModelLoadError) as caught:
        dense_bundle(NeitherConvention(), input_size=32)
    message = str(caught.value)
    assert "'boxes'" in message and "'out'" in message and "a dict with keys features" in message


def test_an_object_gone_from_a_perturbed_image_scores_zero(detector, segmenter):
    x = scene()
    scored = detector.scored(detector.targets(detector.predict(x)), x)
    blanked = x.clone()
    blanked[..., 8:28, 6:26] = 0.5  # the red square painted grey: its box is gone, the blue one stays
    with torch.no_grad():
        scores = scored.model(torch.cat([x, blanked, GREY]))
    assert scores.shape == (3, 2) and torch.isfinite(scores).all()
    assert (scores[0] > 0.9).all()
    assert scores[1, 0] == 0 and scores[1, 1] > 0.9 and (scores[2] == 0).all()
    result = explain(scored, blanked, "vanilla", target=0)  # nothing to explain there: an all-zero map
    assert not result.attribution.any()


@pytest.mark.parametrize("method, params", [("vanilla", {}), ("gradcam", {}), ("guided_ig", {"n_steps": 4}),
                                            ("integrated_gradients", {"n_steps": 4})])
def test_a_batch_in_which_every_box_vanished_gives_a_zero_map(detector, method, params):
    """Every row without a detection (a grey image, or every step of a path): score 0 with gradient 0, not
    autograd's "does not require grad"."""
    x = scene()
    scored = detector.scored(detector.targets(detector.predict(x)), x)
    result = explain(scored, torch.cat([GREY, GREY]), method, target=1, **params)
    assert result.attribution.shape[0] == 2 and not result.attribution.any()
    assert torch.isfinite(result.attribution).all()
