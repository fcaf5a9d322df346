"""Methods: one card per registered method, generated from the registry (see ui/method_docs.py)."""

import streamlit as st

from explainers import METHODS
from ui import method_docs as docs
from ui import state

st.title("Methods")
st.caption(
    f"{len(METHODS)} attribution methods: what each computes, its paper, its cost and its known weaknesses. "
    "Costs are passes per image at 224×224 with default parameters."
)
st.markdown(docs.sanity_intro())

search_column, family_column = st.columns([2, 3], vertical_alignment="bottom")
query = search_column.text_input(
    "Search", key="method_search", type="search", placeholder="name, family or any text, e.g. cam",
    live=True, bind="query-params",
)
selected = family_column.pills(
    "Families", docs.families(METHODS.values()), selection_mode="multi", key="method_families",
    bind="query-params", wrap=True, help="Pick one or more; with none picked every family is shown.",
)
shown = docs.filter_methods(METHODS.values(), query, selected)
measured = st.session_state.get(state.SANITY_MEASURED, {})  # filled by the Sanity checks page in this session

if not shown:
    st.info("No method matches. Clear the search box or pick other families.")
    st.stop()

with st.expander(f"At a glance: {len(shown)} of {len(METHODS)} methods"):
    st.dataframe(docs.overview_rows(shown), hide_index=True)

for family, methods in docs.group_by_family(shown).items():
    st.header(family, divider="gray")
    if family in docs.FAMILY_NOTES:
        st.caption(docs.FAMILY_NOTES[family])
    for info in methods:
        card = docs.card(info, measured.get(info.name))
        with st.container(border=True, key=card.key):
            st.subheader(card.title, anchor=card.name)
            st.markdown(card.summary)
            st.markdown(f"**Paper:** {card.paper}")
            cost, layer, output = st.columns(3)
            cost.markdown(f"**Cost** per image (224×224, defaults)  \n{card.cost}")
            layer.markdown(f"**Layer**  \n{card.layer}")
            output.markdown(f"**Output**  \n{card.output}")
            st.markdown(f"**Sanity check** (model randomisation): {docs.badge_markdown(card.verdict)} "
                        f"{card.finding}")
            if card.verdict.note:
                st.caption(docs.md_escape(card.verdict.note))
            if card.here:
                (st.warning if measured[info.name].disagreement else st.info)(card.here, icon=":material/science:")
            st.markdown(f"**Known weaknesses:** {card.weaknesses}")
            if card.text:
                st.markdown(f"**On text:** {card.text}")
            if card.licence:
                st.markdown(f"**Patents and licence:** {card.licence}")
            if card.params:
                st.table(card.params, hide_index=True)
            else:
                st.caption("No parameters.")
