"""The layer catalogue: which modules of a network produce spatial maps, their shapes and memory layouts.

Works on any ``nn.Module``. One dummy forward pass with temporary hooks measures every module's output; the
modules whose output is a spatial map are the ones CAM-style methods can capture. Four layouts are recognised:

- ``"nchw"``: convolutional maps ``[N, C, H, W]``;
- ``"nhwc"``: channels-last maps ``[N, H, W, C]`` (Swin, Liu et al. 2021, arXiv:2103.14030; ConvNeXt's MLPs);
- ``"tokens"``: ``[N, p + h*w, D]``, ``p`` tokens before a grid of patch tokens (ViT, Dosovitskiy et al. 2020,
  arXiv:2010.11929: one class token; DeiT: class and distillation tokens; ViTs with registers: five). For a
  transformer the grid and ``p`` come from the model itself (:func:`explainers.attention.find_layout`: the patch
  embedding's grid, the tokens before it); otherwise one class token and a grid on the input's aspect ratio;
- ``"patch_tokens"``: ``[N, h*w, D]``, patch tokens without a class token (Hugging Face's Swin, whose stages
  keep tokens flat). Read this way only when no output of the model fits ``"tokens"`` and a LayerNorm over
  ``D`` runs on such tokens, the mark of a transformer; a plain ``[N, C, h*w]`` reshape of a CNN is left out.

:func:`to_nchw` turns captured activations or gradients of any of them into ``[N, C, h, w]`` maps.
"""

from __future__ import annotations

import difflib
import math
import weakref
from typing import NamedTuple

import torch
from torch import nn

from .attention import find_layout, has_attention, same_grid, token_grid
from .errors import LayerError
from .hooks import model_lock

NCHW = "nchw"
NHWC = "nhwc"
TOKENS = "tokens"
PATCH_TOKENS = "patch_tokens"
LAYOUTS = (NCHW, NHWC, TOKENS, PATCH_TOKENS)


class _Entry(NamedTuple):
    name: str
    shape: tuple[int, ...]
    layout: str


class LayerInfo(_Entry):
    """One spatial layer: dotted module name, output shape of the dummy forward, memory layout; for tokens, the
    patch grid the model lays them on (``token_grid``, None: one class token and a square grid). Compares as the
    tuple (name, shape, layout)."""

    token_grid: tuple[int, int] | None = None

    def __new__(cls, name: str, shape: tuple[int, ...], layout: str, token_grid: tuple[int, int] | None = None):
        info = super().__new__(cls, name, shape, layout)
        if token_grid is not None:
            info.token_grid = (int(token_grid[0]), int(token_grid[1]))
        return info

    def __getnewargs__(self):  # pickled and copied with its grid
        return (*self, self.token_grid)

    @property
    def grid(self) -> tuple[int, int]:
        """The (h, w) of the spatial grid."""
        return _grid(self.shape, self.layout, self.token_grid)

    @property
    def prefix(self) -> int:
        """Tokens before the patch grid (class, distillation, register); 0 for maps and patch tokens."""
        if self.layout != TOKENS:
            return 0
        h, w = self.grid
        return int(self.shape[1]) - h * w

    @property
    def channels(self) -> int:
        """Channels (conv maps) or embedding width (tokens)."""
        return self.shape[1] if self.layout == NCHW else self.shape[-1]

    def describe(self) -> str:
        """``"layer4 [1,512,7,7]"``, as listed in error messages and menus."""
        return f"{self.name} {_fmt(self.shape)}"


class _Record:
    """What the dummy forward saw of one module."""

    __slots__ = ("name", "calls", "shape", "order", "layout", "grid")

    def __init__(self, name: str):
        self.name = name
        self.calls = 0
        self.shape: tuple[int, ...] | None = None  # None when the output is not a single tensor
        self.order = -1  # completion order of the first call
        self.layout: str | None = None
        self.grid: tuple[int, int] | None = None  # tokens' patch grid when the model says it


# The last full measurement per model, so resolve_layer can explain why a layer is not in the catalogue.
_MEASUREMENTS: weakref.WeakKeyDictionary[nn.Module, tuple[tuple[int, ...], dict[str, _Record]]]
_MEASUREMENTS = weakref.WeakKeyDictionary()


def _fmt(shape) -> str:
    return "[" + ",".join(str(int(s)) for s in shape) + "]"


def _is_pooling(module: nn.Module) -> bool:
    pooling = (
        nn.modules.pooling._MaxPoolNd,
        nn.modules.pooling._AvgPoolNd,
        nn.modules.pooling._AdaptiveAvgPoolNd,
        nn.modules.pooling._AdaptiveMaxPoolNd,
        nn.modules.pooling._LPPoolNd,
    )
    return isinstance(module, pooling) or "pool" in type(module).__name__.lower()


def _is_norm(module: nn.Module) -> bool:
    norms = (nn.LayerNorm, nn.GroupNorm, nn.RMSNorm, nn.modules.batchnorm._NormBase)
    return isinstance(module, norms) or type(module).__name__.lower().endswith("norm")


def _grid(shape: tuple[int, ...], layout: str, grid: tuple[int, int] | None = None) -> tuple[int, int]:
    if layout == NCHW:
        return int(shape[2]), int(shape[3])
    if layout == NHWC:
        return int(shape[1]), int(shape[2])
    if layout in (TOKENS, PATCH_TOKENS):
        if grid is not None:
            return int(grid[0]), int(grid[1])
        prefix = 1 if layout == TOKENS else 0
        side = math.isqrt(int(shape[1]) - prefix)
        if side * side != int(shape[1]) - prefix:
            what = "a class token plus a square grid of" if prefix else "a square grid of"
            raise LayerError(f"expected {what} patch tokens, got {int(shape[1])} tokens; pass grid=(h, w)")
        return side, side
    raise LayerError(f"layout must be one of {LAYOUTS}, got {layout!r}")


def _layout_hints(model: nn.Module, input_shape: tuple[int, ...]) -> dict:
    """What the architecture itself says about token grids: a transformer's patch grid and the tokens before it,
    read off its attention (:func:`explainers.attention.find_layout`, a DeiT's two, a ViT's five with registers),
    else torchvision's VisionTransformer's declared image and patch sizes (one class token)."""
    hints: dict = {}
    patch, image = getattr(model, "patch_size", None), getattr(model, "image_size", None)
    if isinstance(patch, int) and isinstance(image, int) and patch > 0:
        hints["token_grid"] = (image // patch, image // patch)
    if has_attention(model):
        device, dtype = _first_tensor_device_dtype(model)
        # random, not zeros: find_layout caches the read-out tokens it finds by a gradient for this size
        probe = torch.randn(input_shape, generator=torch.Generator().manual_seed(0)).to(device=device, dtype=dtype)
        try:
            with torch.inference_mode(False):  # its gradient finds the read-out, whatever the caller's mode
                layout = find_layout(model, probe)
        except Exception:  # noqa: BLE001  an attention the explicit forward does not cover: guess as below
            return hints
        if layout.global_sites and layout.patch_grid and layout.prefix >= 1:
            hints["token_grid"], hints["prefix"] = layout.patch_grid, layout.prefix
    return hints


def _infer_layout(module: nn.Module, shape: tuple[int, ...], height: int, width: int, hints: dict) -> str | None:
    """The layout of one output, or None if it is not a spatial map (at least two grid cells)."""
    if len(shape) == 3:
        tokens = shape[1] - hints.get("prefix", 1)
        grid = hints.get("token_grid")
        if grid is not None:
            ok = grid[0] * grid[1] == tokens
        else:
            grid = token_grid(tokens, height, width) if tokens >= 2 else None
            ok = grid is not None
        return TOKENS if ok and grid[0] * grid[1] >= 2 else None
    if len(shape) != 4:
        return None
    _, a, b, c = shape
    as_nchw = same_grid(b, c, height, width) and b * c >= 2
    as_nhwc = same_grid(a, b, height, width) and a * b >= 2
    if as_nchw and as_nhwc:
        # Both readings fit (e.g. [N, 56, 56, 56]): let the module type decide.
        data_format = getattr(module, "data_format", None)  # Hugging Face's ConvNeXt LayerNorm says which
        if data_format in ("channels_first", "channels_last"):
            return NCHW if data_format == "channels_first" else NHWC
        if isinstance(module, nn.LayerNorm) and tuple(module.normalized_shape) == (c,):
            return NHWC
        if isinstance(module, nn.Linear) and module.out_features == c:
            return NHWC
        return NCHW
    if as_nchw:
        return NCHW
    if as_nhwc:
        return NHWC
    return None


def _patch_tokens_layout(module: nn.Module, shape: tuple[int, ...], batch: int, height: int, width: int) -> str | None:
    """``"patch_tokens"`` when ``[N, L, D]`` is a batch of ``L = h*w`` tokens on the input's grid, else None.

    The leading dimension must be the batch (window attention's ``[N * windows, tokens, D]`` is not a map) and
    pooling outputs are left out (a pooled ``[N, C, 1]`` is not a grid).
    """
    if len(shape) != 3 or shape[0] != batch or _is_pooling(module):
        return None
    grid = token_grid(shape[1], height, width)
    return PATCH_TOKENS if grid is not None and grid[0] * grid[1] >= 2 else None


def _norms_patch_tokens(module: nn.Module, shape: tuple[int, ...]) -> bool:
    """Whether ``module`` is a LayerNorm over the last dimension of a 3-d output: tokens of a transformer."""
    normalized = getattr(module, "normalized_shape", None)
    return len(shape) == 3 and isinstance(module, nn.LayerNorm) and tuple(normalized or ()) == (shape[-1],)


def _first_tensor_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    for tensor in list(model.parameters()) + list(model.buffers()):
        if tensor.is_floating_point():
            return tensor.device, tensor.dtype
    return torch.device("cpu"), torch.float32


def _measure(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, _Record]:
    """One dummy forward (no grad, eval mode) recording every submodule's output shape and call count, holding
    the model's lock: the hooks and the eval flag are shared with any other thread using this model."""
    with model_lock(model):
        return _measure_unlocked(model, input_shape)


def _measure_unlocked(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, _Record]:
    records: dict[str, _Record] = {}
    counter = [0]
    handles = []

    def hook_for(record: _Record):
        def hook(module, args, output):
            record.calls += 1
            if record.calls == 1:
                record.order = counter[0]
                counter[0] += 1
                if isinstance(output, torch.Tensor):
                    record.shape = tuple(int(s) for s in output.shape)

        return hook

    modes = {module: module.training for module in model.modules()}
    device, dtype = _first_tensor_device_dtype(model)
    try:
        for name, module in model.named_modules():
            if name == "":
                continue
            records[name] = _Record(name)
            handles.append(module.register_forward_hook(hook_for(records[name])))
        model.eval()
        with torch.inference_mode():
            model(torch.zeros(input_shape, device=device, dtype=dtype))
    except Exception as exc:
        raise LayerError(
            f"expected the model to accept a dummy input of shape {_fmt(input_shape)}, but its forward pass "
            f"raised {type(exc).__name__}: {exc}"
        ) from exc
    finally:
        for handle in handles:
            handle.remove()
        for module, training in modes.items():
            module.training = training
    height, width = int(input_shape[-2]), int(input_shape[-1])
    hints = _layout_hints(model, tuple(input_shape))
    # one call, one tensor, one row per image (a detector's pooled proposals [proposals, C, 7, 7] are no map of
    # the image)
    single = [r for r in records.values()
              if r.calls == 1 and r.shape is not None and r.shape and r.shape[0] == input_shape[0]]
    for record in single:
        record.layout = _infer_layout(model.get_submodule(record.name), record.shape, height, width, hints)
        if record.layout == TOKENS and "prefix" in hints:
            record.grid = hints["token_grid"]
    if not any(r.layout == TOKENS for r in single):
        batch = int(input_shape[0])
        flat = {
            r.name: _patch_tokens_layout(model.get_submodule(r.name), r.shape, batch, height, width)
            for r in single
            if r.layout is None and len(r.shape) == 3
        }
        if any(layout and _norms_patch_tokens(model.get_submodule(name), records[name].shape)
               for name, layout in flat.items()):
            for name, layout in flat.items():
                records[name].layout = layout
    _MEASUREMENTS[model] = (tuple(input_shape), records)
    return records


def layer_catalogue(model: nn.Module, input_shape: tuple[int, ...] = (1, 3, 224, 224)) -> list[LayerInfo]:
    """Every submodule whose output is a spatial map, in order of completion during the forward pass.

    Order of completion means a container comes right after its last child (``layer1.0.conv1`` ...
    ``layer1.0``, ..., ``layer1``), so the last entry is the last spatial map the network produced.
    Measured with one dummy forward of zeros of ``input_shape`` in eval mode under ``torch.no_grad``; every
    hook is removed and every module's train/eval mode restored afterwards, even when the forward fails.

    Left out: the root module; outputs that are not a single tensor (e.g. ``nn.MultiheadAttention``'s tuple);
    maps with fewer than two grid cells; and modules called more than once per forward (e.g. the ``relu``
    that torchvision's ResNet ``BasicBlock`` applies twice), since a capture there would be ambiguous.
    """
    return _catalogue_from(_measure(model, tuple(input_shape)))


def _catalogue_from(records: dict[str, _Record]) -> list[LayerInfo]:
    spatial = [r for r in records.values() if r.layout is not None]
    spatial.sort(key=lambda r: r.order)
    return [LayerInfo(r.name, r.shape, r.layout, r.grid) for r in spatial]


def cached_catalogue(model: nn.Module, input_shape: tuple[int, ...]) -> list[LayerInfo]:
    """The catalogue for inputs of ``input_shape``, reusing this model's last measurement when the
    per-image shape matches, so repeated calls on a bare module don't pay a dummy forward each time."""
    per_image = (1, *tuple(input_shape)[1:])
    measured = _MEASUREMENTS.get(model)
    if measured is not None and tuple(measured[0])[1:] == per_image[1:]:
        return _catalogue_from(measured[1])
    return layer_catalogue(model, per_image)


def default_layer(model: nn.Module, catalogue: list[LayerInfo]) -> str:
    """The layer CAM methods use unless told otherwise.

    - Transformers (a block with two or more norm layers whose outputs are tokens or channels-last): the first
      norm of the last such block, e.g. ViT's ``encoder_layer_11.ln_1``. The class token alone feeds the head,
      so the last block's output carries no gradient to the patch tokens; its input norm does.
    - Otherwise: the last spatial map the forward produced that is not a pooling layer; because of the
      completion order this is the outermost container that returns it (``layer4``, ``features``).
    """
    if not catalogue:
        raise LayerError("expected at least one layer with a spatial output, but the model has none")
    modules = dict(model.named_modules())

    block_norms: dict[str, list[LayerInfo]] = {}
    for info in catalogue:  # completion order: norms of a block in the order they ran
        parent = info.name.rpartition(".")[0]
        if info.layout != NCHW and parent in modules and _is_norm(modules[info.name]):
            block_norms.setdefault(parent, []).append(info)
    blocks = [norms for parent, norms in block_norms.items() if parent and len(norms) >= 2]
    if blocks:
        position = {info.name: i for i, info in enumerate(catalogue)}
        last = max(blocks, key=lambda norms: position[norms[-1].name])
        return last[0].name

    for info in reversed(catalogue):
        module = modules.get(info.name)
        if module is not None and not _is_pooling(module):
            return info.name
    return catalogue[-1].name


def _describe_all(catalogue: list[LayerInfo]) -> str:
    return ", ".join(info.describe() for info in catalogue)


def resolve_layer(
    model: nn.Module,
    layer: str | nn.Module | None = None,
    catalogue: list[LayerInfo] | None = None,
    input_shape: tuple[int, ...] | None = None,
) -> tuple[str, nn.Module]:
    """``(dotted name, module)`` for a layer given by name, as a module of ``model``, or None for the default.

    Without ``catalogue`` one is measured at ``input_shape`` (default: the shape of this model's last
    measurement, else 1x3x224x224). Raises LayerError listing every valid layer with its shape when the layer
    is unknown or not spatial.
    """
    if catalogue is None:
        if input_shape is None:
            measured = _MEASUREMENTS.get(model)
            input_shape = measured[0] if measured else (1, 3, 224, 224)
        catalogue = layer_catalogue(model, input_shape)
    if layer is None:
        name = default_layer(model, catalogue)
        return name, model.get_submodule(name)

    if isinstance(layer, nn.Module):
        names = [n for n, m in model.named_modules() if m is layer]
        if not names:
            raise LayerError(
                f"expected a module inside the model, got a {type(layer).__name__} that is not part of it; "
                f"pick one of: {_describe_all(catalogue)}"
            )
        valid = [n for n in names if n in {info.name for info in catalogue}]
        name = valid[0] if valid else names[0]
    elif isinstance(layer, str):
        name = layer.strip()
    else:
        raise LayerError(f"expected a layer name, a module or None, got {type(layer).__name__}")

    if any(info.name == name for info in catalogue):
        return name, model.get_submodule(name)

    choices = f"pick one of: {_describe_all(catalogue)}"
    modules = dict(model.named_modules())
    if name == "":
        raise LayerError(f"expected a layer inside the model, got the whole model; {choices}")
    if name not in modules:
        close = difflib.get_close_matches(name, [info.name for info in catalogue], n=3)
        hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
        raise LayerError(f"the model has no layer {name!r}{hint}; {choices}")
    measured = _MEASUREMENTS.get(model)
    record = measured[1].get(name) if measured else None
    if record is None:
        why = "is not among the spatial layers"
    elif record.calls == 0:
        why = "does not run in the forward pass"
    elif record.calls > 1:
        why = f"runs {record.calls} times per forward pass (a capture there would be ambiguous)"
    elif record.shape is None:
        why = "does not output a single tensor"
    else:
        why = f"has output {_fmt(record.shape)} (not spatial)"
    raise LayerError(f"layer {name!r} {why}; {choices}")


def to_nchw(tensor: torch.Tensor, layout: str, grid: tuple[int, int] | None = None) -> torch.Tensor:
    """Captured activations or gradients of a layer as maps ``[N, C, h, w]``.

    ``"tokens"`` lays the last h·w tokens out on ``grid=(h, w)``, dropping the tokens before them (class,
    distillation, register: a layer's ``LayerInfo.grid``), or without a grid drops one class token and lays the
    rest on a square; ``"patch_tokens"`` lays every token out that way.
    """
    if layout == NCHW:
        if tensor.dim() != 4:
            raise LayerError(f"expected a [N,C,H,W] tensor for layout 'nchw', got shape {_fmt(tensor.shape)}")
        return tensor
    if layout == NHWC:
        if tensor.dim() != 4:
            raise LayerError(f"expected a [N,H,W,C] tensor for layout 'nhwc', got shape {_fmt(tensor.shape)}")
        return tensor.permute(0, 3, 1, 2)
    if layout == TOKENS:
        if tensor.dim() != 3:
            raise LayerError(f"expected a [N,p+h*w,D] tensor for layout 'tokens', got shape {_fmt(tensor.shape)}")
        h, w = _grid(tuple(tensor.shape), TOKENS, grid)
        prefix = int(tensor.shape[1]) - h * w if grid is not None else 1
        patches = tensor[:, prefix:, :]
        if prefix < 0 or patches.shape[1] != h * w:
            raise LayerError(f"expected {h}x{w}={h * w} patch tokens after the class token, got {patches.shape[1]}")
        return patches.reshape(tensor.shape[0], h, w, tensor.shape[2]).permute(0, 3, 1, 2)
    if layout == PATCH_TOKENS:
        if tensor.dim() != 3:
            raise LayerError(
                f"expected a [N,h*w,D] tensor for layout 'patch_tokens', got shape {_fmt(tensor.shape)}"
            )
        h, w = _grid(tuple(tensor.shape), PATCH_TOKENS, grid)
        if tensor.shape[1] != h * w:
            raise LayerError(f"expected {h}x{w}={h * w} patch tokens, got {tensor.shape[1]}")
        return tensor.reshape(tensor.shape[0], h, w, tensor.shape[2]).permute(0, 3, 1, 2)
    raise LayerError(f"layout must be one of {LAYOUTS}, got {layout!r}")


def block_layers(model: nn.Module, catalogue: list[LayerInfo], default: str | None = None) -> list[str]:
    """The catalogue's blocks, in forward order: containers (stages, residual blocks) and top-level leaves,
    what a reader calls a stage, plus ``default`` wherever it lies. Menus show these first; every module is
    one click further."""
    modules = dict(model.named_modules())
    names = []
    for info in catalogue:
        module = modules.get(info.name)
        container = module is not None and any(True for _ in module.children())
        if info.name == default or "." not in info.name or container:
            names.append(info.name)
    return names
