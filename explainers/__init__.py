"""Saliency Studio's backend: models, attribution methods and rendering. Pure PyTorch; never imports streamlit."""

from . import methods, render  # noqa: F401  (importing methods registers every method)
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
from .images import image_hash, open_image
from .layers import LayerInfo, layer_catalogue, resolve_layer
from .models import DEFAULT_MODEL, ModelBundle, list_models, load_model, model_info
from .registry import METHODS, MethodInfo, Param, Reference, get_method
from .targets import OBJECTIVES, TargetSpec, class_index

__all__ = [
    "DEFAULT_MODEL",
    "LayerInfo",
    "ModelBundle",
    "image_hash",
    "layer_catalogue",
    "list_models",
    "load_model",
    "model_info",
    "open_image",
    "render",
    "resolve_layer",
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
