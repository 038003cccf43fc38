"""The daemon on the real Neo4j: its credentials stay secret, and a database that is away at start
makes a daemon that is up, unready and honest about why — until the database comes back."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx

from tests.infra.engine_steps import free_port
from tests.infra.neo4j_engine import Engine
from tests.integration.conftest import run_cli, start_daemon, stop_daemon, synced_daemon
from tests.integration.corpus import write_corpus

HEALTH = [sys.executable, "-m", "ragvisor", "health"]


def test_the_password_is_never_shown_or_logged(neo4j_engine: Engine, tmp_path, model_dir):
    """1. Sync and serve on Neo4j with the password in RAGVISOR_STORE__PASSWORD; 2. search
    answers from Neo4j; 3. neither /status, /readyz nor any log line holds the password, while
    /status says which database it serves from."""
    neo4j_engine.wipe()
    env = {**neo4j_engine.daemon_env(), "RAGVISOR_STORE__PASSWORD": neo4j_engine.password}
    del env["RAGVISOR_STORE__PASSWORD_FILE"]
    daemon = synced_daemon(tmp_path, model_dir, store_env=env)
    try:
        hits = httpx.get(f"{daemon.url}/search", params={"q": "swappiness", "k": 1}).json()
        assert hits["results"][0]["path"] == "ops/swap.md"
        status = httpx.get(f"{daemon.url}/status").text
        ready = httpx.get(f"{daemon.url}/readyz").text
        store = httpx.get(f"{daemon.url}/status").json()["store"]
        assert store["backend"] == "neo4j"
        assert store["uri"] == neo4j_engine.uri
        assert store["documents"] == 4
    finally:
        stop_daemon(daemon)
    secret = neo4j_engine.password
    assert secret not in status
    assert secret not in ready
    assert secret not in daemon.logs()


def test_neo4j_away_at_start_then_back(neo4j_engine: Engine, tmp_path, model_dir):
    """1. A daemon whose Neo4j is not running starts anyway; 2. /readyz is 503 naming the store,
    /search is 503 `store_unavailable` with Retry-After, `ragvisor health` is CRITICAL;
    3. once Neo4j answers on that port, the same daemon serves without a restart."""
    # 1. A second engine on its own port, not started yet; the daemon points at it.
    away = Engine.in_folder(tmp_path / "away", free_port())
    corpus = write_corpus(tmp_path / "notes")
    env = {**away.daemon_env(), "RAGVISOR_SYNC__INTERVAL_S": "2"}
    daemon = start_daemon(
        corpus, tmp_path / "data", model_dir, tmp_path / "daemon.log", ready=False, **env
    )
    try:
        # 2. Up, not ready, and saying why.
        ready = httpx.get(f"{daemon.url}/readyz", timeout=10)
        assert ready.status_code == 503
        assert ready.json()["checks"]["store"]["ok"] is False
        assert "Neo4j cannot be reached" in ready.json()["checks"]["store"]["error"]
        started = time.monotonic()
        search = httpx.get(f"{daemon.url}/search", params={"q": "swap"}, timeout=30)
        assert time.monotonic() - started < 16  # embedder.deadlines.request_s + 1
        assert search.status_code == 503
        assert search.json()["code"] == "store_unavailable"
        assert int(search.headers["retry-after"]) >= 1
        health = subprocess.run(
            [*HEALTH, "--url", daemon.url], capture_output=True, text=True, timeout=60, check=False
        )
        assert health.returncode == 2, health.stdout
        assert "store not reachable" in health.stdout
        assert "app.store_unavailable" in daemon.logs()
        # 3. Neo4j comes up: the next scheduled sync fills it, search answers from it.
        away.start()
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                body = httpx.get(f"{daemon.url}/readyz", timeout=10).json()
                if body["checks"]["store"].get("documents") == 4:
                    break
                time.sleep(0.5)
            assert body["checks"]["store"]["documents"] == 4, body
            hits = httpx.get(f"{daemon.url}/search", params={"q": "swappiness", "k": 1}).json()
            assert hits["results"][0]["path"] == "ops/swap.md"
        finally:
            stop_daemon(daemon)
            away.stop()
    finally:
        stop_daemon(daemon)


def test_cli_sync_against_an_unreachable_neo4j_fails_clearly(tmp_path, model_dir):
    """`ragvisor sync` with nothing on the Bolt port exits non-zero with the store named, and
    no traceback."""
    corpus = write_corpus(tmp_path / "notes")
    env = {
        "RAGVISOR_STORE__BACKEND": "neo4j",
        "RAGVISOR_STORE__URI": f"bolt://127.0.0.1:{free_port()}",
        "RAGVISOR_STORE__PASSWORD": "not-needed",
    }
    result = run_cli(
        ["sync", "--corpus", str(corpus), "--data-dir", str(tmp_path / "data")], model_dir, **env
    )
    assert result.returncode != 0
    assert "Neo4j cannot be reached" in result.stderr
    assert "Traceback" not in result.stderr
