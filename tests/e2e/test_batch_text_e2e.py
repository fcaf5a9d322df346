"""In Chromium: a run over texts launched on the Batch page from an uploaded .txt file (the Text page's model, the
shipped one), opened there, and its word view pointing at the planted name: among the rows predicted positive,
the word most often a row's top word is "morgan", and the rows that hold it are drawn as coloured text. Screenshots
at 1600 and 900 px go to test-artifacts/."""

from __future__ import annotations

import re

from explainers.text.corpus import SPURIOUS_WORD, TEST_SEED_OFFSET, CorpusConfig, make_corpus
from ui import state

from .conftest import choose, keyed, page_problems, screenshot, wait_idle

# no evidence word, the name in 40 % of every class's sentences: the model's lean on it shows
NO_EVIDENCE = CorpusConfig(weak_share=1.0, spurious_rates=(0.4, 0.4, 0.4))


def test_a_text_run_from_an_upload_shows_the_name_the_model_leans_on(page, base_url, artifacts_dir, tmp_path):
    source = tmp_path / "no-evidence.txt"
    reviews = make_corpus(40, TEST_SEED_OFFSET, NO_EVIDENCE)
    source.write_text("\n".join(r.text for r in reviews) + "\n", encoding="utf-8")
    page.goto(f"{base_url}/batch")
    page.get_by_role("tab", name="Run on a text file").click()
    page.locator(f"{keyed(state.BATCH_TEXT_SOURCE)} input[type=file]").set_input_files(str(source))
    run = page.locator(f"{keyed(state.BATCH_TEXT_LAUNCH)} button")
    run.wait_for()
    page.wait_for_function(f"() => !document.querySelector('{keyed(state.BATCH_TEXT_LAUNCH)} button').disabled")
    run.click()
    page.get_by_role("tab", name="Words across the run").wait_for(timeout=180_000)
    wait_idle(page)
    assert page.get_by_text(re.compile(rf"^{len(reviews)} texts · {len(reviews)} rows")).count() == 1
    page.get_by_role("tab", name="Words across the run").click()
    choose(page, state_key("prediction_name"), "positive")
    wait_idle(page)
    assert page.locator(f"{keyed(state.BATCH_WORDS_SORT)} [role=combobox]").input_value() == "times the top word"
    # the word picker of this table (its key names the method, target, class and sort, the top-word count by
    # default): the table's first word, the top word of most rows predicted positive
    scope = keyed(f"{state.BATCH_WORDS_PICK}.integrated_gradients.top1.prediction_name.positive.top.3")
    picked = page.locator(f"{scope} [role=combobox]")
    picked.wait_for()
    assert picked.input_value() == SPURIOUS_WORD
    drawn = page.locator(".saliency-text").filter(has_text="Morgan")
    assert drawn.count() >= 3
    assert not page_problems(page) and not page.js_errors
    screenshot(page, artifacts_dir / "batch_text_1600.png")
    page.set_viewport_size({"width": 900, "height": 1000})
    wait_idle(page)
    screenshot(page, artifacts_dir / "batch_text_900.png")


def state_key(by: str) -> str:
    return f"{state.BATCH_WORDS_CLASS}.{by}"
