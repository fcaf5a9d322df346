"""ROAR (Hooker et al. 2019, arXiv:1806.10758) on the digits: a smoke run of the whole procedure (a few hundred
digits, one k, one epoch) and the removal step exactly."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from explainers import ParameterError
from explainers.trust.roar import remove_top, roar


def test_remove_top_replaces_exactly_the_top_pixels():
    images = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).view(2, 1, 4, 4)
    maps = np.random.default_rng(0).random((2, 4, 4)).astype(np.float32)
    out = remove_top(images, maps, 0.25, torch.tensor([-1.0]).view(1, 1, 1, 1))
    for row in range(2):
        changed = (out[row, 0] != images[row, 0]).numpy()
        assert changed.sum() == 4 and (out[row, 0][torch.from_numpy(changed)] == -1).all()
        assert maps[row][changed].min() > maps[row][~changed].max()
    per_image = remove_top(images, maps, 0.5, images.mean(dim=(2, 3), keepdim=True))
    assert torch.equal(per_image[1][per_image[1] != images[1]].unique(), images[1].mean().view(1))


def test_roar_smoke():
    torch.manual_seed(0)
    result = roar(("gradcam", "random"), (0.5,), n_train=300, n_test=100, epochs=1, batch_size=64)
    print(f"\nROAR smoke (300 train, 100 test, 1 epoch): {result.table()}, {result.elapsed_s:.1f} s")
    assert result.methods == ["gradcam", "random"] and result.fractions == [0.5]
    for values in result.accuracy.values():
        assert len(values) == 1 and 0.0 <= values[0] <= 1.0
    assert 0.0 <= result.baseline <= 1.0 and result.original_accuracy > 0.9
    assert [row["method"] for row in result.table()] == ["gradcam", "random"]
    assert set(result.table()[0]) == {"method", "k=0%", "k=50%"}
    json.dumps(result.to_dict(), allow_nan=False)


def test_roar_cli_writes_the_table(tmp_path, capsys):
    from explainers.cli.main import main

    status = main(["roar", "--methods", "random", "--k", "30", "--n-train", "200", "--n-test", "50", "--epochs", "1",
                   "--threads", "1", "--out", str(tmp_path), "--quiet"])
    assert status == 0
    rows = (tmp_path / "roar.csv").read_text().splitlines()
    assert rows[0] == "method,k=0%,k=30%" and rows[1].startswith("random,")
    assert json.loads((tmp_path / "roar.json").read_text())["settings"]["n_train"] == 200
    assert "random" in capsys.readouterr().out


@pytest.mark.parametrize("options", [{"fractions": (0.0,)}, {"fill": "zero"}, {"methods": ()}])
def test_roar_refuses_bad_options(options):
    kwargs = {"methods": ("random",), "fractions": (0.5,), "n_train": 10, "n_test": 10, "epochs": 1, **options}
    with pytest.raises(ParameterError):
        roar(**kwargs)
