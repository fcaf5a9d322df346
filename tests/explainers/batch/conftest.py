"""A run shared by the batch tests: 200 generated images and one corrupt file, explained once."""

from __future__ import annotations

from pathlib import Path

import pytest

from explainers import batch

from ..helpers import run_settings, squares, tiny_bundle, write_list


@pytest.fixture(scope="package")
def dataset(tmp_path_factory) -> Path:
    """200 squares and one corrupt file, listed in images.csv with labels and boxes."""
    folder = tmp_path_factory.mktemp("squares")
    rows = squares(folder / "images", 200)
    (folder / "images" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a PNG")
    rows.append({"path": "broken.png", "label": "red", "x0": "", "y0": "", "x1": "", "y1": ""})
    return write_list(folder / "images" / "images.csv", rows)


@pytest.fixture(scope="package")
def reference(dataset, tmp_path_factory) -> Path:
    """The dataset's run in batches of 32, decoded in this process."""
    out = tmp_path_factory.mktemp("runs") / "reference"
    summary = batch.run(str(dataset), str(out), run_settings(batch_size=32), workers=0, bundle=tiny_bundle())
    assert summary["done_now"] == 201 and summary["unreadable"] == 1  # the broken file is one error row
    return out
