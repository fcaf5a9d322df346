"""Importing this package registers every method in ``explainers.registry.METHODS``."""

from . import cam, gradient, guided, guided_cam, integrated, occlusion, rise, rollout, smoothing  # noqa: F401  (gradient family)  # noqa: F401  (layer and attention methods)  # noqa: F401  (perturbation methods)
