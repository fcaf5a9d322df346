"""The Faithfulness page: a live mask slider, deletion/insertion curves on demand, the pointing game."""

from __future__ import annotations

import numpy as np
from streamlit.testing.v1 import AppTest

from .helpers import start, texts

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
    at.number_input(key="faith.steps").set_value(8).run()
    at.toggle(key="faith.run").set_value(True).run()
    assert not at.exception and not at.error
    table = at.dataframe[0].value
    assert list(table["method"]) == ["Grad-CAM", "Random (control)"]
    gradcam = table.loc[table["method"] == "Grad-CAM"]
    random = table.loc[table["method"] == "Random (control)"]
    assert float(gradcam["insertion AUC"].item()) > float(random["insertion AUC"].item())
    assert all(0 <= v <= 1 for v in np.ravel(table[["deletion AUC", "insertion AUC"]].to_numpy(dtype=float)))
    # regions of the CAM grid, filled with the mean: Grad-CAM's deletion falls below the random control's
    assert at.selectbox(key="faith.region").options == ["single pixels", "8×8 px regions", "16×16 px regions",
                                                        "32×32 px regions"]
    at.selectbox(key="faith.region").set_value(32)
    at.selectbox(key="faith.del").set_value("mean").run()
    assert not at.exception and not at.error
    regions = at.dataframe[0].value
    deletion = dict(zip(regions["method"], regions["deletion AUC"].astype(float)))
    assert deletion["Grad-CAM"] < deletion["Random (control)"]
    assert deletion["Grad-CAM"] != float(gradcam["deletion AUC"].item())  # recomputed for the new settings


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
