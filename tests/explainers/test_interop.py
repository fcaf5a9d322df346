"""Quantus interop: our methods as Quantus explanation functions, and Quantus' MPRT and RandomLogit as oracles for
our cascade and random-logit similarities. Quantus (like scikit-image, Captum and pytorch-grad-cam) is a test-only
dependency: the backend never imports it."""

from __future__ import annotations

import ast
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import explainers
from explainers.interop import quantus_explain_func
from explainers.trust import sanity

from ..conftest import sample_path
from .helpers import small_convnet, snapshot

quantus = pytest.importorskip("quantus")
ROOT = Path(__file__).resolve().parents[2]
# the oracles, and streamlit (the backend never draws); scikit-image (and the SciPy it brings) only where the
# superpixels are made, imported when a segmentation is asked for (importing the backend stays light)
TEST_ONLY = {"quantus", "captum", "pytorch_grad_cam", "torchcam", "zennit", "shap", "lime", "torchray", "lxt",
             "saliency", "ferret", "skimage", "scipy", "streamlit"}
SEGMENTATION_ONLY = {"explainers/superpixels.py": {"skimage"}}


@pytest.fixture(autouse=True)
def _quiet_quantus():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _batch(seed: int = 0, rows: int = 2, size: int = 16):
    model = small_convnet(seed)
    inputs = torch.randn(rows, 3, size, size, generator=torch.Generator().manual_seed(seed + 10))
    with torch.no_grad():
        labels = model(inputs).argmax(1)
    return model, inputs, labels


def test_callable_has_quantus_signature_and_our_numbers():
    model, inputs, labels = _batch()
    explain_func = quantus_explain_func("integrated_gradients", n_steps=8, baseline="zero")
    out = explain_func(model=model, inputs=inputs.numpy(), targets=labels.numpy(), device="cpu")
    assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == (2, 1, 16, 16)
    direct = explainers.explain(model, inputs, "integrated_gradients", labels, n_steps=8, baseline="zero", seed=0)
    np.testing.assert_array_equal(out, direct.attribution.sum(dim=1, keepdim=True).numpy())
    raw = quantus_explain_func("vanilla", reduce_channels=False)(model, inputs, int(labels[0]))
    assert raw.shape == (2, 3, 16, 16)  # a scalar target is every row's
    overridden = explain_func(model, inputs.numpy(), labels.numpy(), n_steps=4)  # call-time kwargs win
    assert not np.array_equal(overridden, out)
    with pytest.raises(explainers.ParameterError, match="no parameter 'n_step'"):
        quantus_explain_func("integrated_gradients", n_step=8)


def test_a_pixel_space_baseline_without_bundle_names_the_adapters_bundle_argument():
    """Quantus passes bare modules, so IG's black baseline can only learn the preprocessing from the adapter's
    ``bundle=``: the error says so, and with the bundle the same call runs."""
    bundle = explainers.load_model("lenet_digits")
    inputs = bundle.preprocess(explainers.open_image(sample_path("cat.png"))).numpy()
    bare = quantus_explain_func("integrated_gradients", n_steps=4, baseline="black")
    with pytest.raises(explainers.ParameterError, match=r"bundle=explainers\.load_model"):
        bare(bundle.model, inputs, np.array([3]))
    given = quantus_explain_func("integrated_gradients", n_steps=4, baseline="black", bundle=bundle)
    assert given(bundle.model, inputs, np.array([3])).shape == (1, 1, *inputs.shape[-2:])


def test_a_quantus_metric_runs_through_the_callable():
    model, inputs, labels = _batch(1, rows=3)
    explain_func = quantus_explain_func("gradcam")
    metric = quantus.Sparseness(disable_warnings=True)
    through = metric(model=model, x_batch=inputs.numpy(), y_batch=labels.numpy(), a_batch=None,
                     explain_func=explain_func, device="cpu")
    precomputed = explain_func(model, inputs.numpy(), labels.numpy())
    expected = quantus.Sparseness(disable_warnings=True)(model=model, x_batch=inputs.numpy(), y_batch=labels.numpy(),
                                                        a_batch=precomputed, explain_func=explain_func)
    assert len(through) == 3 and np.all(np.isfinite(through))
    np.testing.assert_allclose(through, expected, rtol=0, atol=1e-12)


# Quantus resets each layer in turn; our block "features.0+features.1" ends on the layer Quantus resets last.
BLOCK_TO_QUANTUS = {"fc": "fc", "features.5": "features.5", "features.3": "features.3",
                    "features.0+features.1": "features.0"}


@pytest.mark.parametrize("method", ["vanilla", "guided_backprop"])
def test_mprt_equals_quantus(method):
    """Quantus' MPRT (top-down cascade, Spearman of |map|, no normalisation) through our explanation function
    against our cascade on the same model: per layer with blocks="layers", and at each block's last layer with
    our default blocks. Same randomised copies (checked bit for bit in test_randomised_copies_equal_quantus), the
    same maps, so the similarities agree to float64 rounding of the correlation."""
    model, inputs, labels = _batch(2)
    before = snapshot(model)
    metric = quantus.MPRT(similarity_func=quantus.similarity_func.correlation_spearman, abs=True, normalise=False,
                          seed=42, disable_warnings=True)
    theirs = metric(model=model, x_batch=inputs.numpy(), y_batch=labels.numpy(),
                    explain_func=quantus_explain_func(method), batch_size=8)
    per_layer = sanity.model_randomisation(model, inputs, [method], target=labels, controls=(), blocks="layers",
                                           seed=42)
    assert [s.name for s in per_layer.steps[1:]] == [k for k in theirs if k != "original"]
    for index, step in enumerate(per_layer.steps[1:], start=1):
        for row in range(2):
            ours = per_layer.methods[method].curve("spearman_abs", row)[index]
            assert ours == pytest.approx(theirs[step.name][row], abs=1e-12), step.name
    blocks = sanity.model_randomisation(model, inputs, [method], target=labels, controls=(), seed=42)
    for index, step in enumerate(blocks.steps[1:], start=1):
        for row in range(2):
            ours = blocks.methods[method].curve("spearman_abs", row)[index]
            assert ours == pytest.approx(theirs[BLOCK_TO_QUANTUS[step.name]][row], abs=1e-12), step.name
    assert all(v == pytest.approx(1.0) for v in theirs["original"])
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])


def test_randomised_copies_equal_quantus():
    from quantus.helpers.model.pytorch_model import PyTorchModel

    model, _, _ = _batch(3)
    ours = __import__("copy").deepcopy(model)
    generator = PyTorchModel(model, channel_first=True).get_random_layer_generator(order="top_down", seed=42)
    for (name, theirs), block in zip(generator, reversed(sanity.parameter_layers(model))):
        assert block.name == name
        sanity.randomise(ours, block, seed=42)
        for key, value in theirs.state_dict().items():
            assert torch.equal(value, ours.state_dict()[key]), f"{key} after {name}"


@pytest.mark.parametrize("absolute", [False, True])
def test_random_logit_equals_quantus(absolute):
    """Quantus' RandomLogit picks one off-class per image; we record which (the targets of its second call) and
    run our test on those classes: the same maps, so Spearman agrees to float64 rounding."""
    model, inputs, labels = _batch(4, rows=3)
    base = quantus_explain_func("vanilla")
    asked: list[np.ndarray] = []

    def recording(model, inputs, targets, **kwargs):
        asked.append(np.asarray(targets).copy())
        return base(model, inputs, targets, **kwargs)

    metric = quantus.RandomLogit(num_classes=7, seed=42, similarity_func=quantus.similarity_func.correlation_spearman,
                                 abs=absolute, normalise=False, disable_warnings=True)
    theirs = metric(model=model, x_batch=inputs.numpy(), y_batch=labels.numpy(), explain_func=recording)
    off_classes = asked[-1]
    assert np.all(off_classes != labels.numpy())
    ours = sanity.random_logit(model, inputs, ["vanilla"], target=labels, classes=off_classes[:, None], controls=())
    metric_name = "spearman_abs" if absolute else "spearman"
    values = [ours.methods["vanilla"][i][0][metric_name].value for i in range(3)]
    np.testing.assert_allclose(values, theirs, rtol=0, atol=1e-12)


def test_backend_never_imports_test_only_libraries():
    sources = sorted((ROOT / "explainers").rglob("*.py"))
    assert len(sources) > 40
    for path in sources:
        name = path.relative_to(ROOT)
        tree = ast.parse(path.read_text())
        imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                    for alias in node.names}
        imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                     if isinstance(node, ast.ImportFrom) and node.module and node.level == 0}
        forbidden = TEST_ONLY - SEGMENTATION_ONLY.get(str(name), set())
        assert not imported & forbidden, f"{name} imports {imported & forbidden}"
    code = ("import sys, explainers.trust.sanity, explainers.interop, explainers.trust.similarity, "
            "explainers.cli.main, explainers.methods, explainers.superpixels, "
            "explainers.batch, explainers.trust.benchmark; "
            f"print(sorted(m for m in {sorted(TEST_ONLY)!r} if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
