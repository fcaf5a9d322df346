"""Command line: ``python -m explainers COMMAND`` (or ``saliency COMMAND`` once installed).

One module per command group adds its subcommands (``add_commands(commands)``, each setting ``handler``: args ->
exit status); the option types they share live in :mod:`.options`. Every user error (a SaliencyError or a bad
option) ends the run with exit status 2 and one line on stderr, ``error: ...``; anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from ..errors import SaliencyError
from . import batch, explain, faithfulness, sanity, text, text_model
from .options import PROG, Parser, parse_params

COMMAND_GROUPS = (explain, sanity, faithfulness, batch, text, text_model)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every command group's subcommands."""
    # installed as the ``saliency`` console script, the usage line says so; else ``python -m explainers``
    prog = "saliency" if Path(sys.argv[0]).name == "saliency" else PROG
    parser = Parser(prog=prog, description="Saliency maps of image and text classifiers from the command line.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=Parser)
    for group in COMMAND_GROUPS:
        group.add_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 2 bad input, 130 interrupted, 141 closed pipe)."""
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except SaliencyError as exc:
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `list-models | head`: the reader left; say nothing more
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141


__all__ = ["build_parser", "main", "parse_params"]
