"""Loading user images safely: anything unusable becomes an InputError that says why and what to do, never a traceback.

``load_image`` returns an 8-bit RGB image. When it had to change what the user sees (first frame of an animation,
high-bit-depth values rescaled, ...) it says so in ``image.info["notice"]``, a short string for the UI to show;
``image.info`` holds nothing else, so ``image.info.get("notice")`` is None when there is nothing to say.

A path must name a regular file: ``check_regular_file`` and ``read_image_file`` are the checks ``load_image`` makes,
for callers that list or read image paths themselves (a FIFO, /dev/zero or a folder is refused, never read).
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import re
import stat
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageFile, ImageOps, PngImagePlugin

from .errors import InputError

# the file names a folder of images is read by (the batch command's sources, reference-image folders)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")

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
        return _decode(image, label, data)
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


def check_regular_file(path: str | os.PathLike, name: str | None = None) -> os.stat_result:
    """Raise InputError unless ``path`` is a regular file (a symlink is followed; its target must be one) of at most
    MAX_IMAGE_BYTES; return its stat. Nothing is opened: a list reader can check every row with this up front.

    A FIFO, a device (/dev/zero, /dev/tty), a socket or a folder is refused with a message that names what it is.
    """
    label, where = _label(path, name), Path(path)
    status = _stat(label, where)
    _check_status(label, where, status)
    return status


def read_image_file(path: str | os.PathLike, name: str | None = None) -> bytes:
    """The bytes of the image file at ``path``, read only if it is a regular file of at most MAX_IMAGE_BYTES.

    The path is checked before opening (a device is never opened), opened without blocking (a FIFO with no writer
    would otherwise hang the open) and checked again on the open descriptor, so a file swapped for a FIFO or a
    device between the two is refused too; the read stops one byte past the limit whatever the file does.
    """
    return _read_path(Path(path), _label(path, name))


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
        return _read_path(Path(source), label)
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


def _read_path(where: Path, label: str) -> bytes:
    _check_status(label, where, _stat(label, where))
    flags = os.O_RDONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    try:
        descriptor = os.open(where, flags | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise _unreadable(label, where, exc) from None
    with os.fdopen(descriptor, "rb", buffering=0) as handle:
        try:
            _check_status(label, where, os.fstat(descriptor))
            return _read_limited(handle.read, label)
        except OSError as exc:
            raise _unreadable(label, where, exc) from None


def _stat(label: str, path: Path) -> os.stat_result:
    try:
        return os.stat(path)
    except OSError as exc:
        raise _unreadable(label, path, exc) from None


def _check_status(label: str, path: Path, status: os.stat_result) -> None:
    """Refuse anything but a regular file, naming what it is, and a regular file over the size limit, unread."""
    mode = status.st_mode
    if stat.S_ISDIR(mode):
        raise InputError(f"cannot read {label}: {path} is a folder (a directory), not an image file; expected a "
                         f"regular {_ACCEPTED} file — pick an image file inside it")
    if not stat.S_ISREG(mode):
        raise InputError(f"cannot read {label}: {path} is {_file_kind(mode)}, not an image file; expected a regular "
                         f"{_ACCEPTED} file — point to the image file itself")
    if status.st_size > MAX_IMAGE_BYTES:  # before reading: a huge file is refused without being held in memory
        raise _too_large(label, status.st_size)


def _file_kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _unreadable(label: str, path: Path, exc: OSError) -> InputError:
    if isinstance(exc, FileNotFoundError):
        return InputError(f"cannot read {label}: there is no file {path}; check the path and name")
    if isinstance(exc, PermissionError):
        if path.is_dir():  # on Windows opening a folder fails as "permission denied"
            return InputError(f"cannot read {label}: {path} is a folder (a directory), not an image file; expected "
                              f"a regular {_ACCEPTED} file — pick an image file inside it")
        return InputError(f"cannot read {label}: permission denied for {path}; check its permissions")
    return InputError(f"cannot read {label} at {path}: {exc.strerror or exc}")


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
        except ValueError as exc:
            if fmt == "PNG" and ("MAX_TEXT_CHUNK" in str(exc) or "text chunks" in str(exc)):
                raise _png_metadata_too_large(label, data) from None
            damaged = damaged or (fmt, exc)
        except Exception as exc:  # noqa: BLE001 - a header this plugin cannot parse: try the next format
            damaged = damaged or (fmt, exc)
    if damaged:
        fmt, exc = damaged
        raise InputError(f"{label} looks like a {_display(fmt)} file but its header is damaged or cut short ({exc}); "
                         "re-save or re-export it and try again")
    raise _not_accepted(label, data, buffer)


def _png_metadata_too_large(label: str, data: bytes) -> InputError:
    """The error for a PNG whose colour profile or text, decompressed, is over Pillow's per-chunk limit
    (PngImagePlugin.MAX_TEXT_CHUNK, 1 MB) or whose text chunks are over its total (MAX_TEXT_MEMORY, 64 MB)."""
    limit = PngImagePlugin.MAX_TEXT_CHUNK
    kind = _png_oversized_chunk(data, limit)
    if kind == b"iCCP":
        return InputError(
            f"{label} carries a colour profile (PNG iCCP chunk) over the limit of {_bytes(limit)} decompressed; "
            f"expected a profile of at most {_bytes(limit)} — strip the colour profile, e.g. "
            "`convert in.png -strip out.png` or `exiftool -icc_profile= in.png`, and try again"
        )
    if kind:
        what, limit_text = f"a text chunk (PNG {kind.decode()}) over the limit of {_bytes(limit)} decompressed", \
            f"text chunks of at most {_bytes(limit)} each"
    else:
        total = PngImagePlugin.MAX_TEXT_MEMORY
        what, limit_text = f"text chunks over the limit of {_bytes(total)} in all", f"at most {_bytes(total)} of text"
    return InputError(f"{label} carries {what}; expected {limit_text} — strip the metadata, e.g. "
                      "`convert in.png -strip out.png`, and try again")


def _png_oversized_chunk(data: bytes, limit: int) -> bytes | None:
    """The type of the first compressed PNG metadata chunk before the pixels that inflates past ``limit`` bytes."""
    offset = 8
    while offset + 8 <= len(data):
        length, kind = int.from_bytes(data[offset:offset + 4], "big"), data[offset + 4:offset + 8]
        body = data[offset + 8:offset + 8 + length]
        offset += 12 + length
        if kind == b"IDAT":
            return None
        if kind in (b"iCCP", b"zTXt"):  # keyword, NUL, method byte, zlib stream
            stream = body[body.find(b"\0") + 2:]
        elif kind == b"iTXt":  # keyword, NUL, flag, method, language, NUL, translated keyword, NUL, text
            keyword_end = body.find(b"\0")
            if body[keyword_end + 1:keyword_end + 2] != b"\1":
                continue
            stream = body[keyword_end + 3:].split(b"\0", 2)[-1]
        else:
            continue
        inflater = zlib.decompressobj()
        try:
            inflater.decompress(stream, limit)
        except zlib.error:
            continue
        if inflater.unconsumed_tail:
            return kind
    return None


def _bytes(count: int) -> str:
    return f"{count / 1024 / 1024:g} MB ({count:,} bytes)"


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


def _decode(image: ImageFile.ImageFile, label: str, data: bytes) -> Image.Image:
    fmt = image.format
    notices: list[str] = []
    low_bytes = None
    try:
        frames = _frame_count(image)
        if frames != 1:
            image.seek(0)
            if fmt != "MPO":  # an MPO's extra frames are previews of the same photo: nothing worth saying
                kind, unit = ("multi-page TIFF", "page") if fmt == "TIFF" else (f"animated {_display(fmt)}", "frame")
                used = f"the first of {frames} {unit}s" if frames else f"the first {unit} (the others are unreadable)"
                notices.append(f"{kind}: using {used}")
        wide = _wide_colour(image)
        image.load()
        if wide:
            low_bytes = _low_bytes(data, label, wide)
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
        if low_bytes is not None:
            ImageOps.exif_transpose(low_bytes, in_place=True)  # the same file, so the same orientation
    except Exception:  # noqa: BLE001 - malformed EXIF should not cost an otherwise good image
        notices.append("EXIF orientation unreadable: shown as stored")
    try:
        rgb, notice = _to_rgb(image, low_bytes if wide else None, bool(wide))
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


def _to_rgb(image: Image.Image, low_bytes: Image.Image | None = None,
            wide: bool = False) -> tuple[Image.Image, str | None]:
    notice = None
    if image.mode in _HIGH_DEPTH_MODES:
        image, notice = _scale_high_depth(image)
    elif wide:
        image, notice = _scale_wide_colour(image, low_bytes)
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


def _wide_colour(image: ImageFile.ImageFile) -> tuple[str, str] | None:
    """For a 16-bit-per-channel colour image (PNG, TIFF), which Pillow decodes to its high bytes only, the codec and
    the raw mode that gives the low bytes instead, ("", "") when there is none; None for any other image."""
    tiles = getattr(image, "tile", None) or []
    if image.mode not in ("RGB", "RGBA") or not tiles:
        return None
    codecs_and_modes = {(tile.codec_name, tile.args if isinstance(tile.args, str) else tile.args[0]) for tile in tiles}
    if not all(";16" in rawmode for _, rawmode in codecs_and_modes):
        return None
    if len(codecs_and_modes) != 1:
        return ("", "")
    codec, rawmode = codecs_and_modes.pop()
    swapped = _LOW_BYTE_RAWMODES.get(rawmode)
    # the unpacker of the other byte order picks the low bytes; only where the codec hands it the stored bytes
    return (codec, swapped) if swapped and codec in ("zip", "raw") else ("", "")


# Pillow's 16-bit colour unpackers keep the high byte of each sample, so the other byte order's keeps the low one
_LOW_BYTE_RAWMODES = {
    f"{mode};16{order}": f"{mode};16{other}"
    for mode in ("RGB", "RGBA", "RGBX")
    for order, other in (("B", "L"), ("L", "B"))
}


def _low_bytes(data: bytes, label: str, wide: tuple[str, str]) -> Image.Image | None:
    """The same frame decoded a second time, keeping the low byte of each 16-bit sample; None when Pillow cannot."""
    codec, rawmode = wide
    if not rawmode:
        return None
    second = _open_lazily(data, label)
    try:
        second.tile = [tile._replace(args=rawmode if isinstance(tile.args, str) else (rawmode, *tile.args[1:]))
                       for tile in second.tile if tile.codec_name == codec]
        second.load()
        return second.copy() if second.mode in ("RGB", "RGBA") else None
    except Exception:  # noqa: BLE001 - the first decode worked; without the low bytes the high ones still show
        return None
    finally:
        second.close()


def _scale_wide_colour(image: Image.Image, low_bytes: Image.Image | None) -> tuple[Image.Image, str]:
    """16-bit RGB(A) to 8 bits, linearly from the colour samples' own min..max (all channels together, so hues
    keep) to 0..255, as 16-bit grey is. Alpha keeps its high byte: it is a fraction, not a measurement. Fully
    transparent pixels do not count towards the range. Without the low bytes the high bytes are scaled alone."""
    high = np.asarray(image)
    low = np.asarray(low_bytes) if low_bytes is not None and low_bytes.size == image.size else None
    colour_count = 3
    pixels = high.reshape(-1, high.shape[-1])
    lows = low.reshape(-1, low.shape[-1]) if low is not None else None
    has_alpha = high.shape[-1] == 4
    transparent = image.info.get("transparency")  # a 16-bit PNG's tRNS colour key, (r, g, b) in 16 bits
    key = np.array(transparent, np.uint16) if isinstance(transparent, tuple) and len(transparent) == 3 else None

    def samples(start: int) -> np.ndarray:
        values = pixels[start:start + _CHUNK, :colour_count].astype(np.uint16) << 8
        if lows is not None:
            values |= lows[start:start + _CHUNK, :colour_count]
        return values

    def visible(start: int, values: np.ndarray) -> np.ndarray:
        shown = np.ones(len(values), bool)
        if has_alpha:
            shown &= pixels[start:start + _CHUNK, 3] != 0
        if key is not None and lows is not None:
            shown &= ~np.all(values == key, axis=1)
        return shown

    low_value, high_value = np.inf, -np.inf
    for start in range(0, len(pixels), _CHUNK):
        values = samples(start)
        values = values[visible(start, values)]
        if values.size:
            low_value, high_value = min(low_value, float(values.min())), max(high_value, float(values.max()))
    if low_value > high_value:  # nothing visible: any range will do
        low_value = high_value = 0.0
    out = np.empty((len(pixels), 4 if has_alpha or key is not None else 3), np.uint8)
    level = round(low_value / 65535 * 255)
    for start in range(0, len(pixels), _CHUNK):
        values = samples(start)
        block = out[start:start + _CHUNK]
        if high_value > low_value:
            scaled = (values.astype(np.float64) - low_value) * (255.0 / (high_value - low_value))
            block[:, :3] = np.rint(scaled).clip(0, 255)
        else:
            block[:, :3] = level
        if block.shape[1] == 4:
            alpha = pixels[start:start + _CHUNK, 3] if has_alpha else np.full(len(values), 255, np.uint8)
            if key is not None and lows is not None:
                alpha = np.where(np.all(values == key, axis=1), 0, alpha)
            block[:, 3] = alpha
    source = "" if lows is not None else " (from its high bytes only: Pillow could not read the low ones)"
    if high_value > low_value:
        notice = f"16-bit colour image scaled from its range {low_value:g}..{high_value:g} to 8 bits{source}"
    else:
        notice = f"16-bit colour image has one value ({low_value:g}) everywhere; shown as grey level {level}"
    shape = (*high.shape[:2], out.shape[1])
    return Image.fromarray(out.reshape(shape)), notice
