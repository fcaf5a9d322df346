"""Edges of the dense backend: a coarse segmenter's small region, a drawn region of the wrong size, a segmenter that
returns something else, SSD's default layer, an objective that would mix boxes, and the threshold of a shared
bundle."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from explainers import ParameterError, TargetError, explain
from explainers.dense import RegionTarget
from explainers.dense.records import dense_predictions, describe_target
from explainers.errors import ModelLoadError
from explainers.models import dense_zoo
from explainers.models.dense import dense_bundle

from ...dense_models import CATEGORIES, NeitherConvention, PlantedDetector, PlantedSegmenter, scene


class CoarseSegmenter(nn.Module):
    """The planted segmenter's logits left at stride 8, as many user segmenters return them."""

    def __init__(self):
        super().__init__()
        self.inner = PlantedSegmenter()

    def forward(self, images):
        return {"out": F.avg_pool2d(self.inner(images)["out"], 8)}


def test_a_small_region_on_a_coarse_output_keeps_its_score():
    """A 3×3 region on an 8×8 output grid: the logits are laid on the region's pixels, not the region shrunk to
    nothing (which gave 0 for "sum" and NaN for "mean")."""
    bundle = dense_bundle(CoarseSegmenter(), input_size=64, categories=CATEGORIES)
    x = scene()
    mask = np.zeros((64, 64), dtype=bool)
    mask[13:16, 13:16] = True  # inside the red square, between two cells of the 8-pixel grid
    targets = [bundle.region_target(1, mask, "sum"), bundle.region_target(1, mask, "mean")]
    scored = bundle.scored(targets, x)
    scores = explain(scored, x, "vanilla", target=0).logits[0]
    upsampled = F.interpolate(bundle.model(x)["out"], size=(64, 64), mode="bilinear", align_corners=False)[0, 1]
    expected = upsampled[torch.from_numpy(mask)]
    assert torch.isfinite(scores).all() and float(scores[1]) > 0
    assert torch.allclose(scores, torch.stack([expected.sum(), expected.mean()]), rtol=1e-5)


def test_a_drawn_region_must_be_a_mask_of_the_models_input():
    bundle = dense_bundle(PlantedSegmenter(), input_size=64, categories=CATEGORIES)
    with pytest.raises(TargetError, match=r"\[64, 64\]; got \[128, 128\]"):
        bundle.region_target(1, np.ones((128, 128), dtype=bool))
    with pytest.raises(TargetError, match="same picture"):
        bundle.scored([RegionTarget(1, np.ones((64, 64), bool)), RegionTarget(2, np.ones((32, 32), bool))],
                      scene())


def test_a_segmenter_that_returns_something_else_is_named():
    with pytest.raises(ModelLoadError, match="'out'.*features"):
        dense_bundle(NeitherConvention(), input_size=64, kind="segmentation")


def test_ssd_defaults_to_its_backbone_not_its_extra_layers():
    torch.manual_seed(0)
    bundle = dense_zoo.from_state_dict("ssdlite320_mobilenet_v3_large",
                                       dense_zoo.construct("ssdlite320_mobilenet_v3_large").state_dict())
    names = [layer.name for layer in bundle.layers]
    assert any(".extra." in name for name in names)  # they are listed, for whoever wants them
    assert bundle.default_layer.startswith("backbone.") and "extra" not in bundle.default_layer.split(".")
    grid = next(layer.grid for layer in bundle.layers if layer.name == bundle.default_layer)
    assert min(grid) >= 10  # a map of the image, not a 2×2 summary


def test_a_probability_objective_across_boxes_is_refused():
    bundle = dense_bundle(PlantedDetector(), input_size=64, categories=CATEGORIES)
    x = scene()
    scored = bundle.scored(bundle.targets(bundle.predict(x)), x)
    with pytest.raises(ParameterError, match="softmax across the picked boxes"):
        explain(scored, x, "vanilla", target=0, objective="probability")


def test_a_threshold_is_applied_to_a_copy_and_the_box_match_takes_its_iou():
    bundle = dense_bundle(PlantedDetector(), input_size=64, categories=CATEGORIES)
    x = scene()
    lowered = bundle.with_threshold(0.01)
    assert lowered is not bundle and lowered.model is bundle.model and bundle.score_threshold == 0.5
    assert len(lowered.predict(x).detections) == len(bundle.predict(x).detections) + 1  # the weak 0.075 box
    prediction = bundle.predict(x)
    red = prediction.detections[0].box
    shifted = (red[0] + 5, red[1] + 5, red[2] + 5, red[3] + 5)  # IoU with the red box: 121 / 391 = 0.31
    assert bundle.box_target(shifted, prediction, iou_threshold=0.3).rank == 1
    with pytest.raises(TargetError, match="IoU above 0.5"):
        bundle.box_target(shifted, prediction)
    with pytest.raises(TargetError, match="between 0 and 1"):
        bundle.with_threshold(1.5)


def test_a_box_lost_on_a_row_says_so_beside_its_zero_map():
    """Row 1 is a plain grey image, on which no box is found again: its map is zero and the note says why (the
    generic "the gradient vanished" would mislead); row 0 keeps its map and no such note."""
    bundle = dense_bundle(PlantedDetector(), input_size=64, categories=CATEGORIES)
    x = scene()
    scored = bundle.scored(bundle.targets(bundle.predict(x)), x)
    rows = torch.cat([x, torch.full_like(x, 0.5)])
    for method, params in (("vanilla", {}), ("occlusion", {"window": 8, "stride": 4})):
        result = explain(scored, rows, method, target=0, **params)
        assert result.attribution[0].abs().sum() > 0 and not result.attribution[1].any()
        assert not any("was not found" in note for note in result.notes[0])
        lost = [note for note in result.notes[1] if "was not found" in note]
        assert len(lost) == 1 and lost[0].startswith("the map is all zero") and scored.categories[0] in lost[0]
        assert not any("gradient of the score vanished" in note for note in result.notes[1])
    contrast = explain(scored, rows, "vanilla", target=f"{scored.categories[0]} vs {scored.categories[1]}")
    assert sum("was not found" in note for note in contrast.notes[1]) == 2  # both sides lost, said of each
    assert not any(note.startswith("the map is all zero: the box") for note in contrast.notes[1])


def test_a_boxs_short_name_and_bounds_come_from_the_box_itself():
    bundle = dense_bundle(PlantedDetector(), input_size=64, categories=CATEGORIES)
    targets = bundle.targets(bundle.predict(scene()))
    assert len(targets) >= 2
    for rank, target in enumerate(targets, start=1):
        assert target.short_name == f"#{rank} {CATEGORIES[target.label]}"
        assert target.name == f"{target.short_name} {target.score:.2f}"  # the name is the short name and the score
        assert target.bounds() == pytest.approx(target.box)


def test_a_drawn_region_takes_the_majority_class_and_its_bounds_are_its_pixels():
    bundle = dense_bundle(PlantedSegmenter(), input_size=64, categories=CATEGORIES)
    prediction = bundle.predict(scene())
    box = (4.0, 6.0, 30.0, 30.0)
    region = bundle.drawn_region(box, prediction)
    mask = region.mask_pixels
    counts = np.bincount(prediction.classes[mask], minlength=len(CATEGORIES))
    assert region.label == int(counts.argmax()) and region.drawn
    rows, cols = np.nonzero(mask)
    assert region.bounds() == (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)
    assert region.short_name == CATEGORIES[region.label]
    other = bundle.drawn_region(box, prediction, label=2)
    assert other.label == 2 and np.array_equal(other.mask_pixels, mask)
    assert describe_target(bundle, region)["share"] == pytest.approx(mask.mean())
    with pytest.raises(TargetError, match="no pixels"):
        bundle.drawn_region((10.0, 10.0, 10.2, 10.2), prediction)


def test_a_segmenter_lists_the_background_last():
    bundle = dense_bundle(PlantedSegmenter(), input_size=64, categories=CATEGORIES)
    prediction = bundle.predict(scene())
    labels = [t.label for t in bundle.targets(prediction)]
    assert sorted(labels) == sorted(prediction.shares)
    assert labels[-1] == CATEGORIES.index("__background__")
    others = [label for label in prediction.shares if label != labels[-1]]
    assert labels[:-1] == others  # the rest keep their share order
    assert prediction.shares[labels[-1]] > max(prediction.shares[label] for label in others)  # it was first


def test_nothing_found_advises_a_lower_threshold_only_above_the_detectors_own():
    grey = torch.full((1, 3, 64, 64), 0.5)
    above = dense_bundle(PlantedDetector(score_thresh=0.3), input_size=64, categories=CATEGORIES)
    assert above.detector_floor() == pytest.approx(0.3)
    assert not above.predict(grey).detections
    assert "lower the score threshold" in above.nothing_found() and above.lower_threshold_helps()
    at_floor = above.with_threshold(0.3)
    assert not at_floor.lower_threshold_helps()
    assert "drops boxes scored under 0.3" in at_floor.nothing_found()
    assert "lower the score threshold" not in at_floor.nothing_found()
    segmenter = dense_bundle(PlantedSegmenter(), input_size=64, categories=CATEGORIES)
    assert segmenter.detector_floor() is None and not segmenter.lower_threshold_helps()


def test_the_manifests_predictions_are_the_detections_in_original_pixels():
    bundle = dense_bundle(PlantedDetector(), input_size=64, categories=CATEGORIES)
    prediction = bundle.predict(scene())
    geometry = (0, 0, 128, 256)  # an image twice as tall as wide, squeezed to 64 × 64
    listed = dense_predictions(bundle, prediction, geometry)
    assert [p["score"] for p in listed] == pytest.approx([d.score for d in prediction.detections])
    for entry, found in zip(listed, prediction.detections, strict=True):
        x0, y0, x1, y1 = found.box
        assert entry["box"] == pytest.approx([x0 * 2, y0 * 4, x1 * 2, y1 * 4], abs=0.01)
        assert entry["label_name"] == CATEGORIES[found.label]
    segmenter = dense_bundle(PlantedSegmenter(), input_size=64, categories=CATEGORIES)
    regions = dense_predictions(segmenter, segmenter.predict(scene()))
    assert sum(r["share"] for r in regions) == pytest.approx(1.0)
