"""The Methods page's content, generated from the registry: one card per method, built by pure functions.

Nothing here is written per method: every string comes from a method's ``MethodInfo`` (summary, paper, cost,
parameters, weaknesses, sanity-check verdict). Only the family blurbs and the sanity-check paper are
hand-written, and a family the blurbs do not know still gets its header and cards.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from explainers import METHODS, MethodInfo, Param, Reference, Sanity
from explainers.images import IMAGE_SUFFIXES
from explainers.methods.controls import ADEBAYO
from explainers.registry import FAMILY_ORDER
from explainers.trust.sanity import CheckVerdict, Disagreement

COST_HW = (224, 224)


# Short docs per family; the page orders families as the registry's FAMILY_ORDER (the pickers' order), and a
# family neither knows follows in registry order.
FAMILY_NOTES = {
    "Gradient": "Back-propagate the class score to the input pixels: sharp, cheap, one value per pixel and "
    "colour channel.",
    "Gradient (noise-averaged)": "Wrap a gradient method and average (or take the variance of) its maps over "
    "noisy copies of the input.",
    "Propagation": "Send the class score back through the network layer by layer with rules other than the "
    "gradient's (relevance, or differences from a reference input), so that the input's scores add up to the "
    "output's.",
    "CAM": "Weight the feature maps of a convolutional layer: coarse but class-discriminative maps at the "
    "layer's resolution.",
    "Perturbation": "Hide parts of the image and watch the score: model-agnostic, uses outputs only, many "
    "forward passes.",
    "Surrogate": "Switch image regions (superpixels) on and off many times and fit a simple model of the score "
    "to the pattern: each region's weight in that model is its attribution.",
    "Attention": "Read a vision transformer's attention weights instead of gradients.",
}

PARAM_COLUMNS = ("Parameter", "Type", "Default", "Range / choices", "Help")

VERDICT_STYLES = {  # tone -> (badge colour, icon)
    "fails": ("red", ":material/warning:"),
    "passes": ("green", ":material/check_circle:"),
    "neutral": ("gray", ":material/help:"),
}

_MARKDOWN_SPECIALS = "\\`*_[]$~|<>#"


def md_escape(text: str) -> str:
    """Backslash-escape the characters Streamlit's markdown would interpret (emphasis, links, LaTeX, tables)."""
    return "".join(f"\\{c}" if c in _MARKDOWN_SPECIALS else c for c in str(text))


# ---- cost -----------------------------------------------------------------------------------------------


def passes_text(forward: int, backward: int) -> str:
    """``(1, 1)`` -> "1 forward + 1 backward"; a zero backward count is left out."""
    if not forward and not backward:
        return "no passes"
    parts = [f"{forward} forward"] if forward else []
    if backward:
        parts.append(f"{backward} backward")
    return " + ".join(parts)


def cost_text(info: MethodInfo, params: dict[str, Any] | None = None, hw: tuple[int, int] = COST_HW) -> str:
    """Passes per image at ``hw`` with ``params`` (defaults filled in), read off the registry's cost data.

    A cost with a per-channel part is described per channel, e.g. "1 forward + one forward per channel of the
    layer"; a wrapper's cost is its base method's, repeated.
    """
    cost = info.cost
    if not cost.depends_on_channels:
        passes = info.passes(params, hw, None)
        return passes_text(passes.forward, passes.backward)
    fixed = info.passes(params, hw, 0)
    parts = [passes_text(fixed.forward, fixed.backward)] if fixed.total else []
    for kind, count in zip(("forward", "backward"), cost.per_channel):
        if count:
            parts.append(f"{'one' if count == 1 else count} {kind} per channel of the layer")
    return " + ".join(parts)


# ---- parameters -----------------------------------------------------------------------------------------


def default_text(param: Param) -> str:
    """A parameter's default as the table shows it ("none" for an empty folder path)."""
    return "none" if param.kind == "folder" and not param.default else format_value(param.default)


def format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _bound(param: Param, value: float) -> str:
    return str(int(value)) if param.kind == "int" else format_value(float(value))


def param_type(param: Param) -> str:
    return f"{param.kind} or tensor" if param.allow_tensor else param.kind


def param_range(param: Param) -> str:
    """"1..1000", "≥ 0", "≤ 1", "any", the choices, or "true / false"."""
    if param.kind == "choice":
        text = ", ".join(param.choices)
        return f"{text} (or a tensor, from Python)" if param.allow_tensor else text
    if param.kind == "bool":
        return "true / false"
    if param.kind == "folder":
        return f"a folder path on the machine that runs it (images: {', '.join(IMAGE_SUFFIXES)}); empty for none"
    low, high = param.minimum, param.maximum
    if low is not None and high is not None:
        return f"{_bound(param, low)}..{_bound(param, high)}"
    if low is not None:
        return f"≥ {_bound(param, low)}"
    if high is not None:
        return f"≤ {_bound(param, high)}"
    return "any"


def param_rows(info: MethodInfo) -> list[dict[str, str]]:
    """One row per declared parameter, keyed by ``PARAM_COLUMNS``; all values are strings."""
    return [
        dict(zip(PARAM_COLUMNS, (name, param_type(p), default_text(p), param_range(p), p.help)))
        for name, p in info.params.items()
    ]


# ---- facts ----------------------------------------------------------------------------------------------


def output_text(info: MethodInfo) -> str:
    if info.attribution_channels is None:
        shape = "input-shaped attribution (a value per pixel and colour channel)"
    elif info.attribution_channels == 1:
        shape = "1-channel map (one value per pixel)"
    else:
        shape = f"{info.attribution_channels}-channel attribution"
    return f"{shape}; {target_text(info)}"


def target_text(info: MethodInfo) -> str:
    """Whether the target class can change the map: what the Methods card says of every method."""
    if info.class_sensitive:
        return "class-sensitive (each target class gets its own map)"
    return "class-agnostic (the same map whatever the target class)"


def layer_text(info: MethodInfo) -> str:
    return "needs a layer (pick one in Explore)" if info.needs_layer else "no layer needed"


# How a token's one score is made from its D embedding values (the registry's ``TextUse.reduction``), in a few
# words: whether it is signed is the method's own note's to say (a sum of squares is a sum, and never negative).
REDUCTION_TEXT = {
    "l2": "the L2 norm over the embedding",
    "sum": "the sum over the embedding",
    "map": "the method's own value per token",
    "base": "as its base method's",
}
# Why a method is not offered on text, said once for all (the registry has no per-method reason; the README's
# "Text" section gives each one's).
NOT_ON_TEXT = ("Not on text: it needs pixels, a spatial layer, ReLU modules, rules for attention or a "
               "distribution of reference inputs, which a text classifier does not offer (the README's “Text” "
               "section says which for each method).")


def text_text(info: MethodInfo) -> str:
    """Whether and how the method runs on text (the Text page): the registry's ``TextUse`` note with the token
    score's reduction in a few words, and which parameters differ from the image ones; markdown-escaped."""
    if not info.applies_to("text"):
        return NOT_ON_TEXT
    use = info.text
    parts = [" ".join(use.note.split()).rstrip(".") + "."] if use.note else []
    parts.append(f"Token score: {REDUCTION_TEXT.get(use.reduction, use.reduction)}.")
    if use.params:
        parts.append("Text parameters: " + "; ".join(
            f"{name} ({param_range(param)}, default {default_text(param)})" for name, param in use.params.items())
            + ".")
    if use.hidden:
        parts.append(f"Not used on text: {', '.join(sorted(use.hidden))}.")
    if not info.image:
        parts.append("Text only.")
    return md_escape(" ".join(parts))


def paper_markdown(reference: Reference) -> str:
    """"Authors (year). *Title*. [arXiv:…](link)" — the link only where the reference has one."""
    text = f"{md_escape(reference.authors)} ({reference.year}). *{md_escape(reference.title)}*."
    link = reference.link
    if link:
        label = f"arXiv:{reference.arxiv}" if reference.arxiv else "paper"
        text += f" [{label}]({link})"
    return text


@dataclass(frozen=True)
class Verdict:
    """The Adebayo et al. 2018 sanity-check verdict as a badge: ``tone`` is "fails", "passes" or "neutral"."""

    label: str
    tone: str
    note: str = ""

    @property
    def color(self) -> str:
        return VERDICT_STYLES[self.tone][0]

    @property
    def icon(self) -> str:
        return VERDICT_STYLES[self.tone][1]


def badge_markdown(item: Verdict) -> str:
    """Streamlit's colour-badge directive, e.g. ":red-badge[:material/warning: fails model randomisation]"."""
    return f":{item.color}-badge[{item.icon} {md_escape(item.label)}]"


def _base_method(info: MethodInfo) -> MethodInfo | None:
    """The method a wrapper defaults to, when it declares a ``base`` choice naming a registered method."""
    base = info.params.get("base")
    if base is not None and base.kind == "choice" and base.default in METHODS and base.default != info.name:
        return METHODS[base.default]
    return None


TONES = {Sanity.PASSES: "passes", Sanity.FAILS: "fails"}  # class-insensitive is another property: grey

# What Adebayo et al. 2018 reported, attributed to them (the registry's verdict is their finding, not a fact of
# every model and image).
FINDINGS = {
    Sanity.PASSES: "Adebayo et al. ({year}) found that it passes: its map changed as the weights were randomised.",
    Sanity.FAILS: "Adebayo et al. ({year}) found that it fails: its map barely changed as the weights were "
    "randomised.",
    Sanity.CLASS_INSENSITIVE: "Not in Adebayo et al.'s ({year}) randomisation study; its map barely depends on "
    "the class.",
    Sanity.UNTESTED: "Not in Adebayo et al.'s ({year}) randomisation study.",
    Sanity.CONTROL: "A control, not an explanation: the yardstick the sanity checks measure methods against.",
}


def verdict(info: MethodInfo) -> Verdict:
    """The registry's sanity verdict (an enum) as a badge; a wrapper names its default base's verdict."""
    note = " ".join(info.sanity_note.split())
    base = _base_method(info)
    if info.sanity is Sanity.AS_BASE and base is not None and not note:
        note = f"default base, {base.display_name}: {base.sanity.label}"
    return Verdict(info.sanity.label, TONES.get(info.sanity, "neutral"), note)


def finding_text(info: MethodInfo) -> str:
    """The published model-randomisation verdict as a finding: "Adebayo et al. (2018) found that it fails: …";
    a wrapper's is its default base's."""
    published = info.published_verdict()
    text = FINDINGS.get(published.sanity, "").format(year=ADEBAYO.year)
    if published.source != info.name:
        return f"As its base method ({METHODS[published.source].display_name}): {text}"
    return text


@dataclass(frozen=True)
class Measured:
    """A method's model-randomisation verdict measured in this session (the Sanity checks page): on
    ``image`` with ``model``, ``steps`` of ``blocks`` cascade steps, per similarity measure in ``check``, and
    where it differs from the published verdict, ``disagreement``."""

    image: str
    model: str
    steps: int
    blocks: int
    check: CheckVerdict
    disagreement: Disagreement | None = None


def here_text(measured: Measured) -> str:
    """"Here (on cat.png, efficientnet_lite0, 19 of 19 cascade steps): passes on every measure (means over the
    cascade: …)." or, where the measurement differs from the paper, the summary and the reason."""
    where = f"Here (on {measured.image}, {measured.model}, {measured.steps} of {measured.blocks} cascade steps)"
    if measured.disagreement is not None:
        return f"{where}: {measured.check.summary()}. Unlike the paper: {measured.disagreement.reason}"
    values = ", ".join(f"{c.label} {'constant' if c.value is None else f'{c.value:.2f}'}"
                       for c in measured.check.measures.values())
    return f"{where}: {measured.check.summary()} (means over the cascade: {values})."


# ---- cards, search and grouping -------------------------------------------------------------------------


@dataclass(frozen=True)
class Card:
    """Everything one method's card shows, as markdown strings and table rows."""

    name: str
    family: str
    title: str
    summary: str
    paper: str
    link: str | None
    cost: str
    layer: str
    output: str
    verdict: Verdict
    finding: str
    here: str | None
    weaknesses: str
    params: list[dict[str, str]]
    licence: str = ""  # what the method's authors declare about patents or licences, markdown-escaped; "" for none
    text: str = ""  # whether and how it runs on text (:func:`text_text`), markdown-escaped

    @property
    def key(self) -> str:
        return f"method_card_{self.name}"


def card(info: MethodInfo, measured: Measured | None = None) -> Card:
    """The card of ``info``; ``measured``: its verdict measured in this session, if any ("Here (on …): …")."""
    return Card(
        name=info.name,
        family=info.family,
        title=f"{md_escape(info.display_name)} `{info.name}`",
        summary=md_escape(info.summary),
        paper=paper_markdown(info.reference),
        link=info.reference.link,
        cost=cost_text(info),
        layer=layer_text(info),
        output=output_text(info),
        verdict=verdict(info),
        finding=md_escape(finding_text(info)),
        here=None if measured is None else md_escape(here_text(measured)),
        weaknesses=md_escape(info.weaknesses),
        params=param_rows(info),
        licence=md_escape(" ".join(info.licence_note.split())),
        text=text_text(info),
    )


def search_text(info: MethodInfo) -> str:
    """Everything a search matches against, lower-cased."""
    parts = [
        info.name, info.display_name, info.family, info.summary, info.weaknesses, info.sanity.label, info.sanity_note,
        str(info.reference), info.reference.title, info.licence_note,
    ]
    for name, param in info.params.items():
        parts += [name, param.help]
    if info.text is not None:
        parts += ["text", info.text.note, *info.text.params,
                  *(param.help for param in info.text.params.values())]
    return " ".join(parts).lower()


def matches(info: MethodInfo, query: str) -> bool:
    """Every whitespace-separated term of ``query`` occurs in the method's text (case-insensitive)."""
    haystack = search_text(info)
    return all(term in haystack for term in query.lower().split())


def families(methods: Iterable[MethodInfo]) -> list[str]:
    """The families present, in the registry's ``FAMILY_ORDER`` (the pickers' order: ``method_order``), then any
    other in order of appearance."""
    present = list(dict.fromkeys(info.family for info in methods))
    known = [family for family in FAMILY_ORDER if family in present]
    return known + [family for family in present if family not in FAMILY_ORDER]


def filter_methods(methods: Iterable[MethodInfo], query: str = "", selected: Iterable[str] = ()) -> list[MethodInfo]:
    """Methods matching ``query`` and in one of the ``selected`` families (no family selected: all)."""
    chosen = set(selected or ())
    return [info for info in methods if (not chosen or info.family in chosen) and matches(info, query or "")]


def group_by_family(methods: Iterable[MethodInfo]) -> dict[str, list[MethodInfo]]:
    methods = list(methods)
    return {family: [m for m in methods if m.family == family] for family in families(methods)}


# The overview's "Text" column: how a token's score is made, in a word.
TEXT_COLUMN = {"l2": "yes (L2 norm)", "sum": "yes (sum)", "map": "yes", "base": "yes (as its base)"}


def overview_rows(methods: Iterable[MethodInfo]) -> list[dict[str, str]]:
    """A compact comparison table, one row per method."""
    return [
        {
            "Method": info.display_name,
            "Name": info.name,
            "Family": info.family,
            "Cost (224×224, defaults)": cost_text(info),
            "Layer": "yes" if info.needs_layer else "no",
            "Output": "input-shaped" if info.attribution_channels is None else f"{info.attribution_channels}-channel",
            "Sanity check": verdict(info).label,
            "Text": TEXT_COLUMN.get(info.text.reduction, "yes") if info.applies_to("text") else "no",
        }
        for info in methods
    ]


def sanity_intro() -> str:
    return (
        "The **sanity check** is the model-randomisation test of "
        f"{paper_markdown(ADEBAYO)}. A method that :red[fails] gives nearly the same map when the model's weights "
        "are randomised, so its map shows the image rather than what the model learned. The badges are the "
        "paper's findings on its networks; run **Sanity checks** on your image and each card adds what was "
        "measured here."
    )
