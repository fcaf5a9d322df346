"""Every registered method on a scored detector and a scored segmenter: a finite map of the input's size, or a
SaliencyError that says why the method cannot run on such a model (no attention, no CAM head), never another
exception. And explain_many's shared passes give each box the map its own call gives."""

from __future__ import annotations

import pytest
import torch

from explainers import METHODS, SaliencyError, explain, explain_many
from explainers.lrp.canonizers import DETECTOR_HEAD
from explainers.models.dense import dense_bundle
from explainers.targets import target_key

from ...dense_models import CATEGORIES, PlantedDetector, PlantedSegmenter, scene
from ..test_robustness import FAST  # each method's cheapest parameters, as the robustness tests run them

# methods that cannot run on these models, and the words of their reason: transformers only, and CAM, which needs
# global average pooling and one linear layer after its layer
REFUSED = {"cam": "global average pooling"}


@pytest.fixture(scope="module")
def scored():
    x = scene()
    detector = dense_bundle(PlantedDetector(), input_size=64, categories=CATEGORIES)
    segmenter = dense_bundle(PlantedSegmenter(), input_size=64, categories=CATEGORIES)
    regions = {t.label: t for t in segmenter.targets(segmenter.predict(x))}
    return {"detector": detector.scored(detector.targets(detector.predict(x)), x),
            "segmenter": segmenter.scored([regions[1], regions[2]], x)}, x


@pytest.mark.parametrize("kind", ["detector", "segmenter"])
@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_maps_a_dense_target_or_says_why_not(scored, kind, method):
    bundles, x = scored
    bundle = bundles[kind]
    info = METHODS[method]
    reason = info.unavailable_reason(bundle.model)
    try:
        result = explain(bundle, x, method, target=1, seed=0, **FAST.get(method, {}))
    except SaliencyError as exc:
        message = str(exc)
        if reason is not None:
            assert reason in message, message
            # LRP's rules end before a detector's box selection (the planted head's sigmoid, NMS and pooling)
            assert "needs a vision transformer" in message or (kind == "detector" and DETECTOR_HEAD in message)
        else:
            assert method in REFUSED and REFUSED[method] in message, message
        return
    except Exception as exc:  # noqa: BLE001 - the property: nothing but a SaliencyError escapes
        pytest.fail(f"{method} on a scored {kind} raised {type(exc).__name__}: {exc}")
    assert reason is None and method not in REFUSED
    attribution = result.attribution
    assert attribution.shape in ((1, 1, 64, 64), (1, 3, 64, 64)), attribution.shape
    assert torch.isfinite(attribution).all() and attribution.any()
    assert int(result.target[0]) == 1


def test_every_refusal_is_a_transformer_method_or_cam(scored):
    """So the parametrised test cannot pass by refusing everything: all but a few methods run."""
    bundles, _ = scored
    for kind, bundle in bundles.items():
        refused = {name for name, info in METHODS.items() if info.unavailable_reason(bundle.model) is not None}
        expected = {name for name, info in METHODS.items() if "attention" in info.requires}
        assert refused == (expected | {"lrp"} if kind == "detector" else expected)
        assert len(METHODS) - len(refused) - len(REFUSED) >= 25


class Forwards:
    """Counts the detector's forward passes (a hook on the network itself, which the scorer calls)."""

    def __init__(self, net: torch.nn.Module):
        self.count = 0
        self.handle = net.register_forward_hook(self)

    def __call__(self, module, args, output):
        self.count += 1


@pytest.mark.parametrize("kind", ["detector", "segmenter"])
def test_explain_many_shares_passes_across_targets_and_matches_single_calls(scored, kind):
    bundles, x = scored
    bundle = bundles[kind]
    net = bundle.model.net
    counter = Forwards(net)
    try:
        together = explain_many(bundle, x, ["vanilla", "gradcam"], [0, 1])
        shared = counter.count
        counter.count = 0
        for method in ("vanilla", "gradcam"):
            for target in (0, 1):
                alone = explain(bundle, x, method, target=target)
                mine = together[(method, target_key(target))]
                torch.testing.assert_close(mine.attribution, alone.attribution, atol=1e-6, rtol=1e-5)
                assert mine.attribution.any()
        separate = counter.count
    finally:
        counter.handle.remove()
    assert shared < separate, (shared, separate)  # one forward pass served both boxes and both methods
    assert not torch.equal(together[("vanilla", 0)].attribution, together[("vanilla", 1)].attribution)
