"""LeGrad: the gradient of each block's own prediction with respect to that block's attention."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..attention import TokenLayout, attention_probabilities, find_layout, patch_map
from ..core import Attribution, Call, as_logits
from ..errors import SaliencyError
from ..hooks import HookSet
from ..registry import NEEDS_ATTENTION, NEEDS_MODEL, ONE_PASS, Param, Reference, Sanity, register

BOUSSELHAM = Reference("Bousselham, Boggust, Chaybouti, Strobelt & Kuehne", 2024,
                       "LeGrad: An Explainability Method for Vision Transformers via Feature Formation Sensitivity",
                       "2404.03214")


def _owner_depth(layout: TokenLayout, index: int) -> int:
    """How many dotted parts name the outermost module that runs attention ``index`` and no other one."""
    parts = layout.sites[index].name.split(".")
    others = [site.name for i, site in enumerate(layout.sites) if i != index]
    for depth in range(1, len(parts) + 1):
        prefix = ".".join(parts[:depth])
        if not any(name == prefix or name.startswith(prefix + ".") for name in others):
            return depth
    return len(parts)


def block_names(layout: TokenLayout, chosen: tuple[int, ...]) -> list[str]:
    """The module whose output is each chosen attention's block output (its tokens after attention and MLP).

    Found from the forward, not from names: a block is the outermost module that runs one attention and no
    other. The last block is taken at the nesting depth of the one before it (a single-attention model: the
    outermost such module), because nothing after it runs attention to bound it (``encoder`` would be too far,
    its final norm included)."""
    last = layout.global_sites[-1]
    depth = _owner_depth(layout, last - 1 if last >= 1 else last)
    names = []
    for index in chosen:
        name = layout.sites[index].name
        parts = name.split(".")
        if not name or len(parts) < depth:
            raise SaliencyError(
                f"LeGrad needs each attention inside its own block module; attention {index} runs in "
                f"{name or 'the model itself'!r}. Pick attention rollout or a CAM on tokens")
        names.append(".".join(parts[:depth]))
    if len(set(names)) != len(names):
        raise SaliencyError(f"LeGrad could not tell this transformer's blocks apart ({', '.join(names)}); pick "
                            "attention rollout or a CAM on tokens")
    return names


def _tokens_of(output):
    return output[0] if isinstance(output, (tuple, list)) else output


@register(
    "legrad",
    display_name="LeGrad",
    family="Attention",
    reference=BOUSSELHAM,
    summary=(
        "Reads the class score off every block's tokens through the model's own final norm and head, and keeps "
        "the positive gradients of that score with respect to the block's attention, averaged over heads, "
        "queries and blocks: which patches each layer's prediction is sensitive to attending to."
    ),
    weaknesses=(
        "Needs global attention over the patch grid (every ViT, DeiT, BEiT block; only Swin's last stage, and only "
        "at sizes where it is one window). Ignores negative evidence (ReLU). The per-block score reads the mean "
        "token through a head trained on the class token or the pooled tokens of the last block only."
    ),
    formula=("s^l = head(norm(mean_tokens z^l)), E = (1/L) Σ_l mean_{heads, queries} ReLU(∂s^l_c / ∂A^l), "
             "map = E[patches]"),
    sanity=Sanity.UNTESTED,
    sanity_note=(
        "measured here on vit_digits (a digit, all 4 cascade steps): passes model randomisation on every "
        "measure (Spearman −0.04), class-sensitive (4/4), input invariant"
    ),
    class_sensitive=True,
    requires=frozenset({NEEDS_MODEL, NEEDS_ATTENTION}),
    params={
        "blocks": Param("int", 0, "How many of the last global attention blocks to average (0: every one).",
                        minimum=0),
    },
    cost=ONE_PASS,
    attribution_channels=1,
)
def legrad(call: Call, inputs: torch.Tensor, blocks: int = 0) -> Attribution:
    """Bousselham et al. 2024, arXiv:2404.03214, as torchcam 0.5 defines it: for block l with output tokens
    z^l, s^l = the model's remaining forward applied to mean(z^l) (for a ViT, head(final_norm(mean z^l))),
    and the map averages ReLU(∂s^l_c/∂A^l) over heads, queries and blocks, prefix tokens dropped.

    The head is never named: the last block's output is replaced by itself followed by every chosen block's
    mean token (broadcast to every position, so a class-token readout, a pooled readout or a DeiT's two heads
    read the same vector); the rest of the forward then gives the real logits and every s^l in one pass."""
    model = call.model
    layout = find_layout(model, inputs)
    chosen = layout.require_global("LeGrad")
    if blocks:
        chosen = chosen[-blocks:]
    names = block_names(layout, chosen)
    modules = [model.get_submodule(name) for name in names]
    count, layers = len(call.targets), len(chosen)
    site_tokens = layout.sites[chosen[-1]].tokens
    hooks = HookSet()
    tokens: list[torch.Tensor] = []
    means: list[torch.Tensor] = []
    widened: list[torch.Tensor] = []

    def keep(module, args, output):
        z = _tokens_of(output)
        if not isinstance(z, torch.Tensor) or z.dim() < 3 or z[0].numel() // z.shape[-1] != site_tokens:
            got = list(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
            raise SaliencyError(f"LeGrad expected block {names[len(tokens)]!r} to return [N, {site_tokens}, D] "
                                f"tokens; it returned {got}. Pick attention rollout or a CAM on tokens")
        tokens.append(z)
        if len(tokens) < layers:
            return None
        # the last block: its own tokens, then each chosen block's mean token at every position
        means.extend(t.mean(dim=tuple(range(1, t.dim() - 1)), keepdim=True).expand_as(t) for t in tokens)
        widened.append(torch.cat([z, *means]))
        return (widened[0], *output[1:]) if isinstance(output, tuple) else widened[0]

    maps, logits = [], []
    try:
        for module in modules:
            hooks.add(module.register_forward_hook(keep))

        def compute(start, stop):
            tokens.clear()
            means.clear()
            widened.clear()
            batch = inputs[start:stop].detach().requires_grad_(True)  # a graph even with frozen parameters
            rows = stop - start
            with torch.enable_grad(), attention_probabilities() as kept:
                everything = as_logits(model(batch))
                if everything.shape[0] != rows * (layers + 1) or len(kept) <= chosen[-1]:
                    raise SaliencyError(
                        "LeGrad reads each block's prediction by running the layers after the last block on extra "
                        f"rows; this model's output came back with {everything.shape[0]} rows instead of "
                        f"{rows * (layers + 1)}. Pick attention rollout or a CAM on tokens")
                per_target = torch.zeros((count, rows, 1, *layout.sites[chosen[-1]].grid), dtype=inputs.dtype,
                                         device=inputs.device)
                scores = torch.stack([call.scores(everything[rows * (p + 1):rows * (p + 2)], slice(start, stop))
                                      for p in range(layers)])  # [blocks, targets, rows]
                for t in range(count):
                    # two steps, so that each block's backward stops at its own attention: d s / d(rows read by the
                    # head) through the layers after the last block, then from each block's mean token to A^l (one
                    # step from s^l would also send zeros back through every later block)
                    (read,) = torch.autograd.grad(scores[:, t].sum(), widened[0], retain_graph=True)
                    for position, index in enumerate(chosen):
                        block_rows = read[rows * (position + 1):rows * (position + 2)]
                        (gradient,) = torch.autograd.grad(means[position], kept[index], grad_outputs=block_rows,
                                                          retain_graph=True)
                        relevance = gradient.clamp(min=0).mean(dim=(1, 2))  # [B, keys]
                        per_target[t] += patch_map(relevance, layout.sites[index]).to(inputs.dtype)
            return per_target / layers, everything[:rows].detach()

        for start, stop, (batch_maps, batch_logits) in call.batches.run(len(inputs), compute):
            maps.append(batch_maps)
            logits.append(batch_logits)
            call.progress.advance(stop - start)
    finally:
        hooks.remove()
        tokens.clear()
        means.clear()
        widened.clear()
    layer_map = torch.cat(maps, dim=1)
    upsampled = F.interpolate(layer_map.flatten(0, 1), size=inputs.shape[-2:], mode="bilinear", align_corners=False)
    return Attribution(upsampled.view(count, len(inputs), 1, *inputs.shape[-2:]), layer_attribution=layer_map,
                       logits=torch.cat(logits))

