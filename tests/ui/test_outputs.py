"""Downloads of one result: their file names say the image, the method, the target and the layer."""

from __future__ import annotations

import numpy as np

from explainers import ExplanationRecord
from ui.outputs import download_stem


def _record(method: str, target: tuple[int, ...], layer: str | None) -> ExplanationRecord:
    return ExplanationRecord(attribution=np.zeros((1, 4, 4), np.float32), target=target, logits=np.zeros(3),
                             method=method, params={}, elapsed_s=0.0, layer=layer)


def test_two_downloads_of_one_image_and_method_never_share_a_name():
    """The predicted class and the runner-up, or two layers, used to download as the same ``cat_gradcam.png``."""
    names = {download_stem("cat.png", _record("gradcam", (285,), "_blocks.15")),
             download_stem("cat.png", _record("gradcam", (282,), "_blocks.15")),
             download_stem("cat.png", _record("gradcam", (285,), "_head_act")),
             download_stem("cat.png", _record("gradcam", (285, 282), "_head_act"))}
    assert len(names) == 4
    assert download_stem("cat.png", _record("gradcam", (285,), "_blocks.15")) == "cat_gradcam_285__blocks.15"
    assert download_stem("my photo.jpg", _record("vanilla", (3, 5), None)) == "my-photo_vanilla_3-vs-5"
