"""The run folder (explainers.batch.store): a run killed between parts resumes to the same table, never with a
half-written part, and only with the same settings."""

from __future__ import annotations

import errno

import pytest

from explainers import batch
from explainers.batch import local, store
from explainers.errors import SaliencyError

from ..helpers import assert_same_runs, run_settings, squares, tiny_bundle


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


def test_a_full_disk_is_one_error_and_the_resumed_run_is_whole(tmp_path, monkeypatch):
    squares(tmp_path / "images", 10)
    source, settings = str(tmp_path / "images"), dict(batch_size=2)
    batch.run(source, str(tmp_path / "whole"), run_settings(**settings), workers=0, bundle=tiny_bundle())
    real, calls = store.pq.write_table, []

    def full_on_the_third_part(table, where, *args, **kwargs):
        calls.append(where)
        if len(calls) == 3:
            with open(where, "wb") as handle:  # half a part, then the disk is full
                handle.write(b"PAR1 half")
            raise OSError(errno.ENOSPC, "No space left on device", str(where))
        return real(table, where, *args, **kwargs)

    monkeypatch.setattr(store.pq, "write_table", full_on_the_third_part)
    out = tmp_path / "full"
    with pytest.raises(SaliencyError, match=r"cannot write the run folder .*No space left on device") as caught:
        batch.run(source, str(out), run_settings(**settings), workers=0, bundle=tiny_bundle())
    assert str(out) in str(caught.value) and isinstance(caught.value.__cause__, OSError)
    monkeypatch.setattr(store.pq, "write_table", real)
    assert sorted(p.name for p in (out / "table").iterdir()) == ["part-00000.parquet", "part-00001.parquet"]
    summary = batch.run(source, str(out), run_settings(**settings), workers=0, bundle=tiny_bundle(), resume=True)
    assert summary["skipped"] == 4 and summary["done_now"] == 6
    assert_same_runs(tmp_path / "whole", out, same_batches=True)


def test_an_out_under_a_file_is_one_error_naming_it(tmp_path):
    squares(tmp_path / "images", 2)
    (tmp_path / "file.txt").write_text("not a folder")
    out = tmp_path / "file.txt" / "run"
    with pytest.raises(SaliencyError, match="cannot write the run folder .*Not a directory"):
        batch.run(str(tmp_path / "images"), str(out), run_settings(), workers=0, bundle=tiny_bundle())


def test_image_and_text_manifests_come_from_one_builder():
    """The same keys in the same order, each run saying its modality; only what its maps are differs (and an image
    run's map statistics, which a text run has none of)."""
    from explainers.batch.pipeline import Settings
    from explainers.batch.text import TEXT_MAPS

    image = store._manifest(Settings(model="m", methods=["vanilla"], targets=["top1"]), "local", "src", ["a", "b"])
    text = store._manifest(Settings(model="m", methods=["vanilla"], targets=["top1"], modality="text"), "local",
                           "src.txt", ["a", "b"])
    assert [k for k in image if k != "statistics"] == list(text)
    assert image["modality"] == "image" and text["modality"] == "text"
    assert text["maps"] == TEXT_MAPS and "layer methods" in image["maps"] and "entropy" in image["statistics"]
    assert image["classes"] == text["classes"] == 2 and image["kind"] == text["kind"]
