"""`GET /status/history` over real HTTP: the ring buffer behind the status page's plots, filled
by a real daemon's memory guard and its answered requests."""

from __future__ import annotations

import time

import httpx

from tests.integration.conftest import stop_daemon, synced_daemon


def test_the_history_gathers_memory_rss_and_the_latency_of_answered_requests(tmp_path, model_dir):
    """Searches and one answer show up, in the next sample, as counts and medians of /search,
    /ask and the time to first token; each sample has available memory and the daemon's and
    the worker's RSS; the buffer's size follows `ui.history_s` over `memory.interval_s`."""
    daemon = synced_daemon(
        tmp_path,
        model_dir,
        RAGVISOR_MEMORY__INTERVAL_S="0.5",
        RAGVISOR_UI__HISTORY_S="60",
        RAGVISOR_GENERATOR__NUM_PREDICT="8",
    )
    try:
        for _ in range(3):
            assert httpx.get(f"{daemon.url}/search", params={"q": "swap"}).status_code == 200
        answer = httpx.post(f"{daemon.url}/ask", json={"question": "swap?"}, timeout=120)
        assert answer.status_code == 200, answer.text
        assert httpx.get(f"{daemon.url}/search", params={"q": " "}).status_code == 400
        deadline = time.monotonic() + 15
        while True:
            body = httpx.get(f"{daemon.url}/status/history", timeout=10).json()
            if sum(body["ask_ms"]["count"]) and len(body["t"]) >= 2:
                break
            assert time.monotonic() < deadline, body
            time.sleep(0.3)
        assert (body["interval_s"], body["capacity"], body["window_s"]) == (0.5, 120, 60.0)
        assert sum(body["search_ms"]["count"]) == 3  # the refused one is not a latency
        assert sum(body["ask_ms"]["count"]) == 1
        assert sum(body["first_token_ms"]["count"]) == 1
        assert any(p50 for p50 in body["search_ms"]["p50"])
        assert all(len(body[key]) == len(body["t"]) for key in ("available_mb",))
        assert body["available_mb"][-1] > 0
        assert body["rss_mb"]["daemon"][-1] > 50
        assert body["rss_mb"]["worker"][-1] > 0
        assert body["t"] == sorted(body["t"])
    finally:
        stop_daemon(daemon)
