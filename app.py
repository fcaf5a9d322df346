"""Saliency Studio: routing only."""

import streamlit as st

st.set_page_config(page_title="Saliency Studio", page_icon="🔥", layout="wide")
st.navigation(
    [
        st.Page("pages/explore.py", title="Explore", icon="🔎", default=True),
        st.Page("pages/compare.py", title="Compare", icon="🧮"),
        st.Page("pages/methods.py", title="Methods", icon="📚"),
    ]
).run()
