"""Faithfulness: deletion/insertion curves, the mask slider, ROAD against pytorch-grad-cam, the pointing games on the
digits with ground truth, and the faithfulness/evaluate commands.

Measured figures are printed (run with ``-s``) so a reader sees what the assertions were checked against.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

import explainers
from explainers import Cancelled, ParameterError, SaliencyError
from explainers.models import ModelBundle, affine_normalizer
from explainers.render import to_map
from explainers.trust.benchmark import latest_evaluation, saliency_maps
from explainers.trust.faithfulness import (
    faithfulness_curves,
    grid_region,
    make_substrate,
    mask_top,
    pixel_ranks,
    region_choices,
    region_ids,
)
from explainers.trust.pointing import pointing_game, region_masks
from explainers.trust.road import linear_impute, noisy_linear_impute, road_curves, road_removed

from ..conftest import sample_path
from .helpers import assert_untouched, small_convnet, snapshot

# ---------------------------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------------------------


def tiny_bundle(seed: int = 0) -> ModelBundle:
    """The seeded small CNN behind an ImageNet normalisation: a fast stand-in with a pixel space."""
    normalize, denormalize = affine_normalizer((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    return ModelBundle(name="tiny", model=small_convnet(seed), categories=[f"c{i}" for i in range(7)],
                       input_size=24, normalize=normalize, denormalize=denormalize)


def tiny_inputs(n: int = 3, size: int = 24, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def tiny_maps(n: int = 3, size: int = 24, seed: int = 1) -> dict[str, np.ndarray]:
    generator = np.random.default_rng(seed)
    return {"a": generator.random((n, size, size), dtype=np.float32),
            "b": generator.random((n, size, size), dtype=np.float32)}


@pytest.fixture(scope="module")
def cat(default_bundle):
    """The cat sample, its Grad-CAM and random-control maps (top-1 class) on the default model."""
    inputs = default_bundle.preprocess(explainers.open_image(sample_path("cat.png")))
    maps = {m: to_map(explainers.explain(default_bundle, inputs, m, "top1", seed=0).attribution[0])
            for m in ("gradcam", "random")}
    return inputs, maps


@pytest.fixture(scope="module")
def cat_curves(default_bundle, cat):
    inputs, maps = cat
    return faithfulness_curves(default_bundle, inputs, maps, "top1", steps=16)


# ---------------------------------------------------------------------------------------------------------
# Deletion and insertion on the default model
# ---------------------------------------------------------------------------------------------------------


def test_gradcam_insertion_auc_above_random_control(cat_curves):
    gradcam = cat_curves.curve("insertion", "gradcam").mean_auc
    random = cat_curves.curve("insertion", "random").mean_auc
    print(f"\ninsertion AUC (blur substrate, 16 steps) on cat: gradcam {gradcam:.3f}, random {random:.3f}")
    assert gradcam > random


def test_gradcam_deletion_auc_below_random_control(default_bundle, cat):
    """Deletion by regions of the CAM grid (32 px on 224), filled with the image mean: Grad-CAM's most salient
    regions sink the class faster than random regions do, for each of five random controls.

    Measured with black fill, Grad-CAM's 0.236 sits inside the spread of the five random controls (0.15-0.28): big
    black squares are themselves a strong cue, so that setting does not separate them.
    """
    inputs, maps = cat
    region = grid_region(inputs.shape[-2:])
    assert region == 32
    controls = {f"random{seed}": to_map(explainers.explain(default_bundle, inputs, "random", "top1",
                                                           seed=seed).attribution[0]) for seed in range(5)}
    curves = faithfulness_curves(default_bundle, inputs, {"gradcam": maps["gradcam"], **controls}, "top1",
                                 kinds=("deletion",), steps=16, substrate="mean", region=region)
    gradcam = curves.curve("deletion", "gradcam").mean_auc
    random = [curves.curve("deletion", name).mean_auc for name in controls]
    print(f"\ndeletion AUC (mean fill, 32 px regions, 16 steps) on cat: gradcam {gradcam:.3f}, "
          f"random controls {np.round(random, 3).tolist()}")
    assert gradcam < min(random)


@pytest.mark.xfail(strict=True, reason=(
    "measured: pixel-wise deletion with the black substrate gives Grad-CAM 0.29 and the random control 0.03 on the "
    "cat (blur: 0.30 vs 0.20, mean: 0.34 vs 0.18): scattered single pixels destroy the prediction within 5% "
    "removed, a distribution shift rather than evidence removed; regions (above) and ROAD's imputation (below) "
    "remove that artefact"
))
def test_pixelwise_deletion_puts_gradcam_below_random(cat_curves):
    gradcam = cat_curves.curve("deletion", "gradcam").mean_auc
    random = cat_curves.curve("deletion", "random").mean_auc
    print(f"\ndeletion AUC (black substrate, single pixels, 16 steps) on cat: gradcam {gradcam:.3f}, "
          f"random {random:.3f}")
    assert gradcam < random


def test_region_ranks_remove_whole_regions_in_order_of_their_mean():
    values = np.zeros((1, 5, 6), dtype=np.float32)
    values[0, 2:4, 2:4] = [[9, 0], [0, 0]]  # region (1, 1): mean 2.25, one bright pixel
    values[0, 0:2, 4:6] = 1.5  # region (0, 2): mean 1.5 everywhere
    values[0, 4, 0] = -8  # region (2, 0): the last row, a 1×2 region, mean -4
    ranks = pixel_ranks(values, region=2)[0].view(5, 6)
    assert sorted(ranks[2:4, 2:4].flatten().tolist()) == [0, 1, 2, 3]  # highest mean first, all four together
    assert ranks[2:4, 2:4].flatten().tolist() == [0, 1, 2, 3]  # raster order inside the region
    assert sorted(ranks[0:2, 4:6].flatten().tolist()) == [4, 5, 6, 7]
    assert sorted(ranks[4, 0:2].tolist()) == [28, 29]  # the lowest mean goes last
    assert sorted(ranks.flatten().tolist()) == list(range(30))
    # region 1 is the pixel ranking; a region as large as the image ranks in raster order
    assert torch.equal(pixel_ranks(values, region=1), pixel_ranks(values))
    assert pixel_ranks(values, region=6)[0].tolist() == list(range(30))
    assert region_ids((5, 6), 2).view(5, 6)[4].tolist() == [6, 6, 7, 7, 8, 8]


def test_grid_region_and_its_choices():
    assert grid_region((224, 224)) == 32 and grid_region((32, 32)) == 5 and grid_region((3, 9)) == 1
    assert region_choices((224, 224)) == [1, 8, 16, 32]
    assert region_choices((32, 32)) == [1, 2, 5]


def test_gradcam_road_morf_below_random_control(default_bundle, cat):
    inputs, maps = cat
    road = road_curves(default_bundle, inputs, maps, "top1", orders=("morf",), fractions=(0.2, 0.5, 0.8), seed=0)
    gradcam, random = road.curve("road_morf", "gradcam"), road.curve("road_morf", "random")
    print(f"\nROAD MoRF on cat (fractions 0, .2, .5, .8): gradcam {np.round(gradcam.probability[0], 3)}, "
          f"random {np.round(random.probability[0], 3)}")
    assert gradcam.mean_auc < random.mean_auc


def test_curve_ends_are_the_image_and_the_substrate(default_bundle, cat, cat_curves):
    inputs, _ = cat
    clean = explainers.class_probabilities(default_bundle, inputs)[0]
    target = int(clean.argmax())
    for method in ("gradcam", "random"):
        deletion, insertion = cat_curves.curve("deletion", method), cat_curves.curve("insertion", method)
        assert deletion.classes.tolist() == [target]
        np.testing.assert_allclose(deletion.probability[0, 0], clean[target], rtol=1e-5)
        np.testing.assert_allclose(insertion.probability[0, -1], clean[target], rtol=1e-5)
        for curve, kind in ((deletion, "black"), (insertion, "blur")):
            end = 0 if curve.kind == "insertion" else -1
            substrate = explainers.class_probabilities(default_bundle, make_substrate(kind, inputs, default_bundle))
            np.testing.assert_allclose(curve.probability[0, end], substrate[0, target], rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(deletion.fractions, np.arange(17) / 16)


# ---------------------------------------------------------------------------------------------------------
# Curve properties on a small model
# ---------------------------------------------------------------------------------------------------------


class LinearScore(nn.Module):
    """logits = [Σ w·x, 0]: removing a pixel changes the first logit by exactly its contribution."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.weight = nn.Parameter(weight)

    def forward(self, x):
        score = (x * self.weight).flatten(1).sum(1)
        return torch.stack([score, torch.zeros_like(score)], 1)


def test_contribution_order_is_the_best_deletion_order():
    """For a linear score the map w·(x − substrate) is the optimal deletion order: its logit curve lies at or
    below every other order's at every step."""
    generator = torch.Generator().manual_seed(3)
    inputs = torch.randn(2, 3, 12, 12, generator=generator)
    model = LinearScore(torch.randn(1, 3, 12, 12, generator=generator))
    substrate = make_substrate("mean", inputs)
    contribution = ((inputs - substrate) * model.weight.detach()).sum(1).numpy()
    maps = {"oracle": contribution, "reverse": -contribution, "random": np.random.default_rng(0).random((2, 12, 12))}
    curves = faithfulness_curves(model, inputs, maps, 0, kinds=("deletion",), steps=12, substrate="mean")
    oracle = curves.curve("deletion", "oracle").logit
    for other in ("reverse", "random"):
        assert (oracle <= curves.curve("deletion", other).logit + 1e-4).all()
    assert (curves.curve("deletion", "oracle").logit_auc < curves.curve("deletion", "random").logit_auc).all()
    assert (curves.curve("deletion", "random").logit_auc < curves.curve("deletion", "reverse").logit_auc).all()
    # the end of the curve is the substrate: the logit of the mean image
    np.testing.assert_allclose(oracle[:, -1], model(substrate)[:, 0].detach().numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("substrate", ["black", "blur", "mean"])
def test_substrate_is_what_removed_pixels_become(substrate):
    bundle = tiny_bundle()
    inputs = tiny_inputs()
    maps = tiny_maps()
    result = mask_top(bundle, inputs, maps["a"], 0.3, substrate)
    fill = make_substrate(substrate, inputs, bundle)
    removed = torch.from_numpy(result.removed)[:, None].expand_as(inputs)
    assert int(result.removed[0].sum()) == round(0.3 * 24 * 24)
    torch.testing.assert_close(result.inputs[removed], fill[removed])
    torch.testing.assert_close(result.inputs[~removed], inputs[~removed])
    # the removed pixels are the map's top ones
    for row in range(len(inputs)):
        values = maps["a"][row]
        assert values[result.removed[row]].min() >= values[~result.removed[row]].max()
    if substrate == "black":  # black is pixel value 0 through the bundle's normalisation
        torch.testing.assert_close(bundle.denormalize(fill), torch.zeros_like(fill), atol=1e-6, rtol=0)
        assert result.pixels is not None and (result.pixels[removed.permute(0, 2, 3, 1).numpy()] == 0).all()


def test_mask_slider_matches_the_deletion_curve():
    bundle = tiny_bundle()
    inputs, maps = tiny_inputs(), tiny_maps()
    curves = faithfulness_curves(bundle, inputs, maps, "top1", kinds=("deletion",), steps=10, substrate="blur")
    for step in (3, 7):
        masked = mask_top(bundle, inputs, maps["b"], step / 10, "blur", target="top1")
        np.testing.assert_allclose(masked.target_probability, curves.curve("deletion", "b").probability[:, step],
                                   rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(masked.original_probability, curves.curve("deletion", "b").probability[:, 0],
                                   rtol=1e-5)
    json.dumps(masked.to_dict(), allow_nan=False)


def test_bare_module_with_a_pixel_substrate_says_so():
    model = small_convnet()
    with pytest.raises(ParameterError, match="ModelBundle"):
        faithfulness_curves(model, tiny_inputs(), tiny_maps(), 0, steps=4, substrate="black")
    with pytest.raises(ParameterError, match="substrate must be one of"):
        faithfulness_curves(model, tiny_inputs(), tiny_maps(), 0, steps=4, substrate="grey")
    # blur and mean are affine-equivariant, so a bare module may use them
    faithfulness_curves(model, tiny_inputs(), tiny_maps(), 0, steps=4, substrate="mean")


def test_maps_of_the_wrong_shape_are_refused():
    with pytest.raises(ParameterError, match=r"one \[H, W\] map per image"):
        faithfulness_curves(tiny_bundle(), tiny_inputs(), {"a": np.zeros((3, 3, 24, 24))}, 0, steps=4)


def test_batch_size_does_not_change_curves():
    bundle, inputs, maps = tiny_bundle(), tiny_inputs(), tiny_maps()
    runs = [faithfulness_curves(bundle, inputs, maps, ["top1", 2], steps=9, batch_size=b) for b in (1, 7, 500)]
    for other in runs[1:]:
        for mine, theirs in zip(runs[0].curves, other.curves):
            assert (mine.kind, mine.method, mine.target) == (theirs.kind, theirs.method, theirs.target)
            np.testing.assert_allclose(theirs.probability, mine.probability, rtol=1e-5, atol=1e-7)
            np.testing.assert_allclose(theirs.logit, mine.logit, rtol=1e-5, atol=1e-5)


class Counted(nn.Module):
    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner
        self.rows = 0

    def forward(self, x):
        self.rows += len(x)
        return self.inner(x)


def test_targets_and_methods_share_passes():
    inputs, maps = tiny_inputs(), tiny_maps()
    counted = Counted(small_convnet())
    both = faithfulness_curves(counted, inputs, maps, [0, 3, "top1"], steps=6, substrate="mean")
    # one pass for the image and one per substrate, then (steps - 1) per method, kind and image: no pass per target
    assert counted.rows == both.model_passes == 3 * (1 + 1) + 2 * 2 * 5 * 3
    alone = faithfulness_curves(small_convnet(), inputs, maps, 3, steps=6, substrate="mean")
    for curve in alone.curves:
        shared = both.curve(curve.kind, curve.method, "3")
        np.testing.assert_allclose(shared.probability, curve.probability, rtol=1e-5, atol=1e-7)
    assert {c.target for c in both.curves} == {"0", "3", "top1"}
    json.dumps(both.to_dict(), allow_nan=False)


def test_auc_is_the_trapezoid_over_0_1():
    bundle, inputs, maps = tiny_bundle(), tiny_inputs(), tiny_maps()
    curve = faithfulness_curves(bundle, inputs, maps, 0, kinds=("deletion",), steps=5).curve("deletion", "a")
    p = curve.probability
    manual = (p[:, 0] / 2 + p[:, 1:-1].sum(1) + p[:, -1] / 2) / 5
    np.testing.assert_allclose(curve.auc, manual, rtol=1e-12)


def test_progress_counts_passes_and_cancel_leaves_the_model_as_it_was():
    model = small_convnet().train()  # found in train mode: must be left in train mode
    before = snapshot(model)
    seen = []
    faithfulness_curves(model, tiny_inputs(), tiny_maps(), 0, steps=5, substrate="mean", batch_size=4,
                        progress=lambda done, total: seen.append((done, total)))
    total = 3 * 2 + 2 * 2 * 4 * 3
    assert seen[-1] == (total, total) and all(b[0] >= a[0] for a, b in zip(seen, seen[1:]))
    assert_untouched(model, before, training=True)

    calls = []
    with pytest.raises(Cancelled):
        faithfulness_curves(model, tiny_inputs(), tiny_maps(), 0, steps=5, substrate="mean", batch_size=4,
                            progress=lambda done, total: calls.append(done) or len(calls) < 3)
    assert len(calls) == 3
    assert_untouched(model, before, training=True)


def test_ties_keep_raster_order():
    ranks = pixel_ranks(np.array([[[1.0, 2.0], [2.0, 1.0]]], dtype=np.float32))
    assert ranks.tolist() == [[2, 0, 1, 3]]


# ---------------------------------------------------------------------------------------------------------
# ROAD
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("solver", ["multigrid", "sparse", "automatic"])
def test_linear_imputation_solves_its_system(monkeypatch, solver):
    """Every removed pixel ends as the weighted mean of its in-image neighbours; kept pixels stay; rows are
    independent of their batch; with nothing kept the image becomes 0. Scattered removals, and blobs inside the
    image and at its corner (solved on the box around them), by either solver."""
    import explainers.trust.road as road

    if solver != "automatic":
        monkeypatch.setattr(road, "SPARSE_COST", 0 if solver == "multigrid" else 10**9)
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
    pytest.importorskip("scipy")
    from pytorch_grad_cam.metrics.road import ROADLeastRelevantFirst, ROADMostRelevantFirst
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget, ClassifierOutputTarget

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


# ---------------------------------------------------------------------------------------------------------
# Pointing games
# ---------------------------------------------------------------------------------------------------------


def test_pointing_game_rules():
    box = (2, 1, 5, 4)  # x0, y0, x1, y1: columns 2-4, rows 1-3
    inside, outside = np.zeros((8, 8)), np.zeros((8, 8))
    inside[2, 3], outside[6, 6] = 1.0, 1.0
    near = np.zeros((8, 8))
    near[5, 3] = 1.0  # two rows below the box
    result = pointing_game(np.stack([inside, outside, near]), box)
    assert result.hit.tolist() == [1.0, 0.0, 0.0]
    assert pointing_game(near, box, tolerance=2).hit.tolist() == [1.0]
    assert result.point.tolist() == [[2, 3], [6, 6], [5, 3]]
    np.testing.assert_allclose(result.area, 9 / 64)
    np.testing.assert_allclose(result.energy, [1.0, 0.0, 0.0])
    # ties: the share of maximal pixels inside; a constant map scores the area share on both games
    constant = pointing_game(np.ones((8, 8)), box)
    np.testing.assert_allclose([constant.hit[0], constant.energy[0]], [9 / 64, 9 / 64])
    ramp = np.arange(64, dtype=np.float64).reshape(8, 8)
    mask = region_masks(box, 1, (8, 8))[0]
    np.testing.assert_allclose(pointing_game(ramp, box).energy[0], ramp[mask].sum() / ramp.sum())
    # negative values carry no energy; a box and its mask give the same answer
    signed = ramp - 40
    np.testing.assert_allclose(pointing_game(signed, mask).energy, pointing_game(signed, box).energy)
    np.testing.assert_allclose(pointing_game(signed, box).energy[0],
                               np.maximum(signed, 0)[mask].sum() / np.maximum(signed, 0).sum())
    assert pointing_game(np.zeros((8, 8)), box).energy[0] == pytest.approx(9 / 64)
    json.dumps(result.to_dict(), allow_nan=False)


def test_pointing_game_on_200_digits():
    """Zhang et al.'s pointing game on 200 held-out digits with their ink boxes: Grad-CAM and occlusion point into
    the box at least 80% of the time; the random control (one independent map per image) scores near the chance
    level, the boxes' mean area share (within 4 binomial standard errors)."""
    from explainers.digits.data import make_digits
    from explainers.trust.benchmark import DIGITS_BATCH_SIZE, digits_inputs

    bundle = explainers.load_model("lenet_digits")
    data = make_digits(200, seed=10_000)
    inputs = digits_inputs(data.images, bundle)
    maps, seconds, params = saliency_maps(bundle, inputs, ("gradcam", "occlusion", "random"),
                                          torch.from_numpy(data.labels), seed_per_image=True,
                                          batch_size=DIGITS_BATCH_SIZE)
    scores = {m: pointing_game(maps[m], data.boxes) for m in maps}
    chance = scores["random"].chance
    print("\npointing game on 200 digits (boxes): " + ", ".join(
        f"{m} {s.accuracy:.3f} (energy {s.energy_share:.3f}, {seconds[m]:.2f} s)" for m, s in scores.items())
        + f"; chance {chance:.3f}; occlusion {params['occlusion']}")
    assert scores["gradcam"].accuracy >= 0.8
    assert scores["occlusion"].accuracy >= 0.8
    assert abs(scores["random"].accuracy - chance) <= 4 * math.sqrt(chance * (1 - chance) / 200)
    assert abs(scores["random"].energy_share - chance) <= 0.02


# ---------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------


def test_cli_faithfulness_writes_curves_and_auc_table(tmp_path, capsys):
    from explainers.cli.main import main

    status = main(["faithfulness", str(sample_path("cat.png")), "--methods", "gradcam,random", "--steps", "4",
                   "--out", str(tmp_path), "--quiet"])
    assert status == 0
    record = json.loads((tmp_path / "cat_faithfulness.json").read_text())
    assert {(c["kind"], c["method"]) for c in record["curves"]} == {
        (k, m) for k in ("deletion", "insertion") for m in ("gradcam", "random")}
    for curve in record["curves"]:
        p = np.array(curve["probability"])
        assert curve["fractions"] == [0, 0.25, 0.5, 0.75, 1]
        np.testing.assert_allclose(curve["auc"], np.trapezoid(p, curve["fractions"], axis=-1))
    table = (tmp_path / "cat_faithfulness.csv").read_text().splitlines()
    assert table[0] == "kind,method,target,n,auc,logit_auc" and len(table) == 5
    assert "deletion" in capsys.readouterr().out


def test_cli_evaluate_and_latest_evaluation(tmp_path):
    from explainers.cli.main import main

    assert latest_evaluation(tmp_path) is None
    for n in (12, 16):
        assert main(["evaluate", "--n", str(n), "--methods", "gradcam", "random", "--steps", "4", "--out",
                     str(tmp_path), "--quiet"]) == 0
    latest = latest_evaluation(tmp_path)
    assert latest.settings["n"] == 16 and latest.model == "lenet_digits"
    files = sorted(p.name for p in latest.path.iterdir())
    assert files == ["gradcam.csv", "random.csv", "run.json", "summary.csv"]
    summary = (latest.path / "summary.csv").read_text().splitlines()
    assert summary[0].startswith("method,n,pointing_game,energy_pointing_game,chance,deletion_auc,insertion_auc")
    gradcam = latest.method("gradcam")
    assert gradcam.n == 16 and set(np.unique(gradcam.rows["pointing_hit"])) <= {0.0, 1.0}
    assert 0 <= gradcam.summary()["deletion_auc"] <= 1 and gradcam.summary()["explain_s"] > 0
    json.dumps(latest.to_dict(), allow_nan=False)


@pytest.mark.parametrize("argv, words", [
    (["evaluate", "--model", "efficientnet_lite0", "--out", "OUT"], ("ground-truth", "efficientnet_lite0")),
    (["faithfulness", "CAT", "--methods", "gradkam", "--out", "OUT"], ("gradkam",)),
    (["faithfulness", "CAT", "--methods", "gradcam", "--param", "vanilla.x=1", "--out", "OUT"], ("vanilla",)),
    (["roar", "--methods", "random", "--k", "150"], ("percentages",)),
])
def test_cli_user_errors_are_one_line(tmp_path, capsys, argv, words):
    from explainers.cli.main import main

    argv = [str(tmp_path) if a == "OUT" else str(sample_path("cat.png")) if a == "CAT" else a for a in argv]
    try:
        status = main(argv)
    except SystemExit as exit_:  # argparse's own errors
        status = exit_.code
    assert status == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ")
    for word in words:
        assert word in lines[0]


def test_errors_are_saliency_errors():
    with pytest.raises(SaliencyError):
        mask_top(tiny_bundle(), tiny_inputs(), tiny_maps()["a"], 1.5)
    with pytest.raises(SaliencyError):
        faithfulness_curves(tiny_bundle(), tiny_inputs(), tiny_maps(), "3 vs 4", steps=3)
