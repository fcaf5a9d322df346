"""README stays current: the two commands, and a table row for every registered method."""

from __future__ import annotations

import re

import explainers

from .conftest import ROOT

README = (ROOT / "README.md").read_text()


def test_quick_start_has_the_two_commands():
    quick = README.split("## Quick start", 1)[1].split("##", 1)[0]
    commands = re.findall(r"^make \w+", quick, flags=re.MULTILINE)
    assert commands == ["make run", "make test"]


def test_every_method_is_in_the_methods_table():
    table = README.split("## Methods", 1)[1].split("\n## ", 1)[0]
    rows = set(re.findall(r"^\| `(\w+)` \|", table, flags=re.MULTILINE))
    assert rows == set(explainers.METHODS), (set(explainers.METHODS) ^ rows)
    for name, info in explainers.METHODS.items():
        if info.reference.arxiv:
            line = next(line for line in table.splitlines() if line.startswith(f"| `{name}` |"))
            assert info.reference.arxiv in line, name


def test_ci_calls_the_readme_test_command():
    assert "make test" in (ROOT / ".ci" / "run").read_text()
