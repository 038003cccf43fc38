"""Returning freed heap to the OS after a batch peak."""

from __future__ import annotations

import platform

import psutil
import pytest

from ragvisor.memory import release_free_memory


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc-only")
def test_release_free_memory_returns_freed_heap_to_the_os():
    """After freeing many small blocks, release_free_memory lowers RSS by most of them."""
    process = psutil.Process()
    release_free_memory()
    baseline = process.memory_info().rss
    blocks = [bytearray(4000) for _ in range(50_000)]  # ~200 MB in small (heap, not mmap) blocks
    keep = blocks[-1]
    del blocks
    held = process.memory_info().rss
    assert release_free_memory() is True
    released = process.memory_info().rss
    assert held - baseline > 150 * 2**20
    assert held - released > 100 * 2**20
    assert len(keep) == 4000
