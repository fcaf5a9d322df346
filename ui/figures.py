"""Plotly figures: predictions and heatmaps. The heatmap's colours come from render, so PNG and figure agree."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from explainers.render import RenderedMap, percentile_of


def predictions_figure(names: list[str], probabilities: list[float], indices: list[int], selected: int | None):
    colours = ["#e4572e" if i == selected else "#4c78a8" for i in indices]
    labels = [f"{n} ({i})" for n, i in zip(names, indices)]
    figure = go.Figure(
        go.Bar(
            x=probabilities[::-1],
            y=labels[::-1],
            orientation="h",
            marker_color=colours[::-1],
            customdata=indices[::-1],
            text=[f"{p:.1%}" for p in probabilities[::-1]],
            textposition="auto",
            hovertemplate="%{y}: %{x:.2%}<extra>click to explain</extra>",
        )
    )
    figure.update_layout(
        height=230, margin=dict(l=0, r=10, t=10, b=10), xaxis=dict(range=[0, 1], tickformat=".0%"),
        clickmode="event+select", dragmode=False,
    )
    return figure


def heatmap_figure(rendered: RenderedMap, title: str = "", height: int = 360, show_scale: bool = True):
    """An interactive heatmap: hover shows the raw value and its percentile; the colorbar is in raw units."""
    values = rendered.values
    # at most ~128 points a side: every view change resends the figure, and the browser redraws it
    step = max(1, int(np.ceil(max(values.shape) / 128)))
    shown = np.ascontiguousarray(values[::step, ::step], dtype=np.float32)
    ranks = np.rint(percentile_of(values, shown)).astype(np.uint8)  # whole percentiles: one byte each
    figure = go.Figure(
        go.Heatmap(
            z=shown,
            zmin=rendered.lo,
            zmax=rendered.hi,
            colorscale=rendered.colorscale,
            customdata=ranks,
            showscale=show_scale,
            colorbar=dict(title=dict(text="raw", side="right"), thickness=12),
            x=np.arange(shown.shape[1]) * step,
            y=np.arange(shown.shape[0]) * step,
            hovertemplate="x %{x}, y %{y}<br>raw %{z:.4g}<br>percentile %{customdata}<extra></extra>",
        )
    )
    figure.update_yaxes(autorange="reversed", scaleanchor="x", visible=False)
    figure.update_xaxes(visible=False, constrain="domain")
    figure.update_layout(height=height, margin=dict(l=0, r=0, t=30 if title else 0, b=0),
                         title=dict(text=title, font=dict(size=13)))
    return figure
