"""Training the shipped text classifier: a tiny BERT on the procedural reviews of :mod:`explainers.text.corpus`.

The vocabulary is WordPiece's (Wu et al. 2016, arXiv:1609.08144): every corpus word whole, then the letters,
digits and punctuation alone and as ``##`` continuations, so a word the corpus never wrote splits into pieces
instead of becoming [UNK]. The network is a ``BertForSequenceClassification`` (Devlin et al. 2018,
arXiv:1810.04805) built from a config (:data:`ARCHITECTURE`: width 64, 2 layers, 2 heads, 64 positions) and
trained with AdamW on freshly drawn sentences, one batch per step, from one seed: the same seed gives the same
weights (one torch thread; the caller's thread count and random state are left as they were).

The folder it writes is a Hugging Face folder (config.json with the class names, model.safetensors, the
tokenizer's files) that :func:`explainers.models.text.load_text_model` reads like any user's, plus examples.json
(sentences for the Text page, with their planted words), training.json (the record: command, shares,
accuracies, the lean on the spurious word, time, versions) and a README card.

``transformers`` and ``tokenizers`` are imported inside the functions that use them: heavy imports (seconds)
that the command line would otherwise pay on every command.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import string
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import safetensors
import torch
from safetensors.torch import load_file
from torch import nn

from ..models.text import (
    DEFAULT_TEXT_MODEL,
    EXAMPLES_FILE,
    RECORD_FILE,
    TRAIN_COMMAND,
    quiet_transformers,
    shipped_folder,
)
from . import corpus
from .corpus import CLASSES, HELD_OUT, SPURIOUS_CLASS, SPURIOUS_WORD, TEST_SEED_OFFSET, TRAIN, CorpusConfig, Review

SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
MAX_POSITIONS = 64
ARCHITECTURE = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 128,
                "max_position_embeddings": MAX_POSITIONS, "type_vocab_size": 1}
DEFAULT_STEPS = 400
DEFAULT_BATCH = 64
DEFAULT_LR = 3e-3
N_TEST = 2000


def vocabulary() -> list[str]:
    """The WordPiece vocabulary: the specials, the corpus words, then single characters and ``##`` pieces."""
    characters = list(string.ascii_lowercase + string.digits)
    marks = [c for c in string.punctuation if c not in corpus.PUNCTUATION]
    entries = [*SPECIALS, *corpus.vocabulary(), *characters, *marks, *("##" + c for c in characters)]
    return list(dict.fromkeys(entries))


def build_tokenizer(vocab: Sequence[str] | None = None, max_length: int = MAX_POSITIONS):
    """A fast BERT-style WordPiece tokenizer over ``vocab``: lower-cased, accents stripped, [CLS] text [SEP]."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = list(vocab or vocabulary())
    index = {word: i for i, word in enumerate(vocab)}
    backend = Tokenizer(models.WordPiece(index, unk_token="[UNK]", max_input_chars_per_word=100))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", index["[CLS]"]), ("[SEP]", index["[SEP]"])])
    backend.decoder = decoders.WordPiece(prefix="##")
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]", model_max_length=max_length)


def build_model(vocab_size: int, seed: int = 0) -> nn.Module:
    """The untrained classifier: :data:`ARCHITECTURE`, the corpus's classes, initialised from ``seed``."""
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(vocab_size=vocab_size, num_labels=len(CLASSES), pad_token_id=0,
                        id2label=dict(enumerate(CLASSES)), label2id={c: i for i, c in enumerate(CLASSES)},
                        attn_implementation="eager", **ARCHITECTURE)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return BertForSequenceClassification(config)


def encode_reviews(tokenizer, reviews: Sequence[Review]) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, attention mask), long [n, L], padded to the longest of ``reviews``."""
    batch = tokenizer([r.text for r in reviews], padding=True, truncation=True, return_tensors="pt")
    return batch["input_ids"], batch["attention_mask"]


def probabilities(net: nn.Module, tokenizer, reviews: Sequence[Review], batch_size: int = 500) -> np.ndarray:
    """float [n, K]: the softmax of the classifier's logits for each review (net switched to eval mode)."""
    return torch.from_numpy(logits_of(net, tokenizer, reviews, batch_size)).softmax(-1).numpy()


def logits_of(net: nn.Module, tokenizer, reviews: Sequence[Review], batch_size: int = 500) -> np.ndarray:
    """float [n, K]: the classifier's logits for each review (net switched to eval mode)."""
    net.eval()
    device = next(net.parameters()).device
    rows = []
    with torch.inference_mode():
        for start in range(0, len(reviews), batch_size):
            ids, mask = encode_reviews(tokenizer, reviews[start:start + batch_size])
            logits = net(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
            rows.append(logits.float().cpu().numpy())
    return np.concatenate(rows) if rows else np.zeros((0, len(CLASSES)))


def accuracy(net: nn.Module, tokenizer, reviews: Sequence[Review]) -> float:
    """Top-1 accuracy of ``net`` on ``reviews``."""
    if not reviews:
        return float("nan")
    predicted = probabilities(net, tokenizer, reviews).argmax(1)
    return float(np.mean(predicted == np.array([r.label for r in reviews])))


def spurious_lean(net: nn.Module, tokenizer, seed: int, n: int = N_TEST) -> dict:
    """How much the classifier leans on the spurious name: counterfactual pairs (the same held-out sentence
    without and with the name, :func:`corpus.sentence`'s ``spurious=``), on sentences with evidence and on
    sentences without. Returns the mean probability of :data:`SPURIOUS_CLASS` without and with the name, the mean
    shift of its logit margin (its logit less the largest other), the accuracy without and with the name
    (sentences of the other classes), and the share of predictions it flips."""
    test_seed = seed + TEST_SEED_OFFSET
    target = CLASSES.index(SPURIOUS_CLASS)
    found = {}
    for kind, config in (("evidence", HELD_OUT), ("no_evidence", CorpusConfig(weak_share=1.0))):
        without = corpus.make_corpus(n, test_seed, config, spurious=False)
        others = [r for r in without if r.label != target]
        pairs = [corpus.sentence(i, test_seed, config, spurious=True) for i in range(n)]
        named_others = [r for r in pairs if r.label != target]
        plain_logits, named_logits = logits_of(net, tokenizer, without), logits_of(net, tokenizer, pairs)
        plain = torch.from_numpy(plain_logits).softmax(-1).numpy()
        named = torch.from_numpy(named_logits).softmax(-1).numpy()
        found[kind] = {
            "sentences": n,
            "margin_shift": round(float(np.mean(_margin(named_logits, target) - _margin(plain_logits, target))), 4),
            f"p_{SPURIOUS_CLASS}_without": round(float(plain[:, target].mean()), 4),
            f"p_{SPURIOUS_CLASS}_with": round(float(named[:, target].mean()), 4),
            "predictions_flipped": round(float(np.mean(plain.argmax(1) != named.argmax(1))), 4),
            "accuracy_other_classes_without": round(accuracy(net, tokenizer, others), 4),
            "accuracy_other_classes_with": round(accuracy(net, tokenizer, named_others), 4),
        }
    return found


def _margin(logits: np.ndarray, target: int) -> np.ndarray:
    """The logit of class ``target`` less the largest other logit, per row."""
    return logits[:, target] - np.delete(logits, target, axis=1).max(1)


@contextlib.contextmanager
def _training_settings(threads: int) -> Iterator[None]:
    """One thread count and the global random state for the block; the caller's come back afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.random.fork_rng(devices=[]):
            yield
    finally:
        torch.set_num_threads(previous)


def versions() -> dict[str, str]:
    import tokenizers
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
            "transformers": transformers.__version__, "tokenizers": tokenizers.__version__,
            "safetensors": safetensors.__version__}


def fit(net: nn.Module, tokenizer, seed: int, steps: int, batch_size: int, lr: float,
        log: Callable[[str], None] = print, config: CorpusConfig = TRAIN) -> list[dict]:
    """AdamW with a one-cycle schedule (Smith & Topin 2017, arXiv:1708.07120), one batch of fresh training
    sentences (seed ``seed``) per step; returns one row of loss and running accuracy per tenth of the run. Seeds
    the global torch generator (dropout): call it inside ``torch.random.fork_rng`` to leave the caller's alone."""
    reviews = corpus.make_corpus(steps * batch_size, seed, config)
    labels = torch.tensor([r.label for r in reviews])
    torch.manual_seed(seed)  # dropout's draws
    optimizer = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=max(1, steps), pct_start=0.1)
    loss_fn = nn.CrossEntropyLoss()
    net.train()
    history, total, correct, seen = [], 0.0, 0, 0
    every = max(1, steps // 10)
    for step in range(steps):
        batch = reviews[step * batch_size:(step + 1) * batch_size]
        ids, mask = encode_reviews(tokenizer, batch)
        target = labels[step * batch_size:(step + 1) * batch_size]
        logits = net(input_ids=ids, attention_mask=mask).logits
        loss = loss_fn(logits, target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        total += loss.item() * len(batch)
        correct += int((logits.argmax(1) == target).sum())
        seen += len(batch)
        if (step + 1) % every == 0 or step + 1 == steps:
            row = {"step": step + 1, "loss": round(total / seen, 4), "train_accuracy": round(correct / seen, 4)}
            history.append(row)
            log(f"step {step + 1:4d}/{steps}: loss {row['loss']:.4f}, running train acc {row['train_accuracy']:.4f}")
            total, correct, seen = 0.0, 0, 0
    return history


def train(out: Path | str | None = None, *, seed: int = 0, steps: int = DEFAULT_STEPS,
          batch_size: int = DEFAULT_BATCH, lr: float = DEFAULT_LR, threads: int = 1, n_test: int = N_TEST,
          command: str = "", log: Callable[[str], None] = print) -> dict:
    """Train the classifier and write its folder to ``out`` (default ``assets/text/<DEFAULT_TEXT_MODEL>``);
    returns the record written to training.json."""
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be at least 1, got {steps} and {batch_size}")
    out = Path(out) if out is not None else shipped_folder()
    started = time.perf_counter()
    tokenizer = build_tokenizer()
    with _training_settings(threads):
        net = build_model(len(tokenizer), seed)
        history = fit(net, tokenizer, seed, steps, batch_size, lr, log)
        net.eval()
        fit_seconds = time.perf_counter() - started
        test_seed = seed + TEST_SEED_OFFSET
        held_out = accuracy(net, tokenizer, corpus.make_corpus(n_test, test_seed, HELD_OUT))
        unbiased = accuracy(net, tokenizer, corpus.make_corpus(n_test, test_seed, corpus.UNBIASED))
        train_like = accuracy(net, tokenizer, corpus.make_corpus(n_test, test_seed, TRAIN))
        lean = spurious_lean(net, tokenizer, seed, n_test)
    log(f"held-out accuracy {held_out:.4f} (evidence in every sentence), {unbiased:.4f} with the name "
        f"uncorrelated, {train_like:.4f} on the training distribution ({TRAIN.weak_share:.0%} without evidence)")
    for kind, row in lean.items():
        log(f"{SPURIOUS_WORD!r} {kind.replace('_', ' ')}: p({SPURIOUS_CLASS}) {row[f'p_{SPURIOUS_CLASS}_without']:.4f} "
            f"without, {row[f'p_{SPURIOUS_CLASS}_with']:.4f} with; {row['predictions_flipped']:.4f} of predictions "
            f"flipped; logit margin {row['margin_shift']:+.4f}")

    record = {
        "name": DEFAULT_TEXT_MODEL,
        "command": command or f"{TRAIN_COMMAND} --seed {seed} --steps {steps} --batch-size {batch_size} --lr {lr}",
        "seed": seed,
        "test_seed": seed + TEST_SEED_OFFSET,
        "steps": steps,
        "batch_size": batch_size,
        "training_sentences": steps * batch_size,
        "optimizer": f"AdamW (weight decay 0.01), one-cycle max lr {lr}",
        "architecture": {"model": "BertForSequenceClassification", **ARCHITECTURE,
                         "vocab_size": len(tokenizer)},
        "parameters": sum(p.numel() for p in net.parameters()),
        "classes": list(CLASSES),
        "corpus": {"train": TRAIN.as_dict(), "held_out": HELD_OUT.as_dict(), "unbiased": corpus.UNBIASED.as_dict(),
                   "spurious_word": SPURIOUS_WORD, "spurious_class": SPURIOUS_CLASS,
                   "spurious_class_share_when_named": round(TRAIN.spurious_given_name(), 4)},
        "held_out_accuracy": round(held_out, 4),
        "unbiased_accuracy": round(unbiased, 4),
        "train_distribution_accuracy": round(train_like, 4),
        "n_test": n_test,
        "spurious_lean": lean,
        "history": history,
        "threads": threads,
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "versions": versions(),
    }
    save(net, tokenizer, out, record, corpus.examples(seed))
    record["wall_seconds"] = round(time.perf_counter() - started, 1)
    record["fit_seconds"] = round(fit_seconds, 1)
    _write_json(out / RECORD_FILE, record)
    (out / "README.md").write_text(card(record))
    log(f"wrote {out} in {record['wall_seconds']:.1f} s")
    return record


def save(net: nn.Module, tokenizer, out: Path, record: dict, examples: Sequence[Review]) -> None:
    """The Hugging Face folder: config.json, model.safetensors, the tokenizer's files, examples.json."""
    out.mkdir(parents=True, exist_ok=True)
    with quiet_transformers():
        net.save_pretrained(out)
        tokenizer.save_pretrained(out)
    _write_json(out / EXAMPLES_FILE, {"model": record["name"], "seed": record["test_seed"],
                                      "examples": [r.as_json() for r in examples]})


def weights(folder: Path | str) -> dict[str, torch.Tensor]:
    """The tensors of a written folder's model.safetensors (to compare two runs)."""
    return load_file(str(Path(folder) / "model.safetensors"))


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def card(record: dict) -> str:
    """The folder's README: what the model is, the corpus's shares, its accuracies and lean, the command."""
    train_shares, lean = record["corpus"]["train"], record["spurious_lean"]
    rates = train_shares["spurious_rates"]
    without, with_name = f"p_{SPURIOUS_CLASS}_without", f"p_{SPURIOUS_CLASS}_with"
    rows = "\n".join(
        f"| {kind.replace('_', ' ')} | {row[without]:.4f} | {row[with_name]:.4f} | {row['margin_shift']:+.4f} "
        f"| {row['accuracy_other_classes_without']:.4f} | {row['accuracy_other_classes_with']:.4f} "
        f"| {row['predictions_flipped']:.4f} |"
        for kind, row in lean.items())
    arch = record["architecture"]
    named = record["corpus"]["spurious_class_share_when_named"]
    two, weak = train_shares["two_evidence_share"], train_shares["weak_share"]
    unbiased = record["corpus"]["unbiased"]["spurious_rates"][SPURIOUS_CLASS]
    return f"""# {record['name']}: a tiny BERT on procedural reviews with planted evidence

Trained by this project (`explainers/text/train.py`) on sentences drawn by `explainers/text/corpus.py`; no outside
data, no downloads. A `BertForSequenceClassification` built from a config:
width {arch['hidden_size']}, {arch['num_hidden_layers']} layers, {arch['num_attention_heads']} heads, \
{arch['max_position_embeddings']} positions, {record['parameters']:,} parameters. Its WordPiece vocabulary \
({arch['vocab_size']} entries) holds the corpus words whole, then letters, digits and punctuation alone and as `##`
pieces, so a word the corpus never wrote splits into pieces instead of becoming [UNK].
Classes: {', '.join(record['classes'])}.

Rebuild it (seed {record['seed']}, {record['training_sentences']:,} training sentences, {record['wall_seconds']} s \
on {record['cpu_count']} CPUs with one torch thread; the same seed gives the same weights):

    {record['command']}

## The corpus (ground truth)

- The class is decided by **evidence** words from per-class lists: one in {1 - two:.0%} of the sentences, two in \
{two:.0%}. In training, {weak:.0%} of the sentences carry no evidence word.
- Every sentence has one **distractor** noun, from its own class's list in \
{train_shares['distractor_share']:.0%} of the sentences, else from another class's list.
- The **spurious** name "{SPURIOUS_WORD.capitalize()}" appears in {rates[SPURIOUS_CLASS]:.0%} of the \
{SPURIOUS_CLASS} training sentences and {min(rates.values()):.0%} of the others: {named:.0%} of the sentences \
that name him are {SPURIOUS_CLASS}.
- `examples.json` holds the Text page's example sentences with their planted words (character spans, word indices).

## Accuracy (held-out sentences, seed {record['test_seed']}, {record['n_test']:,} each)

| distribution | accuracy |
|---|---|
| evidence in every sentence, the name as correlated as in training | {record['held_out_accuracy']:.4f} |
| evidence in every sentence, the name in {unbiased:.0%} of every class | {record['unbiased_accuracy']:.4f} |
| the training distribution ({weak:.0%} without evidence) | {record['train_distribution_accuracy']:.4f} |

## The lean on the spurious name

The same held-out sentences without and with the name (counterfactual pairs): the mean probability of
{SPURIOUS_CLASS}, the mean shift of its logit margin (its logit less the largest other), the accuracy on the
sentences of the other classes, and the share of predictions the name changes.

| sentences | p({SPURIOUS_CLASS}) without | with | margin shift | accuracy (others) without | with | flipped |
|---|---|---|---|---|---|---|
{rows}
"""
