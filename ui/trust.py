"""Explore's "Trust" expander: on demand, two checks of the map on screen against the random control.

- random logit (Sixt et al. 2020, arXiv:1912.09818; Adebayo et al. 2018): Spearman of |map| between this map and the
  same method's maps for three random other classes; near 1 means the map ignores the class;
- deletion AUC (Petsiuk et al. 2018, arXiv:1806.07421) of this map beside the random control's, on the same passes.
"""

from __future__ import annotations

import streamlit as st

from explainers import METHODS, render
from explainers.trust.faithfulness import faithfulness_curves, grid_region
from explainers.trust.sanity import random_logit

from . import state
from .explanations import Request, cache_key, canonical, explain_cached

STEPS = 20
# Deletion by regions of the CAM grid, filled with the image mean: single black pixels read to a CNN as noise and
# sink the random control fastest of all (on the cat, pixel-wise black deletion scores Grad-CAM 0.29, random 0.03).
SUBSTRATE = "mean"


def _check(selection, record, request: Request) -> dict:
    logit = random_logit(selection.bundle, selection.inputs, [(request.method, request.kwargs)], target=request.target,
                         classes=3, layer=request.layer, controls=())
    random_record, _ = explain_cached(selection, canonical(selection, "random", {}, request.target))
    maps = {record.method: render.to_map(record.attribution, "absolute", "max"),
            "random": render.to_map(random_record.attribution, "absolute", "max")}
    region = grid_region(selection.inputs.shape[-2:])
    curves = faithfulness_curves(selection.bundle, selection.inputs, maps, request.target, kinds=("deletion",),
                                 steps=STEPS, substrate=SUBSTRATE, region=region)
    return {
        "random_logit": logit.mean(record.method, "spearman_abs"),
        "classes": [int(c) for c in logit.classes[0]],
        "deletion": curves.curve("deletion", record.method).mean_auc,
        "deletion_random": curves.curve("deletion", "random").mean_auc,
        "region": region,
    }


def trust_panel(selection, record, request: Request) -> None:
    """The expander for ``record``, the explanation of ``request``; nothing is computed until the button is pressed
    (a few passes of the method)."""
    info = METHODS[request.method]
    with st.expander("Trust: is this map about the class, and about the pixels the model uses?"):
        if not isinstance(request.target, int) or info.family == "Control":
            st.caption("Available for single-class targets of an explanation method.")
            return
        key = cache_key(selection, request)
        results = st.session_state.setdefault(state.TRUST_RESULTS, {})
        if key not in results:
            slot = st.empty()
            if not slot.button("Check this map", key=state.TRUST_RUN,
                               help="3 more maps of this method (random other classes) and a 20-step deletion "
                               "curve."):
                return
            slot.empty()  # done with: no button left beside the answer
            with st.spinner("Checking…"):
                results[key] = _check(selection, record, request)
        found = results[key]
        names = ", ".join(selection.bundle.categories[c] for c in found["classes"])
        left, right = st.columns(2)
        similarity = found["random_logit"]
        left.metric("Random-logit similarity", "undefined" if similarity is None else f"{similarity:.2f}",
                    help="Spearman of |map| to this method's maps for random other classes. Near 1: the map "
                    "ignores which class is explained.")
        left.caption(f"Against: {names}. " + ("Class-insensitive (≥ 0.9)." if similarity is not None
                                               and similarity >= 0.9 else "The map depends on the class."))
        gap = found["deletion"] - found["deletion_random"]
        right.metric("Deletion AUC", f"{found['deletion']:.3f}", delta=f"{gap:+.3f} vs random", delta_color="inverse",
                     help=f"Probability of the class as this map's most salient {found['region']}×"
                     f"{found['region']} px regions are replaced by the image mean, {STEPS} steps: lower is more "
                     "faithful. The Faithfulness page has the curves and other settings.")
        right.caption(f"The random control scores {found['deletion_random']:.3f} on the same passes "
                      f"({found['region']}×{found['region']} px regions, mean fill).")
