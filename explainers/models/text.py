"""Text classifiers as :class:`~explainers.text.TextBundle`: the shipped model, or a user's own Hugging Face
sequence classifier, offline.

- :data:`DEFAULT_TEXT_MODEL` ("planted_reviews"): a tiny BERT trained by this project on procedural reviews with
  planted evidence words and a planted spurious name (:mod:`explainers.text.corpus`, :mod:`explainers.text.train`),
  shipped in ``assets/text/planted_reviews`` as a Hugging Face folder. (No installed package carries the weights of
  a small text classifier: ``transformers`` ships none.)
- A user's folder written by ``save_pretrained`` (the model and its fast tokenizer), or a .zip of one: unpacked
  and read with the checks of :mod:`explainers.models.foreign` (safe zip members, safetensors only, no remote
  code, no weight left random), with ``local_files_only`` and ``trust_remote_code=False``.

``transformers`` is imported inside the functions that load: a heavy import (seconds) that listing the models
does not need.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from ..core import non_finite
from ..errors import ModelLoadError, SaliencyError
from ..text.bundle import TextBundle
from . import foreign
from .inputs import check_device

DEFAULT_TEXT_MODEL = "planted_reviews"
ASSETS = Path(__file__).resolve().parents[2] / "assets" / "text"
SHIPPED = {
    DEFAULT_TEXT_MODEL: "a tiny BERT (2 layers, width 64) trained by this project on procedural film reviews whose "
    "class (negative, neutral, positive) is decided by planted evidence words, with a planted spurious name; "
    "works offline",
}
TRAIN_COMMAND = "python -m explainers text-model train"
EXAMPLES_FILE = "examples.json"
RECORD_FILE = "training.json"
TOKENIZER_FILE = "tokenizer.json"
MAX_TEXT_LENGTH = 512  # tokens: what BERT-style models are trained at, and a bound on one text's cost
MIN_TEXT_LENGTH = 3  # [CLS], one token, [SEP]
_DEFAULT_LABEL = re.compile(r"^LABEL_\d+$")


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """transformers' progress bars off for the block (loading or saving a tiny model draws several)."""
    from transformers.utils import logging

    was_enabled = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            logging.enable_progress_bar()


def list_text_models() -> dict[str, str]:
    """The shipped text models, name → one-line description."""
    return dict(SHIPPED)


def shipped_folder(name: str = DEFAULT_TEXT_MODEL) -> Path:
    """Where a shipped text model's folder lives (``assets/text/<name>``)."""
    if name not in SHIPPED:
        raise ModelLoadError(f"expected one of the shipped text models ({', '.join(SHIPPED)}), got {name!r}")
    return ASSETS / name


def load_text_model(source: str | Path = DEFAULT_TEXT_MODEL, *, device: str | torch.device | None = None,
                    max_length: int | None = None) -> TextBundle:
    """A text classifier as a TextBundle in eval mode on ``device`` (default: the CPU).

    ``source``: a shipped model's name (:func:`list_text_models`), a folder saved with ``save_pretrained`` (the
    model and its tokenizer), or a .zip of one. ``max_length``: the most tokens a text may have, by default
    min(the tokenizer's ``model_max_length``, the config's ``max_position_embeddings``, 512). Class names come
    from ``config.id2label``. Every problem raises ModelLoadError saying what was expected: not a sequence
    classifier (an image model is pointed to the image loaders), no ``tokenizer.json`` (no fast tokenizer), no
    safetensors weights or weights left random, NaN or infinite weights or outputs, an unsafe zip.
    """
    target = check_device(device)
    if not isinstance(source, (str, Path)):
        raise ModelLoadError(f"expected a text model's name, folder or .zip path, got {type(source).__name__}")
    shipped = isinstance(source, str) and source in SHIPPED
    path = shipped_folder(source) if shipped else Path(source).expanduser()
    if not shipped and not path.exists():
        raise ModelLoadError(
            f"expected a shipped text model ({', '.join(SHIPPED)}), a folder saved with save_pretrained or a .zip "
            f"of one, got {str(source)!r}, which is none of these (text models are never downloaded: save the "
            "model and its tokenizer with save_pretrained and give that folder)"
        )
    if shipped and not (path / "config.json").is_file():
        raise ModelLoadError(f"the shipped text model {source!r} is missing from {path}; rebuild it with "
                             f"`{TRAIN_COMMAND}`")
    try:
        from transformers import AutoModelForSequenceClassification
    except ImportError as exc:  # pragma: no cover - transformers is a requirement
        raise ModelLoadError("loading a text model needs the transformers package: pip install transformers") \
            from exc
    with foreign.hf_folder(path) as (folder, digest, zipped), quiet_transformers():
        raw = foreign.read_json(folder / "config.json", "config.json")
        config = _text_config(folder, raw)
        tokenizer = _tokenizer(folder)
        # eager attention: the attention weights exist (rollout reads them) and the backward is plain autograd
        net = foreign.hf_weights(folder, config, zipped, AutoModelForSequenceClassification,
                                 attn_implementation="eager")
        examples = _examples(folder) if shipped else ()
    _check_weights(net, path.name)
    _check_vocabulary(tokenizer, net, path.name)
    net.to(target).eval()
    limit = _length_limit(tokenizer, config)
    length = limit if max_length is None else _check_length(max_length, limit)
    count = int(config.num_labels)
    categories, notes = _class_names(config, count)
    architecture = type(net).__name__
    notes += _tokenizer_notes(tokenizer, config)
    if shipped:
        name, description = source, f"{source}: {SHIPPED[source]}"
    else:
        name = f"hf-text:{foreign.file_stem(path)}:{digest}"
        description = (f"{architecture} from {path.name} (Hugging Face transformers, safetensors weights); {count} "
                       f"classes from config.id2label; at most {length} tokens per text")
    if length != limit:  # the same weights read at another length are another model for every cache
        name += f":max{length}"
    bundle = TextBundle(name=name, net=net, tokenizer=tokenizer, categories=categories, max_length=length,
                        description=description, notes=notes, examples=tuple(examples))
    bundle.model.eval()  # the embeddings scorer starts in training mode, like any new module
    _dry_run(bundle, count, path.name)
    return bundle


def _text_config(folder: Path, raw: dict):
    """The config (:func:`foreign.hf_config`); must describe a text sequence classifier."""
    from transformers import MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING

    config = foreign.hf_config(folder, raw)
    if not foreign.is_text_classifier(config, raw):
        described = foreign.described_architecture(raw)
        if type(config) in MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING:
            raise ModelLoadError(
                f"expected a text sequence classifier, got an image classifier ({described}, model_type "
                f"{raw.get('model_type')!r}); load it as an image model (the sidebar's model upload, or "
                "explainers.load_user_model)"
            )
        raise ModelLoadError(
            f"expected a text sequence classifier (a model AutoModelForSequenceClassification builds), got "
            f"{described} (model_type {raw.get('model_type')!r}), which is not one"
        )
    return config


def _tokenizer(folder: Path):
    """The folder's fast tokenizer, from its tokenizer.json (character offsets need a fast one)."""
    from transformers import AutoTokenizer

    if not (folder / TOKENIZER_FILE).is_file():
        found = foreign.one_of(sorted(p.name for p in folder.iterdir() if p.is_file())) or "no files"
        raise ModelLoadError(
            f"expected the model's fast tokenizer ({TOKENIZER_FILE}) beside config.json, but the folder has none "
            f"(found {found}); save it with tokenizer.save_pretrained(folder) from a fast tokenizer "
            "(AutoTokenizer.from_pretrained(..., use_fast=True)), which writes tokenizer.json"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True, trust_remote_code=False)
    except Exception as exc:
        raise ModelLoadError(f"expected a readable tokenizer in {TOKENIZER_FILE} and tokenizer_config.json, but "
                             f"transformers refused it: {foreign.first_line(exc)}") from exc
    if not getattr(tokenizer, "is_fast", False):
        raise ModelLoadError(f"expected a fast tokenizer (from {TOKENIZER_FILE}), but transformers built a "
                             f"{type(tokenizer).__name__}, which gives no character offsets")
    return tokenizer


def _examples(folder: Path) -> list[str]:
    """The example sentences of a shipped model's examples.json (none when the file is missing)."""
    path = folder / EXAMPLES_FILE
    if not path.is_file():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return [str(item["text"]) for item in data["examples"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelLoadError(f"expected {path} to hold {{'examples': [{{'text': ...}}, ...]}}; rebuild it with "
                             f"`{TRAIN_COMMAND}` ({exc})") from exc


def _check_weights(net: nn.Module, what: str) -> None:
    """Every parameter and buffer finite; else ModelLoadError naming the tensors."""
    broken = [name for name, tensor in (*net.named_parameters(), *net.named_buffers())
              if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())]
    if broken:
        raise ModelLoadError(f"expected finite weights in {what}, but {len(broken)} tensor(s) hold NaN or infinite "
                             f"values ({foreign.one_of(broken, 3)}); damaged, or diverged in training?")


def _check_vocabulary(tokenizer, net: nn.Module, what: str) -> None:
    """Every id the tokenizer can give has a row in the model's embedding table; else ModelLoadError (a text with
    such a token would fail mid-explanation with an index error, or on a GPU with a device-side assert)."""
    table = net.get_input_embeddings()
    rows = getattr(table, "num_embeddings", None)
    if rows is None:
        return
    largest = max(tokenizer.get_vocab().values(), default=-1)
    if largest >= rows:
        raise ModelLoadError(
            f"expected the tokenizer of {what} to fit the model's embedding table ({rows} rows: num_embeddings), but "
            f"it has {len(tokenizer)} tokens (len(tokenizer)), the largest id {largest}; is it another model's "
            "tokenizer, or were tokens added without model.resize_token_embeddings(len(tokenizer))?")


def _length_limit(tokenizer, config) -> int:
    """min(the tokenizer's model_max_length, the config's max_position_embeddings, MAX_TEXT_LENGTH)."""
    candidates = [MAX_TEXT_LENGTH]
    for value in (getattr(tokenizer, "model_max_length", None), getattr(config, "max_position_embeddings", None)):
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0:
            candidates.append(int(value))
    return max(MIN_TEXT_LENGTH, min(candidates))


def _check_length(max_length, limit: int) -> int:
    if isinstance(max_length, bool) or not isinstance(max_length, int):
        raise ModelLoadError(f"expected max_length to be a whole number of tokens, got {max_length!r}")
    if not MIN_TEXT_LENGTH <= max_length <= limit:
        raise ModelLoadError(f"expected max_length between {MIN_TEXT_LENGTH} and {limit} tokens (this model's "
                             f"limit: its tokenizer, its position embeddings, at most {MAX_TEXT_LENGTH}), got "
                             f"{max_length}")
    return max_length


def _class_names(config, count: int) -> tuple[list[str], list[str]]:
    """The class names from ``config.id2label``, and a note when they are transformers' defaults (LABEL_0)."""
    names = foreign.config_labels(config, count)
    notes = []
    if all(_DEFAULT_LABEL.match(name) for name in names):
        notes.append(f"the class names are transformers' defaults ({', '.join(names[:3])}"
                     f"{', ...' if count > 3 else ''}): config.json's id2label does not say what the classes are")
    return names, notes


def _tokenizer_notes(tokenizer, config) -> list[str]:
    """What the page should say about the tokenizer and the head: a missing [PAD] or [MASK] token (that baseline
    is unavailable), a multi-label head (its classes are independent sigmoids, not one softmax)."""
    notes = [f"the tokenizer has no {kind} token: the {kind} baseline is unavailable"
             for kind in ("pad", "mask") if getattr(tokenizer, f"{kind}_token_id", None) is None]
    if getattr(config, "problem_type", None) == "multi_label_classification":
        notes.append("a multi-label classifier: each class is scored by its own sigmoid, while the probabilities "
                     "shown are a softmax over the classes; read the logits")
    return notes


def _dry_run(bundle: TextBundle, count: int, what: str) -> None:
    """A text of ``max_length`` tokens, twice, through the embeddings path the methods use: the logits must be
    [2, classes] and finite (a NaN weight loads without a word and would rank first)."""
    probe = " ".join(["the"] * (bundle.max_length - 2))  # max_length tokens with [CLS] and [SEP], as a rule
    try:
        scored = bundle.scored(probe)
    except SaliencyError:
        raise
    except Exception as exc:
        raise ModelLoadError(f"expected the tokenizer of {what} to tokenise a plain text, but it raised "
                             f"{type(exc).__name__}: {foreign.first_line(exc)}") from exc
    try:
        with torch.inference_mode():
            logits = scored.model(scored.inputs.expand(2, -1, -1, -1))
    except Exception as exc:
        raise ModelLoadError(
            f"expected {what} to classify a text of {len(scored.encoded)} tokens from its token embeddings "
            f"(inputs_embeds), but it raised {type(exc).__name__}: {foreign.first_line(exc)}"
        ) from exc
    if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != (2, count):
        found = list(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ModelLoadError(f"expected {what} to return logits [2, {count}] for two texts (config.num_labels "
                             f"{count}), got {found}")
    found = non_finite(logits)
    if found is not None:
        raise ModelLoadError(f"expected finite logits from {what} on a plain text, but its output is {found}; its "
                             "weights hold NaN or infinite values (damaged or diverged in training?) or overflow")
