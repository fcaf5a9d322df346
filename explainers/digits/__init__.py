"""Procedural digits with ground truth, LeNet-5 and a small ViT trained on them, and a NumPy reference of LeNet's
gradient.

- :func:`make_digits`, :func:`sample`: the data set (``data.py``); :func:`gallery`: samples for a picker.
- :class:`LeNet5`, :class:`LeNet5RGB`, :func:`load_lenet`: the network and its shipped weights (``model.py``).
- :func:`load_vit`: torchvision's VisionTransformer sized for the digits, and its shipped weights (``vit.py``).
- ``python -m explainers.digits train [--arch vit]|gallery``: training and PNGs (``explainers/cli/digits.py``,
  ``train.py``).
- ``numpy_reference.input_gradient`` and ``autograd_steps.autograd_steps``: the vanilla gradient step by step, by
  hand and by autograd.

The bundles for the dashboard are ``explainers.load_model("lenet_digits")`` and ``load_model("vit_digits")``
(``explainers/models/digits.py``).
"""

from .data import GALLERY_SEED, DigitSample, DigitSet, GalleryItem, gallery, make_digits, sample, to_tensor
from .model import LeNet5, LeNet5RGB, load_lenet
from .vit import load_vit

__all__ = [
    "GALLERY_SEED",
    "DigitSample",
    "DigitSet",
    "GalleryItem",
    "LeNet5",
    "LeNet5RGB",
    "gallery",
    "load_lenet",
    "load_vit",
    "make_digits",
    "sample",
    "to_tensor",
]
