"""``explain_many()``: several methods for several targets, sharing the passes wherever the maths allows.

The one-pass set shares one forward pass with the layer captured and one backward per target: vanilla gradient
(Simonyan et al. 2013, arXiv:1312.6034), input × gradient (Shrikumar et al. 2016, arXiv:1605.01713), Grad-CAM
(Selvaraju et al. 2017, arXiv:1610.02391), Grad-CAM++ (Chattopadhyay et al. 2018, arXiv:1710.11063), XGrad-CAM
(Fu et al. 2020, arXiv:2008.02312), LayerCAM (Jiang et al. 2021), HiResCAM (Draelos & Carin 2020,
arXiv:2011.08891) and Eigen-CAM (Muhammad & Yeasin 2020, arXiv:2008.00299). They differ only in what they do with
the input gradient, or with the layer's activations and gradients, so each reads the same tensors a separate
``explain()`` call would have computed. Guided backpropagation (Springenberg et al. 2015, arXiv:1412.6806),
deconvnet (Zeiler & Fergus 2014, arXiv:1311.2901) and Guided Grad-CAM add one backward each through the same
forward pass: its ReLUs are hooked with a switchable backward rule (``hooks.BackwardRule``), plain for the others.

Every other method runs once, as one method call given every requested target, and is split into one
Explanation per target, each with the notes the method gave it (``Attribution.notes_for``). Every method computes
all its targets from the same passes: the perturbation methods (Score-CAM, occlusion, RISE) score every target
from the same masked or occluded forward passes; SmoothGrad's noisy copies and integrated gradients' path are
built once, and each batch of them has one forward pass and one backward per target (``Call.gradients``).
"""

from __future__ import annotations

import contextlib
import numbers
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from .batching import Batches, Progress
from .core import (
    Attribution,
    Call,
    Explanation,
    _check_batch_size,
    _checked,
    _resolve_layer,
    _unwrap,
    as_logits,
    clean_pass,
    method_batches,
    prepare_inputs,
    run_method,
)
from .errors import ParameterError, SaliencyError
from .hooks import BackwardRule, capture_layer, model_guard, rectified_backward
from .layers import to_nchw
from .methods import cam
from .methods.gradient import INPUT_MAPS
from .methods.guided import NO_RELU, RULE_OF
from .registry import get_method
from .targets import Contrast, Target, TargetSpec, _items
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


def target_key(target: Any) -> Any:
    """The key a target gets in ``explain_many``'s result: the target as given (an int, a name, "topK", a
    Contrast, None), a plain int for a one-element tensor or NumPy scalar, a tuple for one target per row."""
    if isinstance(target, (torch.Tensor, np.ndarray, np.generic)):
        size = target.numel() if isinstance(target, torch.Tensor) else np.size(target)
        return target.item() if size == 1 else tuple(target.tolist())
    if isinstance(target, list):
        return tuple(target_key(item) for item in target)
    if isinstance(target, numbers.Integral) and not isinstance(target, bool):
        return int(target)
    return target


class _Targets:
    """One requested target: parsed (and checked) up front as explain() does, resolved batch by batch from the
    shared forward pass's own logits, so a rank ("top2") costs no extra clean pass."""

    def __init__(self, given: Any, rows: int, categories, objective: str, device: torch.device):
        self.given, self.categories, self.objective, self.device = given, categories, objective, device
        spec = TargetSpec(given, rows, categories, objective)
        self.fixed = None if spec.needs_logits else spec.resolve(None, device=device)

    def rows(self, logits: torch.Tensor, start: int, stop: int) -> Target:
        if self.fixed is not None:
            return self.fixed.take(torch.arange(start, stop))
        items = _items(self.given)
        part = self.given if items is None else items[start:stop]
        return TargetSpec(part, stop - start, self.categories, self.objective).resolve(logits, device=self.device)


def _join(parts: list[Target]) -> Target:
    return Target(torch.cat([p.classes for p in parts]), parts[0].objective, max(p.max_class for p in parts))


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
    ``batch_size_used`` the shared pass's. The methods of ``target_free_methods()`` (Score-CAM, occlusion, RISE)
    run once for all the targets, every target scored from the same forward passes, and are split per target;
    their ``elapsed_s`` is that one call's time. Every other method runs as its own ``explain()`` call, one per
    target. ``progress(done, total)`` covers the whole run; returning False stops it. The model's lock is held
    throughout and the model is left exactly as found.
    """
    methods = [methods] if isinstance(methods, str) else list(dict.fromkeys(methods))
    if isinstance(targets, (str, numbers.Integral, Contrast)) or targets is None:
        targets = [targets]
    keyed = {target_key(t): t for t in targets}
    if not methods or not keyed:
        raise ParameterError("explain_many needs at least one method and one target")
    params = dict(params or {})
    unknown = sorted(set(params) - set(methods))
    if unknown:
        raise ParameterError(f"params given for {unknown[0]!r}, which is not among the methods asked for")
    # every check explain() makes before it computes, in its order, so the errors are the same
    infos = {name: get_method(name) for name in methods}
    resolved = {name: info.validate(params.get(name, {})) for name, info in infos.items()}
    _check_batch_size(batch_size)
    model, bundle, categories = _unwrap(model_or_bundle)
    for info in infos.values():
        if info.unavailable_reason(model) is not None:
            raise SaliencyError(f"{info.unavailable_reason(model)}; pick another method")
    if layer is not None and not any(info.needs_layer for info in infos.values()):
        raise SaliencyError(f"method {methods[0]!r} does not use a layer; drop layer={layer!r} or pick a CAM method")
    inputs = prepare_inputs(model, inputs)
    device = inputs.device
    requested = {key: _Targets(t, len(inputs), categories, objective, device) for key, t in keyed.items()}
    seed = int(seed)

    shared = [m for m in methods if m in shared_methods()]
    together = [m for m in methods if m not in shared]
    results: dict[tuple[str, Any], Explanation] = {}
    with model_guard(model):
        layer_info, layer_module = (
            _resolve_layer(model, bundle, layer, inputs)
            if any(infos[m].needs_layer for m in methods) else (None, None)
        )
        hw = tuple(inputs.shape[-2:])
        channels = getattr(layer_info, "channels", None)
        costs = {m: infos[m].cost.passes(resolved[m], hw, channels) for m in methods}
        backward = any(costs[m].backward for m in shared)
        # progress counts what dominates, as explain() does: the shared backward passes (or its forward), then
        # each method call's own units
        shared_units = len(inputs) * (len(keyed) if backward else 1) if shared else 0
        units = {m: (costs[m].backward or costs[m].forward) * len(inputs) for m in together}
        overall = Progress(shared_units + sum(units.values()), progress)
        if shared:
            results.update(_explain_shared(model, inputs, {m: (m, 0) for m in shared}, requested, resolved, costs,
                                           [(layer_info, layer_module)], seed, objective, batch_size, overall))
        for method in together:
            results.update(_explain_together(
                model, bundle, inputs, method, infos[method], resolved[method], keyed, categories, objective,
                costs[method], layer_info if infos[method].needs_layer else None,
                layer_module if infos[method].needs_layer else None, seed, batch_size, overall, units[method]))
    overall.finish()
    return {(m, key): results[(m, key)] for m in methods for key in keyed}


def _share_of(overall: Progress, units: int) -> Callable[[int, int], None]:
    """A progress callback for one nested method call that moves ``overall`` across its ``units``; a cancel
    from the overall callback raises there, inside the nested call."""
    start = overall.done

    def callback(done: int, total: int) -> None:
        overall.advance(max(0, start + units * done // max(total, 1) - overall.done))

    return callback


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
    names = {plan[0] for plan in plans.values()}
    want_input = bool(names & set(INPUT_MAPS))
    want_layer = GUIDED_CAM in names or bool(names & (set(cam.LAYER_MAPS) - {"eigencam"}))
    capturing = GUIDED_CAM in names or bool(names & set(cam.LAYER_MAPS))
    layers = list(layers) if capturing else []
    # the rectified rules asked for, each one more backward per target through the hooked ReLUs
    rules = list(dict.fromkeys([RULE_OF[m] for m in sorted(names) if m in RULE_OF]
                               + (["guided"] if GUIDED_CAM in names else [])))
    plain = want_input or want_layer
    backward = plain or bool(rules)
    switch = BackwardRule()

    def nchw(tensor, index):
        info = layers[index][0]
        return to_nchw(tensor, info.layout, info.grid)

    def compute(start, stop):
        batch = inputs[start:stop].detach()
        with contextlib.ExitStack() as stack:
            captured = [stack.enter_context(capture_layer(module)) for _, module in layers]
            if not backward:
                with torch.inference_mode():
                    logits = as_logits(model(batch))
                rows = targets_of(logits, start, stop)
                activations = [nchw(c.output.detach(), i) for i, c in enumerate(captured)]
                return rows, logits, None, activations, None, {}
            # requires_grad on the input guarantees a graph even for a model with frozen parameters
            batch.requires_grad_(True)
            with torch.enable_grad():
                switch.rule = None
                logits = as_logits(model(batch))
                rows = targets_of(logits.detach(), start, stop)
                wrt = ([batch] if want_input else []) + ([c.output for c in captured] if want_layer else [])
                # every backward goes through the retained graph of the one forward pass; the last frees it
                jobs = [(t, rule) for t in range(len(rows)) for rule in ([None] if plain else []) + rules]
                grads: dict[tuple[int, str | None], tuple[torch.Tensor, ...]] = {}
                for j, (t, rule) in enumerate(jobs):
                    switch.rule = rule
                    score = rows[t].score(logits).sum()
                    grads[(t, rule)] = torch.autograd.grad(score, wrt if rule is None else [batch],
                                                           retain_graph=j < len(jobs) - 1)
                switch.rule = None
            count, first = len(rows), int(want_input)
            input_grads = torch.stack([grads[(t, None)][0] for t in range(count)]) if want_input else None
            layer_grads = ([torch.stack([nchw(grads[(t, None)][first + i], i) for t in range(count)])
                            for i in range(len(captured))] if want_layer else None)
            rectified = {rule: torch.stack([grads[(t, rule)][0] for t in range(count)]) for rule in rules}
            activations = [nchw(c.output.detach(), i) for i, c in enumerate(captured)]
            return rows, logits.detach(), input_grads, activations, layer_grads, rectified

    parts = []
    with rectified_backward(model, rule=switch) if rules else contextlib.nullcontext(1) as hooked:
        if hooked == 0:
            raise SaliencyError(NO_RELU)
        for start, stop, part in batches.run(len(inputs), compute):
            parts.append(part)
            progress.advance((stop - start) * units_per_row)
    count = len(parts[0][0])
    targets = [_join([p[0][t] for p in parts]) for t in range(count)]
    logits = torch.cat([p[1] for p in parts])
    input_grads = torch.cat([p[2] for p in parts], dim=1) if want_input else None
    activations = [torch.cat([p[3][i] for p in parts]) for i in range(len(layers))]
    layer_grads = [torch.cat([p[4][i] for p in parts], dim=1) for i in range(len(layers))] if want_layer else None
    rectified = {rule: torch.cat([p[5][rule] for p in parts], dim=1) for rule in rules}

    eigen: dict[int, torch.Tensor] = {}

    def one(method: str, params: dict[str, Any], at: int, t: int) -> Attribution:
        """Target t's map, shaped as a one-target call has it: the same arithmetic as the method's own call."""
        if method in INPUT_MAPS:
            return Attribution(INPUT_MAPS[method](inputs, input_grads[t : t + 1]), logits=logits)
        if method in RULE_OF:
            return Attribution(rectified[RULE_OF[method]][t : t + 1], logits=logits)
        if method == GUIDED_CAM:  # as guided_cam.py: the guided map times the upsampled Grad-CAM map
            captured = cam.Captured(activations[at], layer_grads[at][t : t + 1], logits)
            coarse = cam.finish(inputs, cam.LAYER_MAPS["gradcam"](captured), params["relu"], logits)
            return Attribution(rectified["guided"][t : t + 1] * coarse.attribution,
                               layer_attribution=coarse.layer_attribution, logits=logits)
        if method == "eigencam":  # class-agnostic: one map serves every target
            if at not in eigen:
                eigen[at] = cam.LAYER_MAPS[method](cam.Captured(activations[at], None, logits))
            return cam.finish(inputs, eigen[at], params["relu"], logits)
        maps = cam.LAYER_MAPS[method](cam.Captured(activations[at], layer_grads[at][t : t + 1], logits))
        return cam.finish(inputs, maps, params["relu"], logits)

    def joined(parts: list[Attribution]) -> Attribution:
        layer_parts = [p.layer_attribution for p in parts]
        return Attribution(torch.cat([p.attribution for p in parts]), logits=logits,
                           layer_attribution=None if layer_parts[0] is None else torch.cat(layer_parts))

    results = {key: joined([one(plan[0], plan[1], plan[2] if len(plan) > 2 else 0, t) for t in range(count)])
               for key, plan in plans.items()}
    return results, logits, targets


def _explain_shared(model, inputs, plans: dict[Any, tuple[str, int]], requested, params, costs, layers, seed,
                    objective, batch_size, progress) -> dict[tuple[Any, Any], Explanation]:
    """The shared set's Explanations from ``shared_pass``: {(name, target key): Explanation} for every plan
    ``name: (method, index into layers)`` and requested target."""
    started = time.perf_counter()
    device = inputs.device
    keys = list(requested)
    backward = any(costs[method].backward for method, _ in plans.values())
    batches = method_batches(model, inputs, batch_size, not backward)
    maps, logits, targets = shared_pass(
        model, inputs, {name: (method, params[method], at) for name, (method, at) in plans.items()},
        lambda logits, start, stop: [requested[k].rows(logits, start, stop) for k in keys],
        layers, batches, progress, len(keys) if backward else 1)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - started
    results = {}
    for name, (method, at) in plans.items():
        for t, key in enumerate(keys):
            result = maps[name]
            part = Attribution(result.attribution[t : t + 1], logits=logits, layer_attribution=None
                               if result.layer_attribution is None else result.layer_attribution[t : t + 1])
            attribution, layer_attribution, notes = _checked(part, inputs, batches,
                                                             gradients=costs[method].backward > 0)
            results[(name, key)] = Explanation(
                attribution=attribution,
                target=targets[t].indices.detach().cpu().clone(),
                logits=logits,
                method=method,
                params=params[method],
                elapsed_s=elapsed,
                objective=objective,
                layer=layers[at][0].name if get_method(method).needs_layer else None,
                layer_attribution=layer_attribution,
                extras={},
                seed=seed,
                batch_size_used=batches.size,
                notes=notes,
            )
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
    info = get_method(method)
    if method not in cam.LAYER_MAPS:
        raise ParameterError(f"a one-pass layer sweep needs a one-capture CAM ({', '.join(cam.LAYER_MAPS)}), "
                             f"got {method!r}")
    resolved = {method: info.validate(params)}
    _check_batch_size(batch_size)
    model, bundle, categories = _unwrap(model_or_bundle)
    if info.unavailable_reason(model) is not None:
        raise SaliencyError(f"{info.unavailable_reason(model)}; pick another method")
    if not layers:
        raise ParameterError("explain_layers needs at least one layer")
    inputs = prepare_inputs(model, inputs)
    key = target_key(target)
    requested = {key: _Targets(target, len(inputs), categories, objective, inputs.device)}
    with model_guard(model):
        found = [_resolve_layer(model, bundle, layer, inputs) for layer in layers]
        names = list(dict.fromkeys(layer_info.name for layer_info, _ in found))
        unique = [next(f for f in found if f[0].name == name) for name in names]
        costs = {method: info.cost.passes(resolved[method], tuple(inputs.shape[-2:]), unique[0][0].channels)}
        overall = Progress(len(inputs), progress)
        results = _explain_shared(model, inputs, {name: (method, i) for i, name in enumerate(names)}, requested,
                                  resolved, costs, unique, int(seed), objective, batch_size, overall)
    overall.finish()
    return {name: results[(name, key)] for name in names}


def _explain_together(model, bundle, inputs, method, info, params, keyed, categories, objective, cost, layer_info,
                      layer_module, seed, batch_size, progress, units) -> dict[tuple[str, Any], Explanation]:
    """One call of a target-free method given every target, split into what one explain() per target returns.

    As explain() does: ranks are resolved from one clean pass (shared by the targets), the batch size is the
    default for the method's kind of passes, and the method's own clean pass gives the logits. ``elapsed_s`` is
    the shared call's time for every target.
    """
    started = time.perf_counter()
    device = inputs.device
    specs = {key: TargetSpec(t, len(inputs), categories, objective) for key, t in keyed.items()}
    ranks = any(spec.needs_logits for spec in specs.values())
    clean_logits, clean_batches = clean_pass(model, inputs, batch_size) if ranks else (None, None)
    targets = [spec.resolve(clean_logits, device=device) for spec in specs.values()]
    batches = method_batches(model, inputs, batch_size, cost.backward == 0, clean_batches)
    call = Call(
        model=model, targets=tuple(targets), batch_size=batches.requested,
        progress=Progress(units, _share_of(progress, units)), seed=seed, bundle=bundle, layer=layer_info,
        layer_module=layer_module, batches=batches,
    )
    result = run_method(info, call, inputs, params)
    call.progress.finish()
    logits = result.logits if result.logits is not None else clean_logits
    if logits is None:
        logits = call.predict(inputs)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - started

    results = {}
    for t, key in enumerate(keyed):
        part = Attribution(
            attribution=result.attribution[t : t + 1],
            layer_attribution=None if result.layer_attribution is None else result.layer_attribution[t : t + 1],
            extras=None if result.extras is None else [result.extras[t]],
            logits=logits,
            notes=result.notes_for(t),
        )
        attribution, layer_attribution, checked = _checked(part, inputs, call.batches, gradients=cost.backward > 0)
        results[(method, key)] = Explanation(
            attribution=attribution,
            target=targets[t].indices.detach().cpu().clone(),
            logits=logits.detach(),
            method=method,
            params=params,
            elapsed_s=elapsed,
            objective=objective,
            layer=getattr(layer_info, "name", None),
            layer_attribution=layer_attribution,
            extras=dict((result.extras or [{}] * len(targets))[t]),
            seed=seed,
            batch_size_used=call.batches.size,
            notes=checked,
        )
    return results


__all__ = ["estimated_seconds", "explain_layers", "explain_many", "shared_methods", "shared_pass", "target_key"]
