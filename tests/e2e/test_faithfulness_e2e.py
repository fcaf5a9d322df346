"""In Chromium: the pointing game's picture draws the box that is scored, whether set with the sliders or drawn by
hand, and "Clear box" brings the sliders back."""

from __future__ import annotations

import re

import pytest

from .conftest import keyed, page_problems, wait_idle

pytestmark = pytest.mark.e2e

LOAD_MS = 180_000
# The rectangles on the pointing game's picture, in the model's pixels (x0, y0, x1, y1): plotly puts a pixel's
# centre on its index, so a box's edges lie half a pixel before.
BOXES_JS = """() => {
    const plot = document.querySelector('.st-key-faith-box .js-plotly-plot');
    return plot ? (plot.layout.shapes || []).filter(s => s.type === 'rect')
        .map(s => [s.x0, s.y0, s.x1, s.y1].map(v => Math.round(v + 0.5))) : null;
}"""
SCORED = re.compile(r"Box \((\d+), (\d+), (\d+), (\d+)\) in the model's")


def _scored_box(page) -> list[int]:
    """The box the pointing-game table scores, from the caption under it."""
    caption = page.get_by_text(SCORED).inner_text()
    return [int(v) for v in SCORED.search(caption).groups()]


def _boxes_become(page, box: list[int]) -> None:
    page.wait_for_function(f"() => JSON.stringify(({BOXES_JS})()) === '{[box]}'.replace(/ /g, '')", timeout=60_000)


def test_the_scored_box_is_drawn_and_clear_box_brings_the_sliders_back(page, base_url):
    page.goto(f"{base_url}/faithfulness")
    sliders = page.locator(keyed("faith.box_x"))
    sliders.wait_for(timeout=LOAD_MS)
    wait_idle(page, LOAD_MS)
    # the sliders' box (the centre half at first) is on the picture
    start = _scored_box(page)
    _boxes_become(page, start)  # plotly draws after the script run ends: wait for it
    assert page.evaluate(BOXES_JS) == [start]

    # move the left edge to 0 with the keyboard: the table and the picture follow
    thumb = sliders.get_by_role("slider").first
    thumb.focus()
    thumb.press("Home")
    page.get_by_text(f"Box (0, {start[1]}, {start[2]}, {start[3]}) in the model's").wait_for()
    _boxes_become(page, [0, *start[1:]])

    # draw a box by hand: it replaces the sliders, is drawn, and is the one scored
    plot = page.locator(f"{keyed('faith.box')} .js-plotly-plot .nsewdrag").first
    plot.scroll_into_view_if_needed()
    area = plot.bounding_box()
    x, y = area["x"] + area["width"] * 0.3, area["y"] + area["height"] * 0.3
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + 60, y + 40, steps=4)
    page.mouse.move(x + 120, y + 100, steps=4)
    page.mouse.up()
    clear = page.locator(keyed("faith.box_clear"))
    clear.wait_for()
    wait_idle(page)
    drawn = _scored_box(page)
    assert drawn != [0, *start[1:]] and drawn[0] > 0
    _boxes_become(page, drawn)
    assert sliders.count() == 0

    # Clear box: the sliders are back, with the box they held, and it is drawn again
    clear.get_by_role("button", name="Clear box").click()
    sliders.wait_for()
    wait_idle(page)
    _boxes_become(page, [0, *start[1:]])
    assert _scored_box(page) == [0, *start[1:]]
    assert page_problems(page) == [] and page.js_errors == []
