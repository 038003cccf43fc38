"""`truncated: true` from prompt_eval_count, and the metrics an operator scrapes, over real HTTP.

The daemon talks to a scripted Ollama (`generator.backend = "ollama"`) that reports whatever
`prompt_eval_count` the test sets: equal to num_ctx means Ollama cut the prompt to fit, which it
says nowhere else (ollama #3427).
"""

from __future__ import annotations

import httpx
import pytest

from tests.integration.conftest import stop_daemon, synced_daemon
from tests.integration.scripted_ollama import scripted_ollama

NUM_CTX = 1024

# Every family the issue asks /metrics to carry, by the name Prometheus shows.
FAMILIES = [
    "ragvisor_http_request_duration_seconds_bucket",
    "ragvisor_ask_time_to_first_token_seconds_bucket",
    "ragvisor_ask_tokens_per_second_bucket",
    "ragvisor_lane_queue_depth",
    "ragvisor_lane_active",
    "ragvisor_backend_calls_total",
    "ragvisor_breaker_state",
    "ragvisor_memory_available_bytes",
    "ragvisor_process_rss_bytes",
    "ragvisor_memory_level",
    "ragvisor_truncated_prompts_total",
    "ragvisor_sync_runs_total",
    "ragvisor_last_sync_success_timestamp_seconds",
]


@pytest.fixture(scope="module")
def scripted(tmp_path_factory, model_dir):
    with scripted_ollama() as (url, script):
        daemon = synced_daemon(
            tmp_path_factory.mktemp("truncation"),
            model_dir,
            RAGVISOR_GENERATOR__BACKEND="ollama",
            RAGVISOR_GENERATOR__URL=url,
            RAGVISOR_GENERATOR__MODEL="scripted",
            RAGVISOR_GENERATOR__NUM_CTX=str(NUM_CTX),
            RAGVISOR_GENERATOR__NUM_PREDICT="64",
            RAGVISOR_MEMORY__INTERVAL_S="0.5",
        )
        try:
            yield daemon, script
        finally:
            stop_daemon(daemon)


def ask(url: str) -> dict:
    response = httpx.post(f"{url}/ask", json={"question": "swappiness?", "k": 2}, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def test_a_prompt_eval_count_at_num_ctx_is_reported_as_truncated(scripted):
    """A prompt_eval_count at num_ctx is reported as truncated in the answer, log and metric."""
    daemon, script = scripted
    script.prompt_eval_count = NUM_CTX
    body = ask(daemon.url)
    assert body["truncated"] is True
    assert body["tokens"]["prompt"] == NUM_CTX
    assert '"truncated": true' in daemon.logs()
    metrics = httpx.get(f"{daemon.url}/metrics", timeout=10).text
    assert "ragvisor_truncated_prompts_total 1.0" in metrics


def test_a_prompt_that_fit_is_not_truncated(scripted):
    """A prompt that fit is not truncated, and the limits are always sent to Ollama."""
    daemon, script = scripted
    script.prompt_eval_count = 200
    body = ask(daemon.url)
    assert body["truncated"] is False
    assert body["tokens"]["counted_with"] == "estimate"  # a real Ollama has no token counter
    sent = script.requests[-1]["options"]
    assert sent["num_ctx"] == NUM_CTX  # always sent, never Ollama's own default
    assert sent["num_predict"] == 64


def test_metrics_carry_every_family_an_operator_needs(scripted):
    """/metrics carries every family the docs promise after a search, an ask and a sync."""
    daemon, script = scripted
    script.prompt_eval_count = 200
    ask(daemon.url)
    httpx.get(f"{daemon.url}/search", params={"q": "swap"}, timeout=10)
    synced = httpx.post(
        f"{daemon.url}/admin/sync",
        params={"wait": "true"},
        headers={"Authorization": f"Bearer {daemon.token}"},
        timeout=60,
    )
    assert synced.status_code == 200, synced.text
    response = httpx.get(f"{daemon.url}/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    missing = [name for name in FAMILIES if name not in text]
    assert not missing, missing
    assert 'ragvisor_http_request_duration_seconds_count{endpoint="/ask",status="200"}' in text
    assert 'ragvisor_lane_queue_depth{lane="ask"} 0.0' in text
    assert 'ragvisor_breaker_state{backend="generator"} 0.0' in text
    assert 'ragvisor_process_rss_bytes{process="daemon"}' in text
    assert 'ragvisor_sync_runs_total{outcome="ok",trigger="admin"} 1.0' in text
    status = httpx.get(f"{daemon.url}/status", timeout=10).json()
    assert status["sync"]["last_sync_age_s"] is not None


def test_status_reports_the_ollama_backend_and_lanes(scripted):
    """/status reports the Ollama backend with its breaker, the three lanes and the memory level."""
    daemon, _ = scripted
    status = httpx.get(f"{daemon.url}/status", timeout=10).json()
    generator = status["backends"]["generator"]
    assert generator["kind"] == "ollama"
    assert generator["model"] == "scripted"
    assert generator["breaker"]["state"] == "closed"
    assert set(status["lanes"]) == {"search", "ask", "sync"}
    assert status["memory"]["level"] in {"ok", "pressure", "critical"}
    assert status["store"]["ok"] is True
