"""Trust checks on a dense model's target: the pointing game with the detected box as ground truth, deletion on the
box's own score, and the sanity cascade on the detector's backbone (planted detector at 64 px)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from explainers import explain
from explainers.dense import DenseScores
from explainers.errors import ParameterError
from explainers.models import dense_zoo
from explainers.models.dense import dense_bundle
from explainers.render import to_map
from explainers.trust.faithfulness import faithfulness_curves, mask_top
from explainers.trust.pointing import box_pointing, pointing_game
from explainers.trust.sanity import backbone_blocks, cascade_blocks, model_randomisation, run_sanity

from ...dense_models import CATEGORIES, PlantedDetector, scene


@pytest.fixture(scope="module")
def planted():
    """The planted detector's scored bundle on the two-square scene: target 0 the red box, 1 the blue."""
    bundle = dense_bundle(PlantedDetector(), input_size=64, categories=CATEGORIES)
    inputs = scene()
    prediction = bundle.predict(inputs)
    scored = bundle.scored(bundle.targets(prediction), inputs)
    assert [bundle.label_name(t.label) for t in scored.dense_targets] == ["red", "blue"]
    return scored, inputs, prediction


def _map(scored, inputs, target: int) -> np.ndarray:
    """|input × gradient| of one target, channels summed: the planted colour filter's weights sum to 0 per
    channel, so a plain gradient's channel sum is identically 0 on this model."""
    return to_map(explain(scored, inputs, "input_x_gradient", target=target).attribution[0], "absolute", "sum")


def test_box_pointing_hits_its_own_box_and_misses_the_other(planted):
    scored, inputs, _ = planted
    red, blue = _map(scored, inputs, 0), _map(scored, inputs, 1)
    own = box_pointing(red, scored.target_mask(0))
    other = box_pointing(red, scored.target_mask(1))
    assert own.hit and not other.hit
    assert own.share > 4 * own.area  # far above chance: a 16 px box covers 1/16 of the image
    assert other.share < other.area
    assert box_pointing(blue, scored.target_mask(1)).hit


def test_box_pointing_is_the_pointing_game_on_one_row():
    rng = np.random.default_rng(3)
    values = rng.normal(size=(20, 24)).astype(np.float32)
    mask = np.zeros((20, 24), dtype=bool)
    mask[4:11, 5:17] = True
    game = pointing_game(values[None], mask[None])
    result = box_pointing(values, mask)
    assert result.hit == bool(game.hit[0] == 1.0)
    assert result.share == pytest.approx(game.energy[0]) and result.area == pytest.approx(mask.mean())
    # ties: a constant (all-zero, a lost box's) map hits only when most of its tied peaks are inside
    assert not box_pointing(np.zeros((20, 24)), mask).hit
    assert box_pointing(np.zeros((20, 24)), ~mask).hit
    with pytest.raises(ParameterError):
        box_pointing(values, mask[:10])


def test_deletion_of_the_box_map_drops_the_box_score_faster_than_random(planted):
    scored, inputs, prediction = planted
    maps = {"input_x_gradient": _map(scored, inputs, 0),
            "random": np.random.default_rng(0).random((64, 64)).astype(np.float32)}
    curves = faithfulness_curves(scored, inputs, maps, targets=0, kinds=("deletion",), steps=16, region=4)
    saliency = curves.curve("deletion", "input_x_gradient")
    control = curves.curve("deletion", "random")
    # the curve follows the box's own score, not a softmax over the two boxes (which would start near 0.5)
    assert saliency.probability[0, 0] == pytest.approx(prediction.detections[0].score, abs=1e-5)
    np.testing.assert_allclose(saliency.probability, saliency.logit)
    assert saliency.mean_auc < 0.5 * control.mean_auc
    masked = mask_top(scored, inputs, maps["input_x_gradient"], 0.2, target=0)
    assert masked.original_probability[0] == pytest.approx(prediction.detections[0].score, abs=1e-5)
    assert masked.target_probability[0] < 0.5 * masked.original_probability[0]


def test_cascade_randomises_the_backbone_only_and_says_when_the_box_is_lost(planted):
    scored, inputs, _ = planted
    assert isinstance(scored.model, DenseScores)
    blocks = backbone_blocks(scored.model)
    assert [b.name for b in blocks] == ["backbone.body.colour", "backbone.body.smooth"]
    result = model_randomisation(scored, inputs, ["gradcam", "input_x_gradient"], target=0, controls=("sobel",))
    assert [s.name for s in result.steps] == ["original", "backbone.body.smooth", "backbone.body.colour"]
    assert result.target[0] == 0 and result.steps[0].target_logit[0] > 0.9
    lost = [i for i, s in enumerate(result.steps) if s.target_logit[0] == 0]
    # the hand-set colour filter and smoothing are all the detector knows: randomised, the red box goes
    assert lost, [s.target_logit for s in result.steps]
    assert len(result.notes) == 1
    note = result.notes[0]
    assert "was not found again after randomising" in note and result.steps[lost[0]].name in note
    assert "counts as dissimilar" in note and result.to_dict(thumbnails=False)["notes"] == [note]
    curve = result.methods["input_x_gradient"].mean_curve("spearman_abs")
    assert curve[0] == pytest.approx(1.0) and all(curve[i] is None for i in lost)  # a zero map: undefined = 0
    # the original bundle's detector is untouched
    assert scored.source.predict(inputs).detections[0].score == pytest.approx(result.steps[0].target_logit[0])


def test_backbone_blocks_of_seeded_torchvision_models():
    detector = dense_zoo.construct("fasterrcnn_mobilenet_v3_large_320_fpn")
    blocks = backbone_blocks(detector)
    names = [m for b in blocks for m in b.modules]
    assert all(m.startswith("backbone.") for m in names)
    assert names[0] == "backbone.body.0" and any(m.startswith("backbone.fpn.") for m in names)
    assert not any(m.startswith(("rpn", "roi_heads")) for m in names)
    # every backbone parameter is in exactly one block
    modules = dict(detector.named_modules())
    covered = {id(p) for m in names for p in modules[m].parameters()}
    assert covered == {id(p) for p in detector.backbone.parameters()}
    segmenter = dense_zoo.construct("lraspp_mobilenet_v3_large")
    assert [b.modules for b in backbone_blocks(segmenter)] == [
        tuple(f"backbone.{m}" for m in b.modules) for b in cascade_blocks(segmenter.backbone)]


def test_cascade_on_a_seeded_torchvision_detector_keeps_the_heads():
    torch.manual_seed(0)
    net = dense_zoo.construct("fasterrcnn_mobilenet_v3_large_320_fpn").eval()
    net.roi_heads.score_thresh = 0.0
    net.transform.min_size, net.transform.max_size = (96,), 96
    bundle = dense_bundle(net, input_size=96, score_threshold=0.0)
    inputs = torch.rand(1, 3, 96, 96, generator=torch.Generator().manual_seed(1))
    prediction = bundle.predict(inputs)
    assert prediction.detections
    scored = bundle.scored(bundle.targets(prediction)[:1], inputs)
    heads = {n: p.clone() for n, p in scored.model.named_parameters() if not n.startswith("backbone.")}
    result = model_randomisation(scored, inputs, ["input_x_gradient"], target=0, controls=(), steps=2)
    assert all(m.startswith("backbone.") for s in result.steps[1:] for m in s.block.modules)
    assert all(torch.equal(p, heads[n]) for n, p in scored.model.named_parameters() if n in heads)


def test_every_sanity_check_on_a_seeded_torchvision_detector_runs_or_says_why_not():
    """The whole run_sanity, as the Sanity page calls it: the detector's first module is its transform (it returns an
    image list), so input invariance is left out with a note, never a TypeError; the rest runs."""
    torch.manual_seed(0)
    net = dense_zoo.construct("fasterrcnn_mobilenet_v3_large_320_fpn").eval()
    net.transform.min_size, net.transform.max_size = (96,), 96
    dense_zoo.open_threshold(net)
    bundle = dense_bundle(net, input_size=96, score_threshold=0.0)
    inputs = torch.rand(1, 3, 96, 96, generator=torch.Generator().manual_seed(1))
    scored = bundle.scored(bundle.targets(bundle.predict(inputs))[:3], inputs)
    report = run_sanity(scored, inputs, ["vanilla"], target=0, steps=1, random_classes_count=2)
    assert any("input invariance not run" in note and "'transform'" in note for note in report.notes)
    assert len(report.cascade.steps) == 2 and report.random_logit is not None and report.input_invariance is None
