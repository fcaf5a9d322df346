"""Plotly figures: predictions, heatmaps and matrices. The heatmap's colours are the render pipeline's own colour
scale, so the interactive figure and the exported PNG show the same colours."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from explainers.render import OUTSIDE_GREY, Rendered, percentile_of


def plotly_scale(colours: np.ndarray) -> list[list]:
    """A uint8 [K, 3] colour ramp (render's ``Rendered.scale``) as a plotly colorscale."""
    last = max(len(colours) - 1, 1)
    return [[i / last, f"rgb({r},{g},{b})"] for i, (r, g, b) in enumerate(colours.tolist())]


# Bars at least this wide hold their percentage inside; narrower ones print it just past their end.
INSIDE_LABEL_MIN = 0.15
# Explore's three result panels (original, heatmap, overlay) share one size: PANEL_WIDTH wide (about a third of
# the main area at 1600 px, less the heatmap's colour bar), or narrower for a tall picture, so that no panel is
# taller than PANEL_MAX_HEIGHT and all three are as tall as each other.
PANEL_WIDTH = 280
PANEL_MAX_HEIGHT = 560
TITLE_HEIGHT = 30


def predictions_figure(names: list[str], probabilities: list[float], indices: list[int], selected: int | None):
    """The top classes as horizontal bars, each labelled with its probability: inside a wide bar, just past the
    end of a narrow one, always horizontal (plotly would otherwise turn a label sideways to fit a narrow bar)."""
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
            textposition=["inside" if p >= INSIDE_LABEL_MIN else "outside" for p in probabilities[::-1]],
            textangle=0,
            insidetextanchor="end",
            constraintext="none",
            cliponaxis=False,
            hovertemplate="%{y}: %{x:.2%}<extra>click to explain</extra>",
        )
    )
    figure.update_layout(
        height=230, margin=dict(l=0, r=10, t=10, b=10), xaxis=dict(range=[0, 1], tickformat=".0%"),
        yaxis=dict(automargin=True), clickmode="event+select", dragmode=False,
    )
    return figure


def panel_size(shape: tuple[int, ...]) -> tuple[int, int]:
    """(width, height) in CSS pixels of a result panel showing a picture of ``shape`` = (height, width, ...)."""
    rows, columns = max(int(shape[0]), 1), max(int(shape[1]), 1)
    height = min(PANEL_WIDTH * rows / columns, PANEL_MAX_HEIGHT)
    return max(int(round(height * columns / rows)), 1), max(int(round(height)), 1)


def heatmap_figure(rendered: Rendered, title: str = "", height: int | None = None, show_scale: bool = True):
    """An interactive heatmap: hover shows the raw value and its percentile; the colorbar is in raw units.

    The map keeps the picture's aspect (the axes are locked one to one) and spans the whole picture, where the
    model saw nothing too (grey, as in the PNG: plotly would otherwise shrink the axes to the centre crop's square).
    By default the plot is as tall as the other panels (:func:`panel_size`)."""
    values = rendered.values
    if height is None:
        height = panel_size(values.shape)[1] + (TITLE_HEIGHT if title else 0)
    # at most ~128 points a side: every view change resends the figure, and the browser redraws it
    step = max(1, int(np.ceil(max(values.shape) / 128)))
    shown = np.ascontiguousarray(values[::step, ::step], dtype=np.float32)
    ranks = np.rint(np.nan_to_num(percentile_of(values, shown))).astype(np.uint8)  # whole percentiles: one byte
    figure = go.Figure(
        go.Heatmap(
            z=shown,
            zmin=rendered.lo,
            zmax=rendered.hi,
            colorscale=plotly_scale(rendered.scale),
            customdata=ranks,
            showscale=show_scale,
            colorbar=dict(title=dict(text="raw", side="right"), thickness=12),
            x=np.arange(shown.shape[1]) * step,
            y=np.arange(shown.shape[0]) * step,
            hovertemplate="x %{x}, y %{y}<br>raw %{z:.4g}<br>percentile %{customdata}<extra></extra>",
        )
    )
    outside = np.isnan(shown)
    if outside.any():  # where the model saw nothing: grey, as in the PNG (its own trace: plotly has no NaN colour)
        grey = f"rgb({OUTSIDE_GREY},{OUTSIDE_GREY},{OUTSIDE_GREY})"
        figure.add_trace(go.Heatmap(z=np.where(outside, 0.0, np.nan), x=np.arange(shown.shape[1]) * step,
                                    y=np.arange(shown.shape[0]) * step, colorscale=[[0, grey], [1, grey]],
                                    showscale=False, hoverinfo="skip"))
    half = step / 2
    # both axes give up domain, never range, to keep one to one: the picture is never framed by empty margins
    figure.update_yaxes(range=[shown.shape[0] * step - half, -half], scaleanchor="x", visible=False,
                        constrain="domain")
    figure.update_xaxes(range=[-half, shown.shape[1] * step - half], visible=False, constrain="domain")
    figure.update_layout(height=height, margin=dict(l=0, r=0, t=TITLE_HEIGHT if title else 0, b=0),
                         title=dict(text=title, font=dict(size=13)))
    return figure


def matrix_figure(matrix: np.ndarray, names: list[str], lo: float, hi: float, colours: np.ndarray):
    """A labelled square matrix (method agreement), values printed in the cells."""
    figure = go.Figure(go.Heatmap(
        z=matrix, x=names, y=names, zmin=lo, zmax=hi, colorscale=plotly_scale(colours),
        text=np.round(matrix, 2), texttemplate="%{text}", hovertemplate="%{y} vs %{x}: %{z:.3f}<extra></extra>",
    ))
    figure.update_layout(height=120 + 45 * len(names), margin=dict(l=0, r=0, t=10, b=0))
    figure.update_yaxes(autorange="reversed")
    return figure
