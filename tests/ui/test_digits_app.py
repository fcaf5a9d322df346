"""The digits model in the dashboard: its own gallery of generated samples, and every page works on it."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest

from explainers.digits import gallery
from tests.conftest import ROOT

from .helpers import heatmap


def test_choosing_lenet_digits_offers_its_gallery_and_explains_a_digit():
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.run()
    at.selectbox(key="model").set_value("lenet_digits").run()
    assert not at.exception and not at.error
    items = gallery()
    assert at.selectbox(key="sample").options == [item.name for item in items]
    assert at.selectbox(key="sample").value == items[0].name
    at.selectbox(key="sample").set_value(items[3].name).run()
    at.selectbox(key="method").set_value("gradcam").run()
    assert heatmap(at).title == f"Grad-CAM · {items[3].label} · features.relu2"  # the model reads the digit
    for page in ("app_pages/compare.py", "app_pages/gradient.py"):
        at.switch_page(page).run()
        assert not at.exception and not at.error, page
        assert at.selectbox(key="sample").value == items[3].name  # the same digit on every page
    at.selectbox(key="model").set_value("efficientnet_lite0").run()
    assert at.selectbox(key="sample").value == "cat.png"  # back to the photos
