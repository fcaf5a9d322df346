"""The transformer methods on users' own transformers loaded through ``load_user_model``: a timm DeiT's state dict
(two tokens before the patches, two heads) and a Hugging Face ViT zip. Each method runs through ``explain`` with no
layer, reshape or token count given, and gives the same map as on the module the file was saved from.

Adding a method to this check is one entry in METHODS."""

from __future__ import annotations

import zipfile

import pytest
import safetensors.torch
import timm
import torch
from PIL import Image
from torch import nn

from explainers import METHODS as METHODS_INFO
from explainers import explain, load_user_model

from ...conftest import sample_path
from ..helpers import HuggingFaceLogits, save_tiny_vit

METHODS = (
    "attention_rollout",
    "legrad",
    "chefer_generic",
    "transformer_attribution",
    "attnlrp",
    "gradcam",  # on the default layer: the last block's tokens, prefix dropped by the catalogue
)


@pytest.fixture(scope="module")
def deit(tmp_path_factory):
    """(bundle, original): a seeded distilled DeiT-Tiny with five classes, saved as timm's state dict."""
    torch.manual_seed(0)
    module = timm.create_model("deit_tiny_distilled_patch16_224", pretrained=False, num_classes=5).eval()
    for head in (module.head, module.head_dist):
        nn.init.normal_(head.weight, std=0.2)  # timm starts the heads at zero: nothing would reach the tokens
    path = tmp_path_factory.mktemp("deit") / "my deit.safetensors"
    safetensors.torch.save_file(module.state_dict(), path)
    return load_user_model(path, "deit_tiny_distilled_patch16_224", device="cpu"), module


@pytest.fixture(scope="module")
def hugging_face(tmp_path_factory):
    """(bundle, original): a seeded tiny ViTForImageClassification saved with save_pretrained and zipped."""
    folder, module = save_tiny_vit(tmp_path_factory.mktemp("hf") / "tiny-vit")
    archive = folder.parent / "tiny-vit.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.iterdir()):
            zf.write(path, f"model/{path.name}")
    return load_user_model(archive, device="cpu"), HuggingFaceLogits(module.eval())


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("family", ["deit", "hugging_face"])
def test_every_transformer_method_on_a_loaded_user_model(request, family, method):
    bundle, original = request.getfixturevalue(family)
    x = bundle.preprocess(Image.open(sample_path("cat.png")))
    size = bundle.input_size
    result = explain(bundle, x, method, target=1)
    channels = METHODS_INFO[method].attribution_channels or x.shape[1]  # AttnLRP: one value per colour channel
    assert result.attribution.shape == (1, channels, size, size)
    assert torch.isfinite(result.attribution).all() and result.attribution.abs().sum() > 0
    reference = explain(original, x, method, target=1, layer=result.layer)
    torch.testing.assert_close(result.attribution, reference.attribution, atol=1e-6, rtol=1e-4)
    if method == "gradcam":
        assert bundle.layer_entry(result.layer).layout == "tokens"
