"""Ollama's own failures, reproduced on a real Ollama built from source, and what the daemon does.

Each test starts an `ollama serve` of its own (tests/infra/ollama_engine.py), with the environment
inventory/prod gives the `ollama` role unless the test says otherwise, and a daemon pointed at it
directly — no fault proxy: every failure here is Ollama's.

- the field's wedge: the model runner frozen (SIGSTOP) while the server answers /api/version and
  /api/tags, with another client's request stuck on it so that an unload cannot take — the
  ladder unloads, sees /api/ps still list the model, runs `restart_command` (this test's
  restart of its `ollama serve`; `systemctl restart ollama` in production) and generated
  answers come back without an operator;
- a load refused for memory by Ollama's own check (Ollama is shown the /proc/meminfo of a small
  box): not retried, the answer is extractive and says why;
- Ollama's queue full (`OLLAMA_MAX_QUEUE`): its 503 is retried, never passed on as a 5xx;
- a `num_ctx` other than the loaded one forces a reload (#7773), seen in the daemon's log;
- `keep_alive: 0` (inventory/prod) honoured: nothing stays loaded after an answer;
- Ollama killed and brought back by its supervisor: extractive answers meanwhile, generated
  ones after, with no restart by the daemon;
- a client that leaves during prompt evaluation: the runner stops once its first token is out
  (Ollama #11889), and the next answer is not held behind it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.infra.engine_steps import free_port
from tests.infra.ollama_engine import CHAT_MODEL, Server, small_box_meminfo
from tests.integration.conftest import Daemon, stop_daemon, synced_daemon
from tests.integration.generators import Generator
from tests.integration.test_ask import goes_idle, wait_for_log
from tests.integration.test_health import HEALTH
from tests.integration.test_health import run as run_plugin
from tests.integration.test_supervision import QUESTION, REQUEST_S, SUPERVISED

pytestmark = pytest.mark.slow


@pytest.fixture
def ollama(ollama_build, tmp_path) -> Iterator:
    """Start servers of this test's own (the run's build; each stopped at the end)."""
    started: list[Server] = []

    def start(name: str = "ollama", **env: str) -> Server:
        meminfo = env.pop("meminfo", None)
        server = Server(tmp_path / name, free_port(), extra_env=env or None)
        if meminfo is not None:
            server.meminfo = Path(meminfo)
        started.append(server.start())
        return server

    yield start
    for server in started:
        with contextlib.suppress(ProcessLookupError):
            if server.pid is not None:
                os.killpg(server.pid, signal.SIGCONT)  # a failed test may leave it frozen
        server.stop()


# For the tests that are not about hangs: a reload on a busy 2-core box may take seconds.
PATIENT = {
    "RAGVISOR_GENERATOR__DEADLINES__FIRST_TOKEN_S": "30",
    "RAGVISOR_GENERATOR__DEADLINES__STALL_S": "10",
    "RAGVISOR_GENERATOR__DEADLINES__TOTAL_S": "60",
    "RAGVISOR_GENERATOR__DEADLINES__REQUEST_S": "70",
}


def daemon_on(server: Server, base: Path, model_dir: Path, **env: str) -> Daemon:
    """A quiet daemon over the small notes corpus whose generator is `server`, with the
    supervision tests' short deadlines."""
    return synced_daemon(base, model_dir, **{**SUPERVISED, **server.daemon_env(), **env})


def ask(daemon: Daemon, **body: object) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = httpx.post(f"{daemon.url}/ask", json={"question": QUESTION, **body}, timeout=90)
    return response, time.monotonic() - started


def count_events(daemon: Daemon, name: str) -> int:
    return daemon.logs().count(f'"event": "{name}"')


def events(daemon: Daemon, name: str) -> list[dict]:
    found = []
    for line in daemon.logs().splitlines():
        with contextlib.suppress(ValueError):
            event = json.loads(line)
            if event.get("event") == name:
                found.append(event)
    return found


def wait_until(check, timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(interval)
    return False


def generated_answer(daemon: Daemon, timeout: float = 90) -> dict | None:
    """Ask until an answer is generated (not extractive), bounded; None if none came."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response, _ = ask(daemon)
        if response.status_code == 200 and response.json().get("degraded") is None:
            return response.json()
        time.sleep(1)
    return None


def loaded(server: Server) -> list[str]:
    return [m["name"] for m in httpx.get(f"{server.url}/api/ps", timeout=10).json()["models"]]


def test_a_frozen_runner_that_will_not_unload_is_restarted(ollama, tmp_path, model_dir):
    """The field's wedge: the runner frozen, the API up, another client's request stuck on
    the runner (so Ollama will not unload it). The ladder climbs to `restart_command`, the
    server is replaced, and generated answers come back without an operator."""
    server = ollama()
    daemon = daemon_on(server, tmp_path / "d", model_dir)
    try:
        assert generated_answer(daemon) is not None, daemon.logs()[-3000:]  # loaded, working
        runner = server.runner_pids()[0]
        server_pid = server.pid
        # Another application's request, stuck on the frozen runner for as long as it lasts.
        os.kill(runner, signal.SIGSTOP)
        other = threading.Thread(target=_stuck_client, args=(server.url,), daemon=True)
        other.start()
        time.sleep(1)  # its request reaches the runner before the daemon's
        assert httpx.get(f"{server.url}/api/version", timeout=5).is_success  # the API answers
        assert httpx.get(f"{server.url}/api/tags", timeout=5).is_success

        def restarted() -> bool:
            return any(e["restarted"] for e in events(daemon, "ladder.finished"))

        deadline = time.monotonic() + 120
        while not restarted() and time.monotonic() < deadline:
            response, took = ask(daemon)
            assert response.status_code == 200, response.text
            assert took <= REQUEST_S + 1
        assert restarted(), daemon.logs()[-4000:]
        finished = next(e for e in events(daemon, "ladder.finished") if e["restarted"])
        assert finished["healthy"] is True, finished
        # Ollama may answer the unload, but /api/ps goes on listing the model (the stuck
        # request holds it): the unload did not take.
        unload = [e["outcome"] for e in events(daemon, "ladder.unload")]
        confirm = [e["outcome"] for e in events(daemon, "ladder.confirm")]
        assert "failed" in unload or "failed" in confirm, (unload, confirm)
        assert [e["outcome"] for e in events(daemon, "ladder.restart")] == ["ok"]
        assert server.pid not in (None, server_pid)  # a new `ollama serve`
        answer = generated_answer(daemon)
        assert answer is not None, daemon.logs()[-4000:]
        status = httpx.get(f"{daemon.url}/status", timeout=10).json()
        assert status["backends"]["generator"]["ladder"]["restarts_last_hour"] == 1
        metrics = httpx.get(f"{daemon.url}/metrics", timeout=10).text
        assert 'ragvisor_backend_restarts_total{backend="generator"} 1.0' in metrics
    finally:
        stop_daemon(daemon)


def _stuck_client(url: str) -> None:
    body = {"model": CHAT_MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": False}
    with contextlib.suppress(httpx.HTTPError):
        httpx.post(f"{url}/api/chat", json=body, timeout=120)


def test_a_load_refused_for_memory_is_extractive_at_once(ollama, tmp_path, model_dir):
    """Ollama, shown a 4 GB box with 300 MB available, refuses to load the model ("model
    requires more system memory"): not retried, the answer is extractive and says so."""
    if os.geteuid() != 0:
        pytest.skip("showing Ollama another /proc/meminfo needs a mount namespace: root only")
    meminfo = small_box_meminfo(tmp_path / "meminfo", total_mb=3900, available_mb=300)
    server = ollama(meminfo=str(meminfo))
    daemon = daemon_on(server, tmp_path / "d", model_dir)
    try:
        response, took = ask(daemon)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["degraded"]["answer"] == "extractive", body
        assert "memory" in body["degraded"]["reason"]
        assert body["citations"][0]["path"] == "ops/swap.md"
        assert took <= REQUEST_S + 1
        assert not events(daemon, "backend.retry"), "a refusal for memory was retried"
        assert "requires more system memory" in server.log_path.read_text() or loaded(server) == []
    finally:
        stop_daemon(daemon)


def test_ollamas_full_queue_is_retried_never_passed_on(ollama, tmp_path, model_dir):
    """`OLLAMA_MAX_QUEUE=1` and a burst of other clients' requests while the model loads:
    Ollama answers 503 "server busy" to what does not fit its queue — the daemon's call among
    them. The daemon retries it; its client gets a 200 (an answer generated or extractive),
    never a 5xx, in time. (Rounds until the daemon's call was among the refused, bounded.)"""
    server = ollama(OLLAMA_MAX_QUEUE="1")
    daemon = daemon_on(server, tmp_path / "d", model_dir, RAGVISOR_GENERATOR__KEEP_ALIVE="0")
    burst = {"model": CHAT_MODEL, "prompt": "hi", "stream": False, "options": {"num_predict": 1}}
    refused_others = 0
    try:
        for _ in range(6):
            assert wait_until(lambda: loaded(server) == [], 20)  # each burst meets a load
            with ThreadPoolExecutor(max_workers=7) as pool:
                others = [
                    pool.submit(httpx.post, f"{server.url}/api/generate", json=burst, timeout=60)
                    for _ in range(6)
                ]
                response, took = ask(daemon)
                statuses = [future.result().status_code for future in others]
            refused_others += statuses.count(503)
            assert response.status_code == 200, response.text
            assert took <= REQUEST_S + 1
            if busy_calls(daemon):
                break
        assert refused_others, "Ollama refused none of the burst: its queue never filled"
        assert busy_calls(daemon), daemon.logs()[-3000:]
        assert "maximum pending requests exceeded" in str(busy_calls(daemon)[0]["error"])
    finally:
        stop_daemon(daemon)


def busy_calls(daemon: Daemon) -> list[dict]:
    """The daemon's backend calls that Ollama refused as busy (retried, or failed for good)."""
    calls = events(daemon, "backend.retry") + events(daemon, "backend.failed")
    return [e for e in calls if "busy" in str(e.get("error"))]


def test_a_num_ctx_change_forces_a_reload_that_the_answer_survives(ollama, tmp_path, model_dir):
    """Another client asks for another `num_ctx`: Ollama reloads the model (#7773), and again
    for the daemon's. The daemon's answers are generated, and its request log shows the load."""
    server = ollama()
    daemon = daemon_on(
        server, tmp_path / "d", model_dir, RAGVISOR_GENERATOR__NUM_CTX="2048", **PATIENT
    )
    try:
        assert ask(daemon)[0].json().get("degraded") is None
        context = {m["name"]: m["context_length"] for m in _ps(server)}
        assert context == {f"{CHAT_MODEL}:latest": 2048}, context
        other = {"model": CHAT_MODEL, "prompt": "hi", "stream": False, "keep_alive": "5m"}
        other["options"] = {"num_ctx": 1024, "num_predict": 1}
        assert httpx.post(f"{server.url}/api/generate", json=other, timeout=60).is_success
        assert [m["context_length"] for m in _ps(server)] == [1024]
        response, _ = ask(daemon, stream=False)
        assert response.json().get("degraded") is None, response.text
        assert [m["context_length"] for m in _ps(server)] == [2048]
        line = [e for e in events(daemon, "http.request") if e.get("path") == "/ask"][-1]
        assert line["load_ms"] > 0, line
    finally:
        stop_daemon(daemon)


def _ps(server: Server) -> list[dict]:
    return httpx.get(f"{server.url}/api/ps", timeout=10).json()["models"]


def test_keep_alive_zero_leaves_nothing_loaded(ollama, tmp_path, model_dir):
    """inventory/prod sends `keep_alive: 0`: after each answer the model is unloaded."""
    server = ollama()
    daemon = daemon_on(
        server, tmp_path / "d", model_dir, RAGVISOR_GENERATOR__KEEP_ALIVE="0", **PATIENT
    )
    try:
        for _ in range(2):
            response, _ = ask(daemon)
            assert response.json().get("degraded") is None, response.text
            assert wait_until(lambda: loaded(server) == [], 10), _ps(server)
            assert server.runner_pids() == []
    finally:
        stop_daemon(daemon)


def test_ollama_killed_and_restarted_by_its_supervisor(ollama, tmp_path, model_dir):
    """kill -9 of `ollama serve` and its runner: answers are extractive (in time) while it is
    down; once its supervisor (systemd in production, the test here) has started it again,
    answers are generated — the daemon needs no restart and runs none of its own."""
    server = ollama()
    daemon = daemon_on(server, tmp_path / "d", model_dir)
    try:
        assert ask(daemon)[0].json().get("degraded") is None
        pid = server.pid
        assert pid is not None
        os.killpg(pid, signal.SIGKILL)
        assert wait_until(lambda: server.pid is None, 10)
        response, took = ask(daemon)
        assert response.status_code == 200, response.text
        assert response.json()["degraded"]["answer"] == "extractive"
        assert "generator" in response.json()["degraded"]["reason"]
        assert took <= REQUEST_S + 1
        server.start()  # Restart=always
        assert generated_answer(daemon) is not None, daemon.logs()[-3000:]
        assert not events(daemon, "ladder.restart")
    finally:
        stop_daemon(daemon)


def test_a_client_leaving_during_prompt_evaluation_frees_the_runner(ollama, tmp_path, model_dir):
    """A long prompt (20 passages) and a client that leaves before the first token: Ollama's
    runner finishes evaluating the prompt (#11889), then stops; the next answer is served."""
    server = ollama()
    daemon = daemon_on(
        server,
        tmp_path / "d",
        model_dir,
        RAGVISOR_GENERATOR__NUM_PREDICT="200",
        **PATIENT,
    )
    try:
        assert ask(daemon, k=1)[0].status_code == 200  # loaded
        runner = server.runner_pids()[0]
        body = {"question": QUESTION, "k": 20, "stream": True}
        with httpx.stream("POST", f"{daemon.url}/ask", json=body, timeout=60) as response:
            for line in response.iter_lines():
                if '"citations"' in line:
                    break  # leave while Ollama evaluates the prompt
        left = time.monotonic()
        assert wait_for_log(daemon, '"client_gone": true', timeout=60)
        assert goes_idle(runner, timeout=60)
        idle_after_s = time.monotonic() - left
        response, _ = ask(daemon, k=1)
        assert response.status_code == 200
        assert response.json().get("degraded") is None, response.text
        print(f"runner idle {idle_after_s:.1f} s after the client left during prompt evaluation")
    finally:
        stop_daemon(daemon)


def test_health_misses_a_frozen_runner_and_deep_health_catches_it(ollama, tmp_path, model_dir):
    """With the runner frozen Ollama's API still answers, so the plain check (which loads no
    model) is OK — Ollama has no endpoint that proves generation works (#1378); `--deep`
    generates a token and is CRITICAL. Both within their timeouts."""
    server = ollama()
    daemon = daemon_on(server, tmp_path / "d", model_dir, **PATIENT)
    try:
        runner = Generator("ollama", server).hang_pid(daemon.url)
        os.kill(runner, signal.SIGSTOP)
        try:
            plain = health_run(model_dir, "--url", daemon.url, "--timeout", "8")
            deep = health_run(model_dir, "--url", daemon.url, "--deep", "--timeout", "8")
        finally:
            os.kill(runner, signal.SIGCONT)
        assert plain.returncode == 0, plain.stdout + plain.stderr
        assert deep.returncode == 2, deep.stdout + deep.stderr
        assert deep.stdout.startswith("RAGVISOR CRITICAL"), deep.stdout
    finally:
        stop_daemon(daemon)


def health_run(model_dir: Path, *args: str):
    """`ragvisor health ARGS` as Nagios runs it."""
    return run_plugin(HEALTH, model_dir, *args, timeout=60)
