"""``python -m explainers``: the command line (see ``explainers.cli``)."""

from .cli.main import main

raise SystemExit(main())
