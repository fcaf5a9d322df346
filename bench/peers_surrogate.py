"""KernelSHAP and LIME against Captum's KernelShap and Lime: the rows bench/peers.py adds for
explainers/methods/surrogate.py.

Both sides get the same features (our SLIC superpixels, handed to Captum as its ``feature_mask``), the same
baseline tensor (the image's mean colour) and the same number of forward passes (ours: ``n_samples`` coalitions
plus the clean pass; Captum: ``n_samples + 1`` samples, its first being the image itself). Captum's Lime gets
lime's image kernel (exponential, width 0.25, on the cosine distance of the on/off pattern) and Ribeiro's
sampling (a uniform number of kept superpixels, then a uniform subset) as ours uses, and the same ridge (α = 1).

Each method gets two rows: Captum at its best ``perturbations_per_eval`` (``TUNED_PPE``, goal ≤ 1.0×) and at its
default of 1 (one perturbation per forward pass, goal ≤ 0.5×). Ours runs at its default batch size. Both
estimates are random and draw differently: a row's map is "the same" when Captum's correlates with ours at
least as well (within 0.1) as two of our own seeds do.
"""

from __future__ import annotations

import math

import torch
from common import agreement
from peerkit import Subject, describe, make_row, missing_row

from explainers import explain
from explainers.baselines import make_baseline
from explainers.superpixels import segment

SEED = 0
# Captum's perturbations_per_eval measured on this shared 2-core CPU (BENCH_THREADS=1, KernelShap): the 64 px tiny
# CNN at 500 samples: 1 → 1.95 s, 16 → 1.04 s, 64 → 1.27 s, 256 → 1.99 s (loaded machine); efficientnet_lite0 at
# 224 px, 49 samples, interleaved medians (load about 3): 1 → 1.89 s, 4 → 1.64 s, 16 → 1.93 s; at 97 samples
# (load about 8) 16 → 6.4 s, 64 → 10.6 s. One thread on a 224 px model wants few rows per pass; a GPU wants many
# (not measured here).
TUNED_PPE = {"cpu": 4, "cuda": 64}
DEFAULT_GOAL = 0.5  # against one perturbation per pass


def _uniform_count_subset(original_inp, **kwargs):
    """Ribeiro et al.'s sampling, as ours: a kept count uniform in 0..M−1, then a uniform subset of that size."""
    m = kwargs["num_interp_features"]
    kept = int(torch.randint(0, m, (1,)))
    pattern = torch.zeros(1, m, dtype=torch.long)
    pattern[0, torch.randperm(m)[:kept]] = 1
    return pattern.to(original_inp.device)


def _lime_kernel(width: float):
    """lime's image kernel on the on/off pattern (Captum's default compares the perturbed images instead)."""

    def similarity(original, perturbed, interpretable, **kwargs):
        d = 1 - math.sqrt(float(interpretable.sum()) / interpretable.numel())
        return math.exp(-(d**2) / (2 * width**2))

    return similarity


def rows(s: Subject, run, device) -> list[dict]:
    try:
        from captum._utils.models.linear_model import SkLearnRidge
        from captum.attr import KernelShap, Lime
    except ImportError as exc:
        return [missing_row(s, "captum", f"{m} vs Captum", f"captum not importable: {exc}")
                for m in ("kernel_shap", "lime")]
    x, target, model = s.x, s.target, s.model
    tiny = s.name == "tiny"
    # few superpixels, so that both estimates settle within a few hundred samples and can be compared
    n_samples, n_segments = (100, 16) if tiny else (300, 20)
    bundle = s.explained if s.explained is not s.model else None
    labels = segment(x, "slic", bundle, n_segments=n_segments)
    mask = labels.unsqueeze(1)  # [1, 1, H, W]: the superpixel of every channel of a pixel
    reference = make_baseline("mean", x, bundle)
    params = {"n_samples": n_samples, "segmentation": "slic", "n_segments": n_segments, "baseline": "mean"}
    tuned = TUNED_PPE.get(device.type, TUNED_PPE["cpu"])

    def captum_call(method: str, ppe: int):
        def call():
            torch.manual_seed(SEED)  # Captum draws from torch's global generator
            if method == "kernel_shap":
                explainer = KernelShap(model)
            else:
                explainer = Lime(model, interpretable_model=SkLearnRidge(alpha=1.0), similarity_func=_lime_kernel(0.25),
                                 perturb_func=_uniform_count_subset)
            return explainer.attribute(x, baselines=reference, target=target, feature_mask=mask,
                                       n_samples=n_samples + 1, perturbations_per_eval=ppe)
        return call

    out = []
    for method, peer_name in (("kernel_shap", "KernelShap"), ("lime", "Lime")):
        ours = explain(s.explained, x, method, target=target, seed=SEED + 1, **params).attribution  # a second draw
        segments = int(labels.max()) + 1
        for ppe, goal in ((tuned, 1.0), (1, DEFAULT_GOAL)):
            times, outputs = run({"ours": lambda m=method: explain(s.explained, x, m, target=target, seed=SEED,
                                                                   **params),
                                  "captum": captum_call(method, ppe)})
            ours_map, their_map = outputs["ours"].attribution[:, :1], outputs["captum"][:, :1]
            agree = agreement(ours_map, their_map)
            self_corr = agreement(ours_map, ours)["corr"]
            same = "yes" if agree["corr"] >= self_corr - 0.1 else "NO"
            default = "" if ppe == tuned else f" (Captum's default; goal ≤ {DEFAULT_GOAL})"
            case = (f"{method} vs {peer_name}, {n_samples} samples, {segments} SLIC superpixels, "
                    f"perturbations_per_eval={ppe}{default}")
            peer = (f"feature_mask = our superpixels, baselines = the same mean-colour tensor, n_samples="
                    f"{n_samples + 1}, perturbations_per_eval={ppe}"
                    + (", lime's kernel (cosine, width 0.25), Ribeiro's sampling, SkLearnRidge(alpha=1)"
                       if method == "lime" else ""))
            row = make_row(s, "Captum", case, times, "captum", peer, same,
                           f"{describe(agree)}; ours seed 0 vs seed 1: corr {self_corr:.4f}")
            row["goal"] = goal
            row["met"] = "yes" if row["ratio"] <= goal else "no"
            out.append(row)
    return out
