"""Saliency Studio's backend: models, attribution methods and rendering. Pure PyTorch; never imports streamlit."""

from . import methods, render  # noqa: F401  (importing methods registers every method)
from .core import Attribution, Call, Explanation, ExplanationRecord, class_probabilities, class_scores, explain
from .dense import BoxTarget, RegionTarget
from .errors import (
    Cancelled,
    ImageError,
    InputError,
    LayerError,
    ModelLoadError,
    ModelUnavailableError,
    ParameterError,
    SaliencyError,
    TargetError,
    UnknownMethodError,
)
from .images import image_hash, load_image, open_image
from .layers import LayerInfo, layer_catalogue, resolve_layer
from .many import explain_many
from .models import (
    DEFAULT_MODEL,
    DenseBundle,
    ModelBundle,
    ScoredBundle,
    dense_bundle,
    list_models,
    load_model,
    model_info,
)
from .models.user import load_user_model
from .registry import METHODS, Cost, MethodInfo, Param, Reference, Sanity, available_methods, get_method, method_order
from .targets import OBJECTIVES, Contrast, Target, TargetSpec, class_index, resolve_target

__all__ = [
    "DEFAULT_MODEL",
    "METHODS",
    "OBJECTIVES",
    "Attribution",
    "BoxTarget",
    "Call",
    "Cancelled",
    "Contrast",
    "DenseBundle",
    "Cost",
    "Explanation",
    "ExplanationRecord",
    "ImageError",
    "InputError",
    "LayerError",
    "LayerInfo",
    "MethodInfo",
    "ModelBundle",
    "ModelLoadError",
    "ModelUnavailableError",
    "Param",
    "ParameterError",
    "Reference",
    "RegionTarget",
    "SaliencyError",
    "Sanity",
    "ScoredBundle",
    "Target",
    "TargetError",
    "TargetSpec",
    "UnknownMethodError",
    "available_methods",
    "class_index",
    "class_probabilities",
    "class_scores",
    "dense_bundle",
    "explain",
    "explain_many",
    "get_method",
    "image_hash",
    "layer_catalogue",
    "list_models",
    "load_image",
    "load_model",
    "load_user_model",
    "method_order",
    "model_info",
    "open_image",
    "render",
    "resolve_layer",
    "resolve_target",
]
