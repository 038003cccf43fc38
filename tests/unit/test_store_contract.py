"""The Store contract, run against every store implementation.

Today that is SQLite and the in-memory fake of ragvisor.testing (whose worth as a fake is that
it keeps the same contract); a new store joins by adding its name to the fixture's params, so
every test here runs against it too. The tests after the contract pin SQLite's own behaviour.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path

import numpy as np
import pytest

from ragvisor.core.model import Generation, Generations
from ragvisor.errors import StoreError
from ragvisor.store.neo4j_store import Neo4jStore
from ragvisor.store.sqlite import SqliteStore
from ragvisor.testing import FakeEmbedder, MemoryStore
from tests.helpers import CHUNKER, commit_paragraphs, make_document, paragraph_chunks
from tests.infra.neo4j_engine import USER


@pytest.fixture(params=["sqlite", "memory", "neo4j"])
def store(request, tmp_path):
    """A fresh, empty store of each implementation (Neo4j: the run's real engine, emptied)."""
    if request.param == "sqlite":
        s = SqliteStore(tmp_path / "data")
    elif request.param == "memory":
        s = MemoryStore()
    else:
        engine = request.getfixturevalue("neo4j_engine")
        engine.wipe()
        s = Neo4jStore(engine.uri, user=USER, password=engine.password)
    yield s
    s.close()


EMB = FakeEmbedder()


def commit(store, doc, chunks=None, embedder=EMB):
    return commit_paragraphs(store, doc, embedder, chunks)


def test_commit_then_plan_view_lists_chunk_hashes_in_order(store):
    """A committed document is remembered with its content hash and chunk hashes by position."""
    doc = make_document("a.md", "alpha one\n\nbeta two\n\ngamma three")
    chunks = commit(store, doc)
    stored = store.stored_documents()[doc.doc_id]
    assert stored.content_sha256 == doc.content_sha256
    assert stored.chunk_hashes == tuple(c.text_sha256 for c in chunks)
    assert stored.chunker_version == CHUNKER


def test_commit_without_a_vector_changes_nothing(store):
    """A commit that would leave a chunk without a vector raises and leaves the old version."""
    doc = make_document("a.md", "alpha one\n\nbeta two")
    commit(store, doc)
    before = store.stored_documents()
    changed = make_document("a.md", "alpha one\n\nsomething new")
    with pytest.raises(StoreError, match="no vector"):
        store.commit_document(changed, paragraph_chunks(changed), {}, EMB.fingerprint, CHUNKER)
    assert store.stored_documents() == before


def test_new_version_retires_old_chunks_and_keeps_unchanged_ids(store):
    """Re-committing a document keeps unchanged chunk ids and removes the retired ones."""
    doc = make_document("a.md", "alpha one\n\nbeta two\n\ngamma three")
    old = commit(store, doc)
    new_doc = make_document("a.md", "alpha one\n\nbeta TWO")
    new = commit(store, new_doc)
    assert new[0].chunk_id == old[0].chunk_id
    assert store.stats()["chunks"] == 2
    records = store.get_chunks([c.chunk_id for c in old])
    assert [r.chunk_id for r in records] == [old[0].chunk_id]


def test_dense_search_sees_commits_and_deletes_without_reload(store):
    """Searches reflect each commit and delete immediately."""
    doc = make_document("fruit.md", "apple banana cherry\n\ncarrot potato leek")
    commit(store, doc)
    query = EMB.embed(["apple banana"])[0]
    top = store.dense_search(query, 1, EMB.fingerprint)
    assert store.get_chunks([top[0].chunk_id])[0].text == "apple banana cherry"
    other = make_document("veg.md", "apple banana cherry")
    commit(store, other)
    assert len(store.dense_search(query, 10, EMB.fingerprint)) == 3
    store.delete_document(doc.doc_id)
    hits = store.dense_search(query, 10, EMB.fingerprint)
    assert [store.get_chunks([h.chunk_id])[0].path for h in hits] == ["veg.md"]


def test_kb_version_changes_with_every_commit_and_delete_only(store):
    """kb_version (the answer cache's scope) moves on with each committed document and each
    deletion, and stays put for reads, generations and the lease."""
    first = store.kb_version()
    doc = make_document("a.md", "alpha one\n\nbeta two")
    commit(store, doc)
    committed = store.kb_version()
    assert committed != first
    store.dense_search(EMB.embed(["alpha"])[0], 2, EMB.fingerprint)
    store.set_generations(Generations(active=Generation(EMB.fingerprint.key, "fake", 32, {}, 1.0)))
    store.take_lease("me", 30.0)
    assert store.kb_version() == committed
    commit(store, make_document("a.md", "alpha one\n\nbeta three"))
    changed = store.kb_version()
    store.delete_document(doc.doc_id)
    assert len({first, committed, changed, store.kb_version()}) == 4


def test_identical_text_is_embedded_once(store):
    """Two chunks with the same text share one vector: the second commit needs no embedding."""
    commit(store, make_document("a.md", "shared paragraph"))
    before = EMB.embedded_texts_total
    commit(store, make_document("b.md", "shared paragraph"))
    assert EMB.embedded_texts_total == before
    assert store.stats()["vectors"] == 1


def test_keyword_search_ranks_by_words(store):
    """FTS5 finds chunks by word, and punctuation in the query cannot break the syntax."""
    commit(store, make_document("a.md", "the swap file is sized in megabytes\n\nunrelated text"))
    hits = store.keyword_search('swap "file" AND (OR', 5)
    assert store.get_chunks([hits[0].chunk_id])[0].text.startswith("the swap file")
    assert store.keyword_search("!!!", 5) == []


def test_get_chunks_keeps_asked_order_and_drops_unknown_ids(store):
    """get_chunks returns records in the order asked, skipping ids that do not exist."""
    chunks = commit(store, make_document("a.md", "one\n\ntwo\n\nthree"))
    ids = [chunks[2].chunk_id, "nope", chunks[0].chunk_id]
    assert [r.text for r in store.get_chunks(ids)] == ["three", "one"]


def test_prune_drops_other_models_and_unreferenced_vectors(store):
    """After a model switch, pruning keeps only the active fingerprint's referenced vectors."""
    doc = make_document("a.md", "one\n\ntwo")
    commit(store, doc)
    other = FakeEmbedder(name="other")
    commit(store, doc, embedder=other)
    assert store.stats()["vectors"] == 4
    assert store.prune_vectors(other.fingerprint) == 2
    assert store.hashes_with_vectors(EMB.fingerprint) == set()
    assert len(store.hashes_with_vectors(other.fingerprint)) == 2


def test_prune_keeps_every_fingerprint_it_is_given(store):
    """During a model change the prune keeps both generations' vectors, and only those."""
    doc = make_document("a.md", "one\n\ntwo")
    commit(store, doc)
    other, third = FakeEmbedder(name="other"), FakeEmbedder(name="third")
    commit(store, doc, embedder=other)
    commit(store, doc, embedder=third)
    assert store.prune_vectors(EMB.fingerprint, other.fingerprint) == 2
    assert len(store.hashes_with_vectors(EMB.fingerprint)) == 2
    assert len(store.hashes_with_vectors(other.fingerprint)) == 2
    assert store.hashes_with_vectors(third.fingerprint) == set()


def test_generations_are_recorded_as_one_value(store):
    """1. A new store has no generation; 2. both are written and read back as written, the
    recorded embedder settings included; 3. activating the building one is one write."""
    assert store.generations() == Generations()
    old = Generation("sha256:aaaa/3", "old", 3, {"backend": "onnx", "threads": 2}, 1.0)
    new = Generation("sha256:bbbb/3", "new", 3, {"backend": "ollama", "model": "m"}, 2.0)
    store.set_generations(Generations(active=old, building=new))
    read = store.generations()
    assert read == Generations(active=old, building=new)
    assert read.active is not None
    assert read.active.embedder == {"backend": "onnx", "threads": 2}
    store.set_generations(Generations(active=new))
    assert store.generations() == Generations(active=new, building=None)


def test_the_sync_lease_has_one_holder_until_it_expires_or_is_released(store):
    """1. The first taker holds the lease and may renew it; 2. another taker gets the holder's
    lease back instead; 3. released, or expired (a lease of 0 s), it is anyone's."""
    assert store.read_lease() is None
    first = store.take_lease("host-a:1", 60)
    assert first.holder == "host-a:1"
    assert 0 < first.expires_in_s <= 60
    assert store.take_lease("host-a:1", 60).holder == "host-a:1"  # renewed
    refused = store.take_lease("host-b:2", 60)
    assert refused.holder == "host-a:1"
    assert not refused.expired
    store.release_lease("host-b:2")  # not the holder: nothing happens
    assert store.read_lease().holder == "host-a:1"
    store.release_lease("host-a:1")
    assert store.read_lease() is None
    store.take_lease("host-b:2", 0)  # expires at once, as a dead holder's lease does
    assert store.read_lease().expired
    assert store.take_lease("host-c:3", 60).holder == "host-c:3"


def test_lease_takers_racing_get_exactly_one_holder(store):
    """Eight threads take the lease at once: exactly one holds it, and every one of them is
    told who."""
    results: list[str] = []
    barrier = threading.Barrier(8)

    def take(name: str) -> None:
        barrier.wait()
        results.append(store.take_lease(name, 60).holder)

    threads = [threading.Thread(target=take, args=(f"host:{i}",)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(results)) == 1
    assert store.read_lease().holder == results[0]


def test_a_document_reads_back_whole_with_its_vectors(store):
    """read_document returns what was committed (chunks in order, the document's fields, no
    file text); vectors and vector_counts return what is stored, per fingerprint."""
    doc = make_document("ops/swap.md", "one\n\ntwo\n\nthree")
    chunks = commit(store, doc)
    version = store.read_document(doc.doc_id)
    assert version is not None
    assert version.chunks == tuple(chunks)
    assert version.chunker_version == CHUNKER
    assert (version.source.path, version.source.title) == (doc.path, doc.title)
    assert (version.source.content_sha256, version.source.stamp) == (doc.content_sha256, doc.stamp)
    assert version.source.size_bytes == doc.size_bytes
    assert version.source.text == ""
    assert store.read_document("missing") is None
    hashes = [c.text_sha256 for c in chunks]
    vectors = store.vectors([*hashes, "unknown"], EMB.fingerprint)
    assert set(vectors) == set(hashes)
    expected = EMB.embed([c.text for c in chunks])
    for chunk, row in zip(chunks, expected, strict=True):
        assert np.allclose(vectors[chunk.text_sha256], row, atol=1e-6)
    assert store.vector_counts() == {EMB.fingerprint.key: (EMB.fingerprint.dimensions, 3)}


def test_commit_by_another_connection_reaches_search(tmp_path):
    """A commit made through a second store on the same file (another process) reaches search."""
    first = SqliteStore(tmp_path / "d")
    second = SqliteStore(tmp_path / "d")
    try:
        query = EMB.embed(["apple"])[0]
        assert first.dense_search(query, 5, EMB.fingerprint) == []
        commit(second, make_document("a.md", "apple pie"))
        hits = first.dense_search(query, 5, EMB.fingerprint)
        assert len(hits) == 1
        assert np.isclose(hits[0].score, float(EMB.embed(["apple pie"])[0] @ query), atol=1e-5)
    finally:
        first.close()
        second.close()


def test_reopen_keeps_everything(tmp_path):
    """Closing and reopening the store loses nothing."""
    s = SqliteStore(tmp_path / "d")
    commit(s, make_document("a.md", "one\n\ntwo"))
    s.close()
    again = SqliteStore(tmp_path / "d")
    try:
        assert again.stats()["chunks"] == 2
        assert len(again.dense_search(EMB.embed(["one"])[0], 5, EMB.fingerprint)) == 2
    finally:
        again.close()


def test_not_a_database_is_a_store_error(tmp_path):
    """A data directory holding a non-SQLite file under our name fails with StoreError."""
    data = tmp_path / "d"
    data.mkdir()
    (data / "ragvisor.sqlite3").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError):
        SqliteStore(data)


def test_commit_seq_grows_only_on_writes_and_other_writers_are_still_seen(tmp_path):
    """A transaction that changes no row leaves commit_seq; another writer's commit still shows."""
    store = SqliteStore(tmp_path / "data")
    commit(store, make_document("a.md", "apple banana"))
    query = EMB.embed(["apple banana"])[0]
    assert len(store.dense_search(query, 5, EMB.fingerprint)) == 1  # the index is loaded
    seq = store.commit_seq()
    assert store.prune_vectors(EMB.fingerprint) == 0
    store.delete_document("no-such-document")
    assert store.commit_seq() == seq
    other = SqliteStore(tmp_path / "data")  # another process's connection to the same file
    commit(other, make_document("b.md", "apple cherry"))
    other.close()
    assert store.commit_seq() == seq + 1
    assert len(store.dense_search(query, 5, EMB.fingerprint)) == 2
    store.close()


def test_a_locked_database_is_a_store_error_and_changes_nothing(tmp_path):
    """A write that waits past busy_timeout_s raises StoreError (not sqlite3's own error),
    naming the operation; the store keeps its last version and takes the next write."""
    store = SqliteStore(tmp_path / "data", busy_timeout_s=0.1)
    first = make_document("a.md", "alpha one\n\nbeta two")
    commit(store, first)
    holder = sqlite3.connect(store.path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreError, match=r"commit_document on .* database is locked"):
            commit(store, make_document("b.md", "gamma three"))
        with pytest.raises(StoreError, match="delete_document"):
            store.delete_document(first.doc_id)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert set(store.stored_documents()) == {first.doc_id}
    commit(store, make_document("b.md", "gamma three"))
    assert len(store.stored_documents()) == 2
    store.close()


def _open_files(path) -> int:
    """How many of this process's file descriptors are open on `path` (the database file)."""
    fds = Path("/proc/self/fd")
    return sum(1 for fd in fds.iterdir() if os.path.realpath(fd) == str(path.resolve()))


def test_connections_of_ended_threads_are_closed(tmp_path):
    """Each thread reads through its own connection; once the thread has ended, its connection
    is closed when the next one opens, so short-lived threads (a sync each) do not pile up
    connections and their page caches."""
    store = SqliteStore(tmp_path / "data")
    commit(store, make_document("a.md", "alpha one\n\nbeta two"))
    for _ in range(30):
        reader = threading.Thread(target=store.stored_documents)
        reader.start()
        reader.join()
    # This thread's connection and the last reader's, plus one descriptor SQLite's unix VFS
    # keeps after a close while other connections of the process hold locks on the file.
    # Before: 31, one per thread that ever read.
    assert _open_files(store.path) <= 3
    store.close()
    assert _open_files(store.path) == 0


# -- prompt token counts (ask.stored_token_counts) ------------------------------------------


def test_token_counts_are_kept_per_text_hash_and_counter(store):
    """Uncounted texts are listed once per hash until counted; counts are read back per counter,
    and writing them leaves kb_version alone (they change no search result)."""
    doc = make_document("a.md", "alpha one\n\nbeta two\n\nalpha one")
    chunks = commit(store, doc)
    hashes = sorted({c.text_sha256 for c in chunks})
    texts = {c.text_sha256: c.text for c in chunks}
    assert store.uncounted_texts("tok-a", 100) == {h: texts[h] for h in hashes}
    assert len(store.uncounted_texts("tok-a", 1)) == 1
    version = store.kb_version()
    store.put_token_counts("tok-a", {hashes[0]: 7})
    assert store.kb_version() == version
    assert store.uncounted_texts("tok-a", 100) == {hashes[1]: texts[hashes[1]]}
    store.put_token_counts("tok-a", {hashes[0]: 8, hashes[1]: 3})
    assert store.token_counts([*hashes, "f" * 64], "tok-a") == {hashes[0]: 8, hashes[1]: 3}
    assert store.token_counts(hashes, "tok-b") == {}
    assert store.uncounted_texts("tok-a", 100) == {}
    assert set(store.uncounted_texts("tok-b", 100)) == set(hashes)


def test_token_counts_prune_other_counters_and_gone_texts(store):
    """A prune keeps the current counter's counts of texts some chunk still has."""
    first = commit(store, make_document("a.md", "alpha one"))
    second = commit(store, make_document("b.md", "beta two"))
    a, b = first[0].text_sha256, second[0].text_sha256
    store.put_token_counts("old", {a: 1, b: 1})
    store.put_token_counts("new", {a: 2, b: 2})
    store.delete_document(make_document("b.md", "beta two").doc_id)
    assert store.prune_token_counts("new") == 3
    assert store.token_counts([a, b], "new") == {a: 2}
    assert store.token_counts([a, b], "old") == {}
    assert store.prune_token_counts("new") == 0
