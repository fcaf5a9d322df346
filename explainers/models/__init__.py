"""Model loading: the offline default (EfficientNet-Lite0), the bundled digits models (LeNet-5, ``lenet_digits``,
and a small ViT, ``vit_digits``) and torchvision's ImageNet classification zoo.

``load_model(name)`` returns a :class:`ModelBundle`: the model in eval mode, its preprocessing, class names and
layer catalogue. ``list_models()`` and ``model_info(name)`` tell the UI what exists and what needs a download,
without building anything.

A user's own classifier loads through :mod:`.user` (state dicts for :mod:`.architectures`, TorchScript) and
:mod:`.foreign` (Hugging Face, ONNX); both check what the user gives with it (device, input size, mean and std,
class names) with :mod:`.inputs`.
"""

from __future__ import annotations

import difflib
from pathlib import Path

import torch

from ..errors import ModelUnavailableError
from ..layers import default_layer, layer_catalogue
from . import default, dense_zoo, digits, zoo
from .base import CENTER_CROP, PREPROCESSING, RESIZE, ModelBundle, affine_normalizer
from .dense import DenseBundle, Prediction, ScoredBundle, dense_bundle
from .digits import load_digits_bundle

DEFAULT_MODEL = default.NAME
DIGITS_MODEL = digits.NAME  # LeNet-5 on the procedural digits, shipped in assets/digits
VIT_DIGITS_MODEL = digits.VIT_NAME  # a small torchvision ViT on the same digits, shipped beside it
# Model name -> load_digits_bundle variant, for every digits model in list_models() (they read the digits gallery).
DIGITS_MODELS = {DIGITS_MODEL: "real", VIT_DIGITS_MODEL: "vit"}
# Well-known architectures offered first: CNNs of several eras plus two transformers.
CURATED = (
    "resnet18",
    "resnet50",
    "vgg16",
    "mobilenet_v2",
    "mobilenet_v3_large",
    "densenet121",
    "efficientnet_b0",
    "convnext_tiny",
    "vit_b_16",
    "swin_t",
)
# Detectors and segmenters offered first (small ones for CPUs, then the classic ResNet-50 ones).
DENSE_CURATED = (
    "fasterrcnn_mobilenet_v3_large_320_fpn",
    "ssdlite320_mobilenet_v3_large",
    "fasterrcnn_resnet50_fpn",
    "retinanet_resnet50_fpn",
    "fcos_resnet50_fpn",
    "lraspp_mobilenet_v3_large",
    "fcn_resnet50",
    "deeplabv3_resnet50",
)

__all__ = [
    "CENTER_CROP",
    "CURATED",
    "DEFAULT_MODEL",
    "DENSE_CURATED",
    "DIGITS_MODEL",
    "DIGITS_MODELS",
    "PREPROCESSING",
    "RESIZE",
    "VIT_DIGITS_MODEL",
    "DenseBundle",
    "ModelBundle",
    "Prediction",
    "ScoredBundle",
    "affine_normalizer",
    "dense_bundle",
    "ensure_weights",
    "list_models",
    "load_digits_bundle",
    "load_model",
    "model_info",
]


def list_models() -> list[str]:
    """``efficientnet_lite0``, ``lenet_digits``, ``vit_digits``, then the curated shortlist of classifiers, then
    torchvision's detectors and segmenters (a shortlist first), then every other torchvision classifier, sorted.
    (The shuffled-label digits model is left out: see ``load_digits_bundle``.)"""
    zoo_names = zoo.available()
    curated = [name for name in CURATED if name in zoo_names]
    offline = (DEFAULT_MODEL, *DIGITS_MODELS)
    dense = [name for name in DENSE_CURATED if name in dense_zoo.architectures()]
    dense += [name for name in dense_zoo.architectures() if name not in dense]
    rest = [name for name in zoo_names if name not in curated and name not in offline]
    return [*offline, *curated, *dense, *rest]


def _canonical(name: object) -> str:
    if not isinstance(name, str):
        raise ModelUnavailableError(f"expected a model name (str), got {type(name).__name__} {name!r}")
    key = name.strip().lower()
    names = list_models()
    if key in names:
        return key
    close = difflib.get_close_matches(key, names, n=5, cutoff=0.5)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ModelUnavailableError(
        f"expected one of the {len(names)} models of list_models(), got unknown model {name!r}{hint}"
    )


def model_info(name: str) -> dict:
    """name, offline, download_mb, weights_file, weights_url, categories (count), input_size, resize_size,
    interpolation and description of a model, without building it or downloading anything."""
    key = _canonical(name)
    if key in DIGITS_MODELS:
        return digits.info(DIGITS_MODELS[key])
    if dense_zoo.kind_of(key):
        return dense_zoo.info(key)
    return default.info() if key == DEFAULT_MODEL else zoo.info(key)


def ensure_weights(name: str, *, progress=None, offline: bool | None = None, tqdm_bar: bool = False) -> Path:
    """The path of a model's weights file, downloading it first if needed; builds nothing.

    Lets a UI show the download's progress before loading. Same errors and arguments as :func:`load_model`.
    """
    key = _canonical(name)
    if key in DIGITS_MODELS:
        return digits.ensure_weights(DIGITS_MODELS[key])
    if key == DEFAULT_MODEL:
        path = default.weights_path()
        if path is None or not path.is_file():
            default.build()  # raises the ModelUnavailableError that says what to install
        return path
    return zoo.ensure_file(key, progress=progress, offline=offline, tqdm_bar=tqdm_bar)


def load_model(
    name: str = DEFAULT_MODEL,
    *,
    device: str | torch.device | None = None,
    progress=None,
    offline: bool | None = None,
    tqdm_bar: bool = False,
) -> ModelBundle:
    """Build a model with its ImageNet weights, in eval mode, on ``device`` (default: CPU).

    ``progress(done_bytes, total_bytes)`` is called while a weights file downloads (return False to cancel);
    ``offline=True`` (or SALIENCY_OFFLINE=1) forbids downloads; ``tqdm_bar`` shows a console bar (CLI).
    Raises ModelUnavailableError for unknown names and for weights that are neither cached nor downloadable.
    """
    key = _canonical(name)
    if key in DIGITS_MODELS:  # builds its own catalogue and sets its default layer (LeNet: features.relu2)
        return load_digits_bundle(DIGITS_MODELS[key], device=device)
    if dense_zoo.kind_of(key):  # measures its own catalogue, picks its default layer (the backbone's last map)
        bundle = dense_zoo.build(key, progress=progress, offline=offline, tqdm_bar=tqdm_bar)
        if device is not None:
            bundle.model.to(torch.device(device))
        return bundle
    if key == DEFAULT_MODEL:
        bundle = default.build()
    else:
        bundle = zoo.build(key, progress=progress, offline=offline, tqdm_bar=tqdm_bar)
    if device is not None:
        bundle.model.to(torch.device(device))
    bundle.model.eval()
    bundle.layers = layer_catalogue(bundle.model, (1, 3, bundle.input_size, bundle.input_size))
    bundle.default_layer = default_layer(bundle.model, bundle.layers)
    return bundle
