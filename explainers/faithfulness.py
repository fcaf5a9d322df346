"""Faithfulness of a saliency map: does removing what it calls important change the prediction?

- Deletion and insertion curves (Petsiuk, Das & Saenko 2018, arXiv:1806.07421): remove (or insert) the pixels
  most salient first, in ``steps`` equal steps, and record the target's probability. A faithful map makes the
  deletion curve fall fast (low AUC) and the insertion curve rise fast (high AUC).
- ROAD (Rong, Leemann, Borisov, Kasneci & Kasneci 2022, arXiv:2202.00449): remove the most (MoRF) or least (LeRF)
  relevant pixels and fill them by *noisy linear imputation*, so the mask's shape leaks less class information
  than a black hole in the image does.
- :func:`mask_top`: the top-k% pixels masked, and the new prediction (the dashboard's live slider).

Every map ranks pixels by value, highest first; ties keep raster order (a stable sort), so a constant map removes
pixels row by row. Perturbed copies are built one batch at a time (one ``batch_size`` knob); every target is
scored from the same forward passes, and all methods share the two ends of the curves (the image and the
substrate). Results are plain dataclasses of NumPy arrays with a JSON-ready ``to_dict()``.

The pointing games live in :mod:`explainers.evaluation`, ROAR in :mod:`explainers.roar`; this module also holds
the ``faithfulness``, ``evaluate`` and ``roar`` subcommands of ``python -m explainers``.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .batching import Progress, batch_slices, default_batch_size
from .core import _unwrap, as_logits, prepare_inputs
from .errors import ParameterError, SaliencyError, TargetError
from .hooks import model_guard
from .targets import TargetSpec

PETSIUK = "Petsiuk, Das & Saenko 2018, arXiv:1806.07421"
ROAD_PAPER = "Rong, Leemann, Borisov, Kasneci & Kasneci 2022, arXiv:2202.00449"

KINDS = ("deletion", "insertion")
ROAD_ORDERS = ("morf", "lerf")
SUBSTRATES = ("black", "blur", "mean")
# Petsiuk et al.: deletion fills with a constant (black), insertion starts from a blurred copy.
DEFAULT_SUBSTRATES = {"deletion": "black", "insertion": "blur"}
DEFAULT_STEPS = 50
REGION_GRID = 7  # grid_region: regions of about a 7×7 grid
ROAD_FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
ROAD_NOISE = 0.01  # absolute, in the model's input space: pytorch-grad-cam's and Rong et al.'s default
# Noisy linear imputation's neighbour weights (Rong et al. 2022): 1/6 for the 4 direct neighbours, 1/12 for the
# 4 diagonal ones (the weights sum to 1).
ROAD_NEIGHBOURS = (
    (1, 1, 1 / 12), (0, 1, 1 / 6), (-1, 1, 1 / 12), (1, -1, 1 / 12),
    (0, -1, 1 / 6), (-1, -1, 1 / 12), (1, 0, 1 / 6), (-1, 0, 1 / 6),
)


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
    probability and logit there. ``classes`` [N]: the class scored in each row; ``target``: the target as asked
    ("top1", 281, ...).
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
            "settings": {k: v for k, v in self.settings.items()},
            "table": self.table(),
            "curves": [c.to_dict() for c in self.curves],
        }


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


def _as_maps(maps: Any, n_rows: int, hw: tuple[int, int], name: str = "map") -> np.ndarray:
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


def _check_maps(maps: Mapping[str, Any], n_rows: int, hw: tuple[int, int]) -> dict[str, np.ndarray]:
    if not isinstance(maps, Mapping) or not maps:
        raise ParameterError(f"maps must be a non-empty dict of method name -> map; got {type(maps).__name__}")
    return {str(name): _as_maps(value, n_rows, hw, f"map {name!r}") for name, value in maps.items()}


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


def _resolve_targets(targets: Any, n_rows: int, categories, logits: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
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
    from .baselines import make_baseline

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


def _check_positive(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ParameterError(f"{name} must be a positive integer; got {value!r}")
    return int(value)


def _predict(model, batch: torch.Tensor) -> torch.Tensor:
    return as_logits(model(batch)).float()


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
    steps = _check_positive("steps", steps)
    region = _check_positive("region", region)
    if batch_size is not None:
        _check_positive("batch_size", batch_size)
    model, bundle, categories = _unwrap(model_or_bundle)
    inputs = prepare_inputs(model, inputs)
    n_rows, hw = len(inputs), tuple(inputs.shape[-2:])
    pixels = hw[0] * hw[1]
    checked = _check_maps(maps, n_rows, hw)
    substrates = _substrates(substrate, kinds)
    device = inputs.device
    batch_size = int(batch_size or default_batch_size(device, forward_only=True))

    fractions = np.arange(steps + 1, dtype=np.float64) / steps
    counts = torch.tensor(np.rint(fractions * pixels).astype(np.int64), device=device)
    names = list(checked)
    distinct = sorted(set(substrates.values()))
    # The image and each substrate are the ends of every curve: one pass each, shared by all methods.
    total = n_rows * (1 + len(distinct) + len(names) * len(kinds) * (steps - 1))
    meter = Progress(total, progress)

    with model_guard(model), torch.inference_mode():
        fills = {name: make_substrate(name, inputs, bundle) for name in distinct}
        ends = {"image": inputs, **{f"substrate:{name}": fill for name, fill in fills.items()}}
        end_logits = {}
        for key, images in ends.items():
            chunks = []
            for a, b in batch_slices(n_rows, batch_size):
                chunks.append(_predict(model, images[a:b]))
                meter.advance(b - a)
            end_logits[key] = torch.cat(chunks)
        resolved = _resolve_targets(targets, n_rows, categories, end_logits["image"])
        ranks = torch.stack([pixel_ranks(checked[name], device, region) for name in names])  # [M, N, H*W]

        # jobs: (method, kind, step 1..steps-1, row); each yields one perturbed image
        grid = torch.cartesian_prod(
            torch.arange(len(names)), torch.arange(len(kinds)), torch.arange(1, steps), torch.arange(n_rows)
        ).to(device) if steps > 1 else torch.zeros((0, 4), dtype=torch.long, device=device)
        job_logits = torch.empty((len(grid), end_logits["image"].shape[-1]), device=device)
        fill_stack = torch.stack([fills[substrates[kind]] for kind in kinds])  # [kinds, N, C, H, W]
        deleting = torch.tensor([kind == "deletion" for kind in kinds], device=device)
        for a, b in batch_slices(len(grid), batch_size):
            m, k, s, row = grid[a:b].unbind(1)
            chosen = (ranks[m, row] < counts[s].view(-1, 1)).view(-1, 1, *hw)  # the top pixels of each job
            image, fill = inputs[row], fill_stack[k, row]
            # deletion: the chosen pixels become substrate; insertion: only the chosen pixels are the image
            delete = deleting[k].view(-1, 1, 1, 1)
            perturbed = torch.where(chosen == delete, fill, image)
            job_logits[a:b] = _predict(model, perturbed)
            meter.advance(b - a)
    meter.finish()

    curves = []
    job_logits = job_logits.view(len(names), len(kinds), steps - 1, n_rows, job_logits.shape[-1])
    for mi, name in enumerate(names):
        for ki, kind in enumerate(kinds):
            first, last = ("image", f"substrate:{substrates[kind]}")[:: 1 if kind == "deletion" else -1]
            stacked = torch.cat([end_logits[first][None], job_logits[mi, ki], end_logits[last][None]])  # [S+1,N,K]
            probabilities = stacked.softmax(-1)
            for label, classes in resolved:
                index = classes.view(1, -1, 1).expand(steps + 1, -1, 1)
                curves.append(Curve(
                    kind=kind, method=name, target=label, classes=classes.cpu().numpy(),
                    fractions=fractions,
                    probability=probabilities.gather(2, index)[..., 0].T.double().cpu().numpy(),
                    logit=stacked.gather(2, index)[..., 0].T.double().cpu().numpy(),
                ))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return CurveSet(curves=curves, substrates=substrates, model_passes=total,
                    elapsed_s=time.perf_counter() - started,
                    settings={"steps": steps, "region": region, "batch_size": batch_size, "pixels": pixels})


def deletion_curves(model_or_bundle, inputs, maps, targets="top1", *, steps=DEFAULT_STEPS, substrate="black",
                    region=1, batch_size=None, progress=None) -> CurveSet:
    """Deletion curves only (Petsiuk et al. 2018, arXiv:1806.07421); see :func:`faithfulness_curves`."""
    return faithfulness_curves(model_or_bundle, inputs, maps, targets, kinds=("deletion",), steps=steps,
                               substrate=substrate, region=region, batch_size=batch_size, progress=progress)


def insertion_curves(model_or_bundle, inputs, maps, targets="top1", *, steps=DEFAULT_STEPS, substrate="blur",
                     region=1, batch_size=None, progress=None) -> CurveSet:
    """Insertion curves only (Petsiuk et al. 2018, arXiv:1806.07421); see :func:`faithfulness_curves`."""
    return faithfulness_curves(model_or_bundle, inputs, maps, targets, kinds=("insertion",), steps=steps,
                               substrate=substrate, region=region, batch_size=batch_size, progress=progress)


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
    model, bundle, categories = _unwrap(model_or_bundle)
    inputs = prepare_inputs(model, inputs)
    n_rows, hw = len(inputs), tuple(inputs.shape[-2:])
    ranks = pixel_ranks(_as_maps(map, n_rows, hw), inputs.device)
    removed = (ranks < int(round(fraction * hw[0] * hw[1]))).view(n_rows, 1, *hw)
    with model_guard(model), torch.inference_mode():
        masked = torch.where(removed, make_substrate(substrate, inputs, bundle), inputs)
        logits = _predict(model, masked)
        classes = target_probability = original_probability = None
        if target is not None:
            clean = _predict(model, inputs)
            (_, indices), = _resolve_targets([target], n_rows, categories, clean)
            classes = indices.cpu().numpy()
            original_probability = clean.softmax(-1).gather(1, indices.view(-1, 1))[:, 0].cpu().numpy()
            target_probability = logits.softmax(-1).gather(1, indices.view(-1, 1))[:, 0].cpu().numpy()
    pixels = None
    if getattr(bundle, "denormalize", None) is not None:
        shown = bundle.denormalize(masked).clamp(0, 1).mul(255).round().to(torch.uint8)
        pixels = shown.permute(0, 2, 3, 1).cpu().numpy()
    probabilities = logits.softmax(-1).cpu().numpy()
    return MaskResult(
        inputs=masked, pixels=pixels, removed=removed[:, 0].cpu().numpy(), fraction=fraction,
        logits=logits.cpu().numpy(), probabilities=probabilities, predicted=probabilities.argmax(-1),
        classes=classes, target_probability=target_probability, original_probability=original_probability,
    )


# ---------------------------------------------------------------------------------------------------------
# ROAD: noisy linear imputation
# ---------------------------------------------------------------------------------------------------------


def road_removed(map: Any, fraction: float, order: str = "morf") -> np.ndarray:
    """bool [H, W]: the pixels ROAD imputes at ``fraction`` removed, following pytorch-grad-cam's convention.

    With p = 100·(1 − fraction): MoRF removes the pixels whose value is ≥ the p-th percentile of the map (NumPy's
    linear interpolation, in the map's float32); LeRF does the same on 1 − map, so it removes the least relevant.
    Ties at the threshold are removed, so slightly more than ``fraction`` may go.
    """
    if order not in ROAD_ORDERS:
        raise ParameterError(f"ROAD order must be one of {', '.join(ROAD_ORDERS)}; got {order!r}")
    fraction = float(fraction)
    if not 0.0 < fraction < 1.0:
        raise ParameterError(f"ROAD fractions must lie in (0, 1); got {fraction!r}")
    values = np.asarray(map, dtype=np.float32)
    if order == "lerf":
        values = np.float32(1) - values
    threshold = np.percentile(values, round(100.0 * (1.0 - fraction), 9))
    return ~(values < threshold)


_OFFSETS = tuple((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1))
# A V-cycle of this aggregation multigrid undershoots smooth errors by about half; scaling its coarse correction
# (the usual over-correction of aggregation methods) brings conjugate gradients from ~800 iterations to ~18 on a
# 224 × 224 image with half of it removed.
_COARSE_SCALE = 1.8
_SMOOTHING_SWEEPS = 2
_JACOBI_DAMPING = 0.8
_COARSEST_SWEEPS = 30
# Plain conjugate gradients on the removed pixels need about as many iterations as the removed region is deep
# (erosions to empty it). Measured at 224 px, they beat the multigrid on the box while removed pixels x depth stay
# below about 6x the box's area: scattered removals 10-30x faster, deep blobs 2-6x slower.
SPARSE_COST = 6


def _depth(removed: torch.Tensor, limit: int) -> int:
    """How many erosions empty ``removed`` [1, 1, h, w] (outside the image counts as removed), up to limit + 1."""
    region = removed.to(torch.float32)
    limit = min(limit, sum(region.shape[-2:]))  # any region empties within h + w erosions, unless it is everything
    for depth in range(limit + 1):
        if not bool(region.any()):
            return depth
        region = -F.max_pool2d(-F.pad(region, (1, 1, 1, 1), value=1.0), 3, stride=1)
    return limit + 1


def _neighbours(field: torch.Tensor, weights: Callable[[int, int], Any]) -> torch.Tensor:
    """Σ over the 8 neighbour offsets (dy, dx) of weights(dy, dx) · field[p + (dy, dx)], zero outside."""
    height, width = field.shape[-2:]
    padded = F.pad(field, (1, 1, 1, 1))
    total = torch.zeros_like(field)
    for dy, dx in _OFFSETS:
        if (dy, dx) != (0, 0):
            total = total + weights(dy, dx) * padded[..., 1 + dy: 1 + dy + height, 1 + dx: 1 + dx + width]
    return total


def _apply(stencil: dict, field: torch.Tensor) -> torch.Tensor:
    """A 9-point operator with coefficient fields ``stencil[(dy, dx)]`` [B, 1, h, w] applied to ``field``."""
    height, width = field.shape[-2:]
    padded = F.pad(field, (1, 1, 1, 1))
    total = stencil[(0, 0)] * field
    for dy, dx in _OFFSETS:
        if (dy, dx) != (0, 0):
            total = total.addcmul(stencil[(dy, dx)], padded[..., 1 + dy: 1 + dy + height, 1 + dx: 1 + dx + width])
    return total


def _road_stencil(unknown: torch.Tensor) -> dict:
    """The imputation system's matrix on the unknown pixels (rows and columns of kept pixels are zero)."""
    weight = {(dy, dx): w for dy, dx, w in ROAD_NEIGHBOURS}
    padded = F.pad(unknown, (1, 1, 1, 1))
    height, width = unknown.shape[-2:]
    inside = F.pad(torch.ones_like(unknown), (1, 1, 1, 1))
    stencil = {(0, 0): torch.zeros_like(unknown)}
    for (dy, dx), w in weight.items():
        window = (..., slice(1 + dy, 1 + dy + height), slice(1 + dx, 1 + dx + width))
        stencil[(0, 0)] = stencil[(0, 0)] + w * inside[window]
        stencil[(dy, dx)] = -w * unknown * padded[window]
    stencil[(0, 0)] = stencil[(0, 0)] * unknown
    return stencil


def _coarsen(stencil: dict, unknown: torch.Tensor) -> tuple[dict, torch.Tensor]:
    """The Galerkin operator Pᵀ A P of 2 × 2 aggregation (P copies a coarse value to its unknown children)."""
    pad = (0, unknown.shape[-1] % 2, 0, unknown.shape[-2] % 2)
    coarse = {offset: 0 for offset in _OFFSETS}
    for (ky, kx), values in stencil.items():
        values = F.pad(values, pad)
        for a in (0, 1):
            for b in (0, 1):
                # child (a, b) of a block reaches, through offset (ky, kx), a child of block offset K
                offset = ((a + ky) // 2, (b + kx) // 2)
                coarse[offset] = coarse[offset] + values[..., a::2, b::2]
    return coarse, F.max_pool2d(F.pad(unknown, pad), 2)


def _jacobi(stencil: dict, inverse_diagonal: torch.Tensor, rhs: torch.Tensor, field: torch.Tensor,
            sweeps: int) -> torch.Tensor:
    for _ in range(sweeps):
        field = field + _JACOBI_DAMPING * inverse_diagonal * (rhs - _apply(stencil, field))
    return field


def _v_cycle(levels: list, level: int, residual: torch.Tensor) -> torch.Tensor:
    """One symmetric V-cycle (damped Jacobi before and after, the same sweeps): an SPD preconditioner."""
    stencil, unknown, inverse_diagonal = levels[level]
    zero = torch.zeros_like(residual)
    if level == len(levels) - 1:
        return _jacobi(stencil, inverse_diagonal, residual, zero, _COARSEST_SWEEPS)
    field = _jacobi(stencil, inverse_diagonal, residual, zero, _SMOOTHING_SWEEPS)
    height, width = residual.shape[-2:]
    left = residual - _apply(stencil, field)
    restricted = 4 * F.avg_pool2d(F.pad(left, (0, width % 2, 0, height % 2)), 2)  # Pᵀ: sums of 2 × 2 blocks
    correction = _v_cycle(levels, level + 1, restricted)
    correction = correction.repeat_interleave(2, -2).repeat_interleave(2, -1)[..., :height, :width]
    field = field + _COARSE_SCALE * unknown * correction
    return _jacobi(stencil, inverse_diagonal, residual, field, _SMOOTHING_SWEEPS)


def _solver_dtype(dtype: torch.dtype | None, device: torch.device) -> torch.dtype:
    # float64 by default: float32 conjugate gradients stall near a relative error of 1e-5. Apple's MPS has no
    # float64. The preconditioner runs in float32 either way: it only has to be roughly right.
    if dtype is not None:
        return dtype
    return torch.float32 if device.type == "mps" else torch.float64


def linear_impute(
    inputs: torch.Tensor,
    removed: torch.Tensor,
    dtype: torch.dtype | None = None,
    tolerance: float | None = None,
    max_iterations: int = 500,
) -> torch.Tensor:
    """Rong et al. 2022's linear imputation (arXiv:2202.00449) without the noise: each removed pixel becomes the
    weighted mean of its in-image neighbours, removed ones included, which is one sparse linear system per image:

        D_p x_p − Σ_{n removed} w_n x_{p+n} = Σ_{n kept} w_n x_{p+n},   D_p = Σ_{n in the image} w_n.

    Its matrix is a weighted graph Laplacian plus a diagonal: symmetric, and positive definite unless every pixel
    is removed (then nothing is known and the image becomes 0). Conjugate gradients, preconditioned by an
    aggregation-multigrid V-cycle, solve it on the inputs' device (no SciPy), all channels at once, in ``dtype``
    (default float64), to a relative residual of ``tolerance`` (default 1e-9 in float64, 1e-5 in float32).

    Each image is solved on the box around its removed pixels (one kept pixel of margin holds every neighbour),
    so a small removed region costs little. ``inputs`` [N, C, H, W]; ``removed`` bool [N, H, W] or [N, 1, H, W].
    Returns the filled images (same dtype).
    """
    dtype = _solver_dtype(dtype, inputs.device)
    if tolerance is None:
        tolerance = 1e-9 if dtype == torch.float64 else 1e-5
    if removed.dim() == 3:
        removed = removed[:, None]
    filled = inputs.clone()
    height, width = inputs.shape[-2:]
    for row in range(len(inputs)):
        rows = torch.nonzero(removed[row, 0].any(dim=1)).flatten()
        cols = torch.nonzero(removed[row, 0].any(dim=0)).flatten()
        if len(rows) == 0:
            continue
        top, bottom = max(int(rows[0]) - 1, 0), min(int(rows[-1]) + 2, height)
        left, right = max(int(cols[0]) - 1, 0), min(int(cols[-1]) + 2, width)
        # the box keeps one pixel around every removed one (except at the image's edge), so each removed pixel
        # sees all its in-image neighbours inside it
        box = (slice(row, row + 1), slice(None), slice(top, bottom), slice(left, right))
        # conjugate gradients on the removed pixels alone cost ~ count x depth (iterations go with the depth), the
        # multigrid ~ the box's area
        count, area = int(removed[box].sum()), (bottom - top) * (right - left)
        limit = SPARSE_COST * area // count
        if _depth(removed[box], limit) <= limit:
            filled[box] = _solve_sparse(inputs[box], removed[box], dtype, tolerance)
        else:
            filled[box] = _solve_imputation(inputs[box], removed[box], dtype, tolerance, max_iterations)
    return filled


def _solve_sparse(inputs: torch.Tensor, removed: torch.Tensor, dtype: torch.dtype, tolerance: float) -> torch.Tensor:
    """:func:`linear_impute` of one box [1, C, h, w] by Jacobi-preconditioned conjugate gradients on the removed
    pixels alone (a gather per neighbour): for few unknowns this costs far less than sweeping the whole box."""
    channels, height, width = inputs.shape[1:]
    flat = inputs[0].reshape(channels, -1).to(dtype)
    mask = removed[0, 0].reshape(-1)
    where = torch.nonzero(mask).flatten()
    place = torch.full((height * width,), -1, dtype=torch.long, device=mask.device)
    place[where] = torch.arange(len(where), device=mask.device)
    row, col = where // width, where % width
    diagonal = torch.zeros(len(where), dtype=dtype, device=flat.device)
    rhs = torch.zeros((channels, len(where)), dtype=dtype, device=flat.device)
    couplings = []  # (weight, index of the unknown neighbour, which unknowns have one)
    for dy, dx, weight in ROAD_NEIGHBOURS:
        inside = (row + dy >= 0) & (row + dy < height) & (col + dx >= 0) & (col + dx < width)
        neighbour = torch.where(inside, where + dy * width + dx, 0)
        diagonal += weight * inside.to(dtype)
        kept = inside & ~mask[neighbour]
        rhs += weight * flat[:, neighbour] * kept.to(dtype)
        linked = inside & mask[neighbour]
        couplings.append((weight, torch.where(linked, place[neighbour], 0), linked.to(dtype)))

    def operator(z: torch.Tensor) -> torch.Tensor:
        total = diagonal * z
        for weight, index, linked in couplings:
            total = total - weight * linked * z[:, index]
        return total

    solution = torch.zeros_like(rhs)
    residual = rhs.clone()
    preconditioned = residual / diagonal
    direction = preconditioned
    rz = (residual * preconditioned).sum(1, keepdim=True)
    goal = tolerance * rhs.square().sum(1, keepdim=True).sqrt()
    tiny = torch.finfo(dtype).tiny
    for _ in range(20 * (height + width) + 100):
        if bool((residual.square().sum(1, keepdim=True).sqrt() <= goal).all()):
            break
        mapped = operator(direction)
        curvature = (direction * mapped).sum(1, keepdim=True)
        alpha = torch.where(curvature > 0, rz / curvature.clamp_min(tiny), 0)
        solution = solution + alpha * direction
        residual = residual - alpha * mapped
        preconditioned = residual / diagonal
        rz_next = (residual * preconditioned).sum(1, keepdim=True)
        beta = torch.where(rz > 0, rz_next / rz.clamp_min(tiny), 0)
        direction = preconditioned + beta * direction
        rz = rz_next
    out = flat.clone()
    out[:, where] = solution
    return out.reshape(1, channels, height, width).to(inputs.dtype)


def _solve_imputation(inputs: torch.Tensor, removed: torch.Tensor, dtype: torch.dtype, tolerance: float,
                      max_iterations: int) -> torch.Tensor:
    """:func:`linear_impute` of one box [1, C, h, w]."""
    x = inputs.to(dtype)
    unknown = removed.to(device=x.device, dtype=dtype)
    known = 1 - unknown
    weight = {(dy, dx): w for dy, dx, w in ROAD_NEIGHBOURS}
    rhs = unknown * _neighbours(x * known, lambda dy, dx: weight[(dy, dx)])

    stencil = _road_stencil(unknown)
    levels = []
    coarse, mask = {k: v.float() for k, v in stencil.items()}, unknown.float()
    while True:
        levels.append((coarse, mask, mask / coarse[(0, 0)].clamp_min(1e-30)))
        if min(mask.shape[-2:]) < 8:
            break
        coarse, mask = _coarsen(coarse, mask)

    def precondition(residual: torch.Tensor) -> torch.Tensor:
        return _v_cycle(levels, 0, residual.float()).to(dtype) * unknown

    solution = torch.zeros_like(x)
    residual = rhs.clone()
    preconditioned = precondition(residual)
    direction = preconditioned
    rz = (residual * preconditioned).sum((2, 3), keepdim=True)
    goal = tolerance * rhs.square().sum((2, 3), keepdim=True).sqrt()
    tiny = torch.finfo(dtype).tiny
    for _ in range(max_iterations):
        if bool((residual.square().sum((2, 3), keepdim=True).sqrt() <= goal).all()):
            break
        mapped = _apply(stencil, direction)
        curvature = (direction * mapped).sum((2, 3), keepdim=True)
        alpha = torch.where(curvature > 0, rz / curvature.clamp_min(tiny), 0)
        solution = solution + alpha * direction
        residual = residual - alpha * mapped
        preconditioned = precondition(residual)
        rz_next = (residual * preconditioned).sum((2, 3), keepdim=True)
        beta = torch.where(rz > 0, rz_next / rz.clamp_min(tiny), 0)
        direction = preconditioned + beta * direction
        rz = rz_next
    return (x * known + solution * unknown).to(inputs.dtype)


def noisy_linear_impute(
    inputs: torch.Tensor,
    removed: torch.Tensor,
    noise: float = ROAD_NOISE,
    seed: int = 0,
    dtype: torch.dtype | None = None,
    tolerance: float | None = None,
) -> torch.Tensor:
    """ROAD's noisy linear imputation (Rong et al. 2022, arXiv:2202.00449): :func:`linear_impute`, plus Gaussian
    noise of std ``noise`` (absolute, input space) on the removed pixels.

    The noise of every image is drawn from a CPU generator seeded with ``seed`` in pytorch-grad-cam's order,
    ``randn(C, M)`` for M removed pixels in raster order. So
    ``torch.manual_seed(seed)`` before pytorch-grad-cam's imputer gives the same draws, and an image's result does
    not depend on its batch.
    """
    if removed.dim() == 4:
        removed = removed[:, 0]
    filled = linear_impute(inputs, removed, dtype=dtype, tolerance=tolerance)
    if noise:
        channels = inputs.shape[1]
        flat = filled.flatten(2)  # a view: writing into it writes the images
        for row in range(len(inputs)):
            where = torch.nonzero(removed[row].flatten(), as_tuple=True)[0]
            # channel-major, as there: SciPy's spsolve returns a Fortran-ordered [M, C] solution, so its transpose
            # is a contiguous [C, M] and randn_like fills it channel by channel
            draws = torch.randn((channels, len(where)), generator=torch.Generator().manual_seed(int(seed)))
            flat[row][:, where] += (noise * draws).to(device=filled.device, dtype=filled.dtype)
    return filled


def road_curves(
    model_or_bundle: Any,
    inputs: torch.Tensor,
    maps: Mapping[str, Any],
    targets: Any = "top1",
    *,
    orders: Sequence[str] = ROAD_ORDERS,
    fractions: Sequence[float] = ROAD_FRACTIONS,
    noise: float = ROAD_NOISE,
    seed: int = 0,
    batch_size: int | None = None,
    progress: Callable[[int, int], object] | None = None,
    dtype: torch.dtype | None = None,
    tolerance: float | None = None,
) -> CurveSet:
    """ROAD curves (Rong et al. 2022, arXiv:2202.00449): MoRF (most relevant first) and LeRF (least relevant first).

    At each fraction f the pixels of :func:`road_removed` are filled by :func:`noisy_linear_impute` and the model
    predicts again. Curves start at f = 0 (the image itself). A faithful map makes MoRF fall fast and LeRF stay
    high; pytorch-grad-cam's ``ROAD*RelevantFirst(percentile=100·(1 − f))`` gives the same images and scores.
    ``Curve.auc`` is the mean height of a curve over [0, max f].
    """
    started = time.perf_counter()
    orders = tuple(orders)
    if not orders or any(order not in ROAD_ORDERS for order in orders):
        raise ParameterError(f"ROAD orders must be among {', '.join(ROAD_ORDERS)}; got {list(orders)!r}")
    fractions = sorted(float(f) for f in fractions)
    if not fractions:
        raise ParameterError("ROAD needs at least one fraction in (0, 1)")
    if batch_size is not None:
        _check_positive("batch_size", batch_size)
    model, _, categories = _unwrap(model_or_bundle)
    inputs = prepare_inputs(model, inputs)
    n_rows, hw = len(inputs), tuple(inputs.shape[-2:])
    checked = _check_maps(maps, n_rows, hw)
    names = list(checked)
    device = inputs.device
    batch_size = int(batch_size or default_batch_size(device, forward_only=True))
    jobs = [(mi, oi, fi, row) for mi in range(len(names)) for oi in range(len(orders))
            for fi in range(len(fractions)) for row in range(n_rows)]
    meter = Progress(n_rows + len(jobs), progress)

    with model_guard(model), torch.inference_mode():
        clean = []
        for a, b in batch_slices(n_rows, batch_size):
            clean.append(_predict(model, inputs[a:b]))
            meter.advance(b - a)
        clean_logits = torch.cat(clean)
        resolved = _resolve_targets(targets, n_rows, categories, clean_logits)
        job_logits = torch.empty((len(jobs), clean_logits.shape[-1]), device=device)
        for a, b in batch_slices(len(jobs), batch_size):
            chunk = jobs[a:b]
            removed = torch.stack([
                torch.from_numpy(road_removed(checked[names[mi]][row], fractions[fi], orders[oi]))
                for mi, oi, fi, row in chunk
            ]).to(device)
            rows = torch.tensor([job[3] for job in chunk], device=device)
            imputed = noisy_linear_impute(inputs[rows], removed, noise=noise, seed=seed, dtype=dtype,
                                          tolerance=tolerance)
            job_logits[a:b] = _predict(model, imputed)
            meter.advance(b - a)
    meter.finish()

    curves = []
    job_logits = job_logits.view(len(names), len(orders), len(fractions), n_rows, -1)
    points = np.array([0.0, *fractions])
    for mi, name in enumerate(names):
        for oi, order in enumerate(orders):
            stacked = torch.cat([clean_logits[None], job_logits[mi, oi]])  # [F+1, N, K]
            probabilities = stacked.softmax(-1)
            for label, classes in resolved:
                index = classes.view(1, -1, 1).expand(len(points), -1, 1)
                curves.append(Curve(
                    kind=f"road_{order}", method=name, target=label, classes=classes.cpu().numpy(),
                    fractions=points,
                    probability=probabilities.gather(2, index)[..., 0].T.double().cpu().numpy(),
                    logit=stacked.gather(2, index)[..., 0].T.double().cpu().numpy(),
                ))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return CurveSet(curves=curves, substrates={f"road_{o}": "noisy_linear" for o in orders},
                    model_passes=n_rows + len(jobs), elapsed_s=time.perf_counter() - started,
                    settings={"noise": float(noise), "seed": int(seed), "fractions": list(fractions),
                              "batch_size": batch_size,
                              "dtype": str(_solver_dtype(dtype, device)).removeprefix("torch.")})


# ---------------------------------------------------------------------------------------------------------
# Command line: faithfulness, evaluate, roar (see explainers.cli.COMMAND_MODULES)
# ---------------------------------------------------------------------------------------------------------


def _method_names(values: Sequence[str] | None, default: Sequence[str]) -> list[str]:
    """``["a,b", "c"]`` -> ``["a", "b", "c"]``, each checked against the registry."""
    from .registry import get_method

    names = [name.strip() for value in (values or ()) for name in value.split(",") if name.strip()] or list(default)
    for name in names:
        get_method(name)  # unknown -> UnknownMethodError with suggestions
    return list(dict.fromkeys(names))


def _method_params(items: Sequence[str] | None, methods: Sequence[str]) -> dict[str, dict[str, str]]:
    """``["occlusion.window=8"]`` -> ``{"occlusion": {"window": "8"}}``; values stay strings for validation."""
    params: dict[str, dict[str, str]] = {}
    for item in items or ():
        head, sep, value = item.partition("=")
        method, dot, name = head.strip().partition(".")
        if not sep or not dot or not name:
            raise ParameterError(f"--param expects METHOD.NAME=VALUE (e.g. occlusion.window=8), got {item!r}")
        if method not in methods:
            raise ParameterError(f"--param {item!r} names method {method!r}, which is not among the methods "
                                 f"({', '.join(methods)})")
        params.setdefault(method, {})[name] = value.strip()
    return params


def _fractions(text: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        values = []
    if not values or any(not 0.0 < v < 1.0 for v in values):
        raise argparse.ArgumentTypeError(f"expected fractions in (0, 1), e.g. 0.1,0.5,0.9; got {text!r}")
    return values


def _percentages(text: str) -> list[float]:
    try:
        values = [float(part) / 100 for part in text.split(",") if part.strip()]
    except ValueError:
        values = []
    if not values or any(not 0.0 < v < 1.0 for v in values):
        raise argparse.ArgumentTypeError(f"expected percentages in (0, 100), e.g. 10 or 10,30; got {text!r}")
    return values


def _print_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> None:
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return "nan" if math.isnan(value) else f"{value:.4f}"
        return str(value)

    table = [[cell(row.get(c, "")) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in table)) if table else len(c) for i, c in enumerate(columns)]
    print("  ".join(f"{c:<{w}}" for c, w in zip(columns, widths)))
    for row in table:
        print("  ".join(f"{v:<{w}}" for v, w in zip(row, widths)))


def _write_csv(path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> None:
    import csv

    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})


def _out_folder(path) -> Any:
    from pathlib import Path

    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SaliencyError(f"expected a writable output folder for --out, got {str(folder)!r} ({exc})") from None
    return folder


def cmd_faithfulness(args: argparse.Namespace) -> int:
    """Curves (deletion, insertion, optionally ROAD) of each method on each IMAGE: JSON + AUC table."""
    import json
    import sys
    from pathlib import Path

    from .cli import _out_stems, _pick_device
    from .evaluation import saliency_maps
    from .images import load_image
    from .models import load_model, model_info

    methods = _method_names(args.methods, ("vanilla", "gradcam", "random"))
    params = _method_params(args.param, methods)
    model_info(args.model)
    for path in args.images:
        load_image(path)
    substrate = None if args.substrate is None else args.substrate
    out_dir = _out_folder(args.out)
    bundle = load_model(args.model, device=_pick_device(args.device), tqdm_bar=not args.quiet)
    for path, stem in zip(args.images, _out_stems(args.images)):
        inputs = bundle.preprocess(load_image(path), args.preprocessing)
        maps, seconds, used = saliency_maps(bundle, inputs, methods, args.target, params=params, sign=args.sign,
                                            reduction=args.reduction, seed=args.seed, batch_size=args.batch_size)
        curves = faithfulness_curves(bundle, inputs, maps, args.target, steps=args.steps, substrate=substrate,
                                     region=args.region, batch_size=args.batch_size)
        record = {"image": str(path), "model": bundle.name, "methods": {m: {"params": used[m], "explain_s": seconds[m]}
                                                                        for m in methods},
                  "target": args.target, "sign": args.sign, "reduction": args.reduction, **curves.to_dict()}
        table = curves.table()
        if args.road:
            road = road_curves(bundle, inputs, maps, args.target, fractions=args.road_fractions, seed=args.seed,
                               batch_size=args.batch_size)
            record["road"] = road.to_dict()
            table += road.table()
        base = Path(out_dir) / f"{stem}_faithfulness"
        Path(f"{base}.json").write_text(json.dumps(record, indent=2, allow_nan=False, default=str) + "\n")
        _write_csv(f"{base}.csv", table, ("kind", "method", "target", "n", "auc", "logit_auc"))
        print(f"{path}: {base}.json, {base}.csv", file=sys.stderr)
        _print_table(table, ("kind", "method", "target", "auc", "logit_auc"))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """The benchmark on the digits: pointing games, deletion/insertion AUC and time per method, as CSVs."""
    import sys

    from .cli import _pick_device
    from .evaluation import DEFAULT_METHODS, DIGITS_MODELS, digits_evaluation, write_evaluation

    if args.model not in DIGITS_MODELS:
        raise SaliencyError(f"evaluate needs ground-truth regions, which only the digits models have "
                            f"({', '.join(DIGITS_MODELS)}); got --model {args.model}")
    methods = _method_names(args.methods, DEFAULT_METHODS)
    params = _method_params(args.param, methods)
    out_dir = _out_folder(args.out)

    def report(stage: str, done: int, total: int) -> None:
        if not args.quiet and done >= total:
            print(f"{stage}: done", file=sys.stderr)

    evaluation = digits_evaluation(
        args.n, methods, model=args.model, seed=args.seed, device=_pick_device(args.device), regions=args.regions,
        batch_size=args.batch_size, target=args.target, params=params, steps=args.steps, substrate=args.substrate,
        tolerance=args.tolerance, progress=report,
    )
    folder = write_evaluation(evaluation, out_dir)
    _print_table(evaluation.summary(), ("method", "n", "pointing_game", "energy_pointing_game", "chance",
                                        "deletion_auc", "insertion_auc", "explain_s"))
    print(f"wrote {folder}", file=sys.stderr)
    return 0


def cmd_roar(args: argparse.Namespace) -> int:
    """ROAR on the digits: retrain LeNet-5 with each method's top-k% pixels removed; print the accuracy table."""
    import json
    import sys
    from pathlib import Path

    from .cli import _pick_device
    from .roar import DEFAULT_METHODS, roar

    methods = _method_names(args.methods, DEFAULT_METHODS)
    params = _method_params(args.param, methods)
    out_dir = None if args.out is None else _out_folder(args.out)
    torch.set_num_threads(args.threads)
    result = roar(methods, args.k, n_train=args.n_train, n_test=args.n_test, epochs=args.epochs, fill=args.fill,
                  seed=args.seed, params=params, device=_pick_device(args.device),
                  log=None if args.quiet else (lambda message: print(message, file=sys.stderr)))
    columns = ["method", "k=0%", *(f"k={round(100 * f)}%" for f in result.fractions)]
    _print_table(result.table(), columns)
    print(f"lenet_digits (not retrained) on these test digits: {result.original_accuracy:.4f}; "
          f"{result.elapsed_s:.0f} s", file=sys.stderr)
    if out_dir is not None:
        _write_csv(Path(out_dir) / "roar.csv", result.table(), columns)
        (Path(out_dir) / "roar.json").write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    return 0


def add_commands(commands: Any) -> None:
    """Add ``faithfulness``, ``evaluate`` and ``roar`` to the CLI (see ``explainers.cli.COMMAND_MODULES``)."""
    from .cli import _positive_int
    from .evaluation import DIGITS_BATCH_SIZE
    from .models import DEFAULT_MODEL, PREPROCESSING, RESIZE
    from .render import REDUCTIONS, SIGNS
    from .roar import DEFAULTS as ROAR_DEFAULTS
    from .roar import FILLS

    method_help = "methods, comma- or space-separated (see list-methods)"
    param_help = "a method parameter (repeatable), e.g. --param occlusion.window=8"

    fa = commands.add_parser(
        "faithfulness",
        help="deletion/insertion curves (and ROAD) of methods on images: curves JSON and AUC table",
        description="For each IMAGE write <stem>_faithfulness.json (curves: fractions, probability and logit of the "
        "target per method) and <stem>_faithfulness.csv (AUC table) into --out, and print the table. Deletion and "
        "insertion: Petsiuk et al. 2018, arXiv:1806.07421; ROAD: Rong et al. 2022, arXiv:2202.00449.",
    )
    fa.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    fa.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    fa.add_argument("--model", default=DEFAULT_MODEL, help="model name (default: %(default)s)")
    fa.add_argument("--methods", nargs="+", default=None, metavar="M",
                    help=method_help + " (default: vanilla,gradcam,random)")
    fa.add_argument("--param", action="append", default=[], metavar="METHOD.NAME=VALUE", help=param_help)
    fa.add_argument("--target", default="top1", help="class index, name or topK (default: %(default)s)")
    fa.add_argument("--steps", default=DEFAULT_STEPS, type=_positive_int, metavar="N",
                    help="curve steps (default: %(default)s)")
    fa.add_argument("--substrate", default=None, choices=SUBSTRATES,
                    help="what removed pixels become (default: black for deletion, blur for insertion)")
    fa.add_argument("--region", default=1, type=_positive_int, metavar="PX",
                    help="remove square regions PX pixels a side, ranked by their mean (region perturbation); "
                    "1 removes single pixels (default: %(default)s)")
    fa.add_argument("--road", action="store_true", help="also ROAD MoRF/LeRF with noisy linear imputation")
    fa.add_argument("--road-fractions", default=list(ROAD_FRACTIONS), type=_fractions, metavar="F,F,...",
                    help="ROAD fractions removed (default: 0.1,...,0.9)")
    fa.add_argument("--sign", default="absolute", choices=SIGNS, help="map sign mode (default: %(default)s)")
    fa.add_argument("--reduction", default="max", choices=REDUCTIONS, help="channel reduction (default: %(default)s)")
    fa.add_argument("--preprocessing", default=RESIZE, choices=PREPROCESSING, help="default: %(default)s")
    fa.add_argument("--seed", default=0, type=int, help="seed of random methods and ROAD's noise (default: 0)")
    fa.add_argument("--batch-size", default=None, type=_positive_int, metavar="N", help="images per pass")
    fa.add_argument("--device", default=None, choices=("cpu", "cuda"), help="default: cuda if available")
    fa.add_argument("--quiet", action="store_true", help="no progress output")
    fa.set_defaults(handler=cmd_faithfulness)

    ev = commands.add_parser(
        "evaluate",
        help="benchmark methods on the digits: pointing games, deletion/insertion AUC, run time (CSV per method)",
        description="Explain N held-out procedural digits with each method and write <model>-<time>/ into --out: "
        "<method>.csv (one row per image), summary.csv (one row per method) and run.json. Pointing game: Zhang et "
        "al. 2016, arXiv:1608.00507; energy pointing game: Wang et al. 2020, arXiv:1910.01279.",
    )
    ev.add_argument("--model", default="lenet_digits", help="a digits model (default: %(default)s)")
    ev.add_argument("--n", default=500, type=_positive_int, help="digits to evaluate (default: %(default)s)")
    ev.add_argument("--methods", nargs="+", default=None, metavar="M", help=method_help + " (default: a dozen)")
    ev.add_argument("--param", action="append", default=[], metavar="METHOD.NAME=VALUE", help=param_help)
    ev.add_argument("--out", required=True, metavar="DIR", help="output folder (a new run folder goes inside)")
    ev.add_argument("--target", default="label", choices=("label", "top1"), help="explained class (default: label)")
    ev.add_argument("--regions", default="boxes", choices=("boxes", "masks"), help="ground truth (default: boxes)")
    ev.add_argument("--tolerance", default=0, type=int, metavar="PX", help="pointing-game tolerance (default: 0)")
    ev.add_argument("--steps", default=32, type=_positive_int, metavar="N", help="curve steps (default: 32)")
    ev.add_argument("--substrate", default=None, choices=SUBSTRATES,
                    help="default: black for deletion, blur for insertion")
    ev.add_argument("--seed", default=None, type=int, help="digit stream seed (default: the held-out 10000)")
    ev.add_argument("--batch-size", default=DIGITS_BATCH_SIZE, type=_positive_int, metavar="N",
                    help="images per pass (default: %(default)s)")
    ev.add_argument("--device", default=None, choices=("cpu", "cuda"), help="default: cuda if available")
    ev.add_argument("--quiet", action="store_true", help="no progress output")
    ev.set_defaults(handler=cmd_evaluate)

    ro = commands.add_parser(
        "roar",
        help="ROAR on the digits: retrain LeNet-5 with each method's top-k%% pixels removed; accuracy table",
        description="RemOve And Retrain (Hooker et al. 2019, arXiv:1806.10758) on the procedural digits: for each "
        "method and k, replace the top-k%% pixels of every training and test digit and retrain LeNet-5 from "
        "scratch; print the test accuracy table (and write roar.csv and roar.json into --out).",
    )
    ro.add_argument("--methods", nargs="+", default=None, metavar="M",
                    help=method_help + " (default: vanilla,input_x_gradient,guided_backprop,gradcam,random)")
    ro.add_argument("--param", action="append", default=[], metavar="METHOD.NAME=VALUE", help=param_help)
    ro.add_argument("--k", default=[0.1, 0.3, 0.5, 0.7], type=_percentages, metavar="P,P,...",
                    help="percentages removed (default: 10,30,50,70)")
    ro.add_argument("--n-train", default=ROAR_DEFAULTS["n_train"], type=_positive_int, metavar="N",
                    help="training digits (default: %(default)s)")
    ro.add_argument("--n-test", default=ROAR_DEFAULTS["n_test"], type=_positive_int, metavar="N",
                    help="test digits (default: %(default)s)")
    ro.add_argument("--epochs", default=ROAR_DEFAULTS["epochs"], type=_positive_int, metavar="N",
                    help="epochs per retraining (default: %(default)s)")
    ro.add_argument("--fill", default="dataset_mean", choices=FILLS,
                    help="removed pixels' value (default: %(default)s)")
    ro.add_argument("--seed", default=0, type=int, help="seed of data, maps and training (default: 0)")
    ro.add_argument("--threads", default=2, type=_positive_int, help="CPU threads (default: %(default)s)")
    ro.add_argument("--out", default=None, metavar="DIR", help="also write roar.csv and roar.json here")
    ro.add_argument("--device", default=None, choices=("cpu", "cuda"), help="default: cuda if available")
    ro.add_argument("--quiet", action="store_true", help="no progress output")
    ro.set_defaults(handler=cmd_roar)


__all__ = [
    "DEFAULT_STEPS", "KINDS", "ROAD_FRACTIONS", "ROAD_ORDERS", "SUBSTRATES", "Curve", "CurveSet", "MaskResult",
    "add_commands", "deletion_curves", "faithfulness_curves", "grid_region", "insertion_curves", "linear_impute",
    "make_substrate", "mask_top", "noisy_linear_impute", "pixel_ranks", "region_choices", "region_ids", "road_curves",
    "road_removed",
]
