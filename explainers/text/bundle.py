"""TextBundle: a Hugging Face sequence classifier with its tokenizer; TokenBundle: one text ready to explain.

``TextBundle.scored(text)`` tokenises the text and returns a :class:`TokenBundle` whose ``model`` maps token
embeddings [N, D, 1, L] to logits (:class:`~explainers.text.scores.EmbeddingScores`) and whose ``inputs`` are
the text's embeddings: ``explain(scored, scored.inputs, method, target)`` then works as for an image.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..baselines import TEXT_BASELINES
from ..errors import ParameterError
from ..registry import TEXT
from ..superpixels import TEXT_UNITS as UNITS
from .scores import EmbeddingScores, as_strip
from .tokens import Encoded, encode


@dataclass
class TextBundle:
    """A sequence classifier in eval mode, its fast tokenizer and class names. ``max_length`` is the most tokens
    one text may have (longer texts are cut, and the cut is said); ``notes`` what the UI should tell about it."""

    name: str
    net: nn.Module
    tokenizer: object
    categories: list[str]
    max_length: int
    description: str = ""
    notes: list[str] = field(default_factory=list)
    examples: tuple[str, ...] = ()  # sentences worth trying on this model (the shipped model's)
    modality: str = TEXT
    needs_text = True  # explained through ``scored(text)``: core.unwrap says so when handed this bundle

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    @property
    def model(self) -> EmbeddingScores:
        """The classifier as a function of token embeddings (one module per bundle: its hooks lock the net)."""
        scorer = self.__dict__.get("_scorer")
        if scorer is None:
            scorer = self.__dict__["_scorer"] = EmbeddingScores(self.net)
        return scorer

    def encode(self, text: str) -> Encoded:
        return encode(self.tokenizer, text, self.max_length)

    def embed(self, ids: list[int] | tuple[int, ...]) -> torch.Tensor:
        """[1, D, 1, L]: the embeddings of token ``ids``, as the methods take them."""
        table = self.net.get_input_embeddings()
        index = torch.tensor([list(ids)], dtype=torch.long, device=table.weight.device)
        with torch.no_grad():
            return as_strip(table(index)).detach()

    def scored(self, text: str | Encoded) -> TokenBundle:
        """``text`` (or its encoding) ready to explain: the bundle and its inputs."""
        encoded = text if isinstance(text, Encoded) else self.encode(text)
        return TokenBundle(name=self.name, model=self.model, categories=self.categories, encoded=encoded,
                           inputs=self.embed(encoded.ids), source=self)

    def has_token(self, kind: str) -> bool:
        """Whether the tokenizer has a ``kind`` ("pad" or "mask") token (GPT-2's has neither)."""
        return getattr(self.tokenizer, f"{kind}_token_id", None) is not None

    def special_id(self, kind: str) -> int:
        """The id of the tokenizer's ``kind`` ("pad" or "mask") token; ParameterError when it has none, naming the
        baselines this tokenizer does allow ("zero" always)."""
        if not self.has_token(kind):
            allowed = [k for k in TEXT_BASELINES if k == "zero" or self.has_token(k)]
            pick = f"pick {allowed[0]!r}" if len(allowed) == 1 else f"pick one of {', '.join(allowed)}"
            raise ParameterError(f"baseline {kind!r} needs the tokenizer's {kind} token, and this tokenizer has "
                                 f"none; {pick}")
        return int(getattr(self.tokenizer, f"{kind}_token_id"))


@dataclass
class TokenBundle:
    """One text ready to explain: ``model`` (token embeddings [N, D, 1, L] → logits), ``inputs`` [1, D, 1, L]
    the text's embeddings, ``encoded`` its tokens. Explained like an image bundle; ``baseline`` and ``regions``
    give the text methods their references and features."""

    name: str
    model: EmbeddingScores
    categories: list[str]
    encoded: Encoded
    inputs: torch.Tensor
    source: TextBundle
    modality: str = TEXT
    layers: list = field(default_factory=list)  # no spatial layers: no CAMs on text
    default_layer: str | None = None
    normalize: None = None  # no pixels: the pixel-space baselines ("black") do not apply

    @property
    def notes(self) -> list[str]:
        note = self.encoded.truncation_note()
        return [*self.source.notes, *([note] if note else [])]

    def content_mask(self) -> torch.Tensor:
        """bool [1, 1, 1, L] on the inputs' device: True on the tokens of the text, False on [CLS]/[SEP], which no
        baseline replaces and no noise or removal touches."""
        flags = torch.tensor([not s for s in self.encoded.special], device=self.inputs.device)
        return flags.view(1, 1, 1, -1)

    def baseline(self, kind: str) -> torch.Tensor:
        """[1, D, 1, L]: the text with every content token replaced by ``kind`` (one of ``TEXT_BASELINES``)."""
        if kind not in TEXT_BASELINES:
            raise ParameterError(f"a text baseline is one of {', '.join(TEXT_BASELINES)}; got {kind!r}")
        if kind == "zero":
            replaced = torch.zeros_like(self.inputs)
        else:
            replaced = self.source.embed([self.source.special_id(kind)] * len(self.encoded)).to(self.inputs)
        return torch.where(self.content_mask(), replaced, self.inputs)

    def regions(self, unit: str) -> torch.Tensor:
        """long [1, 1, L]: each token's feature for the perturbation methods, every token alone (``token``) or
        by word (``word``); −1 on special tokens, which are never switched off."""
        if unit not in UNITS:
            raise ParameterError(f"unit must be one of {', '.join(UNITS)}; got {unit!r}")
        if unit == "word":
            labels = torch.as_tensor(self.encoded.word_labels(), device=self.inputs.device)
        else:
            content = self.content_mask().view(-1)
            labels = torch.where(content, content.long().cumsum(0) - 1, torch.full_like(content, -1, dtype=torch.long))
        return labels.view(1, 1, -1)
