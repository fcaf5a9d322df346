"""Explaining a detected box and a segmented region against pytorch-grad-cam's targets: the rows bench/peers.py adds
for explainers/dense (issue 21).

The peer explains a detection with ``GradCAM`` and ``FasterRCNNBoxScoreTarget`` and a segmentation region with
``GradCAM`` and ``SemanticSegmentationTarget`` (its model wrapped to return ``out``). Ours is ``explain(scored,
x, "gradcam")`` on the scored bundle (box targets with ``with_iou=True``, the peer's score; a region with the
sum). The models are built here, seeded (their COCO weights are not cached offline), once per process, whatever
the subject: a Faster R-CNN with a MobileNetV3 FPN backbone at its own 320 px (every detection kept, so the seeded
head's boxes are there to explain) and an LR-ASPP at 256 px, both on the cat sample. The first subject's run
reports them; later subjects add nothing.
"""

from __future__ import annotations

import torch
from common import agreement, minmax, sample_pixels
from peerkit import SAMPLE, Subject, describe, make_row, missing_row, verdict
from torch import nn

from explainers import explain
from explainers.models import dense_zoo

DETECTOR = "fasterrcnn_mobilenet_v3_large_320_fpn"
SEGMENTER = "lraspp_mobilenet_v3_large"
SEGMENTER_SIZE = 256
_DONE: set[str] = set()


class _Out(nn.Module):
    """The peer's segmentation wrapper: the model's ``out`` tensor."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x)["out"]


def _subject(s: Subject, name: str, label: str, bundle, x) -> Subject:
    return Subject(name, label, bundle.model, bundle, x, bundle.default_layer, None, s.settings)


def rows(s: Subject, run, device) -> list[dict]:
    if _DONE:
        return []
    _DONE.add(s.name)
    try:
        from pytorch_grad_cam import GradCAM
        from pytorch_grad_cam.utils.model_targets import FasterRCNNBoxScoreTarget, SemanticSegmentationTarget
    except ImportError as exc:
        why = f"grad-cam not importable: {exc}"
        return [missing_row(s, "pytorch-grad-cam", case, why) for case in
                ("gradcam on a box vs FasterRCNNBoxScoreTarget", "gradcam on a region vs SemanticSegmentationTarget")]
    result = []

    # -- a detected box
    torch.manual_seed(0)
    net = dense_zoo.construct(DETECTOR).eval().to(device)
    net.roi_heads.score_thresh = 0.0
    categories = [f"class {i}" for i in range(91)]
    bundle = dense_zoo._bundle(DETECTOR, net, categories, "seeded")
    bundle.score_threshold = 0.0
    x = sample_pixels(SAMPLE, bundle.input_size, device)
    prediction = bundle.predict(x)
    box = bundle.targets(prediction)[0]
    scored = bundle.scored([box], x, with_iou=True)
    sub = _subject(s, DETECTOR, f"{DETECTOR}, seeded, {bundle.input_size} px", scored, x)
    layer = scored.default_layer
    module = net.get_submodule(layer)
    peer_target = [FasterRCNNBoxScoreTarget(labels=[box.label], bounding_boxes=[torch.tensor(box.box)])]

    def peer_box():
        with GradCAM(net, [module]) as cam:
            return cam(input_tensor=x, targets=peer_target)

    times, outputs = run({"ours": lambda: explain(scored, x, "gradcam", target=0, layer=layer),
                          "pytorch-grad-cam": peer_box})
    agree = agreement(minmax(outputs["ours"].attribution[0, 0]), outputs["pytorch-grad-cam"][0])
    result.append(make_row(sub, "pytorch-grad-cam", "gradcam on a box vs GradCAM + FasterRCNNBoxScoreTarget", times,
                           "pytorch-grad-cam", f"layer {layer}, box {box.name}, IoU added to the score",
                           verdict(agree), describe(agree)))

    # -- a segmented region
    torch.manual_seed(0)
    seg = dense_zoo.construct(SEGMENTER).eval().to(device)
    seg_bundle = dense_zoo._bundle(SEGMENTER, seg, [f"class {i}" for i in range(21)], "seeded", side=SEGMENTER_SIZE)
    xs = seg_bundle.normalize(sample_pixels(SAMPLE, SEGMENTER_SIZE, device))
    region = seg_bundle.targets(seg_bundle.predict(xs))[0]
    seg_scored = seg_bundle.scored([region], xs)
    sub = _subject(s, SEGMENTER, f"{SEGMENTER}, seeded, {SEGMENTER_SIZE} px", seg_scored, xs)
    layer = seg_scored.default_layer
    wrapped = _Out(seg).eval()
    peer_region = [SemanticSegmentationTarget(region.label, region.mask_pixels.astype("float32"))]

    def peer_seg():
        with GradCAM(wrapped, [seg.get_submodule(layer)]) as cam:
            return cam(input_tensor=xs, targets=peer_region)

    times, outputs = run({"ours": lambda: explain(seg_scored, xs, "gradcam", target=0, layer=layer),
                          "pytorch-grad-cam": peer_seg})
    agree = agreement(minmax(outputs["ours"].attribution[0, 0]), outputs["pytorch-grad-cam"][0])
    result.append(make_row(sub, "pytorch-grad-cam", "gradcam on a region vs GradCAM + SemanticSegmentationTarget",
                           times, "pytorch-grad-cam", f"layer {layer}, {region.name}, sum of the class's logits",
                           verdict(agree), describe(agree)))
    return result
