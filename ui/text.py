"""The Text page's pieces: the text box and its checks, the predictions, the target, objective, methods and view
controls, the one cached way to token maps, and a map drawn as coloured text with its downloads.

Every number comes from the backend (``explainers.text``: scoring, ``explain_text``, ``token_html``,
``shown_values``; ``explainers.render.value_range``); here they only become widgets and HTML on the page.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import numpy as np
import streamlit as st

from explainers import METHODS, OBJECTIVES, Contrast, class_probabilities, method_order
from explainers import render as rnd
from explainers.registry import TEXT
from explainers.targets import target_key
from explainers.text import Encoded, TokenBundle, TokenMap, TokenView, explain_text, token_html
from explainers.text.render import TEXT_SEQUENTIAL, legend_html, reduction_of, shown_values, text_document

from . import state
from .caches import ByteLRU
from .controls import TargetChoice, TargetKeys, method_label, on_prediction_click, target_picker
from .figures import predictions_figure
from .method_docs import md_escape
from .predictions import outside_caption, top_k
from .runs import ProgressReporter, RunControl
from .text_cache import text_cache
from .text_models import TextModel
from .widgets import param_widgets

# Pasting a book is refused with a message, not tokenised on every rerun and drawn whole (the model reads a few
# hundred tokens at most; a longer text is cut, and the cut is said).
MAX_TEXT_CHARS = 5000
# Sentences for a model without examples of its own (a user's classifier): short, plain English.
GENERIC_EXAMPLES = (
    "The film was great and the plot was good.",
    "The movie was not very good, and the plot was awful.",
    "A quiet, beautifully shot film that never quite finds its story.",
)
# The signed contribution that adds up to the score (integrated gradients: the evidence word for its class) and the
# sensitivity (the gradient's length, on the magnitude scale). Not input × gradient: its straight-line estimate
# from a zero embedding often colours the evidence word against its class, a confusing first picture.
DEFAULT_METHODS = ("integrated_gradients", "vanilla")
SEED = 0  # every map is computed with this seed, so a panel is the same in every session
OBJECTIVE_LABELS = {"logit": "logit", "probability": "probability", "log_probability": "log-probability"}
OBJECTIVE_HELP = ("What the map explains: the class's logit (the default), its softmax probability, or its log "
                  "probability. A contrast explains the difference of the two classes' values.")
GROUPS = {"": "tokens", "sum": "words · sum", "max": "words · max"}
SIGN_LABELS = {"signed": "signed (diverging)", "absolute": "magnitude (sequential)"}
# Colour maps that read well behind text: a light zero (diverging) or a light low end (sequential) keeps weak
# tokens readable; the perceptual maps (dark low end) follow for those who want them.
TEXT_COLORMAPS = {
    "signed": ("RdBu_r", "coolwarm", "bwr", "PiYG", "PRGn", "BrBG", "PuOr_r", "RdGy_r", "RdYlBu_r", "Spectral_r"),
    "absolute": (TEXT_SEQUENTIAL, "Oranges", "Purples", "Blues", "Greens", "YlOrRd", "OrRd", "YlGnBu", "Greys",
                 "viridis", "cividis", "inferno", "magma", "plasma"),
}
TEXT_TARGET = TargetKeys(mode=state.TEXT_TARGET_MODE, class_=state.TEXT_TARGET_CLASS, a=state.TEXT_CONTRAST_A,
                         b=state.TEXT_CONTRAST_B, scope=state.TEXT_TARGET_SCOPE, publish=False,
                         chart=state.TEXT_PREDICTIONS)
TEXT_RUN = RunControl(cancel_button=state.TEXT_CANCEL, run_button=state.TEXT_RUN, cancelled=state.TEXT_CANCELLED,
                      started=state.TEXT_STARTED)
SCORED_MAX_BYTES = 32 * 2**20


# ---- the text -------------------------------------------------------------------------------------------------


def digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def model_caption(model: TextModel) -> str:
    """The model in a line: its name (a session model's: the zip's file name), classes and token limit (said here
    only), then what it is: a shipped model's description (less a repeated name), a session model's architecture."""
    bundle = model.bundle
    if model.own:
        name, about = f"{model.file} (yours, this session only)", type(bundle.net).__name__
    else:
        name, about = bundle.name, bundle.description
        if about.startswith(f"{bundle.name}: "):
            about = about[len(bundle.name) + 2:]
    return (f"**{md_escape(name)}** · {len(bundle.categories)} classes: "
            f"{md_escape(', '.join(bundle.categories))} · reads up to {bundle.max_length} tokens"
            + (f" · {md_escape(about)}" if about else ""))


def examples_of(model: TextModel) -> tuple[str, ...]:
    return tuple(model.bundle.examples) or GENERIC_EXAMPLES


def _use_example() -> None:
    """on_change of the examples' picker: the picked sentence goes into the text box, and the picker clears."""
    picked = st.session_state.get(state.TEXT_EXAMPLE)
    if picked:
        st.session_state[state.TEXT_BOX] = picked
    st.session_state[state.TEXT_EXAMPLE] = None


def text_box(model: TextModel) -> str:
    """The examples' picker and the text box (the model's first example to start with); the text as typed."""
    examples = examples_of(model)
    st.session_state.setdefault(state.TEXT_BOX, examples[0])
    st.selectbox("Examples", examples, index=None, key=state.TEXT_EXAMPLE, on_change=_use_example,
                 placeholder="Pick an example sentence…",
                 help="Sentences worth trying on this model; the pick replaces the text below.")
    return st.text_area("Text to explain", key=state.TEXT_BOX, persist_state=state.KEEP, height=110,
                        help=f"Type or paste a sentence (up to {MAX_TEXT_CHARS:,} characters). A text longer than "
                        "the model reads (see above) is cut, and the page says so.")


def sentence(note: str) -> str:
    """A backend note ("the text is longer than …") as a sentence: capitalised, with its full stop."""
    note = note.strip()
    return note[:1].upper() + note[1:] + ("" if note.endswith(".") else ".")


def text_problem(text: str | None) -> str | None:
    """Why ``text`` cannot be explained before it reaches the tokenizer (empty, or pasted far too long), or None."""
    if text is None or not text.strip():
        return "The text is empty: type or paste a sentence above, or pick an example."
    if len(text) > MAX_TEXT_CHARS:
        return (f"The text is {len(text):,} characters long; this page explains up to {MAX_TEXT_CHARS:,} "
                "(the model reads only its first few hundred tokens anyway). Paste a shorter passage.")
    return None


@st.cache_resource(show_spinner=False)
def _scored_texts() -> ByteLRU:
    return ByteLRU(SCORED_MAX_BYTES)


def scored_text(model: TextModel, text: str) -> TokenBundle:
    """``text`` tokenised and embedded for ``model`` (``TextBundle.scored``), kept per (model, text) for every
    session. InputError (shown by the page) for a text the tokenizer makes nothing of."""
    return _scored_texts().get_or_compute(("scored", model.id, digest(text)), lambda: model.bundle.scored(text))


def probabilities(model: TextModel, scored: TokenBundle) -> np.ndarray:
    """[C] the model's class probabilities on the text, kept beside its scoring."""
    key = ("probabilities", model.id, digest(scored.encoded.text))
    return _scored_texts().get_or_compute(key, lambda: class_probabilities(scored, scored.inputs)[0])


def unknown_note(model: TextModel, scored: TokenBundle) -> str | None:
    """A note when every token of the text is the tokenizer's unknown token (emoji, a script it has no pieces
    for): the model then sees the same token everywhere and a map can only tell positions apart."""
    unknown = getattr(model.bundle.tokenizer, "unk_token", None)
    encoded = scored.encoded
    if unknown and all(encoded.tokens[i] == unknown for i in encoded.content):
        return (f"The model knows none of these characters: every token is {unknown} (unknown), so it reads the "
                "same token at every position and a map can only tell positions apart.")
    return None


def predictions(model: TextModel, probs: np.ndarray, selected: tuple[int, ...]) -> None:
    """The top classes with their probabilities, as on Explore (a target below them said under the chart); a
    click on a bar makes it the target."""
    top = top_k(probs)
    categories = model.bundle.categories
    st.plotly_chart(
        predictions_figure([categories[i] for i in top], [float(probs[i]) for i in top], top,
                           selected[0] if len(selected) == 1 else None),
        key=state.TEXT_PREDICTIONS, on_select=partial(on_prediction_click, TEXT_TARGET), selection_mode="points",
        config={"displayModeBar": False},
    )
    outside = outside_caption(categories, probs, selected, top)
    if outside:  # a target below the top 5 is on no bar
        st.caption(md_escape(outside))


# ---- target, objective, methods, view -------------------------------------------------------------------------


def target_control(model: TextModel, scored: TokenBundle, probs: np.ndarray) -> TargetChoice | None:
    """Explore's target picker on the Text page's own keys: its class choices start at this text's top classes."""
    return target_picker(scored, probs, f"{model.id}|{digest(scored.encoded.text)}", TEXT_TARGET)


def objective_control() -> str:
    st.session_state.setdefault(state.TEXT_OBJECTIVE, "logit")
    return st.segmented_control("Objective", OBJECTIVES, key=state.TEXT_OBJECTIVE, required=True,
                                persist_state=state.KEEP, format_func=OBJECTIVE_LABELS.get, help=OBJECTIVE_HELP)


def text_methods(scored: TokenBundle | None = None) -> list[str]:
    """The methods that run on text (the registry's ``TextUse``), in the Methods page's order; with ``scored``,
    those that can run on its model (attention rollout needs attention layers)."""
    names = [name for name in method_order() if METHODS[name].applies_to("text")]
    if scored is None:
        return names
    return [name for name in names if METHODS[name].unavailable_reason(scored.model) is None]


def methods_control(names: list[str]) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """The methods to draw (a multiselect of the text methods) and each one's text parameters, generated from
    ``params_for("text")`` as the image pages generate theirs."""
    if state.TEXT_METHODS not in st.session_state:
        st.session_state[state.TEXT_METHODS] = [m for m in DEFAULT_METHODS if m in names] or names[:1]
    st.session_state[state.TEXT_METHODS] = [m for m in st.session_state[state.TEXT_METHODS] if m in names]
    methods = st.multiselect("Methods", names, key=state.TEXT_METHODS, persist_state=state.KEEP,
                             format_func=method_label, placeholder="Pick one or more methods",
                             help="Only the methods that make sense on text are listed (gradients on the token "
                             "embeddings, perturbations of tokens or words, attention); the Methods page says how "
                             "each runs on text.")
    params: dict[str, dict[str, Any]] = {}
    with_params = [m for m in methods if METHODS[m].params_for("text")]
    if with_params:
        with st.expander("Parameters", expanded=False):
            for method in with_params:
                info = METHODS[method]
                st.markdown(f"**{md_escape(info.display_name)}**")
                params[method] = param_widgets(info, prefix=state.TEXT_PARAM, params=info.params_for("text"))
    return methods, params


def _colormap_for_sign(prefix: str) -> None:
    """on_change of the sign: a colour map of the other kind gives way to the first of the new sign's."""
    sign = st.session_state[state.view_key(prefix, "sign")]
    key = state.view_key(prefix, "colormap")
    if st.session_state.get(key) not in TEXT_COLORMAPS[sign]:
        st.session_state[key] = TEXT_COLORMAPS[sign][0]


def view_control(prefix: str = state.TEXT_VIEW, group: str = "") -> TokenView:
    """Sign, colour map, grouping into words, clip and special tokens: they re-draw, never recompute. ``prefix``:
    whose controls (the Text page's, or the Batch page's for a run over texts); ``group`` the grouping to start
    with."""
    keys = {name: state.view_key(prefix, name) for name in ("sign", "colormap", "group", "clip", "special")}
    defaults = {"sign": "signed", "colormap": TEXT_COLORMAPS["signed"][0], "group": group, "clip": 100.0,
                "special": False}
    for name, default in defaults.items():
        st.session_state.setdefault(keys[name], default)
    if st.session_state[keys["colormap"]] not in TEXT_COLORMAPS[st.session_state[keys["sign"]]]:
        st.session_state[keys["colormap"]] = TEXT_COLORMAPS[st.session_state[keys["sign"]]][0]
    sign_column, colormap_column, group_column = st.columns(3)
    sign = sign_column.segmented_control(
        "Colour", tuple(TEXT_COLORMAPS), key=keys["sign"], required=True, persist_state=state.KEEP,
        format_func=SIGN_LABELS.get, on_change=_colormap_for_sign, args=(prefix,),
        help="signed: for and against the target on a diverging scale centred at zero. magnitude: |score| on a "
        f"sequential scale. A map with no negative score (a sensitivity: the gradient's length; attention; "
        f"SmoothGrad², VarGrad) has nothing to show against the target: it is drawn on the magnitude scale "
        f"({TEXT_SEQUENTIAL}) either way.")
    colormap = colormap_column.selectbox("Colour map", TEXT_COLORMAPS[sign], key=keys["colormap"],
                                         persist_state=state.KEEP)
    group = group_column.segmented_control(
        "Units", tuple(GROUPS), key=keys["group"], required=True, persist_state=state.KEEP, format_func=GROUPS.get,
        help="tokens: one score per token, subword pieces apart. words: a word's pieces grouped, their sum (a "
        "contribution adds up) or the one of largest magnitude (for a sensitivity, whose lengths do not add up: a "
        "sum would favour long words).")
    clip_column, special_column = st.columns([2, 1], vertical_alignment="bottom")
    clip = clip_column.slider("Percentile clip", 90.0, 100.0, step=0.5, key=keys["clip"], persist_state=state.KEEP,
                              help="Scores above this percentile saturate the colours (100: the largest one does).")
    special = special_column.toggle("Show [CLS] / [SEP]", key=keys["special"], persist_state=state.KEEP,
                                    help="The special tokens the model adds: not part of the text, often a large "
                                    "gradient. Off: hidden, and left out of the colour range.")
    return TokenView(sign=sign, group=group, clip=float(clip), colormap=colormap, show_special=bool(special))


# ---- the one cached way to token maps -------------------------------------------------------------------------


@dataclass(frozen=True)
class TextRequest:
    """One token map in canonical form: parameters validated for text (defaults filled in, sorted), the target
    resolved to a class index or a contrast of two, the objective."""

    method: str
    params: tuple[tuple[str, Any], ...]
    target: int | Contrast
    objective: str = "logit"

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.params)


def canonical(method: str, params: dict[str, Any] | None, target: int | Contrast, objective: str) -> TextRequest:
    validated = METHODS[method].validate(params or {}, "text")
    return TextRequest(method, tuple(sorted(validated.items())), target, objective)


def cache_key(model: TextModel, text: str, request: TextRequest) -> tuple:
    """Everything that changes a token map: the model, the text, the request (method, validated parameters,
    resolved target, objective) and the seed."""
    return model.id, digest(text), request, SEED


def _calls(requests: list[TextRequest]) -> list[list[TextRequest]]:
    """The ``explain_text`` calls of ``requests``: one per objective, and another wherever one method is asked
    with two parameter sets (a call takes one set per method)."""
    calls: list[list[TextRequest]] = []
    for request in requests:
        for call in calls:
            params = {r.method: r.params for r in call}
            if call[0].objective == request.objective and params.get(request.method, request.params) == request.params:
                call.append(request)
                break
        else:
            calls.append([request])
    return calls


def compute_maps(scored: TokenBundle, requests: list[TextRequest], report) -> dict[TextRequest, TokenMap]:
    """``requests`` through ``explain_text`` (one call per :func:`_calls` group; each call returns every method ×
    target pair of its methods and targets, all kept)."""
    maps: dict[TextRequest, TokenMap] = {}
    for call in _calls(requests):
        params = {r.method: r.params for r in call}
        targets = {target_key(r.target): r.target for r in call}
        found = explain_text(scored, None, list(params), list(targets.values()), objective=call[0].objective,
                             seed=SEED, progress=report, params={m: dict(p) for m, p in params.items()})
        for (method, key), token_map in found.items():
            maps[TextRequest(method, params[method], targets[key], call[0].objective)] = token_map
    return maps


def cached_maps(model: TextModel, scored: TokenBundle, requests: Sequence[TextRequest], progress=None
                ) -> tuple[dict[TextRequest, TokenMap], set[TextRequest]]:
    """(maps, computed): a token map for every request, and the requests this caller computed. The one way to a
    token map: cached ones are taken, the missing ones computed together (sessions asking at once share it)."""
    cache = text_cache()
    text = scored.encoded.text
    keys = {request: cache_key(model, text, request) for request in requests}

    def compute(missing: list[tuple], report) -> dict[tuple, TokenMap]:
        wanted = set(missing)
        maps = compute_maps(scored, [r for r, key in keys.items() if key in wanted], report)
        cache.calls += 1
        cache.records += len(maps)
        return {cache_key(model, text, request): token_map for request, token_map in maps.items()}

    values, computed = cache.compute_many(list(dict.fromkeys(keys.values())), compute, progress)
    return {r: values[key] for r, key in keys.items()}, {r for r, key in keys.items() if key in computed}


def multi_pass(request: TextRequest, tokens: int) -> bool:
    """Whether a request deserves a progress bar and a Cancel button (more than two passes)."""
    return METHODS[request.method].passes(request.kwargs, (1, tokens), None, TEXT).total > 2


def maps_cancellable(model: TextModel, scored: TokenBundle, requests: list[TextRequest], label: str
                     ) -> dict[TextRequest, TokenMap] | None:
    """The maps of ``requests``: cached ones at once; the rest computed with a progress bar and a Cancel button
    when any takes several passes (a cancelled set waits for Run, as on Explore). None while it waits."""
    cache = text_cache()
    text = scored.encoded.text
    if all(cache.get(cache_key(model, text, r)) is not None for r in requests):
        return cached_maps(model, scored, requests)[0]
    run_id = (model.id, digest(text), tuple(requests))
    if not TEXT_RUN.may_run(run_id, st.empty(), "Press Run to compute these maps."):
        return None
    if not any(multi_pass(r, len(scored.encoded)) for r in requests):
        with st.spinner(f"{label}…"):
            return cached_maps(model, scored, requests)[0]
    slot = st.empty()
    with slot.container():
        TEXT_RUN.cancel(st, help="Stop this computation now: the model is left as it was, nothing is kept.")
        reporter = ProgressReporter(label)
    try:
        return cached_maps(model, scored, requests, progress=reporter)[0]
    finally:
        slot.empty()


# ---- a map on the page ----------------------------------------------------------------------------------------


def target_label(categories: Sequence[str], target: int | Contrast) -> str:
    if isinstance(target, Contrast):
        return f"{categories[target.a]} vs {categories[target.b]}"
    return categories[int(target)]


def sign_free(method: str, params: dict[str, Any] | None, scores) -> bool:
    """Whether a map has no negative side to show: a sensitivity (the registry's "l2" reduction: a length, never
    negative, SmoothGrad of the gradient included) or any map without a negative score (SmoothGrad², VarGrad,
    attention: magnitudes by construction)."""
    return reduction_of(method, params) == "l2" or not bool((np.asarray(scores) < 0).any())


def drawn_view(view: TokenView, free: bool) -> TokenView:
    """The view a map is drawn with: ``view``, but a map with no negative side (``free``, :func:`sign_free`) on
    the magnitude scale whatever the sign asked (a "−x … +x" scale would show half a legend of nothing)."""
    if free and view.sign == "signed":
        return replace(view, sign="absolute", colormap=TEXT_SEQUENTIAL)
    return view


def map_view(view: TokenView, maps: Sequence[TokenMap]) -> TokenView:
    """The one view of ``maps`` drawn together (one panel, or a Compare row on a linked range)."""
    return drawn_view(view, all(sign_free(m.method, m.record.params, m.scores) for m in maps))


def linked_range(maps: Sequence[TokenMap], view: TokenView) -> tuple[float, float]:
    """One colour range over several maps of the same text (a Compare row, in raw units)."""
    return rnd.value_range([shown_values(m.encoded, m.scores, view) for m in maps], view.clip, view.sign == "signed")


def map_title(token_map: TokenMap, categories: Sequence[str]) -> str:
    record = token_map.record
    target = " vs ".join(categories[t] for t in record.target)
    return f"{METHODS[token_map.method].display_name} · {target} · {OBJECTIVE_LABELS.get(record.objective, '')}"


def download_stem(token_map: TokenMap) -> str:
    """``text-1a2b3c4d_vanilla_2`` (``-vs-`` between a contrast's classes): two downloads never collide."""
    target = "-vs-".join(str(t) for t in token_map.record.target)
    return f"text-{digest(token_map.encoded.text)[:8]}_{token_map.method}_{target}"


def download_json(token_map: TokenMap, categories: Sequence[str]) -> str:
    """The JSON download of one map: its tokens, offsets and scores, and what made them (``TokenMap.as_json``)."""
    return json.dumps(token_map.as_json(list(categories)), indent=2, allow_nan=False)


@dataclass(frozen=True)
class Drawn:
    """What :func:`draw_scores` put on the page: the coloured text, its colour bar, the line under them."""

    snippet: str
    legend: str
    caption: str

    def document(self, title: str) -> str:
        return text_document(title, self.snippet, self.legend, self.caption)


def scores_caption(view: TokenView, drawn: TokenView, lo: float, hi: float, linked: bool,
                   method: str | None = None, params: dict[str, Any] | None = None,
                   encoded: Encoded | None = None) -> str:
    """The line under a map: the grouping, the colour range, what a hover shows; a map drawn on the magnitude
    scale for want of negative scores says so, and a sensitivity summed into words says what that favours."""
    scale = "linked over the row" if linked else "this map's own"
    parts = [view.grouping_said(encoded).capitalize(),
             f"colour range {scale}, [{lo:.3g}, {hi:.3g}] raw, {view.clip:g}th-percentile clip",
             f"hover a {'word' if view.group else 'token'} for its raw value"]
    if drawn.sign != view.sign:
        parts.append("no negative scores: drawn on the magnitude scale")
    if view.group == "sum" and method is not None and reduction_of(method, params) == "l2":
        parts.append("a sum of lengths grows with a word's number of tokens: words · max compares words fairly")
    return " · ".join(parts)


def draw_scores(encoded: Encoded, scores, view: TokenView, title: str = "",
                value_range: tuple[float, float] | None = None, *, method: str | None = None,
                params: dict[str, Any] | None = None, free: bool | None = None) -> Drawn:
    """Token ``scores`` drawn as the coloured text (hover a token, or a word, for its raw value), with the colour
    bar, the range and the grouping stated under it. A map with no negative side (``free``; else decided from
    ``method`` and the scores, :func:`sign_free`) is drawn on the magnitude scale (:func:`drawn_view`)."""
    if free is None:
        free = method is not None and sign_free(method, params, scores)
    shown = drawn_view(view, free)
    lo, hi = value_range if value_range is not None else rnd.value_range(
        shown_values(encoded, scores, shown), shown.clip, shown.sign == "signed")
    drawn = Drawn(token_html(encoded, scores, shown, (lo, hi), title=title), legend_html(shown, lo, hi),
                  scores_caption(view, shown, lo, hi, value_range is not None, method, params, encoded))
    st.html(drawn.snippet)
    st.html(drawn.legend)
    st.caption(drawn.caption)
    return drawn


def draw_map(token_map: TokenMap, view: TokenView, categories: Sequence[str], *, key: str, title: str = "",
             value_range: tuple[float, float] | None = None, free: bool | None = None,
             downloads: bool = True) -> Drawn:
    """One map (:func:`draw_scores`), the backend's notes, and the JSON and HTML downloads (the HTML: the
    coloured text as drawn, in a document of its own). Returns what was drawn."""
    drawn = draw_scores(token_map.encoded, token_map.scores, view, title, value_range, method=token_map.method,
                        params=token_map.record.params, free=free)
    for note in token_map.record.notes:  # the backend's (an all-zero map, a reduced batch); the cut is said above
        st.info(note, icon=":material/info:")
    if downloads:
        stem = download_stem(token_map)
        left, right, _ = st.columns([1, 1, 2])
        left.download_button("Tokens and scores (JSON)",
                             lambda: download_json(token_map, categories),
                             f"{stem}.json", "application/json", key=f"{state.TEXT_DOWNLOAD}.json.{key}",
                             on_click="ignore", icon=":material/download:")
        heading = title or map_title(token_map, categories)
        right.download_button("Coloured text (HTML)", lambda: drawn.document(heading), f"{stem}.html", "text/html",
                              key=f"{state.TEXT_DOWNLOAD}.html.{key}", on_click="ignore", icon=":material/download:")
    return drawn


def explain_view(model: TextModel, scored: TokenBundle, target: TargetChoice, objective: str, methods: list[str],
                 params: dict[str, dict[str, Any]], view: TokenView) -> None:
    """One panel per method for the page's target."""
    requests = [canonical(m, params.get(m), target.value, objective) for m in methods]
    maps = maps_cancellable(model, scored, requests, "Explaining")
    if maps is None:
        return
    categories = model.bundle.categories
    for request in requests:
        token_map = maps[request]
        with st.container(border=True, key=state.text_panel_key(request.method)):
            draw_map(token_map, view, categories, key=request.method, title=map_title(token_map, categories))
            record = token_map.record
            st.caption(f"{METHODS[request.method].reference} · computed in {record.elapsed_s:.2f} s, seed {SEED}")
