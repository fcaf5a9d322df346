"""The command line, end to end on the real default model: ``python -m explainers ...``.

Each subprocess pays a few seconds of imports, so only the checks that need a real process (exit status,
stdout/stderr of ``python -m``) spawn one; the other error cases call ``main(argv)`` in-process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from explainers import METHODS
from explainers.cli.main import main
from explainers.cli.options import parse_params
from explainers.errors import ParameterError
from explainers.render import View

ROOT = Path(__file__).resolve().parents[3]
CAT = ROOT / "assets" / "samples" / "cat.png"
COFFEE = ROOT / "assets" / "samples" / "coffee.png"


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "explainers", *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "SALIENCY_OFFLINE": "1"},
    )


def assert_one_error_line(stderr: str, *words: str) -> None:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{stderr}"
    assert lines[0].startswith("error: "), lines[0]
    assert "Traceback" not in stderr
    for word in words:
        assert word in lines[0], f"expected {word!r} in {lines[0]!r}"


def load_manifest(path: Path) -> dict:
    return json.loads(path.read_text())


# ---------------------------------------------------------------------------------------------------------
# explain
# ---------------------------------------------------------------------------------------------------------


def test_explain_writes_overlay_attribution_and_manifest(tmp_path):
    out = tmp_path / "out"
    result = run_cli("explain", CAT, COFFEE, "--out", out)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr

    png = Image.open(out / "cat_vanilla.png")
    assert png.size == Image.open(CAT).size == (451, 300)
    attribution = np.load(out / "cat_vanilla.npy")
    assert attribution.dtype == np.float32 and attribution.shape == (3, 224, 224)
    assert np.isfinite(attribution).all() and np.abs(attribution).max() > 0

    manifest = load_manifest(out / "cat_vanilla.json")
    assert manifest["schema_version"] == 2
    assert manifest["predictions"][0]["name"] == "Egyptian cat"
    assert len(manifest["predictions"]) == 5
    assert manifest["target"] == {"indices": [manifest["predictions"][0]["index"]], "names": ["Egyptian cat"],
                                  "contrast": False}
    assert manifest["params"] == METHODS["vanilla"].defaults()
    assert manifest["model"] == "efficientnet_lite0" and manifest["method"] == "vanilla"
    assert manifest["image"]["name"].endswith("cat.png") and len(manifest["image"]["sha256_16"]) == 16
    assert manifest["image"]["size"] == [451, 300]
    assert manifest["preprocessing"] == "resize" and manifest["objective"] == "logit"
    assert manifest["view"] == {
        "colormap": "inferno",
        "sign": "absolute",
        "reduction": "max",
        "alpha": 0.5,
        "clip": 99.5,
        "original_aspect": True,
    }
    assert manifest["range"]["scale"] == "own" and manifest["range"]["hi"] > manifest["range"]["lo"]
    assert manifest["elapsed_s"] > 0 and manifest["versions"]["torch"]

    for suffix in ("png", "npy", "json"):
        assert (out / f"coffee_vanilla.{suffix}").is_file()
    assert Image.open(out / "coffee_vanilla.png").size == Image.open(COFFEE).size
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2
    assert "cat_vanilla.png" in lines[0] and "Egyptian cat" in lines[0]
    assert "coffee_vanilla.png" in lines[1]


def test_explain_top2_target_and_method_params(tmp_path):
    result = run_cli(
        "explain", CAT, "--method", "smoothgrad", "--param", "n_samples=3", "--target", "top2", "--seed", "0",
        "--sign", "signed", "--out", tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    manifest = load_manifest(tmp_path / "cat_smoothgrad.json")
    assert manifest["target"]["indices"] == [manifest["predictions"][1]["index"]]
    assert manifest["target"]["names"] == [manifest["predictions"][1]["name"]]
    assert manifest["params"] == {**METHODS["smoothgrad"].defaults(), "n_samples": 3}
    assert manifest["seed"] == 0
    assert manifest["view"]["colormap"] == "RdBu_r"  # the suggested colormap for signed maps
    assert np.load(tmp_path / "cat_smoothgrad.npy").shape == (3, 224, 224)


def test_several_methods_and_targets_share_passes_and_equal_single_runs(tmp_path, capsys):
    """In-process: --method a,b,c with repeated --target writes one set of files per method and target, each
    equal to what a run of that method and target alone writes."""
    together = tmp_path / "together"
    code = main(["explain", str(CAT), "--method", "vanilla,gradcam,smoothgrad", "--param", "n_samples=2",
                 "--target", "top1", "--target", "tabby vs tiger cat", "--seed", "3", "--out", str(together),
                 "--quiet"])  # fmt: skip
    assert code == 0
    names = sorted(p.name for p in together.glob("*.npy"))
    assert names == sorted(f"cat_{m}_{t}.npy" for m in ("vanilla", "gradcam", "smoothgrad")
                           for t in ("top1", "tabby_vs_tiger_cat"))
    alone = tmp_path / "alone"
    assert main(["explain", str(CAT), "--method", "smoothgrad", "--param", "n_samples=2", "--target",
                 "tabby vs tiger cat", "--seed", "3", "--out", str(alone), "--quiet"]) == 0  # fmt: skip
    np.testing.assert_allclose(np.load(together / "cat_smoothgrad_tabby_vs_tiger_cat.npy"),
                               np.load(alone / "cat_smoothgrad.npy"), rtol=1e-5, atol=1e-8)
    manifest = load_manifest(together / "cat_gradcam_tabby_vs_tiger_cat.json")
    assert manifest["target"]["indices"] == [281, 282] and manifest["seed"] == 3
    assert manifest["params"] == METHODS["gradcam"].defaults()  # n_samples went only to the method that has it
    assert main(["explain", str(CAT), "--method", "vanilla,gradcam", "--param", "n_steps=3",
                 "--out", str(alone)]) == 2
    assert "none of the methods vanilla, gradcam has a parameter 'n_steps'" in capsys.readouterr().err


def test_explain_center_crop_and_repeated_stems(tmp_path, capsys):
    """In-process: the overlay keeps the original size; what the crop cut off is the original, dimmed."""
    code = main(["explain", str(CAT), str(CAT), "--preprocessing", "center_crop", "--target", "tabby vs tiger cat",
                 "--out", str(tmp_path), "--quiet"])  # fmt: skip
    assert code == 0
    assert (tmp_path / "cat_vanilla.png").is_file() and (tmp_path / "cat-2_vanilla.png").is_file()
    overlay = np.asarray(Image.open(tmp_path / "cat_vanilla.png"))
    original = np.asarray(Image.open(CAT).convert("RGB"))
    assert overlay.shape == original.shape
    np.testing.assert_array_equal(overlay[:, 0], original[:, 0] // 2)  # left edge: outside the centre crop
    manifest = load_manifest(tmp_path / "cat_vanilla.json")
    assert manifest["target"] == {"indices": [281, 282], "names": ["tabby", "tiger cat"], "contrast": True}
    assert manifest["preprocessing"] == "center_crop"
    assert "281 tabby vs 282 tiger cat" in capsys.readouterr().out


@pytest.mark.parametrize("options, view, preprocessing", [
    (["--sign", "negative", "--reduction", "sum", "--colormap", "viridis", "--alpha", "0.7", "--clip", "98"],
     View(sign="negative", reduction="sum", colormap="viridis", alpha=0.7, clip=98.0), "center_crop"),
    (["--sign", "signed", "--reduction", "l2", "--aspect", "model"],
     View(sign="signed", reduction="l2", original_aspect=False), "resize"),
])
def test_cli_overlay_is_the_render_pipeline_of_its_saved_attribution(tmp_path, default_bundle, options, view,
                                                                     preprocessing):
    """Same pixels on every surface: the CLI's PNG equals render_for_image() of its own .npy with the same View,
    and its manifest is explanation_manifest's, with that View and range."""
    from explainers.images import load_image
    from explainers.manifest import SCHEMA, SCHEMA_VERSION
    from explainers.render import render_for_image

    code = main(["explain", str(CAT), "--out", str(tmp_path), "--quiet", "--preprocessing", preprocessing,
                 *options])
    assert code == 0
    attribution = np.load(tmp_path / "cat_vanilla.npy")
    rendered = render_for_image(attribution, view, image=load_image(CAT), bundle=default_bundle,
                                preprocessing=preprocessing)
    assert not rendered.empty and rendered.lo < rendered.hi  # a real picture, not a blank that anything matches
    png = np.asarray(Image.open(tmp_path / "cat_vanilla.png"))
    np.testing.assert_array_equal(png, rendered.overlay)
    assert png.shape == ((300, 451, 3) if view.original_aspect else (224, 224, 3))
    manifest = load_manifest(tmp_path / "cat_vanilla.json")
    assert manifest["view"] == view.as_dict()
    assert (manifest["range"]["lo"], manifest["range"]["hi"]) == (rendered.lo, rendered.hi)
    assert manifest["schema"] == SCHEMA and manifest["schema_version"] == SCHEMA_VERSION
    assert manifest["preprocessing"] == preprocessing and manifest["role"] == "explanation"


# ---------------------------------------------------------------------------------------------------------
# Bad input: exit 2, one line "error: ...", no traceback
# ---------------------------------------------------------------------------------------------------------


def test_bad_input_in_a_real_process(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not an image\n")
    result = run_cli("explain", text, "--out", tmp_path / "out")
    assert result.returncode == 2
    assert_one_error_line(result.stderr, "notes.txt", "not an image")
    assert not (tmp_path / "out").exists()

    result = run_cli("explain", CAT, "--param", "foo", "--out", tmp_path / "out")
    assert result.returncode == 2
    assert_one_error_line(result.stderr, "NAME=VALUE", "'foo'")


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--model", "resnt18"], ["unknown model", "'resnt18'", "resnet18"]),
        (["--method", "vanila"], ["unknown method", "'vanila'", "vanilla"]),
        (["--target", "tabbby"], ["no class named 'tabbby'", "did you mean", "tabby"]),
        (["--target", "1000"], ["1000", "out of range"]),
        (["--method", "integrated_gradients", "--param", "n_steps=abc"], ["'n_steps'", "int", "'abc'"]),
        (["--method", "integrated_gradients", "--param", "n_steps=0"], ["'n_steps'", "≥ 1"]),
        (["--method", "integrated_gradients", "--param", "steps=5"], ["no parameter 'steps'", "n_steps"]),
        (["--param", "=5"], ["NAME=VALUE"]),
        (["--layer", "_blocks.99"], ["no layer '_blocks.99'", "list-layers"]),
        (["--layer", "_fc"], ["'_fc'", "not spatial"]),
    ],
)
def test_bad_input_is_one_error_line(tmp_path, capsys, extra, words):
    code = main(["explain", str(CAT), "--out", str(tmp_path / "out"), "--quiet", *extra])
    captured = capsys.readouterr()
    assert code == 2
    assert_one_error_line(captured.err, *words)
    assert captured.out == ""
    assert not (tmp_path / "out").exists()


def test_missing_image_and_bad_options(tmp_path, capsys):
    assert main(["explain", str(tmp_path / "missing.png"), "--out", str(tmp_path)]) == 2
    assert_one_error_line(capsys.readouterr().err, "missing.png", "no file")
    for argv in (
        ["explain", str(CAT)],  # no --out
        ["explain", str(CAT), "--out", str(tmp_path), "--alpha", "2"],
        ["explain", str(CAT), "--out", str(tmp_path), "--batch-size", "0"],
        ["explain", str(CAT), "--out", str(tmp_path), "--sign", "both"],
        ["frobnicate"],
        [],
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        assert_one_error_line(capsys.readouterr().err)


def test_parse_params():
    assert parse_params(["n_steps=20", "rule = riemann_left", "a=b=c"]) == {
        "n_steps": "20",
        "rule": "riemann_left",
        "a": "b=c",
    }
    assert parse_params(None) == {}
    with pytest.raises(ParameterError, match="NAME=VALUE"):
        parse_params(["n_steps"])


# ---------------------------------------------------------------------------------------------------------
# Listings
# ---------------------------------------------------------------------------------------------------------


def test_list_models():
    result = run_cli("list-models")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["efficientnet_lite0", "offline"]
    resnet = next(line for line in lines if line.split()[0] == "resnet18")
    assert "offline" in resnet or "downloads 45 MB on first use" in resnet
    assert len(lines) > 50


def test_list_methods(capsys):
    assert main(["list-methods"]) == 0
    lines = capsys.readouterr().out.splitlines()
    by_name = {line.split()[0]: line for line in lines}
    assert set(by_name) == set(METHODS)
    assert "Vanilla gradient" in by_name["vanilla"] and "1 fwd + 1 bwd" in by_name["vanilla"]
    ig = by_name["integrated_gradients"]
    forwards, backwards = METHODS["integrated_gradients"].passes()
    assert "Integrated gradients" in ig and f"{forwards} fwd + {backwards} bwd" in ig and "n_steps=50" in ig


def test_list_layers(capsys):
    assert main(["list-layers", "efficientnet_lite0"]) == 0
    lines = capsys.readouterr().out.splitlines()
    defaults = [line for line in lines if "(default)" in line]
    assert len(defaults) == 1 and defaults[0].split()[0] == "_head_act"
    assert "[1,1280,7,7]" in defaults[0]
    assert lines[0].split()[0] == "_conv_stem"

    assert main(["list-layers", "no_such_model"]) == 2
    assert_one_error_line(capsys.readouterr().err, "unknown model")
