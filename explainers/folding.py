"""The fast forward-only copy of a model: BatchNorm folded into the convolution before it, weights in the memory
layout measured fastest on the device, optionally in bfloat16.

A forward-only method (Score-CAM, Ablation-CAM, occlusion, RISE, KernelSHAP, LIME) runs hundreds of passes that
need only the model's outputs, or one layer's. In eval mode a BatchNorm after a convolution is an affine map per
channel, y = γ (conv(x) − μ) / √(σ² + ε) + β, so the convolution can absorb it: W' = W γ/√(σ² + ε),
b' = (b − μ) γ/√(σ² + ε) + β (PyTorch's ``torch.nn.utils.fusion.fuse_conv_bn_weights``). The copy computes the
same function to float rounding with one pass over each activation fewer; the caller's model is never changed.

The copy shares every tensor it does not change with the model (no 100 MB deepcopy of a ResNet-50): only the
folded convolutions, and the weights converted to channels_last or bfloat16, are new. It is kept per model and
rebuilt whenever a parameter or buffer of the model changed (in place included, as the sanity cascade
randomises layers: each tensor's version counter is part of the fingerprint), so a stale copy is never used.
Where folding is impossible or unsafe the model itself is returned: a TorchScript model, one that refuses
deepcopy, one with hooks (they would be copied onto modules whose outputs folding changes), a BatchNorm whose
input is not a convolution's output used by it alone, a pair holding a module whose output a method reads.
"""

from __future__ import annotations

import copy
import functools
import threading
import weakref
from collections import Counter, OrderedDict
from dataclasses import replace
from typing import Any

import torch
from torch import nn
from torch.nn.modules.conv import _ConvNd
from torch.nn.utils import parametrize
from torch.nn.utils.fusion import fuse_conv_bn_weights
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves, tree_map

from .batching import CHANNELS_LAST, forward
from .core import Call
from .errors import ParameterError
from .registry import Param

FLOAT32, BFLOAT16 = "float32", "bfloat16"
PRECISIONS = (FLOAT32, BFLOAT16)
# A copy is built only for a call whose forward passes, in rows, amortise it; a fresh copy already kept is used
# whatever the call's size. Building one costs about three one-row passes (the traced pass that finds the pairs,
# the check of the copy, the first channels_last pass): measured on this 2-core CPU (1 thread, medians of 5,
# issue 23) 0.10 s on efficientnet_lite0 at 224 px, 0.19 s on a ResNet-18 at 224 px, 0.18 s on a
# ResNet-50 at 128 px, paid back after 9, 75 and 49 rows (a row at 16 rows a pass: 0.70, 0.95 and 0.90 of the
# model's, channels_last input, wall time).
MIN_ROWS = 64
# Copies kept at once (over every model): each holds its own folded convolution weights (about the model's size).
KEPT = 4
# The copy's outputs must match the model's to this share of their scale (float32 rounding through a deep
# network stays far below it; a wrongly folded pair is off by the BatchNorm's whole scale).
CHECK_RTOL = 1e-4
EXACT_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def bfloat16_unavailable(device: torch.device | str) -> str | None:
    """Why bfloat16 passes would not be faster on ``device``, or None where it has bfloat16 units: a CUDA GPU of
    compute capability 8.0 or more (Ampere on), a CPU with AVX512-BF16 or AMX. Elsewhere bfloat16 is emulated in
    float32 arithmetic, slower than float32 itself."""
    device = torch.device(device)
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        if major >= 8:
            return None
        return (f"this GPU ({torch.cuda.get_device_name(device)}) has compute capability {major}.{minor}; bfloat16 "
                "units need 8.0 or more (Ampere on)")
    if device.type == "cpu":
        if torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported():
            return None
        return (f"this CPU has no bfloat16 units (neither AVX512-BF16 nor AMX; PyTorch's kernels: "
                f"{torch.backends.cpu.get_cpu_capability()}), where bfloat16 is emulated and slower than float32")
    return f"bfloat16 passes are not offered on {device.type} devices"


def check_precision(precision: str, device: torch.device | str) -> None:
    """ParameterError where ``precision`` cannot run fast on ``device`` (bfloat16 without bfloat16 units)."""
    if precision == BFLOAT16:
        reason = bfloat16_unavailable(device)
        if reason is not None:
            raise ParameterError(f"precision 'bfloat16' is offered only where the device has bfloat16 units: {reason}; "
                                 "use precision='float32'")
    elif precision != FLOAT32:
        raise ParameterError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")


def precision_param(measured: str) -> Param:
    """The ``precision`` parameter of a forward-only method; ``measured`` says what bfloat16 cost its maps: how
    its bfloat16 map compares with its float32 map (measured for issue 23, bfloat16 emulated)."""
    return Param(
        "choice", FLOAT32,
        "Arithmetic of the forward passes. bfloat16 is offered only where the device has bfloat16 units (a CUDA GPU "
        "of compute capability ≥ 8, a CPU with AVX512-BF16 or AMX), and is never the default: its 8-bit mantissa "
        "moves the map beyond the 0.1% the tests allow. On a CPU with AVX512-BF16, Score-CAM, occlusion and RISE "
        "took 0.51-0.58x their float32 time. Measured (the cat, its top-1 class; bfloat16 emulated on a CPU without "
        f"its units), the bfloat16 map against the float32 one: {measured}",
        choices=PRECISIONS,
    )


# ---------------------------------------------------------------------------------------------------------------
# Which convolutions can absorb which BatchNorms
# ---------------------------------------------------------------------------------------------------------------


class _Consumers(TorchDispatchMode):
    """Counts, per tensor storage, the ops that read it since it was made: a convolution's output read by anything
    besides its BatchNorm (a skip connection from before the normalisation) must not be folded. A storage an op
    makes anew starts at 0 reads (its address may be a freed tensor's)."""

    def __init__(self):
        super().__init__()
        self.reads: Counter = Counter()

    @staticmethod
    def _storages(values) -> set[int]:
        return {value.untyped_storage().data_ptr() for value in tree_leaves(values)
                if isinstance(value, torch.Tensor) and value.layout == torch.strided}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        read = self._storages((args, kwargs or {}))
        output = func(*args, **(kwargs or {}))
        for made in self._storages(output) - read:
            self.reads[made] = 0
        self.reads.update(read)
        return output


def _foldable_conv(module: nn.Module) -> bool:
    return (isinstance(module, _ConvNd) and not module.transposed and not parametrize.is_parametrized(module)
            and isinstance(module.weight, torch.Tensor) and module.weight.is_floating_point())


def _foldable_norm(module: nn.Module) -> bool:
    """An eval-mode BatchNorm that normalises by its running statistics (a subclass may do more: timm's
    BatchNormAct2d applies its activation too)."""
    return (type(module) in EXACT_BATCHNORMS and not module.training and module.track_running_stats
            and module.running_mean is not None and module.running_var is not None
            and not parametrize.is_parametrized(module))


def conv_bn_pairs(model: nn.Module, sample: torch.Tensor, keep: frozenset[str] = frozenset()) -> list[tuple[str, str]]:
    """(convolution, BatchNorm) module names where the BatchNorm's input is the convolution's output and nothing
    else reads it, each module called once per forward; found by one traced forward of ``sample``. Pairs with a
    module named in ``keep`` (a layer whose output a method reads) are left out."""
    return _traced_pairs(model, sample, keep)[0]


def _traced_pairs(model: nn.Module, sample: torch.Tensor, keep: frozenset[str]) -> tuple[list[tuple[str, str]], Any]:
    """:func:`conv_bn_pairs`, and the model's output on ``sample`` from the same forward."""
    named = dict(model.named_modules())
    convs = {name for name, m in named.items() if _foldable_conv(m)}
    norms = {name for name, m in named.items() if _foldable_norm(m)}
    calls: Counter = Counter()
    outputs: dict[str, torch.Tensor] = {}  # kept alive so that no later tensor reuses a storage counted here
    fed: dict[str, str] = {}
    handles = []

    def after_conv(module, args, output, name):
        calls[name] += 1
        if isinstance(output, torch.Tensor):
            outputs[name] = output

    def before_norm(module, args, name):
        calls[name] += 1
        for conv, output in outputs.items():
            if args and args[0] is output:
                fed[name] = conv

    consumers = _Consumers()
    try:
        for name in convs:
            handles.append(named[name].register_forward_hook(functools.partial(after_conv, name=name)))
        for name in norms:
            handles.append(named[name].register_forward_pre_hook(functools.partial(before_norm, name=name)))
        with torch.inference_mode(), consumers:
            output = model(sample)
    finally:
        for handle in handles:
            handle.remove()
    pairs, used = [], Counter(fed.values())
    for norm, conv in fed.items():
        conv_module, norm_module = named[conv], named[norm]
        if (calls[conv] == 1 and calls[norm] == 1 and used[conv] == 1 and not {conv, norm} & keep
                and consumers.reads[outputs[conv].untyped_storage().data_ptr()] == 1
                and conv_module.out_channels == norm_module.num_features):
            pairs.append((conv, norm))
    return pairs, output


# ---------------------------------------------------------------------------------------------------------------
# The copy
# ---------------------------------------------------------------------------------------------------------------


def _owner(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    parent, _, attribute = name.rpartition(".")
    return (model.get_submodule(parent) if parent else model), attribute


def _replace_tensors(module: nn.Module, convert) -> None:
    """Every parameter and buffer of ``module``'s tree replaced by ``convert(tensor)``, a new object: the copy
    shares its tensors with the caller's model, which must never see them change (``Module.to`` would write into
    the shared parameters' ``.data``)."""
    for sub in module.modules():
        for name, param in list(sub._parameters.items()):
            if param is not None:
                sub._parameters[name] = nn.Parameter(convert(param.detach()), requires_grad=False)
        for name, buffer in list(sub._buffers.items()):
            if buffer is not None:
                sub._buffers[name] = convert(buffer)


def _to_bfloat16(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.to(torch.bfloat16) if tensor.is_floating_point() else tensor


def _cast_inputs(module, args, kwargs):
    cast = functools.partial(tree_map, lambda v: _to_bfloat16(v) if isinstance(v, torch.Tensor) else v)
    return cast(args), cast(kwargs)


def _cast_outputs(module, args, kwargs, output):
    return tree_map(lambda v: v.float() if isinstance(v, torch.Tensor) and v.dtype == torch.bfloat16 else v, output)


def _hooked(model: nn.Module) -> bool:
    return any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks
               for m in model.modules()) or bool(nn.modules.module._global_forward_hooks
                                                  or nn.modules.module._global_forward_pre_hooks)


def _scripted(model: nn.Module) -> bool:
    return getattr(model, "supports_hooks", True) is False or any(
        isinstance(m, torch.jit.ScriptModule) for m in model.modules())


def _agree(ours: Any, theirs: Any) -> bool:
    """Whether two outputs hold the same tensors to CHECK_RTOL of their scale (the same non-finite places)."""
    mine, reference = tree_leaves(ours), tree_leaves(theirs)
    if len(mine) != len(reference):
        return False
    for a, b in zip(mine, reference):
        if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor):
            if a != b:
                return False
            continue
        if a.shape != b.shape or a.dtype != b.dtype:
            return False
        if not a.is_floating_point():
            if not torch.equal(a, b):
                return False
            continue
        finite = torch.isfinite(b)
        if not torch.equal(torch.isfinite(a), finite) or not torch.equal(a[~finite], b[~finite]):
            return False
        if finite.any():
            scale = float(b[finite].abs().max())
            if float((a[finite] - b[finite]).abs().max()) > CHECK_RTOL * max(scale, 1.0):
                return False
    return True


def folded_copy(model: nn.Module, sample: torch.Tensor, keep: frozenset[str] = frozenset(),
                precision: str = FLOAT32) -> nn.Module | None:
    """A new copy of ``model`` with its conv→BatchNorm pairs folded, its convolution weights in the device's
    fastest layout (``batching.CHANNELS_LAST``) and in ``precision``; None where no copy can be made or nothing
    would change. Its outputs on ``sample`` (one or a few rows) are checked against the model's in float32."""
    if _scripted(model) or _hooked(model):
        return None
    modules = list(model.modules())
    foldable = any(_foldable_norm(m) for m in modules) and any(_foldable_conv(m) for m in modules)
    if precision == FLOAT32 and not foldable:
        return None  # nothing to fold: the copy would be the model with its weights laid out anew, hardly faster
    shared = {id(t): t for t in (*model.parameters(), *model.buffers())}
    try:
        twin = copy.deepcopy(model, memo=dict(shared))
    except Exception:  # noqa: BLE001  (a model deepcopy refuses is run as it is)
        return None
    # before folding the copy computes what the model does, with the model's own tensors: its traced output is
    # the model's, to check the folded copy against
    pairs, reference = _traced_pairs(twin, sample[:1], keep)
    if not pairs and precision == FLOAT32:
        return None
    channels_last = CHANNELS_LAST.get(sample.device.type, False) and sample.dim() == 4
    convs = [m for m in twin.modules() if _foldable_conv(m) and m.weight.dim() == 4]
    with torch.no_grad():
        for conv_name, norm_name in pairs:
            conv, norm = twin.get_submodule(conv_name), twin.get_submodule(norm_name)
            weight, bias = fuse_conv_bn_weights(conv.weight, conv.bias, norm.running_mean, norm.running_var, norm.eps,
                                                norm.weight, norm.bias)
            conv.weight = nn.Parameter(weight.detach(), requires_grad=False)
            conv.bias = nn.Parameter(bias.detach(), requires_grad=False)
            parent, attribute = _owner(twin, norm_name)
            setattr(parent, attribute, nn.Identity())
        if channels_last:
            for conv in convs:
                conv.weight = nn.Parameter(conv.weight.detach().contiguous(memory_format=torch.channels_last),
                                           requires_grad=False)
        try:
            with torch.inference_mode():
                if not _agree(forward(twin, sample[:1]), reference):
                    return None
        except torch.cuda.OutOfMemoryError:
            raise
        except Exception:  # noqa: BLE001  (the copy fails where the model did not: run the model itself)
            return None
        if precision == BFLOAT16:
            _replace_tensors(twin, _to_bfloat16)
            twin.register_forward_pre_hook(_cast_inputs, with_kwargs=True)
            twin.register_forward_hook(_cast_outputs, with_kwargs=True)
    return twin


def fingerprint(model: nn.Module) -> tuple | None:
    """What a copy of ``model`` depends on: every parameter and buffer (its storage and version counter, bumped
    by any in-place write) and every module's train/eval flag. None where a tensor keeps no version counter (an
    inference tensor, written in place unseen): such a model's copies are never kept."""
    tensors = (*model.parameters(), *model.buffers())
    if any(t.is_inference() for t in tensors):
        return None
    return (tuple((t.data_ptr(), t._version, t.dtype, t.device) for t in tensors),
            tuple(m.training for m in model.modules()))


class _Kept:
    """The copies made so far, newest last, at most KEPT; a model that is gone takes its copies with it."""

    def __init__(self):
        self.lock = threading.RLock()  # a model collected while the lock is held forgets its copies re-entrantly
        self.entries: OrderedDict = OrderedDict()  # (id(model), keep, precision) -> (weakref, fingerprint, copy)

    def get(self, model, key, stamp):
        with self.lock:
            entry = self.entries.get(key)
            if entry is None or entry[0]() is not model or entry[1] != stamp:
                return None, False
            self.entries.move_to_end(key)
            return entry[2], True

    def put(self, model, key, stamp, twin):
        with self.lock:
            self.entries[key] = (weakref.ref(model, functools.partial(self._forget, key)), stamp, twin)
            self.entries.move_to_end(key)
            while len(self.entries) > KEPT:
                self.entries.popitem(last=False)

    def _forget(self, key, _ref):
        with self.lock:
            entry = self.entries.get(key)
            if entry is not None and entry[0]() is None:
                del self.entries[key]

    def clear(self):
        with self.lock:
            self.entries.clear()


KEPT_COPIES = _Kept()


def forward_model(model: nn.Module, sample: torch.Tensor, rows: int, keep: tuple[str, ...] | frozenset = (),
                  precision: str = FLOAT32) -> nn.Module:
    """The model to run one call's forward-only passes on: the kept folded copy of ``model`` where it is fresh,
    else a new one where the call's ``rows`` (passes × rows per pass) amortise building it (MIN_ROWS), else
    ``model`` itself (so too where no copy can be made). ``keep`` names modules whose outputs a method reads or
    replaces through hooks (the copy has them at the same path, unfolded); ``sample`` holds rows like the call's
    inputs. The caller holds the model's lock (explain's model_guard): the copy is checked in eval mode. In
    bfloat16 (only after :func:`check_precision`) a copy is always made, whatever ``rows``: the model cannot
    run in bfloat16 without one."""
    check_precision(precision, sample.device)
    keep = frozenset(keep)
    key = (id(model), keep, precision)
    stamp = fingerprint(model)
    twin, found = KEPT_COPIES.get(model, key, stamp) if stamp is not None else (None, False)
    if found:
        return twin if twin is not None else model
    if rows < MIN_ROWS and precision == FLOAT32:
        return model
    with torch.inference_mode(False):  # the copy's tensors must be ordinary ones, whatever the caller's mode
        twin = folded_copy(model, sample, keep, precision)
    if twin is None and precision == BFLOAT16:
        raise ParameterError("precision 'bfloat16' needs a copy of the model in bfloat16, and this model cannot be "
                             "copied (TorchScript, hooks on its modules, or a copy that does not reproduce it); use "
                             "precision='float32'")
    if stamp is not None:
        KEPT_COPIES.put(model, key, stamp, twin)
    return twin if twin is not None else model


def counterpart(model: nn.Module, twin: nn.Module, module: nn.Module) -> nn.Module:
    """``twin``'s module at the path where ``model`` holds ``module`` (``module`` itself where ``twin`` is the
    model)."""
    return module if twin is model else twin.get_submodule(module_name(model, module))


def module_name(model: nn.Module, module: nn.Module) -> str:
    """The dotted path of ``module`` in ``model``."""
    for name, candidate in model.named_modules():
        if candidate is module:
            return name
    raise ValueError("the module is not part of the model")


def fast_call(call: Call, inputs: torch.Tensor, rows: int, precision: str = FLOAT32, keep_layer: bool = False) -> Call:
    """``call`` on the model its forward-only passes should run on (:func:`forward_model`, ``rows`` the rows of
    those passes): the same targets, batches and progress; its ``layer_module`` the copy's module at the layer's
    path, kept unfolded where ``keep_layer`` (a hook reads or replaces its output). ``call`` itself where the
    model is run as it is."""
    keep = (module_name(call.model, call.layer_module),) if keep_layer and call.layer_module is not None else ()
    twin = forward_model(call.model, inputs, rows, keep, precision)
    if twin is call.model:
        return call
    layer_module = None if call.layer_module is None else counterpart(call.model, twin, call.layer_module)
    return replace(call, model=twin, layer_module=layer_module)


def clean_scores(call: Call, fast: Call, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits [N, K] of the model itself, as every method reports them; every target's clean score [T, N] in
    float64 from ``fast``, the call the perturbed passes run on): a perturbation that changes nothing then scores
    exactly the clean score, rounding included. One pass of the model, and one of the copy where there is one."""
    logits = call.predict(inputs)
    reference = logits if fast is call else fast.predict(inputs)
    return logits, call.scores(reference, slice(None)).double()
