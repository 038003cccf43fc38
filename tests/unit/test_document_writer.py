"""PUT/DELETE /documents' writer on real files and SQLite: atomic writes into the managed
folder, the scoped sync of that one document, and the refusals that keep writes inside it."""

from __future__ import annotations

import threading

import pytest
import structlog

from ragvisor.application.document_writer import DocumentWriter
from ragvisor.application.sync_runner import SyncRunner
from ragvisor.core.chunking import ChunkingSpec
from ragvisor.core.documents import CorpusSpec
from ragvisor.errors import DocumentNotFound, InputError, Overloaded, PathRefused
from ragvisor.store.sqlite import SqliteStore
from ragvisor.testing import FakeEmbedder


@pytest.fixture
def setup(tmp_path):
    """A managed folder with one other document, a runner on SQLite, and the writer."""
    root = tmp_path / "notes"
    root.mkdir()
    (root / "other.md").write_text("# Other\n\nuntouched text")
    store = SqliteStore(tmp_path / "data")
    spec = CorpusSpec(roots=(root,))
    runner = SyncRunner(
        corpus=spec,
        chunking=ChunkingSpec(size_chars=300, overlap_chars=40),
        store=store,
        embedder=FakeEmbedder(),
        lock_path=tmp_path / "data" / "sync.lock",
        log=structlog.get_logger(component="sync"),
    )
    runner.run(trigger="cli")
    settled: list[str] = []
    writer = DocumentWriter(root, spec, runner, wait_s=0.1, on_settled=settled.append)
    yield writer, store, root, runner, settled
    store.close()


def test_put_writes_syncs_only_that_document_and_delete_removes_it(setup):
    """new, changed, unchanged, deleted — and the other document is never looked at."""
    writer, store, root, _, settled = setup
    first = writer.put("guides/a.md", b"# A\n\nfirst text")
    assert (first.action, first.searchable) == ("new", True)
    assert (root / "guides" / "a.md").read_bytes() == b"# A\n\nfirst text"
    assert [p.name for p in (root / "guides").iterdir()] == ["a.md"]  # no temp file left
    assert writer.put("guides/a.md", b"# A\n\nfirst text").action == "unchanged"
    assert writer.put("guides/a.md", b"# A\n\nsecond text").action == "changed"
    assert sorted(d.path for d in store.stored_documents().values()) == ["guides/a.md", "other.md"]
    gone = writer.delete("guides/a.md")
    assert (gone.action, gone.searchable) == ("deleted", False)
    assert [d.path for d in store.stored_documents().values()] == ["other.md"]
    assert settled == [str(root.resolve() / "guides" / "a.md")] * 4
    with pytest.raises(DocumentNotFound):
        writer.delete("guides/a.md")


@pytest.mark.parametrize(
    ("path", "error"),
    [("../x.md", InputError), ("/etc/passwd", InputError), ("a.py", PathRefused),
     (".git/x.md", PathRefused), ("link/x.md", PathRefused), ("file.md/x.md", PathRefused),
     ("linked.md", PathRefused)],
)  # fmt: skip
def test_paths_outside_or_left_out_are_refused_and_nothing_is_written(setup, tmp_path, path, error):
    """Traversal, absolute paths, other suffixes, symlinks and files on the way are refused."""
    writer, _, root, _, _ = setup
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "link").symlink_to(outside, target_is_directory=True)
    (root / "linked.md").symlink_to(outside / "t.md")
    (root / "file.md").write_text("x")
    with pytest.raises(error):
        writer.put(path, b"# x\n")
    assert list(outside.iterdir()) == []


def test_a_body_that_is_not_text_is_refused(setup):
    """A NUL or bytes that are not UTF-8 are a 400, before anything is written."""
    writer, _, root, _, _ = setup
    for body in (b"a\0b", b"\xff\xfe"):
        with pytest.raises(InputError):
            writer.put("bad.md", body)
    assert not (root / "bad.md").exists()


def test_a_running_sync_past_the_wait_is_overloaded_and_nothing_is_written(setup):
    """While another sync holds the lock past wait_s: Overloaded (503), no file."""
    writer, _, root, runner, _ = setup
    held = threading.Event()
    release = threading.Event()

    def hold() -> None:
        held.set()
        release.wait(5)

    thread = threading.Thread(target=lambda: runner.run(trigger="admin", prepare=hold))
    thread.start()
    held.wait(5)
    try:
        with pytest.raises(Overloaded):
            writer.put("late.md", b"# late\n")
    finally:
        release.set()
        thread.join(5)
    assert not (root / "late.md").exists()
