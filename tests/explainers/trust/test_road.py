"""ROAD (Rong et al. 2022, arXiv:2202.00449): the imputation solves its linear system by either solver, the removed
pixels follow pytorch-grad-cam's percentile rule, whole curves equal pytorch-grad-cam's, and on the cat Grad-CAM's
MoRF curve falls below the random control's."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pytorch_grad_cam.metrics.road import ROADLeastRelevantFirst, ROADMostRelevantFirst
from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget, ClassifierOutputTarget

import explainers
from explainers import ParameterError
from explainers.render import to_map
from explainers.trust.road import linear_impute, noisy_linear_impute, road_curves, road_removed

from ...conftest import sample_path


def test_gradcam_road_morf_below_random_control(default_bundle, cat):
    inputs, maps = cat
    curves = road_curves(default_bundle, inputs, maps, "top1", orders=("morf",), fractions=(0.2, 0.5, 0.8), seed=0)
    gradcam, random = curves.curve("road_morf", "gradcam"), curves.curve("road_morf", "random")
    print(f"\nROAD MoRF on cat (fractions 0, .2, .5, .8): gradcam {np.round(gradcam.probability[0], 3)}, "
          f"random {np.round(random.probability[0], 3)}")
    assert gradcam.mean_auc < random.mean_auc


@pytest.mark.parametrize("solver", ["multigrid", "sparse", "automatic"])
def test_linear_imputation_solves_its_system(monkeypatch, solver):
    """Every removed pixel ends as the weighted mean of its in-image neighbours; kept pixels stay; rows are
    independent of their batch; with nothing kept the image becomes 0. Scattered removals, and blobs inside the
    image and at its corner (solved on the box around them), by either solver."""
    if solver != "automatic":
        monkeypatch.setattr("explainers.trust.road.SPARSE_COST", 0 if solver == "multigrid" else 10**9)
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(5, 2, 17, 21, generator=generator, dtype=torch.float64)
    removed = torch.rand(5, 17, 21, generator=generator) < torch.tensor([0.2, 0.6, 0.95, 0, 0]).view(5, 1, 1)
    removed[3, 4:9, 6:15] = True
    removed[4, :6, 14:] = True
    removed[4, 10, 3] = True
    filled = linear_impute(inputs, removed, tolerance=1e-12)
    weights = torch.tensor([[1 / 12, 1 / 6, 1 / 12], [1 / 6, 0, 1 / 6], [1 / 12, 1 / 6, 1 / 12]],
                           dtype=torch.float64).view(1, 1, 3, 3).repeat(2, 1, 1, 1)
    neighbours = torch.nn.functional.conv2d(filled, weights, padding=1, groups=2)
    inside = torch.nn.functional.conv2d(torch.ones_like(filled), weights, padding=1, groups=2)
    mask = removed[:, None].expand_as(inputs)
    torch.testing.assert_close(filled[mask], (neighbours / inside)[mask], atol=1e-9, rtol=0)
    assert torch.equal(filled[~mask], inputs[~mask])
    torch.testing.assert_close(linear_impute(inputs[1:2], removed[1:2], tolerance=1e-12), filled[1:2], atol=1e-9,
                               rtol=0)
    everything = linear_impute(inputs[:1], torch.ones_like(removed[:1]))
    assert torch.equal(everything, torch.zeros_like(everything))


def test_road_removed_thresholds_at_the_percentile():
    values = np.array([[0.1, 0.5, 0.5, 0.9]], dtype=np.float32)
    assert road_removed(values, 0.5, "morf").tolist() == [[False, True, True, True]]  # ties at the threshold go
    assert road_removed(values, 0.5, "lerf").tolist() == [[True, True, True, False]]
    with pytest.raises(ParameterError):
        road_removed(values, 1.0)


# pytorch-grad-cam calls np.argwhere on a tensor, which NumPy 2 warns about
@pytest.mark.filterwarnings("ignore:__array_wrap__:DeprecationWarning")
def test_road_equals_pytorch_grad_cam(default_bundle):
    """Our ROAD images and scores equal pytorch-grad-cam's ROADMostRelevantFirst / ROADLeastRelevantFirst for the
    same maps (one with many ties) and percentiles, with torch.manual_seed(seed) before each of its calls.

    Tolerance: pytorch-grad-cam solves the imputation directly (SciPy's SuperLU); ours iterates to a relative
    residual of 1e-9. Measured, the images differ by ~1e-7; we allow 1e-5 on pixels and on probabilities (the
    float32 forward of slightly different inputs), and 1e-4 relative on logits.
    """
    size, seed = 96, 5
    pixels = [explainers.open_image(sample_path(name)).convert("RGB").resize((size, size))
              for name in ("cat.png", "coffee.png")]
    inputs = torch.cat([default_bundle.normalize(
        torch.from_numpy(np.asarray(p, dtype=np.float32) / 255).permute(2, 0, 1)[None]) for p in pixels])
    explanation = explainers.explain(default_bundle, inputs, "gradcam", "top1")
    cams = np.stack([to_map(a) for a in explanation.attribution])
    cams = (cams - cams.min(axis=(1, 2), keepdims=True)) / np.ptp(cams, axis=(1, 2), keepdims=True)
    cams[1] = np.round(cams[1] * 8) / 8  # a quantised map: many pixels tie at each percentile
    cams = cams.astype(np.float32)
    classes = explanation.target.tolist()
    percentiles = (10, 50, 90)
    ours = road_curves(default_bundle, inputs, {"gradcam": cams}, "top1",
                       fractions=[1 - p / 100 for p in percentiles], seed=seed, batch_size=3)
    for order, metric in (("morf", ROADMostRelevantFirst), ("lerf", ROADLeastRelevantFirst)):
        curve = ours.curve(f"road_{order}", "gradcam")
        for row in range(2):
            for percentile in percentiles:
                fraction = 1 - percentile / 100
                column = list(curve.fractions).index(fraction)
                torch.manual_seed(seed)
                probability, image = metric(percentile)(
                    inputs[row:row + 1], cams[row:row + 1], [ClassifierOutputSoftmaxTarget(classes[row])],
                    default_bundle.model, return_visualization=True, return_diff=False)
                torch.manual_seed(seed)
                logit = metric(percentile)(inputs[row:row + 1], cams[row:row + 1],
                                           [ClassifierOutputTarget(classes[row])], default_bundle.model,
                                           return_diff=False)
                removed = torch.from_numpy(road_removed(cams[row], fraction, order))[None]
                mine = noisy_linear_impute(inputs[row:row + 1], removed, seed=seed)
                torch.testing.assert_close(mine, image, atol=1e-5, rtol=0)
                np.testing.assert_allclose(curve.probability[row, column], probability[0], atol=1e-5, rtol=0)
                np.testing.assert_allclose(curve.logit[row, column], logit[0], rtol=1e-4, atol=1e-4)
