"""LeGrad against torchcam 0.5's LeGrad: the rows bench/peers.py adds for explainers/methods/legrad.py.

torchcam's LeGrad supports torchvision's VisionTransformer only, so these rows bring their own subject instead of
the section's CNN: a seeded ViT-B/16 (a 64 px two-block ViT in --quick mode), its head drawn at random (torchvision
starts it at zero, and no gradient would reach the attention). torchcam has no batch setting: it explains whatever
batch it is given, so the two rows are one image and a batch, each library given the same rows, every block, the
unnormalised map (ours is raw; torchcam's normalized=False). Goal ≤ 1.0× on both.
"""

from __future__ import annotations

import torch
from common import agreement
from peerkit import Subject, describe, make_row, missing_row, verdict
from torch import nn
from torchvision.models import VisionTransformer, vit_b_16

import explainers.methods.legrad  # noqa: F401  (registers the method where peers.py has not imported it yet)
from explainers import explain


def seeded_vit(tiny: bool, device) -> tuple[VisionTransformer, int]:
    """(model, input size): ViT-B/16 at 224 px, or a two-block ViT at 64 px for --quick."""
    torch.manual_seed(0)
    if tiny:
        model, size = VisionTransformer(image_size=64, patch_size=16, num_layers=2, num_heads=2, hidden_dim=32,
                                        mlp_dim=64, num_classes=10), 64
    else:
        model, size = vit_b_16(weights=None), 224
    nn.init.normal_(model.heads.head.weight, std=0.02)
    return model.eval().to(device), size


def rows(s: Subject, run, device) -> list[dict]:
    case = "legrad vs torchcam LeGrad"
    try:
        from torchcam.methods import LeGrad
    except ImportError as exc:
        return [missing_row(s, "torchcam", case, f"torchcam not importable: {exc}")]
    tiny = s.name == "tiny"
    model, size = seeded_vit(tiny, device)
    name = "tiny ViT (2 blocks, 64 px)" if tiny else "ViT-B/16 (seeded)"
    subject = Subject(name=name, label=name, model=model, explained=model, x=torch.empty(0), layer="", fc=None,
                      settings=s.settings)
    batch = 2 if tiny else (16 if device.type == "cuda" else 4)
    found = []
    for count in (1, batch):
        x = torch.randn(count, 3, size, size, generator=torch.Generator().manual_seed(1)).to(device)
        with torch.no_grad():
            classes = model(x).argmax(dim=1).tolist()

        def ours(x=x, classes=classes):
            return explain(model, x, "legrad", target=classes, batch_size=len(x)).layer_attribution[:, 0]

        def theirs(x=x, classes=classes):
            with LeGrad(model, list(model.encoder.layers)) as extractor:
                scores = model(x)
                return extractor(classes, scores, normalized=False)[0]

        times, outputs = run({"ours": ours, "torchcam": theirs})
        agree = agreement(outputs["ours"], outputs["torchcam"])
        rows_said = "one image" if count == 1 else f"a batch of {count}"
        peer = (f"every block, normalized=False, {rows_said} (it has no batch setting); ours: batch_size={count}, "
                "the top class of each image")
        found.append(make_row(subject, "torchcam", f"{case}, {rows_said}", times, "torchcam", peer, verdict(agree),
                              describe(agree)))
    return found
