"""The store-wide sync lease as the sync runner uses it: refused while another daemon holds it,
taken over once that daemon's lease expired, given up when the sync ends."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import structlog
from structlog.testing import capture_logs

from ragvisor.application.sync_lease import SyncLease, dead_here
from ragvisor.application.sync_runner import SyncRunner
from ragvisor.core.chunking import ChunkingSpec
from ragvisor.core.documents import CorpusSpec
from ragvisor.errors import BusyError
from ragvisor.testing import FakeEmbedder, MemoryStore


def runner_on(store: MemoryStore, tmp_path: Path, *, may_sync: bool = True) -> SyncRunner:
    corpus = tmp_path / "notes"
    corpus.mkdir(exist_ok=True)
    (corpus / "a.md").write_text("# A\n\nswap files on small droplets")
    log = structlog.get_logger(component="sync")
    return SyncRunner(
        corpus=CorpusSpec(roots=(corpus,)),
        chunking=ChunkingSpec(),
        store=store,
        embedder=FakeEmbedder(),
        lock_path=tmp_path / "sync.lock",
        log=log,
        lease=SyncLease(store, 30.0, log, holder="me:1"),
        may_sync=may_sync,
    )


def test_a_sync_is_refused_while_another_daemon_holds_the_lease(tmp_path):
    """BusyError names the holder; nothing is synced; the other daemon's lease is untouched."""
    store = MemoryStore()
    store.take_lease("other:7", 30)
    runner = runner_on(store, tmp_path)
    with pytest.raises(BusyError, match="other:7"):
        runner.run(trigger="test")
    assert store.stats()["documents"] == 0
    assert store.read_lease().holder == "other:7"


def test_the_lease_is_held_during_a_sync_and_released_after(tmp_path):
    """During the sync the store names this daemon as the holder; afterwards nobody."""
    store = MemoryStore()
    runner = runner_on(store, tmp_path)
    seen = []
    runner.run(trigger="test", on_progress=lambda done, total: seen.append(store.read_lease()))
    assert seen
    assert {lease.holder for lease in seen} == {"me:1"}
    assert store.read_lease() is None


def test_an_expired_lease_of_a_dead_daemon_is_taken_over_and_its_sync_finished(tmp_path):
    """A lease left to expire (its holder killed mid-sync) makes the store watch's take_over
    run a sync, logged as `sync.lease_taken_over` with the previous holder."""
    store = MemoryStore()
    store.take_lease("dead:9", 0)
    runner = runner_on(store, tmp_path)
    with capture_logs() as logs:
        report = runner.take_over()
    assert report is not None
    assert report.documents.new == 1
    taken = next(e for e in logs if e["event"] == "sync.lease_taken_over")
    assert taken["previous_holder"] == "dead:9"
    assert store.read_lease() is None


@pytest.mark.parametrize(
    ("lease", "may_sync"),
    [(None, True), (("alive:2", 30.0), True), (("dead:9", 0.0), False)],
)
def test_take_over_leaves_a_live_lease_and_a_serving_only_daemon_alone(tmp_path, lease, may_sync):
    """No lease, a live one, or a daemon that does not sync on its own: take_over syncs nothing."""
    store = MemoryStore()
    if lease is not None:
        store.take_lease(*lease)
    assert runner_on(store, tmp_path, may_sync=may_sync).take_over() is None
    assert store.stats()["documents"] == 0


def test_a_lease_left_by_a_killed_process_of_this_host_is_taken_at_once(tmp_path):
    """`ragvisor sync` killed with SIGKILL leaves its lease unexpired; the next sync on the same
    host sees its pid gone and takes the lease without waiting `lease_s`."""
    gone = subprocess.Popen(["true"])
    gone.wait()
    store = MemoryStore()
    store.take_lease(f"{socket.gethostname()}:{gone.pid}", 3600)
    assert dead_here(f"{socket.gethostname()}:{gone.pid}")
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "ragvisor"])
    try:
        while "ragvisor" not in " ".join(psutil.Process(alive.pid).cmdline()):
            time.sleep(0.01)  # until the child has exec'd (before, it shows pytest's command)
        assert not dead_here(f"{socket.gethostname()}:{alive.pid}")  # a running ragvisor
    finally:
        alive.kill()
        alive.wait()
    assert not dead_here(f"another-host:{gone.pid}")  # another host's pids are not ours to judge
    with capture_logs() as logs:
        report = runner_on(store, tmp_path).run(trigger="test")
    assert report.documents.new == 1
    assert any(e["event"] == "sync.lease_taken_from_dead_process" for e in logs)
