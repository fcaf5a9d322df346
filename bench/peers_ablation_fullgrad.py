"""Ablation-CAM and FullGrad against pytorch-grad-cam's AblationCAM and FullGrad: the rows bench/peers.py adds for
explainers/methods/cam.py's ``ablationcam`` and explainers/methods/fullgrad.py.

Ablation-CAM gets two rows: the peer at its default ``batch_size=32`` and at a larger batch (64, as the other
CAM rows run Score-CAM; 16 on the --quick subject, whose 32 channels are one default batch). The peer runs the
whole network for every ablated copy; ours runs the part before the layer once per batch and only the rest on the
copies, so the default row's goal is 0.5×. The peer's ablation value drifts with the position in its batch where
the layer goes below 0 (it subtracts another 1e7 for each earlier copy); on such a layer its map is not the
method's and the row says so. FullGrad has no batch setting: one row, one image.
"""

from __future__ import annotations

import os

import torch
from common import agreement, minmax
from peerkit import Subject, describe, make_row, missing_row, verdict

from explainers import explain
from explainers.layers import cached_catalogue
from explainers.methods.fullgrad import biased_layers  # importing it registers FullGrad

os.environ.setdefault("TQDM_DISABLE", "1")  # the peer's AblationCAM draws a progress bar per image
PEER_DEFAULT_BATCH = 32  # pytorch-grad-cam 1.5.7's AblationCAM default
PEER_TUNED_BATCH = 64
DRIFT = ("its ablation value drifts", "pytorch-grad-cam 1.5.7's AblationLayer sets an ablated channel to "
         "min(output) − 1e7 where the layer goes below 0, reading min(output) over its whole batch after the earlier "
         "copies were ablated: copy j gets min − (j+1)·1e7, so its map depends on batch_size. Ours uses the first "
         "copy's value for every copy (what the peer computes with batch_size=1, which the tests compare with).")


def rows(s: Subject, run, device) -> list[dict]:
    try:
        import pytorch_grad_cam
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    except ImportError as exc:
        why = f"grad-cam not importable: {exc}"
        return [missing_row(s, "pytorch-grad-cam", case, why) for case in
                ("ablationcam vs AblationCAM", "fullgrad vs FullGrad")]
    x, target, model, layer, module = s.x, s.target, s.model, s.layer, s.layer_module
    targets = [ClassifierOutputTarget(target)]
    result = []

    # -- Ablation-CAM, the peer at its default batch and at a larger one
    with torch.no_grad():
        seen = {}
        handle = module.register_forward_hook(lambda m, a, o: seen.update(low=float(o.min())))
        model(x)
        handle.remove()
    negative = seen["low"] != 0  # the peer's value then drifts within a batch (DRIFT)
    channels = next(e.channels for e in cached_catalogue(model, tuple(x.shape)) if e.name == layer)
    tuned = 16 if s.name == "tiny" else PEER_TUNED_BATCH  # tiny: its 32 channels in two batches

    def peer_ablation(batch_size):
        def call():
            with pytorch_grad_cam.AblationCAM(model, [module], batch_size=batch_size) as cam:
                return cam(input_tensor=x, targets=targets)
        return call

    for batch_size, goal in ((tuned, ""), (PEER_DEFAULT_BATCH, " (the peer's default; it batches: goal 1.0)")):
        times, outputs = run({"ours": lambda: explain(s.explained, x, "ablationcam", target=target, layer=layer),
                              "pytorch-grad-cam": peer_ablation(batch_size)})
        ours = minmax(outputs["ours"].attribution[0, 0])  # upsampled bilinearly, as the peer resizes
        agree = agreement(ours, outputs["pytorch-grad-cam"][0])
        result.append(make_row(
            s, "pytorch-grad-cam", f"ablationcam vs AblationCAM, batch_size={batch_size}{goal}", times,
            "pytorch-grad-cam", f"batch_size={batch_size}, layer {layer} ({channels} channels)",
            verdict(agree, DRIFT if negative and batch_size > 1 else None), describe(agree)))

    # -- FullGrad: no batch setting
    def peer_fullgrad():
        with pytorch_grad_cam.FullGrad(model, []) as cam:
            return cam(input_tensor=x, targets=targets)

    times, outputs = run({"ours": lambda: explain(s.explained, x, "fullgrad", target=target),
                          "pytorch-grad-cam": peer_fullgrad})
    agree = agreement(minmax(outputs["ours"].attribution[0, 0]), outputs["pytorch-grad-cam"][0])
    biased = len(biased_layers(model))
    result.append(make_row(s, "pytorch-grad-cam", "fullgrad vs FullGrad", times, "pytorch-grad-cam",
                           f"every biased Conv2d / BatchNorm2d ({biased}); one image, no batch setting",
                           verdict(agree), describe(agree)))
    return result
