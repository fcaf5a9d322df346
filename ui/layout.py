"""Page layout that Streamlit's defaults get wrong for this dashboard: narrow windows and the sidebar's width."""

from __future__ import annotations

import streamlit as st

# Below ~1100 px the main area (window minus the sidebar) is too narrow for three or more columns: stack them,
# except in the Compare grid (key "grid"), whose panels stay side by side and shrink. Labels wrap instead of
# being cut off, segmented controls (the target buttons) wrap onto a second line, and multiselects show
# every chip in full.
_CSS = """
<style>
@media (max-width: 1100px) {
  [data-testid="stMain"] [data-testid="stHorizontalBlock"]:not(.st-key-grid *) {
    flex-wrap: wrap;
  }
  [data-testid="stMain"] [data-testid="stHorizontalBlock"]:not(.st-key-grid *) > [data-testid="stColumn"] {
    min-width: min(100%, 16rem);
    flex: 1 1 16rem;
  }
}
[data-testid="stWidgetLabel"] p, [data-testid="stWidgetLabel"] label {
  white-space: normal;
  overflow: visible;
  text-overflow: clip;
}
[data-testid="stButtonGroup"] > div {
  flex-wrap: wrap;
}
/* multiselects grow with their chips instead of scrolling inside a box four rows high (whose last row is cut off
   at 900 px), and a chip too long for a narrow column wraps its label instead of ending in an ellipsis */
[data-testid="stMultiSelect"] div:has(> [data-testid="stMultiSelectTagsContainer"]) {
  max-height: none;
}
[data-testid="stMultiSelectTagsContainer"] {
  max-height: none;
  overflow: visible;
}
[data-testid="stMultiSelect"] [data-tag] {
  height: auto;
  min-height: 28px;
}
[data-testid="stMultiSelect"] [data-tag] > span {
  white-space: normal;
  overflow: visible;
  text-overflow: clip;
  overflow-wrap: anywhere;
}
/* the sidebar's pictures are previews, not buttons: no fullscreen toolbar on hover */
[data-testid="stSidebar"] [data-testid="stElementToolbar"] {
  display: none;
}
[data-testid="stSidebar"] [data-testid="stImage"] img {
  cursor: default;
}
</style>
"""


def apply_layout() -> None:
    """Once per run, from app.py: the CSS above (no network: nothing is fetched)."""
    st.html(_CSS)


def wrappable(name: str) -> str:
    """A name (a method key, a model id) that a narrow column (900 px) may break after an underscore, not
    mid-word: a zero-width space follows each underscore."""
    return name.replace("_", "_\u200b")
