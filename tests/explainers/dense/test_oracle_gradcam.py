"""Grad-CAM of a detected box and of a segmented region against pytorch-grad-cam (test-only oracle): its
``FasterRCNNBoxScoreTarget`` on a seeded Faster R-CNN and its ``SemanticSegmentationTarget`` on a seeded LR-ASPP,
compared before its min-max scaling: the raw class activation map at the layer's resolution, with and without
the ReLU."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torchvision.ops import box_iou

from explainers import explain
from explainers.dense import BoxTarget
from explainers.models import dense_zoo

gradcam_lib = pytest.importorskip("pytorch_grad_cam")  # the oracle only; our own modules are never skipped
model_targets = pytest.importorskip("pytorch_grad_cam.utils.model_targets")

DETECTOR = "fasterrcnn_mobilenet_v3_large_320_fpn"
SEGMENTER = "lraspp_mobilenet_v3_large"
SIDE = 160
TOLERANCE = 1e-4  # of the map's largest value: both sum the same float32 products in another order


class RawGradCAM(gradcam_lib.GradCAM):
    """The oracle's Grad-CAM, remembering the map of each layer before it is rectified, resized and scaled."""

    def get_cam_image(self, *args, **kwargs):
        self.raw = super().get_cam_image(*args, **kwargs)
        return self.raw


def oracle_map(net: nn.Module, module: nn.Module, x: torch.Tensor, target) -> np.ndarray:
    """[h, w]: the oracle's Grad-CAM at ``module``'s resolution before its pipeline rectifies it."""
    with RawGradCAM(model=net, target_layers=[module]) as cam:
        cam(input_tensor=x.clone(), targets=[target])
        return cam.raw[0]


def compare(scored, x: torch.Tensor, index: int, layer: str, theirs: np.ndarray) -> None:
    """Ours without the ReLU against the oracle's raw map, and with it against the rectified one."""
    assert np.abs(theirs).max() > 0, "a non-empty map, or the comparison says nothing"
    scale = float(np.abs(theirs).max())
    for relu, expected in ((False, theirs), (True, np.maximum(theirs, 0))):
        ours = explain(scored, x, "gradcam", target=index, layer=layer, relu=relu)
        assert ours.layer == layer
        mine = ours.layer_attribution[0, 0].detach().numpy()
        assert mine.shape == expected.shape
        difference = float(np.abs(mine - expected).max())
        assert difference <= TOLERANCE * scale, (relu, difference, scale)


@pytest.fixture(scope="module")
def detector():
    """A seeded Faster R-CNN fed 160-pixel images, every detection kept (random weights score ~0.011)."""
    torch.manual_seed(0)
    bundle = dense_zoo.from_state_dict(DETECTOR, dense_zoo.construct(DETECTOR).state_dict(), side=SIDE)
    bundle.model.roi_heads.score_thresh = 0.0
    bundle.score_threshold = 0.0
    generator = torch.Generator().manual_seed(1)
    return bundle, torch.rand(1, 3, SIDE, SIDE, generator=generator)


@pytest.mark.parametrize("layer", ["backbone.body.16", "backbone.body.6"])
def test_box_gradcam_matches_the_faster_rcnn_box_score_target(detector, layer):
    """Boxes a little off the detections (as a user draws them): on a detection's own box the IoU's gradient is
    exactly zero (both corners tie), so only an offset box checks that the IoU is added as grad-cam adds it.

    grad-cam takes the box of largest IoU over every label and then asks for the same label; ours looks among the
    target's own label only. The case is built so both pick the same detection: checked below."""
    bundle, x = detector
    detected = bundle.targets(bundle.predict(x))
    shift = torch.tensor([1.5, -1.0, 1.0, 2.0])
    targets = [BoxTarget(tuple((torch.tensor(t.box) + shift).tolist()), t.label, t.name) for t in detected[:3]]
    scored = bundle.scored(targets, x, with_iou=True)
    net = bundle.model
    module = dict(net.named_modules())[layer]
    with torch.no_grad():
        (found,) = net(x)
    for index in (0, 2):
        target = targets[index]
        box = torch.tensor(target.box)
        overlap = box_iou(box[None], found["boxes"])[0]
        best = int(overlap.argmax())
        assert int(found["labels"][best]) == target.label and 0.5 < float(overlap[best]) < 1  # the same box
        theirs = oracle_map(net, module, x, model_targets.FasterRCNNBoxScoreTarget([target.label], [box]))
        compare(scored, x, index, layer, theirs)


class Logits(nn.Module):
    """The segmenter's ``out`` tensor, as the oracle's targets read it (its tutorial wraps the model so too)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)["out"]


@pytest.fixture(scope="module")
def segmenter():
    torch.manual_seed(2)
    bundle = dense_zoo.from_state_dict(SEGMENTER, dense_zoo.construct(SEGMENTER, 4).state_dict(), side=128)
    generator = torch.Generator().manual_seed(3)
    return bundle, torch.randn(1, 3, 128, 128, generator=generator)


@pytest.mark.parametrize("layer", ["backbone.16", "backbone.6"])
def test_region_gradcam_matches_the_semantic_segmentation_target(segmenter, layer):
    """The sum of a class's logits over a region: a predicted class's mask, and a drawn square of another class."""
    bundle, x = segmenter
    prediction = bundle.predict(x)
    label = next(iter(prediction.shares))
    predicted = bundle.targets(prediction, reduction="sum")[0]
    drawn = np.zeros((128, 128), dtype=bool)
    drawn[20:60, 70:120] = True
    other = (label + 1) % len(bundle.categories)
    targets = [predicted, bundle.region_target(other, drawn, "sum")]
    scored = bundle.scored(targets, x)
    wrapped = Logits(bundle.model)
    module = dict(bundle.model.named_modules())[layer]
    for index, (target, mask) in enumerate(((label, prediction.classes == label), (other, drawn))):
        theirs = oracle_map(wrapped, module, x,
                            model_targets.SemanticSegmentationTarget(target, mask.astype(np.float32)))
        compare(scored, x, index, layer, theirs)
