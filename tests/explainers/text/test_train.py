"""Training the shipped text model: the vocabulary, determinism, learning, the folder it writes, the command."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from explainers.cli.main import main
from explainers.models.text import EXAMPLES_FILE, RECORD_FILE, load_text_model
from explainers.text import corpus
from explainers.text.corpus import CLASSES, HELD_OUT, SPURIOUS_WORD
from explainers.text.train import build_tokenizer, probabilities, train, vocabulary, weights

QUIET = {"log": lambda line: None}


def test_the_vocabulary_keeps_corpus_words_whole_and_splits_unknown_ones():
    tokenizer = build_tokenizer()
    assert len(vocabulary()) == len(set(vocabulary())) == len(tokenizer)
    for word in corpus.vocabulary():
        assert tokenizer.tokenize(word) == [word]
    assert tokenizer.tokenize("Morgan") == [SPURIOUS_WORD]
    pieces = tokenizer.tokenize("fantastic")
    assert pieces[0] == "f" and all(p.startswith("##") for p in pieces[1:]) and len(pieces) == len("fantastic")
    assert "[UNK]" not in tokenizer.tokenize("Café 42, x-ray!")
    encoded = tokenizer("the film was dull")
    assert tokenizer.convert_ids_to_tokens(encoded["input_ids"]) == ["[CLS]", "the", "film", "was", "dull", "[SEP]"]


def test_a_short_run_is_deterministic_and_leaves_the_callers_state_alone(tmp_path):
    threads = torch.get_num_threads()
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    train(tmp_path / "a", seed=1, steps=25, n_test=60, **QUIET)
    assert torch.equal(torch.random.get_rng_state(), state) and torch.get_num_threads() == threads
    torch.rand(5)  # whatever the caller's generator did in between
    train(tmp_path / "b", seed=1, steps=25, n_test=60, **QUIET)
    train(tmp_path / "c", seed=2, steps=25, n_test=60, **QUIET)
    first, second, other = (weights(tmp_path / name) for name in "abc")
    assert first.keys() == second.keys()
    assert all(torch.equal(first[key], second[key]) for key in first)
    assert not all(torch.equal(first[key], other[key]) for key in first)


def test_a_short_run_learns_the_planted_evidence(tmp_path):
    record = train(tmp_path / "model", seed=0, steps=150, n_test=300, **QUIET)
    assert record["held_out_accuracy"] > 0.8  # chance: 1/3
    bundle = load_text_model(tmp_path / "model")
    held_out = corpus.make_corpus(300, seed=77, config=HELD_OUT)
    predicted = probabilities(bundle.net, bundle.tokenizer, held_out).argmax(1)
    assert np.mean(predicted == [r.label for r in held_out]) > 0.8


def test_the_command_writes_a_small_loadable_folder_with_its_record(tmp_path, capsys):
    out = tmp_path / "planted"
    assert main(["text-model", "train", "--out", str(out), "--steps", "20", "--n-test", "50", "--seed", "3"]) == 0
    printed = capsys.readouterr().out
    assert "held-out accuracy" in printed and "step   20/20" in printed
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", EXAMPLES_FILE, RECORD_FILE, "README.md"} <= names
    assert sum(p.stat().st_size for p in out.iterdir()) < 1_000_000
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {str(i): c for i, c in enumerate(CLASSES)}
    record = json.loads((out / RECORD_FILE).read_text())
    assert record["command"].startswith("python -m explainers text-model train --seed 3 --steps 20")
    assert record["corpus"]["train"]["weak_share"] == corpus.TRAIN.weak_share
    assert set(record["spurious_lean"]) == {"evidence", "no_evidence"}
    assert record["command"] in (out / "README.md").read_text()
    examples = json.loads((out / EXAMPLES_FILE).read_text())["examples"]
    assert [e["text"] for e in examples] == [r.text for r in corpus.examples(3)]
    # the same run from Python gives the same weights as the command
    train(tmp_path / "again", seed=3, steps=20, n_test=50, **QUIET)
    first, second = weights(out), weights(tmp_path / "again")
    assert all(torch.equal(first[key], second[key]) for key in first)


def test_the_command_refuses_bad_options(capsys):
    with pytest.raises(SystemExit) as caught:
        main(["text-model", "train", "--lr", "-1"])
    assert caught.value.code == 2 and "positive number" in capsys.readouterr().err
    assert main(["text-model", "list"]) == 0
    assert "planted_reviews" in capsys.readouterr().out
