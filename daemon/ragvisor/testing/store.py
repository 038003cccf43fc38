"""A fake of the `Store` protocol: documents, chunks and vectors in dictionaries.

It keeps the contract the SQLite store keeps (tests/unit/test_store_contract.py runs against
both): atomic commits that refuse a chunk without a vector, vectors keyed by (text hash,
fingerprint), searches that see every commit at once. Keyword search ranks by how many of the
query's words a chunk holds — enough for tests of what calls a store, not a model of BM25.
"""

from __future__ import annotations

import dataclasses
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ragvisor.core.model import (
    Chunk,
    ChunkRecord,
    DocumentVersion,
    Fingerprint,
    Generations,
    Lease,
    ScoredChunk,
    SourceDocument,
    StoredDocument,
)
from ragvisor.core.protocols import Vector
from ragvisor.errors import StoreError

_WORD = re.compile(r"\w+")


@dataclass(frozen=True, slots=True)
class _Doc:
    source: SourceDocument
    chunker_version: str
    chunks: tuple[Chunk, ...]


class MemoryStore:
    """An in-memory :class:`ragvisor.core.protocols.Store`. Thread-safe; nothing survives
    :meth:`close` (a closed store is empty)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._docs: dict[str, _Doc] = {}
        self._vectors: dict[tuple[str, str], Vector] = {}
        self._token_counts: dict[tuple[str, str], int] = {}  # (text hash, counter) -> tokens
        self.loaded_indexes: list[str] = []  # fingerprints `load_index` was asked for
        self._generations = Generations()
        self._version = 0  # bumped by every commit and delete (kb_version)
        self._lease: tuple[str, float] | None = None  # (holder, expires at by `clock`)
        self.clock: Callable[[], float] = time.monotonic  # a test may put a FakeClock here

    def stored_documents(self) -> dict[str, StoredDocument]:
        """Every stored document by id, with its chunk hashes in position order."""
        with self._lock:
            return {
                doc_id: StoredDocument(
                    doc_id=doc_id,
                    corpus_root=doc.source.corpus_root,
                    path=doc.source.path,
                    content_sha256=doc.source.content_sha256,
                    chunker_version=doc.chunker_version,
                    chunk_hashes=tuple(c.text_sha256 for c in doc.chunks),
                    stamp=doc.source.stamp,
                )
                for doc_id, doc in self._docs.items()
            }

    def hashes_with_vectors(self, fingerprint: Fingerprint) -> set[str]:
        """Text hashes that already have a vector under this fingerprint."""
        with self._lock:
            return {h for h, key in self._vectors if key == fingerprint.key}

    def commit_document(
        self,
        document: SourceDocument,
        chunks: Sequence[Chunk],
        new_vectors: Mapping[str, Vector],
        fingerprint: Fingerprint,
        chunker_version: str,
    ) -> None:
        """All or nothing: a chunk left without a vector raises StoreError and changes nothing."""
        with self._lock:
            have = {h for h, key in self._vectors if key == fingerprint.key} | set(new_vectors)
            missing = {c.text_sha256 for c in chunks} - have
            if missing:
                raise StoreError(
                    f"{document.path}: {len(missing)} chunk(s) have no vector under "
                    f"{fingerprint.key}; refusing a partial commit"
                )
            for text_hash, vector in new_vectors.items():
                self._vectors[(text_hash, fingerprint.key)] = np.asarray(vector, dtype=np.float32)
            ordered = tuple(sorted(chunks, key=lambda c: c.position))
            self._docs[document.doc_id] = _Doc(document, chunker_version, ordered)
            self._version += 1

    def delete_document(self, doc_id: str) -> None:
        """Remove a document and its chunks (vectors stay until :meth:`prune_vectors`)."""
        with self._lock:
            if self._docs.pop(doc_id, None) is not None:
                self._version += 1

    def kb_version(self) -> str:
        """Changes with every committed document and every deletion."""
        with self._lock:
            return str(self._version)

    def prune_vectors(self, *keep: Fingerprint) -> int:
        """Drop vectors of fingerprints not kept and of hashes no chunk uses; returns how many."""
        kept = {f.key for f in keep}
        with self._lock:
            used = {c.text_sha256 for doc in self._docs.values() for c in doc.chunks}
            gone = [k for k in self._vectors if k[1] not in kept or k[0] not in used]
            for key in gone:
                del self._vectors[key]
            return len(gone)

    def token_counts(self, hashes: Sequence[str], counter: str) -> dict[str, int]:
        """Stored counts of these hashes under this counter."""
        with self._lock:
            return {
                h: self._token_counts[(h, counter)]
                for h in hashes
                if (h, counter) in self._token_counts
            }

    def uncounted_texts(self, counter: str, limit: int) -> dict[str, str]:
        """Chunk texts without a count under this counter, one per hash."""
        found: dict[str, str] = {}
        with self._lock:
            for doc in self._docs.values():
                for chunk in doc.chunks:
                    if len(found) >= limit:
                        return found
                    if (chunk.text_sha256, counter) not in self._token_counts:
                        found.setdefault(chunk.text_sha256, chunk.text)
        return found

    def put_token_counts(self, counter: str, counts: Mapping[str, int]) -> None:
        """Store counts (kb_version unchanged: counts are a cache)."""
        with self._lock:
            for text_hash, tokens in counts.items():
                self._token_counts[(text_hash, counter)] = int(tokens)

    def prune_token_counts(self, counter: str) -> int:
        """Drop counts of other counters and of hashes no chunk uses."""
        with self._lock:
            used = {c.text_sha256 for doc in self._docs.values() for c in doc.chunks}
            gone = [k for k in self._token_counts if k[1] != counter or k[0] not in used]
            for key in gone:
                del self._token_counts[key]
            return len(gone)

    def read_document(self, doc_id: str) -> DocumentVersion | None:
        """A stored document with its chunks."""
        with self._lock:
            doc = self._docs.get(doc_id)
            if doc is None:
                return None
            source = dataclasses.replace(doc.source, text="")
            return DocumentVersion(source, doc.chunks, doc.chunker_version)

    def vectors(self, hashes: Sequence[str], fingerprint: Fingerprint) -> dict[str, Vector]:
        """Stored vectors of these hashes under this fingerprint."""
        with self._lock:
            return {
                h: self._vectors[(h, fingerprint.key)]
                for h in hashes
                if (h, fingerprint.key) in self._vectors
            }

    def vector_counts(self) -> dict[str, tuple[int, int]]:
        """Per fingerprint: (dimensions, count)."""
        counts: dict[str, tuple[int, int]] = {}
        with self._lock:
            for (_, key), vector in self._vectors.items():
                counts[key] = (len(vector), counts.get(key, (0, 0))[1] + 1)
        return counts

    def generations(self) -> Generations:
        """The active and the building generation."""
        with self._lock:
            return self._generations

    def set_generations(self, generations: Generations) -> None:
        """Both in one step."""
        with self._lock:
            self._generations = generations

    def take_lease(self, holder: str, ttl_s: float, *, replacing: str | None = None) -> Lease:
        """Take or renew the lease if free, expired, ``holder``'s or ``replacing``'s (by
        `self.clock`)."""
        with self._lock:
            now = self.clock()
            lease = self._lease
            if lease is None or lease[1] <= now or lease[0] in (holder, replacing):
                lease = self._lease = (holder, now + ttl_s)
            return Lease(lease[0], lease[1] - now)

    def release_lease(self, holder: str) -> None:
        """Drop the lease if it is ``holder``'s."""
        with self._lock:
            if self._lease is not None and self._lease[0] == holder:
                self._lease = None

    def read_lease(self) -> Lease | None:
        """The lease as it stands."""
        with self._lock:
            if self._lease is None:
                return None
            return Lease(self._lease[0], self._lease[1] - self.clock())

    def load_index(self, fingerprint: Fingerprint) -> int:
        """Nothing to build: records the call and returns how many chunks have a vector."""
        with self._lock:
            self.loaded_indexes.append(fingerprint.key)
            return len(self._scored_vectors(fingerprint))

    def dense_search(self, query: Vector, k: int, fingerprint: Fingerprint) -> list[ScoredChunk]:
        """Top-k chunks by cosine similarity (vectors are unit length) under this fingerprint."""
        with self._lock:
            scored = [
                ScoredChunk(chunk.chunk_id, float(np.dot(vector, query)))
                for chunk, vector in self._scored_vectors(fingerprint)
            ]
        return sorted(scored, key=lambda s: -s.score)[:k]

    def keyword_search(self, query: str, k: int) -> list[ScoredChunk]:
        """Chunks holding any of the query's words, the most words first; syntax is ignored."""
        words = {w.casefold() for w in _WORD.findall(query)}
        if not words:
            return []
        hits = []
        with self._lock:
            for doc in self._docs.values():
                for chunk in doc.chunks:
                    text = f"{chunk.text} {doc.source.title} {chunk.heading}"
                    found = words & {w.casefold() for w in _WORD.findall(text)}
                    if found:
                        hits.append(ScoredChunk(chunk.chunk_id, float(len(found))))
        return sorted(hits, key=lambda s: -s.score)[:k]

    def get_chunks(self, chunk_ids: Sequence[str]) -> list[ChunkRecord]:
        """Chunks with their document's path and title, in the order asked."""
        with self._lock:
            by_id = {
                chunk.chunk_id: ChunkRecord(
                    chunk_id=chunk.chunk_id,
                    doc_id=chunk.doc_id,
                    corpus_root=doc.source.corpus_root,
                    path=doc.source.path,
                    title=doc.source.title,
                    heading=chunk.heading,
                    position=chunk.position,
                    text=chunk.text,
                    text_sha256=chunk.text_sha256,
                )
                for doc in self._docs.values()
                for chunk in doc.chunks
            }
        return [by_id[cid] for cid in chunk_ids if cid in by_id]

    def stats(self) -> dict[str, int]:
        """Counts of documents, chunks and vectors."""
        with self._lock:
            return {
                "documents": len(self._docs),
                "chunks": sum(len(doc.chunks) for doc in self._docs.values()),
                "vectors": len(self._vectors),
            }

    def close(self) -> None:
        """Forget everything."""
        with self._lock:
            self._docs.clear()
            self._vectors.clear()

    def _scored_vectors(self, fingerprint: Fingerprint) -> list[tuple[Chunk, Vector]]:
        return [
            (chunk, self._vectors[(chunk.text_sha256, fingerprint.key)])
            for doc in self._docs.values()
            for chunk in doc.chunks
            if (chunk.text_sha256, fingerprint.key) in self._vectors
        ]
