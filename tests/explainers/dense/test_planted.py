"""Ground truth: on the planted scene, the explanation of a detected box (or a segmented region) peaks inside that
box (region) and not inside the other object's, for gradient, CAM, path, occlusion and sampling methods; a
contrast of the two boxes separates them by sign."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from explainers import METHODS, Contrast, explain
from explainers.models.dense import dense_bundle
from explainers.render import to_map

from ...dense_models import CATEGORIES, PlantedDetector, PlantedSegmenter, scene

# each method at a small cost (64-pixel scene); integrated gradients only where it is registered
CASES = {
    "vanilla": {},
    "gradcam": {},
    "integrated_gradients": {"n_steps": 8},
    "occlusion": {"window": 8, "stride": 4},
    "rise": {"n_masks": 256},
}
METHODS_HERE = [name for name in CASES if name in METHODS]


def peak(attribution: torch.Tensor) -> tuple[int, int]:
    """(row, column) of the largest magnitude of the first row's map (channels: the largest |value|)."""
    heat = np.abs(to_map(attribution[0]))
    return divmod(int(heat.argmax()), heat.shape[-1])


@pytest.fixture(scope="module")
def detector():
    bundle = dense_bundle(PlantedDetector(), input_size=64, categories=CATEGORIES)
    x = scene()
    targets = bundle.targets(bundle.predict(x))
    assert [t.label for t in targets] == [1, 2]  # red, then blue
    return bundle.scored(targets, x), x


@pytest.fixture(scope="module")
def segmenter():
    bundle = dense_bundle(PlantedSegmenter(), input_size=64, categories=CATEGORIES)
    x = scene()
    regions = {t.label: t for t in bundle.targets(bundle.predict(x))}
    assert set(regions) == {0, 1, 2}
    return bundle.scored([regions[1], regions[2]], x), x


def test_the_targets_lie_on_the_planted_squares(detector, segmenter):
    """What the properties below rest on: target 0 covers the red square's centre, target 1 the blue one's."""
    for scored, _ in (detector, segmenter):
        assert scored.target_mask(0)[18, 16] and not scored.target_mask(0)[45, 47]
        assert scored.target_mask(1)[45, 47] and not scored.target_mask(1)[18, 16]


@pytest.mark.parametrize("method", METHODS_HERE)
@pytest.mark.parametrize("case", ["detector", "segmenter"])
def test_each_targets_map_peaks_on_its_own_object(request, case, method):
    scored, x = request.getfixturevalue(case)
    for index in (0, 1):
        result = explain(scored, x, method, target=index, seed=0, **CASES[method])
        assert result.attribution.shape[-2:] == (64, 64) and torch.isfinite(result.attribution).all()
        where = peak(result.attribution)
        assert scored.target_mask(index)[where], (index, where)
        assert not scored.target_mask(1 - index)[where], (index, where)


@pytest.mark.parametrize("target", [Contrast(0, 1), "#1 red 0.97 vs #2 blue 0.97"])
def test_a_contrast_of_the_two_boxes_separates_them_by_sign(detector, target):
    """Grad-CAM of score(red) - score(blue) without the ReLU: positive on the red box, negative on the blue one."""
    scored, x = detector
    if isinstance(target, str):  # the names as the detector scores them on this scene
        target = f"{scored.categories[0]} vs {scored.categories[1]}"
    result = explain(scored, x, "gradcam", target=target, relu=False)
    heat = to_map(result.attribution[0], sign="signed")
    top = divmod(int(heat.argmax()), 64)
    bottom = divmod(int(heat.argmin()), 64)
    assert heat[top] > 0 > heat[bottom]
    assert scored.target_mask(0)[top] and scored.target_mask(1)[bottom]
    rectified = explain(scored, x, "gradcam", target=target)
    assert float(rectified.attribution[0, 0][torch.from_numpy(scored.target_mask(1))].max()) == 0
