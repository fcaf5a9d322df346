"""Hugging Face and ONNX classifiers as ModelBundles (explainers.models.foreign): tiny models written in tmp_path,
loaded offline; logits and Grad-CAM compared with the original models; every refusal a ModelLoadError."""

from __future__ import annotations

import json
import os
import shutil
import stat
import zipfile
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import explainers
from explainers.errors import ModelLoadError
from explainers.layers import PATCH_TOKENS, layer_catalogue, to_nchw
from explainers.models.foreign import MAX_ZIP_MEMBERS, load_hf_classifier, load_onnx_classifier

from ..helpers import VIT_MEAN, VIT_STD, export_onnx, hook_counts, save_tiny_vit

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # belt and braces: every load below is local_files_only
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

transformers = pytest.importorskip("transformers")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnx2torch")

def zip_folder(folder: Path, archive: Path, inside: str = "model") -> Path:
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.iterdir()):
            zf.write(path, f"{inside}/{path.name}")
    return archive


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-12))


@pytest.fixture(scope="module")
def hf_vit(tmp_path_factory):
    return save_tiny_vit(tmp_path_factory.mktemp("hf") / "tiny-vit")


def test_hf_vit_from_folder_and_zip_matches_the_original(hf_vit, tmp_path):
    folder, original = hf_vit
    archive = zip_folder(folder, tmp_path / "tiny-vit.zip")
    torch.manual_seed(1)
    pixels = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        expected = original(pixel_values=(pixels - torch.tensor(VIT_MEAN).view(1, 3, 1, 1))
                            / torch.tensor(VIT_STD).view(1, 3, 1, 1)).logits
    names = set()
    for source in (folder, archive):
        bundle = load_hf_classifier(source)
        names.add(bundle.name)
        assert bundle.name.startswith("hf:tiny-vit:")
        assert bundle.categories == ["apple", "banana", "cherry", "damson"]
        assert (bundle.input_size, bundle.resize_size) == (32, 32)
        assert bundle.interpolation == Image.Resampling.BICUBIC
        assert not bundle.model.training and bundle.device == torch.device("cpu")
        assert "ViTForImageClassification" in bundle.description
        with torch.no_grad():
            logits = bundle.model(bundle.normalize(pixels))
        torch.testing.assert_close(logits, expected, atol=1e-4, rtol=0)
        assert bundle.default_layer == "hf.vit.layers.1.layernorm_before"
        assert bundle.layer_entry().layout == "tokens" and bundle.layer_entry().grid == (4, 4)
        assert torch.allclose(bundle.denormalize(bundle.normalize(pixels)), pixels, atol=1e-6)
    assert len(names) == 2  # the hash is of the file the user gave


def test_hf_vit_at_another_input_size_interpolates_its_position_embeddings(hf_vit):
    folder, _ = hf_vit
    bundle = load_hf_classifier(folder, input_size=48, mean=0.5, std=[0.5, 0.5, 0.5])
    assert (bundle.input_size, bundle.resize_size, bundle.layer_entry().grid) == (48, 48, (6, 6))
    assert bundle.model.interpolate_pos_encoding and "your mean/std" in bundle.description
    assert torch.allclose(bundle.normalize(torch.ones(1, 3, 1, 1)), torch.ones(1, 3, 1, 1))
    result = explainers.explain(bundle, bundle.normalize(torch.rand(1, 3, 48, 48)), "gradcam", "cherry")
    assert torch.isfinite(result.attribution).all() and result.layer_attribution.shape[-2:] == (6, 6)


def test_hf_vit_gradcam_equals_a_direct_hook_computation(hf_vit):
    """Grad-CAM (Selvaraju et al. 2017, arXiv:1610.02391) through explain() on the bundle, against the formula
    computed by hand on the original model at the same layer: patch tokens of the last block's first norm."""
    folder, original = hf_vit
    bundle = load_hf_classifier(folder)
    torch.manual_seed(2)
    inputs = bundle.normalize(torch.rand(1, 3, 32, 32))
    result = explainers.explain(bundle, inputs, "gradcam", 0)
    assert result.layer == "hf.vit.layers.1.layernorm_before"

    seen = {}
    handle = original.vit.layers[1].layernorm_before.register_forward_hook(
        lambda module, args, output: seen.update(out=output))
    try:
        score = original(pixel_values=inputs.clone()).logits[0, 0]
        grads = torch.autograd.grad(score, seen["out"])[0]
    finally:
        handle.remove()
    acts = seen["out"].detach()[:, 1:].reshape(1, 4, 4, 32).permute(0, 3, 1, 2)
    grads = grads[:, 1:].reshape(1, 4, 4, 32).permute(0, 3, 1, 2)
    cam = (grads.mean(dim=(2, 3), keepdim=True) * acts).sum(dim=1, keepdim=True).clamp(min=0)
    expected = F.interpolate(cam, size=(32, 32), mode="bilinear", align_corners=False)

    attribution = result.attribution
    assert torch.isfinite(attribution).all() and attribution.max() > attribution.min()
    assert relative_error(attribution, expected) < 1e-4
    assert hook_counts(bundle.model) == 0


def test_hf_convnext_gradcam_on_the_last_stage(tmp_path):
    """ConvNeXt (Liu et al. 2022, arXiv:2201.03545): the default layer is the last stage's [N, C, H, W] output;
    its channels-first LayerNorms stay "nchw" even where [1, 8, 8, 8] reads both ways."""
    from transformers import ConvNextConfig, ConvNextForImageClassification

    torch.manual_seed(0)
    config = ConvNextConfig(image_size=32, num_channels=3, patch_size=4, num_stages=2, depths=[1, 1],
                            hidden_sizes=[8, 16], num_labels=3)
    ConvNextForImageClassification(config).save_pretrained(tmp_path / "convnext")  # no processor: defaults
    bundle = load_hf_classifier(tmp_path / "convnext")
    assert bundle.categories == ["LABEL_0", "LABEL_1", "LABEL_2"]  # transformers' default id2label
    assert bundle.input_size == 32 and "defaults" in bundle.description
    assert torch.allclose(bundle.normalize(torch.full((1, 3, 1, 1), 0.485))[0, 0], torch.zeros(1, 1))
    assert bundle.default_layer == "hf.convnext.encoder.stages.1"
    layouts = {info.name: info.layout for info in bundle.layers}
    assert layouts["hf.convnext.embeddings.layernorm"] == "nchw"
    assert layouts["hf.convnext.encoder.stages.1.downsampling_layer.0"] == "nchw"
    assert layouts["hf.convnext.encoder.stages.0.layers.0.layernorm"] == "nhwc"
    torch.manual_seed(3)
    result = explainers.explain(bundle, bundle.normalize(torch.rand(1, 3, 32, 32)), "gradcam", "LABEL_1")
    assert result.layer_attribution.shape[-2:] == (4, 4)
    assert torch.isfinite(result.attribution).all() and result.attribution.max() > result.attribution.min()

    # ConvNeXt's processor resizes the short side to size / crop_pct, then centre-crops the size.
    from transformers import ConvNextImageProcessor

    ConvNextImageProcessor(size={"shortest_edge": 32}, crop_pct=0.875, resample=Image.Resampling.BICUBIC,
                           image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5]).save_pretrained(tmp_path / "convnext")
    bundle = load_hf_classifier(tmp_path / "convnext")
    assert (bundle.input_size, bundle.resize_size, bundle.interpolation) == (32, 36, Image.Resampling.BICUBIC)
    assert torch.allclose(bundle.normalize(torch.ones(1, 3, 1, 1)), torch.ones(1, 3, 1, 1))


def test_hf_swin_patch_tokens_and_gradcam(tmp_path):
    """Swin (Liu et al. 2021, arXiv:2103.14030) in transformers keeps tokens flat, [N, h*w, C], without a class
    token; the catalogue reads them as "patch_tokens" and the default is the last block's first norm."""
    from transformers import SwinConfig, SwinForImageClassification

    torch.manual_seed(0)
    config = SwinConfig(image_size=32, patch_size=4, embed_dim=8, depths=[1, 1], num_heads=[1, 2], window_size=4,
                        num_labels=3)
    SwinForImageClassification(config).save_pretrained(tmp_path / "swin")
    bundle = load_hf_classifier(tmp_path / "swin")
    assert bundle.default_layer == "hf.swin.encoder.layers.1.blocks.0.layernorm_before"
    entry = bundle.layer_entry()
    assert (entry.shape, entry.layout, entry.grid) == ((1, 16, 16), PATCH_TOKENS, (4, 4))
    names = {info.name for info in bundle.layers}
    assert "hf.swin.encoder.layers.0.blocks.0.attention.q_proj" not in names  # [4 windows, 16, 8]: not a map
    assert "hf.swin.pooler" not in names
    torch.manual_seed(4)
    result = explainers.explain(bundle, bundle.normalize(torch.rand(1, 3, 32, 32)), "gradcam", 2)
    assert torch.isfinite(result.attribution).all() and result.attribution.max() > result.attribution.min()


def test_patch_tokens_layout_is_row_major_and_needs_a_transformer():
    tokens = torch.arange(2 * 6 * 3, dtype=torch.float32).view(2, 6, 3)
    maps = to_nchw(tokens, PATCH_TOKENS, grid=(2, 3))
    assert torch.equal(maps[1, :, 1, 2], tokens[1, 5]) and maps.shape == (2, 3, 2, 3)

    class Flattening(torch.nn.Module):  # a CNN that flattens its map: [N, 16, 64] is not a grid of tokens
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 16, 3, stride=4, padding=1)
            self.flat = torch.nn.Flatten(2)
            self.fc = torch.nn.Linear(64, 2)

        def forward(self, x):
            return self.fc(self.flat(self.conv(x)).mean(1))

    catalogue = layer_catalogue(Flattening(), (1, 3, 32, 32))
    assert [info.name for info in catalogue] == ["conv"]


def test_hf_refusals(hf_vit, tmp_path):
    folder, _ = hf_vit

    def copy(name: str) -> Path:
        return Path(shutil.copytree(folder, tmp_path / name))

    slip = tmp_path / "slip.zip"
    with zipfile.ZipFile(slip, "w") as zf:
        zf.writestr("model/config.json", (folder / "config.json").read_text())
        zf.writestr("../../evil.txt", "x")
    with pytest.raises(ModelLoadError, match="outside the folder"):
        load_hf_classifier(slip)
    assert not (tmp_path.parent / "evil.txt").exists()

    absolute = tmp_path / "absolute.zip"
    with zipfile.ZipFile(absolute, "w") as zf:
        zf.writestr("/tmp/evil.txt", "x")
    with pytest.raises(ModelLoadError, match="outside the folder"):
        load_hf_classifier(absolute)

    link = tmp_path / "link.zip"
    with zipfile.ZipFile(link, "w") as zf:
        member = zipfile.ZipInfo("model/config.json")
        member.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(member, "/etc/passwd")
    with pytest.raises(ModelLoadError, match="symbolic link"):
        load_hf_classifier(link)

    many = tmp_path / "many.zip"
    with zipfile.ZipFile(many, "w") as zf:
        for i in range(MAX_ZIP_MEMBERS + 1):
            zf.writestr(f"f{i}", "")
    with pytest.raises(ModelLoadError, match="at most 1000 files"):
        load_hf_classifier(many)

    no_config = tmp_path / "weights-only.zip"
    with zipfile.ZipFile(no_config, "w") as zf:
        zf.write(folder / "model.safetensors", "model/model.safetensors")
    with pytest.raises(ModelLoadError, match="no config.json; found model/model.safetensors"):
        load_hf_classifier(no_config)

    corrupt = tmp_path / "corrupt.zip"
    corrupt.write_bytes(zip_folder(folder, tmp_path / "ok.zip").read_bytes()[:-300])
    with pytest.raises(ModelLoadError, match="not a zip archive|damaged"):
        load_hf_classifier(corrupt)

    with pytest.raises(ModelLoadError, match="not a zip archive.*lone .safetensors"):
        load_hf_classifier(folder / "model.safetensors")

    bad_json = copy("bad-json")
    (bad_json / "config.json").write_text('{"model_type": "vit",')
    with pytest.raises(ModelLoadError, match="config.json to be valid JSON, but line 1"):
        load_hf_classifier(bad_json)

    remote = copy("remote")
    config = json.loads((remote / "config.json").read_text())
    (remote / "config.json").write_text(json.dumps({**config, "auto_map": {"AutoConfig": "mine.MyConfig"}}))
    with pytest.raises(ModelLoadError, match="custom code.*trust_remote_code"):
        load_hf_classifier(remote)

    pickled = copy("pickled")
    (pickled / "model.safetensors").rename(pickled / "pytorch_model.bin")
    with pytest.raises(ModelLoadError, match=r"only pickled weights \(pytorch_model.bin\).*safetensors"):
        load_hf_classifier(pickled)

    no_config_folder = copy("no-config")
    (no_config_folder / "config.json").unlink()
    with pytest.raises(ModelLoadError, match="expected config.json"):
        load_hf_classifier(no_config_folder)

    with pytest.raises(ModelLoadError, match="expected 4 class names.*got 3"):
        load_hf_classifier(folder, labels=["a", "b", "c"])
    assert load_hf_classifier(folder, labels=["w", "x", "y", "z"]).categories == ["w", "x", "y", "z"]
    with pytest.raises(ModelLoadError, match="input_size"):
        load_hf_classifier(folder, input_size=0)


def test_hf_refuses_what_is_not_an_image_classifier(tmp_path):
    from transformers import BertConfig, BertForMaskedLM, ViTConfig, ViTModel

    torch.manual_seed(0)
    BertForMaskedLM(BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=16)).save_pretrained(tmp_path / "bert")
    with pytest.raises(ModelLoadError, match="expected an image classifier.*BertForMaskedLM"):
        load_hf_classifier(tmp_path / "bert")

    # A backbone without its head: loading it as a classifier would leave the head random.
    ViTModel(ViTConfig(image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=16), add_pooling_layer=False).save_pretrained(tmp_path / "backbone")
    with pytest.raises(ModelLoadError, match=r"missing from it \(classifier"):
        load_hf_classifier(tmp_path / "backbone")


# ---------------------------------------------------------------------------------------------------------------
# ONNX


@pytest.fixture(scope="module")
def onnx_resnet(tmp_path_factory):
    """A seeded torchvision ResNet-18 with 10 classes, exported (legacy TorchScript exporter) at 128x128."""
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    return export_onnx(model, tmp_path_factory.mktemp("onnx") / "resnet18.onnx", 128), model


def test_onnx_resnet_logits_and_gradcam_match_the_original(onnx_resnet):
    path, original = onnx_resnet
    bundle = load_onnx_classifier(path)
    assert bundle.name.startswith("onnx:resnet18:")
    assert bundle.input_size == 128
    assert bundle.categories == [f"class {i}" for i in range(10)]
    # torch's exporter shares the equal zero biases of the folded BatchNorms through Identity nodes
    assert any(node.op_type == "Identity" for node in onnx.load(str(path)).graph.node)
    torch.manual_seed(5)
    inputs = bundle.normalize(torch.rand(3, 3, 128, 128))
    with torch.no_grad():
        torch.testing.assert_close(bundle.model(inputs), original(inputs), atol=1e-4, rtol=0)

    # The converted graph is flat: the last conv block's output is the ReLU after its residual Add, which is
    # torchvision's layer4 output.
    assert bundle.default_layer == "layer4/layer4/1/relu_1/Relu"
    assert bundle.layer_entry().shape == (1, 512, 4, 4)
    converted = explainers.explain(bundle, inputs, "gradcam", 3)
    reference = explainers.explain(original, inputs, "gradcam", 3, layer="layer4")
    assert converted.attribution.max() > converted.attribution.min()
    assert relative_error(converted.attribution, reference.attribution) < 1e-4
    assert relative_error(converted.layer_attribution, reference.layer_attribution) < 1e-4
    assert any(p.requires_grad for p in bundle.model.parameters()) and hook_counts(bundle.model) == 0


def _graph(nodes, inputs, outputs, initializers=(), opsets=(("", 17),)):
    from onnx import helper

    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets])


def test_onnx_refusals(tmp_path):
    from onnx import TensorProto, helper, numpy_helper

    image = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    scores = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])
    weight = numpy_helper.from_array(torch.randn(3, 3, 1, 1).numpy(), "w")
    head = [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("GlobalAveragePool", ["c"], ["p"]),
            helper.make_node("Flatten", ["p"], ["f"])]

    hardmax = _graph([*head, helper.make_node("Hardmax", ["f"], ["y"], axis=1)], [image], [scores], [weight])
    onnx.save(hardmax, tmp_path / "hardmax.onnx")
    with pytest.raises(ModelLoadError, match=r"cannot convert to PyTorch: Hardmax \(opset 17\)"):
        load_onnx_classifier(tmp_path / "hardmax.onnx")

    custom = _graph([*head, helper.make_node("Sparkle", ["f"], ["y"], domain="com.example")], [image], [scores],
                    [weight], opsets=(("", 17), ("com.example", 1)))
    onnx.save(custom, tmp_path / "custom.onnx")
    with pytest.raises(ModelLoadError, match=r"com\.example\.Sparkle"):
        load_onnx_classifier(tmp_path / "custom.onnx")

    plain = _graph([*head, helper.make_node("Identity", ["f"], ["y"])], [image], [scores], [weight])
    onnx.save(plain, tmp_path / "plain.onnx")
    bundle = load_onnx_classifier(tmp_path / "plain.onnx", labels=["r", "g", "b"], mean=0.5, std=0.25)
    assert (bundle.input_size, bundle.categories, bundle.default_layer) == (8, ["r", "g", "b"], "Conv")
    assert torch.allclose(bundle.normalize(torch.full((1, 3, 2, 2), 0.75)), torch.ones(1, 3, 2, 2))
    with pytest.raises(ModelLoadError, match="fixed at 8x8, got input_size=16"):
        load_onnx_classifier(tmp_path / "plain.onnx", input_size=16)
    with pytest.raises(ModelLoadError, match="expected 3 class names.*got 2"):
        load_onnx_classifier(tmp_path / "plain.onnx", labels=["r", "g"])

    second = helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 3, 8, 8])
    two = _graph([*head, helper.make_node("Identity", ["f"], ["y"])], [image, second], [scores], [weight])
    onnx.save(two, tmp_path / "two.onnx")
    with pytest.raises(ModelLoadError, match="one image input, but the graph has 2: x, z"):
        load_onnx_classifier(tmp_path / "two.onnx")

    gray = _graph([helper.make_node("Flatten", ["x"], ["y"])],
                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 8, 3])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 192])])
    onnx.save(gray, tmp_path / "nhwc.onnx")
    with pytest.raises(ModelLoadError, match="3 colour channels.*channels-last"):
        load_onnx_classifier(tmp_path / "nhwc.onnx")

    external = tmp_path / "external"
    external.mkdir()
    onnx.save(plain, external / "big.onnx", save_as_external_data=True, all_tensors_to_one_file=True,
              location="big.data", size_threshold=0)
    (external / "big.data").unlink()
    with pytest.raises(ModelLoadError, match="external data file 'big.data'.*missing"):
        load_onnx_classifier(external / "big.onnx")

    (tmp_path / "junk.onnx").write_bytes(b"\x00\x01 not a protobuf at all \xff" * 10)
    with pytest.raises(ModelLoadError, match="ONNX"):
        load_onnx_classifier(tmp_path / "junk.onnx")
