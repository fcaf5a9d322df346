"""The "Inside the gradient" page: one traced pass of the current image, layer by layer."""

from __future__ import annotations

import numpy as np
from streamlit.testing.v1 import AppTest

from explainers import explain
from tests.conftest import ROOT

PAGE = "app_pages/gradient.py"


def test_the_page_traces_the_current_image_and_ends_in_its_vanilla_gradient(default_bundle):
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.run()
    at.switch_page(PAGE).run()
    assert not at.exception and not at.error
    captions = [c.value for c in at.caption]
    final = next(c for c in captions if "vanilla map" in c)
    lo, hi = (float(v) for v in final.split("range [", 1)[1].split("]", 1)[0].split(", "))
    from explainers import open_image

    x = default_bundle.preprocess(open_image(ROOT / "assets" / "samples" / "cat.png"))
    vanilla = explain(default_bundle, x, "vanilla", target=285).attribution
    assert np.isclose(lo, float(vanilla.min()), rtol=1e-2) and np.isclose(hi, float(vanilla.max()), rtol=1e-2)
    assert at.select_slider(key="gradient.layer").value == "_fc"
    assert any("output [1, 1000]" in c for c in captions)

    at.select_slider(key="gradient.layer").set_value("_blocks.3").run()
    assert any(c.startswith("_blocks.3 · ") for c in (c.value for c in at.caption))
    at.radio(key="gradient.scope").set_value("leaves").run()
    assert not at.exception
    assert len(at.select_slider(key="gradient.layer").options) > 100  # every module of efficientnet_lite0
