"""The command line: every command and the option parsers they share; nothing else in the project parses argv."""

from .main import build_parser, main
from .options import parse_params

__all__ = ["build_parser", "main", "parse_params"]
