"""Several daemons on one real Neo4j: one syncs at a time, every one serves what was committed,
and a syncing daemon killed with SIGKILL hands its sync over within `sync.lease_s` + 5 s."""

from __future__ import annotations

import signal
import time

import httpx

from tests.infra.neo4j_engine import Engine
from tests.integration.conftest import run_cli, start_daemon, stop_daemon
from tests.integration.corpus import synthetic_corpus, write_corpus

LEASE_S = 6.0


def status(url: str) -> dict:
    return httpx.get(f"{url}/status", timeout=10).json()


def test_two_daemons_one_syncs_both_serve_and_a_killed_syncer_hands_over(
    neo4j_engine: Engine, tmp_path, model_dir
):
    """1. The notes synced into Neo4j; daemons A and B serve them, each with its own data dir;
    2. a note added and synced through A is found through B at once, no restart; 3. while A
    syncs 60 more documents, B's sync is refused naming A as the lease holder; 4. A is killed
    with SIGKILL mid-sync: B takes the lease over within lease_s + 5 s and finishes the sync,
    and every document is then searchable through B."""
    neo4j_engine.wipe()
    store = neo4j_engine.daemon_env()
    corpus = write_corpus(tmp_path / "notes")
    first = run_cli(
        ["sync", "--corpus", str(corpus), "--data-dir", str(tmp_path / "cli")], model_dir, **store
    )
    assert first.returncode == 0, first.stderr
    # 1. Two daemons, both allowed to sync on their own (but not at start, nor soon).
    env = {
        **store,
        "RAGVISOR_SYNC__ON_START": "false",
        "RAGVISOR_SYNC__INTERVAL_S": "3600",
        "RAGVISOR_SYNC__LEASE_S": str(LEASE_S),
    }
    a = start_daemon(corpus, tmp_path / "a", model_dir, tmp_path / "a.log", **env)
    b = start_daemon(corpus, tmp_path / "b", model_dir, tmp_path / "b.log", **env)
    try:
        # 2. Committed through A, found through B.
        (corpus / "ops" / "lease.md").write_text(
            "# Leases\n\nOnly the daemon holding the lease runs a sync against the shared graph."
        )
        synced = httpx.post(
            f"{a.url}/admin/sync",
            params={"wait": "true"},
            headers={"Authorization": f"Bearer {a.token}"},
            timeout=120,
        )
        assert synced.status_code == 200, synced.text
        hits = httpx.get(
            f"{b.url}/search", params={"q": "which daemon holds the lease", "k": 1}, timeout=30
        ).json()["results"]
        assert hits[0]["path"] == "ops/lease.md"
        # 3. A syncs a bigger corpus; B is refused while A holds the lease.
        synthetic_corpus(corpus / "bulk", documents=60)
        started = httpx.post(
            f"{a.url}/admin/sync", headers={"Authorization": f"Bearer {a.token}"}, timeout=10
        )
        assert started.status_code in (200, 202), started.text
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            lease = status(b.url)["sync"]["lease"]
            if lease is not None and status(a.url)["store"]["documents"] > 6:
                break
            time.sleep(0.1)
        assert lease is not None
        assert lease["mine"] is False
        refused = httpx.post(
            f"{b.url}/admin/sync",
            params={"wait": "true"},
            headers={"Authorization": f"Bearer {b.token}"},
            timeout=30,
        )
        assert refused.status_code == 409, refused.text
        assert lease["holder"] in refused.json()["error"]
        # 4. A dies mid-sync; B takes over within lease_s + 5 s and finishes the corpus.
        a.process.send_signal(signal.SIGKILL)
        a.process.wait(10)
        killed_at = time.monotonic()
        taken_after = None
        while time.monotonic() - killed_at < LEASE_S + 30:
            if "sync.lease_taken_over" in b.logs():
                taken_after = time.monotonic() - killed_at
                break
            time.sleep(0.1)
        assert taken_after is not None, b.logs()[-3000:]
        assert taken_after <= LEASE_S + 5, taken_after
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            sync = status(b.url)["sync"]
            if not sync["running"] and sync["last_report"] is not None:
                break
            time.sleep(0.2)
        assert sync["last_error"] is None, sync
        assert status(b.url)["store"]["documents"] == 5 + 60
        hits = httpx.get(
            f"{b.url}/search",
            params={"q": "topic59 detail3 item1832", "k": 3, "mode": "keyword"},
            timeout=30,
        ).json()["results"]
        assert hits[0]["path"] == "bulk/doc059.md"
    finally:
        stop_daemon(a)
        stop_daemon(b)
