"""Start-up order: `/search` is served as soon as the index is loaded, before the generator
worker answers, and `/readyz` says which capabilities are ready.

The worker is kept from coming up by a socket that holds its port (listening, never answering):
the worker cannot bind and exits, the daemon's readiness probe of that port gets no answer, and
the worker's watcher respawns it with its crash backoff. Once the port is let go, the next
respawn comes up and `/ask` becomes ready — without restarting the daemon.
"""

from __future__ import annotations

import socket
import time

import httpx
import pytest

from tests.integration.conftest import QUIET, run_cli, start_daemon, stop_daemon
from tests.integration.corpus import write_corpus

pytestmark = pytest.mark.slow

# Bounds on waiting for a state (not timings under test): the worker's respawn backoff starts
# at 1 s and doubles, and Gemma 270M loads in a few seconds.
WORKER_UP_S = 90.0


def test_search_answers_while_the_worker_is_not_up_and_readiness_names_capabilities(
    tmp_path, model_dir
):
    """With the worker down, /search answers with results, /readyz is 503 with
    capabilities search: true, ask: false, /ask answers with passages; once the worker comes up,
    ask turns true."""
    # 1. A synced corpus, and a socket holding the port the worker is told to use.
    corpus = write_corpus(tmp_path / "notes")
    sync = run_cli(
        ["sync", "--corpus", str(corpus), "--data-dir", str(tmp_path / "data"), "--json"],
        model_dir,
    )
    assert sync.returncode == 0, sync.stderr
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(64)
    port = holder.getsockname()[1]
    daemon = None
    try:
        # 2. The daemon starts and serves although its worker cannot come up.
        daemon = start_daemon(
            corpus,
            tmp_path / "data",
            model_dir,
            tmp_path / "daemon.log",
            ready=False,
            RAGVISOR_WORKER__PORT=str(port),
            RAGVISOR_WORKER__START_TIMEOUT_S="5",
            **QUIET,
        )
        # 3. /search answers from the loaded index.
        found = httpx.get(f"{daemon.url}/search", params={"q": "vm.swappiness", "k": 3}, timeout=10)
        assert found.status_code == 200, found.text
        assert found.json()["results"]
        # 4. /readyz: not ready (the generator is a required check), search capable, ask not.
        readyz = httpx.get(f"{daemon.url}/readyz", timeout=10)
        assert readyz.status_code == 503
        body = readyz.json()
        assert body["capabilities"] == {"search": True, "ask": False}
        assert body["checks"]["generator"]["ok"] is False
        assert body["checks"]["store"]["ok"] is True
        # 5. /ask answers meanwhile, with the best passages, and says why.
        asked = httpx.post(
            f"{daemon.url}/ask",
            json={"question": "what should vm.swappiness be?", "k": 2},
            timeout=30,
        )
        assert asked.status_code == 200, asked.text
        assert asked.json()["degraded"]["answer"] == "extractive"
        # 6. Once the worker's first start has failed on the held port (the steps above can be
        # quicker than the worker's imports), the port is let go: a respawn of the worker comes
        # up, and ask becomes ready.
        deadline = time.monotonic() + WORKER_UP_S
        while "worker.start_failed" not in daemon.logs() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "worker.start_failed" in daemon.logs(), daemon.logs()[-3000:]
        holder.close()
        deadline = time.monotonic() + WORKER_UP_S
        while time.monotonic() < deadline:
            readyz = httpx.get(f"{daemon.url}/readyz", timeout=10)
            if readyz.status_code == 200:
                break
            time.sleep(0.5)
        else:
            pytest.fail(f"the worker did not come up in {WORKER_UP_S} s:\n{daemon.logs()}")
        assert readyz.json()["capabilities"] == {"search": True, "ask": True}
    finally:
        holder.close()
        if daemon is not None:
            stop_daemon(daemon)
