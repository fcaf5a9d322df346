"""``python -m explainers.digits``: train LeNet-5 or write a gallery (see ``explainers.cli.digits``)."""

from ..cli.digits import main

raise SystemExit(main())
