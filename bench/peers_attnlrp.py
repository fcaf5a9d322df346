"""AttnLRP against LRP-eXplains-Transformers (lxt 2.1) on a seeded torchvision ViT (ViT-B/16's size; a 2-layer
32 px one with --quick), whatever CNN the subject is: transformers need their own model.

Two rows, one image per call on both sides (lxt has no batch setting), goal ours ≤ 1.0×:
- attention_rule=cp vs lxt.efficient's own torchvision-ViT map (``models/vit_torch.py`` cp_LRP: GELU identity,
  LayerNorm's σ constant, queries and keys cut off; gradient × input with plain linear layers), the classes patched
  for the call and restored after it;
- attention_rule=attnlrp vs the same ViT's forward written with lxt.explicit's rules (softmax, uniform matmul,
  ε linear, LayerNorm identity: the forward of tests/explainers/methods/test_attnlrp.py).
"""

from __future__ import annotations

import sys
import types

import torch
from common import agreement
from peerkit import describe, make_row, missing_row, verdict
from torch import nn

from explainers import explain


def _vit(tiny: bool, device) -> nn.Module:
    from torchvision.models import VisionTransformer

    torch.manual_seed(0)
    if tiny:
        model = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32,
                                  num_classes=10)
    else:
        model = VisionTransformer(image_size=224, patch_size=16, num_layers=12, num_heads=12, hidden_dim=768,
                                  mlp_dim=3072, num_classes=1000)
    nn.init.normal_(model.heads.head.weight, std=0.02)  # torchvision starts it at zero: nothing would reach back
    return model.eval().to(device)


def _lxt_efficient_patches():
    """lxt.efficient.patches, behind a stand-in for lxt.efficient.models (which imports names transformers 5
    removed)."""
    saved = sys.modules.get("lxt.efficient.models")
    stub = types.ModuleType("lxt.efficient.models")
    stub.get_default_map = lambda module: {}
    sys.modules["lxt.efficient.models"] = stub
    try:
        import lxt.efficient.patches as patches
    finally:
        if saved is None:
            sys.modules.pop("lxt.efficient.models", None)
        else:
            sys.modules["lxt.efficient.models"] = saved
    return patches


def rows(s, run, device) -> list[dict]:
    cases = ("attnlrp cp vs lxt efficient", "attnlrp attnlrp vs lxt explicit")
    try:
        patches = _lxt_efficient_patches()
        sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
        from tests.explainers.methods.test_attnlrp import lxt_vit
    except ImportError as exc:
        return [missing_row(s, "lxt", case, f"lxt not installed ({exc})") for case in cases]

    tiny = s.name == "tiny"
    model = _vit(tiny, device)
    size = 32 if tiny else 224
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)
    with torch.no_grad():
        target = int(model(x).argmax())
    subject = types.SimpleNamespace(name="vit_tiny" if tiny else "vit_b16")

    def lxt_cp():
        classes = {nn.GELU: patches.non_linear_forward, nn.LayerNorm: patches.layer_norm_forward,
                   nn.MultiheadAttention: patches.cp_multi_head_attention_forward}
        originals = {cls: cls.forward for cls in classes}
        try:
            for cls, forward in classes.items():
                cls.original_forward, cls.forward = cls.forward, forward
            inputs = x.clone().requires_grad_(True)
            (gradient,) = torch.autograd.grad(model(inputs)[:, target].sum(), inputs)
            return gradient * x
        finally:
            for cls, forward in originals.items():
                cls.forward = forward
                del cls.original_forward

    def lxt_explicit():
        flags = [(p, p.requires_grad) for p in model.parameters()]
        try:
            for p, _ in flags:
                p.requires_grad_(False)
            inputs = x.clone().requires_grad_(True)
            logits = lxt_vit(model, inputs, "attnlrp", [])
            seed = torch.zeros_like(logits)
            seed[:, target] = logits[:, target]
            (relevance,) = torch.autograd.grad(logits, inputs, seed)
            return relevance
        finally:
            for p, requires_grad in flags:
                p.requires_grad_(requires_grad)

    out = []
    for case, rule, peer, settings in (
        (cases[0], "cp", lxt_cp, "lxt.efficient torchvision-ViT map (cp_LRP), gradient × input, one image"),
        (cases[1], "attnlrp", lxt_explicit, "lxt.explicit.functional rules, stabilisers 1e-12, one image"),
    ):
        epsilon = 1e-12 if rule == "attnlrp" else 1e-6
        times, outputs = run({
            "ours": lambda r=rule, e=epsilon: explain(model, x, "attnlrp", target=target, attention_rule=r,
                                                      epsilon=e, batch_size=1),
            "lxt": peer,
        })
        agree = agreement(outputs["ours"].attribution, outputs["lxt"])
        out.append(make_row(subject, "lxt", case, times, "lxt", settings, verdict(agree), describe(agree)))
    return out
