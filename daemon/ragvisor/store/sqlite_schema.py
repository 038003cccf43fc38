"""The embedded store's schema and how vectors are stored in it.

Layout (schema version 1):

- ``documents``: one row per document with the hash of its bytes and the chunker version;
- ``chunks``: one row per chunk, keyed by the deterministic chunk id;
- ``vectors``: one float32 blob per (chunk text hash, model fingerprint) — identical text is
  embedded once, and a new model simply adds a new generation of rows beside the old one;
- ``chunks_fts``: the keyword index, its rowids equal to the chunks' rowids;
- ``meta``: schema version and ``commit_seq``, bumped by every write transaction that changed a
  row so a reader can tell, with one point lookup, whether its in-memory matrix is behind.
"""

from __future__ import annotations

import numpy as np

from ragvisor.core.protocols import Vector
from ragvisor.store.keyword_query import FTS_TOKENIZER

SCHEMA_VERSION = "1"
DB_FILENAME = "ragvisor.sqlite3"

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS documents (
    doc_id TEXT PRIMARY KEY,
    corpus_root TEXT NOT NULL,
    path TEXT NOT NULL,
    title TEXT NOT NULL,
    content_sha256 TEXT NOT NULL,
    chunker_version TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    stamp TEXT NOT NULL DEFAULT '',
    chunk_hashes TEXT NOT NULL DEFAULT '',
    committed_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS chunks (
    chunk_id TEXT PRIMARY KEY,
    doc_id TEXT NOT NULL REFERENCES documents(doc_id),
    position INTEGER NOT NULL,
    heading TEXT NOT NULL,
    text TEXT NOT NULL,
    text_sha256 TEXT NOT NULL,
    chunker_version TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_by_doc ON chunks(doc_id, position);
CREATE INDEX IF NOT EXISTS chunks_by_hash ON chunks(text_sha256);
CREATE TABLE IF NOT EXISTS vectors (
    text_sha256 TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    dimensions INTEGER NOT NULL,
    vector BLOB NOT NULL,
    PRIMARY KEY (text_sha256, fingerprint)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS token_counts (
    text_sha256 TEXT NOT NULL,
    counter TEXT NOT NULL,
    tokens INTEGER NOT NULL,
    PRIMARY KEY (text_sha256, counter)
) WITHOUT ROWID;
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5(
    text, title, heading, tokenize = '{FTS_TOKENIZER}'
);
"""


def to_blob(vector: Vector) -> bytes:
    """A vector as stored: little-endian float32."""
    return np.ascontiguousarray(vector, dtype="<f4").tobytes()


def from_blob(blob: bytes) -> Vector:
    """A stored vector back as float32."""
    return np.frombuffer(blob, dtype="<f4").astype(np.float32)
