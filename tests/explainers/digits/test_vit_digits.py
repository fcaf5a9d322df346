"""The shipped digits ViT (``vit_digits``): a plain torchvision VisionTransformer that loads offline, reads a gray
picture as it was trained, reaches its recorded accuracy, matches its training record, trains reproducibly, and
is in the registry with a token layer for CAMs."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from torchvision.models import VisionTransformer

import explainers
from explainers import ModelUnavailableError, explain
from explainers.digits.data import gallery, make_digits, to_tensor
from explainers.digits.model import ASSETS
from explainers.digits.train import TEST_SEED_OFFSET, accuracy, file_sha256, train
from explainers.digits.vit import CONFIG, NAME, build_vit, load_vit, rgb_state
from explainers.models import digits as digits_models

from ..helpers import assert_untouched, snapshot

HELD_OUT_SEED = 0 + TEST_SEED_OFFSET  # the held-out set the record's accuracy was measured on (trained with seed 0)
DEFAULT_LAYER = f"encoder.layers.encoder_layer_{CONFIG['num_layers'] - 1}.ln_1"


@pytest.fixture(scope="module")
def bundle():
    return explainers.load_model(NAME)


@pytest.fixture(scope="module")
def record():
    return digits_models.training_record("vit")


def _quiet(_message: str) -> None:
    pass


def test_registry_lists_vit_digits_offline_beside_lenet(record):
    names = explainers.list_models()
    assert names[:3] == ["efficientnet_lite0", "lenet_digits", NAME]
    info = explainers.model_info(NAME)
    assert info["name"] == NAME and info["offline"] is True and info["download_mb"] is None
    assert info["categories"] == 10 and info["input_size"] == 32 and info["resize_size"] == 32
    assert info["held_out_accuracy"] == record["held_out_accuracy"]
    assert info["train_command"] == record["command"] and "ViT" in info["description"]
    assert explainers.models.ensure_weights(NAME) == ASSETS / f"{NAME}.safetensors"


def test_bundle_is_a_plain_torchvision_vit_with_a_token_layer_for_cams(bundle):
    model = bundle.model
    assert type(model) is VisionTransformer and not model.training
    assert (model.image_size, model.patch_size, model.hidden_dim) == (32, 4, 64)
    assert model.conv_proj.in_channels == 3 and len(model.encoder.layers) == CONFIG["num_layers"]
    assert bundle.name == NAME and bundle.categories == [str(d) for d in range(10)] and bundle.input_size == 32
    # The last block's first norm: its output still reaches the patch tokens' gradients (the block's output
    # feeds the head through the class token alone).
    assert bundle.default_layer == DEFAULT_LAYER
    entry = bundle.layer_entry()
    assert entry.layout == "tokens" and entry.shape == (1, 65, 64) and entry.grid == (8, 8)
    moved = explainers.load_model(NAME, device=bundle.device)
    assert moved.device == bundle.device and moved.default_layer == DEFAULT_LAYER


def test_a_gray_picture_reaches_the_network_as_in_training(bundle):
    item = gallery(1)[0]
    for preprocessing in ("resize", "center_crop"):  # a 32 x 32 sample passes unchanged either way
        inputs = bundle.preprocess(item.image, preprocessing)
        expected = to_tensor(np.asarray(item.image)[None, ..., 0]).repeat(1, 3, 1, 1).to(bundle.device)
        torch.testing.assert_close(inputs, expected, rtol=0, atol=1e-6)
    # The gray network it was trained as: the three channels' kernels summed back into one.
    state = bundle.model.state_dict()
    gray = build_vit(channels=1)
    gray.load_state_dict({**state, "conv_proj.weight": state["conv_proj.weight"].sum(1, keepdim=True)})
    gray = gray.eval().to(bundle.device)
    with torch.no_grad():
        torch.testing.assert_close(bundle.model(inputs), gray(inputs[:, :1]), rtol=0, atol=1e-4)
        # A colour picture is read as its channel mean.
        colour = inputs + torch.tensor([0.5, -0.2, -0.3], device=inputs.device).view(1, 3, 1, 1)
        torch.testing.assert_close(bundle.model(colour), gray(colour.mean(1, keepdim=True)), rtol=0, atol=1e-4)


def test_shipped_weights_reach_the_recorded_accuracy_on_a_held_out_slice(bundle, record):
    held_out = make_digits(1000, HELD_OUT_SEED, workers=2)  # the first tenth of the record's 10 000
    inputs = to_tensor(held_out.images)
    measured = accuracy(bundle.model, inputs, torch.from_numpy(held_out.labels), rgb=True)
    # 1000 samples: the standard error at 0.97 is 0.0054; 0.02 is nearly four of them.
    assert measured >= record["held_out_accuracy"] - 0.02, (measured, record["held_out_accuracy"])
    assert measured >= 0.95
    assert not bundle.model.training


def test_training_record_matches_the_shipped_weights(record):
    assert record["weights_file"] == f"{NAME}.safetensors"
    assert record["weights_sha256"] == file_sha256(ASSETS / record["weights_file"])
    assert record["command"].startswith("python -m explainers.digits train --arch vit")
    assert record["arch"] == "vit" and record["seed"] == 0 and record["labels"] == "real"
    assert record["parameters"] == sum(p.numel() for p in build_vit().parameters())
    assert record["held_out_accuracy"] >= 0.97 and record["n_test"] == 10_000
    assert record["test_seed"] == HELD_OUT_SEED and record["optimizer"].startswith("AdamW")
    assert all(f"'{key}': {value}" in record["architecture"] for key, value in CONFIG.items())
    assert record["history"][-1]["held_out_accuracy"] > record["history"][0]["train_accuracy"]


@pytest.mark.slow
def test_training_is_seeded_and_leaves_the_caller_as_it_was(tmp_path):
    threads = torch.get_num_threads()
    rng_state = torch.random.get_rng_state()
    settings = {"arch": "vit", "n_train": 256, "n_test": 64, "epochs": 1, "workers": 1, "log": _quiet}
    first = train(out=tmp_path / "a", **settings)
    again = train(out=tmp_path / "b", **settings)
    other = train(out=tmp_path / "c", seed=1, **settings)
    assert first["weights_sha256"] == again["weights_sha256"] != other["weights_sha256"]
    assert first["history"] == again["history"] and first["command"].startswith(
        "python -m explainers.digits train --arch vit --seed 0 --epochs 1 --n-train 256"
    )
    weights = tmp_path / "a" / f"{NAME}.safetensors"
    assert file_sha256(weights) == first["weights_sha256"]
    assert json.loads(weights.with_suffix(".json").read_text()) == json.loads(json.dumps(first))
    model = load_vit(tmp_path / "a")
    assert type(model) is VisionTransformer and not model.training and model.conv_proj.in_channels == 3
    assert torch.get_num_threads() == threads
    assert torch.equal(torch.random.get_rng_state(), rng_state)


def test_bad_requests_and_missing_or_foreign_weights_say_what_to_do(tmp_path):
    with pytest.raises(ValueError, match="real labels only"):
        train(arch="vit", shuffled_labels=True, out=tmp_path, log=_quiet)
    with pytest.raises(ValueError, match="arch must be one of"):
        train(arch="resnet", out=tmp_path, log=_quiet)
    with pytest.raises(ModelUnavailableError, match="python -m explainers.digits train --arch vit --out"):
        load_vit(tmp_path)
    shutil.copy(ASSETS / "lenet_digits.safetensors", tmp_path / f"{NAME}.safetensors")
    with pytest.raises(ModelUnavailableError, match="loading it failed"):
        load_vit(tmp_path)
    with pytest.raises(ModelUnavailableError, match="must be one of"):
        digits_models.load_digits_bundle("vit_large")
    with pytest.raises(ValueError, match="1- or 3-channel"):
        rgb_state({"conv_proj.weight": torch.zeros(64, 2, 4, 4)})


def test_rgb_state_splits_the_gray_kernel_into_thirds():
    torch.manual_seed(0)
    gray = build_vit(channels=1).eval()
    rgb = build_vit().eval()
    rgb.load_state_dict(rgb_state(gray.state_dict()))
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(rgb(x.expand(-1, 3, -1, -1)), gray(x), rtol=0, atol=1e-5)
    assert rgb_state(rgb.state_dict()).keys() == rgb.state_dict().keys()


def test_token_methods_and_gradients_run_on_a_digit(bundle):
    item = gallery(4)[3]
    inputs = bundle.preprocess(item.image)
    before = snapshot(bundle.model)
    available = explainers.available_methods(bundle.model)
    methods = [m for m in ("attention_rollout", "gradcam", "vanilla") if m in explainers.METHODS]
    assert set(methods) <= set(available), set(methods) - set(available)
    for method in methods:
        explanation = explain(bundle, inputs, method, target=item.label, seed=0)
        attribution = explanation.attribution
        assert tuple(attribution.shape[-2:]) == (32, 32) and torch.isfinite(attribution).all(), method
        assert attribution.abs().sum() > 0, method
    assert_untouched(bundle.model, before)
