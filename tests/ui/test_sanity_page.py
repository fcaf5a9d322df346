"""The Sanity checks page: on demand, the verdict table, the cascade curves and (for digits) data randomisation."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest

from explainers import METHODS
from explainers.trust.similarity import METRIC_LABELS
from ui import method_docs as docs
from ui.sanity import FLAG_COLUMN, PUBLISHED_COLUMN, SHORT_LABELS

from .helpers import start, texts

PAGE = "app_pages/sanity.py"


def _open(model: str = "efficientnet_lite0") -> AppTest:
    at = start(session={"model": model}, page=PAGE, timeout=600)
    assert not at.error
    return at


def test_nothing_runs_until_asked_then_the_verdict_lists_methods_and_controls():
    at = _open()
    assert not at.table and any("Run the checks" in t for t in texts(at))
    at.multiselect(key="sanity.methods").set_value(["gradcam", "guided_backprop"]).run()
    at.number_input(key="sanity.steps").set_value(2).run()
    at.toggle(key="sanity.run").set_value(True).run()
    assert not at.exception and not at.error
    table = at.table[0].value
    table["method"] = table["method"].str.replace("\u200b", "")  # the names may wrap after their underscores
    assert list(table["method"]) == ["gradcam", "guided_backprop", "sobel", "random"]
    # one column per similarity measure, what the paper found, a flag
    assert list(table.columns) == ["method", *SHORT_LABELS.values(), PUBLISHED_COLUMN, FLAG_COLUMN]
    assert len(SHORT_LABELS) == len(METRIC_LABELS)
    assert table.loc[table["method"] == "sobel", "ρ |map|"].item().startswith("FAIL 1.000")
    assert table.loc[table["method"] == "guided_backprop", PUBLISHED_COLUMN].item() == "fails"
    # a row is flagged exactly where one of its measures says the opposite of the paper, and each flag has its
    # sentence on the page
    warnings = [w.value for w in at.warning]
    flagged = []
    for _, row in table.iterrows():
        words = {row[label].split()[0] for label in SHORT_LABELS.values()}
        expected = {"passes": "FAIL", "fails": "pass"}.get(row[PUBLISHED_COLUMN])
        assert bool(row[FLAG_COLUMN]) is (expected in words), row.to_dict()
        if row[FLAG_COLUMN]:
            flagged.append(row["method"])
            name = row["method"].replace("_", "\\_")
            assert any(w.startswith(f"**{name}** (Adebayo et al. found") for w in warnings), warnings
    assert flagged == ["gradcam"], table  # two steps: Grad-CAM's rank still follows, its structure does not
    others = at.dataframe[0].value
    assert {"random logit", "input invariance"} <= set(others.columns)
    shown = " ".join(texts(at))
    assert "after 2 of 19 steps" in shown and "below 0.5" in shown  # the thresholds are on the page
    spec = next(c.proto.spec for c in at.get("plotly_chart"))
    assert '"name":"gradcam"' in spec.replace(" ", "") and "threshold 0.5" in spec
    at.segmented_control(key="sanity.metric").set_value("ssim").run()
    assert not at.exception and "SSIM" in next(c.proto.spec for c in at.get("plotly_chart"))
    # the Methods page's cards now add what was measured here, beside the paper's finding
    at.switch_page("app_pages/methods.py").run()
    assert not at.exception
    card = at.get_by_key(docs.card(METHODS["gradcam"]).key)
    notes = [m.value.replace("\\", "") for m in [*card.warning, *card.info]]  # markdown escapes dropped
    assert any("Adebayo et al. (2018) found" in m.value for m in card.markdown)
    assert len(notes) == 1 and notes[0].startswith("Here (on cat.png, efficientnet_lite0, 2 of 19 cascade steps)")
    assert "Unlike the paper" in notes[0] and card.warning  # flagged on the Sanity page, so a warning here
    gbp = at.get_by_key(docs.card(METHODS["guided_backprop"]).key)
    assert [m.value for m in gbp.info][0].startswith("Here (on cat.png") and not gbp.warning
    vanilla = at.get_by_key(docs.card(METHODS["vanilla"]).key)  # not checked in this session: the paper only
    assert not vanilla.info and not vanilla.warning


def test_the_digits_model_adds_data_randomisation_against_its_shuffled_label_twin():
    at = _open("lenet_digits")
    at.multiselect(key="sanity.methods").set_value(["vanilla", "gradcam"]).run()
    at.number_input(key="sanity.steps").set_value(2).run()
    at.toggle(key="sanity.run").set_value(True).run()
    assert not at.exception and not at.error
    assert any(t == "Data randomisation" for t in texts(at))
    data = at.dataframe[-1].value  # after the verdict tables
    assert list(data["method"]) == ["vanilla", "gradcam", "sobel"]
    assert data.loc[data["method"] == "sobel", "Spearman |map|"].item() == 1.0  # no model: the same map
    assert any("first layer" in t for t in texts(at))  # invariance is skipped, and the page says why
