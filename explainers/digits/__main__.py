"""``python -m explainers.digits``: train LeNet-5 or write a gallery (see ``explainers.digits.cli``)."""

from .cli import main

raise SystemExit(main())
