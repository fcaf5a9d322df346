"""The Text page's models: a zipped Hugging Face sequence classifier loads offline into the session and becomes
the page's model (its classes in the predictions), a bad zip gives the loader's message and a fix, never a
traceback; the Methods page says of every method whether and how it runs on text."""

from __future__ import annotations

import io
import zipfile

from explainers import METHODS
from tests.text_models import tiny_bert, tiny_tokenizer
from tests.ui.helpers import start, texts
from ui import method_docs as docs
from ui import state
from ui.text import text_methods

TEXT_PAGE = "app_pages/text.py"


def zipped_classifier(tmp_path) -> bytes:
    """The seeded tiny BERT and its fast tokenizer, saved as save_pretrained writes them, zipped."""
    folder = tmp_path / "tiny"
    tiny_bert(seed=3).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in folder.iterdir():
            archive.write(path, f"tiny/{path.name}")
    return buffer.getvalue()


def uploader(at):
    """The text-model uploader now drawn (its key changes with every load: the loaded zip leaves it)."""
    (found,) = [u for u in at.get("file_uploader") if u.key and u.key.startswith(f"{state.TEXT_UPLOAD}.")]
    return found


def upload(at, name: str, data: bytes):
    uploader(at).set_value((name, data, "application/zip")).run()
    at.button(key=state.TEXT_LOAD).click().run()
    assert not at.exception, at.exception
    return at


def test_a_zipped_classifier_becomes_the_pages_model(tmp_path):
    at = start(page=TEXT_PAGE, session={state.TEXT_METHODS: ["vanilla"]})
    upload(at, "tiny.zip", zipped_classifier(tmp_path))
    assert not at.error, [e.value for e in at.error]
    model = at.selectbox(key=state.TEXT_MODEL).value
    assert model.startswith("text-user:tiny.zip:")
    assert uploader(at).value is None  # loaded: the uploader is empty again, a second Load has nothing to load
    assert any("Loaded in this session" in t and "tiny.zip" in t for t in texts(at))
    assert any("class 0" in t and "3 classes" in t for t in texts(at))  # the caption names its classes
    assert any('class="saliency-text"' in h.proto.body for h in at.html)  # and its map is drawn
    at.button(key=f"{state.TEXT_LOAD}.remove.{model}").click().run()
    assert not at.exception
    assert at.selectbox(key=state.TEXT_MODEL).value != model


def test_a_bad_zip_says_what_was_expected(tmp_path):
    at = start(page=TEXT_PAGE)
    upload(at, "notes.zip", b"shopping list: milk, eggs\n")
    (error,) = [e.value for e in at.error]
    assert "ModelLoadError" in error and "save_pretrained" in error
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("folder/readme.txt", "no model here")
    at = upload(start(page=TEXT_PAGE), "empty.zip", archive.getvalue())
    (error,) = [e.value for e in at.error]
    assert "ModelLoadError" in error and "config.json" in error
    assert at.title[0].value == "Text" and any('class="saliency-text"' in h.proto.body for h in at.html)


def test_the_methods_cards_say_whether_and_how_each_runs_on_text():
    on_text = set(text_methods())
    for info in METHODS.values():
        card = docs.card(info)
        if info.name in on_text:
            assert info.text is not None
            assert "Token score:" in card.text
            assert all(name in card.text.replace("\\_", "_") for name in info.text.params)
        else:
            assert card.text.startswith("Not on text")
    rows = {row["Name"]: row["Text"] for row in docs.overview_rows(METHODS.values())}
    assert rows["gradcam"] == "no" and rows["vanilla"] == "yes (L2 norm)"
    assert rows["input_x_gradient"] == "yes (sum)"
    assert docs.matches(METHODS["integrated_gradients"], "text baseline")
