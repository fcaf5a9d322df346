"""Trust checks of token maps: sanity, faithfulness, and the share of attribution on known evidence.

- :func:`text_sanity`: the cascading model randomisation (Adebayo, Gilmer, Muelly, Goodfellow, Hardt & Kim 2018,
  arXiv:1810.03292) and the random-logit test (Sixt, Granz & Landgraf 2020, arXiv:1912.09818) on a text classifier,
  with :mod:`.sanity`'s randomisation (``randomise`` on a deep copy: the model is never altered).
- :func:`text_faithfulness`: ERASER's comprehensiveness and sufficiency (DeYoung, Jain, Rajani, Lehman, Xiong,
  Socher & Wallace 2020, arXiv:1911.03429) as AOPC over bins of top-k% tokens, and deletion/insertion curves over
  tokens (Petsiuk, Das & Saenko 2018, arXiv:1806.07421), each beside a seeded random ranking (the control).
- :func:`evidence_share` and :func:`evidence_hit`: on a corpus whose evidence tokens are known, how much of a map's
  magnitude lies on them and whether its top token is one (a token pointing game, after Zhang et al. 2016,
  arXiv:1608.00507).

Removing tokens (``REMOVALS``). "delete" is ferret's convention (ferret-xai 0.4.2, ``AOPC_*_Evaluation``, the
oracle of the tests): the content token ids left are decoded to a string with ``tokenizer.decode`` and that string
is tokenised again ([CLS]/[SEP] added back), so the text gets shorter and the words close up, as ERASER deletes
tokens from the text. "mask" and "pad" replace each removed token's id by the tokenizer's [MASK] or [PAD] id in
place: positions and length stay, nothing is re-tokenised. [CLS] and [SEP] are never removed in any of them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from copy import deepcopy
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from ..batching import Progress, default_batch_size
from ..errors import ParameterError
from ..hooks import model_guard
from ..registry import Reference
from ..targets import Target, TargetSpec
from ..text.bundle import TextBundle, TokenBundle
from ..text.explain import explain_text
from ..text.scores import as_strip
from ..text.tokens import Encoded
from .sanity import Block, random_classes, randomise
from .similarity import spearman

DEYOUNG = Reference("DeYoung, Jain, Rajani, Lehman, Xiong, Socher & Wallace", 2020,
                    "ERASER: A Benchmark to Evaluate Rationalized NLP Models", "1911.03429")
ERASER_BINS = (0.01, 0.05, 0.1, 0.2, 0.5)
REMOVALS = ("delete", "mask", "pad")
REMOVAL_SAID = {
    "delete": "deleted from the text (ferret's convention): the remaining content ids are decoded to a string "
              "(tokenizer.decode) and tokenised again, [CLS]/[SEP] added back",
    "mask": "replaced in place by the tokenizer's [MASK] id (positions and length kept, no re-tokenising)",
    "pad": "replaced in place by the tokenizer's [PAD] id, still attended to (positions and length kept)",
}
CURVE_STEPS = 20  # points of a deletion/insertion curve past 0 (one per token for texts of ≤ 20 content tokens)
RANDOM = "random"
FAITHFULNESS_OBJECTIVE = "probability"  # ERASER and ferret score the target's softmax probability


# ---------------------------------------------------------------------------------------------------------
# Evidence
# ---------------------------------------------------------------------------------------------------------


def _pair(scores: np.ndarray, evidence: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    values = np.asarray(scores, dtype=np.float64).ravel()
    mask = np.asarray(evidence).ravel()
    if mask.dtype != bool:
        mask = mask.astype(bool)
    if values.shape != mask.shape:
        raise ParameterError(f"expected one evidence flag per score ({values.size}); got {mask.size}")
    return np.where(np.isfinite(values), values, 0.0), mask


def evidence_share(scores: np.ndarray, evidence: np.ndarray) -> float:
    """Σ|scores| over the ``evidence`` tokens / Σ|scores| over all tokens given (NaN for an all-zero map).

    Pass the content tokens only ([CLS]/[SEP] are never evidence, and a gradient's largest entry is often on
    [CLS]); a map that spreads its magnitude evenly scores the evidence tokens' share of the tokens (the chance
    level, :func:`evidence_chance`)."""
    values, mask = _pair(scores, evidence)
    total = float(np.abs(values).sum())
    return float(np.abs(values[mask]).sum() / total) if total > 0 else math.nan


def evidence_hit(scores: np.ndarray, evidence: np.ndarray) -> float:
    """The token pointing game: 1 when the largest score is on an evidence token, else 0; with several equal
    maxima, the share of them that are evidence. NaN for an all-zero map. Signed scores point with their largest
    value (the token that pushes the target most), magnitudes with theirs."""
    values, mask = _pair(scores, evidence)
    if not values.size or not np.any(values):
        return math.nan
    top = values == values.max()
    return float(mask[top].mean())


def evidence_chance(evidence: np.ndarray) -> float:
    """The evidence tokens' share of the tokens: what a uniform map scores on both measures."""
    mask = np.asarray(evidence).astype(bool).ravel()
    return float(mask.mean()) if mask.size else math.nan


def span_tokens(encoded: Encoded, spans: Sequence[tuple[int, int]]) -> np.ndarray:
    """bool [L]: the tokens whose characters lie inside one of ``spans`` (character ranges of the text); special
    tokens never."""
    flags = np.zeros(len(encoded), dtype=bool)
    for i, ((start, end), special) in enumerate(zip(encoded.offsets, encoded.special, strict=True)):
        flags[i] = not special and end > start and any(a <= start and end <= b for a, b in spans)
    return flags


@dataclass(frozen=True)
class EvidenceRow:
    """One method (or "random") over a corpus: the mean :func:`evidence_share` and :func:`evidence_hit` over the
    sentences with evidence, and the mean share on the spurious word over the sentences that hold it (NaN when
    none does)."""

    method: str
    share: float
    hit: float
    spurious_share: float


@dataclass(frozen=True)
class CorpusEvidence:
    """Evidence measures of several methods on ``sentences`` corpus sentences, each explained for its own class;
    ``chance`` the mean share of the content tokens that are evidence (what a uniform map scores), ``spurious``
    how many sentences name the spurious word."""

    rows: list[EvidenceRow]
    chance: float
    sentences: int
    spurious: int

    def row(self, method: str) -> EvidenceRow:
        return next(r for r in self.rows if r.method == method)


def corpus_evidence(bundle: TextBundle, reviews: Sequence[Any], methods: Sequence[str], *, seed: int = 0,
                    params: dict[str, dict[str, Any]] | None = None,
                    progress: Callable[[int, int], object] | None = None) -> CorpusEvidence:
    """The share of |attribution| on the planted evidence words and the token pointing game, per method, over
    ``reviews`` (``explainers.text.corpus.Review``: a text, its class and its planted words with their character
    spans), each explained for its own class; beside the registered ``random`` control (uniform scores drawn
    with ``seed``), last, once, whether asked for or not. Measured over the content tokens ([CLS]/[SEP] are
    never evidence)."""
    methods = [m for m in dict.fromkeys(methods) if m != RANDOM] + [RANDOM]
    tracker = Progress(max(1, len(reviews)), progress)
    shares: dict[str, list[float]] = {m: [] for m in methods}
    hits: dict[str, list[float]] = {m: [] for m in methods}
    spurious: dict[str, list[float]] = {m: [] for m in methods}
    chances = []
    named = 0
    for review in reviews:
        encoded = bundle.encode(review.text)
        content = encoded.content
        evidence = span_tokens(encoded, [p.span for p in review.planted if p.kind == "evidence"])[content]
        cue = span_tokens(encoded, [p.span for p in review.planted if p.kind == "spurious"])[content]
        maps = explain_text(bundle, encoded, methods, [int(review.label)], seed=seed, params=params)
        scores = {m: maps[(m, int(review.label))].scores[content] for m in methods}
        named += bool(cue.any())
        if evidence.any():
            chances.append(evidence_chance(evidence))
        for method, values in scores.items():
            if evidence.any():
                shares[method].append(evidence_share(values, evidence))
                hits[method].append(evidence_hit(values, evidence))
            if cue.any():
                spurious[method].append(evidence_share(values, cue))
        tracker.advance()

    def mean(values: list[float]) -> float:
        defined = [v for v in values if math.isfinite(v)]
        return float(np.mean(defined)) if defined else math.nan

    rows = [EvidenceRow(m, mean(shares[m]), mean(hits[m]), mean(spurious[m])) for m in methods]
    return CorpusEvidence(rows=rows, chance=mean(chances), sentences=len(reviews), spurious=named)


# ---------------------------------------------------------------------------------------------------------
# Sanity
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TextSanityStep:
    """The maps after randomising the blocks named by ``label`` and every block above it ("classifier head",
    "+ layer 2", ..., "+ embeddings"); ``similarity`` the Spearman rank correlation of |scores| over the content
    tokens with the original map (NaN where a map is constant)."""

    label: str
    maps: dict[str, np.ndarray]
    similarity: dict[str, float]


@dataclass(frozen=True)
class TextSanity:
    """The text sanity checks of one text: ``original`` maps (method -> token scores [L]), the cascade's
    ``steps``, ``random_logit`` (method -> Spearman of |scores| between the target's map and a random other
    class's map), the text's ``encoded`` tokens, and ``notes`` (the blocks, the word-table convention, the class
    drawn)."""

    original: dict[str, np.ndarray]
    steps: list[TextSanityStep]
    random_logit: dict[str, float]
    encoded: Encoded
    notes: tuple[str, ...] = ()


def _owners(net: nn.Module) -> list[str]:
    """Modules holding parameters of their own, in definition order."""
    return [name for name, module in net.named_modules() if any(True for _ in module.parameters(recurse=False))]


def _layer_list(net: nn.Module) -> tuple[str, int]:
    """The encoder's layers: the nn.ModuleList with the most entries (BERT's ``bert.encoder.layer``)."""
    best = ("", 0)
    for name, module in net.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) > best[1]:
            best = (name, len(module))
    if not best[1]:
        raise ParameterError(f"cannot find the encoder layers of {type(net).__name__} (no nn.ModuleList of layers); "
                             "the text sanity cascade needs a transformer classifier")
    return best


def text_blocks(net: nn.Module) -> list[Block]:
    """The cascade's blocks of a Hugging Face sequence classifier, input to output: "embeddings" (every module
    with parameters before the first encoder layer: positions, token types, the embedding norm, but not the
    word-embedding table, which is the explained input), "layer 1" ... "layer n" (the entries of the encoder's
    layer list), and "classifier head" (every other module with parameters: pooler, classifier, final norms)."""
    table = net.get_input_embeddings()
    table_name = next(name for name, module in net.named_modules() if module is table)
    layers, count = _layer_list(net)
    names = [f"{layers}.{i}" for i in range(count)]
    owners = [o for o in _owners(net) if o != table_name]

    def layer_of(owner: str) -> int | None:
        return next((i for i, n in enumerate(names) if owner == n or owner.startswith(n + ".")), None)

    first = next((i for i, o in enumerate(owners) if layer_of(o) is not None), len(owners))
    embeddings = tuple(o for o in owners[:first] if layer_of(o) is None)
    head = tuple(o for o in owners[first:] if layer_of(o) is None)
    blocks = [Block("embeddings", embeddings)] if embeddings else []
    blocks += [Block(f"layer {i + 1}", (name,)) for i, name in enumerate(names)]
    if head:
        blocks.append(Block("classifier head", head))
    return blocks


class _Steps:
    """Progress over whole steps; a cancel inside a step's explanation reaches the caller's callback."""

    def __init__(self, total: int, callback: Callable[[int, int], object] | None):
        self.progress = Progress(total, callback)

    def inner(self) -> Callable[[int, int], object] | None:
        callback = self.progress.callback
        if callback is None:
            return None
        return lambda _done, _total: callback(self.progress.done, self.progress.total)


def _resolve(bundle: TextBundle, scored: TokenBundle, target: Any, objective: str) -> Target:
    with model_guard(scored.model), torch.no_grad():
        logits = scored.model(scored.inputs)
    return TargetSpec(target, 1, bundle.categories, objective).resolve(logits.detach().cpu())


def _fixed(target: Target) -> Any:
    """A resolved target as explain_text takes it again: a class index, or "a vs b" of indices."""
    classes = target.classes[0].tolist()
    return classes[0] if len(classes) == 1 else f"{classes[0]} vs {classes[1]}"


def _token_maps(scored: TokenBundle, methods: Sequence[str], target: Any, objective: str, seed: int, params,
                progress):
    maps = explain_text(scored, None, methods, [target], objective=objective, seed=seed, params=params,
                        progress=progress)
    return {method: maps[(method, target)].scores for method in methods}


def _rank_similarity(a: np.ndarray, b: np.ndarray, content: list[int]) -> float:
    value = spearman(np.asarray(a)[content][None], np.asarray(b)[content][None], absolute=True).value
    return math.nan if value is None else float(value)


def text_sanity(bundle: TextBundle, text: str | Encoded, methods: Sequence[str] | str, target: Any = "top1", *,
                objective: str = "logit", seed: int = 0, params: dict[str, dict[str, Any]] | None = None,
                progress: Callable[[int, int], object] | None = None) -> TextSanity:
    """The cascade and the random-logit test of ``methods`` on ``text``, every map of the target's ``objective``
    (logit, probability or log-probability, as the maps it checks).

    Cascade (Adebayo et al. 2018, arXiv:1810.03292): on a deep copy of the classifier, the blocks of
    :func:`text_blocks` are re-initialised from the output down (classifier head, the last encoder layer, ...,
    the embeddings) with :func:`.sanity.randomise`; after each step every method explains the same input
    embeddings for the same class (resolved once on the original model) and its map is compared with the
    original. The word-embedding table is the input: the text's embeddings are read from the original model once,
    so the last step randomises the position and token-type embeddings and the embedding norm, never the word
    vectors themselves. Random logit (Sixt et al. 2020, arXiv:1912.09818): the target's map against the map of one
    other class drawn with ``seed``. The bundle's model is never altered."""
    methods = [methods] if isinstance(methods, str) else list(methods)
    if not methods:
        raise ParameterError("expected at least one method to check")
    scored = bundle.scored(text)
    resolved = _resolve(bundle, scored, target, objective)
    fixed = _fixed(resolved)
    content = scored.encoded.content
    blocks = text_blocks(bundle.net)
    order = list(reversed(blocks))
    steps = _Steps(len(order) + 2, progress)
    original = _token_maps(scored, methods, fixed, objective, seed, params, steps.inner())
    steps.progress.advance()

    copy = deepcopy(bundle.net)  # the original (often the dashboard's cached model) must never change
    randomised = replace(bundle, net=copy, notes=list(bundle.notes))
    inputs = scored.inputs  # the original model's word vectors: the explained input stays the same
    results = []
    for index, block in enumerate(order):
        randomise(copy, block, seed)
        step_scored = replace(scored, model=randomised.model, source=randomised, inputs=inputs)
        maps = _token_maps(step_scored, methods, fixed, objective, seed, params, steps.inner())
        label = block.name if index == 0 else f"+ {block.name}"
        results.append(TextSanityStep(label, maps, {m: _rank_similarity(original[m], maps[m], content)
                                                    for m in methods}))
        steps.progress.advance()

    listed = "; ".join(f"{b.name}: {', '.join(b.modules)}" for b in order)
    notes = [f"cascade blocks, randomised from the top: {listed}",
             "the word-embedding table is the input: the text's embeddings were read from the original model, so "
             "'embeddings' randomises the position and token-type embeddings and the embedding norm only",
             "similarity: Spearman rank correlation of |token scores| over the content tokens with the original map"]
    random_logit: dict[str, float] = {}
    if resolved.contrast:
        notes.append("random-logit test skipped: it explains single classes, and the target is a contrast")
    elif len(bundle.categories) < 2:
        notes.append("random-logit test skipped: the model has one class")
    else:
        other = int(random_classes(resolved.indices.numpy(), len(bundle.categories), 1, seed)[0, 0])
        maps = explain_text(scored, None, methods, [fixed, other], objective=objective, seed=seed, params=params,
                            progress=steps.inner())
        random_logit = {m: _rank_similarity(maps[(m, fixed)].scores, maps[(m, other)].scores, content)
                        for m in methods}
        notes.append(f"random-logit test: the map of {_name(bundle, fixed)} against the map of "
                     f"{_name(bundle, other)} (drawn with seed {seed})")
    notes += _cut(scored.encoded)
    steps.progress.finish()
    return TextSanity(original=original, steps=results, random_logit=random_logit, encoded=scored.encoded,
                      notes=tuple(notes))


def _cut(encoded: Encoded) -> list[str]:
    """The truncation note of a text longer than the model reads (the checks ran on the part it reads), or none."""
    note = encoded.truncation_note()
    return [note] if note else []


def _name(bundle: TextBundle, index: Any) -> str:
    if isinstance(index, int) and 0 <= index < len(bundle.categories):
        return repr(bundle.categories[index])
    return str(index)


# ---------------------------------------------------------------------------------------------------------
# Faithfulness
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TextFaithfulnessRow:
    """One method's (or the random control's) faithfulness on one text. ``comprehensiveness`` (higher is more
    faithful) and ``sufficiency`` (lower is) are ERASER's AOPC over the bins; ``deletion`` [S] the score after
    removing the top fraction of content tokens, ``insertion`` [S] the score with only that fraction kept, at
    ``TextFaithfulness.curve_fractions``; their AUCs are trapezoid areas over [0, 1]."""

    method: str
    comprehensiveness: float
    sufficiency: float
    deletion_auc: float
    insertion_auc: float
    deletion: np.ndarray
    insertion: np.ndarray


@dataclass(frozen=True)
class TextFaithfulness:
    """Faithfulness of several methods on one text: ``rows`` (the methods asked, then "random"), the AOPC
    ``bins``, the curves' ``curve_fractions``, the ``target`` class indices (two for a contrast), how a removed
    token is removed (``removal``, one of ``REMOVALS``), the ``objective`` scored, and ``notes``."""

    rows: list[TextFaithfulnessRow]
    bins: tuple[float, ...]
    curve_fractions: np.ndarray
    target: tuple[int, ...]
    removal: str
    objective: str
    notes: tuple[str, ...]

    def row(self, method: str) -> TextFaithfulnessRow:
        found = [r for r in self.rows if r.method == method]
        if not found:
            raise KeyError(f"no row for {method!r}; have {', '.join(r.method for r in self.rows)}")
        return found[0]


def ferret_rationale(content_scores: np.ndarray, fraction: float) -> list[int] | None:
    """The content positions of a bin's rationale, as ferret picks them: k = int(fraction · n) tokens (none when
    k is 0), the k highest scores (NumPy's argsort, highest first), of which only the positive ones are kept;
    None when none is left."""
    n = len(content_scores)
    k = int(fraction * n)
    if not 0 < k <= n:
        return None
    top = [int(i) for i in np.array(content_scores).argsort()[-k:][::-1] if content_scores[i] > 0]
    return top or None


class _Scorer:
    """Scores token-id variants of one text for one target: the content tokens kept (a list of content
    positions, in text order) become ids by the removal rule, and equal lengths share forward passes."""

    def __init__(self, bundle: TextBundle, encoded: Encoded, target: Target, removal: str, progress: Progress):
        self.bundle, self.encoded, self.target, self.removal = bundle, encoded, target, removal
        self.content = encoded.content
        self.progress = progress
        self.replacement = None if removal == "delete" else bundle.special_id(removal)
        self.batch_size = default_batch_size(bundle.device, forward_only=True)

    def ids(self, kept: Sequence[int], exact_full: bool = True) -> list[int]:
        """The ids of the text with only content positions ``kept`` (indices into the content tokens); with
        ``exact_full``, keeping every token gives the text's own ids (ferret decodes and re-tokenises even then)."""
        ids = list(self.encoded.ids)
        if exact_full and len(kept) == len(self.content):
            return ids
        if self.removal == "delete":
            text = self.bundle.tokenizer.decode([ids[self.content[i]] for i in sorted(kept)])
            return list(self.bundle.tokenizer(text, add_special_tokens=True, truncation=True,
                                              max_length=self.bundle.max_length)["input_ids"])
        keep = {self.content[i] for i in kept}
        return [i if (p in keep or self.encoded.special[p]) else self.replacement for p, i in enumerate(ids)]

    def score(self, variants: Sequence[Sequence[int]], exact_full: bool = True) -> np.ndarray:
        """float64 [V]: the target's score on each variant (a list of content positions kept)."""
        id_lists = [self.ids(kept, exact_full) for kept in variants]
        scores = np.zeros(len(id_lists))
        by_length: dict[int, list[int]] = {}
        for index, ids in enumerate(id_lists):
            by_length.setdefault(len(ids), []).append(index)
        model = self.bundle.model
        table = self.bundle.net.get_input_embeddings()
        for indices in by_length.values():
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start:start + self.batch_size]
                index = torch.tensor([id_lists[i] for i in chunk], dtype=torch.long, device=table.weight.device)
                with model_guard(model), torch.no_grad():
                    logits = model(as_strip(table(index)))
                    values = self.target.take(torch.zeros(len(chunk), dtype=torch.long)).score(logits.float())
                scores[chunk] = values.double().cpu().numpy()
                self.progress.advance(len(chunk))
        return scores


def _aopc(scorer: _Scorer, content_scores: np.ndarray, bins: Sequence[float], full: float) -> tuple[float, float]:
    """(comprehensiveness, sufficiency): the mean over the bins of full − score without the rationale, and of
    full − score with only the rationale; a bin whose rationale is empty, or the same as the bin before's, is left
    out of the means (ferret's convention). NaN when no bin selects a token."""
    rationales: list[list[int]] = []
    last = None
    for fraction in bins:
        top = ferret_rationale(content_scores, fraction)
        if top is None or (last is not None and set(top) == last):
            continue
        last = set(top)
        rationales.append(top)
    if not rationales:
        return math.nan, math.nan
    n = len(content_scores)
    removed = scorer.score([[i for i in range(n) if i not in set(top)] for top in rationales], exact_full=False)
    kept = scorer.score([sorted(top) for top in rationales], exact_full=False)
    return float(np.mean(full - removed)), float(np.mean(full - kept))


def _curve_order(content_scores: np.ndarray) -> list[int]:
    """Content positions, highest score first, ties in text order."""
    return [int(i) for i in np.argsort(-np.asarray(content_scores), kind="stable")]


def _curves(scorer: _Scorer, order: list[int], counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    deletion = scorer.score([sorted(order[k:]) for k in counts])
    insertion = scorer.score([sorted(order[:k]) for k in counts])
    return deletion, insertion


def _maps(bundle: TextBundle, scored: TokenBundle, methods: Any, fixed: Any, objective: str, seed: int, params,
          progress) -> dict[str, np.ndarray]:
    """Token scores [L] per method: given (a mapping of precomputed scores) or explained."""
    names = list(methods) if isinstance(methods, Mapping) else [methods] if isinstance(methods, str) else list(methods)
    if RANDOM in names:
        raise ParameterError("'random' is the control, added to every faithfulness run; do not ask for it")
    if isinstance(methods, Mapping):
        maps = {str(k): np.asarray(v, dtype=np.float64).ravel() for k, v in methods.items()}
        for name, values in maps.items():
            if values.shape != (len(scored.encoded),):
                raise ParameterError(f"the scores of {name!r} have {values.size} values; the text has "
                                     f"{len(scored.encoded)} tokens")
        return maps
    maps = explain_text(scored, None, names, [fixed], objective=objective, seed=seed, params=params,
                        progress=progress)
    return {name: maps[(name, fixed)].scores for name in names}


def text_faithfulness(bundle: TextBundle, text: str | Encoded, methods: Sequence[str] | Mapping[str, Any],
                      target: Any = "top1", *, removal: str = "delete", bins: Sequence[float] = ERASER_BINS,
                      objective: str = FAITHFULNESS_OBJECTIVE, seed: int = 0,
                      params: dict[str, dict[str, Any]] | None = None,
                      progress: Callable[[int, int], object] | None = None) -> TextFaithfulness:
    """Comprehensiveness, sufficiency and deletion/insertion curves of ``methods`` (names, explained here for
    ``target`` with ``objective``; or a mapping name -> token scores [L] already computed) on ``text``, and of a
    random ranking drawn with ``seed``.

    ERASER (DeYoung et al. 2020, arXiv:1911.03429): for each bin b, the rationale is the top ⌊b·n⌋ of the n
    content tokens with positive scores (:func:`ferret_rationale`); comprehensiveness = p(text) − p(text without
    the rationale), sufficiency = p(text) − p(the rationale alone), averaged over the bins (AOPC), p the target's
    ``objective`` score. Curves: content tokens ranked by score (highest first, ties in text order), the top
    fraction removed (deletion) or alone kept (insertion). ``removal``: see the module's docstring."""
    if removal not in REMOVALS:
        raise ParameterError(f"removal must be one of {', '.join(REMOVALS)}; got {removal!r}")
    if removal != "delete" and not bundle.has_token(removal):  # before anything is explained
        allowed = [r for r in REMOVALS if r == "delete" or bundle.has_token(r)]
        raise ParameterError(f"removal {removal!r} needs the tokenizer's {removal} token, and this tokenizer has "
                             f"none; pick {' or '.join(repr(r) for r in allowed)}")
    bins = tuple(float(b) for b in bins)
    if not bins or any(not 0.0 < b <= 1.0 for b in bins):
        raise ParameterError(f"bins are fractions of the tokens in (0, 1]; got {list(bins)}")
    scored = bundle.scored(text)
    encoded = scored.encoded
    resolved = _resolve(bundle, scored, target, objective)
    fixed = _fixed(resolved)
    n = len(encoded.content)
    steps = min(n, CURVE_STEPS)
    fractions = np.linspace(0.0, 1.0, steps + 1)
    counts = np.rint(fractions * n).astype(int)
    count = 1 if isinstance(methods, str) else len(methods)
    variants = (count + 1) * (2 * len(bins) + 2 * len(counts)) + 1
    tracker = Progress(variants, progress)
    maps = _maps(bundle, scored, methods, fixed, objective, seed, params,
                 None if progress is None else (lambda _d, _t: progress(tracker.done, tracker.total)))
    rng = np.random.default_rng(seed)
    control = np.zeros(len(encoded))
    control[encoded.content] = rng.permutation(n) + 1.0  # positive: every token can enter a rationale
    maps[RANDOM] = control
    scorer = _Scorer(bundle, encoded, resolved, removal, tracker)
    full = float(scorer.score([list(range(n))])[0])
    rows = []
    for method, scores in maps.items():
        content_scores = np.asarray(scores, dtype=np.float64)[encoded.content]
        comprehensiveness, sufficiency = _aopc(scorer, content_scores, bins, full)
        deletion, insertion = _curves(scorer, _curve_order(content_scores), counts)
        rows.append(TextFaithfulnessRow(method, comprehensiveness, sufficiency,
                                        float(np.trapezoid(deletion, fractions)),
                                        float(np.trapezoid(insertion, fractions)), deletion, insertion))
    tracker.finish()
    notes = (
        f"removed tokens are {REMOVAL_SAID[removal]}; [CLS] and [SEP] always stay",
        f"the full text scores {full:.6g} ({objective} of {_name(bundle, fixed)})",
        f"AOPC over bins {', '.join(f'{b:g}' for b in bins)} of the {n} content tokens: a bin keeps the top "
        "int(bin·n) tokens with positive scores; bins that select none, or the same tokens as the bin before, are "
        "left out of the mean (ferret's convention); NaN when no bin selects a token",
        f"random: a ranking drawn with seed {seed}, the control; a faithful map beats it (higher comprehensiveness, "
        "lower sufficiency, lower deletion AUC, higher insertion AUC)",
        *_cut(encoded),
    )
    return TextFaithfulness(rows=rows, bins=bins, curve_fractions=fractions,
                            target=tuple(int(c) for c in resolved.classes[0].tolist()), removal=removal,
                            objective=objective, notes=notes)
