"""Deletion and insertion curves (Petsiuk et al. 2018, arXiv:1806.07421) on the default model and on small ones, the
region ranking and the mask slider. ROAD is test_road.py's, the pointing games test_pointing.py's, the commands
tests/explainers/cli/test_faithfulness.py's.

Measured figures are printed (run with ``-s``) so a reader sees what the assertions were checked against.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

import explainers
from explainers import Cancelled, ParameterError, SaliencyError
from explainers.models import ModelBundle
from explainers.render import to_map
from explainers.trust.faithfulness import (
    TRUSTED_SUBSTRATE,
    Curve,
    CurveSet,
    best_methods,
    control_ranks_best,
    faithfulness_curves,
    grid_region,
    make_substrate,
    mask_top,
    pixel_ranks,
    region_choices,
    region_ids,
)

from ..helpers import assert_untouched, small_convnet, snapshot, tiny_bundle

# ---------------------------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------------------------


def small_bundle() -> ModelBundle:
    """The seeded small CNN behind an ImageNet normalisation, on 24-pixel inputs: a fast stand-in with a pixel
    space."""
    return tiny_bundle(small_convnet(), size=24)


def tiny_inputs(n: int = 3, size: int = 24, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def tiny_maps(n: int = 3, size: int = 24, seed: int = 1) -> dict[str, np.ndarray]:
    generator = np.random.default_rng(seed)
    return {"a": generator.random((n, size, size), dtype=np.float32),
            "b": generator.random((n, size, size), dtype=np.float32)}


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
    bundle = small_bundle()
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
    bundle = small_bundle()
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
        faithfulness_curves(small_bundle(), tiny_inputs(), {"a": np.zeros((3, 3, 24, 24))}, 0, steps=4)


def test_batch_size_does_not_change_curves():
    bundle, inputs, maps = small_bundle(), tiny_inputs(), tiny_maps()
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
    bundle, inputs, maps = small_bundle(), tiny_inputs(), tiny_maps()
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


def test_errors_are_saliency_errors():
    with pytest.raises(SaliencyError):
        mask_top(small_bundle(), tiny_inputs(), tiny_maps()["a"], 1.5)
    with pytest.raises(SaliencyError):
        faithfulness_curves(small_bundle(), tiny_inputs(), tiny_maps(), "3 vs 4", steps=3)


# ---------------------------------------------------------------------------------------------------------
# Which method ranks best (the page's note when the random control does)
# ---------------------------------------------------------------------------------------------------------


def _curve_set(aucs: dict[tuple[str, str], float]) -> CurveSet:
    """Curves whose AUC is the given value: a flat probability curve at that height over [0, 1]."""
    fractions = np.linspace(0.0, 1.0, 5)
    curves = [Curve(kind=kind, method=method, target="top1", classes=np.zeros(1, dtype=np.int64),
                    fractions=fractions, probability=np.full((1, 5), value), logit=np.zeros((1, 5)))
              for (kind, method), value in aucs.items()]
    return CurveSet(curves=curves, substrates={}, model_passes=0, elapsed_s=0.0)


def test_best_methods_follow_each_kinds_faithful_direction():
    curves = _curve_set({("deletion", "gradcam"): 0.2, ("deletion", "random"): 0.4,
                         ("insertion", "gradcam"): 0.3, ("insertion", "random"): 0.6})
    road = _curve_set({("road_morf", "gradcam"): 0.5, ("road_morf", "random"): 0.1,
                       ("road_lerf", "gradcam"): 0.9, ("road_lerf", "random"): 0.7})
    assert curves.curve("deletion", "gradcam").mean_auc == pytest.approx(0.2)  # the flat curves' areas
    best = best_methods([curves, road])
    assert best == {"deletion": ["gradcam"], "insertion": ["random"], "road_morf": ["random"],
                    "road_lerf": ["gradcam"]}
    assert control_ranks_best([curves, road]) == ["insertion", "road_morf"]
    assert control_ranks_best(curves, control="gradcam") == ["deletion"]


def test_control_ranks_best_on_ties_and_never_alone():
    tied = _curve_set({("deletion", "gradcam"): 0.25, ("deletion", "random"): 0.25})
    assert control_ranks_best(tied) == ["deletion"]  # as good as the best is no better than noise
    beaten = _curve_set({("deletion", "vanilla"): 0.1, ("deletion", "random"): 0.12, ("deletion", "gradcam"): 0.3})
    assert control_ranks_best(beaten) == []
    assert best_methods(_curve_set({("deletion", "random"): 0.1})) == {}  # one method ranks nothing
    with pytest.raises(ParameterError, match="no faithful direction"):
        best_methods(_curve_set({("sideways", "a"): 0.1, ("sideways", "b"): 0.2}))


def test_pixelwise_black_deletion_crowns_the_random_control_and_the_trusted_setting_does_not(default_bundle, cat,
                                                                                            cat_curves):
    """The page's note on real curves: with single black pixels the random control deletes best on the cat (the
    artefact, xfail above); with the trusted default (regions of the CAM grid, mean fill) Grad-CAM does."""
    inputs, maps = cat
    assert "deletion" in control_ranks_best(cat_curves)
    trusted = faithfulness_curves(default_bundle, inputs, {"gradcam": maps["gradcam"], "random": maps["random"]},
                                  "top1", kinds=("deletion",), steps=16, substrate=TRUSTED_SUBSTRATE,
                                  region=grid_region(inputs.shape[-2:]))
    assert best_methods(trusted) == {"deletion": ["gradcam"]}
    assert control_ranks_best(trusted) == []
