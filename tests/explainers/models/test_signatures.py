"""Guessing the architecture of a state dict from its key names and shapes (explainers.models.signatures)."""

from __future__ import annotations

import pytest
import torch
import torchvision

from explainers.errors import ModelLoadError
from explainers.models.signatures import ArchitectureMismatchError, known_signatures, matching_architectures
from explainers.models.user import load_user_model


def _state(name: str, num_classes: int, seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return torchvision.models.get_model(name, weights=None, num_classes=num_classes).state_dict()


@pytest.mark.parametrize(("name", "num_classes"), [("mobilenet_v2", 1000), ("mobilenet_v2", 4), ("resnet18", 1000),
                                                   ("resnet18", 7)])
def test_a_state_dict_is_recognised_whatever_its_class_count(name, num_classes):
    state = _state(name, num_classes, seed=num_classes)
    matches = matching_architectures(state)
    assert [m.architecture for m in matches] == [name]
    assert matches[0].keys == len(state) and matches[0].num_classes == num_classes
    prefixed = {f"module.{k}": v for k, v in state.items()}  # DataParallel's prefix is undone
    assert [m.architecture for m in matching_architectures(prefixed)] == [name]


def test_a_changed_shape_or_an_extra_key_matches_nothing():
    state = dict(_state("resnet18", 10, seed=1))
    assert matching_architectures(dict(state, **{"extra.bias": torch.zeros(2)})) == []
    state["conv1.weight"] = torch.zeros(64, 3, 5, 5)
    assert matching_architectures(state) == []


def test_the_index_covers_every_torchvision_classifier_without_weights():
    names = {s.architecture for s in known_signatures()}
    assert set(torchvision.models.list_models(module=torchvision.models)) <= names
    assert "efficientnet_lite0" in names
    regnet = next(s for s in known_signatures() if s.architecture == "regnet_x_400mf")  # built on the CPU's maths
    assert regnet.shapes == {k: tuple(v.shape) for k, v in _state("regnet_x_400mf", 1000, 0).items()}


def test_mobilenet_v2_weights_picked_as_resnet18_say_what_they_look_like(tmp_path):
    state = _state("mobilenet_v2", 4, seed=2)
    torch.save(state, tmp_path / "mine.bin")  # .bin: a torch-saved state dict, as the README promises
    with pytest.raises(ArchitectureMismatchError) as caught:
        load_user_model(tmp_path / "mine.bin", "resnet18")
    message = str(caught.value)
    assert caught.value.guesses == ("mobilenet_v2",)
    assert message.startswith(f"mine.bin does not fit 'resnet18': this looks like 'mobilenet_v2' (all {len(state)} "
                              "keys match; 4 classes)")
    assert isinstance(caught.value, ModelLoadError)
    listed = message.split("missing key(s): ", 1)[1].split(" and ", 1)[0].split(", ")
    assert listed == sorted(listed) and len(listed) == 5  # sorted, and short
    assert f"{len(state)} unexpected key(s)" in message
    with pytest.raises(ArchitectureMismatchError, match="this looks like 'mobilenet_v2'"):
        load_user_model(tmp_path / "mine.bin")  # no architecture at all
    bundle = load_user_model(tmp_path / "mine.bin", caught.value.guesses[0])  # and the offer loads
    assert len(bundle.categories) == 4
    x = torch.rand(1, 3, 224, 224)
    reference = torchvision.models.mobilenet_v2(num_classes=4).eval()
    reference.load_state_dict(state)
    with torch.no_grad():
        torch.testing.assert_close(bundle.model(x), reference(x), atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ["googlenet", "inception_v3"])
def test_auxiliary_heads_are_heads_too(name):
    """A fine-tuned GoogLeNet or Inception v3 keeps its auxiliary classifiers: their class count is free as well."""
    model = getattr(torchvision.models, name)(num_classes=4, aux_logits=True, init_weights=False)
    assert [m.architecture for m in matching_architectures(model.state_dict())][:1] == [name]
