"""`ragvisor store copy`: move a knowledge base from one store to another without embedding it
again — say from the embedded SQLite of `make run` into the production Neo4j.

Documents, chunks and vectors are copied document by document through the stores' own atomic
commits, with every vector of every generation the source keeps (the active one and, mid
migration, the one being built), then the generation records. A copy that stops half-way (a
crash, Ctrl-C, Neo4j restarting) is resumed by running it again: a document the target already
holds identically, vectors included, is skipped. At the end the two stores are compared —
documents, chunks and vectors per fingerprint counted, and a sample of vectors compared value by
value — and any difference fails the copy.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ragvisor.core.model import Fingerprint, Generations, StoredDocument
from ragvisor.core.protocols import Store
from ragvisor.errors import StoreError

ProgressCallback = Callable[[int, int], None]
# Vectors compared value by value, per fingerprint, when the copy is verified.
SAMPLE_VECTORS = 200


@dataclass(slots=True)
class CopyReport:
    """What a copy did, for the command's summary and its JSON."""

    documents_copied: int = 0
    documents_already_there: int = 0
    vectors_copied: int = 0
    fingerprints: list[str] = field(default_factory=list)
    verified: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON shape."""
        return {
            "documents_copied": self.documents_copied,
            "documents_already_there": self.documents_already_there,
            "vectors_copied": self.vectors_copied,
            "fingerprints": self.fingerprints,
            "verified": self.verified,
            "seconds": round(self.seconds, 3),
        }


def fingerprints_to_copy(source: Store) -> list[Fingerprint]:
    """The generations the source keeps (active first), or — a store older than generation
    records — every fingerprint it has vectors of."""
    records = source.generations()
    kept = [g for g in (records.active, records.building) if g is not None]
    if kept:
        return [g.identity() for g in kept]
    return [Fingerprint.from_key(key) for key in sorted(source.vector_counts())]


def copy_store(
    source: Store,
    target: Store,
    *,
    on_progress: ProgressCallback | None = None,
    log: Any,
    rng: random.Random | None = None,
) -> CopyReport:
    """Copy every document of ``source`` into ``target``, then verify. Raises StoreError when
    the target holds documents the source does not (it is not a copy of this store) or when
    the verification finds a difference."""
    started = time.perf_counter()
    fingerprints = fingerprints_to_copy(source)
    report = CopyReport(fingerprints=[f.key for f in fingerprints])
    wanted = source.stored_documents()
    present = target.stored_documents()
    strangers = sorted(set(present) - set(wanted))
    if strangers:
        raise StoreError(
            f"the target holds {len(strangers)} document(s) the source does not (such as "
            f"{present[strangers[0]].path!r}): it is not a copy of this store; copy into an "
            "empty database"
        )
    target_has = {f.key: target.hashes_with_vectors(f) for f in fingerprints}
    log.info(
        "store_copy.started",
        documents=len(wanted),
        already_there=sum(1 for d in wanted.values() if _same(d, present, target_has)),
        fingerprints=report.fingerprints,
    )
    if on_progress is not None:
        on_progress(0, len(wanted))
    for done, (doc_id, stored) in enumerate(sorted(wanted.items()), 1):
        if _same(stored, present, target_has):
            report.documents_already_there += 1
        else:
            report.vectors_copied += _copy_document(source, target, doc_id, fingerprints)
            report.documents_copied += 1
        if on_progress is not None:
            on_progress(done, len(wanted))
    records = source.generations()
    if records != Generations():
        target.set_generations(records)
    report.verified = verify_copy(source, target, fingerprints, rng or random.Random())  # noqa: S311 - a sample, not a secret
    report.seconds = time.perf_counter() - started
    log.info("store_copy.finished", **report.as_dict())
    return report


def _same(
    stored: StoredDocument, present: dict[str, StoredDocument], has: dict[str, set[str]]
) -> bool:
    """Whether the target already holds this document exactly, with all its vectors."""
    there = present.get(stored.doc_id)
    return (
        there is not None
        and there.content_sha256 == stored.content_sha256
        and there.chunker_version == stored.chunker_version
        and there.chunk_hashes == stored.chunk_hashes
        and all(set(stored.chunk_hashes) <= hashes for hashes in has.values())
    )


def _copy_document(
    source: Store, target: Store, doc_id: str, fingerprints: Sequence[Fingerprint]
) -> int:
    """One document, one atomic commit per generation; returns the vectors written."""
    version = source.read_document(doc_id)
    if version is None:  # deleted since the listing (a sync running meanwhile)
        return 0
    hashes = [c.text_sha256 for c in version.chunks]
    written = 0
    for fingerprint in fingerprints:
        vectors = source.vectors(hashes, fingerprint)
        if len(vectors) < len(set(hashes)):
            continue  # a building generation that has not reached this document yet
        target.commit_document(
            version.source, version.chunks, vectors, fingerprint, version.chunker_version
        )
        written += len(vectors)
    return written


def verify_copy(
    source: Store, target: Store, fingerprints: Sequence[Fingerprint], rng: random.Random
) -> dict[str, Any]:
    """Counts of documents, chunks and vectors per fingerprint equal, and a sample of vectors
    equal value by value. Raises StoreError naming the first difference."""
    source_stats, target_stats = source.stats(), target.stats()
    for name in ("documents", "chunks"):
        if source_stats[name] != target_stats[name]:
            raise StoreError(
                f"copy verification failed: {name} {source_stats[name]} in the source, "
                f"{target_stats[name]} in the target"
            )
    # Vectors that some chunk uses: a sync killed between a delete and its prune can leave a
    # source with vectors of deleted text, which a copy rightly leaves behind.
    used = {h for d in source.stored_documents().values() for h in d.chunk_hashes}
    counted: dict[str, int] = {}
    sampled = 0
    for fingerprint in fingerprints:
        key = fingerprint.key
        have = source.hashes_with_vectors(fingerprint) & used
        copied_hashes = target.hashes_with_vectors(fingerprint) & used
        if have != copied_hashes:
            raise StoreError(
                f"copy verification failed: {len(have)} vectors of {key} in the source, "
                f"{len(copied_hashes)} in the target"
            )
        counted[key] = len(have)
        sample = rng.sample(sorted(have), min(SAMPLE_VECTORS, len(have)))
        expected, copied = source.vectors(sample, fingerprint), target.vectors(sample, fingerprint)
        for text_hash, vector in expected.items():
            other = copied.get(text_hash)
            if other is None or not np.allclose(vector, other, atol=1e-6):
                raise StoreError(
                    f"copy verification failed: the vector of {text_hash[:12]}… under {key} "
                    "differs in the target"
                )
        sampled += len(expected)
    return {
        "documents": target_stats["documents"],
        "chunks": target_stats["chunks"],
        "vectors": counted,
        "vectors_compared": sampled,
    }
