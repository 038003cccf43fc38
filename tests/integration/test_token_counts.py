"""Token counts stored at sync, end to end: a real daemon, its embedded worker (llama.cpp and
the pinned Gemma GGUF) and the counting process reading the same GGUF's vocabulary.

After the start-up sync the job counts every chunk; the counts it stored equal what the
worker's own tokenizer says for the same texts; `/ask` then packs by them, and no token-count
request reaches the worker.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from typing import Any

import httpx
import pytest

from ragvisor.errors import BackendError
from ragvisor.llm.gguf import DEFAULT_GGUF_SHA256
from ragvisor.llm.token_counter import GgufTokenCounter
from tests.integration.conftest import gguf_file, stop_daemon, synced_daemon

QUESTION = "what should vm.swappiness be on a small droplet?"


def finished_counts(url: str, timeout_s: float = 120) -> dict[str, Any]:
    """`/status`'s `sync.token_counts` once a pass has finished (bounded)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        counts = httpx.get(f"{url}/status", timeout=10).json()["sync"]["token_counts"]
        if counts and counts.get("finished_at") and not counts["running"]:
            return counts
        time.sleep(0.2)
    raise AssertionError(f"no token-count pass finished in {timeout_s} s")


def worker_requests(logs: str) -> list[str]:
    """The endpoints of the worker's `worker.request` log lines."""
    endpoints = []
    for line in logs.splitlines():
        if '"worker.request"' in line:
            endpoints.append(json.loads(line).get("endpoint", ""))
    return endpoints


def test_counts_stored_at_sync_match_the_worker_and_pack_ask(tmp_path, model_dir):
    """Every chunk is counted after the start-up sync, each count equals the worker's own
    tokenizer's, and `/ask` packs by them (`counted_with: stored`) without a token-count request
    to the worker."""
    daemon = synced_daemon(tmp_path, model_dir, RAGVISOR_SYNC__ON_START="true")
    try:
        counts = finished_counts(daemon.url)
        assert counts["counter"] == f"gguf-sha256:{DEFAULT_GGUF_SHA256}"
        assert counts["counted"] > 0
        assert '"token_counts.finished"' in daemon.logs()

        with sqlite3.connect(daemon.data_dir / "ragvisor.sqlite3") as db:
            rows = db.execute(
                "SELECT min(c.text), t.tokens FROM chunks c JOIN token_counts t "
                "USING (text_sha256) GROUP BY c.text_sha256"
            ).fetchall()
            chunks = db.execute("SELECT count(DISTINCT text_sha256) FROM chunks").fetchone()[0]
        assert len(rows) == chunks == counts["counted"]
        status = httpx.get(f"{daemon.url}/status", timeout=10).json()
        generator = status["backends"]["generator"]
        worker = httpx.post(
            f"{generator['url']}/api/ragvisor/token_count",
            json={"model": generator["model"], "texts": [text.strip() for text, _ in rows]},
            timeout=120,
        )
        assert worker.status_code == 200, worker.text
        assert worker.json()["counts"] == [tokens for _, tokens in rows]

        before = worker_requests(daemon.logs()).count("/api/ragvisor/token_count")
        response = httpx.post(f"{daemon.url}/ask", json={"question": QUESTION, "k": 3}, timeout=180)
        assert response.status_code == 200, response.text
        tokens = response.json()["tokens"]
        assert tokens["counted_with"] == "stored"
        # The backend read at least the counted floor: nothing was cut.
        assert tokens["prompt"] >= tokens["prompt_planned"] * 0.7
        assert tokens["prompt"] <= tokens["prompt_planned"]
        after = worker_requests(daemon.logs()).count("/api/ragvisor/token_count")
        assert after == before  # only the test's own request above, none for the /ask
    finally:
        stop_daemon(daemon)


def test_the_pinned_models_counter_is_known_at_once_another_after_hashing(tmp_path):
    """The pinned GGUF's identity needs no hashing (so /ask uses stored counts from the start);
    another file is hashed when first asked; a file llama.cpp cannot read fails the count with
    llama.cpp's own reason, and the counting process is gone."""
    pinned = GgufTokenCounter(gguf_file())
    assert pinned.known_key == f"gguf-sha256:{DEFAULT_GGUF_SHA256}"
    assert pinned.count(["hello world", ""]) == [2, 0]
    pinned.close()

    other = tmp_path / "my-model.gguf"
    other.write_bytes(b"not really a model")
    counter = GgufTokenCounter(other)
    assert counter.known_key is None
    assert counter.key == "gguf-sha256:" + hashlib.sha256(b"not really a model").hexdigest()
    assert counter.known_key == counter.key
    with pytest.raises(BackendError, match=r"token counter exited: .*[Ff]ailed to load model"):
        counter.count(["hello"])
    assert counter._child is None
