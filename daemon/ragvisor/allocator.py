"""The C allocator (glibc): giving freed heap memory back to the OS, and keeping it from being
held in the first place.

ONNX Runtime (with its arena disabled, as we run it) allocates and frees large activation
buffers through malloc on every batch. glibc keeps freed blocks in its arenas, so after a sync
the daemon's RSS stays at the batch peak (~260 to 320 MB measured) although little is in use;
`malloc_trim(0)` returns it (~180 MB after). On a 4 GB box that difference is the margin the
chat model needs. Elsewhere (musl, macOS) this is a no-op.

Trimming after a sync is not enough under mixed load. glibc gives each busy thread (the HTTP
thread pool, ONNX Runtime's) an arena of its own, up to 8 per core, and raises its mmap threshold
to the largest block freed so far, so after the first sync the activation buffers come from
those arenas and leave them fragmented. In a 30-minute soak (`bench/soak.py`) the daemon's RSS
climbed in steps, 238 to 261 MB (minute medians), with peaks of 468 MB during syncs. With two
arenas and a fixed 256 KiB mmap threshold (`tune_allocator`) the same load held it at 227 to
229 MB with peaks of 273 MB, at unchanged search latency. The operator's own `MALLOC_ARENA_MAX`,
`MALLOC_MMAP_THRESHOLD_` or `GLIBC_TUNABLES` win over ours.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
from collections.abc import Callable, Mapping

# mallopt(3) parameters, from glibc's <malloc.h>.
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8

ARENA_MAX = 2
"""Arenas for the whole process: one for the event loop, one for every worker thread."""

MMAP_THRESHOLD_BYTES = 256 * 1024
"""Blocks at least this large are mapped and unmapped on their own, never kept in an arena."""


@functools.cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return ctypes.CDLL(name)
    except OSError:
        return None


def _malloc_trim() -> Callable[[int], int] | None:
    libc = _libc()
    return getattr(libc, "malloc_trim", None) if libc is not None else None


def release_free_memory() -> bool:
    """Ask the C allocator to return free heap pages to the OS; True if it could try."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


def tune_allocator(environ: Mapping[str, str] = os.environ) -> dict[str, int]:
    """Cap glibc's arenas and fix its mmap threshold (see the module docstring for why).

    Call it before threads start: arenas already created stay. Settings the operator made
    through glibc's environment variables are left alone. Returns what was set (empty on a
    C library without `mallopt`, or when the operator set both).
    """
    libc = _libc()
    mallopt = getattr(libc, "mallopt", None) if libc is not None else None
    if mallopt is None:
        return {}
    tunables = environ.get("GLIBC_TUNABLES", "")
    wanted = {
        "arena_max": (_M_ARENA_MAX, ARENA_MAX, "MALLOC_ARENA_MAX"),
        "mmap_threshold_bytes": (_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES, "MALLOC_MMAP_THRESHOLD_"),
    }
    applied: dict[str, int] = {}
    for key, (param, value, variable) in wanted.items():
        tunable = "glibc.malloc." + key.removesuffix("_bytes")
        if variable in environ or tunable in tunables:
            continue
        if mallopt(param, value) == 1:
            applied[key] = value
    return applied
