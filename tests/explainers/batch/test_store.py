"""The run folder (explainers.batch.store): a run killed between parts resumes to the same table, never with a
half-written part, and only with the same settings."""

from __future__ import annotations

import pytest

from explainers import batch
from explainers.batch import local
from explainers.errors import SaliencyError

from ..helpers import assert_same_runs, run_settings, tiny_bundle


@pytest.mark.slow
def test_an_interrupted_run_resumes_to_the_same_table(dataset, reference, tmp_path, monkeypatch):
    out = tmp_path / "interrupted"
    real = local.explain_batch
    calls = []

    def dies_on_the_fourth_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt  # a Ctrl-C (or a kill) in the middle of the fourth batch
        return real(*args, **kwargs)

    monkeypatch.setattr(local, "explain_batch", dies_on_the_fourth_batch)
    with pytest.raises(KeyboardInterrupt):
        batch.run(str(dataset), str(out), run_settings(batch_size=32), workers=0, bundle=tiny_bundle())
    monkeypatch.setattr(local, "explain_batch", real)
    assert len(list((out / "table").glob("part-*.parquet"))) == 3
    # a half-written part from a kill is a temporary file, never read
    (out / "table" / ".part-00003.parquet.tmp").write_bytes(b"half a parquet file")
    with pytest.raises(SaliencyError, match="--resume"):
        batch.run(str(dataset), str(out), run_settings(batch_size=32), workers=0, bundle=tiny_bundle())
    with pytest.raises(SaliencyError, match="other settings"):
        batch.run(str(dataset), str(out), run_settings(batch_size=32, seed=12), workers=0, bundle=tiny_bundle(),
                  resume=True)
    summary = batch.run(str(dataset), str(out), run_settings(batch_size=32), workers=0, bundle=tiny_bundle(),
                        resume=True)
    assert summary["skipped"] == 96 and summary["done_now"] == 201 - 96
    assert_same_runs(reference, out)
    again = batch.run(str(dataset), str(out), run_settings(batch_size=32), workers=0, bundle=tiny_bundle(),
                      resume=True)
    assert again["done_now"] == 0  # nothing left to do: no row is written twice
    assert_same_runs(reference, out)


def test_a_folder_without_a_run_says_what_is_missing(tmp_path):
    with pytest.raises(SaliencyError, match=r"no table/part-\*\.parquet"):
        batch.read_table(tmp_path)
    with pytest.raises(SaliencyError, match="no manifest.json"):
        batch.read_manifest(tmp_path)
