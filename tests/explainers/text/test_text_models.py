"""Loading text classifiers: the shipped planted_reviews model, a user's Hugging Face folder or zip, and every
refusal with a ModelLoadError that says what was expected."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from explainers import load_user_model
from explainers.errors import ModelLoadError
from explainers.models.foreign import load_hf_classifier
from explainers.models.text import (
    DEFAULT_TEXT_MODEL,
    EXAMPLES_FILE,
    list_text_models,
    load_text_model,
    shipped_folder,
)
from explainers.text import TextBundle, corpus
from explainers.text.corpus import CLASSES, HELD_OUT, SPURIOUS_CLASS, UNBIASED
from tests.text_models import tiny_bert, tiny_tokenizer

from ..helpers import save_tiny_vit

# Measured: the shipped model classifies 2,000 held-out sentences of each held-out distribution without an error
# (assets/text/planted_reviews/training.json); fresh sentences of another seed must stay above this.
SHIPPED_ACCURACY_BOUND = 0.97
DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]


def _logits(bundle: TextBundle, text: str) -> torch.Tensor:
    scored = bundle.scored(text)
    with torch.no_grad():
        return scored.model(scored.inputs)[0].cpu()


@pytest.fixture(scope="module")
def shipped() -> TextBundle:
    return load_text_model()


@pytest.fixture(scope="module")
def user_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("user") / "my bert"
    tiny_bert(seed=4).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder


def _zip(folder: Path, path: Path, prefix: str = "model/", extra: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for file in sorted(folder.iterdir()):
            zf.write(file, prefix + file.name)
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return path


def _copy(folder: Path, dest: Path) -> Path:
    shutil.copytree(folder, dest)
    return dest


# ------------------------------------------------------------------------------------------------- shipped model


def test_the_shipped_model_is_listed_and_loads_with_its_examples(shipped):
    assert DEFAULT_TEXT_MODEL in list_text_models() and list_text_models()[DEFAULT_TEXT_MODEL]
    assert shipped.name == DEFAULT_TEXT_MODEL and shipped.categories == list(CLASSES)
    assert shipped.max_length == 64  # its position embeddings and tokenizer
    assert shipped.device == torch.device("cpu") and shipped.notes == []
    assert not shipped.net.training and not shipped.model.training
    stored = json.loads((shipped_folder() / EXAMPLES_FILE).read_text())["examples"]
    assert list(shipped.examples) == [e["text"] for e in stored] and len(stored) >= 6
    assert shipped.tokenizer.is_fast


@pytest.mark.parametrize("config", [HELD_OUT, UNBIASED], ids=["held_out", "unbiased"])
def test_the_shipped_model_classifies_fresh_held_out_sentences(shipped, config):
    reviews = corpus.make_corpus(300, seed=424_242, config=config)
    predicted = [int(_logits(shipped, r.text).argmax()) for r in reviews]
    assert np.mean(np.array(predicted) == [r.label for r in reviews]) >= SHIPPED_ACCURACY_BOUND


def test_the_shipped_model_leans_on_the_spurious_name_without_evidence(shipped):
    """Without evidence, naming Morgan raises p(positive) on average: the planted shortcut was learned."""
    weak = corpus.CorpusConfig(weak_share=1.0)
    target = CLASSES.index(SPURIOUS_CLASS)
    shifts = []
    for index in range(60):
        plain = corpus.sentence(index, 424_242, weak, spurious=False)
        named = corpus.sentence(index, 424_242, weak, spurious=True)
        shifts.append(float(_logits(shipped, named.text).softmax(-1)[target] -
                            _logits(shipped, plain.text).softmax(-1)[target]))
    assert np.mean(shifts) > 0.2 and np.mean(np.array(shifts) > 0) > 0.9


def test_the_shipped_folder_also_loads_as_a_user_folder(shipped, tmp_path):
    folder = _copy(shipped_folder(), tmp_path / "copy")
    again = load_text_model(folder)
    assert again.name.startswith("hf-text:copy:") and again.examples == ()
    text = shipped.examples[0]
    assert torch.allclose(_logits(again, text), _logits(shipped, text), atol=1e-6)


@pytest.mark.parametrize("device", DEVICES)
def test_the_model_follows_the_device_asked(device):
    bundle = load_text_model(device=device)
    assert bundle.device.type == device
    scored = bundle.scored("the film was dull")
    assert scored.inputs.device.type == device


# ------------------------------------------------------------------------------------------------- user models


def test_a_user_folder_loads_with_its_classes_and_length(user_folder):
    bundle = load_text_model(user_folder)
    assert bundle.name.startswith("hf-text:my_bert:") and bundle.categories == ["class 0", "class 1", "class 2"]
    assert bundle.max_length == 64  # the tokenizer says 1e30: the position embeddings decide
    assert bundle.examples == () and bundle.notes == []
    reference = tiny_bert(seed=4)
    ids = torch.tensor([tiny_tokenizer()("the movie was great !")["input_ids"]])
    with torch.no_grad():
        expected = reference(input_ids=ids).logits[0]
    assert torch.allclose(_logits(bundle, "the movie was great !"), expected, atol=1e-5)
    short = load_text_model(user_folder, max_length=5)
    assert short.max_length == 5 and short.encode("the movie was great !").dropped == 2
    assert short.name == bundle.name + ":max5"


def test_a_zip_of_a_user_folder_loads_the_same_model(user_folder, tmp_path):
    folder_bundle = load_text_model(user_folder)
    zipped = load_text_model(_zip(user_folder, tmp_path / "bert.zip", extra={"__MACOSX/._config.json": b"x"}))
    assert zipped.name.startswith("hf-text:bert:")
    # the same weights; only their memory (mapped from the folder, read from the zip) differs
    assert torch.allclose(_logits(zipped, "a bad plot"), _logits(folder_bundle, "a bad plot"), atol=1e-6)


def test_a_tokenizer_without_a_mask_token_and_a_multi_label_head_are_noted(user_folder, tmp_path):
    folder = _copy(user_folder, tmp_path / "multi")
    settings = json.loads((folder / "tokenizer_config.json").read_text())
    settings.pop("mask_token")
    (folder / "tokenizer_config.json").write_text(json.dumps(settings))
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "problem_type": "multi_label_classification"}))
    notes = load_text_model(folder).notes
    assert any("no mask token" in note for note in notes) and any("multi-label" in note for note in notes)
    assert not any("no pad token" in note for note in notes)


def test_default_class_names_are_kept_and_noted(user_folder, tmp_path):
    folder = _copy(user_folder, tmp_path / "labels")
    config = json.loads((folder / "config.json").read_text())
    config["id2label"] = {str(i): f"LABEL_{i}" for i in range(3)}
    config["label2id"] = {f"LABEL_{i}": i for i in range(3)}
    (folder / "config.json").write_text(json.dumps(config))
    bundle = load_text_model(folder)
    assert bundle.categories == ["LABEL_0", "LABEL_1", "LABEL_2"]
    assert len(bundle.notes) == 1 and "id2label does not say" in bundle.notes[0]


# ------------------------------------------------------------------------------------------------- refusals


def test_an_image_model_is_refused_with_a_pointer_to_the_image_loaders(tmp_path):
    folder, _ = save_tiny_vit(tmp_path / "vit")
    with pytest.raises(ModelLoadError, match=r"expected a text sequence classifier, got an image classifier "
                                             r"\(ViTForImageClassification.*load it as an image model"):
        load_text_model(folder)


def test_a_text_model_given_to_the_image_loaders_points_to_the_text_page(user_folder, tmp_path):
    pattern = r"expected an image classifier, got a text classifier \(BertForSequenceClassification.*Text page"
    with pytest.raises(ModelLoadError, match=pattern):
        load_user_model(user_folder)
    archive = _zip(user_folder, tmp_path / "text.zip")
    with pytest.raises(ModelLoadError, match=pattern):
        load_user_model(archive.read_bytes(), filename="text.zip")
    with pytest.raises(ModelLoadError, match=pattern):
        load_hf_classifier(archive)


def test_a_model_that_is_not_a_sequence_classifier_is_refused(tmp_path):
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(0)
    BertForMaskedLM(BertConfig(vocab_size=75, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=16)).save_pretrained(tmp_path / "mlm")
    tiny_tokenizer().save_pretrained(tmp_path / "mlm")
    with pytest.raises(ModelLoadError, match=r"expected a text sequence classifier .*got BertForMaskedLM"):
        load_text_model(tmp_path / "mlm")


def test_a_tokenizer_with_ids_beyond_the_embedding_table_is_refused(tmp_path):
    """Another model's tokenizer (or tokens added without resizing the embeddings): refused at load, not by an
    index error on the first text that holds such a token (the load's probe text, "the the ...", holds none)."""
    folder = tmp_path / "short table"
    tokenizer = tiny_tokenizer()
    largest = max(tokenizer.get_vocab().values())
    tiny_bert(seed=1, vocab_size=len(tokenizer) - 10).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    with pytest.raises(ModelLoadError, match=rf"embedding table \({len(tokenizer) - 10} rows: num_embeddings\).* "
                                             rf"{len(tokenizer)} tokens \(len\(tokenizer\)\), the largest id "
                                             rf"{largest};"):
        load_text_model(folder)


def test_a_folder_without_tokenizer_json_is_refused(user_folder, tmp_path):
    folder = _copy(user_folder, tmp_path / "no-tokenizer")
    (folder / "tokenizer.json").unlink()
    with pytest.raises(ModelLoadError, match=r"expected the model's fast tokenizer \(tokenizer.json\).*found "
                                             r"config.json, model.safetensors, tokenizer_config.json"):
        load_text_model(folder)


def test_a_folder_without_weights_or_with_pickled_ones_is_refused(user_folder, tmp_path):
    folder = _copy(user_folder, tmp_path / "no-weights")
    (folder / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="expected the weights as model.safetensors, but the folder has no "
                                             "weights file"):
        load_text_model(folder)
    (folder / "pytorch_model.bin").write_bytes(b"not read")
    with pytest.raises(ModelLoadError, match=r"only pickled weights \(pytorch_model.bin\)"):
        load_text_model(folder)


def test_nan_weights_are_refused(user_folder, tmp_path):
    folder = _copy(user_folder, tmp_path / "nan")
    state = load_file(str(folder / "model.safetensors"))
    key = next(k for k in state if k.endswith("classifier.weight"))
    state[key][0, 0] = float("nan")
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ModelLoadError, match=r"expected finite weights in nan, but 1 tensor\(s\) hold NaN.*"
                                             r"classifier.weight"):
        load_text_model(folder)


def test_weights_that_overflow_give_non_finite_logits_and_are_refused(user_folder, tmp_path):
    folder = _copy(user_folder, tmp_path / "huge")
    state = load_file(str(folder / "model.safetensors"))
    # finite weights whose product is not: the pooler saturates at 1, the head sums 32 × 3e38
    pooler = next(k for k in state if k.endswith("pooler.dense.bias"))
    state[pooler] = torch.full_like(state[pooler], 100.0)
    head = next(k for k in state if k.endswith("classifier.weight"))
    state[head] = torch.full_like(state[head], 3e38)
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ModelLoadError, match="expected finite logits from huge on a plain text"):
        load_text_model(folder)


def test_a_head_missing_from_the_weights_is_refused(user_folder, tmp_path):
    folder = _copy(user_folder, tmp_path / "headless")
    state = load_file(str(folder / "model.safetensors"))
    save_file({k: v for k, v in state.items() if "classifier" not in k}, str(folder / "model.safetensors"),
              metadata={"format": "pt"})
    with pytest.raises(ModelLoadError, match=r"missing from it \(classifier.*they would be random"):
        load_text_model(folder)


@pytest.mark.parametrize(("member", "message"), [
    ("../evil.txt", "would be written outside the folder"),
    ("/abs/config.json", "would be written outside the folder"),
])
def test_unsafe_zips_are_refused(user_folder, tmp_path, member, message):
    archive = _zip(user_folder, tmp_path / "unsafe.zip", extra={member: b"x"})
    with pytest.raises(ModelLoadError, match=message):
        load_text_model(archive)


def test_broken_sources_are_refused(user_folder, tmp_path):
    not_zip = tmp_path / "model.zip"
    not_zip.write_bytes(b"PK but not really")
    with pytest.raises(ModelLoadError, match="which is not a zip archive"):
        load_text_model(not_zip)
    no_config = tmp_path / "no-config.zip"
    with zipfile.ZipFile(no_config, "w") as zf:
        zf.writestr("model/tokenizer.json", (user_folder / "tokenizer.json").read_text())
    with pytest.raises(ModelLoadError, match="has no config.json; found model/tokenizer.json"):
        load_text_model(no_config)
    # a hub name is not looked up: nothing leaves the machine
    with pytest.raises(ModelLoadError, match="got 'bert-base-uncased', which is none of these .*never downloaded"):
        load_text_model("bert-base-uncased")
    remote = _copy(user_folder, tmp_path / "remote")
    config = json.loads((remote / "config.json").read_text())
    (remote / "config.json").write_text(json.dumps({**config, "auto_map": {"AutoModel": "x.Y"}}))
    with pytest.raises(ModelLoadError, match="never runs code shipped with a model"):
        load_text_model(remote)


def test_bad_lengths_and_devices_are_refused(user_folder):
    with pytest.raises(ModelLoadError, match=r"max_length between 3 and 64 tokens.*got 65"):
        load_text_model(user_folder, max_length=65)
    with pytest.raises(ModelLoadError, match="whole number of tokens"):
        load_text_model(user_folder, max_length=12.5)
    with pytest.raises(ModelLoadError, match="expected 'cpu' or a CUDA device this machine has"):
        load_text_model(user_folder, device="cuda:99")
