"""Models: load the classifier, detector or segmenter you are debugging (weights for a known architecture, a
Hugging Face folder, ONNX) into this session, then explain it on every page."""

import streamlit as st

from explainers.models.inputs import DEFAULT_INPUT_SIZE
from explainers.models.user import trust_enabled
from ui import state, user_models
from ui.errors import guard
from ui.method_docs import md_escape
from ui.model_upload import (
    ACCEPTED_HELP,
    MODEL_TYPES,
    TORCHSCRIPT,
    architecture_choices,
    describe_bundle,
    file_kind,
    labels_field,
    load_now,
    load_upload,
    offer_guesses,
    preprocessing_fields,
    too_large,
)

st.title("Your model")
st.caption(
    "Load the classifier, detector or segmenter you are debugging and explain it on every page. It stays in this "
    "browser session: other sessions never see it, and it is freed when the session ends. Nothing you upload is "
    "ever run as code (TorchScript only where the server trusts code)."
)
st.caption(
    "The zoo's detectors and segmenters (in the sidebar's model list) download their COCO weights on first use. "
    "Offline, copy the weights file into the torch hub cache (`$TORCH_HOME/hub/checkpoints/`, the file name the "
    "error message gives), or upload the same weights here as a state dict with the architecture's name."
)
with st.expander("What loads, and what is refused"):
    st.markdown(ACCEPTED_HELP)

with guard():
    upload = st.file_uploader("Model file", type=MODEL_TYPES, key=state.MODELS_FILE,
                              help="A state dict (.safetensors preferred, or .pt/.pth/.bin), a Hugging Face folder "
                              "saved with save_pretrained as a .zip, or an .onnx export.")
    kind = file_kind(upload.name, upload) if upload is not None else None
    architecture = None
    if kind == TORCHSCRIPT:  # the architecture is in the file: nothing to pick
        st.caption("A TorchScript archive: the model's code is in the file, so no architecture is picked. Set its "
                   f"input size below (“Set the input size, mean and std myself”) if it is not {DEFAULT_INPUT_SIZE} "
                   "px.")
        if not trust_enabled():
            st.warning("This server does not run TorchScript (it runs code stored in the file): the load will be "
                       "refused. Its operator can allow it with SALIENCY_TRUST_CODE=1; or upload the weights as a "
                       "state dict with their architecture.", icon=":material/lock:")
    if kind == "state_dict":
        choices = architecture_choices()
        architecture = st.selectbox(
            "Architecture", choices, index=None, key=state.MODELS_ARCH, placeholder="Type to search…",
            help="The model the weights were trained on: efficientnet_lite0, any torchvision classification, "
            "detection or segmentation model, or any timm model (timm:NAME where torchvision has the same name). "
            "The class count comes from the weights.")
    labels = labels_field()
    preprocessing = preprocessing_fields(kind, architecture)
    ready = upload is not None and (kind != "state_dict" or architecture is not None)
    if upload is not None and too_large(upload):
        st.error(too_large(upload), icon="⚠️")
        ready = False
    if upload is not None and kind == "state_dict" and architecture is None:
        st.info("Pick the architecture these weights belong to.", icon=":material/arrow_upward:")
    picked_guess = load_now()
    if st.button("Load model", type="primary", disabled=not ready, key=state.MODELS_LOAD) or picked_guess and ready:
        with st.spinner(f"Loading {upload.name}…"):
            entry = load_upload(upload, architecture, labels, preprocessing)
        if entry is not None:
            st.toast(f"Loaded {entry.label}; it is now the model in the sidebar.", icon=":material/check:")
            st.rerun()
    offer_guesses(upload, architecture)

loaded = user_models.user_models()
if loaded:
    st.subheader("Loaded in this session")
for entry in loaded:
    with st.container(border=True, key=f"models.entry.{entry.id}"):
        st.markdown(f"**{md_escape(entry.label)}**")
        st.caption(describe_bundle(entry.bundle))
        for note in entry.notes:
            st.warning(note, icon=":material/warning:")
        left, right, _ = st.columns([1, 1, 4])
        if left.button("Use", key=f"models.use.{entry.id}",
                       disabled=st.session_state.get(state.MODEL) == entry.id):
            user_models.select_next_run(entry.id)
            st.rerun()
        if right.button("Remove", key=f"{state.MODELS_REMOVE}.{entry.id}"):
            user_models.remove(entry.id)
            st.rerun()
