"""The process-wide cache of token maps (every session's), bounded by bytes: what the Text page computes goes
through ``ui.text.cached_maps`` into it, and a session's own model leaves it with the model."""

from __future__ import annotations

import streamlit as st

from .explanations import ExplanationCache

# Token maps are small ([D, 1, L] raw attributions: 64 × 64 floats): 64 MB keeps thousands.
MAX_MAP_BYTES = 64 * 2**20


@st.cache_resource(show_spinner=False)
def text_cache() -> ExplanationCache:
    """Token maps of every session, bounded by bytes; identical requests at once share one computation."""
    return ExplanationCache(MAX_MAP_BYTES)
