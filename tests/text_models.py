"""Seeded tiny text classifiers for the tests: a BERT built from a config (no download) and a WordPiece tokenizer
over a small vocabulary, with subword pieces so unknown words split into tokens; and a byte-level BPE tokenizer
(RoBERTa's and GPT-2's kind, trained here on a few sentences) whose tokens may cut one character into several."""

from __future__ import annotations

import string

import torch
from tokenizers import ByteLevelBPETokenizer, Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

from explainers.text import TextBundle

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = ["the", "a", "movie", "film", "was", "is", "great", "awful", "good", "bad", "plot", "and", "not", "very",
         "!", ".", ",", "?"]
VOCAB = SPECIALS + WORDS + list(string.ascii_lowercase) + ["##" + c for c in string.ascii_lowercase]


def tiny_tokenizer(vocab: list[str] | None = None) -> PreTrainedTokenizerFast:
    """A fast BERT-style WordPiece tokenizer (lower-cased, [CLS] text [SEP]) over ``vocab``."""
    vocab = list(vocab or VOCAB)
    index = {word: i for i, word in enumerate(vocab)}
    backend = Tokenizer(models.WordPiece(index, unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", index["[CLS]"]), ("[SEP]", index["[SEP]"])])
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]")


BYTE_LEVEL_SENTENCES = ["a good film", "a bad film", "the plot was good", "the film was not bad"]


def byte_level_tokenizer(pad: bool = True, mask: bool = True) -> PreTrainedTokenizerFast:
    """A fast byte-level BPE tokenizer (RoBERTa-style: <s> text </s>) trained on :data:`BYTE_LEVEL_SENTENCES`: a
    character it never saw (an emoji, "ï") becomes one token per UTF-8 byte, each spanning the whole character.
    ``pad``/``mask`` False leaves that token out (GPT-2 has neither)."""
    specials = ["<s>", "</s>", "<unk>", *(["<pad>"] if pad else []), *(["<mask>"] if mask else [])]
    bpe = ByteLevelBPETokenizer(add_prefix_space=False, trim_offsets=True)
    bpe.train_from_iterator(BYTE_LEVEL_SENTENCES, vocab_size=300, min_frequency=1, special_tokens=specials,
                            show_progress=False)
    backend = bpe._tokenizer
    backend.post_processor = processors.RobertaProcessing(("</s>", bpe.token_to_id("</s>")),
                                                          ("<s>", bpe.token_to_id("<s>")), trim_offsets=True)
    named = {"pad_token": "<pad>"} if pad else {}
    named.update({"mask_token": "<mask>"} if mask else {})
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", cls_token="<s>",
                                   sep_token="</s>", unk_token="<unk>", **named)


def tiny_bert(seed: int = 0, num_labels: int = 3, hidden: int = 32, layers: int = 2, heads: int = 2,
              vocab_size: int | None = None, max_positions: int = 64) -> BertForSequenceClassification:
    """A seeded BertForSequenceClassification built from a config, in eval mode."""
    config = BertConfig(vocab_size=vocab_size or len(VOCAB), hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=heads, intermediate_size=2 * hidden, max_position_embeddings=max_positions,
                        num_labels=num_labels, id2label={i: f"class {i}" for i in range(num_labels)},
                        label2id={f"class {i}": i for i in range(num_labels)})
    torch.manual_seed(seed)
    return BertForSequenceClassification(config).eval()


def tiny_text_bundle(seed: int = 0, num_labels: int = 3, max_length: int = 32, **kwargs) -> TextBundle:
    """A TextBundle of :func:`tiny_bert` and :func:`tiny_tokenizer`; classes "neg", "neu", "pos" for three."""
    names = ["neg", "neu", "pos"] if num_labels == 3 else [f"class {i}" for i in range(num_labels)]
    return TextBundle(name="tiny-bert", net=tiny_bert(seed, num_labels, **kwargs), tokenizer=tiny_tokenizer(),
                      categories=names, max_length=max_length)
