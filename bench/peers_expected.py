"""GradientSHAP against Captum's GradientShap: the rows bench/peers.py adds for explainers/methods/expected.py.

Captum's GradientShap has no batch-size setting (its NoiseTunnel runs every sample of a row in one batch), so
there is one row: ours at its default batch size against Captum's only setting, goal ≤ 1.0×. Both get the same
baselines (ours drawn from the blur distribution with the call's seed, handed to Captum as its distribution) and
the same noise σ; each draws its own α, noise and baseline picks, so the maps agree as two of our own seeds do.
Ours also runs the clean forward of the input and every drawn baseline (the completeness check in ``extras``),
which Captum skips unless asked for its convergence delta.
"""

from __future__ import annotations

import math

import torch
from common import agreement
from peerkit import Subject, describe, make_row, missing_row

from explainers import explain
from explainers.baselines import sample_baselines
from explainers.methods.expected import BASELINE_DRAW

SEED = 0
NOISE_LEVEL = 0.02  # ours' default, as a share of the input's range


def rows(s: Subject, run, device) -> list[dict]:
    try:
        from captum.attr import GradientShap
    except ImportError as exc:
        return [missing_row(s, "captum", "gradient_shap vs GradientShap", f"captum not importable: {exc}")]
    x, target, model = s.x, s.target, s.model
    n_samples = 8 if s.name == "tiny" else 50
    bundle = s.explained if s.explained is not s.model else None
    # the baselines our call draws with this seed: Captum gets them as its distribution
    baselines = sample_baselines("blur", x, n_samples, torch.Generator().manual_seed(SEED + BASELINE_DRAW), bundle)[0]
    stdev = NOISE_LEVEL * float(x.max() - x.min())
    params = {"n_samples": n_samples, "distribution": "blur", "noise_level": NOISE_LEVEL}
    case = f"gradient_shap vs GradientShap, {n_samples} samples"
    times, outputs = run({
        "ours": lambda: explain(s.explained, x, "gradient_shap", target=target, seed=SEED, **params),
        "captum": lambda: GradientShap(model).attribute(x, baselines=baselines, n_samples=n_samples, stdevs=stdev,
                                                        target=target),
    })
    ours_map, their_map = outputs["ours"].attribution, outputs["captum"]
    agree = agreement(ours_map, their_map)
    # independent draws: Captum's map must be as close to ours as another of our own draws is, and as large
    other = explain(s.explained, x, "gradient_shap", target=target, seed=SEED + 1, **params).attribution
    self_corr = agreement(ours_map, other)["corr"]
    scale = float(ours_map.norm() / their_map.norm().clamp_min(1e-30))
    own_scale = float(ours_map.norm() / other.norm().clamp_min(1e-30))
    # norms within 0.8-1.25x, or within twice the spread of our own two draws (few samples vary more)
    spread = max(math.log(1.25), 2 * abs(math.log(own_scale)))
    same = "yes" if agree["corr"] >= self_corr - 0.1 and abs(math.log(scale)) <= spread else "NO"
    text = (f"{describe(agree)}; ours seed 0 vs seed 1: corr {self_corr:.4f}, norm {own_scale:.3f}; "
            f"norm ours/peer {scale:.3f}")
    peer = (f"the same {n_samples} blurred baselines, stdevs={stdev:.4f} ({NOISE_LEVEL} × range), all samples in "
            "one batch (GradientShap has no batch-size setting); ours: its default batch size, plus the clean "
            "forward of the input and baselines for the completeness check")
    return [make_row(s, "captum", case, times, "captum", peer, same, text)]
