"""Importing this package registers every method in ``explainers.registry.METHODS``, in this order."""

from . import (  # noqa: F401  (importing a module registers its methods)
    cam,  # the CAM family (layer methods)
    chefer,  # Chefer et al.: generic attention explainability, transformer attribution
    controls,  # random and sobel: yardsticks, not explanations
    deeplift,  # DeepLIFT (Rescale rule) and DeepLIFT-SHAP; before smoothing, which offers it as a base
    expected,  # expected gradients, GradientSHAP
    extremal,  # extremal perturbations (Fong, Patrick & Vedaldi 2019)
    fullgrad,  # FullGrad: input- and bias-gradient maps
    gradient,  # plain input gradients
    guided,  # guided backpropagation, deconvnet
    guided_cam,
    integrated,
    legrad,  # LeGrad (attention gradients)
    lrp,  # layer-wise relevance propagation; before smoothing, which offers it as a base
    occlusion,  # perturbation methods
    rise,
    rollout,  # attention
    smoothing,  # noise-averaged wrappers, after their bases
    surrogate,  # LIME and KernelSHAP on superpixels
    xrai,  # XRAI: regions ranked on integrated gradients
)
