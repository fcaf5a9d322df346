"""Streamlit-side helpers shared by the pages: cached models and explanations, generated widgets, figures."""
