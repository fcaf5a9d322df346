"""Hardening of load_image against hostile or odd files (issue 9): the size limit on every kind of source, bombs in
every accepted format refused from their header, formats Pillow reads but we do not accept, extreme sizes through
the default model's preprocessing, the server config, and Pillow's global flags. Every input is built here."""

from __future__ import annotations

import io
import os
import re
import stat
import struct
import threading
import time
import tomllib
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from explainers.errors import InputError
from explainers.images import (
    MAX_IMAGE_BYTES,
    MAX_IMAGE_MB,
    check_image_size,
    check_regular_file,
    load_image,
    read_image_file,
)
from explainers.models import CENTER_CROP, RESIZE
from tests.conftest import ROOT
from tests.explainers.test_images import encode, peak_rss_growth, pixels

PILLOW_MAX_PIXELS = Image.MAX_IMAGE_PIXELS  # as Pillow set it at import, before any of our code ran


@pytest.fixture(autouse=True)
def pillow_globals_untouched():
    """After every test here: Pillow's process-wide safety flags are as Pillow set them."""
    yield
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    assert Image.MAX_IMAGE_PIXELS == PILLOW_MAX_PIXELS


class Decoded(BaseException):
    """Raised if pixels are allocated; a BaseException, so load_image's own error handling cannot swallow it."""


@pytest.fixture
def no_decoding(monkeypatch):
    """Make any pixel allocation (ImageFile.load_prepare, which every format's load goes through) raise Decoded."""

    def refuse(self, *args, **kwargs):
        raise Decoded(f"{self.format} {self.size} was decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load_prepare", refuse)


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def padded_png(total: int) -> bytes:
    """A valid 3x2 PNG, red on the left column, followed by zeros up to ``total`` bytes (decoders stop at IEND)."""
    image = Image.new("RGB", (3, 2), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 1, 2))
    data = encode(image, "PNG")
    return data + b"\0" * (total - len(data))


# --- Pillow's global flags -------------------------------------------------------------------------------------------


def test_the_no_decoding_guard_catches_a_normal_decode(no_decoding):
    """The guard the bomb tests rely on would notice a decode: without it they could pass vacuously."""
    with pytest.raises(Decoded):
        load_image(encode(Image.new("RGB", (8, 8)), "PNG"))


ASSIGNMENT = re.compile(r"\b(LOAD_TRUNCATED_IMAGES|MAX_IMAGE_PIXELS)\s*=(?!=)")
VIA_SETATTR = re.compile(r"setattr\([^)]*['\"](LOAD_TRUNCATED_IMAGES|MAX_IMAGE_PIXELS)['\"]")


def test_no_code_in_the_repository_sets_pillows_global_flags():
    skipped = {".venv", ".git", "node_modules", "__pycache__"}
    offenders = []
    for path in ROOT.rglob("*.py"):
        if skipped.intersection(path.relative_to(ROOT).parts):
            continue
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if ASSIGNMENT.search(line) or VIA_SETATTR.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offenders, "Pillow's global flags are set here:\n" + "\n".join(offenders)


def test_the_flag_scan_would_find_an_assignment():
    truncated, pixels_flag = "LOAD_TRUNCATED" + "_IMAGES", "MAX_IMAGE" + "_PIXELS"  # split, so the scan skips this file
    assert ASSIGNMENT.search(f"ImageFile.{truncated} = True")
    assert ASSIGNMENT.search(f"Image.{pixels_flag}=None")
    assert VIA_SETATTR.search(f"monkeypatch.setattr(ImageFile, '{truncated}', True)")
    assert not ASSIGNMENT.search(f"assert Image.{pixels_flag} == before")


# --- correct results --------------------------------------------------------------------------------------------------


def test_exif_orientation_6_turns_an_asymmetric_pattern_clockwise():
    stored = np.zeros((30, 50, 3), np.uint8)  # 50 wide, 30 high as stored
    stored[:8, :8] = (255, 0, 0)  # red at the stored top-left
    stored[:8, -8:] = (0, 255, 0)  # green at the stored top-right
    stored[-8:, :8] = (0, 0, 255)  # blue at the stored bottom-left; the bottom-right stays black
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    data = encode(Image.fromarray(stored), "JPEG", exif=exif, quality=95)
    assert Image.open(io.BytesIO(data)).getexif()[0x0112] == 6
    shown = pixels(load_image(data))
    assert shown.shape == (50, 30, 3)  # 30 wide and 50 high once turned
    # clockwise: stored top-left -> top-right, top-right -> bottom-right, bottom-left -> top-left
    for (row, col), colour in (((3, -4), (255, 0, 0)), ((-4, -4), (0, 255, 0)), ((3, 3), (0, 0, 255)),
                               ((-4, 3), (0, 0, 0))):
        assert np.abs(shown[row, col] - colour).max() < 40, (row, col, shown[row, col])


@pytest.mark.parametrize("size", [(1, 1), (10_000, 10), (10, 10_000)])
@pytest.mark.parametrize("preprocessing", [RESIZE, CENTER_CROP])
def test_extreme_sizes_go_through_the_default_models_preprocessing(default_bundle, size, preprocessing):
    colour = (200, 40, 90)
    image = load_image(encode(Image.new("RGB", size, colour), "PNG"))
    assert image.size == size
    inputs = default_bundle.preprocess(image, preprocessing)
    side = default_bundle.input_size
    assert inputs.shape == (1, 3, side, side) and torch.isfinite(inputs).all()
    seen = default_bundle.denormalize(inputs.cpu())[0] * 255  # back to pixels: the one colour everywhere
    expected = torch.tensor(colour, dtype=torch.float32).view(3, 1, 1)
    assert (seen - expected).abs().max() < 1.0


# --- the size limit, on every kind of source --------------------------------------------------------------------------


def test_the_limit_is_25_mb():
    assert MAX_IMAGE_MB == 25 and MAX_IMAGE_BYTES == 25 * 1024 * 1024
    check_image_size(MAX_IMAGE_BYTES, "fits.png")
    with pytest.raises(InputError) as caught:
        check_image_size(MAX_IMAGE_BYTES + 1, "big.png")
    assert str(caught.value).startswith("'big.png' is 25.1 MB, over the 25 MB limit for images; expected a file of "
                                        "at most 25 MB")


def test_a_file_at_the_limit_loads_and_one_byte_more_is_refused_unread(tmp_path, monkeypatch):
    at_limit = padded_png(MAX_IMAGE_BYTES)
    shown = pixels(load_image(at_limit))
    assert shown.shape == (2, 3, 3) and tuple(shown[0, 0]) == (255, 0, 0) and tuple(shown[1, 2]) == (0, 0, 255)
    over = padded_png(MAX_IMAGE_BYTES + 1)  # the same picture, decodable, but one byte too many
    path = tmp_path / "over.png"
    path.write_bytes(over)
    for source in (over, bytearray(over), memoryview(over), io.BytesIO(over)):
        with pytest.raises(InputError, match=r"over the 25 MB limit for images"):
            load_image(source, name="over.png")

    def unopened(*args, **kwargs):
        raise AssertionError("the oversized file was opened")

    monkeypatch.setattr(os, "open", unopened)  # a path is measured with stat(), never opened
    with pytest.raises(InputError, match=r"^'over.png' is 25.1 MB, over the 25 MB limit"):
        load_image(path)


def test_an_endless_stream_is_refused_after_reading_just_past_the_limit():
    class Endless(io.RawIOBase):
        """Zeros forever, in short reads of at most 1 MB."""

        served = 0

        def readable(self):
            return True

        def read(self, size=-1):
            count = 1 << 20 if size is None or size < 0 else min(size, 1 << 20)
            self.served += count
            return b"\0" * count

    stream = Endless()
    with pytest.raises(InputError, match=r"^the file is over the 25 MB limit for images"):
        load_image(stream)
    assert stream.served == MAX_IMAGE_BYTES + 1


def test_a_stream_of_short_reads_is_read_to_its_end():
    rng = np.random.default_rng(3)
    original = Image.fromarray(rng.integers(0, 256, (40, 30, 3), dtype=np.uint8))
    data = encode(original, "PNG")

    class Trickle(io.RawIOBase):
        """``data`` in reads of at most 100 bytes, as a pipe or a socket may give it."""

        offset = 0

        def readable(self):
            return True

        def read(self, size=-1):
            size = 100 if size is None or size < 0 else min(size, 100)
            chunk = data[self.offset:self.offset + size]
            self.offset += len(chunk)
            return chunk

    assert len(data) > 1000
    assert np.array_equal(np.asarray(load_image(Trickle())), np.asarray(original))


def test_zero_bytes_from_any_source_is_refused(tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    for source in (b"", io.BytesIO(b""), path):
        with pytest.raises(InputError, match=r"is empty \(0 bytes\); expected a JPEG, PNG, WebP, BMP, GIF or TIFF"):
            load_image(source)


# --- special files: only regular files are read ------------------------------------------------------------------

needs_posix = pytest.mark.skipif(not hasattr(os, "mkfifo") or not Path("/dev/zero").exists(),
                                 reason="needs POSIX FIFOs and /dev/zero")


def within(seconds: float, action):
    """Run ``action`` in a thread and return what it raised; fail, not hang, if it takes longer than ``seconds``."""
    outcome: list[BaseException | None] = []

    def run():
        try:
            action()
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the test to check
            outcome.append(exc)

    worker = threading.Thread(target=run, daemon=True)  # daemon: a regression that blocks cannot hold pytest up
    worker.start()
    worker.join(seconds)
    assert outcome, f"still running after {seconds} s: it blocked"
    return outcome[0]


@needs_posix
def test_dev_zero_is_refused_as_a_device_without_reading_it(monkeypatch):
    served = []
    real_read = os.read

    def counting_read(descriptor, size):
        served.append(size)
        return real_read(descriptor, size)

    monkeypatch.setattr(os, "read", counting_read)
    started = time.perf_counter()
    error = within(10, lambda: load_image("/dev/zero"))
    assert isinstance(error, InputError) and time.perf_counter() - started < 2
    assert str(error) == ("cannot read 'zero': /dev/zero is a character device, not an image file; expected a "
                          "regular JPEG, PNG, WebP, BMP, GIF or TIFF file — point to the image file itself")
    assert not served


@needs_posix
def test_a_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)  # no writer: a blocking open would wait forever
    for action in (lambda: load_image(fifo), lambda: read_image_file(fifo), lambda: check_regular_file(fifo)):
        error = within(10, action)
        assert isinstance(error, InputError)
        assert re.search(r"pipe.png is a FIFO \(named pipe\), not an image file; expected a regular", str(error))


@needs_posix
def test_a_symlink_to_dev_zero_and_a_folder_are_refused(tmp_path):
    link = tmp_path / "photo.jpg"
    link.symlink_to("/dev/zero")
    error = within(10, lambda: load_image(link))
    assert isinstance(error, InputError) and "is a character device, not an image file" in str(error)
    (tmp_path / "album").mkdir()
    with pytest.raises(InputError, match=r"^cannot read 'album': .*album is a folder \(a directory\), not an image"):
        load_image(tmp_path / "album")
    good = tmp_path / "good.png"
    good.write_bytes(padded_png(200))
    (tmp_path / "link.png").symlink_to(good)  # a symlink to a regular file is fine
    assert pixels(load_image(tmp_path / "link.png")).shape == (2, 3, 3)
    assert stat.S_ISREG(check_regular_file(tmp_path / "link.png").st_mode)


@needs_posix
def test_a_file_swapped_for_a_fifo_after_the_check_is_refused_on_the_open_descriptor(tmp_path, monkeypatch):
    path = tmp_path / "swapped.png"
    path.write_bytes(padded_png(200))
    real_open = os.open

    def swap_then_open(target, flags, *args, **kwargs):
        if Path(target) == path:  # between the path check and the open, the file becomes a FIFO
            path.unlink()
            os.mkfifo(path)
        return real_open(target, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", swap_then_open)
    error = within(10, lambda: load_image(path))
    assert isinstance(error, InputError) and "swapped.png is a FIFO (named pipe)" in str(error)


def test_read_image_file_gives_the_bytes_of_a_regular_file_and_refuses_an_oversized_one_unopened(tmp_path):
    path = tmp_path / "small.png"
    path.write_bytes(padded_png(300))
    assert read_image_file(path) == padded_png(300)
    with open(tmp_path / "big.png", "wb") as handle:
        handle.truncate(MAX_IMAGE_BYTES + 1)  # sparse: no 25 MB written
    with pytest.raises(InputError, match=r"^'big.png' is 25.1 MB, over the 25 MB limit"):
        check_regular_file(tmp_path / "big.png")
    with pytest.raises(InputError, match=r"^'row 3' is 25.1 MB"):
        read_image_file(tmp_path / "big.png", name="row 3")
    with pytest.raises(InputError, match=r"cannot read 'nope.png': there is no file"):
        check_regular_file(tmp_path / "nope.png")


# --- PNG metadata over Pillow's limits --------------------------------------------------------------------------------


def png_with_chunk(chunk: bytes) -> bytes:
    """A valid 3x2 PNG with ``chunk`` placed before its pixels."""
    data = encode(Image.new("RGB", (3, 2), (0, 0, 255)), "PNG")
    end_of_header = 8 + 25  # signature, then IHDR: length, type, 13 bytes, CRC
    return data[:end_of_header] + chunk + data[end_of_header:]


def test_an_oversized_colour_profile_names_the_chunk_the_limit_and_the_fix():
    profile = zlib.compress(b"\0" * (2 * 1024 * 1024), 9)  # 2 MB inflated, a few KB stored
    data = png_with_chunk(png_chunk(b"iCCP", b"big profile\0\0" + profile))
    with pytest.raises(InputError) as caught:
        load_image(data, name="profiled.png")
    assert str(caught.value) == (
        "'profiled.png' carries a colour profile (PNG iCCP chunk) over the limit of 1 MB (1,048,576 bytes) "
        "decompressed; expected a profile of at most 1 MB (1,048,576 bytes) — strip the colour profile, e.g. "
        "`convert in.png -strip out.png` or `exiftool -icc_profile= in.png`, and try again")
    small = png_with_chunk(png_chunk(b"iCCP", b"small\0\0" + zlib.compress(b"\0" * 1000)))
    assert pixels(load_image(small)).shape == (2, 3, 3)  # a profile within the limit is fine


def test_oversized_compressed_text_names_its_chunk():
    text = zlib.compress(b"a" * (2 * 1024 * 1024), 9)
    for chunk in (png_chunk(b"zTXt", b"Comment\0\0" + text), png_chunk(b"iTXt", b"Comment\0\1\0en\0\0" + text)):
        kind = chunk[4:8].decode()
        with pytest.raises(InputError, match=rf"^'x.png' carries a text chunk \(PNG {kind}\) over the limit of 1 MB"):
            load_image(png_with_chunk(chunk), name="x.png")


# --- decompression bombs, refused from the header ---------------------------------------------------------------------


def test_a_few_kb_40000x40000_png_is_refused_from_its_header_with_flat_memory(no_decoding):
    # 40000x40000 RGB would be 4.8 GB decoded; the IDAT is a tiny stream of zeros that covers a few rows only
    header = struct.pack(">IIBBBBB", 40_000, 40_000, 8, 2, 0, 0, 0)
    data = (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", zlib.compress(b"\0" * 100_000, 9))
            + png_chunk(b"IEND", b""))
    assert len(data) < 4096
    with pytest.raises(Image.DecompressionBombError):  # a bomb by Pillow's own measure, too
        Image.open(io.BytesIO(data))
    caught = []

    def attempt():
        with pytest.raises(InputError) as info:
            load_image(data, name="bomb.png")
        caught.append(str(info.value))

    growth = peak_rss_growth(attempt)
    assert growth < 50_000_000, f"memory grew by {growth / 1e6:.0f} MB"
    # the size message, not "damaged": the header alone decided, the short pixel stream was never read
    assert caught[0].startswith("'bomb.png' is 40000x40000 pixels (1,600 megapixels), over the limit of 50 megapixels")


def _bmp_bomb() -> bytes:
    data = bytearray(encode(Image.new("RGB", (8, 8)), "BMP"))
    data[18:26] = struct.pack("<ii", 40_000, 40_000)  # BITMAPINFOHEADER width, height
    return bytes(data)


def _jpeg_bomb() -> bytes:
    data = bytearray(encode(Image.new("RGB", (8, 8)), "JPEG"))
    sof = data.index(b"\xff\xc0")  # baseline frame header: length, precision, then height and width
    data[sof + 5:sof + 9] = struct.pack(">HH", 40_000, 40_000)
    return bytes(data)


def _gif_bomb() -> bytes:
    data = bytearray(encode(Image.new("P", (8, 8)), "GIF"))
    data[6:10] = struct.pack("<HH", 65_535, 65_535)  # logical screen
    frame = data.index(b"\x2c")  # the image descriptor: left, top, width, height
    data[frame + 5:frame + 9] = struct.pack("<HH", 65_535, 65_535)
    return bytes(data)


def _tiff_bomb() -> bytes:
    data = bytearray(encode(Image.new("RGB", (8, 8)), "TIFF"))
    assert data[:2] == b"II"
    ifd = struct.unpack("<I", data[4:8])[0]
    for entry in range(struct.unpack("<H", data[ifd:ifd + 2])[0]):
        at = ifd + 2 + 12 * entry
        if struct.unpack("<H", data[at:at + 2])[0] in (256, 257):  # ImageWidth, ImageLength: as LONG 40000
            data[at + 2:at + 12] = struct.pack("<HII", 4, 1, 40_000)
    return bytes(data)


def _webp_bomb() -> bytes:
    header = b"VP8X" + struct.pack("<I", 10) + b"\0" * 4 + (16_000 - 1).to_bytes(3, "little") * 2
    return b"RIFF" + struct.pack("<I", 4 + len(header)) + b"WEBP" + header


@pytest.mark.parametrize(("fmt", "build", "size"), [
    ("BMP", _bmp_bomb, "40000x40000"), ("JPEG", _jpeg_bomb, "40000x40000"), ("GIF", _gif_bomb, "65535x65535"),
    ("TIFF", _tiff_bomb, "40000x40000"), ("WEBP", _webp_bomb, "16000x16000"),
])
def test_bombs_in_every_accepted_format_are_refused_from_the_header(no_decoding, fmt, build, size):
    data = build()
    assert len(data) < 4096
    with pytest.raises(InputError) as caught:
        load_image(data, name=f"bomb.{fmt.lower()}")
    assert str(caught.value).startswith(f"'bomb.{fmt.lower()}' is {size} pixels ("), str(caught.value)
    assert "over the limit of 50 megapixels" in str(caught.value)


# --- formats Pillow can read but we do not accept ---------------------------------------------------------------------


def _psd() -> bytes:
    """A 4x2 RGB Photoshop file, written by hand (Pillow reads PSD but cannot write it)."""
    header = b"8BPS" + struct.pack(">H", 1) + b"\0" * 6 + struct.pack(">HIIHH", 3, 2, 4, 8, 3)
    sections = struct.pack(">III", 0, 0, 0)  # no colour-mode data, image resources, layers
    return header + sections + struct.pack(">H", 0) + bytes([10] * 8 + [20] * 8 + [30] * 8)


@pytest.mark.parametrize(("fmt", "build"), [
    ("PSD", _psd), ("TGA", lambda: encode(Image.new("RGB", (4, 4), (1, 2, 3)), "TGA")),
    ("ICO", lambda: encode(Image.new("RGBA", (16, 16), (1, 2, 3, 255)), "ICO")),
])
def test_readable_formats_outside_the_whitelist_are_refused(fmt, build):
    data = build()
    assert Image.open(io.BytesIO(data)).format == fmt  # Pillow itself would open it
    with pytest.raises(InputError) as caught:
        load_image(data, name=f"picture.{fmt.lower()}")
    message = str(caught.value)
    assert message.startswith(f"'picture.{fmt.lower()}' is in {fmt} (")
    assert "only JPEG, PNG, WebP, BMP, GIF or TIFF files are accepted" in message


# --- server configuration ---------------------------------------------------------------------------------------------


def test_server_config_keeps_xsrf_on_and_sizes_uploads_for_weights():
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["server"]["enableXsrfProtection"] is True
    assert config["server"]["maxUploadSize"] == 200  # MB, for model weights
    assert config["server"].get("enableCORS", True) is True  # never turned off: see the README's proxy notes
    assert MAX_IMAGE_MB < config["server"]["maxUploadSize"]  # images have their own, lower limit
    assert config["client"]["toolbarMode"] == "viewer" and config["browser"]["gatherUsageStats"] is False
