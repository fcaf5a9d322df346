"""``explain_many()``: several methods for several targets, sharing the passes wherever the maths allows.

The one-pass set (``shared_methods()``) shares one forward pass with the layer captured and one backward per
target: vanilla gradient (Simonyan et al. 2013, arXiv:1312.6034), input × gradient (Shrikumar et al. 2016,
arXiv:1605.01713), Grad-CAM (Selvaraju et al. 2017, arXiv:1610.02391), Grad-CAM++ (Chattopadhyay et al. 2018,
arXiv:1710.11063), XGrad-CAM (Fu et al. 2020, arXiv:2008.02312), LayerCAM (Jiang et al. 2021), HiResCAM (Draelos &
Carin 2020, arXiv:2011.08891) and Eigen-CAM (Muhammad & Yeasin 2020, arXiv:2008.00299). They differ only in what
they do with the input gradient, or with the layer's activations and gradients, so each reads the same tensors its
own method call would have computed. Guided backpropagation (Springenberg et al. 2015, arXiv:1412.6806),
deconvnet (Zeiler & Fergus 2014, arXiv:1311.2901) and Guided Grad-CAM add one backward each through the same
forward pass: its ReLUs are hooked with a switchable backward rule (``hooks.BackwardRule``), plain for the others.

Every other method runs once, as one call of ``core.explain_method`` (the body ``explain()`` runs) given every
requested target, and is split into one Explanation per target: the perturbation methods (Score-CAM, occlusion,
RISE) score every target from the same masked or occluded forward passes; SmoothGrad's noisy copies and
integrated gradients' path are built once, and each batch of them has one forward pass and one backward per target
(``Call.gradients``).
"""

from __future__ import annotations

import contextlib
import numbers
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .batching import Batches, Progress
from .core import Attribution, Explanation, Request, as_logits, explain_method, explanation_of, method_batches, prepare
from .errors import ParameterError, SaliencyError
from .hooks import BackwardRule, capture_layer, model_guard, rectified_backward
from .layers import to_nchw
from .methods import cam
from .methods.gradient import INPUT_MAPS
from .methods.guided import NO_RELU, RULE_OF
from .registry import get_method
from .targets import Contrast, Target, join_targets
from .timing import PassTimes

GUIDED_CAM = "guided_gradcam"  # guided backprop times Grad-CAM: both from the shared pass


def shared_methods() -> tuple[str, ...]:
    """The methods computed from the one shared forward pass; none has a parameter that changes its passes (the
    CAMs' ``relu`` applies after them)."""
    return (*INPUT_MAPS, *RULE_OF, *cam.LAYER_MAPS, GUIDED_CAM)


def estimated_seconds(times: PassTimes, methods: Sequence[str], targets: int, hw: tuple[int, int],
                      channels: int | None = None, params: dict[str, dict[str, Any]] | None = None) -> float:
    """Seconds per image that ``explain_many`` takes for ``methods`` and ``targets`` targets, from measured pass
    times: the shared set's one forward with a backward per target (and per rectified rule), then each other
    method's passes, its targets sharing them (``PassTimes.seconds``)."""
    params = params or {}
    shared = [m for m in methods if m in shared_methods()]
    seconds = 0.0
    if shared:
        costs = [get_method(m).passes(params.get(m, {}), hw, channels) for m in shared]
        rules = len({RULE_OF.get(m, "guided") for m in shared if m in RULE_OF or m == GUIDED_CAM})
        plain = any(c.backward for m, c in zip(shared, costs, strict=True) if m not in RULE_OF)
        if plain or rules:
            backwards = max(targets, 1) * (int(plain) + rules)
            seconds += times.forward_backward + (backwards - 1) * times.backward
        else:
            seconds += times.forward
    for method in methods:
        if method not in shared:
            seconds += times.seconds(get_method(method).passes(params.get(method, {}), hw, channels), targets)
    return seconds


def explain_many(
    model_or_bundle: Any,
    inputs: torch.Tensor,
    methods: Sequence[str] | str,
    targets: Sequence[Any] | Any = ("top1",),
    *,
    layer: Any = None,
    objective: str = "logit",
    seed: int = 0,
    batch_size: int | None = None,
    progress: Callable[[int, int], object] | None = None,
    params: dict[str, dict[str, Any]] | None = None,
) -> dict[tuple[str, Any], Explanation]:
    """Every method of ``methods`` for every target of ``targets``, on ``inputs`` [N, C, H, W].

    Returns ``{(method, target_key(target)): Explanation}`` in request order (methods, then targets); each
    Explanation is what ``explain(model_or_bundle, inputs, method, target, layer=layer, seed=seed,
    **params[method])`` returns, ``layer`` going to the methods that use one. ``targets`` is a list of
    targets, each anything ``explain()`` accepts ("top1", an int, a class name, a Contrast, one per row); a
    single str, int or Contrast counts as one. ``params`` maps a method name to its parameters.

    The methods of ``shared_methods()`` come from one forward pass (the layer captured when a CAM is asked
    for; ranks read from its logits) and one backward per target; their ``elapsed_s`` is that shared time and
    ``batch_size_used`` the shared pass's. Every other method runs once for all the targets (``explain()``'s
    body, ``core.explain_method``), its targets sharing its passes, and is split per target; its ``elapsed_s``
    is that one call's time. ``progress(done, total)`` covers the whole run; returning False stops it. The
    model is left exactly as found.
    """
    methods = [methods] if isinstance(methods, str) else list(dict.fromkeys(methods))
    if isinstance(targets, (str, numbers.Integral, Contrast)) or targets is None:
        targets = [targets]
    request = prepare(model_or_bundle, inputs, methods, list(targets), layer=layer, objective=objective,
                      batch_size=batch_size, seed=seed, params=params)
    shared = [m for m in methods if m in shared_methods()]
    together = [m for m in methods if m not in shared]
    results: dict[tuple[str, Any], Explanation] = {}
    with model_guard(request.model):
        layer_info, layer_module = (request.find_layer() if any(request.infos[m].needs_layer for m in methods)
                                    else (None, None))
        backward = any(request.cost(m, layer_info).backward for m in shared)
        # progress counts what dominates, as explain() does: the shared backward passes (or its forward), then
        # each method call's own units
        shared_units = len(request.inputs) * (len(request.targets) if backward else 1) if shared else 0
        units = {m: request.units(m, layer_info) for m in together}
        overall = Progress(shared_units + sum(units.values()), progress)
        if shared:
            results.update(explain_shared(request, {m: (m, 0) for m in shared}, [(layer_info, layer_module)],
                                          overall))
        for method in together:
            for key, explanation in explain_method(request, method, share_of(overall, units[method])).items():
                results[(method, key)] = explanation
    overall.finish()
    return {(m, key): results[(m, key)] for m in methods for key in request.targets}


def share_of(overall: Progress, units: int) -> Callable[[int, int], None]:
    """A progress callback for one nested method call that moves ``overall`` across its ``units``; a cancel
    from the overall callback raises there, inside the nested call."""
    start = overall.done

    def callback(done: int, total: int) -> None:
        overall.advance(max(0, start + units * done // max(total, 1) - overall.done))

    callback.say = overall.say  # what the nested method says (an optimisation's iteration) reaches the caller
    return callback


@dataclass
class SharedGradients:
    """What the shared pass needs for a set of methods: the input gradient, the layers' gradients, the rectified
    rules (one more backward per target each), and whether any backward is needed at all."""

    want_input: bool
    want_layer: bool
    capturing: bool
    rules: list[str]

    @classmethod
    def of(cls, names: set[str]) -> SharedGradients:
        rules = list(dict.fromkeys([RULE_OF[m] for m in sorted(names) if m in RULE_OF]
                                   + (["guided"] if GUIDED_CAM in names else [])))
        return cls(want_input=bool(names & set(INPUT_MAPS)),
                   want_layer=GUIDED_CAM in names or bool(names & (set(cam.LAYER_MAPS) - {"eigencam"})),
                   capturing=GUIDED_CAM in names or bool(names & set(cam.LAYER_MAPS)), rules=rules)

    @property
    def plain(self) -> bool:
        return self.want_input or self.want_layer

    @property
    def backward(self) -> bool:
        return self.plain or bool(self.rules)


@dataclass
class SharedTensors:
    """The shared pass's tensors over all rows: logits [N, K]; input gradients [T, N, ...]; per captured layer,
    activations [N, C, h, w] and gradients [T, N, C, h, w]; per rectified rule, input gradients [T, N, ...]."""

    targets: list[Target]
    logits: torch.Tensor
    input_grads: torch.Tensor | None
    activations: list[torch.Tensor]
    layer_grads: list[torch.Tensor] | None
    rectified: dict[str, torch.Tensor]


def _shared_batch(model, batch: torch.Tensor, rows_of: Callable[[torch.Tensor], list[Target]], layers, wanted,
                  switch: BackwardRule):
    """One batch of the shared pass: its forward (layers captured), then one plain backward per target and one
    per target and rectified rule, all through the forward's retained graph (the last frees it)."""

    def nchw(tensor, index):
        info = layers[index][0]
        return to_nchw(tensor, info.layout, info.grid)

    with contextlib.ExitStack() as stack:
        captured = [stack.enter_context(capture_layer(module)) for _, module in layers]
        if not wanted.backward:
            with torch.inference_mode():
                logits = as_logits(model(batch))
            activations = [nchw(c.output.detach(), i) for i, c in enumerate(captured)]
            return rows_of(logits), logits, None, activations, None, {}
        # requires_grad on the input guarantees a graph even for a model with frozen parameters
        batch = batch.requires_grad_(True)
        with torch.enable_grad():
            switch.rule = None
            logits = as_logits(model(batch))
            rows = rows_of(logits.detach())
            wrt = ([batch] if wanted.want_input else []) + ([c.output for c in captured] if wanted.want_layer else [])
            jobs = [(t, rule) for t in range(len(rows)) for rule in ([None] if wanted.plain else []) + wanted.rules]
            grads: dict[tuple[int, str | None], tuple[torch.Tensor, ...]] = {}
            for j, (t, rule) in enumerate(jobs):
                switch.rule = rule
                score = rows[t].score(logits).sum()
                grads[(t, rule)] = torch.autograd.grad(score, wrt if rule is None else [batch],
                                                       retain_graph=j < len(jobs) - 1)
            switch.rule = None
        count, first = len(rows), int(wanted.want_input)
        input_grads = torch.stack([grads[(t, None)][0] for t in range(count)]) if wanted.want_input else None
        layer_grads = ([torch.stack([nchw(grads[(t, None)][first + i], i) for t in range(count)])
                        for i in range(len(captured))] if wanted.want_layer else None)
        rectified = {rule: torch.stack([grads[(t, rule)][0] for t in range(count)]) for rule in wanted.rules}
        activations = [nchw(c.output.detach(), i) for i, c in enumerate(captured)]
        return rows, logits.detach(), input_grads, activations, layer_grads, rectified


def _shared_tensors(model, inputs, targets_of, layers, wanted: SharedGradients, batches: Batches,
                    progress: Progress, units_per_row: int) -> SharedTensors:
    """The shared pass over every batch (ReLUs hooked when a rectified rule is asked for), joined over rows."""
    switch = BackwardRule()
    parts = []
    with rectified_backward(model, rule=switch) if wanted.rules else contextlib.nullcontext(1) as hooked:
        if hooked == 0:
            raise SaliencyError(NO_RELU)
        for start, stop, part in batches.run(len(inputs), lambda start, stop: _shared_batch(
                model, inputs[start:stop].detach(), lambda logits: targets_of(logits, start, stop), layers, wanted,
                switch)):
            parts.append(part)
            progress.advance((stop - start) * units_per_row)
    count = len(parts[0][0])
    return SharedTensors(
        targets=[join_targets([p[0][t] for p in parts]) for t in range(count)],
        logits=torch.cat([p[1] for p in parts]),
        input_grads=torch.cat([p[2] for p in parts], dim=1) if wanted.want_input else None,
        activations=[torch.cat([p[3][i] for p in parts]) for i in range(len(layers))],
        layer_grads=([torch.cat([p[4][i] for p in parts], dim=1) for i in range(len(layers))]
                     if wanted.want_layer else None),
        rectified={rule: torch.cat([p[5][rule] for p in parts], dim=1) for rule in wanted.rules},
    )


def _shared_map(inputs, tensors: SharedTensors, method: str, params: dict[str, Any], at: int, t: int,
                eigen: dict[int, torch.Tensor]) -> Attribution:
    """Target t's map of ``method`` at layer ``at``, shaped as a one-target call has it: the same arithmetic as the
    method's own call."""
    logits = tensors.logits
    if method in INPUT_MAPS:
        return Attribution(INPUT_MAPS[method](inputs, tensors.input_grads[t : t + 1]), logits=logits)
    if method in RULE_OF:
        return Attribution(tensors.rectified[RULE_OF[method]][t : t + 1], logits=logits)
    activations = tensors.activations[at]
    if method == GUIDED_CAM:  # as guided_cam.py: the guided map times the upsampled Grad-CAM map
        captured = cam.Captured(activations, tensors.layer_grads[at][t : t + 1], logits)
        coarse = cam.finish(inputs, cam.LAYER_MAPS["gradcam"](captured), params["relu"], logits)
        return Attribution(tensors.rectified["guided"][t : t + 1] * coarse.attribution,
                           layer_attribution=coarse.layer_attribution, logits=logits)
    if method == "eigencam":  # class-agnostic: one map serves every target
        if at not in eigen:
            eigen[at] = cam.LAYER_MAPS[method](cam.Captured(activations, None, logits))
        return cam.finish(inputs, eigen[at], params["relu"], logits)
    maps = cam.LAYER_MAPS[method](cam.Captured(activations, tensors.layer_grads[at][t : t + 1], logits))
    return cam.finish(inputs, maps, params["relu"], logits)


def shared_pass(model, inputs: torch.Tensor, plans: dict[Any, tuple], targets_of: Callable[[torch.Tensor, int, int],
                list[Target]], layers: Sequence[tuple[Any, Any]], batches: Batches, progress: Progress,
                units_per_row: int) -> tuple[dict[Any, Attribution], torch.Tensor, list[Target]]:
    """The shared set's methods from one batched forward pass, one plain backward per target and one backward per
    target and rectified rule (see the module docstring).

    ``plans`` maps a key to (method of ``shared_methods()``, its validated params[, index into ``layers``, 0 when
    not given]); ``layers`` is a list of (layer info, module), every one captured on the same forward pass and
    reached by the same backward (a layer sweep is one pass). ``targets_of(logits, start, stop)`` gives the
    targets of rows start:stop from that batch's logits (so a rank costs no clean pass). Returns ({key:
    Attribution [T, N, ...]}, logits [N, K], the targets joined over the batches); each map is what the method's
    own call computes, target by target. Progress advances ``units_per_row`` per row done.
    """
    wanted = SharedGradients.of({plan[0] for plan in plans.values()})
    layers = list(layers) if wanted.capturing else []
    tensors = _shared_tensors(model, inputs, targets_of, layers, wanted, batches, progress, units_per_row)
    eigen: dict[int, torch.Tensor] = {}

    def joined(parts: list[Attribution]) -> Attribution:
        layer_parts = [p.layer_attribution for p in parts]
        return Attribution(torch.cat([p.attribution for p in parts]), logits=tensors.logits,
                           layer_attribution=None if layer_parts[0] is None else torch.cat(layer_parts))

    count = len(tensors.targets)
    results = {key: joined([_shared_map(inputs, tensors, plan[0], plan[1], plan[2] if len(plan) > 2 else 0, t, eigen)
                            for t in range(count)])
               for key, plan in plans.items()}
    return results, tensors.logits, tensors.targets


def explain_shared(request: Request, plans: dict[Any, tuple[str, int]], layers, progress: Progress,
                   ) -> dict[tuple[Any, Any], Explanation]:
    """The shared set's Explanations from ``shared_pass``: {(name, target key): Explanation} for every plan
    ``name: (method, index into layers)`` and requested target."""
    started = time.perf_counter()
    inputs, device = request.inputs, request.inputs.device
    specs = list(request.targets.values())
    costs = {method: request.cost(method, layers[at][0]) for method, at in plans.values()}
    backward = any(cost.backward for cost in costs.values())
    batches = method_batches(request.model, inputs, request.batch_size, not backward)
    maps, logits, targets = shared_pass(
        request.model, inputs,
        {name: (method, request.params[method], at) for name, (method, at) in plans.items()},
        lambda logits, start, stop: [spec.resolve_rows(logits, start, stop, device) for spec in specs],
        layers, batches, progress, len(specs) if backward else 1)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - started
    results = {}
    for name, (method, at) in plans.items():
        for t, key in enumerate(request.targets):
            result = maps[name]
            part = Attribution(result.attribution[t : t + 1], logits=logits, layer_attribution=None
                               if result.layer_attribution is None else result.layer_attribution[t : t + 1])
            layer = layers[at][0].name if request.infos[method].needs_layer else None
            results[(name, key)] = explanation_of(request, method, part, targets[t], batches, elapsed,
                                                  costs[method].backward > 0, layer=layer)
    return results


def explain_layers(
    model_or_bundle: Any,
    inputs: torch.Tensor,
    method: str,
    target: Any = "top1",
    layers: Sequence[Any] = (),
    *,
    objective: str = "logit",
    seed: int = 0,
    batch_size: int | None = None,
    progress: Callable[[int, int], object] | None = None,
    **params: Any,
) -> dict[str, Explanation]:
    """A layer sweep in one pass: ``method`` (a one-capture CAM of ``shared_methods()``) at every layer of
    ``layers``, for ``target``, from one forward pass with every layer captured and one backward per target to
    all of them. Returns {layer name: Explanation}, each what ``explain(..., layer=that layer)`` returns."""
    get_method(method)
    if method not in cam.LAYER_MAPS:
        raise ParameterError(f"a one-pass layer sweep needs a one-capture CAM ({', '.join(cam.LAYER_MAPS)}), "
                             f"got {method!r}")
    if not layers:
        raise ParameterError("explain_layers needs at least one layer")
    request = prepare(model_or_bundle, inputs, [method], [target], objective=objective, batch_size=batch_size,
                      seed=seed, params={method: params})
    (key,) = request.targets
    with model_guard(request.model):
        found = [request.find_layer(layer) for layer in layers]
        names = list(dict.fromkeys(layer_info.name for layer_info, _ in found))
        unique = [next(f for f in found if f[0].name == name) for name in names]
        overall = Progress(len(request.inputs), progress)
        results = explain_shared(request, {name: (method, i) for i, name in enumerate(names)}, unique, overall)
    overall.finish()
    return {name: results[(name, key)] for name in names}


__all__ = ["estimated_seconds", "explain_layers", "explain_many", "shared_methods", "shared_pass"]
