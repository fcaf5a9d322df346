"""The Sanity checks page: on demand, the verdict table, the cascade curves and (for digits) data randomisation."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest

from .helpers import start, texts

PAGE = "app_pages/sanity.py"


def _open(model: str = "efficientnet_lite0") -> AppTest:
    at = start(session={"model": model}, page=PAGE, timeout=600)
    assert not at.error
    return at


def test_nothing_runs_until_asked_then_the_verdict_lists_methods_and_controls():
    at = _open()
    assert not at.dataframe and any("Run the checks" in t for t in texts(at))
    at.multiselect(key="sanity.methods").set_value(["vanilla", "guided_backprop"]).run()
    at.number_input(key="sanity.steps").set_value(2).run()
    at.toggle(key="sanity.run").set_value(True).run()
    assert not at.exception and not at.error
    table = at.dataframe[0].value
    assert list(table["method"]) == ["vanilla", "guided_backprop", "sobel", "random"]
    assert {"model randomisation", "random logit", "input invariance", "published verdict"} <= set(table.columns)
    assert table.loc[table["method"] == "sobel", "model randomisation"].item().startswith("FAIL (1.000)")
    assert table.loc[table["method"] == "guided_backprop", "published verdict"].item() == "fails model randomisation"
    shown = " ".join(texts(at))
    assert "after 2 of 19 steps" in shown and "below 0.6" in shown  # the thresholds are on the page
    spec = next(c.proto.spec for c in at.get("plotly_chart"))
    assert '"name":"vanilla"' in spec.replace(" ", "") and '"0: original"' in spec
    at.segmented_control(key="sanity.metric").set_value("ssim").run()
    assert not at.exception and "SSIM" in next(c.proto.spec for c in at.get("plotly_chart"))


def test_the_digits_model_adds_data_randomisation_against_its_shuffled_label_twin():
    at = _open("lenet_digits")
    at.multiselect(key="sanity.methods").set_value(["vanilla", "gradcam"]).run()
    at.number_input(key="sanity.steps").set_value(2).run()
    at.toggle(key="sanity.run").set_value(True).run()
    assert not at.exception and not at.error
    assert any(t == "Data randomisation" for t in texts(at))
    data = at.dataframe[1].value
    assert list(data["method"]) == ["vanilla", "gradcam", "sobel"]
    assert data.loc[data["method"] == "sobel", "Spearman |map|"].item() == 1.0  # no model: the same map
    assert any("first layer" in t for t in texts(at))  # invariance is skipped, and the page says why
