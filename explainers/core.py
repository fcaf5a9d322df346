"""The public call, ``explain()``; what every method receives (``Call``) and returns (``Attribution``).

The method contract: ``explain()`` resolves the target (ranks from one clean forward pass when needed, names from
the class list) and the layer (with its channel count) *before* it estimates the cost and calls the method. A
method reads everything it needs from its arguments and returns what it computed; it never writes into a shared
context. Every method computes one attribution per resolved target, so several targets can share passes.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from .batching import Batches, Progress, default_batch_size, forward, preferred_batch_size
from .errors import ModelOutputError, ParameterError, SaliencyError
from .hooks import model_guard
from .layers import cached_catalogue, resolve_layer
from .manifest import jsonable
from .registry import TEXT, MethodInfo, get_method, modality_of
from .targets import Target, TargetSpec, target_key


@dataclass
class Attribution:
    """What a method returns, for T targets and N input rows.

    ``attribution`` [T, N, C, H, W] raw and unnormalised at input resolution; ``layer_attribution``
    [T, N, 1, h, w] at the layer's resolution (layer methods); ``extras`` one dict per target (e.g. integrated
    gradients' completeness delta, a tensor [N]); ``logits`` [N, K] of the method's own inputs when it computed
    them on the way (saves a pass), else None; ``notes`` per input row, what the method wants the user told
    (e.g. why its map is all zero), or None; ``target_notes`` [T][N] instead, where the notes differ by target;
    ``regions`` [N, H, W] integer labels of the features a region method scored (superpixels), shared by every
    target, so the picture can draw their outlines; None for pixel maps.
    """

    attribution: torch.Tensor
    layer_attribution: torch.Tensor | None = None
    extras: list[dict[str, Any]] | None = None
    logits: torch.Tensor | None = None
    notes: list[tuple[str, ...]] | None = None
    target_notes: list[list[tuple[str, ...]]] | None = None
    regions: torch.Tensor | None = None

    def notes_for(self, target: int) -> list[tuple[str, ...]] | None:
        """Target ``target``'s notes per row: its own where the method judged each target, else ``notes``."""
        return self.target_notes[target] if self.target_notes is not None else self.notes


@dataclass(frozen=True)
class Call:
    """Everything a method needs besides its inputs and parameters, resolved before the method runs.

    ``targets`` holds T resolved targets, each with one row per input row of this call.
    """

    model: nn.Module
    targets: tuple[Target, ...]
    batch_size: int
    progress: Progress
    seed: int
    bundle: Any = None  # the ModelBundle when there is one (pixel-space baselines need its normalisation)
    layer: Any = None  # the resolved LayerInfo (name, shape, layout, channels) for layer methods
    layer_module: nn.Module | None = None
    # the batch size in use, shared by every loop of the call (and its take() copies): halved on out-of-memory
    batches: Batches | None = None

    def __post_init__(self) -> None:
        if self.batches is None:
            object.__setattr__(self, "batches", Batches(self.batch_size, device_of(self.model)))

    @property
    def device(self) -> torch.device:
        return device_of(self.model)

    def generator(self, offset: int = 0) -> torch.Generator:
        """A CPU generator seeded from the call's seed: the same seed gives the same draws on any device."""
        return torch.Generator().manual_seed(int(self.seed) + offset)

    def take(self, rows: torch.Tensor) -> Call:
        """This call for inputs whose row i belongs to original row ``rows[i]`` (noisy copies, path points)."""
        return replace(self, targets=tuple(t.take(rows) for t in self.targets))

    def predict(self, inputs: torch.Tensor) -> torch.Tensor:
        """Logits of ``inputs`` without gradients, in batches of ``batch_size``."""
        return predict(self.model, inputs, self.batches)

    def scores(self, logits: torch.Tensor, rows: torch.Tensor | slice) -> torch.Tensor:
        """[T, B]: every target's score for ``logits`` [B, K] of rows ``rows``."""
        return torch.stack([target.score(logits, rows) for target in self.targets])

    def gradients(
        self,
        total: int,
        make_batch: Callable[[int, int], tuple[torch.Tensor, torch.Tensor]],
        consume: Callable[[int, int, torch.Tensor, torch.Tensor, torch.Tensor], None],
    ) -> None:
        """Input gradients of every target's score for ``total`` rows, built and used one batch at a time.

        ``make_batch(start, stop)`` returns (inputs, rows), ``rows`` giving each input's target row;
        ``consume(start, stop, inputs, gradients [T, B, ...], logits [B, K])`` keeps what the method needs.
        One forward pass per batch; the targets share it, one backward each.
        """
        count = len(self.targets)

        def compute(start, stop):
            batch, rows = make_batch(start, stop)
            batch = batch.detach().requires_grad_(True)
            with torch.enable_grad():
                logits = as_logits(self.model(batch))
                if count == 1:  # the common case, without the stacking
                    score = self.targets[0].score(logits, rows)
                    grads = torch.autograd.grad(score.sum(), batch)[0].unsqueeze(0)
                else:
                    scores = self.scores(logits, rows)
                    grads = torch.stack([torch.autograd.grad(scores[t].sum(), batch, retain_graph=t < count - 1)[0]
                                         for t in range(count)])
            return batch.detach(), grads, logits.detach()

        for start, stop, (batch, grads, logits) in self.batches.run(total, compute):
            consume(start, stop, batch, grads, logits)
            self.progress.advance(stop - start)


@dataclass
class Explanation:
    """What ``explain()`` returns for N input rows and one target.

    ``attribution`` is raw and unnormalised, [N, C, H, W] at input resolution (C = the input's channels for
    gradient methods, 1 for maps). ``target`` holds class indices, [N] or [N, 2] for a contrast. ``extras``
    carries method-specific results such as integrated gradients' completeness delta. ``seed`` is the one the
    random draws used (drawn and recorded when none was given). ``batch_size_used`` is the batch size the run
    finished with (smaller than asked when the GPU ran out of memory). ``notes`` holds, per row, what the user
    should be told beside the map (an all-zero map, a batch size reduced after out-of-memory). ``regions``
    [N, H, W] integer labels of the features a region method (LIME, KernelSHAP) scored, else None.
    """

    attribution: torch.Tensor
    target: torch.Tensor
    logits: torch.Tensor
    method: str
    params: dict[str, Any]
    elapsed_s: float
    objective: str = "logit"
    layer: str | None = None
    layer_attribution: torch.Tensor | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None
    batch_size_used: int | None = None
    notes: list[tuple[str, ...]] = field(default_factory=list)
    regions: torch.Tensor | None = None

    def record(self, row: int = 0) -> ExplanationRecord:
        """Row ``row`` as NumPy arrays and JSON-ready values: what the dashboard caches and manifests describe."""

        extras = {}
        for key, value in self.extras.items():
            if isinstance(value, torch.Tensor) and value.dim() >= 1 and len(value) == len(self.attribution):
                value = value[row]
            extras[key] = jsonable(value)
        return ExplanationRecord(
            attribution=self.attribution[row].detach().float().cpu().numpy(),
            layer_attribution=None
            if self.layer_attribution is None
            else self.layer_attribution[row].detach().float().cpu().numpy(),
            target=tuple(int(t) for t in self.target[row].reshape(-1).tolist()),
            logits=self.logits[row].detach().float().cpu().numpy(),
            method=self.method,
            params=jsonable(self.params),
            objective=self.objective,
            layer=self.layer,
            seed=self.seed,
            elapsed_s=self.elapsed_s,
            extras=extras,
            batch_size_used=self.batch_size_used,
            notes=tuple(self.notes[row]) if row < len(self.notes) else (),
            regions=None if self.regions is None else self.regions[row].detach().cpu().numpy(),
        )


@dataclass(frozen=True)
class ExplanationRecord:
    """One image's explanation in NumPy: ``attribution`` [C, H, W] raw, ``logits`` [K], ``target`` (class,) or
    (a, b) for a contrast; ``params`` and ``extras`` JSON-ready; ``notes`` sentences to show beside the map;
    ``regions`` [H, W] integer feature labels of a region method, else None."""

    attribution: np.ndarray
    target: tuple[int, ...]
    logits: np.ndarray
    method: str
    params: dict[str, Any]
    elapsed_s: float
    objective: str = "logit"
    layer: str | None = None
    layer_attribution: np.ndarray | None = None
    seed: int | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    batch_size_used: int | None = None
    notes: tuple[str, ...] = ()
    regions: np.ndarray | None = None

    @property
    def target_value(self) -> int | tuple[int, int]:
        """The class index, or the (a, b) pair of a contrast."""
        return self.target if len(self.target) > 1 else self.target[0]


# Two inputs closer than this (times max(1, |value|)) are the same input: far below one 8-bit pixel step in any
# normalisation (about 0.004 in [0, 1] pixels, more once divided by a std), and above float32 rounding of
# the blurs and means a baseline is built with.
SAME_INPUT_TOLERANCE = 1e-6


def same_input(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Elementwise: where ``a`` and ``b`` differ by rounding only (see ``SAME_INPUT_TOLERANCE``)."""
    scale = torch.maximum(a.abs(), b.abs()).clamp_min(1.0)
    return (a - b).abs() <= SAME_INPUT_TOLERANCE * scale


# A score gap f(x) − f(x′) smaller than this says the baseline scores as the input: a completeness error is then
# not a share of anything (dividing by it would print errors of 10⁹ %).
GAP_FLOOR = 1e-6


def completeness(attribution: torch.Tensor, score_gap: torch.Tensor) -> dict[str, torch.Tensor]:
    """The completeness keys of one target's ``attribution`` [N, ...] against ``score_gap`` [N] = f(x) − f(x′), as
    integrated gradients, DeepLIFT and the expected-gradient methods report them (Sundararajan et al. 2017,
    arXiv:1703.01365): ``completeness_delta`` = sum(A) − gap, ``score_gap``, and ``completeness_relative`` = delta
    / |gap|, or 0 where the gap is under GAP_FLOOR (no share to speak of: the delta alone says the error)."""
    delta = attribution.sum(dim=tuple(range(1, attribution.dim()))) - score_gap
    share = delta / score_gap.abs().clamp_min(GAP_FLOOR)
    return {
        "completeness_delta": delta.detach().cpu(),
        "score_gap": score_gap.detach().cpu(),
        "completeness_relative": torch.where(score_gap.abs() > GAP_FLOOR, share, torch.zeros_like(share))
        .detach().cpu(),
    }


def as_logits(output: Any) -> torch.Tensor:
    """Classifier output as [N, K]; torchvision's GoogLeNet/Inception return named tuples in train mode, Hugging
    Face's models an output mapping with ``logits``."""
    if isinstance(output, (tuple, dict)) and isinstance(getattr(output, "logits", None), torch.Tensor):
        output = output.logits
    if not isinstance(output, torch.Tensor) or output.dim() != 2:
        shape = list(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise SaliencyError(f"the model must return logits of shape [N, classes]; it returned {shape}")
    return output


SHOWN = 5  # rows or classes a message lists before "..."


def all_finite(tensor: torch.Tensor) -> bool:
    """Whether every value of ``tensor`` is finite. A NaN or an infinity makes the sum NaN or infinite, so a finite
    sum proves it in one reduction (about 15× faster than ``isfinite(t).all()``, which writes a mask as large as
    the tensor); only a sum that overflowed from finite values needs the elementwise check."""
    if not tensor.is_floating_point() and not tensor.is_complex():
        return True
    return math.isfinite(float(tensor.sum())) or bool(torch.isfinite(tensor).all())


def non_finite(logits: torch.Tensor) -> str | None:
    """Where logits [N, K] are NaN or infinite, said for a user ("NaN for row 0, classes 3, 17, ... (12 of
    1000)"; rows with the same classes said together), or None when every value is finite."""
    logits = logits.detach()
    if all_finite(logits):
        return None
    bad = ~torch.isfinite(logits)
    values = logits[bad]
    nan, inf = bool(torch.isnan(values).any()), bool(torch.isinf(values).any())
    kind = "NaN or infinite" if nan and inf else "NaN" if nan else "infinite"
    bad = bad.cpu()
    groups: dict[tuple[int, ...], list[int]] = {}
    for row in bad.any(dim=1).nonzero().flatten().tolist():
        groups.setdefault(tuple(bad[row].nonzero().flatten().tolist()), []).append(row)
    parts = [f"{_listing('row', rows)}, {_listing('class', classes, 'classes')} ({len(classes)} of {bad.shape[1]})"
             for classes, rows in list(groups.items())[:SHOWN]]
    more = f"; and {len(groups) - SHOWN} more sets of rows" if len(groups) > SHOWN else ""
    return f"{kind} for " + "; ".join(parts) + more


def _listing(one: str, items: Sequence[int], many: str | None = None) -> str:
    shown = ", ".join(str(i) for i in items[:SHOWN]) + (", ..." if len(items) > SHOWN else "")
    return f"{one if len(items) == 1 else many or one + 's'} {shown}"


def check_logits(logits: torch.Tensor) -> torch.Tensor:
    """``logits`` when every value is finite; else ModelOutputError naming the rows and classes.

    A NaN ranks first under argmax and its gradient is NaN: every target, ranking, probability and map drawn from
    such an output would look ordinary and mean nothing, so nothing is drawn."""
    found = non_finite(logits)
    if found is not None:
        raise ModelOutputError(
            f"the model's output is {found}: the model (or its weights) is broken, so no class can be ranked or "
            "explained; check its weights for NaN or infinite values, or load another model"
        )
    return logits


def unwrap(model_or_bundle: Any) -> tuple[nn.Module, Any, Sequence[str] | None]:
    if isinstance(model_or_bundle, nn.Module):
        return model_or_bundle, None, None
    if getattr(model_or_bundle, "needs_targets", False):
        raise SaliencyError(
            "a detection or segmentation model explains one box or region at a time: pick them first, "
            "bundle.scored(bundle.targets(bundle.predict(inputs)), inputs), and explain the scored bundle")
    if getattr(model_or_bundle, "needs_text", False):
        raise SaliencyError(
            "a text model explains one text at a time: bundle.scored(text) gives the bundle to explain and its inputs "
            "(the token embeddings), or call explainers.text.explain_text(bundle, text, methods, targets)")
    model = getattr(model_or_bundle, "model", None)
    if not isinstance(model, nn.Module):
        raise SaliencyError(f"expected a ModelBundle or an nn.Module; got {type(model_or_bundle).__name__}")
    return model, model_or_bundle, getattr(model_or_bundle, "categories", None)


def device_of(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def predict(model: nn.Module, inputs: torch.Tensor, batches: Batches) -> torch.Tensor:
    """Logits of ``inputs`` without gradients, in batches (halved on out-of-memory)."""

    def compute(start, stop):
        with torch.inference_mode():
            return as_logits(forward(model, inputs[start:stop]))

    return torch.cat([logits for _, _, logits in batches.run(len(inputs), compute)])


def clean_pass(model: nn.Module, inputs: torch.Tensor, batch_size: int | None) -> tuple[torch.Tensor, Batches]:
    """(logits, batches) of the clean prediction a rank needs: ``batch_size`` rows at a time, or all rows at once
    unless the free memory says fewer."""
    size = batch_size or default_batch_size(inputs.device, forward_only=True, model=model, inputs=inputs,
                                            preferred=len(inputs))
    batches = Batches(size, inputs.device)
    return predict(model, inputs, batches), batches


def method_batches(model: nn.Module, inputs: torch.Tensor, batch_size: int | None, forward_only: bool,
                   after: Batches | None = None, rows_at_once: int | None = None) -> Batches:
    """The batches a method call runs with: ``batch_size``, or the automatic size for its kind of passes; no
    larger than a size at which the clean pass (``after``) already ran out of memory. ``rows_at_once``: the most
    rows the method ever passes together (its passes per image times the images), when known; one row needs
    no choice."""
    rows_at_once = len(inputs) if rows_at_once is None else rows_at_once
    automatic = batch_size is None
    if automatic and rows_at_once <= 1:  # one row in all: the memory cap (never below 1) cannot bind,
        batch_size = preferred_batch_size(inputs.device, forward_only)  # so the free memory is not read
    size = batch_size or default_batch_size(inputs.device, forward_only=forward_only, model=model, inputs=inputs)
    batches = Batches(size, inputs.device, automatic=automatic)
    if after is not None and after.reduced_from:
        batches.reduced_from = list(after.reduced_from)
        batches.size = min(batches.size, after.size)
    return batches


def find_layer(model: nn.Module, bundle: Any, layer: Any, inputs: torch.Tensor):
    """(LayerInfo, module) of ``layer`` (None: the default layer), measured at the inputs' size."""

    shape = tuple(inputs[:1].shape)
    catalogue = getattr(bundle, "layers", None)
    if not catalogue or tuple(shape[-2:]) != (bundle.input_size, bundle.input_size):
        catalogue = cached_catalogue(model, shape)  # a bare module, or another input size than measured
    if layer is None and bundle is not None and getattr(bundle, "default_layer", None) in {e.name for e in catalogue}:
        layer = bundle.default_layer
    name, module = resolve_layer(model, layer, catalogue, input_shape=shape)
    return next(entry for entry in catalogue if entry.name == name), module


def prepare_inputs(model: nn.Module, inputs: Any) -> torch.Tensor:
    """``inputs`` checked ([N, C, H, W], finite) and moved to the model's device and dtype, contiguous."""
    if not isinstance(inputs, torch.Tensor) or inputs.dim() != 4:
        shape = list(inputs.shape) if isinstance(inputs, torch.Tensor) else type(inputs).__name__
        raise SaliencyError(f"inputs must be a preprocessed tensor [N, C, H, W]; got {shape}")
    if len(inputs) == 0:
        raise SaliencyError("inputs hold no rows; give at least one image [1, C, H, W]")
    if not all_finite(inputs):
        raise SaliencyError("inputs contain NaN or infinite values")
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), inputs.dtype)
    # contiguous NCHW: a channels-last view (e.g. from a permute) would pick other conv kernels per batch
    return inputs.detach().to(device=device_of(model), dtype=dtype).contiguous()


def check_batch_size(batch_size: Any) -> None:
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ParameterError(f"batch_size must be a positive integer; got {batch_size!r}")


@dataclass
class Request:
    """A call checked before anything runs: the one prepare step of ``explain``, ``explain_many`` and
    ``explain_layers`` (see :func:`prepare`). ``targets`` maps each requested target's key (``target_key``) to
    its parsed spec; ``params`` holds each method's validated parameters (defaults filled in)."""

    model: nn.Module
    bundle: Any
    categories: Sequence[str] | None
    inputs: torch.Tensor
    infos: dict[str, MethodInfo]
    params: dict[str, dict[str, Any]]
    targets: dict[Any, TargetSpec]
    objective: str
    batch_size: int | None
    seed: int
    layer: Any

    @property
    def hw(self) -> tuple[int, int]:
        return tuple(self.inputs.shape[-2:])

    def find_layer(self, layer: Any = None) -> tuple[Any, nn.Module]:
        """(LayerInfo, module) of ``layer``, or of the requested layer (None: the model's default one)."""
        return find_layer(self.model, self.bundle, self.layer if layer is None else layer, self.inputs)

    def layer_for(self, method: str) -> tuple[Any, nn.Module | None]:
        """The requested layer resolved for ``method``, or (None, None) when it uses none."""
        return self.find_layer() if self.infos[method].needs_layer else (None, None)

    def cost(self, method: str, layer_info: Any = None):
        """``method``'s passes per image at the inputs' size on ``layer_info``'s channels."""
        return self.infos[method].cost.passes(self.params[method], self.hw, getattr(layer_info, "channels", None))

    def units(self, method: str, layer_info: Any = None) -> int:
        """The progress units of one call of ``method``: the passes that dominate (backward ones for gradient
        methods, else forward ones) times the rows."""
        cost = self.cost(method, layer_info)
        return (cost.backward or cost.forward) * len(self.inputs)


def prepare(model_or_bundle: Any, inputs: Any, methods: Sequence[str], targets: Sequence[Any], *, layer: Any = None,
            objective: str = "logit", batch_size: int | None = None, seed: int | None = None,
            params: dict[str, dict[str, Any]] | None = None) -> Request:
    """Every check a call makes before it computes, in one order, so every entry point fails the same way: the
    methods and their parameters, the batch size, the model, the methods' availability on it, the layer, the
    inputs, the targets. A missing ``seed`` is drawn (and recorded in each Explanation)."""
    methods = list(dict.fromkeys(methods))
    keyed = {target_key(t): t for t in targets}
    if not methods or not keyed:
        raise ParameterError("explain_many needs at least one method and one target")
    params = dict(params or {})
    unknown = sorted(set(params) - set(methods))
    if unknown:
        raise ParameterError(f"params given for {unknown[0]!r}, which is not among the methods asked for")
    infos = {name: get_method(name) for name in methods}
    model, bundle, categories = unwrap(model_or_bundle)
    modality = modality_of(model)
    if modality == TEXT and modality_of(bundle) != TEXT:  # baselines and features are read off the text's bundle
        raise SaliencyError("explain a scored text: TextBundle.scored(text) gives the bundle and its inputs "
                            "(explain(scored, scored.inputs, method)); the bare token-embedding scorer carries no "
                            "text, so no baseline or feature of it can be made")
    for info in infos.values():
        if not info.applies_to(modality):  # before its parameters: they would be checked against the wrong set
            raise SaliencyError(f"{info.unavailable_reason(model)}; pick another method")
    validated = {name: info.validate(params.get(name, {}), modality) for name, info in infos.items()}
    check_batch_size(batch_size)
    for name, info in infos.items():
        reason = info.unavailable_reason(model, validated[name])
        if reason is not None:
            raise SaliencyError(f"{reason}; pick another method")
    if layer is not None and not any(info.needs_layer for info in infos.values()):
        raise SaliencyError(f"method {methods[0]!r} does not use a layer; drop layer={layer!r} or pick a CAM method")
    if objective != "logit" and getattr(model, "dense_targets", None) is not None:
        raise ParameterError(
            f"objective {objective!r} would take a softmax across the picked boxes or regions, which are not the "
            "classes of one prediction; a box's score is already its class's probability: use objective='logit'")
    inputs = prepare_inputs(model, inputs)
    specs = {key: TargetSpec(target, len(inputs), categories, objective) for key, target in keyed.items()}
    seed = random.SystemRandom().randrange(2**31) if seed is None else int(seed)
    return Request(model=model, bundle=bundle, categories=categories, inputs=inputs, infos=infos, params=validated,
                   targets=specs, objective=objective, batch_size=batch_size, seed=seed, layer=layer)


def explain_method(request: Request, method: str, progress: Callable[[int, int], object] | None = None,
                   ) -> dict[Any, Explanation]:
    """The one body: ``method`` for every requested target from one method call, split into one Explanation per
    target ({target key: Explanation}); the caller holds ``model_guard``.

    Ranks are resolved from one clean pass (shared by the targets); the batch size is the request's, or the
    automatic one for the method's kind of passes; the method's own clean pass gives the logits when it made
    one. ``elapsed_s`` is the call's time for every target. ``progress(done, total)`` counts the passes that
    dominate (``Request.units``); returning False, or raising Cancelled, stops the run.
    """
    started = time.perf_counter()
    inputs, device = request.inputs, request.inputs.device
    layer_info, layer_module = request.layer_for(method)
    cost = request.cost(method, layer_info)
    specs = request.targets
    ranks = any(spec.needs_logits for spec in specs.values())
    clean_logits, clean_batches = clean_pass(request.model, inputs, request.batch_size) if ranks else (None, None)
    if clean_logits is not None:  # before the method's passes: ranks of a NaN output are meaningless
        check_logits(clean_logits)
    targets = [spec.resolve(clean_logits, device=device) for spec in specs.values()]
    batches = method_batches(request.model, inputs, request.batch_size, cost.backward == 0, clean_batches,
                             rows_at_once=len(inputs) * max(cost.forward, cost.backward, 1))
    call = Call(model=request.model, targets=tuple(targets), batch_size=batches.requested,
                progress=Progress(request.units(method, layer_info), progress), seed=request.seed,
                bundle=request.bundle, layer=layer_info, layer_module=layer_module, batches=batches)
    result = run_method(request.infos[method], call, inputs, request.params[method])
    logits = result.logits if result.logits is not None else clean_logits
    if logits is None:
        logits = call.predict(inputs)
    call.progress.finish()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - started
    explanations = {}
    for t, key in enumerate(specs):
        part = Attribution(
            attribution=result.attribution[t : t + 1],
            layer_attribution=None if result.layer_attribution is None else result.layer_attribution[t : t + 1],
            logits=logits,
            notes=result.notes_for(t),
            regions=result.regions,
        )
        explanations[key] = explanation_of(
            request, method, part, targets[t], call.batches, elapsed, cost.backward > 0,
            layer=getattr(layer_info, "name", None), extras=(result.extras or [{}] * len(targets))[t])
    return explanations


def explanation_of(request: Request, method: str, part: Attribution, target: Target, batches: Batches,
                   elapsed_s: float, gradients: bool, layer: str | None, extras: dict[str, Any] | None = None,
                   ) -> Explanation:
    """One target's Explanation from its one-target ``part``, with non-finite values zeroed and the notes the
    user should read beside the map (see :func:`checked`). Refused (ModelOutputError) when the logits are not
    finite: every entry point's Explanation comes through here."""
    check_logits(part.logits)
    score_notes = getattr(request.model, "score_notes", None)  # what the model says of its own scores (a lost box)
    if score_notes is not None:
        said = score_notes(part.logits, target.indices)
        own = part.notes_for(0) or [()] * len(said)
        part = replace(part, notes=[tuple(a) + tuple(b) for a, b in zip(own, said, strict=True)], target_notes=None)
    attribution, layer_attribution, notes = checked(part, request.inputs, batches, gradients=gradients)
    return Explanation(
        attribution=attribution,
        target=target.indices.detach().cpu().clone(),
        logits=part.logits.detach(),
        method=method,
        params=request.params[method],
        elapsed_s=elapsed_s,
        objective=request.objective,
        layer=layer,
        layer_attribution=layer_attribution,
        extras=dict(extras or {}),
        seed=request.seed,
        batch_size_used=batches.size,
        notes=notes,
        regions=None if part.regions is None else part.regions.detach().cpu(),
    )


def explain(
    model_or_bundle: Any,
    inputs: torch.Tensor,
    method: str,
    target: Any = None,
    *,
    layer: Any = None,
    objective: str = "logit",
    batch_size: int | None = None,
    seed: int | None = None,
    progress: Callable[[int, int], object] | None = None,
    **params: Any,
) -> Explanation:
    """Explain ``target``'s score for each row of ``inputs`` [N, C, H, W] with ``method``.

    ``target``: an int or one per row, "topK" (k-th ranked prediction), a class name, or a contrast
    (``Contrast(a, b)`` or "a vs b", meaning score(a) - score(b)); see :class:`~explainers.targets.TargetSpec`.
    ``objective``: "logit", "probability" or "log_probability". ``seed`` fixes every random draw; each row
    draws the same noise, so a row's map equals the map of that image alone. ``progress(done, total)`` is
    called after each batch of passes; returning False, or raising Cancelled, stops the run.

    The one-method, one-target case of ``explain_many``: the same prepare step (:func:`prepare`) and the same
    body (:func:`explain_method`). The model runs in eval mode (no BatchNorm statistics updated, no dropout) and
    is left exactly as it was found: no hooks, the same parameters and buffers, the same train/eval flags.
    """
    request = prepare(model_or_bundle, inputs, [method], [target], layer=layer, objective=objective,
                      batch_size=batch_size, seed=seed, params={method: params})
    with model_guard(request.model):
        (explanation,) = explain_method(request, method, progress).values()
    return explanation


CONSTANT_NOTE = ("the image is a single colour: whatever structure the map shows comes from the model (its "
                 "padding, its biases), not from the image")
ZERO_PREFIX = "the map is all zero"  # every note on an all-zero map starts so, the methods' own ones too
ZERO_GRADIENT_NOTE = f"{ZERO_PREFIX}: the gradient of the score vanished on this input"
ZERO_MAP_NOTE = f"{ZERO_PREFIX}: nothing the method changed moved the score on this input"
NON_FINITE_NOTE = "the method produced {} non-finite values (an overflow or 0/0) on this input; they are shown as 0"


def checked(result: Attribution, inputs: torch.Tensor, batches: Batches, gradients: bool):
    """The first target's (attribution, layer_attribution) with non-finite values set to 0, and per row the
    notes the user should read beside the map: degenerate inputs, all-zero maps, a reduced batch size."""
    attribution = result.attribution[0].detach()
    layer_attribution = None if result.layer_attribution is None else result.layer_attribution[0].detach()
    bad = [0] * len(inputs)
    if not all_finite(attribution):  # a safety net: the methods guard their own divisions, and NaN must never
        bad = (~torch.isfinite(attribution)).flatten(1).sum(dim=1).tolist()  # reach a picture
        attribution = torch.nan_to_num(attribution, nan=0.0, posinf=0.0, neginf=0.0)
    if layer_attribution is not None and not all_finite(layer_attribution):
        layer_attribution = torch.nan_to_num(layer_attribution, nan=0.0, posinf=0.0, neginf=0.0)
    # per row, by extremes (a reduction each) rather than elementwise masks as large as the input
    flat = inputs.flatten(2)
    constant = [highs == lows for highs, lows in zip(flat.amax(dim=2).tolist(), flat.amin(dim=2).tolist(),
                                                     strict=True)]
    values = attribution.flatten(1)
    zero = [high == 0 and low == 0 for high, low in zip(values.amax(dim=1).tolist(), values.amin(dim=1).tolist(),
                                                        strict=True)]
    shared = [note for note in (batches.note(),) if note]
    notes = []
    for row in range(len(inputs)):
        own = list(result.notes_for(0)[row]) if result.notes_for(0) else []
        # unless the method said why, or the map is zero only because its non-finite values were (the NON_FINITE
        # note says so; "the gradient vanished" beside it would contradict it)
        if zero[row] and not bad[row] and not any(note.startswith(ZERO_PREFIX) for note in own):
            own.insert(0, ZERO_GRADIENT_NOTE if gradients else ZERO_MAP_NOTE)
        if bad[row]:
            own.append(NON_FINITE_NOTE.format(bad[row]))
        if constant[row]:
            own.append(CONSTANT_NOTE)
        notes.append(tuple(own + shared))
    return attribution, layer_attribution, notes


def run_method(info: MethodInfo, call: Call, inputs: torch.Tensor, params: dict[str, Any]) -> Attribution:
    """Call a method and check that it kept the contract: one attribution per target, for every row."""
    result = info.fn(call, inputs, **params)
    expected = (len(call.targets), len(inputs))
    if not isinstance(result, Attribution) or tuple(result.attribution.shape[:2]) != expected:
        got = list(result.attribution.shape) if isinstance(result, Attribution) else type(result).__name__
        raise RuntimeError(f"method {info.name!r} broke the contract: expected [T={expected[0]}, N={expected[1]}, "
                           f"C, H, W], got {got}")
    return result


def class_scores(model_or_bundle: Any, inputs: torch.Tensor) -> np.ndarray:
    """The model's raw output [N, K] for ``inputs``, in eval mode, as NumPy: a classifier's logits, a scored
    detector's box scores, a scored segmenter's region sums; ModelOutputError when they are not finite (see
    :func:`check_logits`). What "top1" ranks by."""
    model, _, _ = unwrap(model_or_bundle)
    inputs = prepare_inputs(model, inputs)
    with model_guard(model), torch.inference_mode():
        return check_logits(as_logits(model(inputs))).float().cpu().numpy()


def class_probabilities(model_or_bundle: Any, inputs: torch.Tensor) -> np.ndarray:
    """Softmax probabilities [N, K] of the model for ``inputs`` (:func:`class_scores` through a softmax)."""
    return torch.from_numpy(class_scores(model_or_bundle, inputs)).softmax(-1).numpy()
