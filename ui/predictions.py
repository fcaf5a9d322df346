"""Class probabilities of the selected image, cached per (model, image, preprocessing)."""

from __future__ import annotations

import numpy as np
import streamlit as st
import torch

from explainers import class_probabilities


@st.cache_data(show_spinner=False, max_entries=256)
def probabilities(model: str, image_hash: str, preprocessing: str, _bundle, _inputs: torch.Tensor) -> np.ndarray:
    """Cached per (model, image, preprocessing); sessions share it (the backend serialises calls on one model)."""
    return class_probabilities(_bundle, _inputs)[0]


def top_k(probs: np.ndarray, k: int = 5) -> list[int]:
    return [int(i) for i in np.argsort(-probs)[:k]]


def rank_of(probs: np.ndarray, index: int) -> int:
    """The 1-based rank of class ``index`` among ``probs`` (1: the prediction)."""
    return int((probs > probs[index]).sum()) + 1
