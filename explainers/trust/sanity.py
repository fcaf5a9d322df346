"""Sanity checks of saliency methods: model randomisation, random logits, data randomisation, input invariance.

- Cascading model randomisation and data randomisation: Adebayo, Gilmer, Muelly, Goodfellow, Hardt & Kim 2018,
  "Sanity Checks for Saliency Maps", arXiv:1810.03292. A map that survives re-initialising the weights, or
  training on shuffled labels, does not explain what the model learned.
- Random-logit test: Sixt, Granz & Landgraf 2020, "When Explanations Lie", arXiv:1912.09818. A map for the
  predicted class that matches the maps for random other classes does not explain the class.
- Input invariance: Kindermans, Hooker, Adebayo, Alber, Schütt, Dähne, Erhan & Kim 2019, "The (Un)reliability of
  Saliency Methods", arXiv:1711.00867. Shift the input by a constant and absorb the shift into the first layer's
  bias: the network computes the same function, so an explanation of that function should not change.

Every check works on copies: the model it is given (often the dashboard's cached one) is never altered.
Results are plain dataclasses of NumPy arrays, floats and :class:`~.similarity.Similarity` values, each with
``to_dict()`` for JSON. Maps are compared as the signed channel sum ``render.to_map(a, "signed", "sum")`` (what
Quantus' explanation functions return); see :mod:`.similarity` for the metrics.

Sharing passes. Within a step of the cascade (or one call of the other checks) all chosen methods run on the
same copy with the same resolved target and layer: the target is resolved once from the original model; the
layer is resolved once; the methods of explain_many's shared set (vanilla, input × gradient, the one-capture
CAMs, guided backprop, deconvnet, Guided Grad-CAM) come from one forward pass of the step's copy with one
backward per target, and one more per target for each rectified rule (``many.shared_pass``), which also gives
the step's logits; every other method is its own call, several targets (the random-logit test) sharing its
passes. The step's clean forward is otherwise the one the first method ran on its way, or one prediction pass if
none did. Across the checks of :func:`run_sanity`, the model's own maps for the target are computed once.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Mapping, Sequence
from copy import deepcopy
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import nn

from .. import render
from ..batching import Batches, Progress, default_batch_size
from ..core import Call, as_logits, find_layer, method_batches, prepare_inputs, run_method, unwrap
from ..dense.outputs import DETECTION
from ..dense.targets import DenseScores
from ..errors import ParameterError, SaliencyError
from ..hooks import model_guard
from ..manifest import jsonable
from ..many import shared_methods, shared_pass
from ..registry import NEEDS_MODEL, MethodInfo, PublishedVerdict, Reference, get_method
from ..targets import Target, TargetSpec
from .similarity import METRIC_LABELS, METRIC_MEANING, METRICS, PreparedMap, Similarity

SIXT = Reference("Sixt, Granz & Landgraf", 2020, "When Explanations Lie: Why Many Modified BP Attributions Fail",
                 "1912.09818")
KINDERMANS = Reference("Kindermans, Hooker, Adebayo, Alber, Schütt, Dähne, Erhan & Kim", 2019,
                       "The (Un)reliability of Saliency Methods", "1711.00867")
CONTROLS = ("sobel", "random")
PAIR_CONTROLS = ("sobel",)  # the controls of the checks that compare two maps (random logit, data randomisation)
THUMBNAIL_SIZE = 56  # the long side of the filmstrip's thumbnails
NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm)
CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


# ---------------------------------------------------------------------------------------------------------
# Methods to check
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MethodSpec:
    """A method and its parameters; ``label`` names it in results (default: the method name)."""

    method: str
    params: Mapping[str, Any] = field(default_factory=dict)
    label: str | None = None

    @property
    def key(self) -> str:
        return self.label or self.method


def method_specs(methods: Sequence[Any], controls: Sequence[str] = ()) -> list[MethodSpec]:
    """``methods`` (names, (name, params) pairs or MethodSpecs) plus ``controls``, checked, without repeats."""
    specs: list[MethodSpec] = []
    for item in list(methods) + [c for c in controls]:
        if isinstance(item, MethodSpec):
            spec = item
        elif isinstance(item, str):
            spec = MethodSpec(item.strip())
        elif isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[1], Mapping):
            spec = MethodSpec(str(item[0]), dict(item[1]))
        else:
            raise ParameterError(f"expected a method name, a (name, params) pair or a MethodSpec; got {item!r}")
        get_method(spec.method)
        if any(s.key == spec.key for s in specs):
            if spec.method in controls and not spec.params:
                continue  # a control also named among the methods
            raise ParameterError(f"method {spec.key!r} is listed twice; give one of them a label")
        specs.append(spec)
    if not specs:
        raise ParameterError("expected at least one method to check")
    return specs


@dataclass(frozen=True)
class _Plan:
    key: str
    info: MethodInfo
    params: dict[str, Any]
    reseed: bool = False  # the random control draws afresh at every step (the chance floor of each curve)


def _plans(specs: list[MethodSpec], model: nn.Module, fresh_random: bool = False) -> list[_Plan]:
    plans = []
    for spec in specs:
        info = get_method(spec.method)
        reason = info.unavailable_reason(model)
        if reason is not None:
            raise SaliencyError(f"{reason}; drop {spec.method!r} from the sanity check")
        plans.append(_Plan(spec.key, info, info.validate(dict(spec.params)),
                           reseed=fresh_random and spec.method == "random"))
    return plans


# ---------------------------------------------------------------------------------------------------------
# The cascade's blocks
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    """One step of the cascade: the modules (dotted names) re-initialised together, ``name`` their label."""

    name: str
    modules: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "modules": list(self.modules)}


BLOCK_RULE = (
    "the model's children in definition order, with plain containers (nn.Sequential, nn.ModuleList, "
    "nn.ModuleDict, not their subclasses) opened recursively; every other child is one block; children without "
    "parameters (activations, pooling, dropout) are skipped; a normalisation layer joins the block before it "
    "(conv + batch norm is one step); parameters a container holds itself form a block before its children"
)


def _has_parameters(module: nn.Module) -> bool:
    return any(True for _ in module.parameters())


def cascade_blocks(model: nn.Module) -> list[Block]:
    """The blocks of ``model`` from input to output (the cascade runs them backwards); the rule is
    :data:`BLOCK_RULE`. EfficientNet-Lite0 gives 19: stem, blocks 0-15, conv head, head; ResNet-18 gives 10."""
    groups: list[list[str]] = []

    def visit(module: nn.Module, prefix: str) -> None:
        if any(True for _ in module.parameters(recurse=False)):
            groups.append([prefix or "(model)"])
        for name, child in module.named_children():
            full = f"{prefix}.{name}" if prefix else name
            if type(child) in CONTAINERS:
                visit(child, full)
            elif not _has_parameters(child):
                continue
            elif isinstance(child, NORMS) and groups and groups[-1][0] != (prefix or "(model)"):
                groups[-1].append(full)
            else:
                groups.append([full])

    visit(model, "")
    return [Block("+".join(names), tuple(names)) for names in groups]


def parameter_layers(model: nn.Module) -> list[Block]:
    """Every module with its own ``reset_parameters()`` as a block of its own, in definition order: the
    granularity of Quantus' MPRT (``get_random_layer_generator``)."""
    return [Block(name, (name,)) for name, module in model.named_modules() if hasattr(module, "reset_parameters")]


BACKBONE_RULE = (
    "a detector's or segmenter's backbone only (the modules under 'backbone.'; the region proposals, heads and "
    "classifier keep their weights): the backbone's blocks by the same rule, and where that gives fewer than "
    "three (a body and a feature pyramid), each of those opened once more"
)


def backbone_blocks(model: nn.Module) -> list[Block]:
    """The cascade's blocks of a dense model (:data:`BACKBONE_RULE`), input to output: Faster R-CNN MobileNetV3
    320 FPN gives 21 (backbone.body.0 … 16, then the FPN's four convolutions), DeepLabV3 ResNet-50 17
    (backbone.conv1+bn1, then its 16 bottlenecks). The backbone is the first module named ``backbone`` at any depth
    (a wrapped or scripted model's ``scripted.backbone``); a model without one gets :func:`cascade_blocks`."""
    modules = dict(model.named_modules())  # not get_submodule: a ScriptModule refuses it
    where = next((name for name, module in modules.items()
                  if (name == "backbone" or name.endswith(".backbone")) and _has_parameters(module)), None)
    if where is None:
        return cascade_blocks(model)
    blocks = cascade_blocks(modules[where])
    if len(blocks) < 3:
        opened = []
        for block in blocks:
            inner = cascade_blocks(modules[f"{where}.{block.modules[0]}"]) if len(block.modules) == 1 \
                and block.modules[0] != "(model)" else []
            if inner and all("(model)" not in b.modules for b in inner):
                opened += [Block(f"{block.name}.{b.name}", tuple(f"{block.modules[0]}.{m}" for m in b.modules))
                           for b in inner]
            else:
                opened.append(block)
        blocks = opened
    return [Block(f"{where}.{b.name}", tuple(where if m == "(model)" else f"{where}.{m}" for m in b.modules))
            for b in blocks]


def _resolve_blocks(model: nn.Module, blocks: Any) -> list[Block]:
    if (blocks is None or blocks == "blocks") and isinstance(model, DenseScores):
        resolved = backbone_blocks(model)
    elif blocks is None or blocks == "blocks":
        resolved = cascade_blocks(model)
    elif blocks == "layers":
        resolved = parameter_layers(model)
    else:
        resolved = []
        for item in blocks:
            names = (item,) if isinstance(item, str) else tuple(item.modules if isinstance(item, Block) else item)
            resolved.append(item if isinstance(item, Block) else Block("+".join(names), names))
    modules = dict(model.named_modules())
    for block in resolved:
        for name in block.modules:
            if name != "(model)" and name not in modules:
                close = ", ".join(n for n in list(modules)[1:] if n.startswith(name.split(".")[0]))[:200]
                raise ParameterError(f"block module {name!r} is not in the model; modules include: {close}")
    if not resolved:
        raise ParameterError("the model has no parameters to randomise")
    return resolved


def _rng_devices(model: nn.Module) -> list[int]:
    return sorted({p.device.index or 0 for p in model.parameters() if p.device.type == "cuda"})


def randomise(model: nn.Module, block: Block, seed: int = 42) -> None:
    """Re-initialise ``block``'s modules of ``model`` in place (call it on a copy).

    Each module with its own ``reset_parameters()`` (PyTorch's default initialisation; batch norm becomes the
    identity with fresh statistics) is reset right after ``torch.manual_seed(seed + 1)``, in reverse module order:
    Quantus' convention (``PyTorchModel.get_random_layer_generator``), so a copy randomised here equals Quantus'
    copy after the same modules. Parameters no such module resets (a ViT's class token, ConvNeXt's layer scale)
    are re-drawn from a normal distribution with the tensor's own mean and standard deviation. The global random
    state is restored afterwards.
    """
    named = dict(model.named_modules())
    # "(model)" stands for the parameters the model holds itself; a model-wide reset_parameters() is not called
    members = {id(m): m for name in block.modules if name != "(model)" for m in named[name].modules()}
    order = [m for _, m in reversed(list(model.named_modules())) if id(m) in members]
    reset = [m for m in order if hasattr(m, "reset_parameters")]
    covered = {id(p) for m in reset for p in m.parameters(recurse=False)}
    own = [p for m in order for p in m.parameters(recurse=False) if id(p) not in covered]
    if "(model)" in block.modules:
        own += list(model.parameters(recurse=False))
    with torch.random.fork_rng(devices=_rng_devices(model)), torch.no_grad():
        for module in reset:
            torch.manual_seed(seed + 1)
            module.reset_parameters()
        generator = torch.Generator().manual_seed(seed + 2)
        for param in own:
            std = float(param.std()) if param.numel() > 1 else 0.0
            draw = torch.randn(param.shape, generator=generator, dtype=torch.float32)
            param.copy_((draw * (std or 1.0) + float(param.mean())).to(param))


# ---------------------------------------------------------------------------------------------------------
# Running several methods on one model
# ---------------------------------------------------------------------------------------------------------


class _Runner:
    """Runs the plans on a model (the original or a copy) with targets, layer and batch size resolved once."""

    def __init__(self, model: nn.Module, bundle: Any, inputs: torch.Tensor, plans: list[_Plan], layer: Any,
                 batch_size: int | None, seed: int, progress: Progress):
        self.bundle, self.inputs, self.plans, self.seed, self.progress = bundle, inputs, plans, seed, progress
        self.layer_info = None
        if any(p.info.needs_layer for p in plans):
            self.layer_info, _ = find_layer(model, bundle, layer, inputs)
        elif layer is not None:
            raise ParameterError(f"layer={layer!r} given, but none of the chosen methods uses a layer")
        self.requested = batch_size  # None: each call's batches chosen as explain() chooses them
        self.batch_size = int(batch_size or default_batch_size(inputs.device))

    def cost(self, plan: _Plan):
        """``plan``'s passes per image at the inputs' size and the layer's channels (the registry's cost)."""
        return plan.info.cost.passes(plan.params, tuple(self.inputs.shape[-2:]),
                                     getattr(self.layer_info, "channels", None))

    def units(self, plan: _Plan) -> int:
        """Progress units of one run of ``plan``: its dominant passes per row, as ``explain()`` counts them
        (several targets share a batch's forward pass and advance it once)."""
        if NEEDS_MODEL not in plan.info.requires:
            return 0
        cost = self.cost(plan)
        return (cost.backward or cost.forward) * len(self.inputs)

    def batches(self, plan: _Plan | None, model: nn.Module, inputs: torch.Tensor) -> Batches:
        """The batches of ``plan``'s call (None: the shared pass, one forward and a backward per row): the
        requested batch size, or the automatic one for its kind of passes and its rows, chosen by the function
        ``explain()`` uses (``core.method_batches``), so that a step's call runs as fast as the same call would
        alone."""
        if plan is None:
            return method_batches(model, inputs, self.requested, False)
        cost = self.cost(plan)
        return method_batches(model, inputs, self.requested, cost.backward == 0,
                              rows_at_once=len(inputs) * max(cost.forward, cost.backward, 1))

    def units_to_run(self, model: nn.Module, targets: tuple[Target, ...], known: _Original | None) -> int:
        """Progress units of ``run(model, targets, known=known)``: the plans ``known`` holds cost none."""
        given = known.maps_for(self, model, targets, self.inputs) if known is not None else {}
        return sum(self.units(p) for p in self.plans if p.key not in given)

    def run(self, model: nn.Module, targets: tuple[Target, ...], step: int = 0,
            inputs: torch.Tensor | None = None, known: _Original | None = None
            ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """({key: attribution [T, N, C, H, W]}, logits [N, K]) of every plan on ``model``: the plans of
        explain_many's shared set from one shared pass, every other plan as its own method call. The maps
        ``known`` holds for this very computation (:meth:`_Original.maps_for`) are taken, not computed again."""
        inputs = self.inputs if inputs is None else inputs
        self.progress.advance(0)  # a cancel between steps is seen even when no method runs a pass
        results = known.maps_for(self, model, targets, inputs) if known is not None else {}
        logits = known.logits if results else None
        with model_guard(model):
            module = model.get_submodule(self.layer_info.name) if self.layer_info is not None else None
            bundle = replace(self.bundle, model=model) if self.bundle is not None else None
            call = Call(model=model, targets=targets, batch_size=self.batch_size, progress=self.progress,
                        seed=self.seed, bundle=bundle, layer=self.layer_info, layer_module=module)
            together = [p for p in self.plans if _in_shared_pass(p) and p.key not in results]
            if together:
                rows = [self.units(p) // len(self.inputs) for p in together]
                maps, logits, _ = shared_pass(
                    model, inputs, {p.key: (p.info.name, p.params) for p in together},
                    lambda _logits, start, stop: [t.take(torch.arange(start, stop)) for t in targets],
                    [(self.layer_info, module)], self.batches(None, model, inputs), self.progress, sum(rows))
                results.update({key: result.attribution.detach() for key, result in maps.items()})
                logits = logits.detach()
            for plan in self.plans:
                if _in_shared_pass(plan) or plan.key in results:
                    continue
                batches = self.batches(plan, model, inputs)
                plan_call = replace(call, seed=self.seed + step if plan.reseed else self.seed,
                                    batch_size=batches.requested, batches=batches)
                result = run_method(plan.info, plan_call, inputs, plan.params)
                results[plan.key] = result.attribution.detach()
                if logits is None and result.logits is not None:
                    logits = result.logits.detach()  # the clean forward a method ran on its way serves the step
            if logits is None:
                logits = call.predict(inputs)  # no method computed them: one prediction pass
        return {p.key: results[p.key] for p in self.plans}, logits

    def original(self, model: nn.Module, target: Target, results: dict[str, torch.Tensor],
                 logits: torch.Tensor) -> _Original:
        """What this runner computed on the original ``model`` (its first target's maps), for later checks."""
        return _Original(model, self.inputs, target, getattr(self.layer_info, "name", None), self.seed,
                         self.batch_size, {p.key: (p.info.name, p.params) for p in self.plans},
                         {key: attribution[:1] for key, attribution in results.items()}, logits)


@dataclass
class _Original:
    """The original model's maps for one target: run_sanity computes them once (beside the random-logit test's
    other classes, one forward per pass for all) and every later check takes them instead of computing them
    again. ``maps`` {plan key: attribution [1, N, C, H, W]}, ``plans`` {plan key: (method, parameters)},
    ``logits`` [N, K]."""

    model: nn.Module
    inputs: torch.Tensor
    target: Target
    layer: str | None
    seed: int
    batch_size: int
    plans: dict[str, tuple[str, dict[str, Any]]]
    maps: dict[str, torch.Tensor]
    logits: torch.Tensor

    def maps_for(self, runner: _Runner, model: nn.Module, targets: tuple[Target, ...],
                 inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        """The maps of ``runner``'s plans that are these: the same model, inputs, single target, layer, seed,
        batch size, method and parameters (anything else gets none, and is computed)."""
        same = (model is self.model and len(targets) == 1 and targets[0].objective == self.target.objective
                and runner.seed == self.seed and runner.batch_size == self.batch_size
                and getattr(runner.layer_info, "name", None) == self.layer
                and torch.equal(targets[0].classes, self.target.classes)
                and (inputs is self.inputs or torch.equal(inputs, self.inputs)))
        if not same:
            return {}
        return {p.key: self.maps[p.key] for p in runner.plans if not p.reseed
                and self.plans.get(p.key) == (p.info.name, p.params)}


def _in_shared_pass(plan: _Plan) -> bool:
    return plan.info.name in shared_methods()


def signed_map(attribution: torch.Tensor) -> np.ndarray:
    """[H, W] float32: an attribution [C, H, W] summed over its channels, signs kept."""
    return render.to_map(attribution.detach().float().cpu().numpy(), "signed", "sum")


def thumbnail(values: np.ndarray, size: int | None) -> np.ndarray:
    """|map| area-averaged to about ``size`` pixels on its long side (None: full resolution), float32."""
    a = np.abs(np.asarray(values, dtype=np.float32))
    if size is None or max(a.shape) <= size:
        return a
    pooled = torch.nn.functional.adaptive_avg_pool2d(torch.from_numpy(a)[None, None],
                                                     (max(1, a.shape[0] * size // max(a.shape)),
                                                      max(1, a.shape[1] * size // max(a.shape))))
    return pooled[0, 0].numpy()


def _table(rows: list[list[dict[str, Similarity]]], metric: str) -> dict[str, list]:
    """JSON of a [rows][images] grid of one metric: values (null where undefined) and the reasons."""
    return {
        "values": [[cell[metric].value for cell in row] for row in rows],
        "reasons": [[cell[metric].reason for cell in row] for row in rows],
    }


def _mean(values: Sequence[float | None]) -> float | None:
    defined = [v for v in values if v is not None]
    return float(np.mean(defined)) if defined else None


# ---------------------------------------------------------------------------------------------------------
# Cascading model randomisation
# ---------------------------------------------------------------------------------------------------------


@dataclass
class CascadeStep:
    """Step ``index`` (0: the original model) after re-initialising ``block`` (None at step 0).

    ``top1`` [N] and ``target_logit`` [N]: the copy's prediction and the explained class's logit;
    ``logit_range`` the largest spread of a logit across the images (None for one image): how far the copy
    still tells images apart (a collapsed network's logits differ across images by float noise only).
    """

    index: int
    name: str
    block: Block | None
    top1: np.ndarray
    target_logit: np.ndarray
    logit_range: float | None

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "name": self.name, "modules": list(self.block.modules) if self.block else [],
                "top1": self.top1.tolist(), "target_logit": self.target_logit.tolist(),
                "logit_range": self.logit_range}


@dataclass
class MethodCascade:
    """One method through the cascade: ``similarity[step][image][metric]`` to the original map (step 0 compares
    the original with itself), ``thumbnails`` [steps + 1, N, h, w] of |map| for a filmstrip, float32."""

    key: str
    method: str
    params: dict[str, Any]
    similarity: list[list[dict[str, Similarity]]]
    thumbnails: np.ndarray
    shared: str = ""  # how it got its map without passes of its own, if it did

    def curve(self, metric: str = "spearman_abs", image: int = 0) -> list[float | None]:
        """One metric over the steps for one image (None where undefined)."""
        return [row[image][metric].value for row in self.similarity]

    def mean_curve(self, metric: str = "spearman_abs") -> list[float | None]:
        """One metric over the steps, averaged over the images where it is defined."""
        return [_mean([cell[metric].value for cell in row]) for row in self.similarity]

    def to_dict(self, thumbnails: bool = True) -> dict[str, Any]:
        out = {"key": self.key, "method": self.method, "params": jsonable(self.params), "shared": self.shared,
               "similarity": {m: _table(self.similarity, m) for m in self.similarity[0][0]}}
        if thumbnails:
            out["thumbnails"] = np.round(self.thumbnails.astype(np.float64), 8).tolist()
        return out


@dataclass
class CascadeResult:
    """Cascading model randomisation (Adebayo et al. 2018, arXiv:1810.03292) of N images: ``steps[0]`` is the
    original model, ``steps[k]`` the copy after the top k blocks of ``blocks`` (output first) were reset."""

    model: str
    target: np.ndarray
    steps: list[CascadeStep]
    methods: dict[str, MethodCascade]
    blocks: list[Block]
    layer: str | None
    seed: int
    elapsed_s: float
    shared: list[str]
    block_rule: str = BLOCK_RULE
    notes: list[str] = field(default_factory=list)  # what the curves alone do not say (a lost box)

    @property
    def metrics(self) -> list[str]:
        first = next(iter(self.methods.values()))
        return list(first.similarity[0][0])

    def to_dict(self, thumbnails: bool = True) -> dict[str, Any]:
        return {"check": "model_randomisation", "model": self.model, "target": self.target.tolist(),
                "layer": self.layer, "seed": self.seed, "elapsed_s": self.elapsed_s, "block_rule": self.block_rule,
                "notes": list(self.notes), "blocks": [b.to_dict() for b in self.blocks], "shared": self.shared,
                "steps": [s.to_dict() for s in self.steps],
                "methods": {k: m.to_dict(thumbnails) for k, m in self.methods.items()}}


def _model_name(model: nn.Module, bundle: Any) -> str:
    return getattr(bundle, "name", None) or type(model).__name__


def _resolve_target(model: nn.Module, bundle: Any, inputs: torch.Tensor, target: Any, objective: str,
                    batch_size: int) -> tuple[Target, torch.Tensor]:
    categories = getattr(bundle, "categories", None)
    spec = TargetSpec("top1" if target is None else target, len(inputs), categories, objective)
    with model_guard(model), torch.inference_mode():
        logits = torch.cat([as_logits(model(inputs[a:a + batch_size])) for a in range(0, len(inputs), batch_size)])
    return spec.resolve(logits, device=inputs.device), logits


def _step_record(index: int, block: Block | None, logits: torch.Tensor, target: Target) -> CascadeStep:
    logits = logits.detach().double().cpu()
    spread = float((logits.amax(0) - logits.amin(0)).max()) if len(logits) > 1 else None
    classes = target.classes[:, 0].cpu()
    return CascadeStep(index, "original" if block is None else block.name, block, logits.argmax(-1).numpy(),
                       logits.gather(1, classes.view(-1, 1))[:, 0].numpy(), spread)


def model_randomisation(
    model_or_bundle: Any,
    inputs: torch.Tensor,
    methods: Sequence[Any],
    *,
    target: Any = None,
    objective: str = "logit",
    layer: Any = None,
    controls: Sequence[str] = CONTROLS,
    steps: int | None = None,
    blocks: Any = None,
    seed: int = 42,
    batch_size: int | None = None,
    progress: Callable[[int, int], object] | None = None,
    metrics: Sequence[str] = METRICS,
    thumbnail_size: int | None = THUMBNAIL_SIZE,
) -> CascadeResult:
    """Cascading model randomisation (Adebayo et al. 2018, arXiv:1810.03292) of ``inputs`` [N, C, H, W].

    On a deep copy, the blocks (:func:`cascade_blocks`, or ``blocks="layers"`` for Quantus' per-layer steps, or
    a list of module-name groups) are re-initialised from the output back to the input, one per step (``steps``:
    only the top ones); after each step every method is recomputed for the same inputs and the same target (the
    original model's top-1 unless ``target`` says otherwise, so the class does not move) and compared with the
    original map. ``controls``: ``sobel`` (model-free: its curve is the ceiling, 1 at every step) and ``random``
    (drawn afresh each step: the chance floor). The original model is never altered.

    On a dense model's scored bundle the cascade randomises the backbone only (:func:`backbone_blocks`). A box
    the randomised detector no longer finds scores 0 and its map is zero (counted as dissimilar, as every constant
    map is); the result's ``notes`` say at which step each box was lost. ``progress(done, total)``
    and cancellation (return False, or raise Cancelled) work as in ``explain()``.
    """
    return _cascade(model_or_bundle, inputs, methods, target=target, objective=objective, layer=layer,
                    controls=controls, steps=steps, blocks=blocks, seed=seed, batch_size=batch_size,
                    progress=progress, metrics=metrics, thumbnail_size=thumbnail_size)[0]


def _cascade(model_or_bundle: Any, inputs: torch.Tensor, methods: Sequence[Any], *, target: Any, objective: str,
             layer: Any, controls: Sequence[str], steps: int | None, blocks: Any, seed: int, batch_size: int | None,
             progress: Callable[[int, int], object] | None, metrics: Sequence[str], thumbnail_size: int | None,
             known: _Original | None = None) -> tuple[CascadeResult, _Original]:
    """:func:`model_randomisation`, taking step 0's maps from ``known`` where they are these, and returning
    step 0's maps for the checks after it."""
    started = time.perf_counter()
    model, bundle, _ = unwrap(model_or_bundle)
    specs = method_specs(methods, controls)
    plans = _plans(specs, model, fresh_random=True)
    inputs = prepare_inputs(model, inputs)
    all_blocks = _resolve_blocks(model, blocks)
    order = list(reversed(all_blocks))
    if steps is not None:
        if isinstance(steps, bool) or int(steps) < 0:
            raise ParameterError(f"steps must be a non-negative integer, got {steps!r}")
        order = order[: int(steps)]
    bsize = int(batch_size or default_batch_size(inputs.device))
    resolved, _ = _resolve_target(model, bundle, inputs, target, objective, bsize)
    tracker = Progress(1, progress)
    runner = _Runner(model, bundle, inputs, plans, layer, batch_size, seed, tracker)
    tracker.total = max(1, len(order) * sum(runner.units(p) for p in plans)
                        + runner.units_to_run(model, (resolved,), known))

    copy = deepcopy(model)  # the original (often cached by the dashboard) must never change
    original = None
    references: dict[str, list[PreparedMap]] = {}
    rows: dict[str, list[list[dict[str, Similarity]]]] = {p.key: [] for p in plans}
    thumbs: dict[str, list[np.ndarray]] = {p.key: [] for p in plans}
    records = []
    notes: list[str] = []
    for index, block in enumerate([None, *order]):
        if block is not None:
            randomise(copy, block, seed)
        results, logits = runner.run(copy if block is not None else model, (resolved,), step=index,
                                     known=known if block is None else None)
        if block is None:
            original = runner.original(model, resolved, results, logits)
        records.append(_step_record(index, block, logits, resolved))
        notes += _lost_boxes(model, bundle, records, resolved)
        for plan in plans:
            maps = [PreparedMap(signed_map(a)) for a in results[plan.key][0]]
            if index == 0:
                references[plan.key] = maps
            rows[plan.key].append([ref.compare(m, metrics) for ref, m in zip(references[plan.key], maps)])
            thumbs[plan.key].append(np.stack([thumbnail(m.values, thumbnail_size) for m in maps]))
    tracker.finish()
    layer_name = getattr(runner.layer_info, "name", None)
    result = CascadeResult(
        model=_model_name(model, bundle), target=resolved.indices.cpu().numpy(), steps=records,
        methods={p.key: MethodCascade(p.key, p.info.name, jsonable(p.params), rows[p.key],
                                      np.stack(thumbs[p.key]).astype(np.float32), _shared_note(p))
                 for p in plans},
        blocks=all_blocks, layer=layer_name, seed=seed, elapsed_s=time.perf_counter() - started,
        shared=_shared_notes(plans), block_rule=BACKBONE_RULE if isinstance(model, DenseScores) and blocks is None
        else BLOCK_RULE, notes=notes,
    )
    return result, original


def _lost_boxes(model: nn.Module, bundle: Any, records: list[CascadeStep], target: Target) -> list[str]:
    """A note for each image whose box the detector found at the step before the last record but not at it: a
    box that is not found again scores exactly 0 (:class:`~explainers.dense.DenseScores`)."""
    if not isinstance(model, DenseScores) or model.kind != DETECTION or len(records) < 2:
        return []
    before, now = records[-2].target_logit, records[-1].target_logit
    names = getattr(bundle, "categories", None) or []
    notes = []
    for image, index in enumerate(target.indices.cpu().tolist()):
        if before[image] != 0 and now[image] == 0:
            name = names[index] if 0 <= index < len(names) else f"target {index}"
            where = f" (image {image})" if len(before) > 1 else ""
            notes.append(f"the box {name}{where} was not found again after randomising {records[-1].name}: its map "
                         "is zero, which counts as dissimilar")
    return notes


def _shared_note(plan: _Plan) -> str:
    if NEEDS_MODEL not in plan.info.requires:
        return "model-free: no passes"
    if _in_shared_pass(plan):
        return "from the step's one shared forward pass, with a backward per target (and per rectified rule)"
    return ""


def _shared_notes(plans: list[_Plan]) -> list[str]:
    notes = [
        "target resolved once, from the original model's logits, and held fixed at every step",
        "layer resolved once on the original model",
        "the step's clean forward: the copy's logits come from the shared pass, or from the first method that "
        "computed them on its way (IG; explain() would run a prediction pass for each method that does not, such "
        "as SmoothGrad and the controls), or from one prediction pass when none did",
    ]
    together = [p.key for p in plans if _in_shared_pass(p)]
    if together:
        notes.append(f"{', '.join(together)}: one forward pass per step, shared, then one backward per target, and "
                     "one more per target for guided backprop's rule (explain_many's shared pass)")
    notes += [f"{p.key}: {_shared_note(p)}" for p in plans if _shared_note(p) and not _in_shared_pass(p)]
    notes.append("not shared: every other method runs its own forward and backward passes (several targets "
                 "share them)")
    return notes


# ---------------------------------------------------------------------------------------------------------
# Random-logit test
# ---------------------------------------------------------------------------------------------------------


@dataclass
class RandomLogitResult:
    """Maps for the target (the predicted class unless told) against maps for other classes (Sixt et al. 2020,
    arXiv:1912.09818): ``methods[key][image][k][metric]`` compares the target's map with class ``classes[image][k]``.
    High similarity means the map does not depend on the class."""

    model: str
    target: np.ndarray
    classes: np.ndarray
    methods: dict[str, list[list[dict[str, Similarity]]]]
    names: dict[str, str]  # key -> registered method name
    layer: str | None
    seed: int
    elapsed_s: float

    def mean(self, key: str, metric: str = "ssim") -> float | None:
        """A method's similarity averaged over images and classes where defined."""
        return _mean([cell[metric].value for row in self.methods[key] for cell in row])

    def to_dict(self) -> dict[str, Any]:
        return {"check": "random_logit", "model": self.model, "target": self.target.tolist(),
                "classes": self.classes.tolist(), "layer": self.layer, "seed": self.seed,
                "elapsed_s": self.elapsed_s, "names": dict(self.names),
                "methods": {k: {m: _table(rows, m) for m in rows[0][0]} for k, rows in self.methods.items()}}


def row_keys(inputs: torch.Tensor) -> list[int]:
    """One key per input row from its values (the first 8 bytes of their SHA-256): the same image gets the same key
    whichever row of whichever batch it is in."""
    values = inputs.detach().to(device="cpu", dtype=torch.float32).contiguous().numpy()
    return [int.from_bytes(hashlib.sha256(row.tobytes()).digest()[:8], "little") for row in values]


def random_classes(target: np.ndarray, num_classes: int, count: int, seed: int,
                   keys: Sequence[int] | None = None) -> np.ndarray:
    """[N, count] distinct classes other than each row's target, drawn with a seeded NumPy generator: one per row
    seeded from (``seed``, the row's key) when ``keys`` are given (``row_keys``: the same image draws the same
    classes alone or as row 2 of 3), else one stream over the rows."""
    if not 1 <= count <= num_classes - 1:
        raise ParameterError(f"the number of random classes must be in 1..{num_classes - 1}, got {count}")
    if keys is not None and len(keys) != len(target):
        raise ParameterError(f"expected one key per row ({len(target)}), got {len(keys)}")
    shared = np.random.default_rng(seed)
    rows = []
    for i, t in enumerate(target):
        rng = shared if keys is None else np.random.default_rng([int(seed), int(keys[i])])
        others = np.delete(np.arange(num_classes), int(t))
        rows.append(rng.choice(others, size=count, replace=False))
    return np.stack(rows)


def random_logit(
    model_or_bundle: Any,
    inputs: torch.Tensor,
    methods: Sequence[Any],
    *,
    target: Any = None,
    classes: int | Sequence[Sequence[int]] = 3,
    objective: str = "logit",
    layer: Any = None,
    controls: Sequence[str] = PAIR_CONTROLS,
    seed: int = 42,
    batch_size: int | None = None,
    progress: Callable[[int, int], object] | None = None,
    metrics: Sequence[str] = METRICS,
) -> RandomLogitResult:
    """The random-logit test: each method's map for ``target`` (default: the predicted class) against its maps
    for ``classes`` other classes (a count drawn with ``seed``, or explicit [N][k] indices). All targets share
    each method's passes (one forward, a backward per class). The drawn classes depend on each image and ``seed``,
    never on the image's position in the batch (``row_keys``)."""
    return _random_logit(model_or_bundle, inputs, methods, target=target, classes=classes, objective=objective,
                         layer=layer, controls=controls, seed=seed, batch_size=batch_size, progress=progress,
                         metrics=metrics)[0]


def _random_logit(model_or_bundle: Any, inputs: torch.Tensor, methods: Sequence[Any], *, target: Any,
                  classes: int | Sequence[Sequence[int]], objective: str, layer: Any, controls: Sequence[str],
                  seed: int, batch_size: int | None, progress: Callable[[int, int], object] | None,
                  metrics: Sequence[str]) -> tuple[RandomLogitResult, _Original]:
    """:func:`random_logit`, and the target's maps on the model for the checks after it."""
    started = time.perf_counter()
    model, bundle, _ = unwrap(model_or_bundle)
    plans = _plans(method_specs(methods, controls), model)
    inputs = prepare_inputs(model, inputs)
    bsize = int(batch_size or default_batch_size(inputs.device))
    resolved, logits = _resolve_target(model, bundle, inputs, target, objective, bsize)
    if resolved.contrast:
        raise ParameterError("the random-logit test explains single classes; give a class, not a contrast")
    predicted = resolved.indices.cpu().numpy()
    if isinstance(classes, int):
        others = random_classes(predicted, logits.shape[-1], classes, seed, keys=row_keys(inputs))
    else:
        others = np.asarray(classes, dtype=np.int64).reshape(len(inputs), -1)
        if (others == predicted[:, None]).any() or (others < 0).any() or (others >= logits.shape[-1]).any():
            raise ParameterError(f"other classes must be indices in 0..{logits.shape[-1] - 1}, none the target")
    targets = (resolved,) + tuple(
        TargetSpec(torch.as_tensor(others[:, k]), len(inputs), None, objective).resolve(logits, inputs.device)
        for k in range(others.shape[1])
    )
    tracker = Progress(1, progress)
    runner = _Runner(model, bundle, inputs, plans, layer, batch_size, seed, tracker)
    tracker.total = max(1, sum(runner.units(p) for p in plans))
    results, step_logits = runner.run(model, targets)
    tracker.finish()
    table = {}
    for plan in plans:
        attribution = results[plan.key]  # [T, N, C, H, W]
        rows = []
        for i in range(len(inputs)):
            reference = PreparedMap(signed_map(attribution[0, i]))
            rows.append([reference.compare(PreparedMap(signed_map(attribution[k, i])), metrics)
                         for k in range(1, len(targets))])
        table[plan.key] = rows
    return (RandomLogitResult(_model_name(model, bundle), predicted, others, table, _names(plans),
                              getattr(runner.layer_info, "name", None), seed, time.perf_counter() - started),
            runner.original(model, resolved, results, step_logits))


# ---------------------------------------------------------------------------------------------------------
# Data randomisation
# ---------------------------------------------------------------------------------------------------------


@dataclass
class DataRandomisationResult:
    """Maps of one model against maps of the same architecture trained on shuffled labels (Adebayo et al. 2018,
    arXiv:1810.03292, section 5): ``methods[key][image][metric]``. High similarity: the map ignores what the
    labels taught."""

    model: str
    randomised_model: str
    target: np.ndarray
    methods: dict[str, list[dict[str, Similarity]]]
    names: dict[str, str]
    layer: str | None
    seed: int
    elapsed_s: float
    thumbnails: dict[str, np.ndarray] = field(default_factory=dict)  # key -> [2, N, h, w]: model, randomised

    def mean(self, key: str, metric: str = "spearman_abs") -> float | None:
        return _mean([cell[metric].value for cell in self.methods[key]])

    def to_dict(self, thumbnails: bool = False) -> dict[str, Any]:
        out = {"check": "data_randomisation", "model": self.model, "randomised_model": self.randomised_model,
               "target": self.target.tolist(), "layer": self.layer, "seed": self.seed, "elapsed_s": self.elapsed_s,
               "names": dict(self.names),
               "methods": {k: {m: _table([rows], m) for m in rows[0]} for k, rows in self.methods.items()}}
        if thumbnails:
            out["thumbnails"] = {k: v.astype(np.float64).tolist() for k, v in self.thumbnails.items()}
        return out


def data_randomisation(
    model_or_bundle: Any,
    randomised_or_bundle: Any,
    inputs: torch.Tensor,
    methods: Sequence[Any],
    *,
    target: Any = None,
    objective: str = "logit",
    layer: Any = None,
    controls: Sequence[str] = PAIR_CONTROLS,
    seed: int = 42,
    batch_size: int | None = None,
    progress: Callable[[int, int], object] | None = None,
    metrics: Sequence[str] = METRICS,
    thumbnail_size: int | None = THUMBNAIL_SIZE,
    known: _Original | None = None,
) -> DataRandomisationResult:
    """Each method's map from the first model against its map from the second (the same architecture trained on
    shuffled labels, e.g. ``lenet_digits`` and its shuffled copy), for the same inputs and the same class: the
    first model's top-1 unless ``target`` says otherwise. Any two models with the same layer names work. The first
    model's maps are taken from ``known`` where they are these (run_sanity passes the cascade's step 0)."""
    started = time.perf_counter()
    model, bundle, _ = unwrap(model_or_bundle)
    other, other_bundle, _ = unwrap(randomised_or_bundle)
    plans = _plans(method_specs(methods, controls), model)
    _plans(method_specs(methods, controls), other)
    inputs = prepare_inputs(model, inputs)
    other_inputs = prepare_inputs(other, inputs)
    bsize = int(batch_size or default_batch_size(inputs.device))
    resolved, _ = _resolve_target(model, bundle, inputs, target, objective, bsize)
    tracker = Progress(1, progress)
    runner = _Runner(model, bundle, inputs, plans, layer, batch_size, seed, tracker)
    tracker.total = max(1, sum(runner.units(p) for p in plans) + runner.units_to_run(model, (resolved,), known))
    if runner.layer_info is not None and runner.layer_info.name not in dict(other.named_modules()):
        raise ParameterError(f"layer {runner.layer_info.name!r} is not in the second model; give two models of "
                             "the same architecture")
    first, _ = runner.run(model, (resolved,), known=known)
    second, _ = runner.run(other, (resolved.to(other_inputs.device),), inputs=other_inputs)
    tracker.finish()
    table, thumbs = {}, {}
    for plan in plans:
        maps = [[PreparedMap(signed_map(a)) for a in results[plan.key][0]] for results in (first, second)]
        table[plan.key] = [a.compare(b, metrics) for a, b in zip(*maps)]
        thumbs[plan.key] = np.stack([[thumbnail(m.values, thumbnail_size) for m in row] for row in maps])
    return DataRandomisationResult(_model_name(model, bundle), _model_name(other, other_bundle),
                                   resolved.indices.cpu().numpy(), table, _names(plans),
                                   getattr(runner.layer_info, "name", None), seed, time.perf_counter() - started,
                                   thumbs)


# ---------------------------------------------------------------------------------------------------------
# Input invariance
# ---------------------------------------------------------------------------------------------------------


@dataclass
class InvarianceResult:
    """Each method on the model and input x against the shifted copy on x + shift (Kindermans et al. 2019,
    arXiv:1711.00867). ``relative_change[key]`` [N]: ‖A' − A‖₂ / ‖A‖₂ of the raw attributions;
    ``similarity[key][image][metric]``; ``logit_difference``: the largest |logit| difference between the two
    networks, measured (it must be float rounding: the check asserts it)."""

    model: str
    first_layer: str
    shift: list[float]
    target: np.ndarray
    relative_change: dict[str, np.ndarray]
    similarity: dict[str, list[dict[str, Similarity]]]
    names: dict[str, str]
    logit_difference: float
    logit_scale: float
    layer: str | None
    seed: int
    elapsed_s: float

    def to_dict(self) -> dict[str, Any]:
        return {"check": "input_invariance", "model": self.model, "first_layer": self.first_layer,
                "shift": self.shift, "target": self.target.tolist(), "layer": self.layer, "seed": self.seed,
                "logit_difference": self.logit_difference, "logit_scale": self.logit_scale,
                "elapsed_s": self.elapsed_s, "names": dict(self.names),
                "relative_change": {k: [float(x) for x in v] for k, v in self.relative_change.items()},
                "similarity": {k: {m: _table([rows], m) for m in rows[0]} for k, rows in self.similarity.items()}}


LOGIT_RTOL = 1e-4  # float32 rounding through a deep network stays far below this share of the logits' scale


def first_layer(model: nn.Module, inputs: torch.Tensor) -> str:
    """The name of the module that receives the model's input tensor itself, found by one traced forward (module
    pre-hooks: a TorchScript model, which runs no hooks, is refused with a SaliencyError)."""
    if getattr(model, "supports_hooks", True) is False or any(
            isinstance(m, torch.jit.ScriptModule) for m in model.modules()):
        raise SaliencyError("the model's first layer is found with module hooks, and this model refuses "
                            "them (a TorchScript module: hooks do not run on scripted code)")
    seen: list[str] = []
    handles = []
    with model_guard(model):  # the pre-hooks are shared with any other thread using this model: hold its lock
        try:
            for name, module in model.named_modules():
                if name and not any(True for _ in module.children()):
                    def hook(mod, args, name=name):
                        if not seen and args and args[0] is inputs:
                            seen.append(name)
                    handles.append(module.register_forward_pre_hook(hook))
            with torch.inference_mode():
                model(inputs)
        finally:
            for handle in handles:
                handle.remove()
    if not seen:
        raise SaliencyError("input invariance needs a first layer that receives the input tensor itself; this "
                            "model transforms its input before any layer does")
    return seen[0]


def input_invariance(
    model_or_bundle: Any,
    inputs: torch.Tensor,
    methods: Sequence[Any],
    *,
    shift: float | Sequence[float] = -1.0,
    target: Any = None,
    objective: str = "logit",
    layer: Any = None,
    controls: Sequence[str] = (),
    seed: int = 42,
    batch_size: int | None = None,
    progress: Callable[[int, int], object] | None = None,
    metrics: Sequence[str] = METRICS,
    known: _Original | None = None,
) -> InvarianceResult:
    """Kindermans et al. 2019 (arXiv:1711.00867): x' = x + shift (a scalar or one value per channel, in the
    model's input units), and on a copy the first layer's bias absorbs it: b' = b − W·shift, so the copy on x'
    computes exactly what the model computes on x (asserted). Where the first layer pads with zeros, its border
    outputs see the padding rather than the shift; the absorbed bias is then the exact per-position map
    layer(shift·1) − layer(0), which is the constant W·shift away from the border. With a bundle, the copy's
    normalisation moves by the shift too, so pixel-space baselines (black) stay black; baselines fixed in the
    model's input space (``zeros``) do not, which is Kindermans et al.'s point about reference points. The maps on
    the unshifted model are taken from ``known`` where they are these (run_sanity passes the cascade's step 0).
    """
    started = time.perf_counter()
    model, bundle, _ = unwrap(model_or_bundle)
    plans = _plans(method_specs(methods, controls), model)
    inputs = prepare_inputs(model, inputs)
    values, offset = _shift(inputs, shift)
    shifted_inputs = inputs + offset
    name = first_layer(model, inputs)
    copy = deepcopy(model)
    layer_module = copy.get_submodule(name)
    absorbed = _absorbed_shift(layer_module, name, inputs, offset, shifted_inputs)
    handle = layer_module.register_forward_hook(lambda mod, args, out: out - absorbed)
    try:
        bsize = int(batch_size or default_batch_size(inputs.device))
        resolved, logits = _resolve_target(model, bundle, inputs, target, objective, bsize)
        with model_guard(copy), torch.inference_mode():
            shifted_logits = as_logits(copy(shifted_inputs))
        difference = float((shifted_logits - logits).abs().max())
        scale = float(logits.abs().max())
        if not difference <= LOGIT_RTOL * max(scale, 1.0):
            raise SaliencyError(f"absorbing the shift into {name!r} did not keep the outputs: the logits moved by "
                                f"{difference:.3g} (scale {scale:.3g}); this model's first layer is not affine")
        tracker = Progress(1, progress)
        runner = _Runner(model, bundle, inputs, plans, layer, batch_size, seed, tracker)
        tracker.total = max(1, sum(runner.units(p) for p in plans)
                            + runner.units_to_run(model, (resolved,), known))
        first, _ = runner.run(model, (resolved,), known=known)
        runner.bundle = None if bundle is None else _shifted_bundle(bundle, copy, offset)
        second, _ = runner.run(copy, (resolved,), inputs=shifted_inputs)
        tracker.finish()
    finally:
        handle.remove()
    changes, table = {}, {}
    for plan in plans:
        changes[plan.key] = _relative_change(first[plan.key][0], second[plan.key][0])
        table[plan.key] = [PreparedMap(signed_map(x)).compare(PreparedMap(signed_map(y)), metrics)
                           for x, y in zip(first[plan.key][0], second[plan.key][0])]
    return InvarianceResult(_model_name(model, bundle), name, values, resolved.indices.cpu().numpy(), changes,
                            table, _names(plans), difference, scale, getattr(runner.layer_info, "name", None), seed,
                            time.perf_counter() - started)


def _shift(inputs: torch.Tensor, shift: float | Sequence[float]) -> tuple[list[float], torch.Tensor]:
    """The shift as given (a list of floats) and as a tensor [1, C, H, W] to add to the inputs."""
    values = [float(v) for v in (shift if isinstance(shift, Sequence) else [shift])]
    if len(values) not in (1, inputs.shape[1]) or not all(math.isfinite(v) for v in values):
        raise ParameterError(f"shift must be a finite number or one per input channel ({inputs.shape[1]}), "
                             f"got {shift!r}")
    offset = torch.tensor(values, dtype=inputs.dtype, device=inputs.device)
    return values, offset.view(1, -1, *([1] * (inputs.dim() - 2))).expand(1, inputs.shape[1], *inputs.shape[2:])


def _absorbed_shift(layer_module: nn.Module, name: str, inputs: torch.Tensor, offset: torch.Tensor,
                    shifted_inputs: torch.Tensor) -> torch.Tensor:
    """What the first layer must subtract so that it sees x + shift as x: layer(shift·1) − layer(0), checked on
    ``inputs`` and ``shifted_inputs`` (an affine layer absorbs it exactly; any other is refused)."""
    with model_guard(layer_module), torch.no_grad():
        at_shift, at_zero = layer_module(offset.contiguous()), layer_module(torch.zeros_like(offset))
        if not isinstance(at_shift, torch.Tensor):  # a detector's transform: an image list, no bias to absorb it
            raise SaliencyError(f"input invariance absorbs the shift into the bias of the first layer; this model's "
                                f"first module {name!r} ({type(layer_module).__name__}) returns "
                                f"{type(at_shift).__name__}, not a layer's output")
        absorbed = (at_shift - at_zero).detach().clone()
        # the absorption is exact for an affine layer (conv, linear, batch norm, a channel mean); check it here
        expected, moved = layer_module(inputs), layer_module(shifted_inputs) - absorbed
        gap = float((moved - expected).abs().max())
        if not gap <= LOGIT_RTOL * max(float(expected.abs().max()), 1.0):
            raise SaliencyError(f"input invariance absorbs the shift into an affine first layer; this model's first "
                                f"layer {name!r} ({type(layer_module).__name__}) is not affine (its output moved "
                                f"by {gap:.3g})")
    return absorbed


def _shifted_bundle(bundle: Any, copy: nn.Module, offset: torch.Tensor) -> Any:
    """The bundle of the shifted copy: its normalisation adds the shift, so pixel-space baselines stay put."""
    channel_shift = offset[:, :, :1, :1]
    return replace(
        bundle, model=copy,
        normalize=lambda pixels: bundle.normalize(pixels) + channel_shift.to(pixels.device),
        denormalize=lambda x: bundle.denormalize(x - channel_shift.to(x.device)),
    )


def _relative_change(before: torch.Tensor, after: torch.Tensor) -> np.ndarray:
    """[N] ‖after − before‖₂ / ‖before‖₂ per row of two attributions [N, ...], in float64."""
    before, after = before.double(), after.double()
    return ((after - before).flatten(1).norm(dim=1) / before.flatten(1).norm(dim=1).clamp_min(1e-30)).cpu().numpy()


# ---------------------------------------------------------------------------------------------------------
# Verdict
# ---------------------------------------------------------------------------------------------------------


RELATIVE_CHANGE = "relative_change"
MEASURE_LABELS = {**METRIC_LABELS, RELATIVE_CHANGE: "relative L2 change"}
# One threshold per similarity measure, in one place. The model-randomisation rule reads the mean of each curve
# over the cascade; calibrated on the three samples with EfficientNet-Lite0 (all 19 steps): vanilla, SmoothGrad,
# IG and Grad-CAM average 0.42 or less on every measure, guided backprop 0.60 or more, the random control about 0
# and the sobel control 1.
MODEL_BELOW = {"spearman_abs": 0.5, "spearman": 0.5, "ssim": 0.5, "hog": 0.5}
# Data randomisation compares two maps once (no curve): the paper's reading, changed below 0.6 as before.
DATA_BELOW = {"spearman_abs": 0.6, "spearman": 0.6, "ssim": 0.6, "hog": 0.6}
# Maps for other classes: guided backprop keeps 0.999 Spearman of |map| on the cat sample, vanilla 0.25.
LOGIT_BELOW = {"spearman_abs": 0.9, "spearman": 0.9, "ssim": 0.9, "hog": 0.9}


def _per_measure(value: float | Mapping[str, float]) -> dict[str, float]:
    return dict.fromkeys(METRICS, float(value)) if isinstance(value, (int, float)) else dict(value)


@dataclass(frozen=True)
class Thresholds:
    """The rules of the verdict, as data: one threshold per similarity measure and check (a single number sets
    all four measures).

    Model randomisation is judged on the whole cascade, not at one step, and on each measure alone. Adebayo et
    al. 2018 (arXiv:1810.03292, figures 2-4) read each measure's curve over the cascade: a method passes when its
    map moves away from the original as the layers are randomised from the top, and fails when it survives the
    randomisation of the higher layers (guided backprop changes only once the blocks near the input are reset).
    Here a method passes on a measure when the measure's mean over every step run (1 to the last: the normalised
    area under its curve, what Quantus' MPRT returns with ``return_average_correlation``; Hedström et al. 2023,
    arXiv:2202.06861) is below ``model_below``. A mean, unlike one step, does not flip on one noisy step (Grad-CAM's
    coarse map jumps by 0.3 between neighbouring steps), and a map that stays put over the top third of the
    network cannot pass by dropping at its last steps. A step where a map became constant counts as 0 (no
    correlation left). The measures may disagree: Guided Grad-CAM's |map| follows its Grad-CAM mask, which the
    head's randomisation destroys, while its signed map can keep its sign pattern.

    The random-logit test calls a method class-insensitive on a measure when its maps for other classes keep a
    mean similarity of ``logit_below`` or more; data randomisation uses ``data_below`` on the mean similarity.
    Input invariance allows a relative L2 change of 0.05: the shifted first layer rounds differently in float32,
    which flips a few ReLU6 gates downstream; on EfficientNet-Lite0 that moves gradient maps by about 1e-3,
    while input × gradient moves by about 3 (measured on the cat sample).
    """

    model_below: Mapping[str, float] = field(default_factory=lambda: dict(MODEL_BELOW))
    logit_below: Mapping[str, float] = field(default_factory=lambda: dict(LOGIT_BELOW))
    data_below: Mapping[str, float] = field(default_factory=lambda: dict(DATA_BELOW))
    invariance_max_change: float = 0.05

    def __post_init__(self) -> None:
        defaults = {"model_below": MODEL_BELOW, "logit_below": LOGIT_BELOW, "data_below": DATA_BELOW}
        for name, default in defaults.items():
            values = _per_measure(getattr(self, name))
            unknown = sorted(set(values) - set(METRICS))
            if unknown:
                raise ParameterError(f"{name}: unknown similarity {unknown[0]!r}; valid: {', '.join(METRICS)}")
            object.__setattr__(self, name, {**default, **values})  # a measure not named keeps its default


@dataclass(frozen=True)
class Check:
    """One similarity measure of one check of one method: the measured ``value`` against ``threshold``;
    ``passed`` None when the measure could not decide (``note`` says why). For model randomisation ``curve``
    holds the measure at every step and ``stays_below_from`` the first step from which it stays below."""

    measure: str
    value: float | None
    threshold: float
    passed: bool | None
    note: str = ""
    curve: tuple[float | None, ...] = ()
    stays_below_from: int | None = None

    @property
    def label(self) -> str:
        return MEASURE_LABELS.get(self.measure, self.measure)

    def cell(self) -> str:
        """"pass 0.312", "FAIL 0.823", or "pass (constant map)" where the value is undefined."""
        word = {True: "pass", False: "FAIL", None: "?"}[self.passed]
        if self.value is None:
            return f"{word} (constant map)" if "constant" in self.note else f"{word} (undefined)"
        return f"{word} {self.value:.3f}"

    def to_dict(self) -> dict[str, Any]:
        return {"measure": self.measure, "value": self.value, "threshold": self.threshold, "passed": self.passed,
                "note": self.note, "curve": list(self.curve), "stays_below_from": self.stays_below_from}


@dataclass(frozen=True)
class CheckVerdict:
    """One check of one method, judged by one rule on every measure: ``measures[name]`` is that measure's
    :class:`Check`. ``passed`` is True or False when every decided measure agrees, None when they disagree."""

    check: str
    rule: str
    measures: dict[str, Check]

    def decided(self, passed: bool) -> list[str]:
        return [m for m, c in self.measures.items() if c.passed is passed]

    @property
    def passed(self) -> bool | None:
        passing, failing = self.decided(True), self.decided(False)
        if passing and failing or not (passing or failing):
            return None
        return bool(passing)

    @property
    def agree(self) -> bool:
        return not (self.decided(True) and self.decided(False))

    def summary(self) -> str:
        """"passes on every measure", "fails on every measure", or "passes on SSIM, HOG; fails on Spearman
        signed"."""
        passing, failing = self.decided(True), self.decided(False)
        labels = lambda names: ", ".join(MEASURE_LABELS[m] for m in names)  # noqa: E731
        if passing and failing:
            return f"passes on {labels(passing)}; fails on {labels(failing)}"
        if not (passing or failing):
            return "undecided"
        every = "the measure" if len(self.measures) == 1 else "every measure"
        return f"{'passes' if passing else 'fails'} on {every}"

    def cell(self) -> str:
        """The check in one table cell: its measure's cell, or "pass (4/4)", "FAIL (0/4)", "mixed (2/4 pass)"."""
        if len(self.measures) == 1:
            return next(iter(self.measures.values())).cell()
        decided = len(self.decided(True)) + len(self.decided(False))
        passing = len(self.decided(True))
        if not self.agree:
            return f"mixed ({passing}/{decided} pass)"
        return f"{ {True: 'pass', False: 'FAIL', None: '?'}[self.passed]} ({passing}/{decided})"

    def to_dict(self) -> dict[str, Any]:
        return {"check": self.check, "rule": self.rule, "passed": self.passed, "summary": self.summary(),
                "measures": {m: c.to_dict() for m, c in self.measures.items()}}


@dataclass(frozen=True)
class Disagreement:
    """A measured model-randomisation verdict that differs from the published one: on ``measures``, with the
    ``reason`` in one sentence built from which measures pass and fail."""

    measures: tuple[str, ...]
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"measures": list(self.measures), "reason": self.reason}


CHECK_NAMES = {
    "model_randomisation": "model randomisation",
    "random_logit": "random logit",
    "data_randomisation": "data randomisation",
    "input_invariance": "input invariance",
}


def _and(items: Sequence[str]) -> str:
    items = list(items)
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def _value_text(check: Check) -> str:
    return "constant map" if check.value is None else f"{check.value:.2f}"


def disagreement(published: PublishedVerdict, check: CheckVerdict) -> Disagreement | None:
    """Where a measured model-randomisation verdict differs from the published one, which measures differ and
    why, in one sentence computed from the measures that pass and fail (None where they all agree with it, or
    where the paper made no model-randomisation finding for the method)."""
    expected = published.sanity.expects_pass
    if expected is None:
        return None
    passing, failing = check.decided(True), check.decided(False)
    differ = tuple(failing if expected else passing)
    if not differ:
        return None
    measures = check.measures
    named = lambda names: _and([f"{measures[m].label} ({_value_text(measures[m])})" for m in names])  # noqa: E731
    if passing and failing:
        reason = (f"passes on {named(passing)} but not on {named(failing)}: "
                  f"{_and([METRIC_MEANING[m] for m in passing])} changed while "
                  f"{_and([METRIC_MEANING[m] for m in failing])} survived the randomisation")
    elif passing:
        reason = (f"every measure's mean over the cascade is below its threshold ({named(passing)}): on this "
                  "model and image the map changes with the weights")
    else:
        late = [f"{measures[m].label} stays below it only from step {measures[m].stays_below_from}"
                for m in failing if measures[m].stays_below_from is not None]
        reason = (f"no measure's mean over the cascade is below its threshold ({named(failing)})"
                  + (f"; {_and(late)}" if late else "")
                  + ": on this model and image the map survives the randomisation of the top layers")
    return Disagreement(differ, reason[0].upper() + reason[1:] + ".")


@dataclass
class Verdict:
    """Pass/fail per method, check and similarity measure, with the thresholds; ``published`` holds each
    method's published model-randomisation verdict (Adebayo et al. 2018) and :meth:`disagreement` where the
    measurement differs from it."""

    rows: dict[str, dict[str, CheckVerdict]]
    methods: dict[str, str]  # key -> method name
    thresholds: Thresholds
    published: dict[str, PublishedVerdict] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for key, name in self.methods.items():
            self.published.setdefault(key, get_method(name).published_verdict())

    def expected(self, key: str) -> str:
        return self.published[key].label

    def disagreement(self, key: str) -> Disagreement | None:
        check = self.rows.get(key, {}).get("model_randomisation")
        return None if check is None else disagreement(self.published[key], check)

    def disagreements(self) -> dict[str, Disagreement]:
        found = {key: self.disagreement(key) for key in self.rows}
        return {key: flag for key, flag in found.items() if flag is not None}

    def checks(self) -> list[str]:
        """The checks that ran, in :data:`CHECK_NAMES` order."""
        return [c for c in CHECK_NAMES if any(c in row for row in self.rows.values())]

    def measures(self, check: str) -> list[str]:
        return list(dict.fromkeys(m for row in self.rows.values() if check in row for m in row[check].measures))

    def rules(self) -> dict[str, str]:
        """Each check's rule, once."""
        return {c: next(row[c].rule for row in self.rows.values() if c in row) for c in self.checks()}

    def table(self) -> str:
        """The verdict as text: model randomisation with one column per measure, the published verdict and a
        flag; the other checks one column each; then the rules and one sentence per disagreement."""
        blocks = []
        if "model_randomisation" in self.checks():
            measures = self.measures("model_randomisation")
            lines = [["method", *[MEASURE_LABELS[m] for m in measures], "published", "flag"]]
            for key, row in self.rows.items():
                check = row.get("model_randomisation")
                cells = [check.measures[m].cell() if check and m in check.measures else "-" for m in measures]
                lines.append([key, *cells, self.expected(key), "DIFFERS" if self.disagreement(key) else ""])
            blocks.append(("model randomisation", lines))
        others = [c for c in self.checks() if c != "model_randomisation"]
        if others:
            lines = [["method", *[CHECK_NAMES[c] for c in others]]]
            for key, row in self.rows.items():
                lines.append([key, *[row[c].cell() if c in row else "-" for c in others]])
            blocks.append(("other checks", lines))
        text: list[str] = []
        for title, lines in blocks:
            widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
            text += [f"{title}:", *["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines],
                     ""]
        text += [f"{CHECK_NAMES[c]}: {rule}" for c, rule in self.rules().items()]
        flags = self.disagreements()
        if flags:
            text.append("")
            text += [f"{key} differs from Adebayo et al. ({self.expected(key)}): {flag.reason}"
                     for key, flag in flags.items()]
        return "\n".join(text)

    def to_dict(self) -> dict[str, Any]:
        thresholds = asdict(self.thresholds)
        return {"thresholds": thresholds, "methods": dict(self.methods),
                "rows": {k: {c: check.to_dict() for c, check in row.items()} for k, row in self.rows.items()},
                "published": {k: self.expected(k) for k in self.rows},
                "disagreements": {k: flag.to_dict() for k, flag in self.disagreements().items()}}


def _stays_below_from(curve: Sequence[float | None], threshold: float) -> int | None:
    """The first step (≥ 1) from which every value is below ``threshold`` or undefined; None if the last is not."""
    start = None
    for step in range(len(curve) - 1, 0, -1):
        if curve[step] is not None and curve[step] >= threshold:
            break
        start = step
    return start


def _curve_check(measure: str, curve: list[float | None], threshold: float) -> Check:
    """The model-randomisation rule on one measure: the mean of ``curve`` over steps 1 to the last (a constant
    map's undefined step counts as 0) below ``threshold``."""
    steps = curve[1:]
    stays = _stays_below_from(curve, threshold)
    constant = sum(v is None for v in steps)
    if not steps or constant == len(steps):
        return Check(measure, None, threshold, True, "undefined: constant map (counted as changed)", tuple(curve),
                     stays)
    value = float(np.mean([0.0 if v is None else v for v in steps]))
    note = f"constant map at {constant} of {len(steps)} steps, counted as 0" if constant else ""
    return Check(measure, value, threshold, value < threshold, note, tuple(curve), stays)


def _mean_check(measure: str, value: float | None, threshold: float, undefined_means: bool | None,
                note_undefined: str) -> Check:
    if value is None:
        return Check(measure, None, threshold, undefined_means, note_undefined)
    return Check(measure, value, threshold, value < threshold)


def verdict(
    cascade: CascadeResult | None = None,
    logit: RandomLogitResult | None = None,
    data: DataRandomisationResult | None = None,
    invariance: InvarianceResult | None = None,
    thresholds: Thresholds = Thresholds(),
) -> Verdict:
    """Pass/fail per method, check and similarity measure from whichever checks ran, each measure judged by the
    check's one rule (:class:`Thresholds`). Controls are judged like methods: the sobel control failing model
    randomisation is the yardstick working, not a bug."""
    rows: dict[str, dict[str, CheckVerdict]] = {}
    names: dict[str, str] = {}
    published: dict[str, PublishedVerdict] = {}

    def add(key: str, check: str, rule: str, measures: dict[str, Check]) -> None:
        rows.setdefault(key, {})[check] = CheckVerdict(check, rule, measures)

    if cascade is not None:
        last, blocks = len(cascade.steps) - 1, len(cascade.blocks)
        rule = (f"passes on a measure when its similarity to the original map, averaged over every step run (after "
                f"{last} of {blocks} steps, up to {cascade.steps[last].name}), is below "
                f"{_thresholds_text(thresholds.model_below, cascade.metrics)}: the area under the cascade curve, not "
                "one step; a step where the map became constant counts as 0")
        for key, result in cascade.methods.items():
            names[key] = result.method
            published[key] = get_method(result.method).published_verdict(result.params)
            add(key, "model_randomisation", rule,
                {m: _curve_check(m, result.mean_curve(m), thresholds.model_below[m]) for m in cascade.metrics})
    if logit is not None:
        metrics = list(next(iter(logit.methods.values()))[0][0])
        rule = (f"class-sensitive on a measure when the mean similarity to the maps of {logit.classes.shape[1]} "
                f"random other classes is below {_thresholds_text(thresholds.logit_below, metrics)}")
        names.update(logit.names)
        for key in logit.methods:
            add(key, "random_logit", rule, {m: _mean_check(m, logit.mean(key, m), thresholds.logit_below[m], None,
                                                            "undefined: constant map") for m in metrics})
    if data is not None:
        metrics = list(next(iter(data.methods.values()))[0])
        rule = (f"passes on a measure when the mean similarity to the map of the model trained on shuffled labels "
                f"is below {_thresholds_text(thresholds.data_below, metrics)}")
        names.update(data.names)
        for key in data.methods:
            add(key, "data_randomisation", rule,
                {m: _mean_check(m, data.mean(key, m), thresholds.data_below[m], True,
                                "undefined: constant map (counted as changed)") for m in metrics})
    if invariance is not None:
        limit = thresholds.invariance_max_change
        rule = (f"invariant when the attribution changes by at most {limit:g} (relative L2) under an input shift "
                f"of {invariance.shift} absorbed by {invariance.first_layer!r}")
        names.update(invariance.names)
        for key, change in invariance.relative_change.items():
            worst = float(np.max(change))
            add(key, "input_invariance", rule, {RELATIVE_CHANGE: Check(RELATIVE_CHANGE, worst, limit, worst <= limit)})
    return Verdict(rows, names, thresholds, published)


def _thresholds_text(values: Mapping[str, float], metrics: Sequence[str]) -> str:
    """"0.6" when every measure shares it, else "Spearman |map| 0.6, SSIM 0.5, ..."."""
    chosen = {m: values[m] for m in metrics}
    if len(set(chosen.values())) == 1:
        return f"{next(iter(chosen.values())):g}"
    return ", ".join(f"{METRIC_LABELS[m]} {v:g}" for m, v in chosen.items())


def _names(plans: list[_Plan]) -> dict[str, str]:
    return {p.key: p.info.name for p in plans}


# ---------------------------------------------------------------------------------------------------------
# Everything at once (the dashboard page and the CLI)
# ---------------------------------------------------------------------------------------------------------


@dataclass
class SanityReport:
    """The checks that ran on one input, and their verdict."""

    cascade: CascadeResult | None
    random_logit: RandomLogitResult | None
    input_invariance: InvarianceResult | None
    data_randomisation: DataRandomisationResult | None
    verdict: Verdict
    elapsed_s: float
    notes: list[str] = field(default_factory=list)  # checks that could not run on this model, and why

    def to_dict(self, thumbnails: bool = True) -> dict[str, Any]:
        return {
            "model_randomisation": self.cascade.to_dict(thumbnails) if self.cascade else None,
            "random_logit": self.random_logit.to_dict() if self.random_logit else None,
            "input_invariance": self.input_invariance.to_dict() if self.input_invariance else None,
            "data_randomisation": self.data_randomisation.to_dict() if self.data_randomisation else None,
            "verdict": self.verdict.to_dict(),
            "elapsed_s": self.elapsed_s,
            "notes": list(self.notes),
        }


class _Phases:
    """One ``progress(done, total)`` over checks run one after another: each check's own counts are shifted by
    the passes of the checks before it."""

    def __init__(self, callback: Callable[[int, int], object] | None):
        self.callback, self.before, self.current = callback, 0, 0

    def next(self) -> Callable[[int, int], object] | None:
        if self.callback is None:
            return None
        self.before += self.current
        self.current = 0

        def report(done: int, total: int) -> object:
            self.current = total
            return self.callback(self.before + done, self.before + total)

        return report


def run_sanity(
    model_or_bundle: Any,
    inputs: torch.Tensor,
    methods: Sequence[Any],
    *,
    layer: Any = None,
    target: Any = None,
    steps: int | None = None,
    random_classes_count: int = 3,
    shift: float | Sequence[float] = -1.0,
    randomised: Any = None,
    seed: int = 42,
    batch_size: int | None = None,
    progress: Callable[[int, int], object] | None = None,
    thresholds: Thresholds = Thresholds(),
) -> SanityReport:
    """The cascade, the random-logit test and input invariance (and data randomisation when ``randomised``, the
    shuffled-label model, is given) for ``methods``, with the verdict. The model's own maps for the target are
    computed once, by the random-logit test beside its other classes (one forward per pass for all of them), and
    taken as the cascade's step 0 and as the unchanged model's maps of input invariance and data randomisation:
    the same numbers as each check run alone, about two cascade steps fewer. ``progress(done, total)`` counts the
    passes of every check, one after the other: each check adds its passes to ``total`` when it starts (its count
    is known only then), so ``done`` never goes back. ``target``: the class every check explains (default: each
    image's top-1; a dense model's scored bundle passes its picked box or region). ``random_classes_count`` 0
    leaves the random-logit test out (a note says so): a dense model's target with no other box or region to
    compare with."""
    started = time.perf_counter()
    phases = _Phases(progress)
    # The model's own maps for the target are computed once: with the random-logit test's other classes (one
    # forward per pass for all of them), then taken by the cascade as its step 0, by input invariance and by data
    # randomisation as their unchanged model's maps.
    notes = []
    logit = known = None
    if random_classes_count == 0:
        notes.append("random-logit test not run: no other class (box or region) to compare the target's maps with")
    else:
        logit, known = _random_logit(model_or_bundle, inputs, methods, target=target, classes=random_classes_count,
                                     objective="logit", layer=layer, controls=PAIR_CONTROLS, seed=seed,
                                     batch_size=batch_size, progress=phases.next(), metrics=METRICS)
    cascade, known = _cascade(model_or_bundle, inputs, methods, target=target, objective="logit", layer=layer,
                              controls=CONTROLS, steps=steps, blocks=None, seed=seed, batch_size=batch_size,
                              progress=phases.next(), metrics=METRICS, thumbnail_size=THUMBNAIL_SIZE, known=known)
    try:
        invariance = input_invariance(model_or_bundle, inputs, methods, shift=shift, target=target, layer=layer,
                                      seed=seed, batch_size=batch_size, progress=phases.next(), known=known)
    except SaliencyError as exc:  # a model whose first layer cannot absorb a shift: the other checks still stand
        invariance = None
        notes.append(f"input invariance not run: {exc}")
    data = None
    if randomised is not None:
        data = data_randomisation(model_or_bundle, randomised, inputs, methods, layer=layer, seed=seed,
                                  batch_size=batch_size, progress=phases.next(), known=known)
    return SanityReport(cascade, logit, invariance, data, verdict(cascade, logit, data, invariance, thresholds),
                        time.perf_counter() - started, notes)


def filmstrip(cascade: CascadeResult, image: int = 0, colormap: str = "inferno", gap: int = 2,
              labels: bool = True) -> np.ndarray:
    """uint8 [H, W, 3]: one row per method, one column per step (step 0, the original, first), each tile |map|
    on its own robust range (render's percentile clip) so a map whose scale collapsed still shows its shape; a
    constant map is black. ``labels`` numbers the steps on top and names each method in a band above its row."""
    rows = []
    for result in cascade.methods.values():
        tiles = []
        for step in range(len(cascade.steps)):
            values = result.thumbnails[step, image]
            lo, hi = render.value_range(values)
            tiles.append(render.colorize(render.scale_to_range(values, lo, hi), colormap))
        spacer = np.full((tiles[0].shape[0], gap, 3), 255, dtype=np.uint8)
        rows.append(np.concatenate([t for tile in tiles for t in (tile, spacer)][:-1], axis=1))
    if not labels:
        spacer = np.full((gap, rows[0].shape[1], 3), 255, dtype=np.uint8)
        return np.concatenate([r for row in rows for r in (row, spacer)][:-1], axis=0)
    tile_h, tile_w = cascade.methods[next(iter(cascade.methods))].thumbnails.shape[-2:]
    # Labels as large as a tile allows (a step number fills most of its tile's width) and the names in bands of
    # their own, not in a margin: a page that shrinks a 20-step strip to a narrow column shrinks the text with it,
    # and text drawn this large stays legible there.
    font = ImageFont.load_default(size=max(12, int(tile_w * 0.55)))
    band = int(font.size * 1.3)
    width = rows[0].shape[1]
    height = band + sum(band + row.shape[0] + gap for row in rows)
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    for step in range(len(cascade.steps)):
        draw.text((step * (tile_w + gap) + tile_w // 2, band // 2), str(step), fill="black", font=font, anchor="mm")
    top = band
    for key, row in zip(cascade.methods, rows):
        draw.text((2, top + band // 2), key, fill="black", font=font, anchor="lm")
        canvas.paste(Image.fromarray(row), (0, top + band))
        top += band + row.shape[0] + gap
    return np.asarray(canvas)


__all__ = [
    "BLOCK_RULE",
    "CONTROLS",
    "Block",
    "CascadeResult",
    "CascadeStep",
    "Check",
    "CheckVerdict",
    "DataRandomisationResult",
    "Disagreement",
    "InvarianceResult",
    "KINDERMANS",
    "MEASURE_LABELS",
    "MethodCascade",
    "MethodSpec",
    "RandomLogitResult",
    "SIXT",
    "SanityReport",
    "Thresholds",
    "Verdict",
    "cascade_blocks",
    "data_randomisation",
    "disagreement",
    "filmstrip",
    "first_layer",
    "input_invariance",
    "method_specs",
    "model_randomisation",
    "parameter_layers",
    "random_classes",
    "random_logit",
    "randomise",
    "row_keys",
    "run_sanity",
    "signed_map",
    "verdict",
]
