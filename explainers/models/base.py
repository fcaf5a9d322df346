"""ModelBundle: a model together with everything needed to feed it and read its output."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..core import non_finite
from ..errors import ModelLoadError, ParameterError
from ..layers import LayerInfo, resolve_layer
from ..render import place

RESIZE = "resize"  # the whole image squeezed to the input size: the heatmap covers everything uploaded
CENTER_CROP = "center_crop"  # the model's canonical eval transform: resize the short side, crop the centre
PREPROCESSING = (RESIZE, CENTER_CROP)
LARGE_RESIZE = 16_000_000  # pixels: above this, a centre crop resamples only the box it keeps


@dataclass
class ModelBundle:
    """A classifier in eval mode plus its preprocessing, class names and layer catalogue.

    ``normalize`` maps a pixel tensor in [0, 1] to the model's input space; ``denormalize`` is its inverse.
    ``layers`` is the layer catalogue (spatial layers in order of completion, see ``explainers.layers``),
    measured once at the input size; ``default_layer`` is the one CAM methods use unless told otherwise.
    """

    name: str
    model: nn.Module
    categories: list[str]
    input_size: int
    normalize: Callable[[torch.Tensor], torch.Tensor]
    denormalize: Callable[[torch.Tensor], torch.Tensor]
    resize_size: int | None = None  # short side before the centre crop; None means input_size / 0.875
    interpolation: Image.Resampling = Image.Resampling.BILINEAR
    layers: list[LayerInfo] = field(default_factory=list)
    default_layer: str | None = None
    description: str = ""
    notes: list[str] = field(default_factory=list)  # what the UI should tell about this model (user models)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _check(self, preprocessing: str) -> None:
        if preprocessing not in PREPROCESSING:
            raise ParameterError(f"preprocessing must be one of {PREPROCESSING}, got {preprocessing!r}")

    def crop_plan(self, size: tuple[int, int]) -> tuple[tuple[int, int], int, int]:
        """Centre crop as torchvision does it: (resized width, height), crop left, crop top in resized pixels.

        The short side goes to ``resize_size`` and the long side to ``int(resize_size * long / short)``;
        the crop's corner is ``round((resized - input_size) / 2)``.
        """
        width, height = size
        resize = self.resize_size or round(self.input_size / 0.875)
        if width <= height:
            resized = (resize, max(1, int(resize * height / width)))
        else:
            resized = (max(1, int(resize * width / height)), resize)
        left = int(round((resized[0] - self.input_size) / 2.0))
        top = int(round((resized[1] - self.input_size) / 2.0))
        return resized, left, top

    def crop_geometry(self, size: tuple[int, int], preprocessing: str = RESIZE) -> tuple[int, int, int, int]:
        """The box (left, top, right, bottom) of the original image that the model sees, in original pixels.

        With a centre crop the box can reach past the image when ``resize_size < input_size``.
        """
        self._check(preprocessing)
        width, height = size
        if preprocessing == RESIZE:
            return (0, 0, width, height)
        (rw, rh), left, top = self.crop_plan(size)
        sx, sy = rw / width, rh / height
        return (
            round(left / sx),
            round(top / sy),
            round((left + self.input_size) / sx),
            round((top + self.input_size) / sy),
        )

    def model_view(self, image: Image.Image, preprocessing: str = RESIZE) -> Image.Image:
        """The exact RGB picture the model sees, input_size x input_size, before normalisation."""
        self._check(preprocessing)
        image = image.convert("RGB")
        if preprocessing == CENTER_CROP:
            resized_size, left, top = self.crop_plan(image.size)
            if resized_size[0] * resized_size[1] > LARGE_RESIZE:
                # a very long, thin image (10000×10) would be resized to 256000×256 only to keep 224×224 of it:
                # resample just the source box the crop covers (the same geometry, a few pixels' filter support
                # at the box's edges aside)
                sx, sy = resized_size[0] / image.width, resized_size[1] / image.height
                box = (left / sx, top / sy, (left + self.input_size) / sx, (top + self.input_size) / sy)
                return image.resize((self.input_size, self.input_size), self.interpolation, box=box)
            resized = image.resize(resized_size, self.interpolation)
            return resized.crop((left, top, left + self.input_size, top + self.input_size))
        return image.resize((self.input_size, self.input_size), self.interpolation)

    def preprocess(self, image: Image.Image, preprocessing: str = RESIZE) -> torch.Tensor:
        """PIL image -> normalised tensor [1, 3, H, W] on the model's device."""
        view = self.model_view(image, preprocessing)
        pixels = torch.from_numpy(np.asarray(view, dtype=np.float32) / 255.0).permute(2, 0, 1).unsqueeze(0)
        return self.normalize(pixels).to(self.device)

    def to_original(
        self, heatmap: np.ndarray, size: tuple[int, int], preprocessing: str = RESIZE, fill: float = np.nan
    ) -> np.ndarray:
        """Map a [H, W] heatmap in model-input space back onto the original image (width, height) = size.

        With whole-image resizing the map is stretched back to the original aspect. With a centre crop it is
        placed over the cropped region; the rest, which the model never saw, gets ``fill``.
        """
        if np.ndim(heatmap) != 2:
            raise ParameterError(f"expected a [H, W] heatmap, got shape {list(np.shape(heatmap))}")
        return place(heatmap, size, self.crop_geometry(size, preprocessing), fill)

    def resolve_layer(self, layer: str | nn.Module | None = None) -> tuple[str, nn.Module]:
        """``(name, module)`` of a layer by name or module; None gives ``default_layer``. See ``resolve_layer``."""
        if layer is None and self.default_layer is not None:
            layer = self.default_layer
        return resolve_layer(self.model, layer, self.layers or None)

    def layer_entry(self, layer: str | None = None) -> LayerInfo | None:
        """The catalogue entry (name, shape, layout, channels) of ``layer`` (None: the default), if measured."""
        name = layer or self.default_layer
        return next((info for info in self.layers if info.name == name), None)


def affine_normalizer(mean: Sequence[float], std: Sequence[float]):
    """(normalize, denormalize) for x -> (x - mean) / std per channel, x in [0, 1]."""
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)

    def normalize(pixels: torch.Tensor) -> torch.Tensor:
        return (pixels - mean_t.to(pixels.device)) / std_t.to(pixels.device)

    def denormalize(inputs: torch.Tensor) -> torch.Tensor:
        return inputs * std_t.to(inputs.device) + mean_t.to(inputs.device)

    return normalize, denormalize


def check_dry_run(logits: torch.Tensor, what: str) -> None:
    """Every loader's last check of a model's dry run (a batch of plain images): its logits must be finite, else
    ModelLoadError naming the rows and classes. A NaN weight loads without a word and would rank first."""
    found = non_finite(logits)
    if found is not None:
        raise ModelLoadError(f"expected finite logits from the {what} on a plain image, but its output is {found}; "
                             "its weights hold NaN or infinite values (damaged or diverged in training?) or overflow")
