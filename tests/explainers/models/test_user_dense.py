"""A user's own detector or segmenter (torchvision's output conventions) through load_user_model: a trusted
TorchScript archive, or a state dict for one of torchvision's detection / segmentation architectures; a model of
neither convention is refused with what was expected and what came."""

from __future__ import annotations

import warnings

import pytest
import torch

import explainers
from explainers import ModelLoadError, load_user_model
from explainers.dense.outputs import DETECTION, SEGMENTATION
from explainers.models import dense_zoo, user
from explainers.models.architectures import architectures, preprocessing_defaults, split
from explainers.models.dense import DenseBundle, dense_bundle
from explainers.render import to_map

from ...dense_models import CATEGORIES, NeitherConvention, PlantedDetector, PlantedSegmenter, scene

pytestmark = [
    pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning"),
    pytest.mark.filterwarnings("ignore::explainers.models.user.TrustedCodeWarning"),
]


def _scripted(module: torch.nn.Module, path) -> object:
    with warnings.catch_warnings():  # torch deprecates TorchScript (FutureWarning) but still saves it
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.script(module.eval()), path)
    return path


def _peak(result) -> tuple[int, int]:
    heat = to_map(result.attribution[0])
    return divmod(int(heat.argmax()), heat.shape[-1])


def _inside(box, point) -> bool:
    return box[0] <= point[0] <= box[2] and box[1] <= point[1] <= box[3]


def test_a_scripted_detector_loads_as_a_dense_bundle_and_is_explained(tmp_path, monkeypatch):
    monkeypatch.delenv(user.TRUST_ENV, raising=False)
    path = _scripted(PlantedDetector(), tmp_path / "detector.pt")
    with pytest.raises(ModelLoadError, match="TorchScript"):  # still refused unless trusted
        load_user_model(path)
    bundle = load_user_model(path, trust_code=True, input_size=64, labels=CATEGORIES)
    assert isinstance(bundle, DenseBundle) and bundle.kind == DETECTION and bundle.categories == CATEGORIES
    assert bundle.layers == [] and bundle.default_layer is None and bundle.name.startswith("user:detector:")
    assert any("Hooks do not work" in note for note in bundle.notes)
    x = scene()
    found = bundle.predict(x).detections
    assert [d.label for d in found] == [1, 2]  # the red box and the blue one, nothing else above 0.5
    assert _inside(found[0].box, (16, 18)) and _inside(found[1].box, (46, 45))
    eager = dense_bundle(PlantedDetector(), input_size=64, categories=CATEGORIES).predict(x).detections
    for ours, theirs in zip(found, eager, strict=True):
        torch.testing.assert_close(torch.tensor(ours.box), torch.tensor(theirs.box))
    scored = bundle.scored(bundle.targets(bundle.predict(x)), x)
    assert scored.model.supports_hooks is False  # the scripted net refuses hooks, and so does its scorer
    offered = explainers.available_methods(scored.model)
    assert "vanilla" in offered and "gradcam" not in offered
    result = explainers.explain(scored, x, "vanilla", target=0)
    peak = _peak(result)
    assert scored.target_mask(0)[peak] and not scored.target_mask(1)[peak]


def test_a_scripted_segmenter_loads_as_a_dense_bundle(tmp_path):
    path = _scripted(PlantedSegmenter(), tmp_path / "segmenter.pt")
    bundle = load_user_model(path, trust_code=True, input_size=64)
    assert bundle.kind == SEGMENTATION and bundle.categories == ["class 0", "class 1", "class 2"]
    assert any("No mean and std given" in note for note in bundle.notes)
    x = scene()
    prediction = bundle.predict(x)
    assert set(prediction.shares) == {0, 1, 2}
    targets = {t.label: t for t in bundle.targets(prediction)}
    scored = bundle.scored([targets[1]], x)
    result = explainers.explain(scored, x, "vanilla", target=0)
    peak = _peak(result)
    assert scored.target_mask(0)[peak]
    with pytest.raises(ModelLoadError, match="expected 3 class names"):
        load_user_model(path, trust_code=True, input_size=64, labels=["a", "b"])
    given = load_user_model(path, trust_code=True, input_size=64, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    torch.testing.assert_close(given.normalize(torch.ones(1, 3, 2, 2)), torch.full((1, 3, 2, 2), 2.0))


def test_a_scripted_model_of_neither_convention_says_what_was_expected(tmp_path):
    path = _scripted(NeitherConvention(), tmp_path / "neither.pt")
    with pytest.raises(ModelLoadError) as caught:
        load_user_model(path, trust_code=True, input_size=32)
    message = str(caught.value)
    assert "'boxes'" in message and "'out'" in message and "logits" in message  # the three conventions
    assert "a dict with keys features" in message  # and what came


def test_scripted_torchvision_detector_is_fed_a_list(tmp_path):
    """A scripted torchvision detector takes List[Tensor] and returns (losses, detections)."""
    torch.manual_seed(0)
    net = dense_zoo.construct("fasterrcnn_mobilenet_v3_large_320_fpn", num_classes=3).eval()
    net.roi_heads.score_thresh = 0.0
    path = _scripted(net, tmp_path / "frcnn.pt")
    bundle = load_user_model(path, trust_code=True, input_size=96)
    assert bundle.kind == DETECTION and bundle.model.takes_list
    bundle.score_threshold = 0.0
    found = bundle.predict(torch.rand(1, 3, 96, 96)).detections
    assert found and all(d.label in (1, 2) for d in found)


def _seeded_state(name: str, num_classes: int | None = None) -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    return dense_zoo.construct(name, num_classes).state_dict()


def test_a_detector_state_dict_loads_with_its_own_class_count(tmp_path):
    name = "fasterrcnn_mobilenet_v3_large_320_fpn"
    assert name in architectures() and "lraspp_mobilenet_v3_large" in architectures()
    assert "resnet18" in architectures() and split(name) == ("dense", name)
    assert preprocessing_defaults(name)["input_size"] == 320
    path = tmp_path / "det.pt"
    torch.save({f"module.{k}": v for k, v in _seeded_state(name, 5).items()}, path)  # DataParallel's prefix too
    labels = ["__background__", "cat", "dog", "bird", "fish"]
    bundle = load_user_model(path, architecture=name, labels=labels)
    assert isinstance(bundle, DenseBundle) and bundle.kind == DETECTION and bundle.categories == labels
    assert bundle.model.roi_heads.box_predictor.cls_score.out_features == 5 and bundle.input_size == 320
    assert bundle.default_layer.startswith("backbone.") and bundle.name.startswith("user:det:")
    plain = load_user_model(path, architecture=name, input_size=160)
    assert plain.categories == [f"class {i}" for i in range(5)] and plain.input_size == 160
    with pytest.raises(ModelLoadError, match="expected 5 class names"):
        load_user_model(path, architecture=name, labels=["a", "b"])


def test_a_segmenter_state_dict_loads_and_takes_the_given_normalisation(tmp_path):
    name = "lraspp_mobilenet_v3_large"
    assert preprocessing_defaults(name)["input_size"] == 520
    path = tmp_path / "seg.pt"
    torch.save(_seeded_state(name, 4), path)
    bundle = load_user_model(path, architecture=name, input_size=96, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    assert bundle.kind == SEGMENTATION and len(bundle.categories) == 4 and bundle.input_size == 96
    torch.testing.assert_close(bundle.normalize(torch.ones(1, 3, 2, 2)), torch.ones(1, 3, 2, 2))
    prediction = bundle.predict(torch.rand(1, 3, 96, 96))
    assert prediction.classes.shape == (96, 96)


def test_a_damaged_dense_state_dict_names_the_keys(tmp_path):
    name = "lraspp_mobilenet_v3_large"
    state = _seeded_state(name)
    state.pop(next(iter(state)))
    path = tmp_path / "broken.pt"
    torch.save(state, path)
    with pytest.raises(ModelLoadError, match="Missing key"):
        load_user_model(path, architecture=name)
