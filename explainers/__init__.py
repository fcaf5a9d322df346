"""Saliency Studio's backend: models, attribution methods and rendering, for image and text classifiers. Pure
PyTorch; never imports streamlit."""

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
from .models.text import DEFAULT_TEXT_MODEL, load_text_model
from .models.user import load_user_model
from .registry import METHODS, Cost, MethodInfo, Param, Reference, Sanity, available_methods, get_method, method_order
from .targets import OBJECTIVES, Contrast, Target, TargetSpec, class_index, resolve_target
from .text import TextBundle, TokenBundle, TokenMap, TokenView, explain_text, token_html

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_TEXT_MODEL",
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
    "TextBundle",
    "TokenBundle",
    "TokenMap",
    "TokenView",
    "UnknownMethodError",
    "available_methods",
    "class_index",
    "class_probabilities",
    "class_scores",
    "dense_bundle",
    "explain",
    "explain_many",
    "explain_text",
    "get_method",
    "image_hash",
    "layer_catalogue",
    "list_models",
    "load_image",
    "load_model",
    "load_text_model",
    "load_user_model",
    "method_order",
    "model_info",
    "open_image",
    "render",
    "resolve_layer",
    "resolve_target",
    "token_html",
]
