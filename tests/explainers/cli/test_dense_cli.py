"""``explain`` on a detector and a segmenter: --box, --list-boxes, --region-class and their errors, on the planted
models saved as TorchScript (loaded as a user's model file, ``--model FILE --trust-code``) and a 128 px scene, so
boxes given in the original image's pixels must be mapped to the 64 px model input and back."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from explainers.cli.dense import box_corners
from explainers.cli.main import main
from explainers.models.dense import dense_bundle
from explainers.render import TARGET_INK
from explainers.trust.sanity import BACKBONE_RULE

from ...dense_models import CATEGORIES, PlantedDetector, PlantedSegmenter, scene
from .test_cli import ROOT, assert_one_error_line

SCALE = 2  # the scene is saved at 128 px; the models see 64 px


def _save(pixels: torch.Tensor, path: Path) -> Path:
    array = (pixels[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    Image.fromarray(array).resize((64 * SCALE, 64 * SCALE), Image.NEAREST).save(path)
    return path


def _original(box) -> str:
    return ", ".join(f"{v * SCALE:g}" for v in box)


@pytest.fixture(scope="module")
def boxes(files):
    """The planted detector's (red, blue) boxes in model pixels on the 128 px scene as the bundle shrinks it: the
    oracle the CLI's mapping to and from the original's pixels is checked against."""
    bundle = dense_bundle(PlantedDetector(), input_size=64, categories=CATEGORIES)
    found = bundle.predict(bundle.preprocess(Image.open(files["scene"]))).detections
    assert [bundle.label_name(d.label) for d in found] == ["red", "blue"]
    return [tuple(int(round(v)) for v in d.box) for d in found]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dense_cli")
    torch.jit.script(PlantedDetector()).save(str(folder / "detector.pt"))
    torch.jit.script(PlantedSegmenter()).save(str(folder / "segmenter.pt"))
    (folder / "classes.txt").write_text("\n".join(CATEGORIES) + "\n")
    red_only = torch.full((1, 3, 64, 64), 0.5)
    red_only[0, :, 8:24, 8:24] = torch.tensor([0.9, 0.1, 0.1]).view(3, 1, 1)
    return {"folder": folder, "scene": _save(scene(), folder / "scene.png"),
            "grey": _save(torch.full((1, 3, 64, 64), 0.5), folder / "grey.png"),
            "red_only": _save(red_only, folder / "red_only.png")}


def _model(files, name: str) -> list[str]:
    return ["--model", str(files["folder"] / name), "--trust-code", "--input-size", "64",
            "--class-names", str(files["folder"] / "classes.txt")]


def test_list_boxes_prints_detections_in_original_pixels(files, boxes, capsys):
    red, blue = boxes
    assert main(["explain", str(files["scene"]), *_model(files, "detector.pt"), "--list-boxes"]) == 0
    lines = [line.split("  ") for line in capsys.readouterr().out.splitlines()]
    assert [(line[1], line[2]) for line in lines] == [("#1", "red"), ("#2", "blue")]
    assert lines[0][4] == f"[{_original(red)}]" and lines[1][4] == f"[{_original(blue)}]"
    assert float(lines[0][3]) > 0.9


def test_explain_a_box_given_in_original_pixels(files, boxes, tmp_path, capsys):
    BLUE = boxes[1]
    out = tmp_path / "out"
    status = main(["explain", str(files["scene"]), *_model(files, "detector.pt"), "--method", "input_x_gradient",
                   "--box", _original(BLUE), "--box-label", "blue", "--out", str(out), "--quiet"])
    assert status == 0
    manifest = json.loads((out / "scene_input_x_gradient.json").read_text())
    target = manifest["dense_target"]
    assert (target["kind"], target["label_name"], target["rank"]) == ("box", "blue", 2)
    assert target["box"] == [v * SCALE for v in BLUE] and target["box_model"] == list(BLUE)
    assert [p["label_name"] for p in manifest["predictions"]] == ["red", "blue"]
    assert target["score"] == pytest.approx(manifest["predictions"][1]["score"])
    attribution = np.load(out / "scene_input_x_gradient.npy")
    assert attribution.shape == (3, 64, 64)
    mass = np.abs(attribution).sum(0)
    x0, y0, x1, y1 = BLUE
    assert mass[y0:y1, x0:x1].sum() > 0.5 * mass.sum()  # the blue box's map lies in the blue box
    overlay = np.asarray(Image.open(out / "scene_input_x_gradient.png").convert("RGB"))
    assert overlay.shape == (64 * SCALE, 64 * SCALE, 3)
    ink = np.all(overlay == TARGET_INK, axis=-1)
    ys, xs = np.nonzero(ink)  # the outline is drawn around the blue box, in the original's pixels
    assert abs(xs.min() - x0 * SCALE) <= 3 and abs(xs.max() - x1 * SCALE) <= 3
    assert abs(ys.min() - y0 * SCALE) <= 3 and abs(ys.max() - y1 * SCALE) <= 3
    assert "box blue" in capsys.readouterr().out


def test_several_boxes_get_one_file_each_and_the_default_is_said(files, boxes, tmp_path, capsys):
    RED, BLUE = boxes
    out = tmp_path / "out"
    assert main(["explain", str(files["scene"]), *_model(files, "detector.pt"), "--method", "vanilla",
                 "--box", _original(RED), "--box", _original(BLUE), "--out", str(out), "--quiet"]) == 0
    labels = {json.loads((out / f"scene_vanilla_box{rank}.json").read_text())["dense_target"]["label_name"]
              for rank in (1, 2)}
    assert labels == {"red", "blue"}
    capsys.readouterr()
    assert main(["explain", str(files["scene"]), *_model(files, "detector.pt"), "--method", "vanilla",
                 "--out", str(tmp_path / "default"), "--quiet"]) == 0
    assert "top-scoring box #1 red" in capsys.readouterr().err
    manifest = json.loads((tmp_path / "default" / "scene_vanilla.json").read_text())
    assert manifest["dense_target"]["label_name"] == "red" and "top-scoring" in manifest["dense_target"]["picked"]


def test_region_class_on_a_segmenter(files, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["explain", str(files["scene"]), *_model(files, "segmenter.pt"), "--method", "input_x_gradient",
                 "--region-class", "red", "--region-reduction", "mean", "--out", str(out), "--quiet"]) == 0
    target = json.loads((out / "scene_input_x_gradient.json").read_text())["dense_target"]
    assert (target["kind"], target["class_name"], target["reduction"]) == ("region", "red", "mean")
    assert 0 < target["pixels"] < 64 * 64 / 4
    capsys.readouterr()
    status = main(["explain", str(files["red_only"]), *_model(files, "segmenter.pt"), "--method", "vanilla",
                   "--region-class", "blue", "--out", str(out), "--quiet"])
    assert status == 2
    assert_one_error_line(capsys.readouterr().err, "--region-class blue", "predicts no blue pixel")


@pytest.mark.parametrize("extra, image, words", [
    (["--box", "60,0,80,20"], "scene", ("no detected box matches",)),
    ([], "grey", ("detects no box",)),
    (["--region-class", "red"], "scene", ("--region-class", "detection")),
    (["--target", "1"], "scene", ("--target", "--box")),
    (["--box-label", "green"], "scene", ("--box-label", "green")),
    (["--region-reduction", "mean"], "scene", ("--region-reduction", "detection")),  # never silently ignored
    (["--objective", "probability"], "scene", ("--objective probability", "keep --objective logit")),
])
def test_bad_dense_input_is_one_line_and_exit_2(files, tmp_path, capsys, extra, image, words):
    status = main(["explain", str(files[image]), *_model(files, "detector.pt"), "--method", "vanilla",
                   "--out", str(tmp_path), "--quiet", *extra])
    assert status == 2
    assert_one_error_line(capsys.readouterr().err, *words)


def test_box_corners_parses_and_refuses():
    assert box_corners("1, 2,30.5,40") == (1.0, 2.0, 30.5, 40.0)
    for text in ("1,2,3", "5,5,4,9", "a,b,c,d"):
        with pytest.raises(argparse.ArgumentTypeError):
            box_corners(text)


@pytest.mark.parametrize("option", [["--box", "1,1,20,20"], ["--with-iou"], ["--score-threshold", "0.2"]])
def test_box_option_on_a_classifier_is_refused(tmp_path, capsys, option):
    status = main(["explain", str(ROOT / "assets" / "samples" / "cat.png"), *option,
                   "--out", str(tmp_path), "--quiet"])
    assert status == 2
    assert_one_error_line(capsys.readouterr().err, option[0], "classifier")


def test_python_m_explain_box_exit_status(files, tmp_path):
    """One real process: the exit status and the streams of `python -m explainers explain --box`."""
    done = subprocess.run([sys.executable, "-m", "explainers", "explain", str(files["scene"]),
                           *_model(files, "detector.pt"), "--method", "vanilla", "--box", "0,0,10,10",
                           "--out", str(tmp_path), "--quiet"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env={"PATH": "", "PYTHONPATH": str(ROOT), "SALIENCY_OFFLINE": "1",
                                            "PYTHONWARNINGS": "ignore"})
    assert done.returncode == 2
    assert_one_error_line(done.stderr, "no detected box matches")


# ---------------------------------------------------------------------------------------------------------
# sanity and faithfulness on a detector: the same options and the same pick as explain
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scores(files):
    """The planted detector's (red, blue) scores on the 128 px scene: what each curve must start from."""
    bundle = dense_bundle(PlantedDetector(), input_size=64, categories=CATEGORIES)
    return [d.score for d in bundle.predict(bundle.preprocess(Image.open(files["scene"]))).detections]


def test_sanity_on_a_detector_randomises_the_backbone_and_says_the_box_was_lost(files, scores, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["sanity", str(files["scene"]), *_model(files, "detector.pt"), "--methods", "input_x_gradient",
                 "--out", str(out), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "top-scoring box #1 red" in captured.err
    assert "was not found again after randomising scripted.backbone.body." in captured.out
    assert "random logit" in captured.out  # the other box is the random-logit test's other class
    payload = json.loads((out / "scene_sanity.json").read_text())
    assert payload["dense_target"]["label_name"] == "red" and "top-scoring" in payload["picked"]
    cascade = payload["model_randomisation"]
    assert cascade["block_rule"] == BACKBONE_RULE and cascade["target"] == [0]
    modules = [m for step in cascade["steps"][1:] for m in step["modules"]]
    assert modules and all(m.startswith("scripted.backbone.") for m in modules)  # the heads keep their weights
    assert cascade["steps"][0]["target_logit"][0] == pytest.approx(scores[0], abs=1e-5)
    assert cascade["notes"] and all(n in captured.out for n in cascade["notes"])
    assert payload["random_logit"]["classes"] == [[1]]  # the blue box
    assert (out / "scene_sanity.png").is_file()


def test_sanity_on_a_picked_box(files, boxes, scores, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["sanity", str(files["scene"]), *_model(files, "detector.pt"), "--methods", "input_x_gradient",
                 "--box", _original(boxes[1]), "--box-label", "blue", "--steps", "1", "--random-classes", "1",
                 "--out", str(out), "--quiet"]) == 0
    assert "top-scoring" not in capsys.readouterr().err
    payload = json.loads((out / "scene_sanity.json").read_text())
    assert (payload["dense_target"]["label_name"], payload["dense_target"]["rank"]) == ("blue", 2)
    steps = payload["model_randomisation"]["steps"]
    assert len(steps) == 2 and steps[0]["target_logit"][0] == pytest.approx(scores[1], abs=1e-5)


def test_faithfulness_on_a_detector_follows_the_box_score_and_plays_the_pointing_game(files, boxes, scores,
                                                                                       tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["faithfulness", str(files["scene"]), *_model(files, "detector.pt"), "--methods",
                 "input_x_gradient,random", "--steps", "8", "--region", "4", "--out", str(out), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "top-scoring box #1 red" in captured.err
    record = json.loads((out / "scene_faithfulness.json").read_text())
    assert record["target"]["label_name"] == "red"
    curves = {(c["kind"], c["method"]): c for c in record["curves"]}
    for (kind, _), curve in curves.items():  # the box's own score, not a softmax over the picked boxes
        start = curve["probability"][0][0 if kind == "deletion" else -1]
        assert start == pytest.approx(scores[0], abs=1e-5)
        np.testing.assert_allclose(curve["probability"], curve["logit"])
    assert curves["deletion", "input_x_gradient"]["auc"][0] < 0.5 * curves["deletion", "random"]["auc"][0]
    pointing = record["box_pointing"]
    x0, y0, x1, y1 = boxes[0]
    assert pointing["input_x_gradient"]["area"] == pytest.approx((x1 - x0) * (y1 - y0) / 64 ** 2, rel=0.2)
    assert pointing["input_x_gradient"]["hit"] and pointing["input_x_gradient"]["share"] > 4 * (
        pointing["input_x_gradient"]["area"])
    assert pointing["random"]["area"] == pointing["input_x_gradient"]["area"]  # one box, one chance level
    assert "box pointing game" in captured.out and "box1 red" in captured.out
    rows = (out / "scene_faithfulness.csv").read_text().splitlines()
    assert rows[0] == "kind,method,target,n,auc,logit_auc" and all(",box1 red," in row for row in rows[1:])


def test_faithfulness_of_two_boxes_writes_one_record_each(files, boxes, tmp_path):
    out = tmp_path / "out"
    assert main(["faithfulness", str(files["scene"]), *_model(files, "detector.pt"), "--methods", "input_x_gradient",
                 "--steps", "4", "--box", _original(boxes[0]), "--box", _original(boxes[1]), "--out", str(out),
                 "--quiet"]) == 0
    for rank, label in ((1, "red"), (2, "blue")):
        record = json.loads((out / f"scene_faithfulness_box{rank}.json").read_text())
        assert record["target"]["label_name"] == label and record["box_pointing"]["input_x_gradient"]["hit"]


@pytest.mark.parametrize("command, extra, image, words", [
    ("sanity", ["--box", "60,0,80,20"], "scene", ("no detected box matches",)),
    ("sanity", ["--region-class", "red"], "scene", ("--region-class", "detection")),
    ("sanity", [], "grey", ("detects no box",)),
    ("faithfulness", ["--box-label", "green"], "scene", ("--box-label", "green")),
    ("faithfulness", ["--target", "1"], "scene", ("--target", "--box")),
    ("faithfulness", ["--box", "1,2,3"], "scene", ("--box", "x0,y0,x1,y1")),
])
def test_bad_dense_input_to_sanity_and_faithfulness_is_one_line(files, tmp_path, capsys, command, extra, image,
                                                                words):
    argv = [command, str(files[image]), *_model(files, "detector.pt"), "--methods", "input_x_gradient",
            "--out", str(tmp_path), "--quiet", *extra]
    try:
        status = main(argv)
    except SystemExit as exit_:  # argparse's own errors
        status = exit_.code
    assert status == 2
    assert_one_error_line(capsys.readouterr().err, *words)


@pytest.mark.parametrize("command", ["sanity", "faithfulness"])
def test_box_option_on_a_classifier_is_refused_by_sanity_and_faithfulness(command, tmp_path, capsys):
    status = main([command, str(ROOT / "assets" / "samples" / "cat.png"), "--box", "1,1,20,20", "--out",
                   str(tmp_path), "--quiet"])
    assert status == 2
    assert_one_error_line(capsys.readouterr().err, "--box", "classifier")
