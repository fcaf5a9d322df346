"""``python -m explainers``: the command line (see ``explainers.cli``)."""

from .cli import main

raise SystemExit(main())
