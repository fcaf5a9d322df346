"""Importing this package registers every method in ``explainers.registry.METHODS``."""

from . import gradient, guided, integrated, smoothing  # noqa: F401
