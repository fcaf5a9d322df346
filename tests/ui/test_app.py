"""The app: every page of app.py's navigation renders on the default image and model, without an error."""

from __future__ import annotations

import ast

import pytest

from tests.conftest import ROOT
from tests.ui.helpers import start
from ui import state


def navigation() -> dict[str, str]:
    """{script: title} of every st.Page that app.py hands to st.navigation, in its order."""
    tree = ast.parse((ROOT / "app.py").read_text(encoding="utf-8"))
    return {node.args[0].value: next(k.value.value for k in node.keywords if k.arg == "title")
            for node in ast.walk(tree) if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "Page"}


PAGES = navigation()


def test_the_navigation_lists_every_page_file():
    assert sorted(PAGES) == sorted(str(p.relative_to(ROOT)) for p in (ROOT / "app_pages").glob("*.py"))


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_without_exception(page):
    # Compare with two quick rows, so the page computes its grid rather than waiting for Run
    at = start(session={state.COMPARE_METHODS: ["vanilla", "gradcam"]}, page=page, timeout=300)
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert at.title[0].value == PAGES[page]  # this page, under its navigation title
