"""Parameter widgets generated from a method's declared parameters: adding a method never touches a page."""

from __future__ import annotations

from typing import Any

import streamlit as st

from explainers import MethodInfo


def param_widgets(info: MethodInfo, key_prefix: str = "param", container=st) -> dict[str, Any]:
    """One widget per declared parameter, with its range, default and help; returns {name: value}."""
    values: dict[str, Any] = {}
    for name, param in info.params.items():
        key = f"{key_prefix}.{info.name}.{name}"
        label = name.replace("_", " ")
        if param.kind == "choice":
            values[name] = container.selectbox(label, param.choices, index=param.choices.index(param.default),
                                               help=param.help, key=key)
        elif param.kind == "bool":
            values[name] = container.checkbox(label, value=bool(param.default), help=param.help, key=key)
        elif param.kind == "int":
            values[name] = int(container.number_input(
                label, min_value=int(param.minimum) if param.minimum is not None else None,
                max_value=int(param.maximum) if param.maximum is not None else None,
                value=int(param.default), step=1, help=param.help, key=key,
            ))
        elif param.kind == "float":
            low = float(param.minimum) if param.minimum is not None else None
            high = float(param.maximum) if param.maximum is not None else None
            if low is not None and high is not None and high - low <= 1.0:
                values[name] = container.slider(label, low, high, float(param.default), step=0.01, help=param.help,
                                                key=key)
            else:
                values[name] = container.number_input(label, min_value=low, max_value=high,
                                                       value=float(param.default), help=param.help, key=key)
        else:  # pragma: no cover - a new kind must get a widget here
            raise ValueError(f"no widget for parameter kind {param.kind!r}")
    return values


def cost_caption(info: MethodInfo, params: dict[str, Any], hw: tuple[int, int] = (224, 224),
                 channels: int | None = None) -> str:
    """The paper link and the cost estimate, shown before a method runs."""
    forwards, backwards = info.passes(params, hw, channels)
    passes = f"{forwards} forward" + (f" + {backwards} backward" if backwards else "") + " passes"
    link = info.reference.link
    paper = f"[{info.reference}]({link})" if link else str(info.reference)
    return f"{paper} · cost: {passes}"
