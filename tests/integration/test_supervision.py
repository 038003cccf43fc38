"""Supervision end to end: the daemon, a real generator and a fault proxy between them.

Each test runs against both generators (the `generator` fixture): the daemon's embedded
llama.cpp worker, and a real Ollama built from source — its embedder then a second real Ollama
(`all-minilm`), as the worker's rig embeds through a second worker.

Every fault the proxy can inject is survived — retried, or answered degraded — and no request
outlives `request_s` by more than a second. A frozen generator is cleared by the ladder and
back in service without anyone stepping in; the breaker opens and closes; a full lane answers
503 with Retry-After; the memory guard acts on (simulated) pressure while /search keeps
answering; a dead embedder turns /search into keyword search that says so.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from ragvisor.faultproxy import Fault, FaultPlan, FaultProxy, running_proxy
from tests.infra.ollama_engine import EMBED_MODEL
from tests.integration.conftest import Daemon, free_port, gguf_file, stop_daemon, synced_daemon
from tests.integration.generators import Generator
from tests.integration.test_ask import gone, wait_for_log
from tests.integration.worker_fixtures import start_worker, stop_worker

QUESTION = "what should vm.swappiness be on a small droplet?"
REQUEST_S = 12.0
# Deadlines small enough that a hang costs seconds, large enough for a loaded 2-core box.
SUPERVISED = {
    "RAGVISOR_GENERATOR__NUM_PREDICT": "12",
    "RAGVISOR_ASK__DEFAULT_K": "1",
    "RAGVISOR_GENERATOR__DEADLINES__CONNECT_S": "2",
    "RAGVISOR_GENERATOR__DEADLINES__FIRST_TOKEN_S": "4",
    "RAGVISOR_GENERATOR__DEADLINES__STALL_S": "2",
    "RAGVISOR_GENERATOR__DEADLINES__TOTAL_S": "10",
    "RAGVISOR_GENERATOR__DEADLINES__REQUEST_S": str(REQUEST_S),
    "RAGVISOR_GENERATOR__RETRY__ATTEMPTS": "3",
    "RAGVISOR_GENERATOR__RETRY__BACKOFF_BASE_S": "0.1",
    "RAGVISOR_GENERATOR__RETRY__BACKOFF_MAX_S": "0.4",
    "RAGVISOR_GENERATOR__BREAKER__FAILURE_THRESHOLD": "4",
    "RAGVISOR_GENERATOR__BREAKER__OPEN_S": "3",
    "RAGVISOR_GENERATOR__LADDER__HANG_THRESHOLD": "2",
    # A short window (the rate over it is unit-tested): 2 of the last 2 calls hung start the
    # ladder. Each /ask here reaches about one hang before its 12 s run out.
    "RAGVISOR_GENERATOR__LADDER__HANG_WINDOW": "2",
    "RAGVISOR_GENERATOR__LADDER__UNLOAD_TIMEOUT_S": "2",
    "RAGVISOR_GENERATOR__LADDER__CONFIRM_TIMEOUT_S": "2",
    "RAGVISOR_GENERATOR__LADDER__RESTART_BACKOFF_S": "1",
    "RAGVISOR_GENERATOR__LADDER__RESTART_BUDGET_PER_HOUR": "20",
    "RAGVISOR_GENERATOR__LADDER__PROBE_TIMEOUT_S": "60",
    "RAGVISOR_EMBEDDER__DEADLINES__FIRST_TOKEN_S": "2",
    "RAGVISOR_EMBEDDER__DEADLINES__REQUEST_S": "5",
    "RAGVISOR_EMBEDDER__RETRY__BACKOFF_BASE_S": "0.1",
    "RAGVISOR_EMBEDDER__LADDER__RESTART_COMMAND": '["true"]',
    "RAGVISOR_MEMORY__INTERVAL_S": "0.5",
}


@dataclass
class Rig:
    """A daemon whose generator and embedder are each reached through a fault proxy."""

    daemon: Daemon
    chat_proxy: FaultProxy
    embed_proxy: FaultProxy
    memory_file: Path
    generator: Generator

    def plan(self, proxy: FaultProxy, *script: Fault, **kw: object) -> None:
        proxy.set_plan(FaultPlan(script=script, **kw))  # type: ignore[arg-type]

    def status(self) -> dict:
        return httpx.get(f"{self.daemon.url}/status", timeout=10).json()

    def metric(self, name: str, **labels: str) -> float:
        text = httpx.get(f"{self.daemon.url}/metrics", timeout=10).text
        want = ",".join(f'{k}="{v}"' for k, v in labels.items())
        for line in text.splitlines():
            if line.startswith(name + ("{" + want + "}" if want else " ")):
                return float(line.rsplit(" ", 1)[1])
        return 0.0


def ask(url: str, **body: object) -> tuple[httpx.Response, float]:
    """POST /ask and measure how long it took from the client's side."""
    started = time.monotonic()
    response = httpx.post(f"{url}/ask", json={"question": QUESTION, **body}, timeout=60)
    return response, time.monotonic() - started


def stream(url: str) -> tuple[list[dict], float]:
    started = time.monotonic()
    with httpx.stream(
        "POST", f"{url}/ask", json={"question": QUESTION, "stream": True}, timeout=60
    ) as response:
        assert response.status_code == 200
        events = [json.loads(line) for line in response.iter_lines() if line.strip()]
    return events, time.monotonic() - started


@pytest.fixture(scope="module")
def rig(tmp_path_factory, model_dir, generator: Generator) -> Iterator[Rig]:
    base = tmp_path_factory.mktemp("supervision")
    memory_file = base / "memory.json"
    memory_file.write_text("{}")
    with contextlib.ExitStack() as stack:
        if generator.server is None:
            embed_worker = start_worker(
                gguf_file(), model_dir, base / "embed-data", base / "embed-worker.log"
            )
            stack.callback(stop_worker, embed_worker)
            embed_url, embed_model = embed_worker.url, "all-minilm"
            worker_port = free_port()
            chat_upstream = f"http://127.0.0.1:{worker_port}"
        else:
            embed_url = generator.start_server(base / "ollama-embed").url
            embed_model = EMBED_MODEL
            chat_upstream = generator.server.url
        chat_proxy = stack.enter_context(running_proxy(chat_upstream))
        embed_proxy = stack.enter_context(running_proxy(embed_url))
        if generator.server is None:
            chat_env = {
                "RAGVISOR_WORKER__PORT": str(worker_port),
                "RAGVISOR_WORKER__PROXY_URL": chat_proxy.url,
            }
        else:
            chat_env = generator.daemon_env(chat_proxy.url)
        # The sync embeds with the same embedder the daemon queries (through the proxy): its
        # vectors are the active generation, so /search embeds with it, not another model.
        embedder_env = {
            "RAGVISOR_EMBEDDER__BACKEND": "ollama",
            "RAGVISOR_EMBEDDER__URL": embed_proxy.url,
            "RAGVISOR_EMBEDDER__MODEL": embed_model,
        }
        daemon = synced_daemon(
            base,
            model_dir,
            store_env=embedder_env,
            RAGVISOR_TEST_MEMORY_FILE=str(memory_file),
            **SUPERVISED,
            **chat_env,
        )
        stack.callback(stop_daemon, daemon)
        rig = Rig(daemon, chat_proxy, embed_proxy, memory_file, generator)
        warm, _ = ask(daemon.url)  # loads the chat model: later timings are warm
        assert warm.status_code == 200, warm.text
        yield rig


@pytest.fixture(autouse=True)
def calm(rig: Rig) -> None:
    """Each test starts with no faults, memory fine and every breaker closed."""
    rig.plan(rig.chat_proxy)
    rig.plan(rig.embed_proxy)
    rig.memory_file.write_text("{}")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        backends = rig.status()["backends"]
        states = [b["breaker"]["state"] for b in backends.values() if b.get("breaker")]
        if all(state == "closed" for state in states) and not any(
            b["ladder"]["running"] for b in backends.values() if b.get("ladder")
        ):
            break
        ask(rig.daemon.url)  # a half-open breaker closes on the next good call
        time.sleep(0.5)
    rig.chat_proxy.reset_stats()
    rig.embed_proxy.reset_stats()


@pytest.mark.parametrize(
    "fault",
    [
        Fault.HANG,
        Fault.SLOW_FIRST_BYTE,
        Fault.STALL,
        Fault.HTTP_500,
        Fault.BUSY_503,
        Fault.ERROR_LINE,
        Fault.RESET,
    ],
)
def test_each_transient_fault_is_retried_into_a_generated_answer(rig: Rig, fault: Fault):
    """Each transient fault is retried into a generated answer within the request deadline."""
    rig.plan(rig.chat_proxy, fault, slow_s=1.0)
    response, took = ask(rig.daemon.url)
    assert response.status_code == 200, response.text
    body = response.json()
    assert "degraded" not in body or body["degraded"] is None, body
    assert body["model"] == "gemma3-270m"
    assert body["answer"]
    assert took <= REQUEST_S + 1
    assert rig.chat_proxy.stats()["by_fault"][fault.value] == 1


def test_out_of_memory_is_not_retried_and_the_answer_is_extractive(rig: Rig):
    """An out-of-memory refusal is not retried: the answer is extractive at once, with citations."""
    rig.plan(rig.chat_proxy, Fault.OOM)
    response, took = ask(rig.daemon.url)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["degraded"]["answer"] == "extractive"
    assert "memory" in body["degraded"]["reason"]
    assert body["citations"]
    assert body["citations"][0]["path"] == "ops/swap.md"
    assert body["done_reason"] == "degraded"
    assert rig.chat_proxy.stats()["by_path"]["/api/chat"] == 1  # never retried
    assert took <= REQUEST_S + 1


def test_a_stream_that_breaks_after_tokens_announces_the_retry(rig: Rig):
    """A stream that breaks after tokens announces a retry event, then completes."""
    rig.plan(rig.chat_proxy, Fault.ERROR_LINE, stall_after_lines=2)
    events, took = stream(rig.daemon.url)
    kinds = [e["type"] for e in events]
    assert kinds[0] == "citations"
    assert "retry" in kinds, kinds
    assert kinds.index("delta") < kinds.index("retry")
    assert kinds[-1] == "done"
    assert events[-1].get("degraded") is None
    assert took <= REQUEST_S + 1


def test_a_backend_that_always_hangs_gets_an_extractive_answer_in_time(rig: Rig):
    """A backend that always hangs gets an extractive answer within the deadline, counted."""
    rig.chat_proxy.set_plan(FaultPlan(probabilities={Fault.HANG: 1.0}))
    for _ in range(3):
        response, took = ask(rig.daemon.url)
        assert response.status_code == 200, response.text
        assert response.json()["degraded"]["answer"] == "extractive"
        assert took <= REQUEST_S + 1, took
    assert rig.metric("ragvisor_backend_timeouts_total", backend="generator", phase="first_token")


def test_the_breaker_opens_on_repeated_errors_and_closes_when_they_stop(rig: Rig):
    """Repeated failures open the breaker (no call reaches the backend); a good trial closes it."""
    rig.chat_proxy.set_plan(FaultPlan(probabilities={Fault.HTTP_500: 1.0}))
    for _ in range(6):  # breaker.failure_threshold (4) calls that fail after their retries
        response, _ = ask(rig.daemon.url)
        assert response.json()["degraded"]["answer"] == "extractive"
        if rig.status()["backends"]["generator"]["breaker"]["state"] == "open":
            break
    assert rig.status()["backends"]["generator"]["breaker"]["state"] == "open"
    # While open, no call reaches the backend: the answer is extractive at once.
    before = rig.chat_proxy.stats()["by_path"].get("/api/chat", 0)
    response, took = ask(rig.daemon.url)
    assert "circuit is open" in response.json()["degraded"]["reason"]
    assert rig.chat_proxy.stats()["by_path"].get("/api/chat", 0) == before
    assert took < 2
    rig.plan(rig.chat_proxy)
    time.sleep(3.2)  # breaker.open_s: the next call is the trial
    response, _ = ask(rig.daemon.url)
    assert response.json().get("degraded") is None, response.text
    assert rig.status()["backends"]["generator"]["breaker"]["state"] == "closed"
    assert rig.metric("ragvisor_breaker_transitions_total", backend="generator", state="open") >= 1
    assert wait_for_log(rig.daemon, '"event": "breaker.open"')
    assert wait_for_log(rig.daemon, '"event": "breaker.closed"')


def test_a_frozen_generator_is_cleared_by_the_ladder_and_back_in_service(rig: Rig):
    """SIGSTOP the process that generates — the worker, or Ollama's model runner while
    `ollama serve` keeps answering /api/version and /api/tags (Ollama #1863, #10119): hung
    calls start the ladder, which clears the wedge without anyone stepping in. The worker is
    restarted; Ollama's unload takes the frozen runner with it (real Ollama 0.17 kills it), so
    no restart is needed there. Generated answers come back."""
    pid = rig.generator.hang_pid(rig.daemon.url)
    ladder_before = rig.status()["backends"]["generator"]["ladder"]
    runs_before = count_events(rig.daemon, "ladder.finished")
    os.kill(pid, signal.SIGSTOP)  # wedged: the socket accepts, nothing ever answers
    try:
        if rig.generator.server is not None:
            assert httpx.get(f"{rig.generator.server.url}/api/version", timeout=5).is_success
        for _ in range(3):
            response, took = ask(rig.daemon.url)
            assert response.status_code == 200, response.text
            assert took <= REQUEST_S + 1
            if rig.status()["backends"]["generator"]["ladder"]["runs"] > ladder_before["runs"]:
                break
        finished = wait_for_count(rig.daemon, "ladder.finished", runs_before, timeout=60)
        assert finished, rig.daemon.logs()[-4000:]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)  # never leave a frozen child behind a failed test
    answered = wait_for_generated_answer(rig)
    assert answered is not None, rig.daemon.logs()[-4000:]
    logs = rig.daemon.logs()
    for step in ("ladder.started", "ladder.unload", "ladder.probe"):
        assert f'"event": "{step}"' in logs
    assert psutil_gone(pid)
    if rig.generator.server is None:
        assert rig.generator.hang_pid(rig.daemon.url) != pid
        ladder = rig.status()["backends"]["generator"]["ladder"]
        assert ladder["restarts_last_hour"] == ladder_before["restarts_last_hour"] + 1
        assert '"event": "ladder.restart"' in logs
        assert rig.metric("ragvisor_backend_restarts_total", backend="generator") >= 1


def wait_for_generated_answer(rig: Rig, timeout: float = 90) -> dict | None:
    """Ask until an answer is generated (not extractive), bounded; None if none came."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response, _ = ask(rig.daemon.url)
        if response.status_code == 200 and response.json().get("degraded") is None:
            return response.json()
        time.sleep(1)
    return None


def psutil_gone(pid: int, timeout: float = 10) -> bool:
    """The process has exited (or is a zombie nobody reaped yet), within `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if gone(pid):
            return True
        time.sleep(0.1)
    return False


def test_a_full_lane_answers_503_with_retry_after(rig: Rig):
    # Each answer takes >= 2 s behind a slow first byte; the ask lane runs 1 and queues 8.
    """Past the ask lane's queue a request is a 503 `overloaded` with Retry-After."""
    rig.chat_proxy.set_plan(FaultPlan(probabilities={Fault.SLOW_FIRST_BYTE: 1.0}, slow_s=2.0))
    with ThreadPoolExecutor(max_workers=14) as pool:
        responses = list(pool.map(lambda _: ask(rig.daemon.url)[0], range(14)))
    statuses = [r.status_code for r in responses]
    assert 503 in statuses
    assert 200 in statuses, statuses
    refused = next(r for r in responses if r.status_code == 503)
    assert refused.json()["code"] == "overloaded"
    assert int(refused.headers["Retry-After"]) >= 1
    assert rig.metric("ragvisor_lane_rejected_total", lane="ask") >= 1


def test_memory_pressure_unloads_sheds_ask_and_search_keeps_answering(rig: Rig):
    """Memory pressure unloads the generator, /ask turns extractive, and search keeps answering."""
    rig.memory_file.write_text(json.dumps({"available_mb": 300}))  # below low (400)
    assert wait_for_level(rig, "pressure")
    response, _ = ask(rig.daemon.url)
    body = response.json()
    assert body["degraded"]["answer"] == "extractive"
    assert "memory" in body["degraded"]["reason"]
    assert wait_for_log(rig.daemon, '"action": "unload_generator"', timeout=10)
    search = httpx.get(f"{rig.daemon.url}/search", params={"q": "swappiness"}, timeout=10)
    assert search.status_code == 200
    assert search.json()["results"]

    rig.memory_file.write_text(json.dumps({"available_mb": 100}))  # below critical (200)
    assert wait_for_level(rig, "critical")
    response, _ = ask(rig.daemon.url)
    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) >= 1
    search = httpx.get(f"{rig.daemon.url}/search", params={"q": "swappiness"}, timeout=10)
    assert search.status_code == 200
    assert search.json()["results"]

    rig.memory_file.write_text("{}")
    assert wait_for_level(rig, "ok", timeout=20)
    response, _ = ask(rig.daemon.url)
    assert response.status_code == 200
    assert response.json().get("degraded") is None


def count_events(daemon: Daemon, name: str) -> int:
    return daemon.logs().count(f'"event": "{name}"')


def wait_for_count(daemon: Daemon, name: str, above: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if count_events(daemon, name) > above:
            return True
        time.sleep(0.1)
    return False


def wait_for_level(rig: Rig, level: str, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if rig.status()["memory"].get("level") == level:
            return True
        time.sleep(0.2)
    return False


@pytest.mark.parametrize("fault", [Fault.HANG, Fault.HTTP_500, Fault.RESET])
def test_search_falls_back_to_keywords_when_the_embedder_fails(rig: Rig, fault: Fault):
    """A failing embedder makes search answer from keywords, marked degraded, in time."""
    rig.embed_proxy.set_plan(FaultPlan(probabilities={fault: 1.0}))
    started = time.monotonic()
    response = httpx.get(f"{rig.daemon.url}/search", params={"q": "swappiness"}, timeout=30)
    took = time.monotonic() - started
    assert response.status_code == 200, response.text
    body = response.json()
    assert "embedder" in body["degraded"]["reason"]
    assert body["results"]
    assert body["results"][0]["path"] == "ops/swap.md"
    assert took <= 5 + 1  # embedder.deadlines.request_s + 1
    rig.plan(rig.embed_proxy)


def test_search_is_dense_again_once_the_embedder_answers(rig: Rig):
    """Once the embedder answers again, search is dense and not degraded."""
    response = httpx.get(f"{rig.daemon.url}/search", params={"q": "swappiness"}, timeout=30)
    assert response.status_code == 200
    assert "degraded" not in response.json()


def test_before_the_chat_model_loads_the_embedder_is_unloaded_and_a_misfit_is_not_loaded(
    rig: Rig,
):
    """Memory is fine (above the low mark) but the chat model would not fit beside the
    embedding model: the guard unloads the embedder first and, when even that is not enough,
    the answer is extractive — the generator is never asked to load."""
    model = "gemma3-270m"
    unload = httpx.post(
        f"{rig.chat_proxy.url}/api/generate", json={"model": model, "keep_alive": 0}, timeout=30
    )
    assert unload.status_code == 200
    search = httpx.get(f"{rig.daemon.url}/search", params={"q": "swap"}, timeout=10)
    assert search.status_code == 200  # the remote embedding model is resident now
    loaded = httpx.get(f"{rig.embed_proxy.url}/api/ps", timeout=10).json()["models"]
    assert loaded
    # 450 MB free: no pressure (low mark 400), but the GGUF plus overhead plus 256 MB headroom
    # does not fit.
    rig.memory_file.write_text(json.dumps({"available_mb": 450}))
    time.sleep(1.5)  # a few guard checks (interval 0.5 s) at the new reading
    assert rig.status()["memory"]["level"] == "ok"
    chats_before = rig.chat_proxy.stats()["by_path"].get("/api/chat", 0)
    response, _ = ask(rig.daemon.url)
    body = response.json()
    assert body["degraded"]["answer"] == "extractive", body
    assert f"loading {model}" in body["degraded"]["reason"]
    assert rig.chat_proxy.stats()["by_path"].get("/api/chat", 0) == chats_before
    assert wait_for_log(rig.daemon, '"event": "memory.preload_check"')
    assert httpx.get(f"{rig.embed_proxy.url}/api/ps", timeout=10).json()["models"] == []

    rig.memory_file.write_text("{}")  # real readings: this box has room
    response, _ = ask(rig.daemon.url)
    assert response.json().get("degraded") is None, response.text
