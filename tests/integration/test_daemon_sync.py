"""The daemon keeps the store in step with the corpus: on start, on schedule, on demand."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time

import httpx

from tests.consistency import check_store
from tests.integration.conftest import run_cli
from tests.integration.corpus import synthetic_corpus, write_corpus

# A daemon that only syncs when asked, without a generator (these tests are about sync).
ON_DEMAND = {
    "RAGVISOR_SYNC__ON_START": "false",
    "RAGVISOR_SYNC__INTERVAL_S": "0",
    "RAGVISOR_GENERATOR__BACKEND": "none",
}


def wait_for(predicate, timeout: float = 60.0, interval: float = 0.1):
    """Poll a predicate until it returns something truthy, bounded in time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not met in time")


def top_path(url: str, query: str, mode: str = "dense") -> str | None:
    params = {"q": query, "k": 1, "mode": mode}
    results = httpx.get(f"{url}/search", params=params).json()["results"]
    return results[0]["path"] if results else None


def test_daemon_syncs_on_start_and_on_schedule(tmp_path, daemon_factory):
    """Started on an unsynced corpus the daemon syncs at once, then picks up edits by itself."""
    # 1. Start on a fresh corpus with a 1-second interval: the start-up sync makes it searchable.
    notes = write_corpus(tmp_path / "notes")
    daemon = daemon_factory(notes, RAGVISOR_SYNC__INTERVAL_S="1")
    assert wait_for(lambda: top_path(daemon.url, "sourdough bread") == "recipes/bread.md")
    # 2. A new note appears on disk; within a few intervals search finds it without any call.
    (notes / "ops" / "ollama.md").write_text(
        "# Ollama keep-alive\n\nOLLAMA_KEEP_ALIVE=0 unloads the model right after each request."
    )
    assert wait_for(
        lambda: top_path(daemon.url, "unload the model after each request") == "ops/ollama.md"
    )
    # 3. The note is deleted; the scheduled sync retires its chunks from search.
    (notes / "ops" / "ollama.md").unlink()
    assert wait_for(
        lambda: top_path(daemon.url, "unload the model after each request") != "ops/ollama.md"
    )
    # 4. Each sync left one sync.finished event in the log.
    events = [json.loads(line) for line in daemon.logs().splitlines() if line.startswith("{")]
    finished = [e for e in events if e["event"] == "sync.finished"]
    assert len(finished) >= 3
    assert all(e["trigger"] == "schedule" for e in finished)


def test_admin_sync_starts_one_and_refuses_a_second(tmp_path, daemon_factory):
    """POST /admin/sync answers 202 and starts a sync; a second one meanwhile gets 409."""
    corpus = synthetic_corpus(tmp_path / "corpus", documents=40)
    daemon = daemon_factory(corpus, RAGVISOR_SYNC__ON_START="false", RAGVISOR_SYNC__INTERVAL_S="0")
    auth = {"Authorization": f"Bearer {daemon.token}"}
    first = httpx.post(f"{daemon.url}/admin/sync", headers=auth)
    assert first.status_code == 202
    second = httpx.post(f"{daemon.url}/admin/sync", headers=auth)
    assert second.status_code == 409
    assert "already running" in second.json()["error"]
    state = wait_for(
        lambda: (
            (s := httpx.get(f"{daemon.url}/admin/sync", headers=auth).json())["last_report"]
            and not s["running"]
            and s
        ),
        timeout=120,
    )
    assert state["last_report"]["documents"]["new"] == 40
    assert top_path(daemon.url, "topic7", mode="keyword") == "doc007.md"


def test_search_keeps_answering_while_a_sync_runs(tmp_path, daemon_factory):
    """Searches during a long sync answer from what is committed so far, never an error."""
    corpus = synthetic_corpus(tmp_path / "corpus", documents=40)
    daemon = daemon_factory(corpus, RAGVISOR_SYNC__INTERVAL_S="0")
    statuses = set()
    seen_results = 0
    deadline = time.monotonic() + 120
    with httpx.Client() as client:
        while time.monotonic() < deadline:
            response = client.get(f"{daemon.url}/search", params={"q": "topic3 detail1", "k": 3})
            statuses.add(response.status_code)
            seen_results = max(seen_results, len(response.json()["results"]))
            state = httpx.get(f"{daemon.url}/readyz").json()["checks"]["store"]
            if state["documents"] == 40 and seen_results == 3:
                break
            time.sleep(0.05)
    assert statuses == {200}
    assert seen_results == 3


def test_sigterm_mid_sync_stops_gracefully_and_keeps_the_store_consistent(
    tmp_path, daemon_factory, embedder
):
    """SIGTERM during a sync stops the daemon within seconds; the store stays consistent."""
    corpus = synthetic_corpus(tmp_path / "corpus", documents=40)
    daemon = daemon_factory(corpus, RAGVISOR_SYNC__INTERVAL_S="0")
    wait_for(
        lambda: httpx.get(f"{daemon.url}/readyz").json()["checks"]["store"]["documents"] > 2,
        interval=0.02,
    )
    started = time.monotonic()
    daemon.process.send_signal(signal.SIGTERM)
    daemon.process.wait(30)
    stopped_after_s = time.monotonic() - started
    assert daemon.process.returncode == 0
    assert stopped_after_s < 15
    events = [
        json.loads(line)["event"] for line in daemon.logs().splitlines() if line.startswith("{")
    ]
    assert "app.stopped" in events
    assert "sync.finished" not in events  # it was cancelled, not run to the end
    counts = check_store(daemon.data_dir / "ragvisor.sqlite3", embedder.fingerprint.key)
    assert 0 < counts["documents"] < 40


def test_admin_sync_reports_an_undecodable_name_as_one_skip(tmp_path, daemon_factory):
    """POST /admin/sync?wait=true answers 200 listing the skip; a no-op re-sync keeps commit_seq."""
    # 1. The notes, plus a file whose name is not UTF-8.
    notes = write_corpus(tmp_path / "notes")
    (notes / os.fsdecode(b"bad\xff.md")).write_bytes(b"# Bad name\n\nNot indexed under this name.")
    daemon = daemon_factory(notes, **ON_DEMAND)
    auth = {"Authorization": f"Bearer {daemon.token}"}
    skip = {
        "path": f"{notes.resolve()}/bad\\xff.md",
        "reason": "name is not valid UTF-8 (rename it, e.g. with convmv)",
    }

    def sync() -> dict:
        answer = httpx.post(
            f"{daemon.url}/admin/sync", params={"wait": "true"}, headers=auth, timeout=120
        )
        assert answer.status_code == 200, answer.text
        return answer.json()["report"]

    # 2. The sync finishes: four documents indexed, the fifth file listed as skipped.
    report = sync()
    assert report["documents"]["new"] == 4
    assert (report["skipped"], report["skipped_count"]) == ([skip], 1)
    assert top_path(daemon.url, "swappiness", mode="keyword") == "ops/swap.md"
    # 3. Ready, the sync check ok, the skip in /status's last report.
    ready = httpx.get(f"{daemon.url}/readyz").json()
    assert ready["ready"] is True
    assert ready["checks"]["sync"]["ok"] is True
    assert httpx.get(f"{daemon.url}/status").json()["sync"]["last_report"]["skipped"] == [skip]
    # 4. A re-sync with nothing to write leaves commit_seq where it was.
    seq = ready["checks"]["store"]["commit_seq"]
    again = sync()
    assert again["documents"] == {"new": 0, "changed": 0, "unchanged": 4, "deleted": 0}
    assert httpx.get(f"{daemon.url}/readyz").json()["checks"]["store"]["commit_seq"] == seq


def test_failing_syncs_show_in_readyz_status_and_health(tmp_path, daemon_factory, model_dir):
    """Syncs failing on a locked store answer 503, keep /readyz at 200 with a failing sync
    check, are counted in /status and make `ragvisor health` WARN; the next good sync clears
    all three."""
    notes = write_corpus(tmp_path / "notes")
    daemon = daemon_factory(notes, RAGVISOR_STORE__BUSY_TIMEOUT_S="0.2", **ON_DEMAND)
    auth = {"Authorization": f"Bearer {daemon.token}"}

    def sync() -> httpx.Response:
        return httpx.post(
            f"{daemon.url}/admin/sync", params={"wait": "true"}, headers=auth, timeout=120
        )

    # 1. Another process holds the store's write lock, as a stuck writer would.
    holder = sqlite3.connect(daemon.data_dir / "ragvisor.sqlite3", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        # 2. Two syncs fail as a whole: 503 store_unavailable with Retry-After, not a 500.
        failed = [sync() for _ in range(2)]
        assert [f.status_code for f in failed] == [503, 503]
        assert failed[0].json()["code"] == "store_unavailable"
        assert "database is locked" in failed[0].json()["error"]
        assert int(failed[0].headers["Retry-After"]) >= 1
        # 3. /readyz: still 200 and ready (search answers), the sync check failing with why.
        ready = httpx.get(f"{daemon.url}/readyz")
        assert ready.status_code == 200
        assert ready.json()["ready"] is True
        check = ready.json()["checks"]["sync"]
        assert (check["ok"], check["required"], check["consecutive_failures"]) == (False, False, 2)
        assert "database is locked" in check["error"]
        # 4. /status: the error and the streak.
        state = httpx.get(f"{daemon.url}/status").json()["sync"]
        assert state["consecutive_failures"] == 2
        assert "database is locked" in state["last_error"]
        # 5. `ragvisor health`: WARNING, exit 1, saying so in its one line.
        health = run_cli(["health", "--url", daemon.url], model_dir)
        assert health.returncode == 1, health.stdout + health.stderr
        assert "last 2 syncs failed: StoreError: " in health.stdout
        assert "database is locked" in health.stdout
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    # 6. The lock is gone: the next sync succeeds and every signal is back to normal.
    assert sync().status_code == 200
    check = httpx.get(f"{daemon.url}/readyz").json()["checks"]["sync"]
    assert (check["ok"], check["consecutive_failures"]) == (True, 0)
    health = run_cli(["health", "--url", daemon.url], model_dir)
    assert health.returncode == 0, health.stdout + health.stderr
