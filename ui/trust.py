"""Explore's "Trust" expander: on demand, two checks of the map on screen against the random control.

- random logit (Sixt et al. 2020, arXiv:1912.09818; Adebayo et al. 2018): Spearman of |map| between this map and the
  same method's maps for three random other classes; near 1 means the map ignores the class;
- deletion AUC (Petsiuk et al. 2018, arXiv:1806.07421) of this map beside the random control's, on the same passes.
"""

from __future__ import annotations

import streamlit as st

from explainers import METHODS, render
from explainers.trust.faithfulness import faithfulness_curves, grid_region
from explainers.trust.pointing import box_pointing
from explainers.trust.sanity import random_logit

from . import state
from .dense import plural, score_title, target_noun
from .explanations import Request, cache_key, canonical, explain_cached
from .sanity import random_count

STEPS = 20
# Deletion by regions of the CAM grid, filled with the image mean: single black pixels read to a CNN as noise and
# sink the random control fastest of all (on the cat, pixel-wise black deletion scores Grad-CAM 0.29, random 0.03).
SUBSTRATE = "mean"


def _check(selection, record, request: Request) -> dict:
    """The two checks; the random-logit one is left out (None) where the model has no other class, box or region
    to compare with (``ui.sanity.random_count``: a detector with one box)."""
    count = random_count(selection.bundle)
    logit = None if count == 0 else random_logit(
        selection.bundle, selection.inputs, [(request.method, request.kwargs)], target=request.target,
        classes=count, layer=request.layer, controls=())
    random_record, _ = explain_cached(selection, canonical(selection, "random", {}, request.target))
    maps = {record.method: render.to_map(record.attribution, "absolute", "max"),
            "random": render.to_map(random_record.attribution, "absolute", "max")}
    region = grid_region(selection.inputs.shape[-2:])
    curves = faithfulness_curves(selection.bundle, selection.inputs, maps, request.target, kinds=("deletion",),
                                 steps=STEPS, substrate=SUBSTRATE, region=region)
    return {
        "random_logit": None if logit is None else logit.mean(record.method, "spearman_abs"),
        "classes": [] if logit is None else [int(c) for c in logit.classes[0]],
        "deletion": curves.curve("deletion", record.method).mean_auc,
        "deletion_random": curves.curve("deletion", "random").mean_auc,
        "region": region,
    }


def trust_panel(selection, record, request: Request) -> None:
    """The expander for ``record``, the explanation of ``request``; nothing is computed until the button is pressed
    (a few passes of the method)."""
    info = METHODS[request.method]
    dense = getattr(selection, "dense", None) is not None
    noun = target_noun(selection)
    with st.expander(f"Trust: is this map about the {noun}, and about the pixels the model uses?"):
        if dense:
            st.markdown(pointing_text(selection, record))
        if not isinstance(request.target, int) or info.family == "Control":
            st.caption("Available for single-class targets of an explanation method.")
            return
        key = cache_key(selection, request)
        results = st.session_state.setdefault(state.TRUST_RESULTS, {})
        if key not in results:
            slot = st.empty()
            count = random_count(selection.bundle)
            if not slot.button("Check this map", key=state.TRUST_RUN,
                               help=f"{count} more map{'s' if count != 1 else ''} of this method (random other "
                               f"{noun if count == 1 else plural(noun)}) and a "
                               f"{STEPS}-step deletion curve."):
                return
            slot.empty()  # done with: no button left beside the answer
            with st.spinner("Checking…"):
                results[key] = _check(selection, record, request)
        found = results[key]
        names = ", ".join(selection.bundle.categories[c] for c in found["classes"])
        left, right = st.columns(2)
        similarity = found["random_logit"]
        if not found["classes"]:
            left.metric("Random-logit similarity", "left out")
            left.caption(f"Left out: the model gives no other {noun} on this image to compare this map with.")
        else:
            left.metric("Random-logit similarity", "undefined" if similarity is None else f"{similarity:.2f}",
                        help=f"Spearman of |map| to this method's maps for random other {noun} targets. Near 1: "
                        f"the map ignores which {noun} is explained.")
            left.caption(f"Against: {names}. " + (f"{noun.capitalize()}-insensitive (≥ 0.9)." if similarity is not
                                                   None and similarity >= 0.9 else f"The map depends on the {noun}."))
        gap = found["deletion"] - found["deletion_random"]
        right.metric("Deletion AUC", f"{found['deletion']:.3f}", delta=f"{gap:+.3f} vs random", delta_color="inverse",
                     help=f"{score_title(selection)} as this map's most salient {found['region']}×"
                     f"{found['region']} px regions are replaced by the image mean, {STEPS} steps: lower is more "
                     "faithful. The Faithfulness page has the curves and other settings.")
        right.caption(f"The random control scores {found['deletion_random']:.3f} on the same passes "
                      f"({found['region']}×{found['region']} px regions, mean fill).")


def pointing_text(selection, record) -> str:
    """Where a dense target's map lies against its box or region: the peak inside or not, the map's share inside,
    and the box's share of the image (what a map spread evenly would put there)."""
    target = target_noun(selection)
    saliency = render.to_map(record.attribution, "absolute", "max")
    found = box_pointing(saliency, selection.bundle.target_mask(int(record.target[0]), size=saliency.shape))
    return (f"Peak inside the {target}: **{'yes' if found.hit else 'no'}** · share of the map inside the "
            f"{target}: **{found.share:.0%}** (the {target} is {found.area:.0%} of the image: a map spread evenly "
            "would put that much there)")
