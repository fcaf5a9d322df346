"""Text: which tokens made a text classifier decide — the text coloured per method, Compare and Trust."""

import streamlit as st

from ui import state
from ui.errors import TEXT_FIXES, guard, show_error
from ui.sidebar import Problem
from ui.text import (
    explain_view,
    methods_control,
    model_caption,
    objective_control,
    predictions,
    probabilities,
    scored_text,
    sentence,
    target_control,
    text_box,
    text_methods,
    text_problem,
    unknown_note,
    view_control,
)
from ui.text_compare import compare_view
from ui.text_models import TextChoice, upload_form
from ui.text_trust import trust_view

VIEWS = ("Explain", "Compare", "Trust")

st.title("Text")
choice = state.current_selection()
if isinstance(choice, Problem):
    show_error(choice.error, fixes=TEXT_FIXES)
if not isinstance(choice, TextChoice):
    upload_form()
    st.stop()
model = choice.model
st.caption(model_caption(model))
for note in model.notes:
    st.caption(sentence(note))
upload_form()

with guard(TEXT_FIXES):
    left, right = st.columns([3, 2])
    with left:
        text = text_box(model)
    problem = text_problem(text)
    if problem:
        st.info(problem, icon=":material/edit_note:")
        st.stop()
    scored = scored_text(model, text)
    probs = probabilities(model, scored)
    cut = scored.encoded.truncation_note()
    if cut:
        st.warning(sentence(cut), icon=":material/content_cut:")
    unknown = unknown_note(model, scored)
    if unknown:
        st.warning(unknown, icon=":material/question_mark:")
    target_column, objective_column = st.columns([3, 2])
    with target_column:
        target = target_control(model, scored, probs)
    with objective_column:
        objective = objective_control()
    with right:
        st.markdown("**Predictions**")
        predictions(model, probs, target.indices if target is not None else ())
    methods, params = methods_control(text_methods(scored))
    with st.expander("View", expanded=True):
        view = view_control()
    st.session_state.setdefault(state.TEXT_SHOW, VIEWS[0])
    shown = st.segmented_control("Show", VIEWS, key=state.TEXT_SHOW, required=True, persist_state=state.KEEP,
                                 help="Explain: each method's map for the target. Compare: methods × classes, with "
                                 "their agreement. Trust: sanity checks and faithfulness of these maps.")
    if not methods:
        st.info("Pick at least one method.", icon=":material/arrow_upward:")
        st.stop()
    if target is None:
        st.stop()  # the picker said why (A and B the same class)
    if shown == "Compare":
        compare_view(model, scored, probs, target, objective, methods, params, view)
    elif shown == "Trust":
        trust_view(model, scored, target, objective, methods, params, view)
    else:
        explain_view(model, scored, target, objective, methods, params, view)
