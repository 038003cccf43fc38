"""Content hashes and deterministic identifiers.

One place defines how text becomes a hash and how a chunk gets its id, so the sync planner,
the store and the tests can never disagree about identity.
"""

from __future__ import annotations

import hashlib


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
