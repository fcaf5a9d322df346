"""The Faithfulness page: a live mask slider, deletion/insertion curves on demand, the pointing game."""

from __future__ import annotations

import json

import numpy as np
from streamlit.testing.v1 import AppTest

from explainers.digits import gallery
from explainers.trust.faithfulness import TRUSTED_SUBSTRATE, Curve, CurveSet, grid_region
from ui import state
from ui.faithfulness import control_note

from .helpers import selection, start, texts

PAGE = "app_pages/faithfulness.py"


def _open(model: str = "efficientnet_lite0") -> AppTest:
    at = start(session={"model": model}, page=PAGE, timeout=600)
    assert not at.error
    return at


def test_masking_more_pixels_lowers_the_class_probability_and_curves_come_on_demand():
    at = _open()
    at.multiselect(key="faith.methods").set_value(["gradcam", "random"]).run()
    at.selectbox(key="faith.mask_method").set_value("gradcam").run()
    probabilities = []
    for fraction in (0.0, 0.5):
        at.slider(key="faith.fraction").set_value(fraction).run()
        assert not at.exception and not at.error
        probabilities.append(float(at.metric[0].value.rstrip("%")) / 100)
    assert probabilities[0] > 0.7  # nothing masked: the cat's own 77% for Egyptian cat
    assert probabilities[1] < probabilities[0] - 0.3  # half of Grad-CAM's pixels gone
    assert not at.dataframe or "Compute the curves" in " ".join(texts(at))
    # the defaults are the setting the README trusts: regions of the CAM grid (32 px on 224), mean fill
    region = at.selectbox(key="faith.region")
    assert region.options == ["single pixels", "8×8 px regions", "16×16 px regions", "32×32 px regions"]
    assert region.value == grid_region(selection(at).inputs.shape[-2:]) == 32
    assert at.selectbox(key="faith.del").value == at.selectbox(key="faith.ins").value == TRUSTED_SUBSTRATE == "mean"
    at.number_input(key="faith.steps").set_value(8).run()
    at.toggle(key="faith.run").set_value(True).run()
    assert not at.exception and not at.error
    table = at.dataframe[0].value
    assert list(table["method"]) == ["Grad-CAM", "Random (control)"]
    assert all(0 <= v <= 1 for v in np.ravel(table[["deletion AUC", "insertion AUC"]].to_numpy(dtype=float)))
    trusted = {kind: dict(zip(table["method"], table[f"{kind} AUC"].astype(float)))
               for kind in ("deletion", "insertion")}
    assert trusted["deletion"]["Grad-CAM"] < trusted["deletion"]["Random (control)"]
    assert trusted["insertion"]["Grad-CAM"] > trusted["insertion"]["Random (control)"]
    assert not any("random control ranks best" in text for text in texts(at))  # Grad-CAM ranks best: no note
    # the paper's single black pixels: the random control deletes best, and the page says why
    at.selectbox(key="faith.region").set_value(1)
    at.selectbox(key="faith.del").set_value("black").run()
    assert not at.exception and not at.error
    pixels = dict(zip(at.dataframe[0].value["method"], at.dataframe[0].value["deletion AUC"].astype(float)))
    assert pixels["Random (control)"] < pixels["Grad-CAM"]
    assert pixels["Grad-CAM"] != trusted["deletion"]["Grad-CAM"]  # recomputed for the new settings
    notes = [info.value for info in at.info if "random control ranks best" in info.value]
    assert len(notes) == 1 and "at deletion" in notes[0] and "off the data distribution" in notes[0]
    assert "1509.06321" in notes[0] and "2202.00449" in notes[0] and "32×32 px regions with mean fill" in notes[0]


def _curves(aucs: dict[tuple[str, str], float]) -> CurveSet:
    """Flat curves at the given heights (their AUCs)."""
    fractions = np.linspace(0.0, 1.0, 3)
    return CurveSet([Curve(kind, method, "top1", np.zeros(1, dtype=np.int64), fractions, np.full((1, 3), auc),
                           np.zeros((1, 3))) for (kind, method), auc in aucs.items()], {}, 0, 0.0)


def test_the_note_names_the_curves_the_random_control_wins_and_why():
    hw = (224, 224)
    honest = _curves({("deletion", "gradcam"): 0.3, ("deletion", "random"): 0.5,
                      ("insertion", "gradcam"): 0.6, ("insertion", "random"): 0.4})
    assert control_note([honest], 32, {"deletion": "mean", "insertion": "mean"}, hw) is None
    crowned = _curves({("deletion", "gradcam"): 0.3, ("deletion", "random"): 0.03,
                       ("insertion", "gradcam"): 0.6, ("insertion", "random"): 0.4})
    note = control_note([crowned], 1, {"deletion": "black", "insertion": "blur"}, hw)
    assert note.startswith("The random control ranks best at deletion, an artefact:")
    assert "single pixels (black fill) take the image off the data distribution" in note
    assert note.endswith("Try 32×32 px regions with mean fill.")
    road = _curves({("road_lerf", "gradcam"): 0.54, ("road_lerf", "random"): 0.77})
    note = control_note([honest, road], 32, {"deletion": "mean", "insertion": "mean"}, hw)
    assert "ranks best at ROAD LeRF, an artefact:" in note and "imputed almost exactly" in note and "Try" not in note
    regions = control_note([crowned], 32, {"deletion": "mean", "insertion": "mean"}, hw)
    assert "32×32 px regions with mean fill move the model" in regions and "Try" not in regions


def test_pointing_game_on_a_digit_uses_its_ground_truth_box():
    at = _open("lenet_digits")
    at.multiselect(key="faith.methods").set_value(["gradcam", "random"]).run()
    assert not at.exception and not at.error
    shown = " ".join(texts(at))
    assert "The digit's ground-truth ink box: (8, 6, 24, 24)." in shown  # the first gallery digit's box
    table = next(d.value for d in at.dataframe if "chance (box area)" in d.value.columns)
    assert list(table["method"]) == ["CAM · Grad-CAM", "Control · Random (control)"]
    chance = table["chance (box area)"].to_numpy(dtype=float)
    assert chance[0] == chance[1] and abs(chance[0] - 16 * 18 / (32 * 32)) < 1e-3  # the box share, every method


def _drawn_boxes(at: AppTest) -> list[tuple]:
    """The rectangles on the pointing game's picture (the one chart that is an image), in the model's pixels
    (x0, y0, x1, y1): a rectangle's edges lie on pixel borders, half a pixel before the pixel centres."""
    figures = [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]
    picture = next(f for f in figures if f["data"][0]["type"] == "image")
    return [tuple(shape[k] + 0.5 for k in ("x0", "y0", "x1", "y1")) for shape in picture["layout"].get("shapes", [])
            if shape["type"] == "rect"]


def test_the_pointing_picture_draws_the_scored_box_and_clear_box_brings_the_sliders_back():
    at = _open("lenet_digits")
    at.multiselect(key="faith.methods").set_value(["gradcam", "random"]).run()
    truth = (8, 6, 24, 24)  # the first gallery digit's box, which the sliders start at
    assert _drawn_boxes(at) == [truth]
    at.slider(key="faith.box_x").set_value((2, 30)).run()
    assert _drawn_boxes(at) == [(2, 6, 30, 24)]  # the box the table scores
    assert "Box (2, 6, 30, 24)" in " ".join(texts(at))
    # a box drawn by hand (what the chart's on_select keeps) replaces the sliders; Clear box brings them back
    chosen = selection(at)
    at.session_state[state.FAITH_DRAWN] = ((chosen.model, chosen.image_hash, chosen.preprocessing), (1, 2, 9, 12))
    at.run()
    assert not at.exception and not at.error
    assert _drawn_boxes(at) == [(1, 2, 9, 12)]
    assert not [s for s in at.slider if s.key in ("faith.box_x", "faith.box_y")]
    assert "Box (1, 2, 9, 12)" in " ".join(texts(at))
    at.button(key="faith.box_clear").click().run()
    assert at.slider(key="faith.box_x").value == (2, 30)  # the sliders as they were left
    assert _drawn_boxes(at) == [(2, 6, 30, 24)]
    # another digit: the sliders and the picture move to its own ground-truth box
    other = gallery()[1]
    at.selectbox(key="sample").set_value(other.name).run()
    assert _drawn_boxes(at) == [tuple(int(v) for v in other.box)] != [truth]
