"""The attention inside a transformer's forward: computed explicitly, handed to the method, its layout found.

Every family computes attention its own way: torchvision's ViT through ``nn.MultiheadAttention`` (and its fused
fast path), timm's ViT, DeiT, BEiT and Swin through ``F.scaled_dot_product_attention`` or an explicit
``softmax``, Hugging Face's ViT through either, torchvision's Swin through ``F.softmax`` on windows. Inside
:func:`attention_probabilities` a ``TorchFunctionMode`` sees the forward's torch calls: a fused attention is
replaced by the same arithmetic written out (:func:`explicit_attention`, :func:`explicit_multi_head`), and every
attention's probabilities ``[B·windows, heads, queries, keys]`` pass through a callback, which may keep them (for
their values or, since they stay in the graph, for gradients with respect to them). No module is named: what is
attention is what the forward does.

:func:`find_layout` reads the token layout off one forward: the patch grid from the patch embedding (the first
convolution whose stride equals its kernel), the tokens before the patches (class, distillation, register) as the
difference, the windows from the leading dimension of each attention, and the tokens that reach the head from a
gradient (the class token for ViT, class and distillation tokens for DeiT, every patch for an average-pooled head).
"""

from __future__ import annotations

import contextlib
import inspect
import math
import threading
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from .errors import SaliencyError
from .hooks import HookSet, model_guard

Probabilities = Callable[[torch.Tensor], torch.Tensor]
SOFTMAXES = frozenset({torch.softmax, F.softmax, torch.Tensor.softmax, torch.nn.functional.softmax})
_MHA_SIGNATURE = inspect.signature(F.multi_head_attention_forward)


def explicit_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                       enable_gqa=False, *, softmax: Probabilities | None = None,
                       matmul: Callable = torch.matmul) -> torch.Tensor:
    """``F.scaled_dot_product_attention`` written out: softmax(Q Kᵀ · scale + mask) V, dropout ignored (eval).

    ``softmax`` turns the scores into probabilities (plain softmax over the keys by default) and may keep or
    replace them; ``matmul`` computes both products (AttnLRP passes its own rule)."""
    if enable_gqa and key.shape[-3] != query.shape[-3]:
        repeat = query.shape[-3] // key.shape[-3]
        key, value = key.repeat_interleave(repeat, dim=-3), value.repeat_interleave(repeat, dim=-3)
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    scores = matmul(query, key.transpose(-2, -1)) * scale
    if is_causal:
        causal = torch.ones(scores.shape[-2:], dtype=torch.bool, device=scores.device).tril()
        scores = scores.masked_fill(~causal, float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attn_mask, float("-inf"))
        else:
            scores = scores + attn_mask
    probabilities = scores.softmax(dim=-1) if softmax is None else softmax(scores)
    return matmul(probabilities, value)


def explicit_multi_head(args: tuple, kwargs: dict, *, softmax: Probabilities | None = None,
                        matmul: Callable = torch.matmul,
                        linear: Callable = F.linear) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``F.multi_head_attention_forward`` (what ``nn.MultiheadAttention`` calls) with its attention written out.

    Sequence-first ``[T, B, E]`` inputs as the functional takes them; returns (output, the weights where asked
    for). ``softmax`` and ``matmul`` as in :func:`explicit_attention`; ``linear`` the projections (AttnLRP passes
    its rules)."""
    bound = _MHA_SIGNATURE.bind(*args, **kwargs)
    bound.apply_defaults()
    a = bound.arguments
    query, key, value = a["query"], a["key"], a["value"]
    if query.dim() != 3 or a["bias_k"] is not None or a["add_zero_attn"] or a["static_k"] is not None:
        raise SaliencyError(
            "this nn.MultiheadAttention uses unbatched inputs, bias_k/bias_v, add_zero_attn or static keys, which "
            "the explicit attention does not cover; pick a gradient or CAM method"
        )
    heads, (length, batch, width) = a["num_heads"], query.shape
    if a["use_separate_proj_weight"]:
        weights = (a["q_proj_weight"], a["k_proj_weight"], a["v_proj_weight"])
    else:
        weights = a["in_proj_weight"].chunk(3)
    biases = (None, None, None) if a["in_proj_bias"] is None else a["in_proj_bias"].chunk(3)
    q, k, v = (linear(x, w, b) for x, w, b in zip((query, key, value), weights, biases, strict=True))

    def heads_first(x: torch.Tensor) -> torch.Tensor:  # [T, B, E] -> [B, heads, T, E / heads]
        return x.reshape(x.shape[0], batch, heads, width // heads).permute(1, 2, 0, 3)

    # nn.MultiheadAttention's boolean masks mark what to leave out (True = masked); as additive masks here
    mask = None
    for part, shape in ((a["attn_mask"], None), (a["key_padding_mask"], (batch, 1, 1, -1))):
        if part is None:
            continue
        if part.dtype == torch.bool:
            part = torch.zeros(part.shape, dtype=query.dtype, device=query.device).masked_fill(part, float("-inf"))
        part = part.view(shape) if shape else (part.view(batch, heads, *part.shape[1:]) if part.dim() == 3 else part)
        mask = part if mask is None else mask + part
    kept: list[torch.Tensor] = []

    def keeping(scores):  # the probabilities, for callers that asked for the weights
        probabilities = scores.softmax(dim=-1) if softmax is None else softmax(scores)
        kept.append(probabilities)
        return probabilities

    out = explicit_attention(heads_first(q), heads_first(k), heads_first(v), attn_mask=mask,
                             is_causal=a["is_causal"], softmax=keeping, matmul=matmul)
    out = out.permute(2, 0, 1, 3).reshape(length, batch, width)
    weights = None
    if a["need_weights"] and kept:
        weights = kept[0].mean(dim=1) if a["average_attn_weights"] else kept[0]
    return linear(out, a["out_proj_weight"], a["out_proj_bias"]), weights


class _Explicit(TorchFunctionMode):
    """Writes every fused attention of the forward out and hands each attention's probabilities to ``keep``."""

    def __init__(self, keep: Probabilities):
        super().__init__()
        self.keep = keep

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention:
            return explicit_attention(*args, **kwargs, softmax=self._softmax)
        if func is F.multi_head_attention_forward:
            return explicit_multi_head(args, kwargs, softmax=self._softmax)
        result = func(*args, **kwargs)
        if func in SOFTMAXES and _over_keys(result, args, kwargs):
            return self.keep(result)
        return result

    def _softmax(self, scores: torch.Tensor) -> torch.Tensor:
        return self.keep(scores.softmax(dim=-1))


def _over_keys(result: Any, args: tuple, kwargs: dict) -> bool:
    """Whether a softmax result is attention: a [B, heads, queries, keys] tensor normalised over its last dim."""
    if not isinstance(result, torch.Tensor) or result.dim() != 4:
        return False
    dim = kwargs.get("dim", args[1] if len(args) > 1 else None)
    return dim in (-1, 3)


@contextlib.contextmanager
def attention_probabilities(keep: Probabilities | None = None) -> Iterator[list[torch.Tensor]]:
    """Inside the block, the model's forward computes every attention explicitly; yields the list of their
    probabilities in call order, ``[B·windows, heads, queries, keys]`` each, still in the autograd graph.

    ``keep(probabilities) -> probabilities`` replaces the default, which appends to the list; it may return a
    different tensor (a rule's), which the forward then uses."""
    kept: list[torch.Tensor] = []

    def append(probabilities: torch.Tensor) -> torch.Tensor:
        kept.append(probabilities)
        return probabilities

    with _Explicit(keep or append):
        yield kept


@dataclass(frozen=True)
class AttentionSite:
    """One attention of the forward: the module that computed it and its shape per image."""

    name: str  # the innermost module whose forward ran it ("" for the model itself)
    heads: int
    tokens: int  # queries per window
    keys: int  # keys per window: equal to ``tokens`` for self-attention (a pooling head's query attends to all)
    windows: int  # 1: the attention spans every token of its stage
    prefix: int  # tokens before the patch grid (class, distillation, register): 0 for windows
    grid: tuple[int, int]  # the patches' (h, w) at this stage


@dataclass(frozen=True)
class TokenLayout:
    """How a transformer lays out its tokens, read off one forward (see :func:`find_layout`)."""

    sites: tuple[AttentionSite, ...]
    readout: tuple[int, ...]  # the tokens of the last global attention that reach the model's output
    patch_grid: tuple[int, int] | None  # from the patch embedding, None when none was found

    @property
    def global_sites(self) -> tuple[int, ...]:
        """Indices of the attentions that span a whole stage, in the last stage that has any (all of a ViT's
        blocks; Swin's last stage, where one window covers the grid)."""
        spanning = [site.windows == 1 and site.tokens == site.keys and site.grid != (0, 0) for site in self.sites]
        last = next((i for i in reversed(range(len(self.sites))) if spanning[i]), None)
        if last is None:
            return ()
        tokens = self.sites[last].tokens
        chosen = [last]
        for i in reversed(range(last)):
            if not spanning[i] or self.sites[i].tokens != tokens:
                break
            chosen.append(i)
        return tuple(reversed(chosen))

    @property
    def prefix(self) -> int:
        return self.sites[self.global_sites[-1]].prefix if self.global_sites else 0

    @property
    def grid(self) -> tuple[int, int]:
        return self.sites[self.global_sites[-1]].grid if self.global_sites else (0, 0)

    def describe(self) -> str:
        """One line for messages: what the forward showed."""
        if not self.sites:
            return "no attention in the forward"
        windowed = sum(s.windows > 1 for s in self.sites)
        parts = [f"{len(self.sites)} attention layers"]
        if windowed:
            parts.append(f"{windowed} of them over windows (up to {max(s.windows for s in self.sites)} per image)")
        if self.global_sites:
            h, w = self.grid
            parts.append(f"{len(self.global_sites)} global over {h}×{w} patches + {self.prefix} other tokens")
            parts.append(f"read out from token{'s' if len(self.readout) != 1 else ''} "
                         f"{', '.join(map(str, self.readout[:6]))}{'…' if len(self.readout) > 6 else ''}")
        return "; ".join(parts)

    def require_global(self, method: str) -> tuple[int, ...]:
        """The global attentions, or a SaliencyError saying what was found instead."""
        if not self.sites:
            raise SaliencyError(f"{method} needs a transformer: this model's forward computes no attention "
                                "(no softmax over tokens, no scaled_dot_product_attention). Pick a gradient or CAM "
                                "method")
        if not self.global_sites:
            raise SaliencyError(f"{method} needs attention that spans the whole patch grid; this model has "
                                f"{self.describe()}. Use an input size at which the last stage is one window, or "
                                "pick AttnLRP or a CAM on tokens")
        return self.global_sites


_LAYOUTS: weakref.WeakKeyDictionary[nn.Module, dict[tuple[int, int], TokenLayout]] = weakref.WeakKeyDictionary()
_LAYOUT_LOCK = threading.Lock()


def find_layout(model: nn.Module, inputs: torch.Tensor) -> TokenLayout:
    """The token layout of ``model`` at the input size of ``inputs`` [N, C, H, W], from one forward and one
    backward of the first row, holding the model's lock and leaving its modes and flags as found (cached per model
    and size)."""
    size = (int(inputs.shape[-2]), int(inputs.shape[-1]))
    with _LAYOUT_LOCK:
        known = _LAYOUTS.get(model, {}).get(size)
    if known is not None:
        return known
    with torch.inference_mode(False), torch.enable_grad(), model_guard(model):
        # a copy that needs a gradient: a frozen model's logits would need none, and the read-out would be guessed
        image = inputs[:1].detach().clone().requires_grad_(True)
        layout = _read_layout(model, image)
    with _LAYOUT_LOCK:
        _LAYOUTS.setdefault(model, {})[size] = layout
    return layout


def _read_layout(model: nn.Module, image: torch.Tensor) -> TokenLayout:
    """The layout, read under the caller's guard of the model."""
    names = {module: name for name, module in model.named_modules()}
    running: list[str] = []
    patch_grids: list[tuple[int, int]] = []
    hooks = HookSet()

    def enter(module, args):
        running.append(names.get(module, ""))

    def leave(module, args, output):
        if running:
            running.pop()
        if (isinstance(module, nn.Conv2d) and not patch_grids and module.kernel_size == module.stride
                and module.kernel_size[0] > 1 and isinstance(output, torch.Tensor) and output.dim() == 4):
            patch_grids.append((int(output.shape[-2]), int(output.shape[-1])))

    found: list[tuple[str, torch.Tensor]] = []

    def keep(probabilities):
        found.append((running[-1] if running else "", probabilities))
        return probabilities

    try:
        for module in names:
            hooks.add(module.register_forward_pre_hook(enter))
            hooks.add(module.register_forward_hook(leave))
        with attention_probabilities(keep):
            output = model(image)
        logits = output if isinstance(output, torch.Tensor) else getattr(output, "logits", None)
        if logits is None and isinstance(output, (tuple, list)) and output:
            logits = output[0]
    finally:
        hooks.remove()
    patch_grid = text_grid(model, image) or (patch_grids[0] if patch_grids else None)
    sites = tuple(_site(name, p, patch_grid, image) for name, p in found)
    readout: tuple[int, ...] = ()
    layout = TokenLayout(sites, readout, patch_grid)
    if layout.global_sites and isinstance(logits, torch.Tensor) and logits.requires_grad:
        last = found[layout.global_sites[-1]][1]
        (gradient,) = torch.autograd.grad(logits.float().sum(), last, allow_unused=True)
        if gradient is not None:
            reached = gradient.abs().sum(dim=(0, 1, 3)) > 0
            readout = tuple(int(i) for i in reached.nonzero().flatten())
    if layout.global_sites and not readout:
        # nothing reaches the output (a head initialised to zeros, as torchvision's ViT is before training): the
        # tokens before the patches where there are any (a class token), else every patch
        site = sites[layout.global_sites[-1]]
        readout = tuple(range(site.prefix)) if site.prefix else tuple(range(site.tokens))
    return TokenLayout(sites, readout, patch_grid)


def text_grid(model: nn.Module, inputs: torch.Tensor) -> tuple[int, int] | None:
    """(1, L) for a text classifier's token embeddings [N, D, 1, L] (``explainers.text``: a model that says
    ``modality = "text"``): every token is a "patch" of a 1 × L grid, with no tokens before it ([CLS] is token 0
    of the grid, and the read-out, found from the gradient as for images). None for an image model, whose grid
    comes from its patch embedding. Said by the model, never guessed from the attention's shape."""
    if getattr(model, "modality", None) != "text":  # the registry's TEXT; the registry imports this module
        return None
    return 1, int(inputs.shape[-1])


def _site(name: str, probabilities: torch.Tensor, patch_grid: tuple[int, int] | None,
          image: torch.Tensor) -> AttentionSite:
    windows, heads = int(probabilities.shape[0]), int(probabilities.shape[1])
    tokens, keys = int(probabilities.shape[2]), int(probabilities.shape[3])
    prefix, grid = 0, (0, 0)
    if windows == 1 and tokens == keys:
        patches = patch_grid[0] * patch_grid[1] if patch_grid else 0
        if patch_grid and tokens >= patches:
            prefix, grid = tokens - patches, patch_grid
        else:  # a later stage of a pyramid (Swin): the grid its token count fits (0, 0 where none does)
            grid = token_grid(tokens, int(image.shape[-2]), int(image.shape[-1])) or (0, 0)
    return AttentionSite(name, heads, tokens, keys, windows, prefix, grid)


# Grid sizes may be off the input's aspect ratio by this many cells (rounding of strided convolutions).
_ROUNDING_CELLS = 1.5


def same_grid(h: int, w: int, height: int, width: int) -> bool:
    """Whether an h x w grid has the input's aspect ratio (square inputs: square grids), up to rounding."""
    if h < 1 or w < 1 or h > height or w > width:
        return False
    if height == width:
        return h == w
    low = (h - _ROUNDING_CELLS) / (w + _ROUNDING_CELLS)
    high = (h + _ROUNDING_CELLS) / max(w - _ROUNDING_CELLS, 0.5)
    return low <= height / width <= high


def token_grid(tokens: int, height: int, width: int) -> tuple[int, int] | None:
    """The (h, w) with h * w == tokens closest to the input's aspect ratio, or None if none fits."""
    best = None
    for h in range(1, int(math.isqrt(tokens)) + 1):
        if tokens % h:
            continue
        for gh, gw in ((h, tokens // h), (tokens // h, h)):
            if same_grid(gh, gw, height, width):
                err = abs(math.log((height / gh) / (width / gw)))
                if best is None or err < best[0]:
                    best = (err, (gh, gw))
    return None if best is None else best[1]


def has_attention(model: nn.Module | None) -> bool:
    """A cheap look at the modules (no forward) for the pickers: an ``nn.MultiheadAttention``, or a module whose
    own linear layers project queries, keys and values (one d→3d, or three of d→d and nothing else)."""
    if model is None:
        return False
    for module in model.modules():
        if isinstance(module, nn.MultiheadAttention):
            return True
        linears = [m for m in module.children() if isinstance(m, nn.Linear)]
        if any(m.out_features == 3 * m.in_features for m in linears):
            return True
        square = [m for m in linears if m.in_features == m.out_features]
        if (len(square) >= 3 and len({m.in_features for m in square}) == 1 and len(linears) <= 4
                and not isinstance(module, nn.Sequential)):  # a plain MLP of square layers is not attention
            return True
    return False


def patch_map(values: torch.Tensor, site: AttentionSite) -> torch.Tensor:
    """[B, T] per-token values of a global attention -> [B, 1, h, w] over its patch grid (prefix dropped)."""
    h, w = site.grid
    return values[:, site.prefix:site.prefix + h * w].reshape(-1, 1, h, w)
