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


def _figure_checks(trace, forward_order):
    from ui.gradient import histogram_figure, ranges_figure

    figure = ranges_figure(trace)
    assert list(figure.layout.xaxis.categoryarray) == ["input", *forward_order]
    assert figure.layout.xaxis.categoryorder == "array" and figure.layout.xaxis2.categoryorder == "array"
    gradient = next(t for t in figure.data if t.name == "mean |gradient|")
    assert gradient.x[0] == "input" and gradient.x[-1] == forward_order[-1]  # input left, output right
    assert gradient.y[0] == trace.input_gradient.abs_mean
    forward = next(t for t in figure.data if t.name == "mean")
    assert list(forward.x) == ["input", *forward_order] and forward.y[0] == trace.input.mean
    for axis in (figure.layout.yaxis2, histogram_figure(trace.input, "t", "#000").layout.yaxis):
        # only powers of ten are labelled: no minor tick labels ("9, 8, 7…") that read as values
        assert axis.type == "log" and axis.dtick == 1 and axis.exponentformat == "power"
    low, high = figure.layout.yaxis2.range  # whole decades around the data: two labelled powers at least
    assert 10 ** low <= min(gradient.y) and max(gradient.y) <= 10 ** high and high - low >= 1


def test_the_ranges_figure_runs_from_the_input_to_the_output_on_both_models(default_bundle):
    import torch

    from explainers.digits.model import load_lenet
    from explainers.trace import trace_gradient

    for model, side in ((default_bundle.model, 224), (load_lenet(rgb=True), 32)):
        x = torch.randn(1, 3, side, side, generator=torch.Generator().manual_seed(0))
        _figure_checks(trace_gradient(model, x, 0, scope="blocks"), _called_in_order(model, x))


def _called_in_order(model, x) -> list[str]:
    """The blocks in the order a plain forward pass calls them, recorded by this test's own hooks."""
    import torch

    from explainers.trace import traced_modules

    called: list[str] = []
    handles = [m.register_forward_hook(lambda *_, name=name: called.append(name))
               for name, m in traced_modules(model, "blocks")]
    with torch.no_grad():
        model(x)
    for handle in handles:
        handle.remove()
    return called
