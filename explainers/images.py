"""Opening user images safely: anything unreadable becomes an ImageError with the reason, never a traceback."""

from __future__ import annotations

import hashlib
import io
import warnings
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError

# Larger uploads are refused rather than decoded: 50 megapixels is far beyond what a 224 px model needs.
MAX_PIXELS = 50_000_000
MIN_SIDE = 8


def open_image(source: str | Path | bytes | io.IOBase, name: str | None = None) -> Image.Image:
    """Decode ``source`` (path, bytes or file object) to an RGB PIL image, EXIF rotation applied."""
    label = name or (str(source) if isinstance(source, (str, Path)) else "the upload")
    try:
        if isinstance(source, (str, Path)):
            path = Path(source)
            if not path.is_file():
                raise ImageError(f"cannot read image {label}: no such file")
            data = path.read_bytes()
        elif isinstance(source, (bytes, bytearray)):
            data = bytes(source)
        else:
            data = source.read()
    except OSError as exc:
        raise ImageError(f"cannot read image {label}: {exc.strerror or exc}") from None
    if not data:
        raise ImageError(f"{label} is empty (0 bytes); upload a PNG, JPEG, WebP, BMP or GIF image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            if image.width * image.height > MAX_PIXELS:
                raise ImageError(
                    f"{label} is {image.width}x{image.height} pixels; the limit is {MAX_PIXELS // 1_000_000} "
                    "megapixels — downscale it first"
                )
            image.load()
            image = ImageOps.exif_transpose(image)
    except ImageError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(
            f"{label} is not an image this app can read; upload a PNG, JPEG, WebP, BMP or GIF file"
        ) from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageError(f"{label} is damaged or truncated ({exc}); try re-saving it as PNG or JPEG") from None
    if min(image.size) < MIN_SIDE:
        raise ImageError(f"{label} is only {image.width}x{image.height} pixels; it needs at least {MIN_SIDE} per side")
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        # flatten transparency onto white, as a viewer would show it
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")


def image_hash(image: Image.Image) -> str:
    """A short content hash of the decoded pixels: the cache key and the manifest's image id."""
    digest = hashlib.sha256()
    digest.update(f"{image.mode}{image.size}".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()[:16]
