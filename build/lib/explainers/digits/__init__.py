"""Procedural digits with ground truth, LeNet-5 trained on them, and a NumPy reference of its gradient.

- :func:`make_digits`, :func:`sample`: the data set (``data.py``); :func:`gallery`: samples for a picker.
- :class:`LeNet5`, :class:`LeNet5RGB`, :func:`load_lenet`: the network and its shipped weights (``model.py``).
- ``python -m explainers.digits train|gallery``: training and PNGs (``cli.py``, ``train.py``).
- ``numpy_reference.input_gradient`` and ``autograd_steps.autograd_steps``: the vanilla gradient step by step, by
  hand and by autograd.

The bundle for the dashboard is ``explainers.load_model("lenet_digits")`` (``explainers/models/digits.py``).
"""

from .data import GALLERY_SEED, DigitSample, DigitSet, GalleryItem, gallery, make_digits, sample, to_tensor
from .model import LeNet5, LeNet5RGB, load_lenet

__all__ = [
    "GALLERY_SEED",
    "DigitSample",
    "DigitSet",
    "GalleryItem",
    "LeNet5",
    "LeNet5RGB",
    "gallery",
    "load_lenet",
    "make_digits",
    "sample",
    "to_tensor",
]
