"""load_image: every accepted kind of file decodes to the right RGB pixels; everything else is an InputError that says
what to do. Every input is built here, in memory or in tmp_path."""

from __future__ import annotations

import hashlib
import io
import os
import struct
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from explainers.errors import InputError
from explainers.images import MAX_PIXELS, MIN_SIDE, image_hash, load_image, open_image

ACCEPTED_NAMES = ("JPEG", "PNG", "WebP", "BMP", "GIF", "TIFF")
PILLOW_MAX_PIXELS = Image.MAX_IMAGE_PIXELS  # as Pillow set it at import


@pytest.fixture(autouse=True)
def pillow_globals_untouched():
    """After every load in this file, good or refused: Pillow's process-wide safety flags are unchanged."""
    yield
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    assert Image.MAX_IMAGE_PIXELS == PILLOW_MAX_PIXELS


def encode(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def pixels(image: Image.Image) -> np.ndarray:
    assert image.mode == "RGB"
    return np.asarray(image).astype(int)


def png_bytes(width: int, height: int, bit_depth: int, colour_type: int, row: bytes) -> bytes:
    """A PNG whose every row is ``row`` (filter byte included), compressed as a stream: no full image in memory."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    packer = zlib.compressobj(9)
    block_rows = max(1, 4_000_000 // len(row))
    block = row * block_rows
    parts = [packer.compress(block) for _ in range(height // block_rows)]
    parts += [packer.compress(row * (height % block_rows)), packer.flush()]
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b"")


def rss() -> int:
    try:
        import psutil
    except ImportError:  # not a project requirement: Linux's /proc gives the same number
        statm = Path("/proc/self/statm")
        if not statm.exists():
            pytest.skip("needs psutil or /proc to measure memory")
        return int(statm.read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    return psutil.Process().memory_info().rss


def peak_rss_growth(action) -> int:
    """Bytes the resident set grew at its highest while ``action`` ran, sampled every millisecond: a decode that
    allocates and frees its buffer before returning still shows."""
    base = peak = rss()
    done = threading.Event()

    def sample():
        nonlocal peak
        while not done.is_set():
            peak = max(peak, rss())
            time.sleep(0.001)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        action()
    finally:
        done.set()
        sampler.join()
    return max(peak, rss()) - base


# --- the API ----------------------------------------------------------------------------------------------------------


def test_open_image_is_the_same_function_and_constants_are_kept():
    assert open_image is load_image
    assert MAX_PIXELS == 50_000_000
    assert MIN_SIDE == 1


def test_image_hash_is_unchanged():
    image = Image.new("RGB", (3, 2), (10, 20, 30))
    expected = hashlib.sha256(b"RGB(3, 2)" + image.tobytes()).hexdigest()[:16]
    assert image_hash(image) == expected


def test_every_kind_of_source_gives_the_same_pixels(tmp_path):
    rng = np.random.default_rng(0)
    original = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8))
    data = encode(original, "PNG")
    path = tmp_path / "noise.png"
    path.write_bytes(data)
    with path.open("rb") as file:
        file.read(5)  # a file object already read from is read from its start
        from_file = load_image(file)
    results = [load_image(data), load_image(bytearray(data)), load_image(path), load_image(str(path)), from_file,
               load_image(io.BytesIO(data))]
    for result in results:
        assert result.mode == "RGB" and result.size == (16, 12)
        assert np.array_equal(np.asarray(result), np.asarray(original))
        assert result.info.get("notice") is None


def test_pillow_globals_are_left_alone(tmp_path):
    before = (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES)
    load_image(encode(Image.new("RGB", (4, 4)), "PNG"))
    with pytest.raises(InputError):
        load_image(png_bytes(12_000, 12_000, 1, 0, b"\0" * 1501))
    assert (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES) == before


# --- correct results --------------------------------------------------------------------------------------------------


def test_exif_orientation_6_is_applied():
    stored = np.zeros((20, 40, 3), np.uint8)  # 40 wide, 20 high as stored
    stored[:6, :6] = (255, 0, 0)  # red mark at the stored top-left
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    loaded = load_image(encode(Image.fromarray(stored), "JPEG", exif=exif, quality=95))
    assert loaded.size == (20, 40)  # transposed: 20 wide, 40 high
    shown = pixels(loaded)
    assert shown[2, 17, 0] > 200 and shown[2, 17, 1] < 60  # the mark is now at the top-right
    assert shown[2, 2].max() < 60 and shown[37, 2].max() < 60


def test_cmyk_converts_to_the_matching_rgb():
    cmyk = Image.new("CMYK", (4, 4), (0, 255, 255, 0))  # no cyan, full magenta and yellow: red
    cmyk.paste((255, 0, 255, 0), (0, 0, 2, 4))  # full cyan and yellow: green
    shown = pixels(load_image(encode(cmyk, "JPEG", quality=100)))
    assert np.abs(shown[1, 3] - (255, 0, 0)).max() < 30
    assert np.abs(shown[1, 0] - (0, 255, 0)).max() < 30


def test_greyscale_l_becomes_equal_rgb_channels():
    grey = Image.fromarray(np.arange(256, dtype=np.uint8).reshape(16, 16))
    shown = pixels(load_image(encode(grey, "PNG")))
    assert np.array_equal(shown[..., 0], np.arange(256).reshape(16, 16))
    assert np.array_equal(shown[..., 0], shown[..., 1]) and np.array_equal(shown[..., 1], shown[..., 2])


def test_la_transparent_pixels_become_white():
    la = Image.new("LA", (4, 2), (40, 255))
    la.putpixel((0, 0), (40, 0))
    shown = pixels(load_image(encode(la, "PNG")))
    assert tuple(shown[0, 0]) == (255, 255, 255)
    assert tuple(shown[1, 3]) == (40, 40, 40)


def test_one_bit_black_and_white_stay_black_and_white():
    bits = np.zeros((8, 8), bool)
    bits[::2, ::2] = True
    shown = pixels(load_image(encode(Image.fromarray(bits).convert("1"), "PNG")))
    assert set(np.unique(shown)) == {0, 255}
    assert tuple(shown[0, 0]) == (255, 255, 255) and tuple(shown[0, 1]) == (0, 0, 0)


def test_palette_colours_are_kept():
    palette = Image.new("P", (4, 2))
    palette.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    palette.putpixel((3, 1), 1)
    shown = pixels(load_image(encode(palette, "GIF")))
    assert tuple(shown[0, 0]) == (255, 0, 0) and tuple(shown[1, 3]) == (0, 0, 255)


def test_palette_transparent_index_becomes_white():
    palette = Image.new("P", (4, 2), 1)
    palette.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)
    palette.putpixel((0, 0), 0)
    for fmt in ("PNG", "GIF"):
        shown = pixels(load_image(encode(palette, fmt, transparency=0)))
        assert tuple(shown[0, 0]) == (255, 255, 255), fmt  # index 0 is black but see-through
        assert tuple(shown[1, 3]) == (0, 0, 255), fmt


def test_rgba_is_composited_on_white():
    rgba = Image.new("RGBA", (4, 2), (255, 0, 0, 255))
    rgba.putpixel((0, 0), (0, 0, 0, 0))
    rgba.putpixel((1, 0), (255, 0, 0, 128))
    shown = pixels(load_image(encode(rgba, "PNG")))
    assert tuple(shown[0, 0]) == (255, 255, 255)
    assert tuple(shown[0, 1]) == pytest.approx((255, 127, 127), abs=2)  # half red over white
    assert tuple(shown[1, 3]) == (255, 0, 0)


def test_rgb_is_returned_as_is():
    rgb = Image.fromarray(np.random.default_rng(1).integers(0, 256, (5, 7, 3), dtype=np.uint8))
    for fmt in ("PNG", "BMP", "TIFF"):
        loaded = load_image(encode(rgb, fmt))
        assert np.array_equal(np.asarray(loaded), np.asarray(rgb)), fmt


def test_16_bit_ramp_png_spans_0_to_255():
    ramp = np.tile(np.linspace(0, 65535, 300).round().astype(np.uint16), (3, 1))
    data = encode(Image.fromarray(ramp), "PNG")
    assert Image.open(io.BytesIO(data)).mode == "I;16"  # the mode of the issue: Pillow's own convert gives white
    loaded = load_image(data)
    row = pixels(loaded)[1, :, 0]
    assert row[0] == 0 and row[-1] == 255
    # linear from its own range: v * 255 / 65535, rounded
    np.testing.assert_array_equal(row, np.rint(np.linspace(0, 65535, 300).round() * 255 / 65535).astype(int))
    assert (pixels(loaded)[..., 0] == pixels(loaded)[..., 2]).all()  # still grey
    assert np.all(np.diff(row) >= 0)
    assert len(np.unique(row)) > 200
    assert loaded.info["notice"] == "16-bit image scaled from its range 0..65535 to 8 bits"


def test_16_bit_png_is_scaled_from_its_own_range():
    values = np.tile(np.linspace(1000, 3000, 64).round().astype(np.uint16), (4, 1))
    loaded = load_image(encode(Image.fromarray(values), "PNG"))
    row = pixels(loaded)[0, :, 0]
    assert row[0] <= 2 and row[-1] >= 253 and np.all(np.diff(row) >= 0)
    assert loaded.info["notice"] == "16-bit image scaled from its range 1000..3000 to 8 bits"


def test_big_endian_16_bit_and_32_bit_integer_tiffs_are_scaled():
    values = np.tile(np.linspace(500, 60000, 64).round(), (4, 1))
    big_endian = Image.frombytes("I;16B", (64, 4), values.astype(">u2").tobytes())
    int32 = Image.fromarray((values * 1000).astype(np.int32))  # mode I, beyond 16 bits
    for source, depth in ((big_endian, "16-bit"), (int32, "32-bit")):
        loaded = load_image(encode(source, "TIFF"))
        row = pixels(loaded)[2, :, 0]
        assert row[0] <= 2 and row[-1] >= 253 and np.all(np.diff(row) >= 0), source.mode
        assert loaded.info["notice"].startswith(f"{depth} image scaled from its range")


def test_float_tiff_in_0_1_is_not_black_and_in_0_1000_is_not_clipped():
    ramp = np.tile(np.linspace(0, 1, 64, dtype=np.float32), (4, 1))
    # both span their own range 0..max, so both give the same 8-bit ramp: round(255 * i / 63)
    expected = np.rint(np.arange(64) * 255 / 63).astype(int)
    for values, top in ((ramp, "1"), (ramp * 1000, "1000")):
        data = encode(Image.fromarray(values), "TIFF")
        assert Image.open(io.BytesIO(data)).mode == "F"
        loaded = load_image(data)
        row = pixels(loaded)[0, :, 0]
        np.testing.assert_array_equal(row, expected)  # 0 stays black, the top is white, nothing clipped
        assert row[32] == 130  # linear: the middle stays mid-grey
        assert loaded.info["notice"] == f"32-bit float image scaled from its range 0..{top} to 8 bits"


def test_float_nan_and_inf_are_shown_as_the_minimum():
    values = np.tile(np.linspace(2, 4, 16, dtype=np.float32), (2, 1))
    values[0, 0], values[0, 1], values[0, 2] = np.nan, np.inf, -np.inf
    loaded = load_image(encode(Image.fromarray(values), "TIFF"))
    row = pixels(loaded)[0, :, 0]
    assert list(row[:3]) == [0, 0, 0]
    assert row[-1] == 255 and pixels(loaded)[1, 0, 0] == 0  # the finite range 2..4 still spans 0..255
    assert "3 NaN/inf pixels shown as the minimum" in loaded.info["notice"]
    all_nan = load_image(encode(Image.fromarray(np.full((2, 2), np.nan, np.float32)), "TIFF"))
    assert pixels(all_nan).max() == 0


def test_constant_high_depth_images_do_not_divide_by_zero():
    cases = (
        (np.full((3, 3), 32768, np.uint16), "PNG", 128),
        (np.full((3, 3), 0, np.uint16), "PNG", 0),
        (np.full((3, 3), 0.5, np.float32), "TIFF", 128),
        (np.full((3, 3), 5000.0, np.float32), "TIFF", 128),  # off the 0..1 scale: mid-grey
    )
    for values, fmt, level in cases:
        loaded = load_image(encode(Image.fromarray(values), fmt))
        assert np.all(pixels(loaded) == level), (values.dtype, values[0, 0])
        assert "has one value" in loaded.info["notice"]


def test_16_bit_rgb_and_rgba_pngs_keep_their_colours():
    # 0..65535 is the full range: scaling from it keeps the colours Pillow's own high-byte decode gives
    rgb = np.zeros((2, 3, 3), ">u2")
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 65535, 32768, 0
    loaded = load_image(png_bytes(3, 2, 16, 2, b"\0" + rgb[0].tobytes()))
    assert tuple(pixels(loaded)[1, 1]) == (255, 128, 0)
    assert loaded.info["notice"] == "16-bit colour image scaled from its range 0..65535 to 8 bits"
    rgba = np.zeros((2, 3, 4), ">u2")
    rgba[..., 2] = 65535
    rgba[0, 1:, 3] = 65535  # the first pixel of each row stays fully transparent
    shown = pixels(load_image(png_bytes(3, 2, 16, 6, b"\0" + rgba[0].tobytes())))
    assert tuple(shown[0, 0]) == (255, 255, 255) and tuple(shown[0, 2]) == (0, 0, 255)


def sub_filtered_png(values: np.ndarray, colour_type: int, extra: bytes = b"") -> bytes:
    """A 16-bit PNG of ``values`` (height, width, channels), every row Sub-filtered, so decoding it needs the right
    bytes per pixel; ``extra`` chunks go before the pixels."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    height, width, channels = values.shape
    step = 2 * channels
    rows = []
    for row in values.astype(">u2"):
        raw = np.frombuffer(row.tobytes(), np.uint8).astype(int)
        raw[step:] = (raw[step:] - raw[:-step]) % 256  # filtered from the right, so each uses the unfiltered left
        rows.append(b"\1" + raw.astype(np.uint8).tobytes())
    header = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + extra + chunk(b"IDAT", zlib.compress(b"".join(rows)))
            + chunk(b"IEND", b""))


def scaled_reference(values: np.ndarray) -> np.ndarray:
    low, high = int(values.min()), int(values.max())
    return np.rint((values.astype(np.float64) - low) * 255 / (high - low)).astype(int)


def test_16_bit_rgb_png_in_1000_to_3000_is_scaled_from_its_range_not_nearly_black():
    values = np.random.default_rng(5).integers(1000, 3001, (6, 9, 3)).astype(np.uint16)
    values[0, 0], values[-1, -1] = (1000, 1000, 1000), (3000, 3000, 3000)
    data = sub_filtered_png(values, 2)
    assert Image.open(io.BytesIO(data)).mode == "RGB"  # Pillow itself keeps the high byte: 3..11 of 255
    loaded = load_image(data)
    shown = pixels(loaded)
    assert shown.min() == 0 and shown.max() == 255
    np.testing.assert_array_equal(shown, scaled_reference(values))  # the low bytes count: exact, not 8 levels
    assert loaded.info["notice"] == "16-bit colour image scaled from its range 1000..3000 to 8 bits"


def test_16_bit_rgba_png_ignores_transparent_pixels_for_its_range():
    values = np.full((2, 4, 4), 65535, np.uint16)
    values[..., :3] = np.array([[1000, 2000, 3000, 1500], [3000, 2500, 1000, 2000]])[..., None]
    values[0, 3] = (0, 0, 0, 0)  # fully transparent black: shown white, and not the minimum of the range
    loaded = load_image(sub_filtered_png(values, 6))
    shown = pixels(loaded)
    assert tuple(shown[0, 0]) == (0, 0, 0) and tuple(shown[0, 2]) == (255, 255, 255)
    assert tuple(shown[0, 3]) == (255, 255, 255) and tuple(shown[0, 1]) == (128, 128, 128)
    assert loaded.info["notice"] == "16-bit colour image scaled from its range 1000..3000 to 8 bits"


def test_16_bit_rgb_png_colour_key_is_transparent():
    values = np.array([[[1000, 1000, 1000], [2000, 2500, 3000], [1234, 2345, 3456]]], np.uint16)
    key = struct.pack(">HHH", 1234, 2345, 3456)
    tRNS = struct.pack(">I", 6) + b"tRNS" + key + struct.pack(">I", zlib.crc32(b"tRNS" + key))
    shown = pixels(load_image(sub_filtered_png(values, 2, tRNS)))
    assert tuple(shown[0, 2]) == (255, 255, 255)  # the key colour is see-through: white
    assert tuple(shown[0, 0]) == (0, 0, 0) and tuple(shown[0, 1]) == (128, 191, 255)  # range 1000..3000 without it


def test_16_bit_rgb_tiff_is_scaled_from_its_range():
    values = np.random.default_rng(6).integers(1000, 3001, (5, 7, 3)).astype(np.uint16)
    values[0, 0], values[-1, -1] = (1000, 1000, 1000), (3000, 3000, 3000)
    pixel_data = values.astype("<u2").tobytes()
    entries = [(256, 3, 1, 7), (257, 3, 1, 5), (258, 3, 3, 8 + 2 + 10 * 12 + 4), (259, 3, 1, 1), (262, 3, 1, 2),
               (273, 4, 1, 8 + 2 + 10 * 12 + 4 + 6), (277, 3, 1, 3), (278, 3, 1, 5), (279, 4, 1, len(pixel_data)),
               (284, 3, 1, 1)]
    # a value under 65536 packed as a little-endian LONG is also the SHORT it stands for, padded
    ifd = struct.pack("<H", len(entries)) + b"".join(
        struct.pack("<HHII", tag, kind, count, value) for tag, kind, count, value in entries) + struct.pack("<I", 0)
    data = b"II*\0" + struct.pack("<I", 8) + ifd + struct.pack("<HHH", 16, 16, 16) + pixel_data
    assert Image.open(io.BytesIO(data)).mode == "RGB"
    loaded = load_image(data)
    np.testing.assert_array_equal(pixels(loaded), scaled_reference(values))
    assert loaded.info["notice"] == "16-bit colour image scaled from its range 1000..3000 to 8 bits"


def test_animated_gif_uses_its_first_frame_and_says_so():
    frames = [Image.new("RGB", (8, 8), colour) for colour in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    loaded = load_image(data)
    assert tuple(pixels(loaded)[4, 4]) == (255, 0, 0)
    assert loaded.info["notice"] == "animated GIF: using the first of 3 frames"


def test_animated_webp_and_multi_page_tiff_use_their_first_frame():
    frames = [Image.new("RGB", (8, 8), colour) for colour in ((0, 0, 255), (255, 255, 0))]
    webp = load_image(encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], lossless=True))
    assert tuple(pixels(webp)[4, 4]) == (0, 0, 255)
    assert webp.info["notice"] == "animated WebP: using the first of 2 frames"
    tiff = load_image(encode(frames[0], "TIFF", save_all=True, append_images=frames[1:]))
    assert tuple(pixels(tiff)[4, 4]) == (0, 0, 255)
    assert tiff.info["notice"] == "multi-page TIFF: using the first of 2 pages"


def test_tiny_and_extreme_aspect_images_load():
    one = load_image(encode(Image.new("RGB", (1, 1), (9, 8, 7)), "PNG"))
    assert one.size == (1, 1) and tuple(pixels(one)[0, 0]) == (9, 8, 7)
    strip = np.zeros((10, 10_000, 3), np.uint8)
    strip[:, -1] = 255
    wide = load_image(encode(Image.fromarray(strip), "PNG"))
    assert wide.size == (10_000, 10)
    assert tuple(pixels(wide)[5, -1]) == (255, 255, 255) and tuple(pixels(wide)[5, 0]) == (0, 0, 0)


def test_file_metadata_does_not_pose_as_a_notice():
    from PIL.PngImagePlugin import PngInfo

    meta = PngInfo()
    meta.add_text("notice", "written by whoever made the file")
    assert load_image(encode(Image.new("RGB", (2, 2)), "PNG", pnginfo=meta)).info == {}


# --- refused, with a message that says what to do ---------------------------------------------------------------------


def test_truncated_jpeg_is_refused_as_damaged():
    noise = np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    data = encode(Image.fromarray(noise), "JPEG", quality=90)
    with pytest.raises(InputError) as caught:
        load_image(data[: int(len(data) * 0.6)], name="holiday.jpg")
    message = str(caught.value)
    assert message.startswith("'holiday.jpg' is damaged or truncated")
    assert "re-save or re-export" in message


def test_zero_byte_file_is_refused(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(InputError, match=r"'empty.png' is empty \(0 bytes\)"):
        load_image(path)


def test_text_file_renamed_png_is_not_an_image(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("shopping list:\n- milk\n- bread\n")
    with pytest.raises(InputError) as caught:
        load_image(path)
    message = str(caught.value)
    assert message.startswith("'notes.png' is not an image: it is a text file")
    assert all(name in message for name in ACCEPTED_NAMES)


@pytest.mark.parametrize(("fmt", "mode"), [("ICO", "RGBA"), ("PPM", "RGB"), ("PPM", "L"), ("PCX", "RGB")])
def test_formats_outside_the_whitelist_are_named_and_refused(fmt, mode):
    data = encode(Image.new(mode, (16, 16), 100 if mode == "L" else (1, 2, 3)), fmt)
    with pytest.raises(InputError) as caught:
        load_image(data, name=f"file.{fmt.lower()}")
    message = str(caught.value)
    assert message.startswith(f"'file.{fmt.lower()}' is in {fmt} (")
    assert "only JPEG, PNG, WebP, BMP, GIF or TIFF files are accepted" in message


def test_decompression_bomb_is_refused_from_its_header_with_flat_memory():
    data = png_bytes(40_000, 40_000, 1, 0, b"\0" * 5001)  # 1.6 gigapixels of black in a few hundred KB
    assert len(data) < 1_000_000
    caught = []

    def attempt():
        with pytest.raises(InputError) as info:
            load_image(data, name="bomb.png")
        caught.append(str(info.value))

    growth = peak_rss_growth(attempt)
    assert growth < 50_000_000, f"memory grew by {growth / 1e6:.0f} MB: the image was decoded"
    assert caught[0].startswith("'bomb.png' is 40000x40000 pixels (1,600 megapixels), over the limit of 50 megapixels")
    assert "downscale it below 50 megapixels" in caught[0] and "-resize" in caught[0]


@pytest.mark.filterwarnings("error")  # Pillow's DecompressionBombWarning (above ~89 MP) must not escape either
def test_144_megapixel_png_gets_the_pixel_limit_message():
    with pytest.raises(InputError) as caught:
        load_image(png_bytes(12_000, 12_000, 1, 0, b"\0" * 1501), name="scan.png")
    assert str(caught.value) == (
        "'scan.png' is 12000x12000 pixels (144 megapixels), over the limit of 50 megapixels; downscale it below "
        "50 megapixels first, e.g. with an image editor or `convert in.png -resize 4000x4000 out.png`"
    )


def test_webp_bomb_is_refused_before_its_canvas_is_allocated():
    header = b"VP8X" + struct.pack("<I", 10) + b"\0" * 4 + (16383 - 1).to_bytes(3, "little") * 2
    data = b"RIFF" + struct.pack("<I", 4 + len(header)) + b"WEBP" + header
    caught = []

    def attempt():
        with pytest.raises(InputError) as info:
            load_image(data)
        caught.append(str(info.value))

    assert peak_rss_growth(attempt) < 50_000_000
    assert caught[0].startswith("the file is 16383x16383 pixels (268 megapixels), over the limit of 50 megapixels")


def test_missing_path_directory_and_unreadable_file_are_refused(tmp_path, monkeypatch):
    with pytest.raises(InputError, match=r"cannot read 'nope.png': there is no file .*nope.png"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(InputError, match=r"is a folder \(a directory\), not an image file"):
        load_image(tmp_path)
    path = tmp_path / "locked.png"
    path.write_bytes(encode(Image.new("RGB", (2, 2)), "PNG"))

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(os, "open", denied)  # chmod 000 does not stop root, who runs some CI
    with pytest.raises(InputError, match=r"cannot read 'locked.png': permission denied"):
        load_image(str(path))


def test_file_object_read_errors_become_input_errors():
    class Broken(io.RawIOBase):
        name = "/uploads/photo.jpg"

        def readable(self):
            return True

        def read(self, size=-1):
            raise OSError("connection reset by peer")

    with pytest.raises(InputError, match=r"could not read 'photo.jpg': connection reset by peer"):
        load_image(Broken())
    closed = io.BytesIO(b"data")
    closed.close()
    with pytest.raises(InputError, match=r"could not read the file"):
        load_image(closed)
    with pytest.raises(InputError, match=r"opened as text"):
        load_image(io.StringIO("text"))
    with pytest.raises(InputError, match=r"expected image bytes, a file path or a binary file object, got int"):
        load_image(42)


def test_damaged_png_header_is_refused():
    data = encode(Image.new("RGB", (8, 8)), "PNG")
    with pytest.raises(InputError, match=r"looks like a PNG file but its header is damaged"):
        load_image(data[:20], name="cut.png")

