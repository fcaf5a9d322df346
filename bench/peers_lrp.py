"""LRP against zennit 0.5.1, same composite and canonizers, same input, one row per composite timed.

zennit has no batch setting (one image per call here, as ours): one row per composite, goal ours ≤ 1.0×.
Canonizers on zennit's side: ResNetCanonizer for torchvision ResNets, SequentialMergeBatchNorm otherwise.
zennit has no canonizer for EfficientNet-Lite's residual ``out + x`` (its gradient passes the relevance to both
summands whole), so on efficientnet_lite0 the maps are expected to differ; the time still compares like for like.
"""

from __future__ import annotations

import torch
from common import agreement
from peerkit import EXPLAINED, describe, make_row, missing_row, verdict

from explainers import explain

COMPOSITES = ("epsilon_plus_flat", "epsilon_gamma_box")


def _bounds(s):
    """The z^B box ours uses: pixels 0 and 1 through the bundle's normalisation, else the input's own range."""
    normalize = getattr(s.explained, "normalize", None)
    if normalize is None:
        return s.x.amin(), s.x.amax()
    pixels = torch.zeros_like(s.x[:1], device="cpu", dtype=torch.float32)
    black, white = normalize(pixels), normalize(pixels + 1)
    low = torch.minimum(black, white).amin(dim=(0, 2, 3), keepdim=True).to(s.x.device, s.x.dtype)
    high = torch.maximum(black, white).amax(dim=(0, 2, 3), keepdim=True).to(s.x.device, s.x.dtype)
    return low, high


def rows(s, run, device) -> list[dict]:
    try:
        from torchvision.models import ResNet
        from zennit.attribution import Gradient
        from zennit.canonizers import SequentialMergeBatchNorm
        from zennit.composites import EpsilonGammaBox, EpsilonPlusFlat
        from zennit.torchvision import ResNetCanonizer
    except ImportError as exc:
        return [missing_row(s, "zennit", f"lrp {c} vs zennit", f"zennit not installed ({exc})") for c in COMPOSITES]

    x, target, model = s.x, s.target, s.model
    canonizer = ResNetCanonizer if isinstance(model, ResNet) else SequentialMergeBatchNorm
    low, high = _bounds(s)
    peers = {
        "epsilon_plus_flat": lambda: EpsilonPlusFlat(canonizers=[canonizer()]),
        "epsilon_gamma_box": lambda: EpsilonGammaBox(low=low, high=high, canonizers=[canonizer()]),
    }
    residual_outside = s.name == "efficientnet_lite0"

    def zennit(composite):
        with torch.no_grad():
            logits = model(x)
        seed = torch.zeros_like(logits)
        seed[:, target] = logits[:, target]  # relevance starts as the logit, as ours does
        with Gradient(model=model, composite=peers[composite]()) as attributor:
            return attributor(x, seed)[1]

    out = []
    for composite in COMPOSITES:
        times, outputs = run({
            "ours": lambda c=composite: explain(s.explained, x, "lrp", target=target, composite=c, batch_size=1),
            "zennit": lambda c=composite: zennit(c),
        })
        agree = agreement(outputs["ours"].attribution, outputs["zennit"])
        expected = None
        if residual_outside:
            expected = ("zennit residual", "zennit 0.5.1 has no canonizer for EfficientNet-Lite's residual sums: "
                        "its gradient hands each summand the whole relevance; ours shares it in proportion")
            EXPLAINED.setdefault(*expected)
        out.append(make_row(s, "zennit", f"lrp {composite} vs zennit", times, "zennit",
                            f"{canonizer.__name__}, relevance seeded with the logit, one image per call",
                            verdict(agree, expected), describe(agree)))
    return out
