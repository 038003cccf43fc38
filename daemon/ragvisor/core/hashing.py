"""Content hashes and deterministic identifiers.

One place defines how text becomes a hash and how a chunk gets its id, so the sync planner,
the store and the tests can never disagree about identity.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of raw bytes."""
    return hashlib.sha256(data).hexdigest()


def sha256_text(text: str) -> str:
    """Hex SHA-256 of text encoded as UTF-8 — the hash every chunk carries."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def document_id(corpus_root: str, relative_path: str) -> str:
    """Stable id of a document: its corpus root plus its path inside that root.

    A rename therefore yields a new document; its chunks' text hashes still match, so the
    stored vectors are reused and nothing is re-embedded.
    """
    return sha256_text(f"{corpus_root}\0{relative_path}")[:24]


def chunk_id(doc_id: str, position: int, text_sha256: str) -> str:
    """Deterministic chunk id: document id + position + text hash (the same input, the same id)."""
    return f"{doc_id}:{position:05d}:{text_sha256[:16]}"


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks so a model file never sits in memory twice.

    Remembered per process while the file's size, times and inode stay the same: start-up
    checks the model against its pin and then fingerprints it, and hashing 23 MB twice cost
    ~0.1 s of the time to first search. Raises :class:`OSError` if the file cannot be read.
    """
    info = path.stat()
    return _cached_sha256(
        str(path.resolve()), (info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino)
    )


@functools.lru_cache(maxsize=32)
def _cached_sha256(path: str, stamp: tuple[int, int, int, int]) -> str:
    """The hash itself; `stamp` only keys the cache so a changed file is hashed again."""
    with Path(path).open("rb") as stream:
        return hashlib.file_digest(stream, "sha256").hexdigest()
