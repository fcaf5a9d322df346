"""Importing this package registers every method in ``explainers.registry.METHODS``, in this order."""

from . import (  # noqa: F401  (importing a module registers its methods)
    cam,  # the CAM family (layer methods)
    controls,  # random and sobel: yardsticks, not explanations
    gradient,  # plain input gradients
    guided,  # guided backpropagation, deconvnet
    guided_cam,
    integrated,
    occlusion,  # perturbation methods
    rise,
    rollout,  # attention
    smoothing,  # noise-averaged wrappers, after their bases
)
