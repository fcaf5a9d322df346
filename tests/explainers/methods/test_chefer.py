"""Chefer, Gur & Wolf's two transformer methods: the relevance rollout against a closed form written out by hand on a
two-block transformer with hand-set attention, class sensitivity (unlike rollout), batch and row invariance, every
transformer family of the attention catalogue, Swin refused where no attention spans the grid."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.swin_transformer import SwinTransformer

from explainers import SaliencyError, explain, explain_many, load_model
from explainers.digits.data import sample

from ..helpers import (
    assert_cancel_stops_cleanly,
    assert_untouched,
    hook_counts,
    small_convnet,
    snapshot,
    tiny_hugging_face_vit,
    tiny_torchvision_vit,
)

METHODS = ("chefer_generic", "transformer_attribution")
DIM, HEADS, CLASSES = 4, 2, 3


class Block(nn.Module):
    """x ← x + proj(concat_h A_h v_h), A_h = softmax(q kᵀ + log P_h): queries and keys are zero, so the attention
    is the hand-set P_h whatever the input."""

    def __init__(self, attention: torch.Tensor):
        super().__init__()
        self.qkv = nn.Linear(DIM, 3 * DIM)
        self.proj = nn.Linear(DIM, DIM)
        with torch.no_grad():
            self.qkv.weight[:2 * DIM] = 0
            self.qkv.bias[:2 * DIM] = 0
        self.register_buffer("log_attention", attention.log())

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(x).reshape(b, t, 3, HEADS, d // HEADS).permute(2, 0, 3, 1, 4)
        attention = (q @ k.transpose(-2, -1) + self.log_attention).softmax(dim=-1)
        return x + self.proj((attention @ v).transpose(1, 2).reshape(b, t, d))


class TwoBlocks(nn.Module):
    """A 4x4 one-channel image in 2x2 patches (4 tokens and a class token), two blocks, a head on the class token."""

    def __init__(self, first: torch.Tensor, second: torch.Tensor):
        super().__init__()
        self.embed = nn.Conv2d(1, DIM, 2, stride=2)
        self.cls = nn.Parameter(torch.randn(1, 1, DIM))
        self.blocks = nn.ModuleList([Block(first), Block(second)])
        self.head = nn.Linear(DIM, CLASSES)

    def tokens(self, x):
        return torch.cat([self.cls.expand(len(x), -1, -1), self.embed(x).flatten(2).transpose(1, 2)], dim=1)

    def forward(self, x):
        x = self.tokens(x)
        for block in self.blocks:
            x = block(x)
        return self.head(x[:, 0])


def by_hand(model: TwoBlocks, image: torch.Tensor, target: int, method: str) -> torch.Tensor:
    """A method's patch map [2, 2] for one image, written out: Ā_b = mean_h (∂s/∂A_b ⊙ W_b)⁺ for both blocks,
    R = (I + Ā₂)(I + Ā₁), the map R[0, patches]; W_b = A_b (generic) or the AttnLRP relevance R_{A_b}.

    ∂s/∂A by the chain rule (s = w·x₂[0] + b): a signal ρ at each block's output goes back through the projection
    (σʰ = ρ Woʰ), to the attention (σʰ vʰᵀ) and the values (Aʰᵀ σʰ, then Wvʰ), and through the residual unchanged.
    AttnLRP's relevance in gradient × input form (ε → 0) is the same walk but for two things: it starts from
    relevance sign(s) at the score (signal w / |s| at x₂[0], ε rule on the head), and the product A·v hands half its
    relevance to each factor (the uniform rule), so half the signal goes to A and half to v; the ε rule on the
    linear layers, the proportional rule on the residual sums pass the signal as the gradient does, and queries and
    keys (zero weights) get none. Then R_A = A ⊙ (signal at A)."""
    width = DIM // HEADS
    heads = [slice(h * width, (h + 1) * width) for h in range(HEADS)]
    lrp = method == "transformer_attribution"
    with torch.no_grad():
        x0 = model.tokens(image[None])[0]  # [5, DIM]
        tokens, blocks = [x0], []
        for block in model.blocks:
            wv, bv, wo = block.qkv.weight[2 * DIM:], block.qkv.bias[2 * DIM:], block.proj.weight
            x = tokens[-1]
            parts = [(wv[s], x @ wv[s].T + bv[s], wo[:, s], block.log_attention.exp()[h]) for h, s in enumerate(heads)]
            blocks.append(parts)
            tokens.append(x + sum((a @ v) @ wo_h.T for _, v, wo_h, a in parts) + block.proj.bias)
        score = tokens[-1][0] @ model.head.weight[target] + model.head.bias[target]

        def backward(share: float, start: torch.Tensor) -> list[list[torch.Tensor]]:
            """The signal at each block's attention (per head), walking back from ``start`` at x₂[0]."""
            signal = torch.zeros(5, DIM)
            signal[0] = start
            at_attention: list[list[torch.Tensor]] = []
            for parts in reversed(blocks):
                sigmas = [signal @ wo_h for _, _, wo_h, _ in parts]
                at_attention.insert(0, [share * sigma @ v.T for sigma, (_, v, _, _) in zip(sigmas, parts)])
                signal = signal + sum(share * (a.T @ sigma) @ wv_h for sigma, (wv_h, _, _, a) in zip(sigmas, parts))
            return at_attention

        w = model.head.weight[target]
        gradients = backward(1.0, w)
        weights = ([[a * g for g, (*_, a) in zip(signals, parts)] for signals, parts in
                    zip(backward(0.5, w / score.abs()), blocks)] if lrp
                   else [[a for *_, a in parts] for parts in blocks])
        bars = [sum((g * weight).clamp_min(0) for g, weight in zip(grads, weighing)) / HEADS
                for grads, weighing in zip(gradients, weights)]
        relevance = (torch.eye(5) + bars[1]) @ (torch.eye(5) + bars[0])
    return relevance[0, 1:].reshape(2, 2)


def stochastic(generator: torch.Generator) -> torch.Tensor:
    return torch.softmax(2 * torch.randn(HEADS, 5, 5, generator=generator), dim=-1)


def one_hot(columns: list[int]) -> torch.Tensor:
    """Each query i attends only to key columns[i], in both heads."""
    return F.one_hot(torch.tensor(columns), 5).float().expand(HEADS, 5, 5).clone()


ATTENTIONS = {
    "stochastic": lambda g: (stochastic(g), stochastic(g)),
    # block 1 keeps every token to itself, block 2 sends the class token to patch 3 (grid cell (1, 0))
    "one_hot": lambda g: (one_hot([0, 1, 2, 3, 4]), one_hot([3, 1, 2, 3, 4])),
}


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("attention", ATTENTIONS)
def test_the_map_is_the_closed_form_on_two_hand_set_blocks(attention, method):
    generator = torch.Generator().manual_seed(3)
    torch.manual_seed(3)
    model = TwoBlocks(*ATTENTIONS[attention](generator)).eval()
    images = torch.randn(2, 1, 4, 4, generator=generator)
    # two targets sharing one call (one forward, a backward each), a different class per row in the first
    targets = [[0, 2], [1, 1]]
    results = explain_many(model, images, method, targets, seed=0)
    for target, result in zip(targets, results.values(), strict=True):
        for row, cls in enumerate(target):
            torch.testing.assert_close(result.layer_attribution[row, 0], by_hand(model, images[row], cls, method),
                                       atol=1e-5, rtol=1e-4)
    if attention == "one_hot":
        # the class token reads only patch 3 in block 2, which only reads itself in block 1: all relevance is there
        maps = torch.stack([by_hand(model, images[0], c, method) for c in range(CLASSES)])
        assert (maps.flatten(1)[:, [0, 1, 3]] == 0).all() and (maps[:, 1, 0] > 0).any()


def torchvision_vit(classes: int = 5) -> nn.Module:
    torch.manual_seed(0)
    return tiny_torchvision_vit(2, classes).eval()


def hugging_face_vit(implementation: str) -> nn.Module:
    return tiny_hugging_face_vit(2, implementation)


TINY = {"img_size": 32, "patch_size": 8, "depth": 2, "embed_dim": 16, "num_heads": 2, "num_classes": 5}
FAMILIES = {
    "torchvision_vit": torchvision_vit,
    "timm_vit": lambda: timm.create_model("vit_tiny_patch16_224", **TINY),
    "timm_deit_distilled": lambda: timm.create_model("deit_tiny_distilled_patch16_224", **TINY),
    "timm_beit": lambda: timm.create_model("beit_base_patch16_224", **TINY),
    "hugging_face_vit_eager": lambda: hugging_face_vit("eager"),
    "hugging_face_vit_sdpa": lambda: hugging_face_vit("sdpa"),
    "torchvision_swin": lambda: SwinTransformer(patch_size=[4, 4], embed_dim=16, depths=[2, 2], num_heads=[2, 2],
                                                window_size=[4, 4], num_classes=5),
    "timm_swin": lambda: timm.create_model("swin_tiny_patch4_window7_224", img_size=32, patch_size=4, window_size=4,
                                           depths=(2, 2), num_heads=(2, 2), embed_dim=16, num_classes=5),
}


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("family", FAMILIES)
def test_every_transformer_family_gives_one_finite_map_per_row_batch_size_aside(family, method):
    """Same map for any batch size and for a row alone; the model and its hooks left as found. Swin at 32 px: its
    last stage is one 4x4 window, global attention the layout finds."""
    torch.manual_seed(0)
    model = FAMILIES[family]().eval()
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    before, hooks = snapshot(model), hook_counts(model)
    whole = explain(model, x, method, target=[1, 2, 3], batch_size=3, seed=0)
    assert whole.attribution.shape == (3, 1, 32, 32) and whole.layer_attribution.shape == (3, 1, 4, 4)
    assert torch.isfinite(whole.attribution).all() and whole.attribution.abs().sum() > 0
    split = explain(model, x, method, target=[1, 2, 3], batch_size=2, seed=0)
    alone = explain(model, x[2:], method, target=3, seed=0)
    torch.testing.assert_close(split.attribution, whole.attribution, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(alone.attribution[0], whole.attribution[2], atol=1e-5, rtol=1e-4)
    assert_untouched(model, before)
    assert hook_counts(model) == hooks


@pytest.mark.parametrize("method", METHODS)
def test_two_targets_give_two_maps_where_rollout_gives_one(method):
    model = torchvision_vit()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    ours = explain_many(model, x, [method, "attention_rollout"], [0, 4], seed=0)
    first, second = ours[(method, 0)].attribution, ours[(method, 4)].attribution
    assert (first - second).abs().amax() > 0.05 * first.abs().amax()
    torch.testing.assert_close(ours[("attention_rollout", 0)].attribution, ours[("attention_rollout", 4)].attribution)


@pytest.mark.parametrize("method", METHODS)
def test_swin_without_a_global_stage_is_refused_naming_its_windows(method):
    torch.manual_seed(0)
    model = FAMILIES["torchvision_swin"]().eval()
    with pytest.raises(SaliencyError, match=r"needs attention that spans the whole patch grid.*over windows"):
        explain(model, torch.randn(1, 3, 64, 64), method, target=0)  # last stage: four 4x4 windows


@pytest.mark.parametrize("method", METHODS)
def test_a_convolutional_network_is_refused_before_any_pass(method):
    with pytest.raises(SaliencyError, match="needs a vision transformer"):
        explain(small_convnet(), torch.randn(1, 3, 16, 16), method, target=0)


def authors_recipe(model: nn.Module, x: torch.Tensor, target: int) -> torch.Tensor:
    """The generic map as the authors' notebook computes it on a timm ViT: hooks keep each block's attention (the
    output of ``attn_drop``, in the graph) and its gradient, then R ← R + mean_h[(∇A ⊙ A)⁺]·R, row 0 over patches."""
    kept = []
    handles = [block.attn.attn_drop.register_forward_hook(lambda m, a, out: kept.append(out))
               for block in model.blocks]
    try:
        score = model(x)[:, target].sum()
    finally:
        for handle in handles:
            handle.remove()
    gradients = torch.autograd.grad(score, kept)
    relevance = torch.eye(kept[0].shape[-1]).expand(len(x), -1, -1)
    for attention, gradient in zip(kept, gradients, strict=True):
        relevance = relevance + (gradient * attention).clamp(min=0).mean(dim=1) @ relevance
    return relevance[:, 0, 1:].reshape(len(x), 1, 4, 4).detach()


def test_the_generic_map_is_the_authors_recipe_on_a_timm_vit():
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", **{**TINY, "depth": 3}).eval()
    for block in model.blocks:
        block.attn.fused_attn = False  # the recipe's hooks need the probabilities as a module's output
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    for target in (0, 3):
        ours = explain(model, x, "chefer_generic", target=target, seed=0).layer_attribution
        torch.testing.assert_close(ours, authors_recipe(model, x, target), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("method", METHODS)
def test_cancel_stops_cleanly_and_a_frozen_model_stays_frozen(method):
    model = torchvision_vit()
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    assert_cancel_stops_cleanly(model, x, method, batch_size=1)
    model.requires_grad_(False)  # the gradients w.r.t. the attention need no parameter to require them
    frozen = explain(model, x[:1], method, target=1, seed=0)
    assert frozen.attribution.abs().sum() > 0
    assert not any(p.requires_grad for p in model.parameters())


def two_digit_composites(count: int, seed: int = 30_000) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` pictures [count, 1, 32, 32] of two different procedural digits side by side, each a 16-column crop
    of a 32 px sample centred on its ink (samples whose ink is at most 14 px wide, so the crop holds it whole), and
    their labels [count, 2] (left, right)."""
    images, labels, held, index = [], [], None, 0
    while len(images) < count:
        drawn = sample(index, seed)
        index += 1
        x0, _, x1, _ = drawn.box
        if x1 - x0 > 14:
            continue
        left = int(round(min(max((x0 + x1) / 2 - 8, 0), 16)))
        crop = (drawn.image[:, left:left + 16], drawn.label)
        if held is None or held[1] == crop[1]:
            held = crop
            continue
        images.append(np.concatenate([held[0], crop[0]], axis=1))
        labels.append((held[1], crop[1]))
        held = None
    return torch.from_numpy(np.stack(images)).float()[:, None] / 255, torch.tensor(labels)


def test_on_two_digits_each_digits_class_puts_more_mass_on_its_half_than_rollout_does():
    """The shipped digits ViT on 20 composites: the generic map of each digit's class holds a larger share of its
    mass on that digit's half than class-agnostic rollout does (which, one map for both, averages one half)."""
    bundle = load_model("vit_digits")
    pixels, labels = two_digit_composites(20)
    x = bundle.normalize(pixels.repeat(1, 3, 1, 1))
    results = explain_many(bundle, x, ["chefer_generic", "attention_rollout"], [labels[:, 0].tolist(),
                                                                               labels[:, 1].tolist()], seed=0)

    def share(method: str) -> torch.Tensor:  # [2 digits, 20]: the share of the map's mass on the digit's half
        maps = [result.layer_attribution[:, 0].clamp_min(0) for (name, _), result in results.items()
                if name == method]
        return torch.stack([maps[side][..., 4 * side:4 * side + 4].sum((1, 2)) / maps[side].sum((1, 2))
                            for side in (0, 1)])

    ours, rollout = share("chefer_generic"), share("attention_rollout")
    assert float(ours.mean()) > float(rollout.mean()) + 0.03, (float(ours.mean()), float(rollout.mean()))
    assert float((ours > 0.5).float().mean()) > float((rollout > 0.5).float().mean())
