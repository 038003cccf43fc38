"""Giving freed heap memory back to the operating system.

ONNX Runtime (with its arena disabled, as we run it) allocates and frees large activation
buffers through malloc on every batch. glibc keeps freed blocks in its arenas, so after a sync
the daemon's RSS stays at the batch peak (~260 to 320 MB measured) although little is in use;
`malloc_trim(0)` returns it (~180 MB after). On a 4 GB box that difference is the margin the
chat model needs. Elsewhere (musl, macOS) this is a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Callable


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim: Callable[[int], int] = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


def release_free_memory() -> bool:
    """Ask the C allocator to return free heap pages to the OS; True if it could try."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
