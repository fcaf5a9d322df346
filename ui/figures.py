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


def predictions_figure(names: list[str], probabilities: list[float], indices: list[int], selected: int | None,
                       labels: list[str] | None = None, hover: str = "%{y}: %{x:.2%}"):
    """The top classes as horizontal bars, each labelled with its probability: inside a wide bar, just past the
    end of a narrow one, always horizontal (plotly would otherwise turn a label sideways to fit a narrow bar).
    ``labels`` replace the bars' "name (index)"; a click reports the bar's index as its customdata."""
    colours = ["#e4572e" if i == selected else "#4c78a8" for i in indices]
    labels = labels or [f"{n} ({i})" for n, i in zip(names, indices)]
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
            hovertemplate=hover + "<extra>click to explain</extra>",
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


# ---- detections and segmentations ------------------------------------------------------------------------------

# One colour per class (by its index), strong enough to read on a photo and distinct from the cyan of the target
# outline on the overlays.
CLASS_COLOURS = ("#7f7f7f", "#e4572e", "#4c78a8", "#54a24b", "#b279a2", "#f2a900", "#9d755d", "#ff6fb1",
                 "#2e8b57", "#8c564b", "#bcbd22", "#1f3c88")  # class 0 (a background, in COCO) grey
DENSE_FIGURE_HEIGHT = 420
SEGMENTATION_MAX_CELLS = 200  # the class map is drawn at most this many cells a side (a step over larger ones)


def class_colour(label: int) -> str:
    return CLASS_COLOURS[int(label) % len(CLASS_COLOURS)]


def _picture_layout(figure, width: int, height: int, *, legend: bool = False, dragmode: str | bool = False) -> None:
    """Pixel axes over a picture (y down), one to one, no margins; clicks select points."""
    figure.update_xaxes(range=[0, width], visible=False, constrain="domain")
    figure.update_yaxes(range=[height, 0], visible=False, scaleanchor="x", constrain="domain")
    figure.update_layout(height=DENSE_FIGURE_HEIGHT + (60 if legend else 0), margin=dict(l=0, r=0, t=0, b=0),
                         clickmode="event+select", dragmode=dragmode, showlegend=legend, hovermode="closest",
                         legend=dict(orientation="h", yanchor="top", y=-0.01, x=0, font=dict(size=11)))


LABELLED_BOXES = 8  # the boxes figure names this many (the best), plus the selected one; the rest are outlines


def labelled_boxes(count: int, selected: int | None, limit: int = LABELLED_BOXES) -> set[int]:
    """Which of ``count`` boxes (best first) the figure labels: the first ``limit`` and the ``selected`` one."""
    return set(range(min(count, limit))) | ({selected} if selected is not None and 0 <= selected < count else set())


def boxes_figure(picture_uri: str, size: tuple[int, int], boxes: list[tuple[tuple[float, ...], int, str]],
                 selected: int | None, limit: int = LABELLED_BOXES):
    """The model's view (``picture_uri``, a PNG data URI of ``size`` = (height, width)) with every detection's box
    (x0, y0, x1, y1), class and label, coloured by class; the ``selected`` one drawn thick. ``boxes`` come best
    first: the first ``limit`` and the selected one are outlined and labelled, the others (a detector at a low
    threshold lists a hundred) thin outlines without a label, one trace per class. Markers at each box's centre
    and corners carry its index (customdata): a click on one picks that box, labelled or not."""
    height, width = size
    figure = go.Figure(go.Image(source=picture_uri, x0=0, y0=0, dx=1, dy=1, hoverinfo="skip"))
    named = labelled_boxes(len(boxes), selected, limit)
    faint: dict[int, tuple[list, list]] = {}
    for index, (box, label, _) in enumerate(boxes):
        if index not in named:
            x0, y0, x1, y1 = (float(v) for v in box)
            xs, ys = faint.setdefault(int(label), ([], []))
            xs += [x0, x1, x1, x0, x0, None]
            ys += [y0, y0, y1, y1, y0, None]
    for label, (xs, ys) in faint.items():  # beneath the labelled ones
        figure.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line=dict(color=class_colour(label), width=1),
                                    opacity=0.35, hoverinfo="skip", showlegend=False))
    marks_x, marks_y, marks_i, marks_c, marks_s, marks_t, marks_o = [], [], [], [], [], [], []
    for index in sorted(named):
        box, label, name = boxes[index]
        x0, y0, x1, y1 = (float(v) for v in box)
        chosen = index == selected
        colour = class_colour(label)
        figure.add_trace(go.Scatter(x=[x0, x1, x1, x0, x0], y=[y0, y0, y1, y1, y0], mode="lines",
                                    line=dict(color=colour, width=5 if chosen else 2), hoverinfo="skip",
                                    showlegend=False))
        figure.add_annotation(x=x0, y=y0, text=f"<b>{name}</b>" if chosen else name, showarrow=False,
                              xanchor="left", yanchor="bottom", font=dict(color="white", size=12 if chosen else 11),
                              bgcolor=colour, borderpad=2, opacity=1.0 if chosen else 0.85)
    for index, (box, label, name) in enumerate(boxes):
        x0, y0, x1, y1 = (float(v) for v in box)
        chosen, shown = index == selected, index in named
        for x, y, mark in (((x0 + x1) / 2, (y0 + y1) / 2, 12), (x0, y0, 8), (x1, y0, 8), (x1, y1, 8), (x0, y1, 8)):
            marks_x.append(x)
            marks_y.append(y)
            marks_i.append(index)
            marks_c.append(class_colour(label))
            marks_s.append((mark if shown else 6) + (4 if chosen else 0))
            marks_t.append(name)
            # an unlabelled box: a faint centre dot; its corners invisible, yet there to hover and click
            marks_o.append(1.0 if shown else 0.5 if mark == 12 else 0.0)
    if boxes:
        figure.add_trace(go.Scatter(x=marks_x, y=marks_y, mode="markers", customdata=marks_i, text=marks_t,
                                    marker=dict(color=marks_c, size=marks_s, opacity=marks_o,
                                                line=dict(color="white", width=1.5)),
                                    hovertemplate="%{text}<extra>click to explain this box</extra>",
                                    showlegend=False))
    _picture_layout(figure, width, height)
    return figure


def segmentation_figure(picture_uri: str, classes: np.ndarray, names: dict[int, str], background: int | None,
                        drawn: tuple[float, float, float, float] | None = None, opacity: float = 0.5,
                        targets: dict[int, int] | None = None):
    """The model's view with its segmentation painted over it (each class its colour, ``background`` left
    clear) and a legend naming the classes (``names``: class → "name share"). Box select is on: a box dragged on
    it is the region to explain (the page reads its x and y ranges); the ``drawn`` one is outlined, dashed.
    ``targets`` (class → target index): a click on the picture reports the target of the class under it as the
    point's customdata (none where that class is no target)."""
    height, width = classes.shape
    step = max(1, int(np.ceil(max(height, width) / SEGMENTATION_MAX_CELLS)))
    shown = classes[::step, ::step].astype(np.float32)
    if background is not None:
        shown[shown == background] = np.nan
    count = max(int(classes.max()) + 1, 1)
    scale = []
    for label in range(count):
        colour = class_colour(label)
        scale += [[label / count, colour], [(label + 1) / count, colour]]
    figure = go.Figure(go.Image(source=picture_uri, x0=0, y0=0, dx=1, dy=1, hoverinfo="skip"))
    figure.add_trace(go.Heatmap(z=shown, x0=step / 2, dx=step, y0=step / 2, dy=step, zmin=-0.5, zmax=count - 0.5,
                                colorscale=scale, showscale=False, opacity=opacity, hoverinfo="skip"))
    # an invisible grid of points: a box dragged anywhere on the picture is a selection plotly reports
    # (each carries the target of the class under it: a click there explains that class's region)
    grid = np.linspace(0, 1, 17)[1:-1]
    xs, ys = np.repeat(grid * width, grid.size), np.tile(grid * height, grid.size)
    under = classes[np.minimum(ys.astype(int), height - 1), np.minimum(xs.astype(int), width - 1)]
    custom = [(targets or {}).get(int(label)) for label in under]
    figure.add_trace(go.Scatter(x=xs.tolist(), y=ys.tolist(), customdata=custom, mode="markers",
                                marker=dict(size=18, opacity=0),
                                hoverinfo="skip", showlegend=False))
    for label, name in names.items():
        figure.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=name, hoverinfo="skip",
                                    marker=dict(color=class_colour(label), size=12, symbol="square")))
    if drawn is not None:
        figure.add_shape(type="rect", x0=drawn[0], y0=drawn[1], x1=drawn[2], y1=drawn[3],
                         line=dict(color="#00e5ff", width=3, dash="dash"))
    _picture_layout(figure, width, height, legend=True, dragmode="select")
    return figure
