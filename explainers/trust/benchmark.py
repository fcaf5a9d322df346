"""The digits benchmark: every metric over a labelled set, and its files.

:func:`evaluate` runs the pointing games (:mod:`.pointing`) and the deletion/insertion AUCs (:mod:`.faithfulness`)
for several methods on images with ground truth (the procedural digits of :mod:`explainers.digits`);
:func:`write_evaluation` saves one CSV per method and a summary CSV, :func:`latest_evaluation` reads the newest
run back for the app.
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core import class_probabilities, explain
from ..digits.data import make_digits, to_tensor
from ..digits.train import TEST_SEED_OFFSET
from ..errors import ParameterError, SaliencyError
from ..models import load_model
from ..registry import get_method
from ..render import to_map
from .faithfulness import faithfulness_curves
from .pointing import pointing_game, region_masks

# The benchmark's methods when none are named: each family once or twice, and both controls.
DEFAULT_METHODS = (
    "vanilla", "input_x_gradient", "smoothgrad", "integrated_gradients", "guided_backprop", "gradcam",
    "gradcam_pp", "scorecam", "occlusion", "rise", "random", "sobel",
)
DIGITS_MODELS = ("lenet_digits", "vit_digits")
# explain()'s CPU default (a few rows per thread) suits a 224-px network; LeNet on 32 x 32 runs ~10x faster per
# image with a few hundred rows per pass.
DIGITS_BATCH_SIZE = 256
SUMMARY_FILE = "summary.csv"
RUN_FILE = "run.json"
ROW_FIELDS = ("index", "label", "predicted", "target", "pointing_hit", "energy", "area", "deletion_auc",
              "insertion_auc", "explain_ms")
SUMMARY_FIELDS = ("method", "n", "pointing_game", "energy_pointing_game", "chance", "deletion_auc",
                  "insertion_auc", "explain_s", "explain_ms_per_image", "params")


# ---------------------------------------------------------------------------------------------------------
# Maps for a benchmark
# ---------------------------------------------------------------------------------------------------------


def method_params(method: str, input_size: int, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A method's parameters for an input of ``input_size`` pixels: the registry's defaults, with occlusion's
    window and stride scaled from 224 px to this size (32 and 16 at 224 px: 5 and 2 at 32 px), then ``params``."""

    info = get_method(method)
    resolved: dict[str, Any] = {}
    if method == "occlusion" and input_size != 224:
        for name in ("window", "stride"):
            resolved[name] = max(1, round(info.params[name].default * input_size / 224))
        resolved["window"] = max(2, resolved["window"])
    resolved.update(params or {})
    return info.validate(resolved)


def saliency_maps(
    bundle: Any,
    inputs: torch.Tensor,
    methods: Sequence[str],
    target: Any = "top1",
    *,
    params: Mapping[str, Mapping[str, Any]] | None = None,
    sign: str = "absolute",
    reduction: str = "max",
    seed: int = 0,
    seed_per_image: bool = False,
    batch_size: int | None = None,
    progress: Callable[[str, int, int], object] | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, float], dict[str, dict[str, Any]]]:
    """Each method's [N, H, W] map for ``inputs`` through the one render pipeline (``render.to_map`` with
    ``sign`` and ``reduction``): returns (maps, seconds per method, parameters per method).

    ``params``: method -> its parameters (see :func:`method_params`); ``progress(method, done, total)``.
    ``explain()`` gives every row of a batch the same random draws; with ``seed_per_image`` a stochastic method
    (random control, SmoothGrad, RISE) runs image by image with seed + index instead, so a benchmark's images are
    independent trials (one shared noise map would put the random control's maximum on one pixel for every image).
    """

    size = int(inputs.shape[-1])
    maps, seconds, used = {}, {}, {}
    for method in methods:
        resolved = method_params(method, size, (params or {}).get(method))
        callback = None if progress is None else (lambda done, total, m=method: progress(m, done, total))
        started = time.perf_counter()
        if seed_per_image and get_method(method).is_stochastic(resolved):
            targets = _per_row(target, len(inputs))
            attribution = torch.cat([
                explain(bundle, inputs[i: i + 1], method, targets[i], seed=seed + i, batch_size=batch_size,
                        **resolved).attribution.detach().float().cpu()
                for i in range(len(inputs))
            ]).numpy()
            if callback is not None:
                callback(len(inputs), len(inputs))
        else:
            explanation = explain(bundle, inputs, method, target, seed=seed, batch_size=batch_size,
                                  progress=callback, **resolved)
            attribution = explanation.attribution.detach().float().cpu().numpy()
        maps[method] = np.stack([to_map(row, sign, reduction) for row in attribution])
        seconds[method] = time.perf_counter() - started
        used[method] = resolved
    return maps, seconds, used


def _per_row(target: Any, n_rows: int) -> list[Any]:
    if isinstance(target, (torch.Tensor, np.ndarray, list, tuple)) and len(target) == n_rows:
        return [target[i] for i in range(n_rows)]
    return [target] * n_rows


# ---------------------------------------------------------------------------------------------------------
# The benchmark
# ---------------------------------------------------------------------------------------------------------


@dataclass
class MethodEvaluation:
    """One method over N images: per-image ``rows`` (arrays named as in ROW_FIELDS) and the method's time."""

    method: str
    params: dict[str, Any]
    rows: dict[str, np.ndarray]
    explain_s: float

    @property
    def n(self) -> int:
        return len(self.rows["index"])

    def summary(self) -> dict[str, Any]:
        """The summary CSV's row: means over the images."""
        def mean(name: str) -> float:
            values = np.asarray(self.rows[name], dtype=np.float64)
            return float(values.mean()) if values.size else math.nan

        return {
            "method": self.method, "n": self.n, "pointing_game": mean("pointing_hit"),
            "energy_pointing_game": mean("energy"), "chance": mean("area"), "deletion_auc": mean("deletion_auc"),
            "insertion_auc": mean("insertion_auc"), "explain_s": float(self.explain_s),
            "explain_ms_per_image": 1000 * float(self.explain_s) / max(1, self.n),
            "params": json.dumps(self.params, sort_keys=True, default=str),
        }


@dataclass
class Evaluation:
    """A benchmark run: one :class:`MethodEvaluation` per method, and how it was made (``settings``)."""

    model: str
    methods: list[MethodEvaluation]
    settings: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    path: Path | None = None

    def method(self, name: str) -> MethodEvaluation:
        for entry in self.methods:
            if entry.method == name:
                return entry
        raise KeyError(f"no method {name!r} in this evaluation; have {[m.method for m in self.methods]}")

    def summary(self) -> list[dict[str, Any]]:
        return [entry.summary() for entry in self.methods]

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "created": self.created, "settings": self.settings,
                "path": None if self.path is None else str(self.path), "summary": self.summary()}


def evaluate(
    bundle: Any,
    inputs: torch.Tensor,
    labels: Any,
    regions: Any,
    methods: Sequence[str] = DEFAULT_METHODS,
    *,
    target: str = "label",
    params: Mapping[str, Mapping[str, Any]] | None = None,
    steps: int = 32,
    substrate: Any = None,
    tolerance: int = 0,
    seed: int = 0,
    batch_size: int | None = None,
    progress: Callable[[str, int, int], object] | None = None,
) -> Evaluation:
    """Pointing game, energy pointing game and deletion/insertion AUC of each method on labelled ``inputs``.

    ``regions``: ground-truth boxes [N, 4] or masks [N, H, W]. ``target``: "label" explains and scores the true
    class (as Zhang et al.'s pointing game does), "top1" the prediction. Maps are |attribution| reduced by the
    channel maximum. Curves have ``steps`` steps (default substrates: black for deletion, blur for insertion) and
    share their end passes across methods. Stochastic methods draw independently per image (seed + index).
    ``progress(stage, done, total)``: stage is a method name or "curves".
    """

    if target not in ("label", "top1"):
        raise ParameterError(f"target must be 'label' or 'top1'; got {target!r}")
    methods = list(dict.fromkeys(methods))
    if not methods:
        raise ParameterError("name at least one method to evaluate")
    model = getattr(bundle, "model", bundle)
    for method in methods:
        reason = get_method(method).unavailable_reason(model)
        if reason:
            raise SaliencyError(f"{method}: {reason}")
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if len(labels) != len(inputs):
        raise ParameterError(f"got {len(labels)} labels for {len(inputs)} images")
    hw = tuple(inputs.shape[-2:])
    masks = region_masks(regions, len(inputs), hw)
    predicted = class_probabilities(bundle, inputs).argmax(-1)
    scored = labels if target == "label" else predicted
    maps, seconds, used = saliency_maps(bundle, inputs, methods, torch.from_numpy(scored), params=params,
                                        seed=seed, seed_per_image=True, batch_size=batch_size, progress=progress)
    curves = faithfulness_curves(
        bundle, inputs, maps, [torch.from_numpy(scored)], steps=steps, substrate=substrate, batch_size=batch_size,
        progress=None if progress is None else (lambda done, total: progress("curves", done, total)),
    )
    entries = []
    for method in methods:
        pointing = pointing_game(maps[method], masks, tolerance)
        rows = {
            "index": np.arange(len(inputs)), "label": labels, "predicted": predicted, "target": scored,
            "pointing_hit": pointing.hit, "energy": pointing.energy, "area": pointing.area,
            "deletion_auc": curves.curve("deletion", method).auc,
            "insertion_auc": curves.curve("insertion", method).auc,
            "explain_ms": np.full(len(inputs), 1000 * seconds[method] / len(inputs)),
        }
        entries.append(MethodEvaluation(method=method, params=used[method], rows=rows, explain_s=seconds[method]))
    settings = {
        "n": len(inputs), "target": target, "steps": steps, "substrates": curves.substrates, "tolerance": tolerance,
        "seed": seed, "batch_size": batch_size, "curves_s": curves.elapsed_s, "curve_passes": curves.model_passes,
        "accuracy": float((predicted == labels).mean()),
        "regions": "masks" if np.asarray(regions).ndim == 3 else "boxes",
    }
    return Evaluation(model=getattr(bundle, "name", type(model).__name__), methods=entries, settings=settings,
                      created=datetime.now(UTC).isoformat(timespec="seconds"))


def digits_inputs(images: np.ndarray, bundle: Any) -> torch.Tensor:
    """uint8 digits [N, H, W] as the bundle's input [N, 3, H, W] on its device: the dashboard's LeNet takes RGB and
    reads its channel mean, and every channel has the same normalisation, so repeating the gray channel is exact."""

    return to_tensor(images).repeat(1, 3, 1, 1).to(bundle.device)


def digits_evaluation(
    n: int = 500,
    methods: Sequence[str] = DEFAULT_METHODS,
    *,
    model: str = "lenet_digits",
    seed: int | None = None,
    device: str | None = None,
    regions: str = "boxes",
    batch_size: int | None = DIGITS_BATCH_SIZE,
    **options: Any,
) -> Evaluation:
    """:func:`evaluate` on ``n`` procedural digits with their ink boxes (or masks): by default the held-out stream
    (seed 10000, never trained on) of :mod:`explainers.digits`."""

    if model not in DIGITS_MODELS:
        raise SaliencyError(f"evaluate needs ground-truth regions, which only the digits models have: "
                            f"{', '.join(DIGITS_MODELS)}; got {model!r}")
    if regions not in ("boxes", "masks"):
        raise ParameterError(f"regions must be 'boxes' or 'masks'; got {regions!r}")
    if int(n) < 1:
        raise ParameterError(f"n must be a positive number of images; got {n}")
    seed = TEST_SEED_OFFSET if seed is None else int(seed)
    data = make_digits(int(n), seed)
    bundle = load_model(model, **({} if device is None else {"device": device}))
    inputs = digits_inputs(data.images, bundle)
    evaluation = evaluate(bundle, inputs, data.labels, data.boxes if regions == "boxes" else data.masks, methods,
                          batch_size=batch_size, **options)
    evaluation.settings.update({"data_seed": seed, "regions": regions})
    return evaluation


def _safe_name(method: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in method)


def _format(value: Any) -> Any:
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.6g}"
    if isinstance(value, np.integer):
        return int(value)
    return value


def write_evaluation(evaluation: Evaluation, out_dir: Path | str) -> Path:
    """Write the run into a new folder ``out_dir/<model>-<UTC time>``: ``<method>.csv`` (one row per image),
    ``summary.csv`` (one row per method) and ``run.json`` (settings). Returns the folder."""
    out_dir = Path(out_dir)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    folder = out_dir / f"{_safe_name(evaluation.model)}-{stamp}"
    try:
        folder.mkdir(parents=True, exist_ok=False)
    except OSError as exc:
        raise SaliencyError(f"expected a writable output folder, got {str(out_dir)!r} ({exc})") from None
    for entry in evaluation.methods:
        with open(folder / f"{_safe_name(entry.method)}.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(ROW_FIELDS)
            for i in range(entry.n):
                writer.writerow([_format(entry.rows[name][i]) for name in ROW_FIELDS])
    with open(folder / SUMMARY_FILE, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=SUMMARY_FIELDS)
        writer.writeheader()
        for row in evaluation.summary():
            writer.writerow({k: _format(v) for k, v in row.items()})
    record = {"model": evaluation.model, "created": evaluation.created, "settings": evaluation.settings,
              "methods": {e.method: {"file": f"{_safe_name(e.method)}.csv", "params": e.params,
                                     "explain_s": e.explain_s} for e in evaluation.methods}}
    (folder / RUN_FILE).write_text(json.dumps(record, indent=2, default=str) + "\n")
    evaluation.path = folder
    return folder


def read_evaluation(folder: Path | str) -> Evaluation:
    """An evaluation written by :func:`write_evaluation`, read back from its folder."""
    folder = Path(folder)
    try:
        record = json.loads((folder / RUN_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise SaliencyError(f"{folder} is not an evaluation folder ({exc})") from None
    entries = []
    for method, info in record["methods"].items():
        with open(folder / info["file"], newline="") as handle:
            table = list(csv.DictReader(handle))
        rows = {}
        for name in ROW_FIELDS:
            kind = np.int64 if name in ("index", "label", "predicted", "target") else np.float64
            rows[name] = np.array([row[name] for row in table], dtype=np.float64).astype(kind)
        entries.append(MethodEvaluation(method=method, params=info["params"], rows=rows,
                                        explain_s=float(info["explain_s"])))
    return Evaluation(model=record["model"], methods=entries, settings=record["settings"],
                      created=record["created"], path=folder)


def latest_evaluation(directory: Path | str) -> Evaluation | None:
    """The newest evaluation under ``directory`` (by its recorded creation time, then folder name), or None."""
    directory = Path(directory)
    if not directory.is_dir():
        return None
    runs = []
    for run in directory.glob(f"*/{RUN_FILE}"):
        try:
            created = json.loads(run.read_text()).get("created", "")
        except (OSError, ValueError):
            continue
        runs.append((created, run.parent.name, run.parent))
    if not runs:
        return None
    return read_evaluation(max(runs)[2])


__all__ = [
    "DEFAULT_METHODS", "Evaluation", "MethodEvaluation", "digits_evaluation", "digits_inputs",
    "evaluate", "latest_evaluation", "method_params", "read_evaluation",
    "saliency_maps", "write_evaluation",
]
