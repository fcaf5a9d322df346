"""Faithfulness of a saliency map: does removing what it calls important change the prediction?

- Deletion and insertion curves (Petsiuk, Das & Saenko 2018, arXiv:1806.07421): remove (or insert) the pixels
  most salient first, in ``steps`` equal steps, and record the target's probability. A faithful map makes the
  deletion curve fall fast (low AUC) and the insertion curve rise fast (high AUC).
- :func:`mask_top`: the top-k% pixels masked, and the new prediction (the dashboard's live slider).

Every map ranks pixels by value, highest first; ties keep raster order (a stable sort), so a constant map removes
pixels row by row. Perturbed copies are built one batch at a time (one ``batch_size`` knob); every target is
scored from the same forward passes, and all methods share the two ends of the curves (the image and the
substrate). Results are plain dataclasses of NumPy arrays with a JSON-ready ``to_dict()``.

ROAD, which fills the removed pixels by noisy linear imputation, is :mod:`.road`; the pointing games are
:mod:`.pointing`, ROAR :mod:`.roar`. The curves and ROAD start alike (:func:`start_curves`: the model, the inputs,
the checked maps, the batch size) and turn logits into curves alike (:func:`target_curves`); the mask slider shares
the ranking and the target resolution.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..baselines import make_baseline
from ..batching import Progress, batch_slices, default_batch_size
from ..core import as_logits, prepare_inputs, unwrap
from ..dense.targets import DenseScores
from ..errors import ParameterError, TargetError
from ..hooks import model_guard
from ..registry import Reference
from ..targets import TargetSpec

SAMEK = Reference("Samek, Binder, Montavon, Lapuschkin & Müller", 2017,
                  "Evaluating the Visualization of What a Deep Neural Network Has Learned", "1509.06321")
KINDS = ("deletion", "insertion")
SUBSTRATES = ("black", "blur", "mean")
# Petsiuk et al.: deletion fills with a constant (black), insertion starts from a blurred copy.
DEFAULT_SUBSTRATES = {"deletion": "black", "insertion": "blur"}
DEFAULT_STEPS = 50
REGION_GRID = 7  # grid_region: regions of about a 7×7 grid
# The setting the dashboard trusts by default: regions of the CAM grid (grid_region) filled with the image mean.
# Single black pixels read to a CNN as noise, off the data distribution, and a random ranking, itself scattered
# like noise, sinks the class fastest of all (Samek et al. 2017; Rong et al. 2022, arXiv:2202.00449).
TRUSTED_SUBSTRATE = "mean"
# Which way a faithful map moves each curve's AUC: deletion and ROAD MoRF fall fast (lower is more faithful),
# insertion and ROAD LeRF stay high (higher is).
LOWER_IS_FAITHFUL = {"deletion": True, "insertion": False, "road_morf": True, "road_lerf": False}


# ---------------------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------------------


def _floats(values: Any) -> Any:
    return np.asarray(values, dtype=np.float64).tolist()


@dataclass
class Curve:
    """One method's curve for one target over N images.

    ``kind``: "deletion", "insertion", "road_morf" or "road_lerf". ``fractions`` [S]: the share of pixels removed
    (inserted, for insertion) at each point, from 0. ``probability`` and ``logit`` [N, S]: the target's softmax
    probability and logit there; for a dense model's target (:func:`scores_targets`) both are the target's own
    score (a box's class score, a region's logit sum), which no softmax across the other targets may change.
    ``classes`` [N]: the class scored in each row; ``target``: the target as asked ("top1", 281, ...).
    """

    kind: str
    method: str
    target: str
    classes: np.ndarray
    fractions: np.ndarray
    probability: np.ndarray
    logit: np.ndarray

    @staticmethod
    def _area(values: np.ndarray, fractions: np.ndarray) -> np.ndarray:
        span = float(fractions[-1] - fractions[0]) or 1.0
        return np.trapezoid(values, fractions, axis=-1) / span

    @property
    def auc(self) -> np.ndarray:
        """[N] trapezoid area under the probability curve, divided by the span of ``fractions`` (the span is 1
        for deletion and insertion, so this is Petsiuk et al.'s AUC over [0, 1]; for ROAD it is the mean height)."""
        return self._area(self.probability, self.fractions)

    @property
    def logit_auc(self) -> np.ndarray:
        """[N] the same area under the logit curve."""
        return self._area(self.logit, self.fractions)

    @property
    def mean_auc(self) -> float:
        return float(self.auc.mean())

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "method": self.method,
            "target": self.target,
            "classes": [int(c) for c in self.classes],
            "fractions": _floats(self.fractions),
            "probability": _floats(self.probability),
            "logit": _floats(self.logit),
            "auc": _floats(self.auc),
            "logit_auc": _floats(self.logit_auc),
            "mean_auc": self.mean_auc,
        }


@dataclass
class CurveSet:
    """Curves of several methods, kinds and targets computed from shared passes.

    ``substrates`` maps each kind to its substrate (ROAD: "noisy_linear"); ``model_passes`` counts the images the
    model saw; ``settings`` holds the remaining knobs (steps, noise, seed, ...).
    """

    curves: list[Curve]
    substrates: dict[str, str]
    model_passes: int
    elapsed_s: float
    settings: dict[str, Any] = field(default_factory=dict)

    def curve(self, kind: str, method: str, target: str | None = None) -> Curve:
        """The curve of ``method`` of this kind; ``target`` (its label) may be left out when there is one."""
        found = [c for c in self.curves if c.kind == kind and c.method == method
                 and (target is None or c.target == str(target))]
        if not found:
            have = sorted({(c.kind, c.method, c.target) for c in self.curves})
            raise KeyError(f"no {kind} curve for method {method!r}, target {target!r}; have {have}")
        return found[0]

    def table(self) -> list[dict[str, Any]]:
        """One row per curve: kind, method, target, mean AUC (probability and logit) over the images."""
        return [
            {"kind": c.kind, "method": c.method, "target": c.target, "n": len(c.classes),
             "auc": c.mean_auc, "logit_auc": float(c.logit_auc.mean())}
            for c in self.curves
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "substrates": dict(self.substrates),
            "model_passes": int(self.model_passes),
            "elapsed_s": float(self.elapsed_s),
            "settings": dict(self.settings),
            "table": self.table(),
            "curves": [c.to_dict() for c in self.curves],
        }


def best_methods(curve_sets: CurveSet | Sequence[CurveSet]) -> dict[str, list[str]]:
    """Kind -> the methods with the most faithful AUC (lowest for deletion and ROAD MoRF, highest for insertion
    and ROAD LeRF; see :data:`LOWER_IS_FAITHFUL`), several when tied, in the curves' order.

    A method's score is its mean AUC over the images, averaged over its targets. Kinds with fewer than two methods
    rank nothing and are left out.
    """
    sets = [curve_sets] if isinstance(curve_sets, CurveSet) else list(curve_sets)
    scores: dict[str, dict[str, list[float]]] = {}
    for curve in (c for curve_set in sets for c in curve_set.curves):
        if curve.kind not in LOWER_IS_FAITHFUL:
            raise ParameterError(f"no faithful direction for curve kind {curve.kind!r}; "
                                 f"known: {', '.join(LOWER_IS_FAITHFUL)}")
        scores.setdefault(curve.kind, {}).setdefault(curve.method, []).append(curve.mean_auc)
    best = {}
    for kind, by_method in scores.items():
        if len(by_method) < 2:
            continue
        sign = 1.0 if LOWER_IS_FAITHFUL[kind] else -1.0
        signed = {method: sign * float(np.mean(values)) for method, values in by_method.items()}
        top = min(signed.values())
        best[kind] = [method for method, value in signed.items() if value <= top]
    return best


def control_ranks_best(curve_sets: CurveSet | Sequence[CurveSet], control: str = "random") -> list[str]:
    """The kinds (in the curves' order) where ``control``, a map with no information such as the random control,
    scores as faithful as the best method or better. A control cannot be faithful, so a kind listed here measures
    the perturbation more than the maps: e.g. scattered single black pixels take the image off the data
    distribution, and a ranking scattered like noise sinks the class fastest (Samek et al. 2017, arXiv:1509.06321;
    Rong et al. 2022, arXiv:2202.00449)."""
    return [kind for kind, methods in best_methods(curve_sets).items() if control in methods]


@dataclass
class MaskResult:
    """:func:`mask_top`'s answer for N images: the masked ``inputs`` [N, C, H, W] (model space, a tensor on the
    model's device), ``pixels`` uint8 [N, H, W, C] to show (None without a ModelBundle), ``removed`` bool [N, H, W],
    the new ``logits`` / ``probabilities`` [N, K], ``predicted`` [N], and the target's probability before and after
    (``target`` given)."""

    inputs: torch.Tensor
    pixels: np.ndarray | None
    removed: np.ndarray
    fraction: float
    logits: np.ndarray
    probabilities: np.ndarray
    predicted: np.ndarray
    classes: np.ndarray | None = None
    target_probability: np.ndarray | None = None
    original_probability: np.ndarray | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "fraction": float(self.fraction),
            "removed_pixels": [int(r.sum()) for r in self.removed],
            "predicted": [int(p) for p in self.predicted],
            "probabilities": _floats(self.probabilities),
            "classes": None if self.classes is None else [int(c) for c in self.classes],
            "target_probability": None if self.target_probability is None else _floats(self.target_probability),
            "original_probability": None if self.original_probability is None
            else _floats(self.original_probability),
        }


# ---------------------------------------------------------------------------------------------------------
# Shared steps: maps, rankings, targets, substrates
# ---------------------------------------------------------------------------------------------------------


def as_maps(maps: Any, n_rows: int, hw: tuple[int, int], name: str = "map") -> np.ndarray:
    """float32 [N, H, W] from [H, W] (one image), [N, H, W] or [N, 1, H, W]; NaN/inf become 0."""
    if isinstance(maps, torch.Tensor):
        maps = maps.detach().float().cpu().numpy()
    array = np.asarray(maps, dtype=np.float32)
    if array.ndim == 4 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim == 2 and n_rows == 1:
        array = array[None]
    if array.ndim != 3 or array.shape[0] != n_rows or tuple(array.shape[1:]) != tuple(hw):
        raise ParameterError(
            f"{name} must be one [H, W] map per image, i.e. [{n_rows}, {hw[0]}, {hw[1]}]; got shape "
            f"{list(array.shape)} (reduce an attribution's channels with explainers.render.to_map first)"
        )
    return np.where(np.isfinite(array), array, np.float32(0)).astype(np.float32)


def check_maps(maps: Mapping[str, Any], n_rows: int, hw: tuple[int, int]) -> dict[str, np.ndarray]:
    if not isinstance(maps, Mapping) or not maps:
        raise ParameterError(f"maps must be a non-empty dict of method name -> map; got {type(maps).__name__}")
    return {str(name): as_maps(value, n_rows, hw, f"map {name!r}") for name, value in maps.items()}


def region_ids(hw: tuple[int, int], region: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """[H*W] int64: the square region (``region`` px a side, row-major, the last row/column possibly smaller) of
    each pixel."""
    height, width = hw
    rows = torch.arange(height, device=device) // region
    columns = torch.arange(width, device=device) // region
    return (rows[:, None] * math.ceil(width / region) + columns[None, :]).flatten()


def grid_region(hw: Sequence[int]) -> int:
    """The region side that cuts an image into about a 7×7 grid (32 px on 224×224, 5 px on 32×32): the grid of
    the last convolutional layer of most ImageNet CNNs, so a region is what one CAM cell covers."""
    return max(1, round(min(int(v) for v in hw) / REGION_GRID))


def region_choices(hw: Sequence[int]) -> list[int]:
    """Region sides worth offering for an image: single pixels, and a quarter, half and all of a grid cell."""
    cell = grid_region(hw)
    return sorted({1, max(1, cell // 4), max(1, cell // 2), cell})


def pixel_ranks(maps: np.ndarray | torch.Tensor, device: torch.device | str = "cpu", region: int = 1) -> torch.Tensor:
    """[N, H*W] int64: each pixel's place in its map's order, most salient first (0 = the maximum).

    ``region`` > 1 ranks square regions of that many pixels a side by their mean value instead (region
    perturbation, Samek, Binder, Montavon, Lapuschkin & Müller 2017, arXiv:1509.06321): a region's pixels are
    removed together, in raster order. Ties keep raster order (a stable sort), so the ranking is deterministic.
    """
    values = torch.as_tensor(np.asarray(maps, dtype=np.float32)).to(device)
    hw = tuple(values.shape[-2:])
    values = values.flatten(1)
    if region > 1:
        ids = region_ids(hw, region, values.device)
        count = int(ids.max()) + 1
        sums = torch.zeros((len(values), count), device=values.device).index_add_(1, ids, values)
        means = sums / torch.bincount(ids, minlength=count).to(sums.dtype)
        by_region = torch.argsort(ids, stable=True)  # pixels grouped by region, raster order inside each
        order = by_region[torch.argsort(-means[:, ids[by_region]], dim=1, stable=True)]
    else:
        order = torch.argsort(-values, dim=1, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand_as(order).contiguous())
    return ranks


def _target_list(targets: Any) -> list[Any]:
    """One target, or a list of targets each for every row (an array or tensor is one target, one class per row)."""
    if targets is None:
        return ["top1"]
    if isinstance(targets, (list, tuple)):
        if not targets:
            raise TargetError("targets is empty; give a target such as 'top1' or a class index")
        return list(targets)
    return [targets]


def _target_label(spec: Any, index: int) -> str:
    if isinstance(spec, (str, int, np.integer)):
        return str(spec)
    return f"target{index}"


def resolve_targets(targets: Any, n_rows: int, categories, logits: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    """[(label, classes [N] on the logits' device)], from the clean logits (ranks need them)."""
    resolved = []
    labels: set[str] = set()
    for index, spec in enumerate(_target_list(targets)):
        target = TargetSpec(spec, n_rows, categories, num_classes=logits.shape[-1]).resolve(logits, logits.device)
        if target.contrast:
            raise TargetError(f"faithfulness curves score one class per image; target {spec!r} is a contrast")
        label = _target_label(spec, index)
        if label in labels:
            label = f"{label}#{index}"
        labels.add(label)
        resolved.append((label, target.indices.to(logits.device)))
    return resolved


def make_substrate(kind: str, inputs: torch.Tensor, bundle: Any = None) -> torch.Tensor:
    """What a removed pixel becomes: "black" (pixel value 0, through the bundle's normalisation), "blur" (a
    Gaussian blur, sigma = side/20) or "mean" (each image's per-channel mean).

    Blur and mean are affine-equivariant, so computing them in the model's input space equals computing them in
    pixel space and normalising (any per-channel affine normalisation): they also work on a bare nn.Module. Black
    is a pixel value and needs the bundle.
    """

    if kind not in SUBSTRATES:
        raise ParameterError(f"substrate must be one of {', '.join(SUBSTRATES)}; got {kind!r}")
    if kind == "black" and getattr(bundle, "normalize", None) is None:
        raise ParameterError(
            "substrate 'black' is a pixel value and needs the model's preprocessing: pass a ModelBundle "
            "(explainers.load_model) instead of a bare nn.Module, or use substrate 'blur' or 'mean'"
        )
    return make_baseline(kind, inputs, bundle)


def _substrates(substrate: Any, kinds: Sequence[str]) -> dict[str, str]:
    if substrate is None:
        return {kind: DEFAULT_SUBSTRATES[kind] for kind in kinds}
    if isinstance(substrate, str):
        return {kind: substrate for kind in kinds}
    if isinstance(substrate, Mapping):
        unknown = set(substrate) - set(KINDS)
        if unknown:
            raise ParameterError(f"substrate keys must be among {', '.join(KINDS)}; got {sorted(unknown)}")
        return {kind: substrate.get(kind, DEFAULT_SUBSTRATES[kind]) for kind in kinds}
    raise ParameterError(f"substrate must be a name ({', '.join(SUBSTRATES)}) or a dict per kind; got {substrate!r}")


def check_positive(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ParameterError(f"{name} must be a positive integer; got {value!r}")
    return int(value)


def predict_logits(model, batch: torch.Tensor) -> torch.Tensor:
    return as_logits(model(batch)).float()


@dataclass
class CurveRun:
    """What every curve function resolves before its passes: the model, its bundle (None for a bare module) and
    categories, the inputs on the model's device, the checked maps (:func:`check_maps`) and the batch size."""

    model: nn.Module
    bundle: Any
    categories: Sequence[str] | None
    inputs: torch.Tensor
    maps: dict[str, np.ndarray]
    batch_size: int

    @property
    def hw(self) -> tuple[int, int]:
        return tuple(self.inputs.shape[-2:])

    def predict(self, images: torch.Tensor, meter: Progress) -> torch.Tensor:
        """Logits [N, K] of ``images`` one batch at a time, each batch counted on ``meter``."""
        chunks = []
        for a, b in batch_slices(len(images), self.batch_size):
            chunks.append(predict_logits(self.model, images[a:b]))
            meter.advance(b - a)
        return torch.cat(chunks)

    def elapsed(self, started: float) -> float:
        """Seconds since ``started``, once the device has finished the work queued on it."""
        if self.inputs.device.type == "cuda":
            torch.cuda.synchronize(self.inputs.device)
        return time.perf_counter() - started


def start_curves(model_or_bundle: Any, inputs: Any, maps: Mapping[str, Any], batch_size: int | None) -> CurveRun:
    """The checks and resolutions every curve function starts with (see :class:`CurveRun`)."""
    if batch_size is not None:
        check_positive("batch_size", batch_size)
    model, bundle, categories = unwrap(model_or_bundle)
    inputs = prepare_inputs(model, inputs)
    checked = check_maps(maps, len(inputs), tuple(inputs.shape[-2:]))
    batch_size = int(batch_size or default_batch_size(inputs.device, forward_only=True))
    return CurveRun(model, bundle, categories, inputs, checked, batch_size)


def scores_targets(model: nn.Module) -> bool:
    """True when ``model``'s output columns are separate targets' scores (a detector's boxes, a segmenter's
    regions: :class:`~explainers.dense.DenseScores`), not one classifier's logits: a softmax across them would
    make one box's curve depend on the others, so each curve follows the target's own score."""
    return isinstance(model, DenseScores)


def target_probabilities(logits: torch.Tensor, scores: bool) -> torch.Tensor:
    """What a curve calls the target's probability: the softmax of a classifier's logits [..., K], or, with
    ``scores`` (:func:`scores_targets`), a dense model's scores themselves."""
    return logits if scores else logits.softmax(-1)


def target_curves(kind: str, method: str, logits: torch.Tensor, fractions: np.ndarray,
                  resolved: list[tuple[str, torch.Tensor]], scores: bool = False) -> list[Curve]:
    """One :class:`Curve` per resolved target from one method's logits [S, N, K] at the S ``fractions``;
    ``scores``: the columns are separate targets' scores (:func:`scores_targets`), followed as they are."""
    probabilities = target_probabilities(logits, scores)
    curves = []
    for label, classes in resolved:
        index = classes.view(1, -1, 1).expand(len(fractions), -1, 1)
        curves.append(Curve(
            kind=kind, method=method, target=label, classes=classes.cpu().numpy(), fractions=fractions,
            probability=probabilities.gather(2, index)[..., 0].T.double().cpu().numpy(),
            logit=logits.gather(2, index)[..., 0].T.double().cpu().numpy(),
        ))
    return curves


# ---------------------------------------------------------------------------------------------------------
# Deletion and insertion
# ---------------------------------------------------------------------------------------------------------


def faithfulness_curves(
    model_or_bundle: Any,
    inputs: torch.Tensor,
    maps: Mapping[str, Any],
    targets: Any = "top1",
    *,
    kinds: Sequence[str] = KINDS,
    steps: int = DEFAULT_STEPS,
    substrate: str | Mapping[str, str] | None = None,
    region: int = 1,
    batch_size: int | None = None,
    progress: Callable[[int, int], object] | None = None,
) -> CurveSet:
    """Deletion and/or insertion curves (Petsiuk et al. 2018, arXiv:1806.07421) of every map, for every target.

    Step s of ``steps`` removes (deletion) or inserts (insertion) the ``round(s/steps * H*W)`` most salient pixels
    of each map: deletion puts the substrate there, insertion starts from the substrate and puts the image back
    there. ``maps``: method name -> [N, H, W] (or [H, W] for one image), ranked highest first. ``targets``: one
    target or a list of them (anything ``explain()`` accepts: index, name, "topK", one per row as an array); each
    is scored from the same passes. ``substrate``: "black", "blur" or "mean", or a dict per kind (default: black
    for deletion, blur for insertion, as the paper). ``progress(done, total)`` counts images through the model;
    returning False, or raising Cancelled, stops the run. ``region``: 1 ranks single pixels (the paper); N > 1
    ranks N×N regions by their mean and removes each whole (see :func:`pixel_ranks`), so the random control
    removes patches rather than scattered pixels, which a CNN reads as noise rather than as missing evidence.

    AUC = ∫₀¹ p_target(x_f) df by the trapezoid rule (``Curve.auc``): low is faithful for deletion, high for
    insertion.
    """
    started = time.perf_counter()
    kinds = tuple(kinds)
    if not kinds or any(kind not in KINDS for kind in kinds):
        raise ParameterError(f"kinds must be among {', '.join(KINDS)}; got {list(kinds)!r}")
    steps = check_positive("steps", steps)
    region = check_positive("region", region)
    run = start_curves(model_or_bundle, inputs, maps, batch_size)
    substrates = _substrates(substrate, kinds)
    n_rows, pixels = len(run.inputs), run.hw[0] * run.hw[1]
    fractions = np.arange(steps + 1, dtype=np.float64) / steps
    names = list(run.maps)
    distinct = sorted(set(substrates.values()))
    # The image and each substrate are the ends of every curve: one pass each, shared by all methods.
    total = n_rows * (1 + len(distinct) + len(names) * len(kinds) * (steps - 1))
    meter = Progress(total, progress)

    with model_guard(run.model), torch.inference_mode():
        fills = {name: make_substrate(name, run.inputs, run.bundle) for name in distinct}
        image_logits = run.predict(run.inputs, meter)
        fill_logits = {name: run.predict(fill, meter) for name, fill in fills.items()}
        resolved = resolve_targets(targets, n_rows, run.categories, image_logits)
        inner = _inner_logits(run, kinds, [fills[substrates[kind]] for kind in kinds], fractions, region,
                              image_logits.shape[-1], meter)
    meter.finish()

    curves = []
    for mi, name in enumerate(names):
        for ki, kind in enumerate(kinds):
            first, last = image_logits, fill_logits[substrates[kind]]
            if kind == "insertion":
                first, last = last, first
            stacked = torch.cat([first[None], inner[mi, ki], last[None]])  # [S+1, N, K]
            curves += target_curves(kind, name, stacked, fractions, resolved, scores_targets(run.model))
    return CurveSet(curves=curves, substrates=substrates, model_passes=total, elapsed_s=run.elapsed(started),
                    settings={"steps": steps, "region": region, "batch_size": run.batch_size, "pixels": pixels})


def _inner_logits(run: CurveRun, kinds: Sequence[str], fills: Sequence[torch.Tensor], fractions: np.ndarray,
                  region: int, num_classes: int, meter: Progress) -> torch.Tensor:
    """Logits [methods, kinds, S − 1, N, K] of the steps between a curve's ends, S = len(fractions): one
    perturbed image per (method, kind, step, row), built and predicted one batch at a time."""
    inputs, hw, device = run.inputs, run.hw, run.inputs.device
    n_rows, steps, names = len(inputs), len(fractions) - 1, list(run.maps)
    counts = torch.tensor(np.rint(fractions * hw[0] * hw[1]).astype(np.int64), device=device)
    ranks = torch.stack([pixel_ranks(run.maps[name], device, region) for name in names])  # [M, N, H*W]
    grid = torch.cartesian_prod(
        torch.arange(len(names)), torch.arange(len(kinds)), torch.arange(1, steps), torch.arange(n_rows)
    ).to(device) if steps > 1 else torch.zeros((0, 4), dtype=torch.long, device=device)
    fill_stack = torch.stack(list(fills))  # [kinds, N, C, H, W]
    deleting = torch.tensor([kind == "deletion" for kind in kinds], device=device)
    logits = torch.empty((len(grid), num_classes), device=device)
    for a, b in batch_slices(len(grid), run.batch_size):
        m, k, s, row = grid[a:b].unbind(1)
        chosen = (ranks[m, row] < counts[s].view(-1, 1)).view(-1, 1, *hw)  # the top pixels of each job
        # deletion: the chosen pixels become substrate; insertion: only the chosen pixels are the image
        delete = deleting[k].view(-1, 1, 1, 1)
        logits[a:b] = predict_logits(run.model, torch.where(chosen == delete, fill_stack[k, row], inputs[row]))
        meter.advance(b - a)
    return logits.view(len(names), len(kinds), steps - 1, n_rows, num_classes)


# ---------------------------------------------------------------------------------------------------------
# Mask slider
# ---------------------------------------------------------------------------------------------------------


def mask_top(
    model_or_bundle: Any,
    inputs: torch.Tensor,
    map: Any,
    fraction: float,
    substrate: str = "black",
    target: Any = None,
) -> MaskResult:
    """Replace the ``fraction`` most salient pixels of ``map`` by ``substrate`` and predict again.

    The pixels are those a deletion curve removes at that fraction (the same ranking and rounding). With
    ``target`` (e.g. "top1" of the clean image), the result also holds its probability before and after.
    """
    fraction = float(fraction)
    if not 0.0 <= fraction <= 1.0:
        raise ParameterError(f"fraction must be in [0, 1]; got {fraction!r}")
    model, bundle, categories = unwrap(model_or_bundle)
    inputs = prepare_inputs(model, inputs)
    n_rows, hw = len(inputs), tuple(inputs.shape[-2:])
    ranks = pixel_ranks(as_maps(map, n_rows, hw), inputs.device)
    removed = (ranks < int(round(fraction * hw[0] * hw[1]))).view(n_rows, 1, *hw)
    scores = scores_targets(model)
    with model_guard(model), torch.inference_mode():
        masked = torch.where(removed, make_substrate(substrate, inputs, bundle), inputs)
        logits = predict_logits(model, masked)
        classes = target_probability = original_probability = None
        if target is not None:
            clean = predict_logits(model, inputs)
            (_, indices), = resolve_targets([target], n_rows, categories, clean)
            classes = indices.cpu().numpy()
            picked = indices.view(-1, 1)
            original_probability = target_probabilities(clean, scores).gather(1, picked)[:, 0].cpu().numpy()
            target_probability = target_probabilities(logits, scores).gather(1, picked)[:, 0].cpu().numpy()
    pixels = None
    if getattr(bundle, "denormalize", None) is not None:
        shown = bundle.denormalize(masked).clamp(0, 1).mul(255).round().to(torch.uint8)
        pixels = shown.permute(0, 2, 3, 1).cpu().numpy()
    probabilities = target_probabilities(logits, scores).cpu().numpy()
    return MaskResult(
        inputs=masked, pixels=pixels, removed=removed[:, 0].cpu().numpy(), fraction=fraction,
        logits=logits.cpu().numpy(), probabilities=probabilities, predicted=probabilities.argmax(-1),
        classes=classes, target_probability=target_probability, original_probability=original_probability,
    )
