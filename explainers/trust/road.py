"""ROAD, RemOve And Debias (Rong, Leemann, Borisov, Kasneci & Kasneci 2022, "A Consistent and Efficient Evaluation
Strategy for Attribution Methods", arXiv:2202.00449).

A deletion curve fills removed pixels with a constant or a blur, and the holes themselves carry information: their
shape leaks the removed object's outline, and a model can read the mask rather than miss the evidence (the
"class information leakage" Rong et al. measure). ROAD removes a fraction f of the pixels and fills them so that
the filled values tell as little as possible about which pixels were removed, then records the target's
probability at each f:

- MoRF (most relevant first) removes the pixels the map ranks highest: a faithful map makes this curve fall fast;
- LeRF (least relevant first) removes the lowest ones: a faithful map keeps this curve high.

The fill is noisy linear imputation: every removed pixel becomes the weighted mean of its eight neighbours (1/6
for the four direct ones, 1/12 for the diagonals; removed neighbours are unknowns too), plus Gaussian noise of
std 0.01 in the model's input space. Those means are one sparse linear system per image,

    D_p x_p − Σ_{n removed} w_n x_{p+n} = Σ_{n kept} w_n x_{p+n},   D_p = Σ_{n in the image} w_n,

symmetric and positive definite unless every pixel is removed (a weighted graph Laplacian plus a diagonal). Rong
et al. and pytorch-grad-cam solve it with SciPy's direct solver; here conjugate gradients solve it on the inputs'
device, in float64 (float32 on Apple's MPS), with no SciPy: on the box around the removed pixels, preconditioned
by an aggregation-multigrid V-cycle, where the removed region is deep; on the removed pixels alone, preconditioned
by their diagonal, where they are few and scattered (:data:`SPARSE_COST` decides).

:func:`road_removed` picks the pixels as pytorch-grad-cam does, and the noise is drawn in its order, so
pytorch-grad-cam's ``ROADMostRelevantFirst`` / ``ROADLeastRelevantFirst`` give the same images and scores.

:func:`road_curves` returns MoRF and LeRF curves as a :class:`~.faithfulness.CurveSet` (kinds "road_morf" and
"road_lerf"), from the map checks, target resolution and batched prediction of :mod:`.faithfulness`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..batching import Progress, batch_slices
from ..errors import ParameterError
from ..hooks import model_guard
from ..registry import Reference
from .faithfulness import (
    CurveRun,
    CurveSet,
    predict_logits,
    resolve_targets,
    scores_targets,
    start_curves,
    target_curves,
)

RONG = Reference("Rong, Leemann, Borisov, Kasneci & Kasneci", 2022,
                 "A Consistent and Efficient Evaluation Strategy for Attribution Methods", "2202.00449")

ROAD_ORDERS = ("morf", "lerf")
ROAD_FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
ROAD_NOISE = 0.01  # absolute, in the model's input space: pytorch-grad-cam's and Rong et al.'s default
# Noisy linear imputation's neighbour weights (Rong et al. 2022): 1/6 for the 4 direct neighbours, 1/12 for the
# 4 diagonal ones (the weights sum to 1).
ROAD_NEIGHBOURS = (
    (1, 1, 1 / 12), (0, 1, 1 / 6), (-1, 1, 1 / 12), (1, -1, 1 / 12),
    (0, -1, 1 / 6), (-1, -1, 1 / 12), (1, 0, 1 / 6), (-1, 0, 1 / 6),
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
    run = start_curves(model_or_bundle, inputs, maps, batch_size)
    n_rows, names = len(run.inputs), list(run.maps)
    passes = n_rows * (1 + len(names) * len(orders) * len(fractions))
    meter = Progress(passes, progress)

    with model_guard(run.model), torch.inference_mode():
        clean_logits = run.predict(run.inputs, meter)
        resolved = resolve_targets(targets, n_rows, run.categories, clean_logits)
        imputed_logits = _imputed_logits(run, orders, fractions, clean_logits.shape[-1], meter, noise=noise,
                                         seed=seed, dtype=dtype, tolerance=tolerance)
    meter.finish()

    curves = []
    points = np.array([0.0, *fractions])
    for mi, name in enumerate(names):
        for oi, order in enumerate(orders):
            stacked = torch.cat([clean_logits[None], imputed_logits[mi, oi]])  # [F+1, N, K]
            curves += target_curves(f"road_{order}", name, stacked, points, resolved,
                                    scores_targets(run.model))
    return CurveSet(curves=curves, substrates={f"road_{o}": "noisy_linear" for o in orders},
                    model_passes=passes, elapsed_s=run.elapsed(started),
                    settings={"noise": float(noise), "seed": int(seed), "fractions": list(fractions),
                              "batch_size": run.batch_size,
                              "dtype": str(_solver_dtype(dtype, run.inputs.device)).removeprefix("torch.")})


def _imputed_logits(run: CurveRun, orders: Sequence[str], fractions: Sequence[float], num_classes: int,
                    meter: Progress, **impute: Any) -> torch.Tensor:
    """Logits [methods, orders, fractions, N, K] of every image imputed by :func:`noisy_linear_impute` (with the
    ``impute`` options), one per (method, order, fraction, row), built and predicted one batch at a time."""
    names, n_rows, device = list(run.maps), len(run.inputs), run.inputs.device
    jobs = [(name, order, fraction, row) for name in names for order in orders for fraction in fractions
            for row in range(n_rows)]
    logits = torch.empty((len(jobs), num_classes), device=device)
    for a, b in batch_slices(len(jobs), run.batch_size):
        chunk = jobs[a:b]
        removed = torch.stack([torch.from_numpy(road_removed(run.maps[name][row], fraction, order))
                               for name, order, fraction, row in chunk]).to(device)
        rows = torch.tensor([job[3] for job in chunk], device=device)
        logits[a:b] = predict_logits(run.model, noisy_linear_impute(run.inputs[rows], removed, **impute))
        meter.advance(b - a)
    return logits.view(len(names), len(orders), len(fractions), n_rows, num_classes)
