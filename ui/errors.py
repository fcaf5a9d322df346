"""Turning exceptions into messages: the user sees the cause and the fix, never a traceback."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import streamlit as st

from explainers import (
    ImageError,
    InputError,
    LayerError,
    ModelUnavailableError,
    ParameterError,
    SaliencyError,
    TargetError,
)
from explainers.errors import ModelLoadError

log = logging.getLogger("saliency_studio")

FIXES = {
    ImageError: "Pick a sample or upload a PNG/JPEG photo.",
    ModelUnavailableError: "Pick the offline default model, efficientnet_lite0, or put the weights file where the "
    "message says.",
    LayerError: "Pick a layer from the list; CAM methods need a spatial layer.",
    TargetError: "Pick the class from the list, or use its index.",
    ParameterError: "Reset the parameter to its default.",
    ModelLoadError: "Check the architecture, the file and the class names; \"What loads, and what is refused\" on "
    "the Your model page lists the formats.",
}
# The same kinds of error on a text (the Text page, a run over texts): a text's fixes, not an image's.
TEXT_FIXES = {
    InputError: "Type or paste a sentence in words the model's tokenizer knows (or pick one of the examples); "
    "characters it drops, as a zero-width space or a control character, leave it nothing to read.",
    ModelUnavailableError: "Pick the shipped text model in the sidebar, or load your own classifier on the Text "
    "page.",
    TargetError: "Pick the class from the list, or use its index.",
    ParameterError: "Reset the parameter to its default.",
    ModelLoadError: "Zip the folder that `save_pretrained` wrote (the model and its tokenizer, with "
    "`tokenizer.json`): a sequence classifier of Hugging Face transformers.",
}


def show_error(exc: BaseException, fix: str | None = None, fixes: dict[type, str] = FIXES) -> None:
    """``exc`` as a message with its fix (``fix``, or the one its kind has in ``fixes``: FIXES for the image pages,
    TEXT_FIXES for texts); a traceback only in the log."""
    if isinstance(exc, SaliencyError):
        fix = fix or next((text for kind, text in fixes.items() if isinstance(exc, kind)), "")
        st.error(f"**{type(exc).__name__}**: {exc}" + (f"\n\n{fix}" if fix else ""), icon="⚠️")
    else:
        log.exception("unexpected error in the dashboard")
        st.error(
            f"Something went wrong: {type(exc).__name__}: {exc}. The server keeps running; try another "
            "setting, and report this if it repeats.",
            icon="🛑",
        )


@contextlib.contextmanager
def guard(fixes: dict[type, str] = FIXES) -> Iterator[None]:
    """Show any error of the block as st.error, with the fix ``fixes`` gives its kind (TEXT_FIXES around a text),
    and carry on serving.

    Streamlit's reruns and stops derive from BaseException, so they pass through untouched.
    """
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - every user-visible failure ends here as a message
        show_error(exc, fixes=fixes)
