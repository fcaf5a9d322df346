"""Parameter widgets generated from a method's declared parameters: adding a method never touches a page."""

from __future__ import annotations

from typing import Any

import streamlit as st

from explainers import MethodInfo, Param
from explainers.images import IMAGE_SUFFIXES

from . import state


def folder_help(param: Param) -> str:
    """A folder parameter's help: its own, then which files are read and where the folder must be."""
    own = param.help.rstrip(". ")
    return (f"{own + '. ' if own else ''}A path to a folder on the machine running this dashboard (it cannot be "
            "browsed or uploaded from here; on a hosted dashboard, ask whoever runs it). Images read: "
            f"{', '.join(IMAGE_SUFFIXES)}. Leave it empty for none.")


def param_widgets(info: MethodInfo, prefix: str = state.PARAM, container=st,
                  params: dict[str, Param] | None = None) -> dict[str, Any]:
    """One widget per declared parameter that applies (SmoothGrad's n_steps only with the IG base), with its
    range, default and help; returns {name: value} of the shown ones (the rest keep their defaults). ``params``:
    the parameters to draw, where not the image ones (``info.params_for("text")`` on the Text page)."""
    values: dict[str, Any] = {}
    for name, param in (info.params if params is None else params).items():
        if not param.applies(values):
            continue
        key = f"{prefix}.{info.name}.{name}"
        label = name.replace("_", " ")
        keep = {"key": key, "help": param.help, "persist_state": state.KEEP}
        if param.kind == "choice":
            st.session_state.setdefault(key, param.default)
            values[name] = container.selectbox(label, param.choices, **keep)
        elif param.kind == "bool":
            st.session_state.setdefault(key, bool(param.default))
            values[name] = container.checkbox(label, **keep)
        elif param.kind == "int":
            st.session_state.setdefault(key, int(param.default))
            values[name] = int(container.number_input(
                label, min_value=int(param.minimum) if param.minimum is not None else None,
                max_value=int(param.maximum) if param.maximum is not None else None, step=1, **keep,
            ))
        elif param.kind == "float":
            low = float(param.minimum) if param.minimum is not None else None
            high = float(param.maximum) if param.maximum is not None else None
            st.session_state.setdefault(key, float(param.default))
            if low is not None and high is not None and high - low <= 1.0:
                values[name] = container.slider(label, low, high, step=0.01, **keep)
            else:
                values[name] = container.number_input(label, min_value=low, max_value=high, **keep)
        elif param.kind == "folder":
            st.session_state.setdefault(key, str(param.default or ""))
            typed = container.text_input(label, placeholder="/path/to/folder", **{**keep, "help": folder_help(param)})
            values[name] = (typed or "").strip()
        else:  # pragma: no cover - a new kind must get a widget here
            raise ValueError(f"no widget for parameter kind {param.kind!r}")
    return values


def cost_caption(info: MethodInfo, params: dict[str, Any], hw: tuple[int, int] = (224, 224),
                 channels: int | None = None, seconds: float | None = None) -> str:
    """The paper link and the cost, shown before a method runs; ``channels`` is the resolved layer's, ``seconds``
    the estimate on this machine where it is known."""
    link = info.reference.link
    paper = f"[{info.reference}]({link})" if link else str(info.reference)
    estimate = "" if seconds is None else f", {seconds_text(seconds)} on this machine"
    return f"{paper} · cost: {info.passes(params, hw, channels)} per image{estimate}"


def seconds_text(seconds: float) -> str:
    """An estimate as people say it: "under 1 s", "about 12 s", "about 3 min"."""
    if seconds < 1:
        return "under 1 s"
    if seconds < 120:
        return f"about {seconds:.0f} s"
    return f"about {seconds / 60:.0f} min"
