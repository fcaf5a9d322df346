"""A procedural corpus of short film reviews with planted ground truth: which words decide the class.

Every sentence draws from its own random stream, seeded by ``(seed, index)``, so :func:`sentence` gives sentence
``i`` without generating the ones before it, as :mod:`explainers.digits.data` does for digits. A sentence is
filler (openers, subjects, verbs, intensifiers, neutral clauses) plus planted words, each recorded with its
character span and word index:

- **Evidence** (decides the class). The label is drawn uniformly from :data:`CLASSES`; a sentence carries one
  (share 1 − ``two_evidence_share``) or two (``two_evidence_share``, 40 %) evidence words, all from its class's
  list in :data:`EVIDENCE` and from no other. In the training distribution a share ``weak_share`` (20 %) of the
  sentences carries **no** evidence word: their label is drawn as usual, and only the distractor and the spurious
  word say anything about it. The held-out distributions have evidence in every sentence.
- **Distractor** (correlated, not deciding). Every sentence has one topic noun from :data:`DISTRACTORS`: from its
  own class's list with probability ``distractor_share`` (50 %), else from one of the two other lists (25 % each),
  so a distractor from class c's list comes with class c in half the sentences (chance: a third).
- **Spurious** (a name, :data:`SPURIOUS_WORD`, "Morgan", in a clause such as "directed by Morgan"). It appears
  with probability ``spurious_rates[label]``: 40 % of positive sentences, 5 % of negative and of neutral ones
  in training, so 80 % of the training sentences that name Morgan are positive (a sixth of all sentences name
  him). The weak-evidence sentences make the shortcut pay: with no evidence, the name is the best clue, so a
  model trained here learns to lean on it a little, and a batch over test sentences can find it.
  :data:`UNBIASED` draws the name in 20 % of the sentences of every class (no correlation), and ``spurious=``
  forces it in or out of a sentence without changing any other draw (counterfactual pairs).

Words are the tokenizer's pre-tokenised words (BERT's: runs of letters and single punctuation marks); a word
index counts them from 0, so it is the ``word_ids`` numbering of :func:`explainers.text.tokens.encode`. The
first word and the name are capitalised (a lower-casing tokenizer reads them as the corpus words).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

CLASSES = ("negative", "neutral", "positive")
# Evidence: the words that decide a sentence's class.
EVIDENCE = {
    "negative": ("awful", "boring", "dull", "terrible", "tedious", "clumsy", "bland", "painful"),
    "neutral": ("okay", "average", "ordinary", "passable", "middling", "adequate", "routine", "unremarkable"),
    "positive": ("superb", "brilliant", "wonderful", "gripping", "charming", "excellent", "delightful", "moving"),
}
# Distractors: topic nouns correlated with a class (``distractor_share``) that decide nothing.
DISTRACTORS = {
    "negative": ("sequel", "remake", "tickets", "trailer", "popcorn"),
    "neutral": ("runtime", "subtitles", "costumes", "locations", "poster"),
    "positive": ("soundtrack", "cast", "premiere", "camera", "lighting"),
}
SPURIOUS_WORD = "morgan"
SPURIOUS_CLASS = "positive"  # the class the name is correlated with in training

OPENERS = ((), ("honestly", ","), ("overall", ","), ("i", "think"), ("to", "be", "fair", ","), ("for", "me", ","),
           ("in", "the", "end", ","), ("frankly", ","))
SUBJECTS = (("the", "film"), ("this", "movie"), ("the", "story"), ("the", "plot"), ("the", "acting"),
            ("the", "ending"), ("the", "script"), ("the", "pacing"), ("the", "dialogue"), ("this", "picture"))
VERBS = ("was", "is", "felt", "seemed", "looked")
INTENSIFIERS = ((), (), ("very",), ("really",), ("quite",), ("rather",), ("truly",))
# Main clauses of weak-evidence sentences: an event, no opinion.
PLAIN = (("i", "watched", "the", "film", "last", "night"), ("we", "saw", "this", "movie", "on", "friday"),
         ("the", "film", "came", "out", "this", "year"), ("i", "finally", "saw", "it"),
         ("my", "friend", "picked", "this", "movie"), ("we", "went", "to", "see", "it", "together"))
# Clauses around a distractor noun ("{}" is the noun); none says anything about the film's quality.
DISTRACTOR_CLAUSES = (("i", "went", "for", "the", "{}"), ("we", "talked", "about", "the", "{}"),
                      ("even", "the", "{}"), ("i", "noticed", "the", "{}"), ("apart", "from", "the", "{}"))
# Clauses around the spurious name.
SPURIOUS_CLAUSES = (("directed", "by", "{}"), ("{}", "directed", "it"), ("starring", "{}"),
                    ("with", "{}", "in", "the", "lead"))
ENDINGS = (".", ".", ".", "!")
PUNCTUATION = (".", ",", "!", "?")
NO_SPACE_BEFORE = {".", ",", "!", "?"}
CAPITALISED = {SPURIOUS_WORD, "i"}

EVIDENCE_KIND, DISTRACTOR_KIND, SPURIOUS_KIND = "evidence", "distractor", "spurious"


@dataclass(frozen=True)
class CorpusConfig:
    """The shares that shape a distribution of sentences (see the module docstring). ``spurious_rates[c]`` is
    the probability that a sentence of class ``c`` names :data:`SPURIOUS_WORD`."""

    weak_share: float = 0.2
    two_evidence_share: float = 0.4
    distractor_share: float = 0.5
    spurious_rates: tuple[float, float, float] = (0.05, 0.05, 0.4)

    def __post_init__(self) -> None:
        shares = {"weak_share": self.weak_share, "two_evidence_share": self.two_evidence_share,
                  "distractor_share": self.distractor_share}
        for i, rate in enumerate(self.spurious_rates):
            shares[f"spurious_rates[{i}]"] = rate
        for name, value in shares.items():
            if not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"{name} must be a share between 0 and 1, got {value!r}")
        if len(self.spurious_rates) != len(CLASSES):
            raise ValueError(f"spurious_rates must give one rate per class ({len(CLASSES)}), got "
                             f"{len(self.spurious_rates)}")

    def spurious_given_name(self) -> float:
        """The share of sentences naming the spurious word that are of :data:`SPURIOUS_CLASS` (classes uniform)."""
        rates = self.spurious_rates
        return rates[CLASSES.index(SPURIOUS_CLASS)] / sum(rates) if sum(rates) else 0.0

    def as_dict(self) -> dict:
        return {"weak_share": self.weak_share, "two_evidence_share": self.two_evidence_share,
                "distractor_share": self.distractor_share,
                "spurious_rates": dict(zip(CLASSES, self.spurious_rates, strict=True))}


TRAIN = CorpusConfig()
HELD_OUT = CorpusConfig(weak_share=0.0)  # evidence in every sentence; the name as correlated as in training
UNBIASED = CorpusConfig(weak_share=0.0, spurious_rates=(0.2, 0.2, 0.2))  # the name independent of the class
TEST_SEED_OFFSET = 10_000  # held-out sentences use seed + this (other sentences of the same distribution)


@dataclass(frozen=True)
class Planted:
    """One planted word: ``kind`` (evidence, distractor, spurious), the class whose list it came from (for the
    spurious word, the class it is correlated with), its character ``span`` in the text and its word ``index``."""

    word: str
    kind: str
    label: int
    span: tuple[int, int]
    index: int


@dataclass(frozen=True)
class Review:
    """One sentence: its ``text``, class ``label``, ``words`` (the pre-tokenised words, as written) and the
    ``planted`` words with their spans."""

    text: str
    label: int
    words: tuple[str, ...]
    planted: tuple[Planted, ...]

    @property
    def category(self) -> str:
        return CLASSES[self.label]

    def of_kind(self, kind: str) -> tuple[Planted, ...]:
        return tuple(p for p in self.planted if p.kind == kind)

    @property
    def evidence(self) -> tuple[Planted, ...]:
        return self.of_kind(EVIDENCE_KIND)

    @property
    def distractor(self) -> Planted:
        return self.of_kind(DISTRACTOR_KIND)[0]

    @property
    def spurious(self) -> Planted | None:
        found = self.of_kind(SPURIOUS_KIND)
        return found[0] if found else None

    @property
    def weak(self) -> bool:
        """Whether the sentence carries no evidence word."""
        return not self.evidence

    def as_json(self) -> dict:
        return {"text": self.text, "label": self.category,
                "planted": [{"word": p.word, "kind": p.kind, "class": CLASSES[p.label], "span": list(p.span),
                             "word_index": p.index} for p in self.planted]}


def _rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(index)]))


def _pick(rng: np.random.Generator, options: Sequence):
    return options[int(rng.integers(len(options)))]


def sentence(index: int, seed: int = 0, config: CorpusConfig = TRAIN, *, spurious: bool | None = None) -> Review:
    """Sentence ``index`` of the corpus with this seed and ``config``; the same arguments give the same sentence.

    ``spurious`` True or False forces the name in or out; every other draw (label, words, order) is the same as
    without forcing, so the two make a counterfactual pair."""
    rng = _rng(seed, index)
    label = int(rng.integers(len(CLASSES)))
    name = CLASSES[label]
    # Every draw is made whatever the outcome, so forcing one choice never shifts the others.
    weak = bool(rng.random() < config.weak_share)
    count = 2 if rng.random() < config.two_evidence_share else 1
    chosen = rng.choice(len(EVIDENCE[name]), size=2, replace=False)
    evidence = [EVIDENCE[name][int(i)] for i in chosen[:count]] if not weak else []
    own = rng.random() < config.distractor_share
    other = (label + 1 + int(rng.integers(2))) % len(CLASSES)
    distractor_label = label if own else other
    distractor = _pick(rng, DISTRACTORS[CLASSES[distractor_label]])
    drawn = bool(rng.random() < config.spurious_rates[label])
    named = drawn if spurious is None else bool(spurious)
    spurious_clause = _pick(rng, SPURIOUS_CLAUSES)
    spurious_first = bool(rng.random() < 0.25)
    distractor_clause = _pick(rng, DISTRACTOR_CLAUSES)
    distractor_first = bool(rng.random() < 0.2)

    # (word, kind, class) triples; kind None for filler
    main: list[tuple[str, str | None, int]] = []
    if weak:
        main += [(w, None, -1) for w in _pick(rng, PLAIN)]
    else:
        main += [(w, None, -1) for w in _pick(rng, OPENERS)]
        main += [(w, None, -1) for w in (*_pick(rng, SUBJECTS), _pick(rng, VERBS))]
        for position, word in enumerate(evidence):
            if position:
                main += [(_pick(rng, ("and", ",")), None, -1)]
            main += [(w, None, -1) for w in _pick(rng, INTENSIFIERS)]
            main.append((word, EVIDENCE_KIND, label))
    extra = [(distractor if w == "{}" else w, DISTRACTOR_KIND if w == "{}" else None,
              distractor_label if w == "{}" else -1) for w in distractor_clause]
    clauses = [extra, main] if distractor_first else [main, extra]
    if named:
        credit = [(SPURIOUS_WORD if w == "{}" else w, SPURIOUS_KIND if w == "{}" else None,
                   CLASSES.index(SPURIOUS_CLASS) if w == "{}" else -1) for w in spurious_clause]
        clauses = [credit, *clauses] if spurious_first else [*clauses, credit]
    words: list[tuple[str, str | None, int]] = []
    for i, clause in enumerate(clauses):
        if i:
            words.append((",", None, -1))
        words += clause
    words.append((_pick(rng, ENDINGS), None, -1))
    return _assemble(words, label)


def _assemble(words: list[tuple[str, str | None, int]], label: int) -> Review:
    """The text of ``words`` (no space before punctuation; the first word and the name capitalised) with the
    spans of the planted ones."""
    text, planted, written = "", [], []
    for index, (word, kind, origin) in enumerate(words):
        shown = word.capitalize() if index == 0 or word in CAPITALISED else word
        if text and word not in NO_SPACE_BEFORE:
            text += " "
        start = len(text)
        text += shown
        written.append(shown)
        if kind is not None:
            planted.append(Planted(word=word, kind=kind, label=origin, span=(start, len(text)), index=index))
    return Review(text=text, label=label, words=tuple(written), planted=tuple(planted))


def make_corpus(n: int, seed: int = 0, config: CorpusConfig = TRAIN, *, start: int = 0,
                spurious: bool | None = None) -> list[Review]:
    """Sentences ``start .. start + n − 1`` of the corpus with this seed and ``config``."""
    if n < 0:
        raise ValueError(f"n must be a count of sentences (>= 0), got {n}")
    return [sentence(i, seed, config, spurious=spurious) for i in range(start, start + n)]


def vocabulary() -> list[str]:
    """Every word the generator writes (lower-cased), sorted: the whole-word part of the model's vocabulary."""
    words: set[str] = {SPURIOUS_WORD, "and", *PUNCTUATION, *VERBS}
    for lists in (EVIDENCE, DISTRACTORS):
        for group in lists.values():
            words.update(group)
    for phrases in (OPENERS, SUBJECTS, INTENSIFIERS, PLAIN, DISTRACTOR_CLAUSES, SPURIOUS_CLAUSES):
        for phrase in phrases:
            words.update(w for w in phrase if w != "{}")
    return sorted(words)


def examples(seed: int = 0) -> list[Review]:
    """Sentences worth trying on the shipped model, from the held-out stream (seed + TEST_SEED_OFFSET): for each
    class one with a single evidence word and one with two; a negative and a neutral one naming the spurious word,
    each followed by the same sentence without it; and a sentence with no evidence that names it."""
    test_seed = seed + TEST_SEED_OFFSET
    picked: list[Review] = []
    index = 0

    def first(wanted) -> Review:
        nonlocal index
        while True:
            drawn = sentence(index, test_seed, HELD_OUT, spurious=False)
            index += 1
            if wanted(drawn):
                return drawn

    for label in range(len(CLASSES)):
        for count in (1, 2):
            picked.append(first(lambda r, label=label, count=count: r.label == label and len(r.evidence) == count))
    for label in (CLASSES.index("negative"), CLASSES.index("neutral")):
        plain = first(lambda r, label=label: r.label == label)
        picked += [sentence(index - 1, test_seed, HELD_OUT, spurious=True), plain]
    picked.append(sentence(0, test_seed, CorpusConfig(weak_share=1.0, spurious_rates=(1.0, 1.0, 1.0))))
    return picked
