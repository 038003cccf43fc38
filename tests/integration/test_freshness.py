"""Freshness: the folder watch syncs what changed on disk, and `PUT`/`DELETE /documents/{path}`
write into the managed corpus folder and answer once search agrees — with real files, real
inotify (watchfiles) and a real daemon over loopback."""

from __future__ import annotations

import contextlib
import json
import threading
from pathlib import Path

import httpx
import pytest
import structlog
from structlog.testing import capture_logs

from ragvisor.application.sync_runner import SyncRunner
from ragvisor.core.chunking import ChunkingSpec
from ragvisor.core.documents import CorpusSpec
from ragvisor.errors import InputError
from ragvisor.runtime.corpus_watch import CorpusWatch
from ragvisor.store.sqlite import SqliteStore
from ragvisor.testing import FakeEmbedder
from tests.integration.conftest import Daemon, stop_daemon, synced_daemon
from tests.integration.test_daemon_sync import top_path, wait_for

pytestmark = pytest.mark.slow

# The watch on (as `make run` has it), nothing else syncing on its own, no generator. A debounce
# of 1 s, not the default 0.3 s: on a loaded CI box writing the 500 files of the burst may pause
# for longer than 0.3 s, and the burst must still be one batch.
WATCHING = {
    "RAGVISOR_SYNC__WATCH": "true",
    "RAGVISOR_SYNC__WATCH_DEBOUNCE_S": "1.0",
    "RAGVISOR_SYNC__WATCH_MAX_WAIT_S": "5",
    "RAGVISOR_GENERATOR__BACKEND": "none",
}
BURST_FILES = 500


@pytest.fixture
def daemon(tmp_path, model_dir):
    """The small notes corpus, synced, and a daemon watching it."""
    started = synced_daemon(tmp_path, model_dir, **WATCHING)
    wait_for(lambda: "watch.started" in _names(started), timeout=30)
    yield started
    stop_daemon(started)


def _events(daemon: Daemon) -> list[dict]:
    return [json.loads(line) for line in daemon.logs().splitlines() if line.startswith("{")]


def _names(daemon: Daemon) -> list[str]:
    return [event["event"] for event in _events(daemon)]


def _syncs(daemon: Daemon, trigger: str) -> list[dict]:
    """The `sync.finished` events of one trigger so far."""
    return [e for e in _events(daemon) if e["event"] == "sync.finished" and e["trigger"] == trigger]


def _found(daemon: Daemon, query: str) -> str | None:
    return top_path(daemon.url, query, mode="keyword")


def _documents(daemon: Daemon) -> int:
    return httpx.get(f"{daemon.url}/readyz").json()["checks"]["store"]["documents"]


def test_watch_syncs_an_edit_a_new_file_a_rename_and_a_delete(daemon):
    """Each change on disk reaches search through the watch alone, old text and paths gone."""
    notes = Path(daemon.data_dir).parent / "notes"
    # 1. A new file: searchable without any call.
    (notes / "ops" / "ollama.md").write_text("# Ollama\n\nOLLAMA_KEEP_ALIVE zebraword unloads.\n")
    assert wait_for(lambda: _found(daemon, "zebraword") == "ops/ollama.md", timeout=30)
    # 2. An edit: the new word is found, the old one no longer.
    (notes / "ops" / "ollama.md").write_text("# Ollama\n\nOLLAMA_KEEP_ALIVE quaggaword now.\n")
    assert wait_for(lambda: _found(daemon, "quaggaword") == "ops/ollama.md", timeout=30)
    assert _found(daemon, "zebraword") is None
    # 3. A rename: found under the new path only.
    (notes / "ops" / "ollama.md").rename(notes / "ops" / "keepalive.md")
    assert wait_for(lambda: _found(daemon, "quaggaword") == "ops/keepalive.md", timeout=30)
    # 4. A folder renamed: its documents move with it.
    (notes / "recipes").rename(notes / "baking")
    assert wait_for(lambda: _found(daemon, "sourdough") == "baking/bread.md", timeout=30)
    # 5. A delete: gone from search.
    (notes / "ops" / "keepalive.md").unlink()
    assert wait_for(lambda: _found(daemon, "quaggaword") is None, timeout=30)
    assert _documents(daemon) == 4
    # 6. Every one of those syncs was the watch's, each logged with what it changed.
    assert _syncs(daemon, "watch")
    assert "watch.changes" in _names(daemon)
    assert not _syncs(daemon, "schedule")
    # 7. SIGTERM stops the watch with the daemon, cleanly.
    stop_daemon(daemon)
    assert daemon.process.returncode == 0
    names = _names(daemon)
    assert names.index("watch.stopped") < names.index("app.stopped")


def test_a_burst_of_500_files_is_one_sync(daemon):
    """500 files written at once (a git pull) are synced by exactly one sync."""
    notes = Path(daemon.data_dir).parent / "notes"
    before = len(_syncs(daemon, "watch"))
    # 1. Write 500 files into a new folder and 1 beside, as fast as the file system takes them.
    burst = notes / "pulled"
    burst.mkdir()
    for i in range(BURST_FILES - 1):
        (burst / f"note{i:03d}.md").write_text(f"# Note {i}\n\nburstword{i} text.\n")
    (notes / "pulled-index.md").write_text("# Index\n\nburstindex.\n")
    # 2. All of them arrive in the store (bounded: 500 small documents embed in well under 2 min).
    assert wait_for(lambda: _documents(daemon) == 4 + BURST_FILES, timeout=180, interval=0.5)
    # 3. One more file afterwards, as a marker: once it is searchable, any late batch of the
    #    burst would have been synced before it or with it.
    (notes / "marker.md").write_text("# Marker\n\nmarkerword.\n")
    assert wait_for(lambda: _found(daemon, "markerword") == "marker.md", timeout=30)
    # 4. Exactly one watch sync took the 500, the next one took the marker alone.
    after = _syncs(daemon, "watch")[before:]
    assert [s["documents"]["new"] for s in after] == [BURST_FILES, 1], after
    assert _found(daemon, "burstword123") == "pulled/note123.md"


def test_put_and_delete_documents(daemon):
    """PUT writes and syncs before answering; DELETE removes; both need the admin token."""
    auth = {"Authorization": f"Bearer {daemon.token}"}
    url = f"{daemon.url}/documents/guides/freshness.md"
    # 1. Without the token: 401, nothing written.
    assert httpx.put(url, content=b"# x\n").status_code == 401
    assert httpx.delete(url).status_code == 401
    # 2. A new document: 201, searchable at once (no wait before the search).
    created = httpx.put(url, content="# Freshness\n\nokapiword arrives.\n", headers=auth)
    assert created.status_code == 201, created.text
    body = created.json()
    assert (body["path"], body["action"], body["searchable"]) == (
        "guides/freshness.md",
        "new",
        True,
    )
    assert body["searchable_at"] > 0
    assert body["sync_ms"] > 0
    assert _found(daemon, "okapiword") == "guides/freshness.md"
    notes = Path(daemon.data_dir).parent / "notes"
    assert (notes / "guides" / "freshness.md").read_text() == "# Freshness\n\nokapiword arrives.\n"
    # 3. The same text again: unchanged; a new text: changed, the old word gone.
    same = httpx.put(url, content="# Freshness\n\nokapiword arrives.\n", headers=auth)
    assert (same.status_code, same.json()["action"]) == (200, "unchanged")
    changed = httpx.put(url, content="# Freshness\n\ntapirword now.\n", headers=auth)
    assert (changed.status_code, changed.json()["action"]) == (200, "changed")
    assert _found(daemon, "tapirword") == "guides/freshness.md"
    assert _found(daemon, "okapiword") is None
    # 4. DELETE: gone from disk and search; a second DELETE is a 404.
    deleted = httpx.delete(url, headers=auth)
    assert deleted.status_code == 200, deleted.text
    assert (deleted.json()["action"], deleted.json()["searchable"]) == ("deleted", False)
    assert _found(daemon, "tapirword") is None
    assert not (notes / "guides" / "freshness.md").exists()
    assert httpx.delete(url, headers=auth).json()["code"] == "not_found"


def _put_raw(daemon: Daemon, raw_path: str, body: bytes = b"# x\n") -> httpx.Response:
    """PUT with the request target exactly as given (no client-side dot-segment removal)."""
    headers = {"Authorization": f"Bearer {daemon.token}"}
    request = httpx.Request("PUT", daemon.url, headers=headers, content=body)
    request.url = request.url.copy_with(raw_path=raw_path.encode())
    with httpx.Client() as client:
        return client.send(request)


def test_document_paths_that_escape_or_are_left_out_are_refused(daemon, tmp_path):
    """Traversal, absolute paths, symlinks, excluded folders and other suffixes are 4xx, and
    nothing is written outside the corpus."""
    notes = Path(daemon.data_dir).parent / "notes"
    outside = tmp_path / "outside"
    outside.mkdir()
    (notes / "link.md").symlink_to(outside / "target.md")
    (notes / "linkdir").symlink_to(outside, target_is_directory=True)
    refused = {
        "/documents/..%2F..%2Fetc%2Fpasswd": 400,
        # Literal dot segments are removed before any route sees them: /etc/passwd.md, no route.
        "/documents/../../etc/passwd.md": 404,
        "/documents/%2Fetc%2Fpasswd.md": 400,
        "/documents//etc/passwd.md": 400,
        "/documents/ops/%2E/swap.md": 400,
        "/documents/%2E%2E/%2E%2E/etc/passwd.md": 400,
        "/documents/a%00b.md": 400,
        "/documents/bad%FF.md": 400,
        "/documents/link.md": 403,
        "/documents/linkdir/new.md": 403,
        "/documents/.git/config.md": 403,
        "/documents/script.py": 403,
        "/documents/ops": 403,
    }
    for raw, status in refused.items():
        answer = _put_raw(daemon, raw)
        assert answer.status_code == status, (raw, answer.status_code, answer.text)
        assert set(answer.json()) >= {"error", "code"}, raw
    assert list(outside.iterdir()) == []
    assert not (notes / "script.py").exists()
    # A body with NUL, and one over corpus.max_file_bytes.
    assert _put_raw(daemon, "/documents/nul.md", b"a\0b").status_code == 400
    assert _put_raw(daemon, "/documents/big.md", b"x" * 2_000_001).status_code == 413


def test_changes_during_a_running_sync_are_synced_once_right_after_it(tmp_path):
    """While another sync holds the lock, the watch keeps every change and syncs them all in
    one sync once it ends (in-process: real inotify, real files and SQLite, a fake embedder)."""
    root = tmp_path / "notes"
    root.mkdir()
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
    held, release = threading.Event(), threading.Event()

    def hold_the_lock() -> None:
        """Hold the sync lock until released, then end without scanning anything."""
        held.set()
        release.wait(30)
        raise InputError("ended on purpose")

    def other_sync() -> None:
        with contextlib.suppress(InputError):
            runner.run(trigger="admin", prepare=hold_the_lock)

    other = threading.Thread(target=other_sync)
    with capture_logs() as logs:
        watch = CorpusWatch(
            runner, spec, debounce_s=0.1, max_wait_s=1.0, log=structlog.get_logger()
        )
        watch.start()
        try:
            # 1. The watch runs; another sync takes the lock and keeps it.
            wait_for(lambda: any(e["event"] == "watch.started" for e in logs), timeout=10)
            other.start()
            held.wait(10)
            # 2. Three files, in separate batches, while that sync runs.
            for name in ("a.md", "b.md", "c.md"):
                (root / name).write_text(f"# {name}\n\ntext of {name}\n")
                wait_for(
                    lambda name=name: any(
                        e["event"] == "watch.changes" and name in e["first"] for e in logs
                    ),
                    timeout=10,
                )
            # 3. The other sync ends; the three arrive in the store.
            release.set()
            other.join(10)
            wait_for(lambda: len(store.stored_documents()) == 3, timeout=10)
        finally:
            release.set()
            watch.request_stop()
            assert watch.join(5)
            store.close()
    # 4. One watch sync took all three.
    finished = [e for e in logs if e["event"] == "watch.sync_finished"]
    assert [e["documents"]["new"] for e in finished] == [3]
