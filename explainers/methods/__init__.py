"""Importing this package registers every method in ``explainers.registry.METHODS``, in this order."""

from . import (  # noqa: F401  (gradient family)  # noqa: F401  (layer methods)  # noqa: F401  (perturbation methods)
    cam,
    gradient,
    guided,
    guided_cam,
    integrated,
    occlusion,
    rise,
    rollout,  # noqa: F401  (attention)
    smoothing,
)
