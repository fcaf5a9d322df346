"""AppTest: the Batch page opens a run of explainers.batch, filters its table as the data says, ranks its maps, and
opens a row on Explore with the same image, model, method and target."""

from __future__ import annotations

import base64
import io
import re
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from explainers import render as rnd
from explainers.batch.access import root_paths
from explainers.batch.compare_runs import compare_runs
from explainers.batch.pipeline import BORDER, Settings
from explainers.batch.run import run
from explainers.batch.store import load_map, read_table
from explainers.batch.views import ABOVE_CHANCE
from tests.conftest import sample_path
from tests.ui.helpers import selection, start
from ui import state
from ui.batch import MEAN_SIZE, THUMB_SIZE, mean_maps, open_run
from ui.sidebar import RUN_SOURCE

PAGE = "app_pages/batch.py"
EXPLORE_TITLE = "Explore"


@pytest.fixture(scope="module")
def batch_root(tmp_path_factory):
    """The one batch folder the server allows in these tests ([batch] roots of a saliency.toml of their own)."""
    root = tmp_path_factory.mktemp("batch")
    config = tmp_path_factory.mktemp("config") / "saliency.toml"
    config.write_text(f"trust_code = false\n[batch]\nroots = [{str(root)!r}]\n")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SALIENCY_CONFIG", str(config))
        yield root


@pytest.fixture(scope="module")
def batch_run(batch_root):
    """A small run: ImageFolder-style class folders (so rows have labels and correctness), one unlabelled image
    and one unreadable file; Grad-CAM for the top two classes."""
    root = batch_root
    source = root / "images"
    (source / "Egyptian cat").mkdir(parents=True)
    (source / "tabby").mkdir()
    shutil.copy(sample_path("cat.png"), source / "Egyptian cat" / "cat.png")  # predicted Egyptian cat: correct
    shutil.copy(sample_path("coffee.png"), source / "tabby" / "coffee.png")  # predicted espresso: a mistake
    rng = np.random.default_rng(0)
    for number in range(2):
        pixels = (rng.random((60, 80, 3)) * 255).astype(np.uint8)
        Image.fromarray(pixels).save(source / "tabby" / f"noise{number}.png")
    frame = np.zeros((64, 64, 3), np.uint8)
    frame[:8], frame[-8:], frame[:, :8], frame[:, -8:] = 255, 255, 255, 255  # a white frame: mass on the border
    Image.fromarray(frame).save(source / "frame.png")
    (source / "broken.png").write_bytes(b"not a png")
    out = root / "run"
    run(str(source), str(out), Settings("efficientnet_lite0", ["gradcam"], ["top1", "top2"]), workers=0)
    table = read_table(out)
    return out, table.loc[table["error"].isna()].reset_index(drop=True)


def _open(folder) -> object:
    at = start(page=PAGE, timeout=600)
    at.text_input(key=state.BATCH_FOLDER).input(str(folder)).run()
    assert not at.exception, at.exception
    return at


def _table(at):
    tables = [d for d in at.dataframe if d.key and d.key.startswith(state.BATCH_TABLE)]
    assert len(tables) == 1, [d.key for d in at.dataframe]
    return tables[0]


def _gallery(at, marker: str) -> list[str]:
    """The captions of the one gallery whose every caption contains ``marker``."""
    found = [image.captions for image in at.main.get("image")
             if image.captions and all(marker in c for c in image.captions)]
    assert len(found) == 1, [image.captions for image in at.main.get("image")]
    return list(found[0])


def test_the_run_folder_is_still_open_after_a_visit_to_explore(batch_run):
    """Coming back from Explore, the Batch page still shows the run it had open (issue 18)."""
    out, rows = batch_run
    at = _open(out)
    assert len(_table(at).value) == len(rows)
    at.switch_page("app_pages/explore.py").run()
    assert not at.exception
    at.switch_page(PAGE).run()
    assert not at.exception, at.exception
    assert at.text_input(key=state.BATCH_FOLDER).value == str(out)
    assert len(_table(at).value) == len(rows)


def test_a_folder_that_is_no_run_gives_one_clear_message(batch_run):
    out, _ = batch_run
    at = _open(out.parent / "missing")
    assert len(at.error) == 1 and "does not exist" in at.error[0].value and "manifest.json" in at.error[0].value
    not_a_run = out.parent / "plain"
    not_a_run.mkdir()
    at.text_input(key=state.BATCH_FOLDER).input(str(not_a_run)).run()
    assert not at.exception
    assert len(at.error) == 1 and "no manifest.json" in at.error[0].value
    assert not [d for d in at.dataframe if d.key and d.key.startswith(state.BATCH_TABLE)]
    at.text_input(key=state.BATCH_FOLDER).input(str(out)).run()  # and the page still serves
    assert not at.exception and not at.error


def test_the_run_shows_its_summary_and_one_table_line_per_row(batch_run):
    out, rows = batch_run
    at = _open(out)
    assert not at.error
    assert len(rows) == 5 * 2  # five readable images × two targets
    table = _table(at).value
    assert len(table) == len(rows)
    assert sorted(table["image"]) == sorted(p.rsplit("/", 1)[-1] for p in rows["path"])
    prefix = "data:image/jpeg;base64,"
    assert all(isinstance(url, str) and url.startswith(prefix) for url in table["map"])  # every row has its thumbnail
    thumbnail = Image.open(io.BytesIO(base64.b64decode(table["map"].iloc[0][len(prefix):])))
    assert thumbnail.size == (THUMB_SIZE, THUMB_SIZE)
    labelled = rows.loc[rows["correct"].notna()].drop_duplicates("path")
    accuracy = labelled["correct"].astype(bool).mean()
    assert (f"6 images · {len(rows)} rows (image × method × target) · 1 error (1 unreadable image) · "
            f"accuracy **{accuracy:.1%}**") in [m.value for m in at.markdown]


def test_correctness_and_a_statistic_range_filter_the_rows_as_the_data_says(batch_run):
    out, rows = batch_run
    at = _open(out)
    at.selectbox(key=state.BATCH_CORRECT).set_value("wrong").run()
    wrong = int(rows["correct"].eq(False).sum())
    assert 0 < wrong < len(rows)
    assert len(_table(at).value) == wrong
    at.selectbox(key=state.BATCH_CORRECT).set_value("all").run()
    assert len(_table(at).value) == len(rows)
    slider = at.slider(key=state.view_key(state.BATCH_RANGE, "border_mass"))
    low, high = slider.value
    middle = round(float(rows["border_mass"].median()), 2)
    slider.set_value((low, middle)).run()
    inside = int(rows["border_mass"].between(low, middle).sum())
    assert 0 < inside < len(rows)
    assert len(_table(at).value) == inside
    at.selectbox(key=state.BATCH_CORRECT).set_value("correct").run()  # filters combine
    assert len(_table(at).value) == int((rows["border_mass"].between(low, middle) & rows["correct"].eq(True)).sum())


def test_the_border_view_ranks_the_largest_border_mass_first(batch_run):
    out, rows = batch_run
    at = _open(out)
    captions = _gallery(at, "on the border")
    first = rows.loc[rows["border_mass"].idxmax()]
    name = first["path"].rsplit("/", 1)[-1]
    assert captions[0].startswith(f"{name} · Grad-CAM · {first['target']} ({first['target_name']})")
    assert f"{first['border_mass']:.0%} on the border" in captions[0]
    shares = [int(re.search(r"(\d+)% on the border", c).group(1)) for c in captions]
    assert shares == sorted(shares, reverse=True)


def test_the_border_gallery_says_the_chance_level_and_marks_the_maps_above_it(batch_run):
    """The border is 44% of the area: a map spread evenly scores that much, so each caption and the gallery's
    caption say it, and only maps well above it are marked (issue 18)."""
    out, rows = batch_run
    # real maps here sit at or below chance (as the issue found): one row's border mass is raised to 0.9
    edited = out.parent / "edited"
    shutil.copytree(out, edited)
    part = sorted((edited / "table").glob("part-*.parquet"))[0]
    table = pq.read_table(part).to_pandas()
    raised = table.index[table["error"].isna()][0]
    table.loc[raised, "border_mass"] = 0.9
    pq.write_table(pa.Table.from_pandas(table, schema=pq.read_schema(part), preserve_index=False), part)
    rows = read_table(edited).loc[lambda t: t["error"].isna()]
    at = _open(edited)
    captions = _gallery(at, "on the border")
    chance = 1 - (1 - 2 * BORDER) ** 2  # the outer eighth of each side
    assert any(f"Chance level: a map spread evenly over the image scores {chance:.0%} of its mass on the border"
               in c.value for c in at.caption)
    ranked = rows.sort_values("border_mass", ascending=False, kind="stable").head(len(captions))
    for text, share in zip(captions, ranked["border_mass"], strict=True):
        assert f"(chance {chance:.0%})" in text
        above = share >= chance + ABOVE_CHANCE * (1 - chance)
        below = share <= chance - ABOVE_CHANCE * chance
        assert ("⚠ above chance" in text) == above and ("below chance" in text) == below
        assert ("at chance" in text) == (not above and not below)
    assert "⚠ above chance" in captions[0] and "90% on the border" in captions[0]
    threshold = chance + ABOVE_CHANCE * (1 - chance)
    assert sum("⚠ above chance" in c for c in captions) == int((ranked["border_mass"] >= threshold).sum())


def test_the_mean_map_per_class_has_one_entry_per_class(batch_run):
    out, rows = batch_run
    at = _open(out)
    top1 = rows.loc[rows["target"] == "top1"]
    captions = _gallery(at, " image")
    labels = top1["label_name"].dropna()
    assert captions == [f"{name} · {count} image{'s' if count != 1 else ''}"
                        for name, count in labels.value_counts().sort_index().items()]
    at.radio(key=state.BATCH_MEAN_BY).set_value("prediction_name").run()
    assert len(_gallery(at, " image")) == top1["prediction_name"].nunique()
    # a class of one image: its mean is that image's |map| resized and scaled to sum 1
    run_ = open_run(str(out), root_paths())
    means = {name: values for name, _, values in mean_maps(run_, run_.rows[run_.rows["target"] == "top1"],
                                                           "label_name")}
    cat = top1.loc[top1["label_name"] == "Egyptian cat"].iloc[0]
    alone = np.abs(rnd.resize(load_map(out, cat["map_file"], cat["map_key"]), (MEAN_SIZE, MEAN_SIZE)))
    np.testing.assert_allclose(means["Egyptian cat"], alone / alone.sum(), rtol=1e-5)


def test_a_selected_row_opens_on_explore_with_its_method_and_target(batch_run):
    out, rows = batch_run
    at = _open(out)
    table = _table(at)
    shown = table.value
    # a runner-up (a target Explore would not pick by itself) on an image that is no sample of the sidebar's
    position = int(np.flatnonzero((shown["image"] == "noise1.png") & (shown["target"] == "top2"))[0])
    row = rows.loc[(rows["path"].str.endswith("noise1.png")) & (rows["target"] == "top2")].iloc[0]
    at.session_state[table.key] = {"selection": {"rows": [position]}}
    at.run()
    assert not at.exception and not at.error
    at.button(key=state.BATCH_OPEN_EXPLORE).click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.title[0].value == EXPLORE_TITLE
    assert at.selectbox(key=state.METHOD).value == "gradcam"
    assert at.session_state[state.TARGET_MODE] == "Class"
    assert at.selectbox(key=state.TARGET_CLASS).value == int(row["target_index"]) != int(row["prediction"])
    chosen = selection(at)
    assert (chosen.image_name, chosen.image_hash, chosen.model) == ("noise1.png", row["image_hash"],
                                                                    "efficientnet_lite0")
    assert at.segmented_control(key=state.IMAGE_SOURCE).value == RUN_SOURCE  # the sidebar shows where it is from


def test_a_run_on_uploads_with_labels_and_boxes_opens_and_ranks_by_the_mass_outside_the_box():
    at = start(page=PAGE, timeout=600)
    cat, coffee = sample_path("cat.png").read_bytes(), sample_path("coffee.png").read_bytes()
    at.file_uploader(key=state.BATCH_UPLOADS).set_value([("cat.png", cat, "image/png"),
                                                         ("coffee.png", coffee, "image/png")]).run()
    size = Image.open(sample_path("cat.png")).size
    labels = ("path,label,x0,y0,x1,y1\n"
              f"cat.png,Egyptian cat,0,0,{size[0] // 2},{size[1] // 2}\n"  # the top-left quarter only
              "coffee.png,espresso,,,,\n").encode()
    at.file_uploader(key=state.BATCH_LABELS).set_value(("labels.csv", labels, "text/csv")).run()
    at.button(key=state.BATCH_LAUNCH).click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    folder = at.text_input(key=state.BATCH_FOLDER).value
    assert folder.endswith("/run")
    rows = open_run(folder, [Path(folder).parent]).rows
    table = _table(at).value
    assert sorted(table["image"]) == ["cat.png", "coffee.png"] and table["correct"].tolist() == [True, True]
    assert rows["box_mass"].notna().tolist() == [True, False]  # the box of the one image that has one
    captions = _gallery(at, "outside the box")
    assert len(captions) == 1 and captions[0].startswith("cat.png · Grad-CAM · top1")
    assert f"{1 - rows['box_mass'].iloc[0]:.0%} outside the box" in captions[0]
    assert "(chance 75%)" in captions[0]  # the box is a quarter of the image: an even map has 75% outside it
    # a launched run is this session's: another session cannot open it by its path
    other = _open(folder)
    assert len(other.error) == 1 and "not inside the batch folders" in other.error[0].value
    shutil.rmtree(Path(folder).parent)  # the launched run's temporary folder (images, labels, run)


def test_a_folder_outside_the_batch_folders_gets_one_message_whether_or_not_it_exists(batch_run, tmp_path):
    out, _ = batch_run
    (out.parent / "escape").symlink_to(tmp_path, target_is_directory=True)  # a symlink inside that leads out
    outside = [tmp_path / "missing", tmp_path, "/etc/passwd", "/root/.ssh", "/proc/self", out.parent / ".." / "x",
               f"{out}/../../{tmp_path.name}", out.parent / "escape", "~"]
    messages = set()
    at = start(page=PAGE, timeout=600)
    for folder in outside:
        at.text_input(key=state.BATCH_FOLDER).input(str(folder)).run()
        assert not at.exception and len(at.error) == 1, folder
        messages.add(at.error[0].value.replace(str(folder), "FOLDER").replace(repr(str(folder)), "FOLDER"))
        assert "not inside the batch folders this server allows" in at.error[0].value, folder
    assert len({m.split(" is not inside")[1] for m in messages}) == 1  # nothing says whether the path exists
    assert not [d for d in at.dataframe if d.key and d.key.startswith(state.BATCH_TABLE)]


def test_a_crafted_run_shows_no_file_from_outside_and_no_markdown_of_its_own(batch_run, tmp_path):
    out, rows = batch_run
    crafted = out.parent / "crafted"
    shutil.copytree(out, crafted)
    outside_image = tmp_path / "secret.png"
    Image.new("RGB", (32, 32), "red").save(outside_image)
    injected = "![x](https://example.invalid/track.png) [click](https://example.invalid)"
    for part in sorted((crafted / "table").glob("part-*.parquet")):
        table = pq.read_table(part).to_pandas()
        good = table["error"].isna()
        first, second, third = table.index[good][:3]
        table.loc[first, "map_file"] = "../../../../../../etc/passwd"
        table.loc[second, "path"] = str(outside_image)
        table.loc[third, ["label_name", "prediction_name", "target_name"]] = injected
        table.to_parquet(part, index=False)
    manifest = (crafted / "manifest.json").read_text().replace('"engine": "local"', f'"engine": "{injected}"')
    (crafted / "manifest.json").write_text(manifest)
    at = _open(crafted)
    assert not at.exception and not at.error, [e.value for e in at.error]
    frame = _table(at).value
    assert len(frame) == len(rows)
    problems = [p for p in frame["problem"] if isinstance(p, str)]
    assert len(problems) == 2 and "not inside the run's maps/ folder" in " ".join(problems)
    assert "outside the batch folders" in frame.loc[frame["path"] == str(outside_image), "problem"].iloc[0]
    assert frame.loc[frame["path"] == str(outside_image), "map"].isna().all()
    assert frame["map"].notna().sum() == len(rows) - 2  # every other row still has its thumbnail
    shown = [m.value for m in [*at.markdown, *at.caption]]
    shown += [c for image in at.main.get("image") for c in (image.captions or [])]
    assert not [text for text in shown if "](https://example.invalid" in text and "\\]" not in text]
    assert any("\\!\\[x\\]" in text or "!\\[x\\]" in text for text in shown)  # shown, escaped


@pytest.fixture(scope="module")
def other_run(batch_run, batch_root):
    """The same images, copied to another folder, explained by another model: the bundled digits LeNet-5 (its own
    classes, its own 28 px input), Grad-CAM top1, and one extra image the first run does not have."""
    out, _ = batch_run
    source = batch_root / "images-copy"
    shutil.copytree(batch_root / "images", source)
    Image.fromarray((np.random.default_rng(5).random((40, 40, 3)) * 255).astype(np.uint8)).save(source / "extra.png")
    other = batch_root / "run-digits"
    run(str(source), str(other), Settings("lenet_digits", ["gradcam"], ["top1"]), workers=0)
    return other


def test_a_second_run_of_another_model_shows_the_rows_where_the_maps_disagree_most(batch_run, other_run):
    out, _ = batch_run
    at = _open(out)
    at.text_input(key=state.BATCH_COMPARE_FOLDER).input(str(other_run)).run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    texts = [m.value.replace("\\", "") for m in at.markdown] + [c.value.replace("\\", "") for c in at.caption]
    assert any("model **efficientnet_lite0**" in t and "model **lenet_digits**" in t for t in texts), texts
    # the 5 readable images in both (the broken file has no content to match), one only in the second
    hashes = [set(read_table(folder)["image_hash"].dropna()) for folder in (out, other_run)]
    assert (len(hashes[0] & hashes[1]), len(hashes[0] - hashes[1]), len(hashes[1] - hashes[0])) == (5, 0, 1)
    assert any(t.startswith("5 images in both runs · 0 only in this run · 1 only in the other") for t in texts)
    tables = [d.value for d in at.dataframe if "Spearman" in d.value.columns]
    assert len(tables) == 1
    table = tables[0]
    expected = compare_runs(out, read_table(out), other_run, read_table(other_run)).pairs
    expected = expected.loc[(expected["method"] == "gradcam") & (expected["target"] == "top1")]
    assert table["image"].tolist() == [Path(p).name for p in expected["path_a"]]
    assert table["Spearman"].tolist() == sorted(table["Spearman"])  # lowest agreement first
    assert table["class (other run)"].tolist() == expected["target_name_b"].tolist()
    # the two maps side by side, each captioned with its run's model
    pairs = [[c.replace("\\", "") for c in image.captions] for image in at.main.get("image")
             if image.captions and len(image.captions) == 2 and "lenet" in image.captions[1]]
    assert len(pairs) == len(expected)
    first = Path(expected["path_a"].iloc[0]).name
    assert pairs[0][0].startswith(f"efficientnet_lite0 · {first}") and pairs[0][1].startswith(f"lenet_digits · {first}")


def test_the_second_folder_follows_the_same_rules_as_the_first(batch_run, tmp_path):
    out, _ = batch_run
    at = _open(out)
    at.text_input(key=state.BATCH_COMPARE_FOLDER).input(str(tmp_path)).run()
    assert not at.exception and len(at.error) == 1
    assert "not inside the batch folders this server allows" in at.error[0].value
    assert len(_table(at).value)  # the first run is still shown
    at.text_input(key=state.BATCH_COMPARE_FOLDER).input(str(out)).run()
    assert any("That is this run" in w.value for w in at.warning)
