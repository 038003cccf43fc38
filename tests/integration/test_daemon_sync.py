"""The daemon keeps the store in step with the corpus: on start, on schedule, on demand."""

from __future__ import annotations

import json
import signal
import time

import httpx

from tests.consistency import check_store
from tests.integration.corpus import synthetic_corpus, write_corpus


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
