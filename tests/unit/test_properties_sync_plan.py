"""Properties of sync planning over generated corpora: exact partitions, and idempotent syncs.

Corpora are drawn from a few paths, two roots and a small stock of paragraphs, so documents
share chunk texts, edits touch some paragraphs and not others, and renames and deletions happen.
The planner runs with the real chunker; the apply-and-replan properties run on a real
SqliteStore with the counting fake embedder (embeddings are counted at the embedder).
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from functools import partial
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from ragvisor.core.chunking import CHUNKER_VERSION, ChunkingSpec, chunk_document
from ragvisor.core.model import SourceDocument, StoredDocument
from ragvisor.core.sync import Action, SyncPlan, apply_plan, compare_chunks, plan_sync
from ragvisor.store.sqlite import SqliteStore
from ragvisor.testing import FakeEmbedder
from tests.consistency import check_store
from tests.helpers import make_document

CHUNK = partial(chunk_document, spec=ChunkingSpec(size_chars=120, overlap_chars=30))
ROOTS = ("/corpus", "/mnt/usb")
PATHS = ("a.md", "b.md", "notes.txt", "sub/c.md", "sub/d.txt")
PARAGRAPHS = (
    "Swap is a file on the root disk.",
    "The daemon restarts the worker after a crash, with backoff between attempts.",
    "# Memory\n\nThe guard sheds load when available memory runs low.",
    "## Backups\n\nNightly dumps are kept for fourteen days and restored monthly as a test.",
    "Plain words.",
    "",
)
TEXT = st.lists(st.sampled_from(PARAGRAPHS), max_size=4).map("\n\n".join)
Corpus = dict[tuple[str, str], str]
CORPUS = st.dictionaries(st.tuples(st.sampled_from(ROOTS), st.sampled_from(PATHS)), TEXT)


def documents(corpus: Corpus) -> dict[str, SourceDocument]:
    """The corpus as the reader would give it, by document id."""
    docs = [make_document(path, text, root=root) for (root, path), text in corpus.items()]
    return {doc.doc_id: doc for doc in docs}


def hashes(doc: SourceDocument) -> tuple[str, ...]:
    return tuple(c.text_sha256 for c in CHUNK(doc))


def remembered(doc: SourceDocument, chunker_version: str) -> StoredDocument:
    """What a store holds after committing the document with that chunker version."""
    return StoredDocument(
        doc.doc_id, doc.corpus_root, doc.path, doc.content_sha256, chunker_version, hashes(doc)
    )


def plan(
    scanned: list[SourceDocument], stored: Mapping[str, StoredDocument], have: set[str], **kw
) -> SyncPlan:
    return plan_sync(
        scanned,
        stored,
        have,
        chunk=CHUNK,
        chunker_version=CHUNKER_VERSION,
        fingerprint_key="fp",
        **kw,
    )


@given(CORPUS, CORPUS, st.data())
def test_every_document_gets_exactly_the_action_its_state_calls_for(
    before: Corpus, after: Corpus, data: st.DataObject
) -> None:
    """Each document of either side is planned once: new, changed (with why), unchanged, deleted
    — or left alone when it is kept (unreadable now, or its root is missing)."""
    old, new = documents(before), documents(after)
    old_chunker = {i: data.draw(st.sampled_from([CHUNKER_VERSION, "older"])) for i in old}
    stored = {i: remembered(doc, old_chunker[i]) for i, doc in old.items()}
    every_hash = sorted({h for s in stored.values() for h in s.chunk_hashes})
    have = set(data.draw(st.sets(st.sampled_from(every_hash)))) if every_hash else set()
    keep_ids = data.draw(st.sets(st.sampled_from(sorted(old)))) if old else set()
    keep_roots = data.draw(st.sets(st.sampled_from(ROOTS)))

    def clean(i: str) -> bool:  # what a quick check can vouch for without reading
        s = stored[i]
        same = s.content_sha256 == new[i].content_sha256
        return same and s.chunker_version == CHUNKER_VERSION and set(s.chunk_hashes) <= have

    both = sorted(set(old) & set(new))
    quick = data.draw(st.sets(st.sampled_from([i for i in both if clean(i)] or [""])))
    quick.discard("")
    scanned = [doc for i, doc in new.items() if i not in quick]
    result = plan(
        scanned,
        stored,
        have,
        keep_doc_ids=keep_ids,
        keep_roots=keep_roots,
        unchanged_ids=sorted(quick),
    )

    planned = {p.doc_id: p for p in result.documents}
    assert len(planned) == len(result.documents)
    gone = {
        i for i in set(old) - set(new) if i not in keep_ids and old[i].corpus_root not in keep_roots
    }
    assert set(planned) == set(new) | gone
    for doc_id, p in planned.items():
        if doc_id in gone:
            assert p.action is Action.DELETED
            assert p.chunk_counts.deleted == len(stored[doc_id].chunk_hashes)
            continue
        if doc_id not in old:
            assert (p.action, p.reasons) == (Action.NEW, ())
        else:
            s, doc = stored[doc_id], new[doc_id]
            reasons = []
            if s.content_sha256 != doc.content_sha256:
                reasons.append("content")
            if s.chunker_version != CHUNKER_VERSION:
                reasons.append("chunker")
            if not reasons and not set(s.chunk_hashes) <= have:
                reasons.append("model")
            assert p.reasons == tuple(reasons)
            assert p.action is (Action.CHANGED if reasons else Action.UNCHANGED)
        if p.action is Action.UNCHANGED:
            assert p.chunks == ()
            assert p.chunk_counts.unchanged == len(stored[doc_id].chunk_hashes)
        else:
            assert p.source == new[doc_id]
            assert p.chunks == tuple(CHUNK(new[doc_id]))
            old_hashes = stored[doc_id].chunk_hashes if doc_id in old else ()
            assert p.chunk_counts == compare_chunks(old_hashes, hashes(new[doc_id]))
    counts = result.document_counts()
    assert counts.new + counts.changed + counts.unchanged + counts.deleted == len(planned)


def sync(store: SqliteStore, embedder: FakeEmbedder, corpus: Corpus) -> SyncPlan:
    """Plan against what the store remembers, apply, and return the plan."""
    fingerprint = embedder.fingerprint
    result = plan(
        list(documents(corpus).values()),
        store.stored_documents(),
        store.hashes_with_vectors(fingerprint),
    )
    apply_plan(result, store, embedder)
    check_store(store.path, fingerprint.key)
    return result


@settings(max_examples=40)
@given(CORPUS, CORPUS)
def test_a_sync_embeds_only_new_texts_and_a_resync_finds_nothing_to_do(
    before: Corpus, after: Corpus
) -> None:
    """Syncing a changed corpus embeds exactly the chunk texts the store had no vector for, leaves
    the store as if it had synced that corpus from scratch, and a re-sync plans all unchanged."""
    embedder = FakeEmbedder()
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteStore(Path(tmp) / "data")
        try:
            sync(store, embedder, before)
            known = {h for d in documents(before).values() for h in hashes(d)}
            embedded = embedder.embedded_texts_total
            sync(store, embedder, after)
            wanted = {h for d in documents(after).values() for h in hashes(d)}
            assert embedder.embedded_texts_total - embedded == len(wanted - known)
            assert store.stored_documents() == {
                i: remembered(doc, CHUNKER_VERSION) for i, doc in documents(after).items()
            }
            assert store.hashes_with_vectors(embedder.fingerprint) == wanted

            embedded = embedder.embedded_texts_total
            again = sync(store, embedder, after)
            assert {p.action for p in again.documents} <= {Action.UNCHANGED}
            assert embedder.embedded_texts_total == embedded
        finally:
            store.close()
