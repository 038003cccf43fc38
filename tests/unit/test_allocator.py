"""Returning freed heap to the OS after a batch peak, and the allocator settings that keep it
from being held in the first place."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import psutil
import pytest

from ragvisor.allocator import ARENA_MAX, MMAP_THRESHOLD_BYTES, release_free_memory

GLIBC = platform.libc_ver()[0] == "glibc"

# Run in a child so that the test process's allocator is not changed: free one 4 MiB block
# (which, untuned, raises glibc's mmap threshold past 3 MiB), then allocate 3 MiB and ask
# mallinfo2 whether it was mapped on its own (hblks) or carved from an arena.
PROBE = """
import ctypes, json, sys
from ragvisor.allocator import tune_allocator
applied = tune_allocator(json.loads(sys.argv[1]))
libc = ctypes.CDLL(None)
class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
        "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
libc.free(libc.malloc(4 << 20))
before = libc.mallinfo2().hblks
block = libc.malloc(3 << 20)
print(json.dumps({"applied": applied, "mapped": libc.mallinfo2().hblks - before}))
libc.free(block)
"""


def probe(environ: dict[str, str]) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(environ)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out)


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


@pytest.mark.skipif(not GLIBC, reason="mallopt and mallinfo2 are glibc's")
def test_after_tuning_large_blocks_are_mapped_on_their_own():
    """Tuned, a 3 MiB block is its own mapping (given back on free) even after a 4 MiB block
    was freed; untuned (the operator's setting wins), glibc keeps it in the arena."""
    tuned = probe({})
    assert tuned == {
        "applied": {"arena_max": ARENA_MAX, "mmap_threshold_bytes": MMAP_THRESHOLD_BYTES},
        "mapped": 1,
    }
    operator = probe({"MALLOC_MMAP_THRESHOLD_": "", "GLIBC_TUNABLES": "glibc.malloc.arena_max=4"})
    assert operator == {"applied": {}, "mapped": 0}


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_the_operators_glibc_settings_are_left_alone():
    """Each of glibc's own variables keeps ours from being set for that parameter only."""
    only_threshold = probe({"MALLOC_ARENA_MAX": "8"})["applied"]
    assert only_threshold == {"mmap_threshold_bytes": MMAP_THRESHOLD_BYTES}
