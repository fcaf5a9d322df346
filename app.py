"""Saliency Studio: routing only."""

import streamlit as st

st.set_page_config(page_title="Saliency Studio", page_icon=":material/local_fire_department:", layout="wide")
st.navigation(
    [
        st.Page("pages/explore.py", title="Explore", icon=":material/search:", default=True),
        st.Page("pages/compare.py", title="Compare", icon=":material/grid_view:"),
        st.Page("pages/methods.py", title="Methods", icon=":material/menu_book:"),
    ]
).run()
