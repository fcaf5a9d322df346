"""Process-wide caches bounded by bytes, not entries: one big upload must not be able to fill the server.

``st.cache_data`` bounds a cache by its number of entries only, and a 7000×7000 upload decoded is 147 MB: 64 such
entries are 9 GB. Whatever the dashboard keeps for every session (decoded images, encoded pictures, explanations)
goes through :class:`ByteLRU`, which drops the least recently used entries once their bytes pass a budget.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import io
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

import numpy as np
from PIL import Image


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (macOS, musl, Windows): nothing to call
        return None


_TRIM = _malloc_trim()


def return_freed_memory() -> None:
    """Hand the memory a big decode freed back to the system (glibc's malloc_trim; a no-op elsewhere).

    Decoding a 7000×7000 upload allocates and frees about 300 MB in Pillow's 16 MB blocks; glibc keeps such freed
    blocks in the arena of the script thread that used them, so without this the server's resident memory grows by
    100 MB or more per big upload although nothing holds the pixels any more (measured: four uploads decoded in
    four threads, +580 MB resident; after malloc_trim, back to the start)."""
    if _TRIM is not None:
        _TRIM(0)


def nbytes(value: Any) -> int:
    """The bytes a value holds in its arrays, images and byte strings (containers and dataclasses summed); small
    scalars and strings count as nothing, which is what they are beside a map or a picture."""
    seen: set[int] = set()

    def walk(item: Any) -> int:
        if id(item) in seen:
            return 0
        seen.add(id(item))
        if isinstance(item, np.ndarray):
            return int(item.nbytes)
        if isinstance(item, (bytes, bytearray, memoryview)):
            return memoryview(item).nbytes
        if isinstance(item, io.BytesIO):  # an upload (Streamlit's UploadedFile)
            with item.getbuffer() as buffer:
                return buffer.nbytes
        if isinstance(item, Image.Image):
            return item.width * item.height * len(item.getbands())
        if hasattr(item, "element_size") and hasattr(item, "nelement"):  # a torch tensor, without importing torch
            return int(item.element_size() * item.nelement())
        if isinstance(item, dict):
            return sum(walk(v) for v in item.values())
        if isinstance(item, (list, tuple, set, frozenset)):
            return sum(walk(v) for v in item)
        fields = getattr(item, "__dataclass_fields__", None)
        if fields:
            return sum(walk(getattr(item, name, None)) for name in fields)
        return 0

    return walk(value)


class ByteLRU:
    """A thread-safe LRU of at most ``max_bytes`` (as :func:`nbytes` counts them, or ``size``); a value larger than
    the whole budget is returned but not kept."""

    def __init__(self, max_bytes: int, size: Callable[[Any], int] = nbytes):
        self.max_bytes = max_bytes
        self._size = size
        self._entries: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._lock = threading.Lock()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._entries

    def get(self, key: Hashable) -> Any | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            self._entries.move_to_end(key)
            return entry[0]

    def put(self, key: Hashable, value: Any) -> None:
        size = self._size(value)
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self.bytes -= old[1]
            if size > self.max_bytes:
                return
            self._entries[key] = (value, size)
            self.bytes += size
            while self.bytes > self.max_bytes:
                _, (_, dropped) = self._entries.popitem(last=False)
                self.bytes -= dropped

    def get_or_compute(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        """The cached value of ``key``, or ``compute()`` kept (two callers at once may both compute it: the values
        this cache holds are pure functions of the key)."""
        value = self.get(key)
        if value is None:
            value = compute()
            self.put(key, value)
        return value

    def drop(self, keep: Callable[[Hashable], bool]) -> None:
        """Forget every entry whose key ``keep`` refuses."""
        with self._lock:
            for key in [k for k in self._entries if not keep(k)]:
                self.bytes -= self._entries.pop(key)[1]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.bytes = 0
