"""Hash-checked sync: plan first, embed only what changed, commit each document atomically.

`plan_sync` is pure: it compares what the corpus holds now with what the store remembers and
decides, per document, new / changed / unchanged / deleted. `apply_plan` carries a plan out:
it embeds, in batches, only chunk texts whose hash has no vector under the embedder's
fingerprint, and commits a document as soon as all of its vectors exist — new version written
before the old is retired. A document is unchanged only when the bytes, the chunker version and
the model fingerprint all match, so a model change or a chunker change re-embeds by itself.
A chunk the embedding model refuses (longer than its context) skips its document — reported,
its stored version kept — instead of failing the sync; a backend that fails still fails it.
"""

from __future__ import annotations

import collections
import enum
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from ragvisor.core.model import (
    Chunk,
    Counts,
    Fingerprint,
    SourceDocument,
    StoredDocument,
    SyncReport,
)
from ragvisor.core.protocols import Embedder, Store, Vector
from ragvisor.core.refusals import embed_sorting_refusals


class Action(enum.Enum):
    """What a sync does with one document."""

    NEW = "new"
    CHANGED = "changed"
    UNCHANGED = "unchanged"
    DELETED = "deleted"


@dataclass(frozen=True, slots=True)
class PlannedDocument:
    """One document's decision, with the chunks to write when it is new or changed."""

    action: Action
    doc_id: str
    path: str
    source: SourceDocument | None = None
    chunks: tuple[Chunk, ...] = ()
    reasons: tuple[str, ...] = ()
    chunk_counts: Counts = field(default_factory=Counts)


@dataclass(slots=True)
class SyncPlan:
    """Everything a sync will do, decided before any embedding starts."""

    documents: list[PlannedDocument]
    chunker_version: str
    fingerprint_key: str
    skipped: list[dict[str, str]] = field(default_factory=list)

    def document_counts(self) -> Counts:
        """How many documents fall under each action."""
        tally = collections.Counter(planned.action for planned in self.documents)
        return Counts(
            new=tally[Action.NEW],
            changed=tally[Action.CHANGED],
            unchanged=tally[Action.UNCHANGED],
            deleted=tally[Action.DELETED],
        )

    def chunk_counts(self) -> Counts:
        """Chunk-level new / changed / unchanged / deleted, summed over documents."""
        counts = [p.chunk_counts for p in self.documents]
        return Counts(
            new=sum(c.new for c in counts),
            changed=sum(c.changed for c in counts),
            unchanged=sum(c.unchanged for c in counts),
            deleted=sum(c.deleted for c in counts),
        )

    def reason_counts(self) -> dict[str, int]:
        """Why changed documents changed: content, chunker or model, with counts."""
        counts: dict[str, int] = {}
        for planned in self.documents:
            for reason in planned.reasons:
                counts[reason] = counts.get(reason, 0) + 1
        return counts

    def to_write(self) -> list[PlannedDocument]:
        """New and changed documents, in plan order."""
        return [p for p in self.documents if p.action in (Action.NEW, Action.CHANGED)]


def compare_chunks(old: Sequence[str], new: Sequence[str]) -> Counts:
    """Chunk counts of a document by position: same hash unchanged, other hash changed."""
    counts = Counts()
    for position, text_hash in enumerate(new):
        if position >= len(old):
            counts.new += 1
        elif old[position] == text_hash:
            counts.unchanged += 1
        else:
            counts.changed += 1
    counts.deleted = max(0, len(old) - len(new))
    return counts


def plan_sync(
    scanned: Sequence[SourceDocument],
    stored: Mapping[str, StoredDocument],
    hashes_with_vectors: set[str],
    *,
    chunk: Callable[[SourceDocument], list[Chunk]],
    chunker_version: str,
    fingerprint_key: str,
    keep_doc_ids: set[str] | frozenset[str] = frozenset(),
    keep_roots: set[str] | frozenset[str] = frozenset(),
    unchanged_ids: Sequence[str] = (),
) -> SyncPlan:
    """Decide what to do with every document; pure, so it is tested without I/O.

    ``keep_doc_ids`` are documents that could not be read this time (skipped files) and
    ``keep_roots`` corpus roots that are missing right now (an unmounted disk): their stored
    documents are left alone rather than deleted. A document that ``chunk`` raises on is a
    skip too (in ``SyncPlan.skipped``, its stored version kept): one odd file must not stop
    the rest of the corpus from being indexed.
    """
    planned: list[PlannedDocument] = []
    skipped: list[dict[str, str]] = []
    seen: set[str] = set()
    for doc_id in unchanged_ids:  # passed the quick check: not even read
        checked = stored[doc_id]
        seen.add(doc_id)
        planned.append(
            PlannedDocument(
                Action.UNCHANGED,
                doc_id,
                checked.path,
                chunk_counts=Counts(unchanged=len(checked.chunk_hashes)),
            )
        )
    for source in scanned:
        seen.add(source.doc_id)
        previous = stored.get(source.doc_id)
        if previous is not None:
            reasons = []
            if previous.content_sha256 != source.content_sha256:
                reasons.append("content")
            if previous.chunker_version != chunker_version:
                reasons.append("chunker")
            if not reasons and not all(h in hashes_with_vectors for h in previous.chunk_hashes):
                reasons.append("model")
            if not reasons:
                planned.append(
                    PlannedDocument(
                        Action.UNCHANGED,
                        source.doc_id,
                        source.path,
                        chunk_counts=Counts(unchanged=len(previous.chunk_hashes)),
                    )
                )
                continue
        try:
            chunks = tuple(chunk(source))
        except Exception as exc:  # noqa: BLE001 - a chunker bug on one file skips that file
            path = f"{source.corpus_root.rstrip('/')}/{source.path}"
            reason = f"could not be chunked ({type(exc).__name__}: {exc})"
            skipped.append({"path": path, "reason": reason})
            continue
        hashes = [c.text_sha256 for c in chunks]
        old_hashes = previous.chunk_hashes if previous is not None else ()
        planned.append(
            PlannedDocument(
                Action.NEW if previous is None else Action.CHANGED,
                source.doc_id,
                source.path,
                source=source,
                chunks=chunks,
                reasons=tuple(reasons) if previous is not None else (),
                chunk_counts=compare_chunks(old_hashes, hashes),
            )
        )
    for doc_id, previous in stored.items():
        if doc_id in seen or doc_id in keep_doc_ids or previous.corpus_root in keep_roots:
            continue
        planned.append(
            PlannedDocument(
                Action.DELETED,
                doc_id,
                previous.path,
                chunk_counts=Counts(deleted=len(previous.chunk_hashes)),
            )
        )
    return SyncPlan(planned, chunker_version, fingerprint_key, skipped)


def quick_check_stamps(
    stored: Mapping[str, StoredDocument], hashes_with_vectors: set[str], chunker_version: str
) -> dict[str, str]:
    """Stamps of stored documents that need nothing but their bytes unchanged to be skipped.

    Only a document already chunked by this chunker version with every vector present under
    the active fingerprint qualifies: for any other, the text is needed and the file is read.
    """
    return {
        doc.doc_id: doc.stamp
        for doc in stored.values()
        if doc.stamp
        and doc.chunker_version == chunker_version
        and all(h in hashes_with_vectors for h in doc.chunk_hashes)
    }


ProgressCallback = Callable[[int, int], None]
# Told of each document skipped because the model refused one of its chunks, with the reason.
SkipCallback = Callable[["PlannedDocument", str], None]
EMBED_WINDOW_BATCHES = 32


def apply_plan(
    plan: SyncPlan,
    store: Store,
    embedder: Embedder,
    *,
    on_progress: ProgressCallback | None = None,
    on_committed: Callable[[PlannedDocument], None] | None = None,
    on_skipped: SkipCallback | None = None,
    keep: Sequence[Fingerprint] = (),
) -> SyncReport:
    """Carry out a plan: embed missing vectors in batches, commit documents, then delete.

    Deletions run last so a renamed file is written under its new name before the old one is
    retired. Progress is reported as (chunks embedded so far, chunks to embed). The closing
    prune keeps the embedder's vectors and those of ``keep`` (during a model change, the
    generation searches still use). A document with a chunk the embedder refuses
    (:class:`InputRefused`) is not committed: it is listed in the report's ``skipped`` and
    passed to ``on_skipped``, and its stored version, if any, stays. Raises whatever else the
    embedder or store raises; every document committed before that stays committed.
    """
    started = time.perf_counter()
    fingerprint = embedder.fingerprint
    report = SyncReport(
        changed_because=plan.reason_counts(),
        documents=plan.document_counts(),
        chunks=plan.chunk_counts(),
        skipped=list(plan.skipped),
        fingerprint=fingerprint.key,
    )
    to_write = plan.to_write()
    have = store.hashes_with_vectors(fingerprint) if to_write else set()
    queued: dict[str, str] = {}
    for planned in to_write:
        for c in planned.chunks:
            if c.text_sha256 not in have:
                queued.setdefault(c.text_sha256, c.text)
    total = len(queued)
    report.embeddings_reused = sum(len(p.chunks) for p in to_write) - total
    if on_progress is not None:
        on_progress(0, total)

    # One pass per window, plus a first pass with nothing embedded: documents whose vectors
    # all exist already (renames, reused text) commit before any embedding starts.
    window = max(1, embedder.batch_size) * EMBED_WINDOW_BATCHES
    order = list(queued.items())
    windows = [order[i : i + window] for i in range(0, len(order), window)]
    pending = _embed_and_commit(
        [[], *windows],
        list(to_write),
        store,
        embedder,
        report,
        have=have,
        chunker_version=plan.chunker_version,
        on_progress=(lambda done: on_progress(done, total)) if on_progress else None,
        on_committed=on_committed,
        on_skipped=on_skipped,
    )
    if pending:  # pragma: no cover - every queued hash was embedded above
        raise RuntimeError(f"{len(pending)} documents left without vectors")
    for planned in plan.documents:
        if planned.action is Action.DELETED:
            store.delete_document(planned.doc_id)
            if on_committed is not None:
                on_committed(planned)
    store.prune_vectors(fingerprint, *keep)
    report.seconds = time.perf_counter() - started
    return report


def _embed_and_commit(
    windows: list[list[tuple[str, str]]],
    pending: list[PlannedDocument],
    store: Store,
    embedder: Embedder,
    report: SyncReport,
    *,
    have: set[str],
    chunker_version: str,
    on_progress: Callable[[int], None] | None,
    on_committed: Callable[[PlannedDocument], None] | None,
    on_skipped: SkipCallback | None,
) -> list[PlannedDocument]:
    """Embed each window of (hash, text) and commit the documents it completes; returns the
    documents still pending (none, once every window is embedded).

    A window is many batches: the embedder groups texts of similar length within it (padding
    is most of what a window of 8 batches lost against one call for everything), and it is
    small enough that documents still commit every few seconds. Commits run on one thread of
    their own, a window behind the embedding, so a store's write time (Neo4j's round trips)
    overlaps the next window's inference instead of adding to it — still one at a time and in
    plan order; a commit's error ends the sync at the next window.
    """
    fresh: dict[str, Vector] = {}
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="sync-commit") as committer:
        committing: Future[None] | None = None
        for batch in windows:
            if batch:
                vectors, refused = embed_sorting_refusals(embedder, batch)
                report.embeddings_computed += len(vectors)
                fresh.update(vectors)
                if refused:
                    pending = _skip_refused(pending, refused, report, on_skipped)
                if on_progress is not None:  # may raise to stop: nothing more is committed
                    on_progress(report.embeddings_computed)
            ready, pending = _take_ready(pending, fresh=fresh, have=have)
            if committing is not None:
                committing.result()
            committing = committer.submit(
                _commit_all,
                ready,
                store,
                fingerprint=embedder.fingerprint,
                chunker_version=chunker_version,
                on_committed=on_committed,
            )
        if committing is not None:
            committing.result()
    return pending


def _skip_refused(
    pending: list[PlannedDocument],
    refused: Mapping[str, str],
    report: SyncReport,
    on_skipped: SkipCallback | None,
) -> list[PlannedDocument]:
    """The pending documents without those holding a refused chunk; each of those is reported
    as skipped (and taken out of the plan's counts: it was neither written nor retired)."""
    kept: list[PlannedDocument] = []
    for planned in pending:
        blamed = next((c for c in planned.chunks if c.text_sha256 in refused), None)
        if blamed is None:
            kept.append(planned)
            continue
        assert planned.source is not None  # pending documents are new or changed ones
        source = planned.source
        path = f"{source.corpus_root.rstrip('/')}/{source.path}"
        reason = (
            f"the embedding model refused chunk {blamed.position + 1} of {len(planned.chunks)} "
            f"({len(blamed.text)} characters): {refused[blamed.text_sha256]}"
        )
        report.skipped.append({"path": path, "reason": reason})
        _uncount(report, planned)
        if on_skipped is not None:
            on_skipped(planned, reason)
    return kept


def _uncount(report: SyncReport, planned: PlannedDocument) -> None:
    """Take a skipped document out of the report's plan counts."""
    action = Counts(new=1) if planned.action is Action.NEW else Counts(changed=1)
    report.documents.subtract(action)
    report.chunks.subtract(planned.chunk_counts)
    for reason in planned.reasons:
        report.changed_because[reason] -= 1
        if report.changed_because[reason] == 0:
            del report.changed_because[reason]


def _take_ready(
    pending: list[PlannedDocument], *, fresh: dict[str, Vector], have: set[str]
) -> tuple[list[tuple[PlannedDocument, dict[str, Vector]]], list[PlannedDocument]]:
    """The leading pending documents whose chunks all have vectors, each with the vectors it
    brings (taken out of ``fresh``, their hashes added to ``have``), and the rest."""
    ready: list[tuple[PlannedDocument, dict[str, Vector]]] = []
    for index, planned in enumerate(pending):
        if not all(c.text_sha256 in have or c.text_sha256 in fresh for c in planned.chunks):
            return ready, pending[index:]
        new_vectors = {
            c.text_sha256: fresh.pop(c.text_sha256)
            for c in planned.chunks
            if c.text_sha256 in fresh
        }
        have.update(new_vectors)
        ready.append((planned, new_vectors))
    return ready, []


def _commit_all(
    ready: list[tuple[PlannedDocument, dict[str, Vector]]],
    store: Store,
    *,
    fingerprint: Fingerprint,
    chunker_version: str,
    on_committed: Callable[[PlannedDocument], None] | None,
) -> None:
    """Commit documents in order, each in its own atomic commit."""
    for planned, new_vectors in ready:
        assert planned.source is not None
        store.commit_document(
            planned.source, planned.chunks, new_vectors, fingerprint, chunker_version
        )
        if on_committed is not None:
            on_committed(planned)
