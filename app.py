"""Saliency Studio: routing, plus the sidebar every page shares (image, model, preprocessing); the Text page's
sidebar holds its text model instead (the image choices kept for the other pages)."""

from pathlib import Path

import streamlit as st

from ui import state
from ui.layout import apply_layout
from ui.models import configure_threads
from ui.sidebar import sidebar
from ui.text_models import text_sidebar

ROOT = Path(__file__).resolve().parent

st.set_page_config(page_title="Saliency Studio", page_icon=str(ROOT / "assets" / "brand" / "favicon.png"),
                   layout="wide")
configure_threads()  # once per process
apply_layout()
state.restore_from_url()  # once per session, before any widget is drawn
state.start_run()
page = st.navigation(
    [
        st.Page("app_pages/explore.py", title="Explore", icon=":material/search:", default=True),
        st.Page("app_pages/compare.py", title="Compare", icon=":material/grid_view:"),
        st.Page("app_pages/sanity.py", title="Sanity checks", icon=":material/fact_check:"),
        st.Page("app_pages/faithfulness.py", title="Faithfulness", icon=":material/insights:"),
        st.Page("app_pages/text.py", title="Text", icon=":material/text_fields:", url_path="text"),
        st.Page("app_pages/batch.py", title="Batch", icon=":material/dataset:", url_path="batch"),
        st.Page("app_pages/gradient.py", title="Inside the gradient", icon=":material/stacked_line_chart:"),
        st.Page("app_pages/models.py", title="Your model", icon=":material/upload_file:", url_path="models"),
        st.Page("app_pages/methods.py", title="Methods", icon=":material/menu_book:"),
    ]
)
try:
    # Drawn on every page, the Methods page too: the sidebar's widgets live in this file, so an upload or a
    # sample chosen on one page is the same on every other. The Text page explains no image: its sidebar is the
    # text model, and the image choices wait, kept, for the image pages.
    state.set_selection(text_sidebar() if state.current_page() == state.TEXT_PAGE else sidebar())
    page.run()
finally:
    state.write_url()
