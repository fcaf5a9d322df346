"""A big upload costs the server a display-sized copy, not the full image (issue 17): the selection holds an image
at most DISPLAY_MAX_SIDE on its longest side, session state holds a few MB, the image's id is still the hash of the
full-resolution pixels, and every cache the dashboard fills for all sessions is bounded by bytes."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from explainers import ExplanationRecord
from explainers.images import image_hash, load_image
from tests.ui.helpers import selection, start
from ui import state
from ui.caches import ByteLRU, nbytes
from ui.explanations import ExplanationCache
from ui.sidebar import DECODED_MAX_BYTES, DISPLAY_MAX_SIDE, decoded_images

SIDE = 7000
SESSION_BUDGET_MB = 32  # a display copy (7.7 MB), the model's input and view, the upload's own bytes


@pytest.fixture(scope="module")
def big_jpeg() -> bytes:
    """A 7000×7000 photo-like JPEG (147 MB decoded, about 1 MB on disk), made here and never committed."""
    rng = np.random.default_rng(17)
    image = Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).resize((SIDE, SIDE),
                                                                                     Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def _upload(data: bytes):
    at = start()
    at.segmented_control(key=state.IMAGE_SOURCE).set_value("Upload").run()
    at.file_uploader(key=state.UPLOADS).set_value(("big.jpg", data, "image/jpeg")).run()
    assert not at.exception, "a traceback reached the page"
    return at


def test_a_huge_upload_keeps_no_full_resolution_copy(big_jpeg):
    at = _upload(big_jpeg)
    chosen = selection(at)
    assert chosen.image_name == "big.jpg"
    assert max(chosen.image.size) == DISPLAY_MAX_SIDE  # shrunk right after decoding, aspect kept
    assert chosen.image_size == (SIDE, SIDE)  # the manifest still names the file's own size
    held = {key: nbytes(value) for key, value in at.session_state.items()}
    assert sum(held.values()) < SESSION_BUDGET_MB * 2**20, sorted(held.items(), key=lambda kv: -kv[1])[:3]
    assert decoded_images().bytes <= DECODED_MAX_BYTES


def test_the_same_file_is_the_same_image_in_every_session(big_jpeg):
    """The id is the hash of the full-resolution pixels (the backend's image_hash, as a batch run or manifest gives
    it), so a second session uploading the file finds the first one's explanations under the same key."""
    first, second = selection(_upload(big_jpeg)), selection(_upload(big_jpeg))
    assert first.image_hash == second.image_hash == image_hash(load_image(big_jpeg))


def _record(megabytes: int) -> ExplanationRecord:
    attribution = np.zeros((megabytes * 2**20 // 4,), np.float32)
    return ExplanationRecord(attribution, (0,), np.zeros(10, np.float32), "vanilla", {}, 0.0)


def test_the_explanation_cache_evicts_the_oldest_records_past_its_byte_budget():
    cache = ExplanationCache(max_bytes=3 * 2**20 + 4096)
    for key in range(5):
        cache.put((key,), _record(1))
    assert cache.bytes <= cache.max_bytes
    assert [cache.get((key,)) is not None for key in range(5)] == [False, False, True, True, True]
    cache.get((2,))  # used: now the newest
    cache.put((5,), _record(1))
    assert cache.get((2,)) is not None and cache.get((3,)) is None
    cache.put(("huge",), _record(4))  # larger than the whole budget: returned by compute, never kept
    assert cache.get(("huge",)) is None and cache.bytes <= cache.max_bytes


def test_a_byte_lru_counts_images_arrays_and_bytes():
    lru = ByteLRU(max_bytes=1000)
    lru.put("image", Image.new("RGB", (10, 10)))  # 300 bytes
    lru.put("array", np.zeros(100, np.float32))  # 400 bytes
    lru.put("bytes", b"x" * 400)  # 400 more: the image, oldest, goes
    assert lru.bytes == 800 and "image" not in lru and "array" in lru and "bytes" in lru
