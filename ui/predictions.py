"""Class probabilities of the selected image, cached per (model, image, preprocessing); a dense selection's target
scores (what the backend ranks its targets by), cached per target set."""

from __future__ import annotations

import numpy as np
import streamlit as st
import torch

from explainers import class_probabilities, class_scores


@st.cache_data(show_spinner=False, max_entries=256)
def probabilities(model: str, image_hash: str, preprocessing: str, _bundle, _inputs: torch.Tensor) -> np.ndarray:
    """Cached per (model, image, preprocessing); sessions share it (the backend serialises calls on one model)."""
    return class_probabilities(_bundle, _inputs)[0]


@st.cache_data(show_spinner=False, max_entries=256)
def clean_scores(cache_id: str, image_hash: str, preprocessing: str, _bundle, _inputs: torch.Tensor) -> np.ndarray:
    """[T] the scored bundle's clean output on the image: one score per target (a box's class score, plus its IoU
    when the sidebar asks; a region's logit sum or mean), from the backend's own clean pass. Cached per
    ``cache_id`` (the model and its target set), image and preprocessing. Not a softmax: a segmenter's logit sums
    are hundreds apart, and a softmax of them rounds every target but the first to the same 0."""
    return class_scores(_bundle, _inputs[:1])[0]


def top_k(probs: np.ndarray, k: int = 5, stable: bool = False) -> list[int]:
    """The ``k`` best classes. ``stable``: ties keep their order (a dense selection's targets, whose order is the
    backend's: two boxes of the same score rank as listed); a classifier's ranking is numpy's default sort."""
    order = np.argsort(-probs, kind="stable") if stable else np.argsort(-probs)
    return [int(i) for i in order[:k]]


def rank_of(probs: np.ndarray, index: int) -> int:
    """The 1-based rank of class ``index`` among ``probs`` (1: the prediction)."""
    return int((probs > probs[index]).sum()) + 1


def outside_caption(categories, probs: np.ndarray, indices, top: list[int]) -> str | None:
    """The line under a predictions chart for the targets on no bar (below the ``top`` shown): each one's
    probability and rank; None when every target has its bar."""
    outside = [i for i in indices if i not in top]
    if not outside:
        return None
    return " · ".join(f"{categories[i]} ({i}): {100 * probs[i]:.3g}%, rank {rank_of(probs, i)}" for i in outside)


def selection_scores(selection) -> np.ndarray:
    """What ranks the selection's classes ("top1" is the best, "Predicted" and "Runner-up" the first two): a
    classifier's probabilities; for a detector or segmenter, its scored bundle's clean output, one score per
    target (:func:`clean_scores`) — exactly what the backend ranks by when it resolves "top1" (the CLI, a batch
    run, ``explain``), so the pages and the backend pick the same box or region. For a detector it is the boxes'
    own scores (plus 1, the IoU of each box with itself, when the IoU is added); a segmenter's regions rank by
    their logit sum or mean, not by their share of the pixels (Explore's segmentation panel shows the shares)."""
    if getattr(selection, "dense", None) is not None:
        return clean_scores(selection.cache_id, selection.image_hash, selection.preprocessing, selection.bundle,
                            selection.inputs)
    return probabilities(selection.model, selection.image_hash, selection.preprocessing, selection.bundle,
                         selection.inputs)
