"""Region outlines in the one render pipeline (``render.region_boundaries`` / ``outline_regions``), and a region
method's path through the command line: its superpixels outlined on the written PNG, what it says of its passes
shown on the bar.

The region method here is registered by the tests only (``region_method``), so the plumbing is checked before
any real region method (LIME, KernelSHAP) exists; tests/ui/test_new_method_plumbing.py uses it too.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
import torch
from PIL import Image
from tqdm import tqdm

from explainers import METHODS, explain, load_image
from explainers import render as rnd
from explainers.cli.explain import BarProgress
from explainers.cli.main import main
from explainers.core import Attribution
from explainers.images import IMAGE_SUFFIXES
from explainers.manifest import explanation_manifest
from explainers.registry import Cost, Param, Reference, register
from tests.conftest import sample_path
from tests.explainers.helpers import small_convnet

REGION_METHOD = "test_regions"
SAID = "iteration {i}/{n}: score {score:.3g}"


def grid_regions(n: int, height: int, width: int, cells: int, device) -> torch.Tensor:
    """[n, H, W] labels of a cells×cells grid of rectangles (cells of uneven size where the side does not divide)."""
    rows = torch.arange(height, device=device) * cells // height
    cols = torch.arange(width, device=device) * cells // width
    return (rows[:, None] * cells + cols[None, :]).expand(n, height, width).clone()


@contextmanager
def region_method(name: str = REGION_METHOD, family: str = "Surrogate", cells: int = 4, licence_note: str = "",
                  steps: int = 3) -> Iterator[str]:
    """A region method registered for the duration: each region scored by its mean input (times the target's
    rank, so targets differ), the scores broadcast over the region; ``regions`` returned with the map, a fit R²
    (of that piecewise-constant image to the input's channel mean) in ``extras``, a note per row, and ``steps``
    progress steps, each said (``Progress.say``)."""

    def fn(call, inputs, reference_folder=""):
        logits = call.predict(inputs)
        n, _, height, width = inputs.shape
        regions = grid_regions(n, height, width, cells, inputs.device)
        image = inputs.mean(dim=1)  # [N, H, W]
        flat, labels = image.flatten(1), regions.flatten(1)
        sums = torch.zeros(n, cells * cells, device=inputs.device).scatter_add_(1, labels, flat)
        counts = torch.zeros(n, cells * cells, device=inputs.device).scatter_add_(1, labels, torch.ones_like(flat))
        piecewise = torch.gather(sums / counts.clamp_min(1), 1, labels).view(n, height, width)
        residual = ((image - piecewise) ** 2).flatten(1).sum(1)
        total = ((image - image.mean(dim=(1, 2), keepdim=True)) ** 2).flatten(1).sum(1).clamp_min(1e-12)
        fit = 1 - residual / total
        for i in range(steps):
            call.progress.say(SAID.format(i=i + 1, n=steps, score=float(call.scores(logits, slice(None))[0, 0])))
            call.progress.advance(1)
        attribution = torch.stack([piecewise * (t + 1) for t in range(len(call.targets))])[:, :, None]
        notes = [(f"regions read from {reference_folder!r}",) if reference_folder else ("a test note",)] * n
        return Attribution(attribution, logits=logits, regions=regions,
                           extras=[{"fit_r2": fit.detach().cpu()} for _ in call.targets], notes=notes)

    register(
        name, display_name="Test regions", family=family,
        reference=Reference("Test", 2024, "A region method for the plumbing tests", "0000.00000"),
        summary="Scores a grid of regions by their mean input.", weaknesses="A test method.",
        params={"reference_folder": Param("folder", "", help="Reference images")},
        cost=Cost(fixed=(1, 0), per_step=(1, 0), steps=lambda params, hw: steps), attribution_channels=1,
        licence_note=licence_note,
    )(fn)
    try:
        yield name
    finally:
        METHODS.pop(name, None)


# ---- boundaries -----------------------------------------------------------------------------------------


def _changes(labels: np.ndarray) -> np.ndarray:
    """Pixels whose right or lower neighbour has another label: the reference, written the plain way."""
    h, w = labels.shape
    out = np.zeros((h, w), dtype=bool)
    for y in range(h):
        for x in range(w):
            out[y, x] = (x + 1 < w and labels[y, x] != labels[y, x + 1]) or (
                y + 1 < h and labels[y, x] != labels[y + 1, x])
    return out


def test_boundaries_at_the_labels_own_size_are_the_label_changes():
    labels = np.random.default_rng(0).integers(0, 3, size=(7, 9))
    np.testing.assert_array_equal(rnd.region_boundaries(labels), _changes(labels))
    assert not rnd.region_boundaries(np.full((5, 6), 4)).any()  # one region: nothing to outline


def test_boundaries_follow_the_map_onto_a_larger_picture_and_its_box():
    labels = np.zeros((8, 8), dtype=np.int64)
    labels[:, 4:] = 1  # one vertical edge, between model columns 3 and 4
    box = (10, 5, 42, 37)  # the model's view stretched 4× onto a 60×50 picture
    mask = rnd.region_boundaries(labels, (60, 50), box)
    assert mask.shape == (50, 60)
    left, top, right, bottom = box
    assert not mask[:top].any() and not mask[bottom:].any() and not mask[:, :left].any() and not mask[:, right:].any()
    columns = np.flatnonzero(mask.any(axis=0))
    edge = left + (right - left) // 2  # the picture column where model column 4 starts
    # about one model pixel wide (4 picture pixels), around the edge, on every row of the box
    assert len(columns) == 4 and columns.min() <= edge - 1 and columns.max() >= edge
    assert mask[top:bottom, columns].all()


def test_boundaries_never_wrap_round_the_picture():
    labels = np.zeros((4, 4), dtype=np.int64)
    labels[:, 0] = 1  # an edge by the left border
    mask = rnd.region_boundaries(labels, (40, 40))
    assert not mask[:, 30:].any()


def test_outlines_change_only_boundary_pixels_in_an_ink_that_reads_on_both_light_and_dark():
    picture = np.zeros((6, 6, 3), dtype=np.uint8)
    picture[:, 3:] = 250  # dark left half, light right half
    labels = np.zeros((6, 6), dtype=np.int64)
    labels[3:] = 1  # a horizontal edge across both halves
    outlined = rnd.outline_regions(picture, labels)
    mask = rnd.region_boundaries(labels)
    np.testing.assert_array_equal(outlined[~mask], picture[~mask])
    light_on_dark = outlined[2, :3]
    dark_on_light = outlined[2, 3:]
    assert (light_on_dark > 150).all() and (dark_on_light < 100).all()


def test_render_outlines_the_overlay_only_and_takes_tensors():
    rng = np.random.default_rng(1)
    attribution = rng.random((1, 16, 16)).astype(np.float32)
    backdrop = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
    labels = torch.from_numpy(np.repeat(np.repeat(np.arange(4).reshape(2, 2), 8, 0), 8, 1))
    plain = rnd.render(attribution, rnd.View(), backdrop=backdrop)
    outlined = rnd.render(attribution, rnd.View(), backdrop=backdrop, regions=labels)
    mask = rnd.region_boundaries(labels, (32, 32))
    assert mask.any()
    np.testing.assert_array_equal(outlined.rgb, plain.rgb)  # the heatmap and its numbers are untouched
    np.testing.assert_array_equal(outlined.values, plain.values)
    np.testing.assert_array_equal(outlined.overlay[~mask], plain.overlay[~mask])
    assert (outlined.overlay[mask] != plain.overlay[mask]).any(axis=-1).all()
    with pytest.raises(Exception, match=r"region labels of shape \[H, W\]"):
        rnd.render(attribution, rnd.View(), backdrop=backdrop, regions=np.zeros((2, 2, 16, 16)))


def test_render_for_image_outlines_on_the_original_and_on_the_model_view(default_bundle):
    image = load_image(sample_path("cat.png"))
    size = default_bundle.input_size
    labels = grid_regions(1, size, size, 4, "cpu")[0]
    attribution = np.random.default_rng(2).random((1, size, size)).astype(np.float32)
    for original in (True, False):
        view = rnd.View(original_aspect=original)
        plain = rnd.render_for_image(attribution, view, image=image, bundle=default_bundle, preprocessing="resize")
        outlined = rnd.render_for_image(attribution, view, image=image, bundle=default_bundle,
                                        preprocessing="resize", regions=labels)
        changed = (outlined.overlay != plain.overlay).any(axis=-1)
        expected = rnd.region_boundaries(labels, outlined.overlay.shape[1::-1],
                                         default_bundle.crop_geometry(image.size, "resize") if original else None)
        assert changed.any() and not (changed & ~expected).any()


# ---- the command line ------------------------------------------------------------------------------------


def test_bar_progress_shows_the_passes_and_what_the_method_says():
    stream = io.StringIO()
    bar = tqdm(total=1, file=stream, mininterval=0)
    progress = BarProgress(bar, interval=0)
    progress(2, 5)
    progress.say("iteration 2/5:   score 4.2,\narea 0.10")
    assert progress.postfix() == "2/5 passes · iteration 2/5: score 4.2, area 0.10"
    assert bar.postfix == progress.postfix()
    bar.close()
    assert "iteration 2/5: score 4.2, area 0.10" in stream.getvalue()
    quiet = tqdm(total=1, disable=True)
    BarProgress(quiet, interval=0).say("nothing to draw")  # a disabled bar (--quiet) is left alone


def test_what_a_method_says_reaches_the_bar_through_the_backend():
    with region_method(steps=3):
        bar = tqdm(total=1, file=io.StringIO(), mininterval=0)
        progress = BarProgress(bar, interval=0)
        x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
        explanation = explain(small_convnet(), x, REGION_METHOD, target=1, progress=progress)
        assert explanation.regions is not None and explanation.regions.shape == (1, 16, 16)
        assert progress.said.startswith("iteration 3/3: score ")
        assert bar.postfix.endswith(progress.said) and progress.done == progress.total
        bar.close()


def test_list_methods_describes_a_folder_parameter(capsys):
    with region_method():
        assert main(["list-methods"]) == 0
    (line,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith(REGION_METHOD)]
    assert "Surrogate" in line
    assert f'reference_folder="" [folder of images ({"|".join(IMAGE_SUFFIXES)}); "" for none]' in line


def test_the_manifest_records_a_folder_parameters_path(tmp_path):
    """A folder parameter is a validated parameter like any other: the record and its manifest carry the path."""
    with region_method():
        x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
        record = explain(small_convnet(), x, REGION_METHOD, target=1, reference_folder=f" {tmp_path} ").record(0)
        manifest = explanation_manifest(record, image_name="x.png", image_hash="0" * 16, image_size=(16, 16),
                                        model="small", preprocessing="resize", categories=None, view=rnd.View(),
                                        value_range=(0.0, 1.0))
    assert record.params["reference_folder"] == str(tmp_path)  # stripped by the registry's validation
    assert manifest["params"]["reference_folder"] == str(tmp_path)
    assert manifest["notes"] == [f"regions read from {str(tmp_path)!r}"]
    json.dumps(manifest, allow_nan=False)


def test_cli_png_outlines_the_regions_of_the_record(tmp_path, default_bundle):
    """The written PNG is the render pipeline of its own .npy with the method's regions outlined: the same
    pixels as render_for_image(..., regions=...), and not those without them."""
    with region_method():
        code = main(["explain", str(sample_path("cat.png")), "--out", str(tmp_path), "--quiet", "--method",
                     REGION_METHOD])
    assert code == 0
    image = load_image(sample_path("cat.png"))
    attribution = np.load(tmp_path / f"cat_{REGION_METHOD}.npy")
    size = default_bundle.input_size
    labels = grid_regions(1, size, size, 4, "cpu")[0]
    png = np.asarray(Image.open(tmp_path / f"cat_{REGION_METHOD}.png"))
    outlined = rnd.render_for_image(attribution, rnd.View(), image=image, bundle=default_bundle,
                                    preprocessing="resize", regions=labels)
    plain = rnd.render_for_image(attribution, rnd.View(), image=image, bundle=default_bundle, preprocessing="resize")
    np.testing.assert_array_equal(png, outlined.overlay)
    assert (png != plain.overlay).any()
