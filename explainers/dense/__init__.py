"""Dense predictions: explain one detected box or one segmented region instead of one image-level class.

A detector (torchvision's convention: a list of dicts with ``boxes``, ``labels`` and ``scores`` per image) or a
segmenter (a dict with ``out`` [N, classes, H, W], or that tensor itself) is wrapped, together with the targets a
user picked, in :class:`DenseScores`: a module whose output is ``[N, T]``, one score per target. To every method,
sanity check and faithfulness curve it is a classifier with T classes, so all of them work on it unchanged.

- :mod:`.outputs` reads the two output conventions (and says what came instead of them);
- :mod:`.targets` the targets (a detected box, a region of a class) and the scoring module;

The model with its preprocessing, its predictions on an image and the scored bundle the explainers run on are in
:mod:`explainers.models.dense`.
"""

from .outputs import DETECTION, KINDS, SEGMENTATION, Detection, detections_of, output_kind, segmentation_logits
from .targets import BoxTarget, DenseScores, RegionTarget

__all__ = [
    "DETECTION",
    "KINDS",
    "SEGMENTATION",
    "BoxTarget",
    "DenseScores",
    "Detection",
    "RegionTarget",
    "detections_of",
    "output_kind",
    "segmentation_logits",
]
