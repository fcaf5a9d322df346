"""The Models page: a user's own weights and class names load into their session, become the sidebar's model,
are explained on Explore, stay invisible to other sessions, and bad files give a message, never a traceback."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from safetensors.torch import save as save_safetensors

import explainers
from explainers.models import DEFAULT_MODEL
from tests.conftest import sample_path
from tests.ui.helpers import EXPLORE, heatmap, selection, start, texts
from ui import state

PAGE = "app_pages/models.py"
LABELS = ["apple", "banana", "cherry", "damson"]


@pytest.fixture(scope="module")
def weights() -> tuple[torch.nn.Module, bytes]:
    torch.manual_seed(3)
    model = torchvision.models.mobilenet_v3_small(num_classes=len(LABELS)).eval()
    return model, save_safetensors(model.state_dict())


def _open() -> object:
    at = start(page=PAGE)
    assert at.title[0].value == "Your model"
    return at


def _load(at, data: bytes, name: str = "fruit.safetensors", architecture: str | None = "mobilenet_v3_small",
          labels: bytes | None = None):
    at.file_uploader(key=state.MODELS_FILE).set_value((name, data, "application/octet-stream")).run()
    assert not at.exception
    if architecture is not None:
        at.selectbox(key=state.MODELS_ARCH).set_value(architecture).run()
    if labels is not None:
        at.file_uploader(key=state.MODELS_LABELS).set_value(("labels.txt", labels, "text/plain")).run()
    at.button(key=state.MODELS_LOAD).click().run()
    assert not at.exception, at.exception
    return at


def test_own_weights_become_the_model_explained_on_explore(weights):
    module, data = weights
    at = _open()
    at.file_uploader(key=state.MODELS_FILE).set_value(("fruit.safetensors", data, "application/octet-stream")).run()
    assert at.button(key=state.MODELS_LOAD).disabled  # a state dict needs its architecture first
    assert any("Pick the architecture" in i.value for i in at.main.info)
    _load(at, data, labels="\n".join(LABELS).encode() + b"\n")
    model_id = at.session_state[state.MODEL]
    assert model_id.startswith("user:fruit:"), model_id
    assert not at.main.error
    assert any("4 classes (apple, banana, cherry, damson)" in t for t in texts(at))

    at.switch_page(EXPLORE).run()
    assert not at.exception and not at.main.error
    chosen = selection(at)
    assert chosen.model == model_id and chosen.bundle.categories == LABELS
    # the bundle predicts what the original module predicts on the same input
    with torch.no_grad():
        expected = module(chosen.inputs.cpu()).softmax(-1)[0].numpy()
    got = explainers.class_probabilities(chosen.bundle, chosen.inputs)[0]
    np.testing.assert_allclose(got, expected, atol=1e-5)
    top = LABELS[int(expected.argmax())]
    assert heatmap(at).title == f"Vanilla gradient · {top}"
    assert "model=" not in "&".join(f"{k}={v}" for k, v in at.query_params.items())  # no link to a private model


def test_another_session_never_sees_it(weights):
    _, data = weights
    first = _load(_open(), data)
    model_id = first.session_state[state.MODEL]
    other = start()
    options = other.sidebar.selectbox(key=state.MODEL).options
    assert not [o for o in options if "your model" in o]
    assert selection(other).model == DEFAULT_MODEL
    linked = start(query={"model": model_id})  # not even through a link
    assert selection(linked).model == DEFAULT_MODEL and not linked.exception


def test_removing_it_returns_to_the_default_model(weights):
    _, data = weights
    at = _load(_open(), data)
    model_id = at.session_state[state.MODEL]
    at.button(key=f"{state.MODELS_REMOVE}.{model_id}").click().run()
    assert not at.exception
    assert at.session_state[state.MODEL] == DEFAULT_MODEL
    assert not [o for o in at.sidebar.selectbox(key=state.MODEL).options if "your model" in o]


@pytest.mark.parametrize("case", ["labels", "architecture", "pickle"])
def test_bad_files_give_a_message_and_the_page_keeps_working(weights, tmp_path, case):
    _, data = weights
    at = _open()
    created = tmp_path / "pwned.txt"
    if case == "labels":
        _load(at, data, labels=b"one\ntwo\n")
        expected = "2"
    elif case == "architecture":
        _load(at, data, architecture="resnet18")
        expected = "missing"
    else:
        class Payload:
            def __reduce__(self):
                return (Path.touch, (created,))

        _load(at, pickle.dumps(Payload()), name="weights.pt")  # a pickle that would create a file
        expected = "pickle"
    errors = [e.value for e in at.main.error]
    assert len(errors) == 1 and expected in errors[0].lower(), errors
    assert "Traceback" not in errors[0]
    assert not created.exists()
    assert at.session_state[state.MODEL] == DEFAULT_MODEL  # nothing half-loaded was selected
    at.switch_page(EXPLORE).run()  # and the dashboard still serves
    assert not at.exception and heatmap(at).title.startswith("Vanilla gradient")


def test_sample_image_still_loads_after_visiting_models():
    at = _open()
    at.switch_page(EXPLORE).run()
    assert not at.exception
    assert selection(at).image_name == sample_path("cat.png").name


def test_the_model_is_freed_with_its_session(weights):
    """Nothing outside the session (caches, locks, the sidebar) keeps a user's model alive once the session is
    gone, after it has been explained on Explore."""
    import gc
    import weakref

    _, data = weights
    at = _load(_open(), data)
    at.switch_page(EXPLORE).run()
    assert not at.exception and heatmap(at).title.startswith("Vanilla gradient")
    alive = weakref.ref(selection(at).bundle.model)
    del at
    gc.collect()
    assert alive() is None


def test_a_safetensors_file_and_its_onnx_export_have_distinct_labels(weights, tmp_path):
    from tests.explainers.helpers import export_onnx

    module, data = weights
    onnx = export_onnx(module, tmp_path / "fruit.onnx", 224).read_bytes()
    at = _load(_open(), data)
    _load(at, onnx, name="fruit.onnx", architecture=None)
    assert not at.main.error, [e.value for e in at.main.error]
    own = [o for o in at.sidebar.selectbox(key=state.MODEL).options if "your model" in o]
    assert len(own) == 2 and len(set(own)) == 2, own
    by_file = {label.split(" · ")[0]: label for label in own}
    assert set(by_file) == {"fruit.safetensors", "fruit.onnx"}
    assert "mobilenet_v3_small state dict" in by_file["fruit.safetensors"] and "ONNX" in by_file["fruit.onnx"]
    assert all("(4 classes)" in label for label in own)
    _load(at, data)  # the same file again: told apart too
    own = [o for o in at.sidebar.selectbox(key=state.MODEL).options if "your model" in o]
    assert len(own) == 3 and len(set(own)) == 3, own


def test_weights_for_another_architecture_name_it_and_load_as_it(weights):
    module, data = weights
    at = _load(_open(), data, name="fruit.bin", architecture="resnet18",
               labels="\n".join(LABELS).encode() + b"\n")
    errors = [e.value for e in at.main.error]
    count = len(module.state_dict())
    assert len(errors) == 1 and f"this looks like 'mobilenet_v3_small' (all {count} keys match; 4 classes)" \
        in errors[0], errors
    assert at.session_state[state.MODEL] == DEFAULT_MODEL  # nothing loaded yet
    offer = at.button(key=f"{state.MODELS_USE_GUESS}.mobilenet_v3_small")
    assert offer.label == "Load as mobilenet_v3_small"
    offer.click().run()
    assert not at.exception and not at.main.error, [e.value for e in at.main.error]
    assert at.selectbox(key=state.MODELS_ARCH).value == "mobilenet_v3_small"
    chosen = at.session_state[state.MODEL]
    assert chosen.startswith("user:fruit:")
    at.switch_page(EXPLORE).run()
    assert selection(at).bundle.categories == LABELS  # the kept class names went with it
    with torch.no_grad():
        expected = module(selection(at).inputs.cpu())
    torch.testing.assert_close(selection(at).bundle.model(selection(at).inputs), expected, atol=1e-5, rtol=0)


def test_a_bin_state_dict_loads(weights):
    import io

    module, _ = weights
    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    at = _load(_open(), buffer.getvalue(), name="pytorch_weights.bin")
    assert not at.main.error, [e.value for e in at.main.error]
    assert at.session_state[state.MODEL].startswith("user:pytorch_weights:")
    assert ".bin" in at.file_uploader(key=state.MODELS_FILE).proto.type  # offered by the file picker too


def test_the_class_names_file_survives_a_page_switch(weights):
    _, data = weights
    at = _open()
    at.file_uploader(key=state.MODELS_LABELS).set_value(("fruit.txt", "\n".join(LABELS).encode(), "text/plain")).run()
    at.switch_page(EXPLORE).run()
    at.switch_page(PAGE).run()
    assert not at.exception
    assert any("Class names: **fruit.txt** (kept from before)" in c.value for c in at.main.caption)
    at = _load(at, data)  # the model loads with the names kept
    assert not at.main.error
    at.switch_page(EXPLORE).run()
    assert selection(at).bundle.categories == LABELS
    at.switch_page(PAGE).run()
    at.button(key=state.MODELS_FORGET_LABELS).click().run()  # and Forget forgets them
    assert not any("kept from before" in c.value for c in at.main.caption)
    assert state.MODELS_KEPT_LABELS not in at.session_state
