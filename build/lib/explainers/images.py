"""Loading user images safely: anything unusable becomes an InputError that says why and what to do, never a traceback.

``load_image`` returns an 8-bit RGB image. When it had to change what the user sees (first frame of an animation,
high-bit-depth values rescaled, ...) it says so in ``image.info["notice"]``, a short string for the UI to show;
``image.info`` holds nothing else, so ``image.info.get("notice")`` is None when there is nothing to say.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import re
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageFile, ImageOps

from .errors import InputError

# Larger uploads are refused rather than decoded: 50 megapixels is far beyond what a 224 px model needs.
MAX_PIXELS = 50_000_000
# Any size is usable (the model resizes); kept for callers that import it.
MIN_SIDE = 1
# Larger files are refused before decoding, from any source: the one image limit, shared by the API and the UI's
# uploaders (Streamlit's own server.maxUploadSize, in .streamlit/config.toml, is higher: it is sized for model weights).
MAX_IMAGE_MB = 25
MAX_IMAGE_BYTES = MAX_IMAGE_MB * 1024 * 1024  # Streamlit's "MB" is 1024 * 1024 bytes too

# Pillow's format names; MPO (a JPEG with extra preview frames, as cameras write) comes in as JPEG.
ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")
_ACCEPTED = "JPEG, PNG, WebP, BMP, GIF or TIFF"
_DISPLAY = {"WEBP": "WebP"}
_HIGH_DEPTH_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I", "F"}
_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
_CHUNK = 1 << 20  # pixels per step when rescaling, so a 50 MP float image needs no 400 MB float64 copy
_SUGGESTED_RESIZE = "convert in.png -resize 4000x4000 out.png"

Source = str | os.PathLike | bytes | bytearray | memoryview | BinaryIO


def load_image(source: Source, name: str | None = None) -> Image.Image:
    """Decode ``source`` (bytes, a path, or a binary file object) to an 8-bit RGB image.

    Files over MAX_IMAGE_BYTES (25 MB) are refused unread. EXIF rotation is applied and transparency is flattened
    onto white. Animated or multi-page files give their first
    frame; 16-bit and float images are scaled from their own min..max to 0..255. Either way ``image.info["notice"]``
    says so, e.g. "animated GIF: using the first of 12 frames" or "16-bit image scaled from its range 1000..3000 to
    8 bits". Raises InputError, with a message fit for the user, for anything that cannot be used.
    """
    label = _label(source, name)
    data = _read_bytes(source, label)
    if not data:
        raise InputError(f"{label} is empty (0 bytes); expected a {_ACCEPTED} image — choose or upload the file again")
    image = _open_lazily(data, label)
    try:
        if image.width * image.height > MAX_PIXELS:
            raise _too_many_pixels(label, image.width, image.height)
        return _decode(image, label)
    finally:
        image.close()


open_image = load_image  # the earlier name, kept for callers


def image_hash(image: Image.Image) -> str:
    """A short content hash of the decoded pixels: the cache key and the manifest's image id."""
    digest = hashlib.sha256()
    digest.update(f"{image.mode}{image.size}".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()[:16]


def check_image_size(size: int, name: str | None = None) -> None:
    """Raise InputError if a file of ``size`` bytes is over MAX_IMAGE_BYTES: the UI checks an upload's size with
    this before reading it; load_image checks every source with it."""
    if size > MAX_IMAGE_BYTES:
        raise _too_large(f"'{name}'" if name else "the file", size)


def _too_large(label: str, size: int | None = None) -> InputError:
    """The error for a file over the image limit; ``size`` None when reading stopped at the limit."""
    # rounded up, so a file one byte over never reads as "25.0 MB, over the 25 MB limit"
    what = f"is {math.ceil(size * 10 / 1024 / 1024) / 10:.1f} MB, over" if size is not None else "is over"
    return InputError(
        f"{label} {what} the {MAX_IMAGE_MB} MB limit for images; expected a file of at most {MAX_IMAGE_MB} MB — "
        f"downscale it or save it as JPEG, e.g. `{_SUGGESTED_RESIZE}`"
    )


def _label(source: object, name: str | None) -> str:
    if name:
        base = name
    elif isinstance(source, (str, os.PathLike)):
        base = Path(source).name or str(source)
    else:
        file_name = getattr(source, "name", None)  # open() files and web uploads carry one
        base = Path(file_name).name if isinstance(file_name, str) and file_name else ""
    return f"'{base}'" if base else "the file"


def _read_bytes(source: object, label: str) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        size = source.nbytes if isinstance(source, memoryview) else len(source)  # a view counts items, not bytes
        if size > MAX_IMAGE_BYTES:
            raise _too_large(label, size)
        return bytes(source)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        try:
            if path.is_dir():  # checked first: on Windows reading a folder fails as "permission denied"
                raise InputError(f"{path} is a folder, not an image file; pick an image file inside it")
            size = path.stat().st_size  # before reading: a huge file is refused without being held in memory
            if size > MAX_IMAGE_BYTES:
                raise _too_large(label, size)
            data = path.read_bytes()
        except FileNotFoundError:
            raise InputError(f"cannot read {label}: there is no file {path}; check the path and name") from None
        except PermissionError:
            raise InputError(f"cannot read {label}: permission denied for {path}; check its permissions") from None
        except OSError as exc:
            raise InputError(f"cannot read {label} at {path}: {exc.strerror or exc}") from None
        if len(data) > MAX_IMAGE_BYTES:  # it grew after stat(), e.g. a file still being written
            raise _too_large(label, len(data))
        return data
    read = getattr(source, "read", None)
    if not callable(read):
        raise InputError(
            f"expected image bytes, a file path or a binary file object, got {type(source).__name__}; "
            "pass the file's path or its contents"
        )
    try:
        seekable = getattr(source, "seekable", None)
        if callable(seekable) and seekable():
            source.seek(0)  # an upload already read once would otherwise look empty; Pillow seeks to 0 too
        data = _read_limited(read, label)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - any file-like object may fail its own way; all mean "could not read"
        reason = str(exc) or type(exc).__name__
        raise InputError(f"could not read {label}: {reason}; try opening or uploading it again") from None
    return data


def _read_limited(read, label: str) -> bytes:
    """Read a file object to its end, but at most one byte past MAX_IMAGE_BYTES, so a huge or endless stream is
    refused without being held in memory; short reads (raw files, pipes) are read on from."""
    parts: list[bytes] = []
    total = 0
    while total <= MAX_IMAGE_BYTES:
        chunk = read(MAX_IMAGE_BYTES + 1 - total)
        if isinstance(chunk, str):
            raise InputError(f"{label} was opened as text; open it in binary mode ('rb') or pass its path")
        if not isinstance(chunk, (bytes, bytearray, memoryview)):
            raise InputError(f"reading {label} gave {type(chunk).__name__}, expected bytes; pass the file's path "
                             "instead")
        if not chunk:
            return b"".join(parts)
        parts.append(bytes(chunk))
        total += len(parts[-1])
    raise _too_large(label)


def _open_lazily(data: bytes, label: str) -> ImageFile.ImageFile:
    """Identify the format and read the header only: no pixel is decoded here.

    Image.open is not used because its own decompression-bomb check raises before the size can be read (above
    ~179 MP) and warns (above ~89 MP); the plugins' openers are called directly and our lower limit is applied to
    the header size, without touching Pillow's global MAX_IMAGE_PIXELS.
    """
    Image.init()  # registers every plugin; a no-op after the first call
    buffer = io.BytesIO(data)
    damaged: tuple[str, Exception] | None = None
    for fmt in ACCEPTED_FORMATS:
        if fmt not in Image.OPEN:
            continue
        factory, accept = Image.OPEN[fmt]
        verdict = accept(data[:16]) if accept else True
        if isinstance(verdict, str):  # the plugin recognised the file but cannot read it, e.g. WebP not built in
            raise InputError(f"{label} is a {_display(fmt)} image but this server cannot read it ({verdict}); "
                             "convert it to PNG or JPEG")
        if not verdict:
            continue
        if fmt == "WEBP":  # the WebP opener allocates the whole canvas, so check its size before calling it
            size = _webp_size(data)
            if size and size[0] * size[1] > MAX_PIXELS:
                raise _too_many_pixels(label, *size)
        buffer.seek(0)
        try:
            return factory(buffer, "")
        except Image.DecompressionBombError as exc:  # e.g. a GIF frame larger than its declared screen
            raise _too_many_pixels_from(label, exc) from None
        except Exception as exc:  # noqa: BLE001 - a header this plugin cannot parse: try the next format
            damaged = damaged or (fmt, exc)
    if damaged:
        fmt, exc = damaged
        raise InputError(f"{label} looks like a {_display(fmt)} file but its header is damaged or cut short ({exc}); "
                         "re-save or re-export it and try again")
    raise _not_accepted(label, data, buffer)


def _not_accepted(label: str, data: bytes, buffer: io.BytesIO) -> InputError:
    """The error for data none of the accepted formats can open: name what it is, if anything we know."""
    for fmt in Image.ID:
        if fmt in ACCEPTED_FORMATS:
            continue
        factory, accept = Image.OPEN[fmt]
        try:
            verdict = accept(data[:16]) if accept else True
            if not verdict or isinstance(verdict, str):
                continue
            buffer.seek(0)
            found = factory(buffer, "")
        except Exception:  # noqa: BLE001 - only naming the format here; any failure means "not this one"
            continue
        kind = f"{found.format} ({found.format_description})" if found.format_description else found.format
        found.close()
        return InputError(f"{label} is in {kind} format; only {_ACCEPTED} files are accepted — "
                          "convert it to PNG or JPEG first, e.g. in an image editor")
    if data[:5] == b"%PDF-":
        what = "a PDF document"
    elif data[4:8] == b"ftyp" and data[8:12] in (b"heic", b"heix", b"hevc", b"mif1", b"msf1"):
        what = "a HEIC/HEIF photo, which this app cannot read"
    elif _looks_like_text(data):
        what = "an SVG drawing (vector), not a pixel image" if b"<svg" in data[:4096].lower() else "a text file"
    else:
        what = "not in any image format this app knows"
    return InputError(f"{label} is not an image: it is {what}; expected a {_ACCEPTED} file — "
                      "check that you picked the right file, or export it as PNG or JPEG")


def _looks_like_text(data: bytes) -> bool:
    head = data[:4096]
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:  # only a multi-byte character cut at the end is forgiven
            return False
        text = head[: exc.start].decode("utf-8")
    return bool(text) and all(ch.isprintable() or ch in "\t\r\n\f" for ch in text)


def _webp_size(data: bytes) -> tuple[int, int] | None:
    """The canvas size from a WebP header (VP8, VP8L or VP8X chunk), or None if it cannot be read."""
    chunk = data[12:16]
    if chunk == b"VP8 " and len(data) >= 30 and data[23:26] == b"\x9d\x01\x2a":
        return int.from_bytes(data[26:28], "little") & 0x3FFF, int.from_bytes(data[28:30], "little") & 0x3FFF
    if chunk == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X" and len(data) >= 30:
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    return None


def _too_many_pixels(label: str, width: int, height: int) -> InputError:
    return InputError(
        f"{label} is {width}x{height} pixels ({_megapixels(width * height)} megapixels), over the limit of "
        f"{_megapixels(MAX_PIXELS)} megapixels; downscale it below {_megapixels(MAX_PIXELS)} megapixels first, "
        f"e.g. with an image editor or `{_SUGGESTED_RESIZE}`"
    )


def _too_many_pixels_from(label: str, exc: Exception) -> InputError:
    """Pillow's own bomb error, raised inside a plugin: its message carries the pixel count but not the size."""
    match = re.search(r"\((\d+) pixels\)", str(exc))
    count = f"{_megapixels(int(match.group(1)))} megapixels" if match else "too many pixels"
    return InputError(
        f"{label} has {count}, over the limit of {_megapixels(MAX_PIXELS)} megapixels; downscale it below "
        f"{_megapixels(MAX_PIXELS)} megapixels first, e.g. with an image editor or `{_SUGGESTED_RESIZE}`"
    )


def _megapixels(pixels: int) -> str:
    megapixels = pixels / 1_000_000
    return f"{megapixels:,.0f}" if megapixels >= 100 or megapixels == int(megapixels) else f"{megapixels:.1f}"


def _display(fmt: str | None) -> str:
    return _DISPLAY.get(fmt or "", fmt or "image")


def _decode(image: ImageFile.ImageFile, label: str) -> Image.Image:
    fmt = image.format
    notices: list[str] = []
    try:
        frames = _frame_count(image)
        if frames != 1:
            image.seek(0)
            if fmt != "MPO":  # an MPO's extra frames are previews of the same photo: nothing worth saying
                kind, unit = ("multi-page TIFF", "page") if fmt == "TIFF" else (f"animated {_display(fmt)}", "frame")
                used = f"the first of {frames} {unit}s" if frames else f"the first {unit} (the others are unreadable)"
                notices.append(f"{kind}: using {used}")
        image.load()
    except MemoryError:
        raise InputError(f"{label} is too large to decode in the memory available; downscale it, e.g. with "
                         f"`{_SUGGESTED_RESIZE}`") from None
    except Image.DecompressionBombError as exc:
        raise _too_many_pixels_from(label, exc) from None
    except Exception as exc:  # noqa: BLE001 - decoders fail in many ways on bad data; all mean a damaged file
        raise InputError(f"{label} is damaged or truncated ({_display(fmt)} data: {exc}); re-save or re-export it "
                         "from the original and try again") from None
    try:
        ImageOps.exif_transpose(image, in_place=True)  # in place: a copy of a 50 MP image costs a second
    except Exception:  # noqa: BLE001 - malformed EXIF should not cost an otherwise good image
        notices.append("EXIF orientation unreadable: shown as stored")
    try:
        rgb, notice = _to_rgb(image)
    except ValueError:  # Pillow has no conversion for this mode
        raise InputError(f"{label} uses the colour mode {image.mode}, which this app cannot convert; re-save it "
                         "as an 8-bit RGB PNG or JPEG") from None
    if notice:
        notices.append(notice)
    rgb.info = {"notice": "; ".join(notices)} if notices else {}  # file metadata (PNG text too) is not passed on
    return rgb


def _frame_count(image: Image.Image) -> int | None:
    """Frames in the file (1 for still images), or None when counting them failed (damage after the first)."""
    try:
        return int(getattr(image, "n_frames", 1))
    except Exception:  # noqa: BLE001 - the first frame may still be fine; the load that follows will tell
        return None


def _to_rgb(image: Image.Image) -> tuple[Image.Image, str | None]:
    notice = None
    if image.mode in _HIGH_DEPTH_MODES:
        image, notice = _scale_high_depth(image)
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        # flatten transparency onto white, as a viewer would show it
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return image.convert("RGB"), notice


def _scale_high_depth(image: Image.Image) -> tuple[Image.Image, str]:
    """16-bit, 32-bit and float greyscale to 8 bits, linearly from the image's own finite min..max to 0..255.

    Pillow's own conversion clips these to 0..255, which turns most 16-bit images white and float images black.
    NaN and inf pixels are shown as the minimum.
    """
    values = np.asarray(image)
    flat = values.reshape(-1)
    is_float = values.dtype.kind == "f"
    low, high, non_finite = np.inf, -np.inf, 0
    for start in range(0, flat.size, _CHUNK):
        chunk = flat[start:start + _CHUNK]
        if is_float:
            finite = np.isfinite(chunk)
            non_finite += int(chunk.size - np.count_nonzero(finite))
            chunk = chunk[finite]
        if chunk.size:
            low, high = min(low, float(chunk.min())), max(high, float(chunk.max()))
    if low > high:  # every pixel NaN or inf
        low = high = 0.0
    out = np.empty(flat.shape, np.uint8)
    if high > low:
        scale = 255.0 / (high - low)
        for start in range(0, flat.size, _CHUNK):
            chunk = flat[start:start + _CHUNK].astype(np.float64)  # float64: int32 differences stay exact
            if is_float:
                chunk[~np.isfinite(chunk)] = low
            out[start:start + _CHUNK] = np.rint((chunk - low) * scale).clip(0, 255)
    else:
        # one value everywhere: place it on the type's usual scale (0..1 for float, 0..65535 for integers)
        full = 1.0 if is_float else 65535.0
        level = round(low / full * 255) if 0 <= low <= full else 128  # mid-grey when off that scale
        out.fill(level)
    transparent = image.info.get("transparency")
    if isinstance(transparent, int) and not is_float:  # a 16-bit PNG's tRNS key: that value is see-through
        out[flat == transparent] = 255
    if is_float:
        depth = "32-bit float"
    elif image.mode.startswith("I;16") or (0 <= low and high <= 65535):
        depth = "16-bit"
    else:
        depth = "32-bit"
    if high > low:
        notice = f"{depth} image scaled from its range {low:g}..{high:g} to 8 bits"
    else:
        notice = f"{depth} image has one value ({low:g}) everywhere; shown as grey level {level}"
    if non_finite:
        notice += f"; {non_finite} NaN/inf pixels shown as the minimum"
    return Image.fromarray(out.reshape(values.shape)), notice
