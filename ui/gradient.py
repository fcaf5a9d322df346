"""The "Inside the gradient" page's figures, from a backend GradientTrace (statistics only, no tensor maths)."""

from __future__ import annotations

import math

import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from explainers.digits.autograd_steps import side_by_side
from explainers.trace import GradientTrace, Stats, trace_gradient


@st.cache_data(show_spinner="Tracing one forward and backward pass…", max_entries=32)
def cached_trace(model: str, image_hash: str, preprocessing: str, target: int, scope: str, _bundle,
                 _inputs) -> GradientTrace:
    return trace_gradient(_bundle, _inputs, target, scope=scope)


# Log axes label powers of ten only: plotly's default labels the minor ticks of a short range with bare digits
# ("9, 8, 7…"), which read as values.
LOG_AXIS = dict(type="log", dtick=1, exponentformat="power", showexponent="all", minor=dict(ticks="", showgrid=False))


def decades(values) -> list[float] | None:
    """A log axis's range in decades, widened to whole powers of ten, so at least two labelled ticks show
    whatever the data's span; None (plotly's own) when nothing is positive."""
    positive = [v for v in values if v > 0 and math.isfinite(v)]
    if not positive:
        return None
    low, high = math.floor(math.log10(min(positive))), math.ceil(math.log10(max(positive)))
    return [low - 0.05, max(high, low + 1) + 0.05]


INPUT = "input"  # the x position of the input pixels: first, before every layer


def forward_order(trace: GradientTrace) -> list[str]:
    """The x axis of the ranges figure: the input, then the layers as the forward pass ran them (the output
    last)."""
    return [INPUT, *(layer.name for layer in trace.layers)]


def ranges_figure(trace: GradientTrace):
    """In forward order, the input first and the output last: the activation's range and mean ± std (top), and
    the mean magnitude of the score's gradient on a log scale (bottom), which ends at the input on the left."""
    names = forward_order(trace)
    figure = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08,
                           subplot_titles=("Forward: activation range (min…max) and mean ± std",
                                           "Backward: mean |gradient of the score| (log scale)"))
    acts = [trace.input, *(layer.activation for layer in trace.layers)]
    figure.add_trace(go.Scatter(x=names, y=[a.maximum for a in acts], mode="lines", line=dict(width=0),
                                showlegend=False, hoverinfo="skip"), row=1, col=1)
    figure.add_trace(go.Scatter(x=names, y=[a.minimum for a in acts], mode="lines", line=dict(width=0),
                                fill="tonexty", fillcolor="rgba(76,120,168,0.25)", name="min…max",
                                hovertemplate="%{x}: min %{y:.3g}<extra></extra>"), row=1, col=1)
    figure.add_trace(go.Scatter(x=names, y=[a.mean for a in acts], mode="markers+lines", name="mean",
                                error_y=dict(type="data", array=[a.std for a in acts], visible=True),
                                line=dict(color="#4c78a8"),
                                hovertemplate="%{x}: mean %{y:.3g}<extra></extra>"), row=1, col=1)
    grads = [(INPUT, trace.input_gradient)] + [(layer.name, layer.gradient) for layer in trace.layers
                                               if layer.gradient is not None]
    figure.add_trace(go.Scatter(x=[name for name, _ in grads], y=[g.abs_mean for _, g in grads],
                                mode="markers+lines", name="mean |gradient|", line=dict(color="#e4572e"),
                                hovertemplate="%{x}: %{y:.3g}<extra></extra>"), row=2, col=1)
    # categories in this order whatever order the traces first name them in
    figure.update_xaxes(categoryorder="array", categoryarray=names)
    figure.update_yaxes(**LOG_AXIS, range=decades([g.abs_mean for _, g in grads]), row=2, col=1)
    # the legend in a band of its own above the plots: beside the first subplot's title it overlaps it when narrow
    figure.update_layout(height=580, margin=dict(l=0, r=0, t=70, b=0),
                         legend=dict(orientation="h", yref="container", y=1, yanchor="top", x=0))
    return figure


def histogram_figure(stats: Stats, title: str, colour: str):
    centres = [(a + b) / 2 for a, b in zip(stats.edges[:-1], stats.edges[1:])]
    figure = go.Figure(go.Bar(x=centres, y=stats.counts, marker_color=colour,
                              hovertemplate="%{x:.3g}: %{y} values<extra></extra>"))
    figure.update_layout(title=dict(text=title, font=dict(size=13)), height=260, bargap=0,
                         margin=dict(l=0, r=0, t=30, b=0),
                         yaxis=dict(**LOG_AXIS, title="count", range=decades(stats.counts)))
    return figure


def stats_line(stats: Stats) -> str:
    return (f"range [{stats.minimum:.3g}, {stats.maximum:.3g}] · mean {stats.mean:.3g} · std {stats.std:.3g} · "
            f"{stats.zeros:.1%} exact zeros")


@st.cache_data(show_spinner="Running the NumPy reference and autograd…", max_entries=16)
def cached_side_by_side(model: str, image_hash: str, preprocessing: str, target: int, _bundle, _inputs) -> list:
    return side_by_side(_bundle.model, _inputs, target)


def steps_table(rows: list) -> list[dict]:
    return [{"step": r.name, "what it computes": r.description, "shape": "×".join(str(s) for s in r.shape[1:]),
             "forward: max |NumPy − autograd|": f"{r.forward_difference:.1e}",
             "backward: max |NumPy − autograd|": "—" if r.backward_difference is None
             else f"{r.backward_difference:.1e}"} for r in rows]


def vector_figure(numpy_values, autograd_values, title: str):
    figure = go.Figure([
        go.Scatter(y=list(numpy_values), mode="lines", name="NumPy (float64)", line=dict(width=3, color="#4c78a8")),
        go.Scatter(y=list(autograd_values), mode="lines", name="autograd", line=dict(dash="dot", color="#e4572e")),
    ])
    figure.update_layout(title=dict(text=title, font=dict(size=13)), height=240, margin=dict(l=0, r=0, t=30, b=0),
                         legend=dict(orientation="h", y=-0.2))
    return figure
