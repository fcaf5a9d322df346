"""Blur IG, Guided IG and XRAI against PAIR's ``saliency`` (the papers' own code): the rows bench/peers.py adds for
the path methods of explainers/methods/integrated.py and explainers/methods/xrai.py.

``saliency`` explains one image per call, through a ``call_model_function`` that gets a batch of channel-last
NumPy inputs and returns their gradients; here that function runs the same torch model on the same device.
Blur IG and XRAI's integrated gradients batch the path points (``batch_size``): two rows each, at a tuned batch
(goal ≤ 1.0×) and at its default of one point per pass (goal ≤ 0.5×). Guided IG has no batch setting (each step
needs the previous one's gradient): one row, goal ≤ 0.5×. Both sides run the same steps and path; Blur IG and
Guided IG must agree to float32 rounding. XRAI: each side segments the picture itself in the timed runs; the
"same" verdict comes from one more, untimed, ``saliency`` run given our regions and our integrated gradients (the
same two baselines and steps): the same ranking of regions, to the bit. Their own integrated gradients use evenly
spaced points, ours Gauss-Legendre: on a ReLU network the two differ at a few dozen steps by more than the lead of
one region over the next among hundreds, so comparing whole runs would measure the quadratures.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch
from common import agreement
from peerkit import Subject, describe, make_row, missing_row, verdict

from explainers import explain
from explainers.superpixels import felzenszwalb_masks, to_pixels

DEFAULT_GOAL = 0.5  # against one path point per pass (or no batching at all)
TUNED_BATCH = {"cpu": 16, "cuda": 64}
KIND = "PAIR saliency"


def model_function(model: torch.nn.Module, target: int, device: torch.device):
    """``saliency``'s call_model_function: channel-last NumPy in, the target's input gradients out."""

    def call(batch, call_model_args=None, expected_keys=None):
        from saliency.core.base import INPUT_OUTPUT_GRADIENTS

        x = torch.from_numpy(np.asarray(batch, dtype=np.float32)).permute(0, 3, 1, 2).to(device).requires_grad_(True)
        (grad,) = torch.autograd.grad(model(x)[:, target].sum(), x)
        return {INPUT_OUTPUT_GRADIENTS: grad.permute(0, 2, 3, 1).detach().cpu().numpy()}

    return call


class _QuantileLower:
    """NumPy as ``saliency``'s Guided IG needs it: its np.quantile(..., interpolation=) predates NumPy 2."""

    def __getattr__(self, name):
        return getattr(np, name)

    @staticmethod
    def quantile(a, q, interpolation="linear", **kwargs):
        return np.quantile(a, q, method=interpolation, **kwargs)


@contextmanager
def numpy_two_quantile():
    from saliency.core import guided_ig

    before = guided_ig.np
    guided_ig.np = _QuantileLower()
    try:
        yield
    finally:
        guided_ig.np = before


def channel_first(array: np.ndarray, device) -> torch.Tensor:
    return torch.from_numpy(np.asarray(array, dtype=np.float64)).permute(2, 0, 1).unsqueeze(0).to(device)


def rows(s: Subject, run, device) -> list[dict]:
    names = ("blur_ig", "guided_ig", "xrai")
    try:
        import saliency.core as pair
    except ImportError as exc:
        return [missing_row(s, KIND, f"{m} vs saliency", f"saliency not importable: {exc}") for m in names]
    x, target, model = s.x, s.target, s.model
    tiny = s.name == "tiny"
    steps = s.settings.ig_steps
    sigma = 10.0 if tiny else 50.0  # the paper's 50 px is for 224 px images
    tuned = TUNED_BATCH.get(device.type, 16)
    image = x[0].permute(1, 2, 0).double().cpu().numpy()  # float64: saliency's blurs and differences in float64
    gradients = model_function(model, target, device)
    out = []

    # Blur IG: the same widths, blur and finite difference; saliency batches `batch_size` widths per call
    for batch, goal in ((tuned, 1.0), (1, DEFAULT_GOAL)):
        times, outputs = run({
            "ours": lambda: explain(s.explained, x, "blur_ig", target=target, n_steps=steps, max_sigma=sigma),
            "saliency": lambda b=batch: pair.BlurIG().GetMask(image, gradients, max_sigma=sigma, steps=steps,
                                                              batch_size=b),
        })
        agree = agreement(outputs["ours"].attribution, channel_first(outputs["saliency"], x.device))
        default = "" if batch == tuned else f" (its default; goal ≤ {DEFAULT_GOAL})"
        row = make_row(s, KIND, f"blur_ig vs BlurIG, {steps} steps, max_sigma {sigma:g}, batch_size={batch}{default}",
                       times, "saliency", f"GetMask(max_sigma={sigma:g}, steps={steps}, grad_step=0.01, "
                       f"batch_size={batch}), float64 image", verdict(agree), describe(agree))
        row["goal"], row["met"] = goal, "yes" if row["ratio"] <= goal else "no"
        out.append(row)

    # Guided IG: sequential in its steps on both sides; saliency has no batch setting at all
    baseline = "black" if getattr(s.explained, "normalize", None) is not None else "zero"
    if baseline == "black":
        start = s.explained.normalize(torch.zeros_like(x[:1])).to(x.device)[0].permute(1, 2, 0).double().cpu().numpy()
    else:
        start = np.zeros_like(image)
    with numpy_two_quantile():
        times, outputs = run({
            "ours": lambda: explain(s.explained, x, "guided_ig", target=target, n_steps=steps, baseline=baseline),
            "saliency": lambda: pair.GuidedIG().GetMask(image, gradients, x_baseline=start, x_steps=steps),
        })
    agree = agreement(outputs["ours"].attribution, channel_first(outputs["saliency"], x.device))
    row = make_row(s, KIND, f"guided_ig vs GuidedIG, {steps} steps, {baseline} baseline (it does not batch; goal ≤ "
                   f"{DEFAULT_GOAL})", times, "saliency", f"GetMask(x_steps={steps}, fraction=0.25, max_dist=0.02, "
                   f"x_baseline={baseline}), float64 image, np.quantile shimmed for NumPy 2", verdict(agree),
                   describe(agree))
    row["goal"], row["met"] = DEFAULT_GOAL, "yes" if row["ratio"] <= DEFAULT_GOAL else "no"
    out.append(row)

    # XRAI: integrated gradients from two baselines, Felzenszwalb regions, greedy ranking
    if getattr(s.explained, "normalize", None) is not None:
        ours_pair, low = "black_white", s.explained.normalize(torch.zeros_like(x[:1]))
        high = s.explained.normalize(torch.ones_like(x[:1]))
        their_baselines = [b.to(x.device)[0].permute(1, 2, 0).double().cpu().numpy() for b in (low, high)]
    else:
        ours_pair, their_baselines = "min_max", None  # saliency's default: the image's lowest and highest value
    bundle = None if s.explained is s.model else s.explained
    picture = to_pixels(x, bundle)[0].permute(1, 2, 0)
    masks = list(felzenszwalb_masks(picture.double().cpu().numpy()))
    ends = (low, high) if ours_pair == "black_white" else (x.amin().expand_as(x), x.amax().expand_as(x))
    maps = [explain(s.explained, x, "integrated_gradients", target=target, n_steps=steps, baseline=end.to(x.device))
            .attribution[0] for end in ends]
    ig = ((maps[0] + maps[1]) / 2).permute(1, 2, 0).double().cpu().numpy()
    for batch, goal in ((tuned, 1.0), (1, DEFAULT_GOAL)):
        parameters = pair.XRAIParameters(steps=steps)
        times, outputs = run({
            "ours": lambda: explain(s.explained, x, "xrai", target=target, n_steps=steps, baselines=ours_pair),
            "saliency": lambda b=batch, p=parameters: pair.XRAI().GetMask(image, gradients, baselines=their_baselines,
                                                                          batch_size=b, extra_parameters=p),
        })
        # the verdict: saliency's regions and ranking on our integrated gradients (the same two baselines and steps,
        # through explain's integrated_gradients) and our regions: the region step alone, without the quadratures
        ours = outputs["ours"]
        given = pair.XRAIParameters(return_xrai_segments=True)
        theirs = pair.XRAI().GetMaskWithDetails(image, gradients, segments=masks, base_attribution=ig,
                                                extra_parameters=given)
        ranks_same = np.array_equal(ours.regions[0].cpu().numpy() + 1, theirs.segments)
        agree = agreement(ours.attribution[0, 0], torch.from_numpy(theirs.attribution_mask))
        same = "yes" if ranks_same else verdict(agree)
        ranking = "identical" if ranks_same else "DIFFERS"
        default = "" if batch == tuned else f" (its default; goal ≤ {DEFAULT_GOAL})"
        row = make_row(s, KIND, f"xrai vs XRAI, {steps} IG steps × 2 baselines, {len(masks)} regions, "
                       f"batch_size={batch}{default}", times, "saliency",
                       f"GetMask({ours_pair.replace('_', '/')} baselines, steps={steps}, batch_size={batch}), its own "
                       "segmentation when timed; given ours for the verdict", same,
                       f"ranking {ranking} on the same regions and IG; {describe(agree)}")
        row["goal"], row["met"] = goal, "yes" if row["ratio"] <= goal else "no"
        out.append(row)
    return out
