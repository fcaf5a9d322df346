"""Chefer, Gur & Wolf's generic attention explainability (arXiv:2103.15679) against the authors' way, written here
in plain PyTorch: no installed library implements it, so the peer is their notebook's recipe (a forward hook on each
block's attention keeps the probabilities and a tensor hook their gradient, one backward, then the rollout
R ← R + E_h[(∇A ⊙ A)⁺]·R), with ``torch.autograd.grad`` for the backward (no parameter gradients, which the
notebook's ``.backward()`` would also compute: the peer at its fastest).

The subjects of bench/peers.py are CNNs; the rows run on a seeded timm ViT instead (vit_base_patch16_224 from its
config, no weights; ViT-Tiny-sized at 64 px under --quick), explicit attention (``fused_attn`` off, which the hooks
need), on the subject's image and jittered copies of it. Two rows: the peer batched over every image in one call
(its best), and one image per call as the notebook runs it (goal ours ≤ 0.5× there).

Transformer attribution (arXiv:2012.09838) has no row with a time: the authors' code is a ViT rebuilt from their own
relprop layers (α1β0 on linear layers), a different LRP from the AttnLRP ours takes R_A from, and the one installed
AttnLRP library (lxt 2.1) patches torchvision's ViT with CP-LRP inside the attention, which puts no relevance on the
probabilities at all; neither would compute the same map, so neither is a fair peer (the row says so).
"""

from __future__ import annotations

import timm
import torch
import torch.nn.functional as F
from common import agreement
from peerkit import describe, make_row, missing_row, verdict

from explainers import explain

ROWS = {"tiny": 2}  # images per row; 8 otherwise
NO_PEER = ("no fair peer: the authors' relprop ViT uses other LRP rules (α1β0), lxt's torchvision ViT patch is CP-LRP "
           "(no relevance at the attention); tests check ours against a closed form instead")
ABOUT = "hooks on attn_drop + autograd.grad, rollout R ← R + Ā·R (the authors' notebook)"


def vision_transformer(s, device) -> tuple[torch.nn.Module, torch.Tensor]:
    """A seeded timm ViT and ``rows`` images: the subject's, resized to its input, and seeded jittered copies."""
    torch.manual_seed(0)
    if s.name == "tiny":
        model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=64, depth=4, num_classes=10)
        size = 64
    else:
        model = timm.create_model("vit_base_patch16_224", pretrained=False)
        size = 224
    for block in model.blocks:
        block.attn.fused_attn = False  # the peer's hooks need the probabilities as a module's output
    model = model.eval().to(device)
    image = F.interpolate(s.x[:1].float(), size=(size, size), mode="bilinear", align_corners=False)
    count = ROWS.get(s.name, 8)
    noise = torch.randn((count - 1, *image.shape[1:]), generator=torch.Generator().manual_seed(0)).to(device)
    return model, torch.cat([image, image + 0.1 * noise]).contiguous()


def peer_generic(model, x, target: int) -> torch.Tensor:
    """The notebook's generic relevance [N, 1, h, w] for ``target``: hooks keep each block's attention and its
    gradient, then the rollout over the class token's row."""
    attentions = []
    handles = [block.attn.attn_drop.register_forward_hook(lambda m, a, out: attentions.append(out))
               for block in model.blocks]
    try:
        with torch.enable_grad():
            logits = model(x.detach().requires_grad_(True))
            gradients = torch.autograd.grad(logits[:, target].sum(), attentions)
    finally:
        for handle in handles:
            handle.remove()
    tokens = attentions[0].shape[-1]
    relevance = torch.eye(tokens, device=x.device).expand(len(x), tokens, tokens)
    for attention, gradient in zip(attentions, gradients, strict=True):
        cam = (gradient * attention).clamp(min=0).mean(dim=1)
        relevance = relevance + torch.bmm(cam, relevance)
    patches = relevance[:, 0, 1:]
    side = int(round(patches.shape[-1] ** 0.5))
    return patches.detach().reshape(-1, 1, side, side)


def rows(s, run, device) -> list[dict]:
    model, x = vision_transformer(s, device)
    with torch.no_grad():
        target = int(model(x[:1]).argmax())
    label = f"timm ViT (seeded, {x.shape[-1]} px, {len(x)} images)"
    out = []
    for case, peer in (
        ("batched", lambda: peer_generic(model, x, target)),
        ("one image per call, goal 0.5", lambda: torch.cat([peer_generic(model, x[i:i + 1], target)
                                                            for i in range(len(x))])),
    ):
        times, outputs = run({
            "ours": lambda: explain(model, x, "chefer_generic", target=target, batch_size=len(x)),
            "authors_recipe": peer,
        })
        agree = agreement(outputs["ours"].layer_attribution, outputs["authors_recipe"])
        row = make_row(s, "plain PyTorch", f"chefer_generic vs authors' recipe, {case}; {label}", times,
                       "authors_recipe", ABOUT, verdict(agree), describe(agree))
        if "goal 0.5" in case:
            row["goal"] = 0.5
            row["met"] = "yes" if row["ratio"] <= 0.5 else "no"
        out.append(row)
    out.append(missing_row(s, "plain PyTorch", "transformer_attribution vs the authors' code", NO_PEER))
    return out
