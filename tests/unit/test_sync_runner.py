"""Sync end to end on real files and real SQLite, with a counting fake embedder.

The integration suite repeats the key cases with the real ONNX model; these pin the logic fast.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest
import structlog
from structlog.testing import capture_logs

from ragvisor.application.sync_runner import SyncRunner, kept_by_skips
from ragvisor.core import documents
from ragvisor.core.chunking import ChunkingSpec
from ragvisor.core.documents import CorpusSpec
from ragvisor.core.model import SKIPPED_LISTED_MAX, StoredDocument, SyncReport
from ragvisor.errors import BackendUnavailable, BusyError, StoreError
from ragvisor.store.sqlite import SqliteStore
from ragvisor.testing import FakeEmbedder
from tests.consistency import check_store
from tests.helpers import make_document

SECTIONS = "\n\n".join(
    f"## Section {i}\n\n" + " ".join(f"word{i}_{j}" for j in range(60)) for i in range(5)
)


@pytest.fixture
def corpus(tmp_path):
    root = tmp_path / "notes"
    root.mkdir()
    (root / "a.md").write_text("# Alpha\n\n" + SECTIONS)
    (root / "b.md").write_text("# Beta\n\nbeta text about swap files")
    (root / "sub").mkdir()
    (root / "sub" / "c.txt").write_text("plain text about neo4j heaps")
    return root


def make_runner(tmp_path, root, embedder, *, title_context=True):
    store = SqliteStore(tmp_path / "data")
    runner = SyncRunner(
        corpus=CorpusSpec(roots=(root,)),
        chunking=ChunkingSpec(size_chars=300, overlap_chars=40, title_context=title_context),
        store=store,
        embedder=embedder,
        lock_path=tmp_path / "data" / "sync.lock",
        log=structlog.get_logger(component="sync"),
    )
    return runner, store


def test_first_sync_then_unchanged_resync_computes_zero_embeddings(tmp_path, corpus):
    """A re-sync of an unchanged corpus embeds nothing, counted at the embedder."""
    embedder = FakeEmbedder()
    runner, store = make_runner(tmp_path, corpus, embedder)
    first = runner.run(trigger="test")
    assert first.documents.new == 3
    assert first.embeddings_computed == embedder.embedded_texts_total > 0
    before = embedder.embedded_texts_total
    again = runner.run(trigger="test")
    assert embedder.embedded_texts_total == before
    assert again.embeddings_computed == 0
    assert again.documents.as_dict() == {"new": 0, "changed": 0, "unchanged": 3, "deleted": 0}
    store.close()


def test_a_first_release_store_is_rechunked_with_titles_and_searchable_throughout(tmp_path, corpus):
    """A store of md-heading-v1 chunks is re-chunked to md-title-v2 by the next sync, each
    document replaced whole: every document has chunks after every commit."""
    embedder = FakeEmbedder()
    old, store = make_runner(tmp_path, corpus, embedder, title_context=False)
    old.run(trigger="test")
    store.close()
    first = SqliteStore(tmp_path / "data")
    assert {d.chunker_version for d in first.stored_documents().values()} == {"md-heading-v1"}
    first.close()
    runner, store = make_runner(tmp_path, corpus, embedder)
    seen: list[int] = []
    commit = store.commit_document

    def commit_and_look(*args, **kwargs):
        commit(*args, **kwargs)
        stored = store.stored_documents()
        seen.append(min(len(d.chunk_hashes) for d in stored.values()))

    store.commit_document = commit_and_look  # type: ignore[method-assign]
    report = runner.run(trigger="test")
    assert report.documents.changed == 3
    assert report.changed_because == {"chunker": 3}
    assert len(seen) == 3
    assert min(seen) > 0
    assert {d.chunker_version for d in store.stored_documents().values()} == {"md-title-v2"}
    best = store.keyword_search("word0_1", 1)[0]
    assert store.get_chunks([best.chunk_id])[0].text.startswith("Alpha > Section 0\n")
    store.close()


def test_small_edit_embeds_exactly_the_changed_chunks(tmp_path, corpus):
    """Editing one section re-embeds only that section's chunks."""
    embedder = FakeEmbedder()
    runner, store = make_runner(tmp_path, corpus, embedder)
    runner.run(trigger="test")
    old_hashes = set(store.stored_documents().values().__iter__().__next__().chunk_hashes)
    text = (corpus / "a.md").read_text()
    (corpus / "a.md").write_text(text.replace("word2_10", "EDITED"))
    before = embedder.embedded_texts_total
    report = runner.run(trigger="test")
    stored = {d.path: d for d in store.stored_documents().values()}
    new_hashes = [h for h in stored["a.md"].chunk_hashes if h not in old_hashes]
    assert report.documents.changed == 1
    assert 1 <= len(new_hashes) < len(stored["a.md"].chunk_hashes)
    assert embedder.embedded_texts_total - before == len(new_hashes) == report.embeddings_computed
    store.close()


def test_rename_reuses_vectors_and_delete_removes_chunks(tmp_path, corpus):
    """A renamed file needs no embedding; a deleted file's chunks disappear from search."""
    embedder = FakeEmbedder()
    runner, store = make_runner(tmp_path, corpus, embedder)
    runner.run(trigger="test")
    (corpus / "b.md").rename(corpus / "b-renamed.md")
    (corpus / "sub" / "c.txt").unlink()
    before = embedder.embedded_texts_total
    report = runner.run(trigger="test")
    assert embedder.embedded_texts_total == before
    assert report.documents.as_dict() == {"new": 1, "changed": 0, "unchanged": 1, "deleted": 2}
    paths = {d.path for d in store.stored_documents().values()}
    assert paths == {"a.md", "b-renamed.md"}
    hits = store.dense_search(embedder.embed(["neo4j heaps"])[0], 50, embedder.fingerprint)
    assert all(r.path != "sub/c.txt" for r in store.get_chunks([h.chunk_id for h in hits]))
    store.close()


def test_model_change_reembeds_everything_then_prunes_old_vectors(tmp_path, corpus):
    """A different fingerprint re-embeds every chunk; the old generation is pruned after."""
    runner, store = make_runner(tmp_path, corpus, FakeEmbedder(name="m1"))
    first = runner.run(trigger="test")
    store.close()
    other = FakeEmbedder(name="m2")
    runner, store = make_runner(tmp_path, corpus, other)
    report = runner.run(trigger="test")
    assert report.documents.changed == 3
    assert report.embeddings_computed == first.embeddings_computed == other.embedded_texts_total
    assert store.stats()["vectors"] == len(store.hashes_with_vectors(other.fingerprint))
    store.close()


def test_unreadable_file_is_skipped_logged_and_kept(tmp_path, corpus):
    """A file that turns binary is skipped with a logged reason and its old version stays."""
    runner, store = make_runner(tmp_path, corpus, FakeEmbedder())
    runner.run(trigger="test")
    (corpus / "b.md").write_bytes(b"\x00\x01binary now")
    (corpus / "latin.md").write_bytes("caf\xe9".encode("latin-1"))
    with capture_logs() as logs:
        report = runner.run(trigger="test")
    skipped = {e["path"].rsplit("/", 1)[-1] for e in logs if e["event"] == "sync.file_skipped"}
    assert skipped == {"b.md", "latin.md"}
    assert {s["path"].rsplit("/", 1)[-1] for s in report.skipped} == {"b.md", "latin.md"}
    assert report.documents.deleted == 0
    assert "b.md" in {d.path for d in store.stored_documents().values()}
    store.close()


def test_missing_root_keeps_its_documents(tmp_path, corpus):
    """A corpus folder that vanishes (unmounted disk) keeps its stored documents."""
    runner, store = make_runner(tmp_path, corpus, FakeEmbedder())
    runner.run(trigger="test")
    corpus.rename(tmp_path / "elsewhere")
    with capture_logs() as logs:
        report = runner.run(trigger="test")
    assert any(e["event"] == "sync.corpus_missing" for e in logs)
    assert report.documents.deleted == 0
    assert store.stats()["documents"] == 3
    store.close()


def test_two_syncs_never_run_at_once(tmp_path, corpus):
    """A second sync while one runs is refused at once, in-process and across processes."""
    gate, release = threading.Event(), threading.Event()

    class SlowEmbedder(FakeEmbedder):
        def embed(self, texts):
            gate.set()
            release.wait(5)
            return super().embed(texts)

    runner, store = make_runner(tmp_path, corpus, SlowEmbedder())
    other, other_store = make_runner(tmp_path, corpus, FakeEmbedder())
    worker = threading.Thread(target=runner.run, kwargs={"trigger": "test"})
    worker.start()
    try:
        assert gate.wait(5)
        with pytest.raises(BusyError, match="already running"):
            runner.run(trigger="again")
        with pytest.raises(BusyError, match="another sync is running"):
            other.run(trigger="other process")
    finally:
        release.set()
        worker.join(10)
    assert other.run(trigger="after").documents.unchanged == 3
    store.close()
    other_store.close()


def test_sync_logs_one_finished_event_with_counts(tmp_path, corpus):
    """Each sync ends with one sync.finished event carrying counts and a duration."""
    runner, store = make_runner(tmp_path, corpus, FakeEmbedder())
    with capture_logs() as logs:
        runner.run(trigger="test")
    finished = [e for e in logs if e["event"] == "sync.finished"]
    assert len(finished) == 1
    assert finished[0]["documents"]["new"] == 3
    assert finished[0]["duration_s"] >= 0
    store.close()


def test_kept_by_skips_protects_files_and_folders():
    """Skipped files and skipped folders (trailing slash) protect stored documents below them."""
    a = make_document("a.md", "x", root="/r")
    b = make_document("dir/b.md", "x", root="/r")
    c = make_document("c.md", "x", root="/r")
    stored = [StoredDocument(d.doc_id, "/r", d.path, d.content_sha256, "v", ()) for d in (a, b, c)]
    assert kept_by_skips(stored, ["/r/a.md", "/r/dir/"]) == {a.doc_id, b.doc_id}


def test_files_deleted_or_changed_mid_sync_leave_a_consistent_store(tmp_path, corpus):
    """A file deleted or edited mid-sync is stored as read; the next sync catches up."""

    class MeddlingEmbedder(FakeEmbedder):
        meddled = False

        def embed(self, texts):
            if not self.meddled:
                self.meddled = True
                (corpus / "b.md").unlink()
                (corpus / "sub" / "c.txt").write_text("rewritten while syncing")
            return super().embed(texts)

    embedder = MeddlingEmbedder()
    runner, store = make_runner(tmp_path, corpus, embedder)
    runner.run(trigger="test")
    check_store(store.path, embedder.fingerprint.key)
    assert store.stats()["documents"] == 3  # stored as read at scan time
    report = runner.run(trigger="test")
    assert report.documents.as_dict() == {"new": 0, "changed": 1, "unchanged": 1, "deleted": 1}
    check_store(store.path, embedder.fingerprint.key)
    texts = [
        r.text
        for r in store.get_chunks(
            [
                h.chunk_id
                for h in store.dense_search(
                    embedder.embed(["rewritten"])[0], 50, embedder.fingerprint
                )
            ]
        )
    ]
    assert "c\nrewritten while syncing" in texts  # the title line, then the new text
    store.close()


def _events(logs, name):
    return [e for e in logs if e["event"] == name]


def test_quick_check_skips_reading_unchanged_files_and_catches_edits(tmp_path, corpus, monkeypatch):
    """Files whose stamp is unchanged are not read; an edit that restores size and mtime is
    still caught (ctime moves), and --full-check reads everything."""
    monkeypatch.setattr(documents, "STABLE_AFTER_S", 0.0)  # files here are seconds old
    embedder = FakeEmbedder()
    runner, store = make_runner(tmp_path, corpus, embedder)
    runner.run(trigger="test")
    with capture_logs() as logs:
        report = runner.run(trigger="test")
    planned = _events(logs, "sync.planned")[0]
    assert (planned["files_read"], planned["quick_checked"]) == (0, 3)
    assert report.documents.unchanged == 3
    # Same size, mtime put back: only the inode change time tells.
    path = corpus / "b.md"
    before = path.stat()
    text = path.read_text()
    path.write_text(text.replace("swap", "SWAP"))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_size == before.st_size
    with capture_logs() as logs:
        report = runner.run(trigger="test")
    assert report.documents.changed == 1
    assert _events(logs, "sync.planned")[0]["files_read"] == 1
    with capture_logs() as logs:
        runner.run(trigger="test", full_check=True)
    assert _events(logs, "sync.planned")[0]["files_read"] == 3
    store.close()


def test_quick_check_is_off_for_racily_clean_files(tmp_path, corpus):
    """A file modified within STABLE_AFTER_S of being read gets no stamp and is read again."""
    runner, store = make_runner(tmp_path, corpus, FakeEmbedder())
    runner.run(trigger="test")
    assert {d.stamp for d in store.stored_documents().values()} == {""}
    with capture_logs() as logs:
        runner.run(trigger="test")
    assert _events(logs, "sync.planned")[0]["files_read"] == 3
    store.close()


def test_file_stamp_needs_a_quiet_period():
    """file_stamp is empty for a file changed under two seconds ago, else size:mtime:ctime:ino."""
    info = Path(__file__).stat()
    newest = max(info.st_mtime_ns, info.st_ctime_ns)
    assert documents.file_stamp(info, now_ns=newest + 1_000_000_000) == ""
    stamp = documents.file_stamp(info, now_ns=newest + 3_000_000_000)
    assert stamp == f"{info.st_size}:{info.st_mtime_ns}:{info.st_ctime_ns}:{info.st_ino}"


def test_undecodable_file_name_is_one_skip_and_the_rest_is_indexed(tmp_path, corpus):
    """A name that is not UTF-8 is skipped, logged and reported escaped; the sync completes."""
    (corpus / os.fsdecode(b"caf\xe9.md")).write_bytes(b"# Cafe\n\nnotes from the cafe")
    runner, store = make_runner(tmp_path, corpus, FakeEmbedder())
    with capture_logs() as logs:
        report = runner.run(trigger="test")
    expected = {"path": f"{corpus.resolve()}/caf\\xe9.md", "reason": documents.NAME_NOT_UTF8}
    assert report.skipped == [expected]
    assert [{k: e[k] for k in expected} for e in _events(logs, "sync.file_skipped")] == [expected]
    assert report.documents.new == 3
    assert store.stats()["documents"] == 3
    # The report travels as UTF-8 JSON (HTTP, the CLI, /status): it must encode.
    served = json.loads(json.dumps(report.as_dict(), ensure_ascii=False).encode("utf-8"))
    assert (served["skipped"], served["skipped_count"]) == ([expected], 1)
    assert runner.state.consecutive_failures == 0
    store.close()


def test_report_json_lists_the_first_skips_and_counts_all():
    """The report's JSON lists at most SKIPPED_LISTED_MAX skips and counts every one."""
    skips = [{"path": f"/n/{i}.md", "reason": "binary file"} for i in range(SKIPPED_LISTED_MAX + 5)]
    shape = SyncReport(skipped=skips).as_dict()
    assert shape["skipped"] == skips[:SKIPPED_LISTED_MAX]
    assert shape["skipped_count"] == SKIPPED_LISTED_MAX + 5


def test_unchanged_resync_leaves_commit_seq_alone(tmp_path, corpus):
    """A sync that writes nothing does not bump commit_seq; one that writes does."""
    runner, store = make_runner(tmp_path, corpus, FakeEmbedder())
    runner.run(trigger="test")
    seq = store.commit_seq()
    assert runner.run(trigger="test").documents.unchanged == 3
    assert store.commit_seq() == seq
    (corpus / "b.md").write_text("# Beta\n\nedited text about swap files")
    runner.run(trigger="test")
    assert store.commit_seq() > seq
    store.close()


class FlakyEmbedder(FakeEmbedder):
    """Raises BackendUnavailable while `down` is set, like an Ollama that is not running."""

    down = True

    def embed(self, texts):
        if self.down:
            raise BackendUnavailable("cannot connect to the embedder")
        return super().embed(texts)


def test_failed_syncs_are_counted_until_one_succeeds(tmp_path, corpus):
    """Each sync that fails as a whole adds to the streak readiness reports; a success ends it."""
    embedder = FlakyEmbedder()
    runner, store = make_runner(tmp_path, corpus, embedder)
    for failures in (1, 2):
        with capture_logs() as logs, pytest.raises(BackendUnavailable):
            runner.run(trigger="test")
        assert _events(logs, "sync.failed")[0]["consecutive_failures"] == failures
    check = runner.state.readiness_check()
    assert {k: check[k] for k in ("ok", "required", "consecutive_failures", "error")} == {
        "ok": False,
        "required": False,
        "consecutive_failures": 2,
        "error": "BackendUnavailable: cannot connect to the embedder",
    }
    state = runner.state.as_dict()
    assert state["consecutive_failures"] == 2
    assert state["last_failure_at"] is not None
    embedder.down = False
    runner.run(trigger="test")
    check = runner.state.readiness_check()
    assert (check["ok"], check["consecutive_failures"], "error" in check) == (True, 0, False)
    assert runner.state.last_error is None
    store.close()


def test_unusable_sync_lock_is_a_recorded_failure(tmp_path, corpus):
    """A sync lock that cannot be opened fails the sync with StoreError, counted like any."""
    runner, store = make_runner(tmp_path, corpus, FakeEmbedder())
    (tmp_path / "data" / "sync.lock").mkdir()  # EISDIR, even for root
    with capture_logs() as logs, pytest.raises(StoreError, match="cannot take the sync lock"):
        runner.run(trigger="test")
    assert _events(logs, "sync.failed")[0]["consecutive_failures"] == 1
    assert runner.state.consecutive_failures == 1
    assert not runner.running  # the in-process lock was given back
    store.close()


MARK = "OVERLONG"  # a text holding it is refused, as Ollama refuses one over the context


def refusing() -> FakeEmbedder:
    return FakeEmbedder(batch_size=4, refuses=lambda text: MARK in text)


def test_a_chunk_the_model_refuses_skips_its_document_and_the_rest_is_synced(tmp_path, corpus):
    """One document with a refused chunk is skipped, reported and logged; every other document
    is committed, the sync succeeds, and the store is consistent."""
    (corpus / "d.md").write_text(f"# Delta\n\nfine start\n\n## Long\n\n{MARK} " + "x " * 50)
    embedder = refusing()
    runner, store = make_runner(tmp_path, corpus, embedder)
    with capture_logs() as logs:
        report = runner.run(trigger="test")
    assert embedder.refused_calls >= 2  # the window, then the text on its own
    assert [s["path"] for s in report.skipped] == [f"{corpus}/d.md"]
    assert "refused chunk 2 of 2" in report.skipped[0]["reason"]
    assert "exceeds the context length" in report.skipped[0]["reason"]
    assert report.documents.new == 3  # a, b and c; d was neither written nor counted
    assert {d.path for d in store.stored_documents().values()} == {"a.md", "b.md", "sub/c.txt"}
    (skipped,) = _events(logs, "sync.document_skipped")
    assert skipped["path"] == f"{corpus}/d.md"
    assert skipped["action"] == "new"
    assert skipped["kept"] == "nothing"
    assert skipped["log_level"] == "warning"
    assert _events(logs, "sync.finished")[0]["skipped"] == 1
    assert runner.state.consecutive_failures == 0
    assert runner.state.last_report is not None
    assert runner.state.last_report["skipped_count"] == 1
    check_store(store.path, embedder.fingerprint.key)
    store.close()


def test_a_refused_chunk_keeps_the_documents_stored_version(tmp_path, corpus):
    """An edit that makes a chunk too long for the model leaves the previous version stored
    and searchable; once the edit is undone the document syncs again."""
    embedder = refusing()
    runner, store = make_runner(tmp_path, corpus, embedder)
    runner.run(trigger="test")
    before = {d.path: d.chunk_hashes for d in store.stored_documents().values()}
    (corpus / "b.md").write_text(f"# Beta\n\nbeta text about swap files {MARK}")
    with capture_logs() as logs:
        report = runner.run(trigger="test")
    assert [s["path"] for s in report.skipped] == [f"{corpus}/b.md"]
    assert report.documents.as_dict() == {"new": 0, "changed": 0, "unchanged": 2, "deleted": 0}
    assert report.changed_because == {}
    assert _events(logs, "sync.document_skipped")[0]["kept"] == "the stored version"
    after = {d.path: d.chunk_hashes for d in store.stored_documents().values()}
    assert after == before
    hits = store.keyword_search("swap files", 5)
    assert any(r.path == "b.md" for r in store.get_chunks([h.chunk_id for h in hits]))
    (corpus / "b.md").write_text("# Beta\n\nbeta text about swap files, edited")
    again = runner.run(trigger="test")
    assert again.skipped == []
    assert again.documents.changed == 1
    store.close()


def test_a_backend_that_goes_down_while_a_refusal_is_sorted_out_fails_the_sync(tmp_path, corpus):
    """A refusal is one document's problem; a backend that is down while the refused window is
    taken apart is the sync's: it fails as a whole, as before, and is counted."""
    (corpus / "d.md").write_text(f"# Delta\n\n{MARK}")

    class DownAfterRefusal(FakeEmbedder):
        def embed(self, texts):
            if self.refused_calls:
                raise BackendUnavailable("cannot connect to the embedder")
            return super().embed(texts)

    embedder = DownAfterRefusal(batch_size=4, refuses=lambda text: MARK in text)
    runner, store = make_runner(tmp_path, corpus, embedder)
    with capture_logs() as logs, pytest.raises(BackendUnavailable):
        runner.run(trigger="test")
    assert _events(logs, "sync.document_skipped") == []
    assert _events(logs, "sync.failed")[0]["consecutive_failures"] == 1
    store.close()
