"""Saliency Studio's backend: models, attribution methods and rendering. Pure PyTorch; never imports streamlit."""

from . import methods  # noqa: F401  (registers every method)
from .core import Context, Explanation, explain
from .errors import (
    Cancelled,
    ImageError,
    LayerError,
    ModelUnavailableError,
    ParameterError,
    SaliencyError,
    TargetError,
    UnknownMethodError,
)
from .registry import METHODS, MethodInfo, Param, Reference, get_method
from .targets import OBJECTIVES, TargetSpec, class_index

__all__ = [
    "METHODS",
    "OBJECTIVES",
    "Cancelled",
    "Context",
    "Explanation",
    "ImageError",
    "LayerError",
    "MethodInfo",
    "ModelUnavailableError",
    "Param",
    "ParameterError",
    "Reference",
    "SaliencyError",
    "TargetError",
    "TargetSpec",
    "UnknownMethodError",
    "class_index",
    "explain",
    "get_method",
]
