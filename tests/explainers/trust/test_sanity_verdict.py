"""The sanity verdict on synthetic cascades: one rule per similarity measure over the whole curve, measures that
disagree, and the flag (with its reason) where a measured verdict differs from the published one (issue 18)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from explainers import METHODS, ParameterError, Sanity
from explainers.trust import sanity
from explainers.trust.similarity import METRIC_LABELS, METRICS, Similarity

THRESHOLD = sanity.MODEL_BELOW


def _cascade(curves: dict[str, tuple[str, dict[str, list[float | None]]]], params=None) -> sanity.CascadeResult:
    """A CascadeResult of one image whose methods have the given curves (step 0 first); a measure not given
    repeats the first measure's curve."""
    steps = len(next(iter(curves.values()))[1]["spearman_abs"])
    blocks = [sanity.Block(f"block{i}", (f"block{i}",)) for i in range(steps - 1)]
    records = [sanity.CascadeStep(i, "original" if i == 0 else blocks[-i].name, None if i == 0 else blocks[-i],
                                  np.zeros(1, int), np.zeros(1), None) for i in range(steps)]
    methods = {}
    for key, (method, by_metric) in curves.items():
        full = {m: by_metric.get(m, by_metric["spearman_abs"]) for m in METRICS}
        similarity = [[{m: Similarity(full[m][i], None if full[m][i] is not None else "undefined: constant map")
                        for m in METRICS}] for i in range(steps)]
        methods[key] = sanity.MethodCascade(key, method, dict((params or {}).get(key, {})), similarity,
                                            np.zeros((steps, 1, 4, 4), np.float32))
    return sanity.CascadeResult("synthetic", np.zeros(1, int), records, methods, blocks, None, 0, 0.0, [])


def test_a_measure_is_judged_on_its_whole_curve_not_one_step():
    """A curve with one high step passes when it is low elsewhere; a curve that drops only at its last step
    (guided backprop's shape) fails although that step is low: the mean of steps 1.. decides, not one step."""
    spike = [1.0, 0.1, 0.9, 0.1, 0.1, 0.1]  # one noisy step above the threshold, as Grad-CAM's coarse map jumps
    late = [1.0, 1.0, 0.98, 0.95, 0.9, 0.1]  # survives the top blocks, changes only near the input
    verdict = sanity.verdict(_cascade({"vanilla": ("vanilla", {"spearman_abs": spike}),
                                       "guided_backprop": ("guided_backprop", {"spearman_abs": late})}))
    for key, curve in (("vanilla", spike), ("guided_backprop", late)):
        check = verdict.rows[key]["model_randomisation"].measures["spearman_abs"]
        assert check.value == pytest.approx(np.mean(curve[1:]))
        assert check.passed is bool(np.mean(curve[1:]) < THRESHOLD["spearman_abs"])
        assert check.curve == tuple(curve)
    assert verdict.rows["vanilla"]["model_randomisation"].passed is True
    assert verdict.rows["guided_backprop"]["model_randomisation"].passed is False
    late_check = verdict.rows["guided_backprop"]["model_randomisation"].measures["spearman_abs"]
    assert late_check.stays_below_from == 5  # where it finally drops, reported beside the verdict
    assert verdict.disagreement("vanilla") is None and verdict.disagreement("guided_backprop") is None


def test_measures_that_disagree_are_reported_each_and_flagged_against_the_paper_with_a_reason():
    """Guided Grad-CAM's shape in issue 18: |map| (and SSIM, HOG) change, the signed map stays at 0.82. The paper
    found it fails, so the three measures that pass are flagged, and the sentence says which measures pass, which
    fail, with their values, and what each looks at."""
    signed = [1.0, 0.9, 0.85, 0.82, 0.82, 0.8]
    low = [1.0, 0.5, 0.3, 0.2, 0.1, 0.1]
    verdict = sanity.verdict(_cascade({"guided_gradcam": ("guided_gradcam", {
        "spearman_abs": low, "spearman": signed, "ssim": low, "hog": low})}))
    check = verdict.rows["guided_gradcam"]["model_randomisation"]
    assert check.passed is None and not check.agree  # mixed: no single word for it
    assert check.decided(True) == ["spearman_abs", "ssim", "hog"] and check.decided(False) == ["spearman"]
    assert check.summary() == "passes on Spearman |map|, SSIM, HOG similarity; fails on Spearman signed"
    assert check.cell() == "mixed (3/4 pass)"
    assert METHODS["guided_gradcam"].sanity is Sanity.FAILS
    flag = verdict.disagreement("guided_gradcam")
    assert flag is not None and flag.measures == ("spearman_abs", "ssim", "hog")
    assert flag.reason.startswith("Passes on Spearman |map|")
    assert f"not on Spearman signed ({np.mean(signed[1:]):.2f})" in flag.reason
    assert f"Spearman |map| ({np.mean(low[1:]):.2f})" in flag.reason
    assert "the ranking of |map|" in flag.reason and "the signed ranking" in flag.reason
    assert flag.reason.index("changed") < flag.reason.index("survived")
    assert list(verdict.disagreements()) == ["guided_gradcam"]
    text = verdict.table()
    for metric in METRICS:
        assert METRIC_LABELS[metric] in text
    assert "DIFFERS" in text and flag.reason in text
    payload = json.loads(json.dumps(verdict.to_dict(), allow_nan=False))
    assert payload["disagreements"]["guided_gradcam"]["reason"] == flag.reason
    assert payload["rows"]["guided_gradcam"]["model_randomisation"]["measures"]["spearman"]["passed"] is False


def test_the_reason_follows_the_data_not_the_method():
    """The same curves give the same sentence whichever method carries them; a method the paper found passes
    and that fails every measure here gets its own sentence; one that agrees with the paper gets none."""
    stays = [1.0, 0.95, 0.9, 0.9, 0.85, 0.2]
    verdict = sanity.verdict(_cascade({
        "vanilla": ("vanilla", {"spearman_abs": stays}),
        "gradcam": ("gradcam", {"spearman_abs": [1.0, 0.1, 0.0, 0.1, 0.0, 0.0]}),
        "guided_backprop": ("guided_backprop", {"spearman_abs": [1.0, 0.1, 0.0, 0.1, 0.0, 0.0]}),
    }))
    vanilla = verdict.disagreement("vanilla")
    assert vanilla.measures == tuple(METRICS)
    assert vanilla.reason.startswith("No measure's mean over the cascade is below its threshold")
    assert "stays below it only from step 5" in vanilla.reason
    assert verdict.disagreement("gradcam") is None
    gbp = verdict.disagreement("guided_backprop")
    assert gbp.reason.startswith("Every measure's mean over the cascade is below its threshold")
    mixed_vanilla = sanity.verdict(_cascade({"vanilla": ("vanilla", {
        "spearman_abs": [1.0, 0.1, 0.1, 0.1, 0.1, 0.1], "spearman": stays,
        "ssim": [1.0, 0.1, 0.1, 0.1, 0.1, 0.1], "hog": [1.0, 0.1, 0.1, 0.1, 0.1, 0.1]})}))
    mixed_ggc = sanity.verdict(_cascade({"guided_gradcam": ("guided_gradcam", {
        "spearman_abs": [1.0, 0.1, 0.1, 0.1, 0.1, 0.1], "spearman": stays,
        "ssim": [1.0, 0.1, 0.1, 0.1, 0.1, 0.1], "hog": [1.0, 0.1, 0.1, 0.1, 0.1, 0.1]})}))
    # vanilla (found to pass) differs on the signed measure, Guided Grad-CAM (found to fail) on the other three;
    # both sentences describe the same data the same way
    assert mixed_vanilla.disagreement("vanilla").measures == ("spearman",)
    assert mixed_ggc.disagreement("guided_gradcam").measures == ("spearman_abs", "ssim", "hog")
    assert mixed_vanilla.disagreement("vanilla").reason == mixed_ggc.disagreement("guided_gradcam").reason


def test_controls_untested_methods_and_wrappers_against_the_published_verdict():
    flat = {"spearman_abs": [1.0, 1.0, 1.0]}
    verdict = sanity.verdict(_cascade(
        {"sobel": ("sobel", flat), "occlusion": ("occlusion", flat), "eigencam": ("eigencam", flat),
         "smoothgrad": ("smoothgrad", flat), "sg_gbp": ("smoothgrad", flat)},
        params={"sg_gbp": {"base": "guided_backprop"}}))
    for key in ("sobel", "occlusion", "eigencam"):  # no model-randomisation finding to differ from
        assert verdict.rows[key]["model_randomisation"].passed is False and verdict.disagreement(key) is None
    # a wrapper carries its base's finding: SmoothGrad of vanilla was found to pass, of guided backprop to fail
    assert verdict.published["smoothgrad"].sanity is Sanity.PASSES
    assert verdict.expected("smoothgrad") == "passes model randomisation (as vanilla)"
    assert verdict.disagreement("smoothgrad") is not None
    assert verdict.published["sg_gbp"].sanity is Sanity.FAILS and verdict.disagreement("sg_gbp") is None
    assert METHODS["smoothgrad"].published_verdict({"base": "guided_backprop"}).source == "guided_backprop"
    assert METHODS["vanilla"].published_verdict().label == Sanity.PASSES.label


def test_constant_steps_count_as_changed_and_thresholds_are_per_measure():
    verdict = sanity.verdict(_cascade({"vanilla": ("vanilla", {
        "spearman_abs": [1.0, 0.9, None, None], "spearman": [1.0, None, None, None],
        "ssim": [1.0, 0.45, 0.45, 0.45], "hog": [1.0, 0.45, 0.45, 0.45]})}))
    checks = verdict.rows["vanilla"]["model_randomisation"].measures
    assert checks["spearman_abs"].value == pytest.approx(0.3) and "2 of 3 steps" in checks["spearman_abs"].note
    assert checks["spearman"].value is None and checks["spearman"].passed is True
    assert checks["spearman"].cell() == "pass (constant map)"
    # one measure's threshold moves only that measure's verdict
    stricter = sanity.verdict(_cascade({"vanilla": ("vanilla", {
        "spearman_abs": [1.0, 0.45, 0.45], "ssim": [1.0, 0.45, 0.45]})}),
        thresholds=sanity.Thresholds(model_below={**THRESHOLD, "ssim": 0.4}))
    measures = stricter.rows["vanilla"]["model_randomisation"].measures
    assert measures["spearman_abs"].passed is True and measures["ssim"].passed is False
    assert "SSIM 0.4" in stricter.rules()["model_randomisation"]
    with pytest.raises(ParameterError, match="unknown similarity 'pearson'"):
        sanity.Thresholds(model_below={"pearson": 0.5})


def test_a_threshold_given_for_one_measure_keeps_the_others_at_their_defaults():
    thresholds = sanity.Thresholds(model_below={"ssim": 0.4}, logit_below=0.8)
    assert thresholds.model_below == {**sanity.MODEL_BELOW, "ssim": 0.4}
    assert thresholds.logit_below == dict.fromkeys(sanity.MODEL_BELOW, 0.8)
    assert thresholds.data_below == sanity.DATA_BELOW
