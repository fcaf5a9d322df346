"""Class probabilities of the selected image: cached per (model, image, preprocessing), and right when sessions ask
for them on the shared model while others explain it (the backend serialises calls on one model)."""

from __future__ import annotations

import dataclasses
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from explainers import class_probabilities
from tests.explainers.helpers import hook_counts
from ui.explanations import cached_records, canonical
from ui.figures import INSIDE_LABEL_MIN, predictions_figure
from ui.predictions import probabilities, top_k


def test_probabilities_beside_explanations_on_one_shared_model_match_serial_calls(cat_selection):
    bundle, x = cat_selection.bundle, cat_selection.inputs
    serial = class_probabilities(bundle, x)[0]
    sessions = 4
    start_together = threading.Barrier(2 * sessions)

    def predict(session: int) -> np.ndarray:
        start_together.wait()
        # a key of its own, so every call really runs the model
        return probabilities(cat_selection.model, f"predict-{session}", "resize", bundle, x)

    def explain(session: int) -> None:
        selection = dataclasses.replace(cat_selection, image_hash=f"explain-{session}")
        method = ("guided_backprop", "gradcam")[session % 2]  # backward hooks, a forward capture
        start_together.wait()
        cached_records(selection, [canonical(selection, method, {}, 285)])

    with ThreadPoolExecutor(2 * sessions) as pool:
        explained = [pool.submit(explain, session) for session in range(sessions)]
        predicted = [pool.submit(predict, session) for session in range(sessions)]
        for future in predicted:
            np.testing.assert_allclose(future.result(), serial, rtol=1e-5, atol=1e-7)
        for future in explained:
            future.result()
    assert hook_counts(bundle.model) == 0
    assert top_k(serial, 2) == [285, 282]


def test_percentage_labels_stay_horizontal_and_narrow_bars_print_theirs_outside():
    """Issue 18, item 12: plotly turns a label sideways to fit it into a narrow bar; the labels stay horizontal."""
    probs = [0.78, 0.097, 0.084, 0.005, 0.004]
    figure = predictions_figure(["a", "b", "c", "d", "e"], probs, [1, 2, 3, 4, 5], selected=1)
    bar = figure.data[0]
    assert bar.textangle == 0
    positions = dict(zip(bar.x, bar.textposition))
    assert all((positions[p] == "inside") == (p >= INSIDE_LABEL_MIN) for p in probs), positions
    assert bar.cliponaxis is False  # a label past a bar's end is not cut off at the axis
