"""Planted detection and segmentation models in torchvision's output conventions, and a scene they read.

The evidence is colour: class 1 is red, class 2 is blue. Both models are small, deterministic (hand-set weights)
and scriptable, so the same module serves the backend's tests, a TorchScript upload in the browser tests and the
CLI's. The ground truth is known: an explanation of the red box must peak inside the red square.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torchvision.ops import nms

CATEGORIES = ["__background__", "red", "blue"]
SIDE = 64


def scene(side: int = SIDE, red: tuple[int, int, int, int] = (6, 8, 26, 28),
          blue: tuple[int, int, int, int] = (36, 34, 58, 56)) -> torch.Tensor:
    """[1, 3, side, side] in [0, 1]: grey background, a red square at ``red`` and a blue one at ``blue``
    (x0, y0, x1, y1, exclusive ends), each with a little texture so gradients differ inside them."""
    generator = torch.Generator().manual_seed(7)
    pixels = 0.45 + 0.05 * torch.rand(1, 3, side, side, generator=generator)
    for (x0, y0, x1, y1), colour in ((red, (0.9, 0.1, 0.1)), (blue, (0.1, 0.15, 0.9))):
        for c, value in enumerate(colour):
            pixels[0, c, y0:y1, x0:x1] = value + 0.05 * torch.rand(y1 - y0, x1 - x0, generator=generator)
    return pixels.clamp(0, 1)


def scene_image(side: int = SIDE) -> Image.Image:
    return Image.fromarray((scene(side)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))


def _colour_evidence() -> nn.Conv2d:
    """A 1x1 convolution from RGB to red and blue evidence: R - (G + B) / 2 and B - (R + G) / 2."""
    conv = nn.Conv2d(3, 2, 1)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[1.0, -0.5, -0.5], [-0.5, -0.5, 1.0]]).view(2, 3, 1, 1))
        conv.bias.zero_()
    return conv


class Body(nn.Module):
    """Colour evidence, rectified, smoothed by a 3x3 mean, at stride 2: the planted "backbone"."""

    def __init__(self):
        super().__init__()
        self.colour = _colour_evidence()
        self.relu = nn.ReLU()
        self.smooth = nn.Conv2d(2, 2, 3, padding=1, groups=2, bias=False)
        with torch.no_grad():
            self.smooth.weight.fill_(1.0 / 9.0)
        self.pool = nn.AvgPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.smooth(self.relu(self.colour(x))))


class Backbone(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = Body()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class PlantedDetector(nn.Module):
    """A detector in torchvision's convention: square anchors of ``sizes`` on a stride-2 grid; the score of class
    c for an anchor is sigmoid(gain * (mean evidence of c inside it − offset)); per class, boxes above
    ``score_thresh`` after NMS (IoU 0.05: one box per object), best first, at most ``detections`` of them."""

    def __init__(self, sizes: tuple[int, ...] = (16, 20, 24), gain: float = 12.0, offset: float = 0.5,
                 score_thresh: float = 0.05, detections: int = 10):
        super().__init__()
        self.backbone = Backbone()
        self.sizes: list[int] = list(sizes)
        self.gain = gain
        self.offset = offset
        self.score_thresh = score_thresh
        self.detections = detections

    def _image(self, evidence: torch.Tensor) -> dict[str, torch.Tensor]:
        boxes: list[torch.Tensor] = []
        scores: list[torch.Tensor] = []
        labels: list[torch.Tensor] = []
        for size in self.sizes:
            cells = size // 2
            pooled = F.avg_pool2d(evidence[None], cells, stride=1)[0]  # [2, h', w']
            h, w = pooled.shape[-2], pooled.shape[-1]
            ys = torch.arange(h, device=evidence.device, dtype=evidence.dtype) * 2.0
            xs = torch.arange(w, device=evidence.device, dtype=evidence.dtype) * 2.0
            grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
            anchor = torch.stack([grid_x, grid_y, grid_x + size, grid_y + size], dim=-1).reshape(-1, 4)
            for c in range(2):
                boxes.append(anchor)
                scores.append(torch.sigmoid(self.gain * (pooled[c].reshape(-1) - self.offset)))
                labels.append(torch.full((anchor.shape[0],), c + 1, dtype=torch.long, device=evidence.device))
        all_boxes = torch.cat(boxes)
        all_scores = torch.cat(scores)
        all_labels = torch.cat(labels)
        keep_boxes: list[torch.Tensor] = []
        keep_scores: list[torch.Tensor] = []
        keep_labels: list[torch.Tensor] = []
        for label in range(1, 3):
            chosen = (all_labels == label) & (all_scores > self.score_thresh)
            b = all_boxes[chosen]
            s = all_scores[chosen]
            kept = nms(b.detach(), s.detach(), 0.05)
            keep_boxes.append(b[kept])
            keep_scores.append(s[kept])
            keep_labels.append(torch.full((kept.shape[0],), label, dtype=torch.long, device=evidence.device))
        out_scores = torch.cat(keep_scores)
        order = torch.argsort(out_scores.detach(), descending=True)[: self.detections]
        return {"boxes": torch.cat(keep_boxes)[order], "labels": torch.cat(keep_labels)[order],
                "scores": out_scores[order]}

    def forward(self, images: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        evidence = self.backbone(images)
        return [self._image(evidence[i]) for i in range(evidence.shape[0])]


class PlantedSegmenter(nn.Module):
    """A segmenter in torchvision's convention: ``{"out": [N, 3, H, W]}``, background a constant logit, red and
    blue their colour evidence (from the same planted backbone), upsampled to the input's size."""

    def __init__(self, background: float = 0.2, gain: float = 4.0):
        super().__init__()
        self.backbone = Backbone()
        self.classifier = nn.Conv2d(2, 3, 1)
        with torch.no_grad():
            self.classifier.weight.copy_(torch.tensor([[0.0, 0.0], [gain, 0.0], [0.0, gain]]).view(3, 2, 1, 1))
            self.classifier.bias.copy_(torch.tensor([background * gain, 0.0, 0.0]))

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self.classifier(self.backbone(images))
        return {"out": F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)}


class NeitherConvention(nn.Module):
    """Returns a dict with none of the expected keys: the loaders must say what they expected."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3, padding=1)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"features": self.conv(images)}
