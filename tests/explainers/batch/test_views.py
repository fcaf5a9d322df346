"""The views of a run that reveal a spurious cue (explainers.batch.views): a planted corner mark ranks its images
first, and each view orders the rows as it says."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn

from explainers import batch
from explainers.batch import views
from explainers.batch.pipeline import BORDER
from explainers.errors import ParameterError

from ..helpers import SQUARE_SIZE, small_convnet, tiny_bundle, write_list


def test_each_view_ranks_the_rows_it_names():
    table = pd.DataFrame({
        "path": ["a", "b", "c", "d", "broken"],
        "error": [None, None, None, None, "unreadable"],
        "map_key": ["ka", "kb", "kc", "kd", None],
        "correct": [True, False, False, False, None],
        "probability": [0.9, 0.6, 0.95, 0.7, None],
        "border_mass": [0.1, 0.4, 0.2, 0.3, None],
        "box_mass": [None, None, None, None, None],
    })
    assert batch.ranked(table, "outside")["path"].tolist() == ["b", "d", "c", "a"]  # no boxes: the border mass
    boxed = table.assign(box_mass=[0.5, None, 0.9, 0.2, None])
    outside = batch.ranked(boxed, "outside")
    assert outside["path"].tolist() == ["d", "a", "c"]  # 1 - box mass; rows without a box left out
    assert outside["outside"].tolist() == pytest.approx([0.8, 0.5, 0.1])
    assert batch.ranked(table, "confident_mistakes")["path"].tolist() == ["c", "d", "b"]
    assert batch.ranked(table, "unsure_mistakes")["path"].tolist() == ["b", "d", "c"]
    with pytest.raises(ParameterError, match="view must be one of outside"):
        batch.ranked(table, "surprising")


def marked(folder: Path, count: int, seed: int) -> list[dict]:
    """Half the images carry a bright mark in the top-left corner, and only those are class 1 ("marked"); the
    rest of every image is the same kind of texture with a grey square somewhere, which predicts nothing."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(count):
        image = rng.integers(40, 200, (SQUARE_SIZE, SQUARE_SIZE, 3)).astype(np.uint8)
        x0, y0 = (int(v) for v in rng.integers(12, SQUARE_SIZE - 20, 2))
        image[y0 : y0 + 12, x0 : x0 + 12] = 128
        label = i % 2
        if label:
            image[1:6, 1:6] = (255, 255, 0)
        path = folder / f"m{i:03d}.png"
        Image.fromarray(image).save(path)
        rows.append({"path": path.name, "label": ["plain", "marked"][label], "x0": x0, "y0": y0, "x1": x0 + 12,
                     "y1": y0 + 12})
    return rows


@pytest.mark.slow
def test_a_planted_corner_cue_ranks_its_images_first_by_border_mass(tmp_path):
    rows = marked(tmp_path / "train", 160, seed=0)
    bundle = tiny_bundle(small_convnet(5), categories=["plain", "marked"])
    bundle.model.fc = nn.Linear(16, 2)
    # train in the test, a few seconds: the corner mark is the only thing that predicts the class
    images = torch.cat([bundle.preprocess(Image.open(tmp_path / "train" / r["path"])) for r in rows])
    labels = torch.tensor([["plain", "marked"].index(r["label"]) for r in rows])
    model = bundle.model.train()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    torch.manual_seed(0)
    for _ in range(60):
        order = torch.randperm(len(images))[:64]
        loss = nn.functional.cross_entropy(model(images[order]), labels[order])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(images).argmax(1) == labels).float().mean().item()
    assert accuracy > 0.95, f"the tiny model did not learn the cue ({accuracy:.0%})"

    test_rows = marked(tmp_path / "test", 40, seed=1)
    listed = write_list(tmp_path / "test" / "list.csv", test_rows)
    out = tmp_path / "run"
    batch.run(str(listed), str(out), batch.Settings(model="tiny", methods=["gradcam"], targets=["top1"]),
              workers=0, bundle=bundle)
    table = batch.read_table(out)
    ranked = batch.ranked(table, "outside")
    marked_paths = {str(tmp_path / "test" / r["path"]) for r in test_rows if r["label"] == "marked"}
    first = ranked.head(len(marked_paths))
    hits = first["path"].isin(marked_paths).mean()
    assert hits >= 0.9, f"only {hits:.0%} of the top-ranked images carry the mark"
    # the maps sit outside the listed object (the grey square) too: box mass is low for the marked images
    assert table[table["path"].isin(marked_paths)]["box_mass"].mean() < table[
        ~table["path"].isin(marked_paths)]["box_mass"].mean()


@pytest.mark.parametrize("shape", [(7, 7), (8, 8), (56, 56), (12, 20)])
def test_the_chance_level_is_the_borders_share_of_the_area(shape):
    """An evenly spread map scores the border's share of the area (the outer BORDER of each side), whatever its
    cell count: 44% for an eighth; the statistic's own border mass of such a map says the same."""
    assert views.chance_level(*shape) == pytest.approx(1 - (1 - 2 * BORDER) ** 2)
    assert views.chance_level(*shape) == pytest.approx(batch.map_statistics(np.full(shape, 3.0))["border_mass"])


def test_with_a_box_the_chance_level_is_the_area_outside_it():
    assert views.chance_level(10, 10, (0.2, 0.2, 0.6, 0.7)) == pytest.approx(1 - 0.4 * 0.5)
    assert views.box_fractions([20, 10, 60, 30], (200, 100)) == (0.1, 0.1, 0.3, 0.3)
    assert views.box_fractions(None, (200, 100)) is None and views.box_fractions([0, 0, 1, 1], None) is None


def test_each_ranked_row_gets_its_chance_level_and_a_verdict_against_it():
    table = pd.DataFrame({
        "path": ["a", "b", "c"], "error": [None] * 3, "map_key": ["ka", "kb", "kc"], "map_h": [7, 56, 7],
        "map_w": [7, 56, 7], "border_mass": [0.9, 0.45, 0.1], "box_mass": [None] * 3, "box": [None] * 3,
    })
    outside = batch.ranked(table, "outside")
    chance = views.chance_levels(outside)
    assert chance.tolist() == pytest.approx([1 - (1 - 2 * BORDER) ** 2] * 3)
    verdicts = [views.against_chance(s, c) for s, c in zip(outside["outside"], chance, strict=True)]
    assert verdicts == ["above", "at", "below"]
    boxed = table.assign(box_mass=[0.5, 0.2, None], box=[[0, 0, 50, 50], [0, 0, 50, 100], None])
    outside = batch.ranked(boxed, "outside")
    sizes = {"a": (100, 100), "b": (100, 100)}
    assert views.chance_levels(outside, sizes.get).tolist() == pytest.approx([0.5, 0.75])  # b first (0.8 outside)
    assert views.chance_levels(outside, lambda path: None).isna().all()  # the image is gone: no chance level
    assert views.against_chance(0.8, float("nan")) == "unknown"
