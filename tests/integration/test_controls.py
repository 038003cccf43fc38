"""What the ladder does to real backends: the operator's restart command, Ollama's API on a real
worker, and a frozen embedded worker killed and respawned.

No test here generates text: the worker loads its model only for chat, and none is asked for.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psutil
import pytest
import structlog
from structlog.testing import capture_logs

from ragvisor.app import build_worker
from ragvisor.config import (
    BreakerSettings,
    EmbedderSettings,
    LadderSettings,
    Settings,
    StoreSettings,
    WorkerSettings,
)
from ragvisor.errors import BackendError, BackendTimeout, BackendUnavailable
from ragvisor.metrics import Metrics
from ragvisor.ollama.client import OllamaClient
from ragvisor.ollama.wire import Deadlines
from ragvisor.supervise.breaker import BreakerState, CircuitBreaker
from ragvisor.supervise.controls import OllamaControl, WorkerControl, run_restart_command
from ragvisor.supervise.ladder import EscalationLadder
from ragvisor.supervise.worker_process import WorkerProcess
from tests.integration.conftest import free_port, gguf_file
from tests.integration.worker_fixtures import (
    gguf_path,
    worker_model_dir,
    worker_process,
    worker_url,
)

# Importing the fixtures registers them with pytest for this module.
WORKER_FIXTURES = (gguf_path, worker_model_dir, worker_process, worker_url)

pytestmark = pytest.mark.slow

GEN = "gemma3-270m"
RESTART_WAIT_S = 60.0


def run(coro):
    """Run a coroutine with a backstop: no test here waits more than two minutes."""

    async def bounded():
        async with asyncio.timeout(120):
            return await coro

    return asyncio.run(bounded())


def gone(pid: int, timeout_s: float = 10.0) -> bool:
    """Whether `pid` has exited (a zombie awaiting its reaper counts), within a bounded wait."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


def client(url: str) -> OllamaClient:
    return OllamaClient(
        url, model=GEN, num_ctx=512, num_predict=8, deadlines=Deadlines(connect_s=2, total_s=10)
    )


@contextlib.asynccontextmanager
async def closing(c: OllamaClient) -> AsyncIterator[OllamaClient]:
    """The client, its connections closed at the end (a leaked socket fails the test)."""
    try:
        yield c
    finally:
        await c.aclose()


# -- the restart command --


def test_a_restart_command_that_succeeds_returns(tmp_path):
    """Exit status 0 is success, after the command has run to its end; output is no error."""
    marker = tmp_path / "restarted"
    script = f"import pathlib; print('restarted'); pathlib.Path({str(marker)!r}).write_text('ok')"
    assert run(run_restart_command([sys.executable, "-c", script], 10)) is None
    assert marker.read_text() == "ok"


def test_a_failing_restart_command_raises_with_its_output_tail():
    """A non-zero exit raises BackendError naming the command, the status and the last output."""
    script = "import sys; print('x' * 5000); print('ollama.service not found', file=sys.stderr)"
    started = time.monotonic()
    with pytest.raises(BackendError) as caught:
        run(run_restart_command([sys.executable, "-c", f"{script}; sys.exit(3)"], 10))
    message = str(caught.value)
    assert "exited with 3" in message
    assert message.endswith("ollama.service not found")
    assert len(message) < 1000  # the tail, not all 5000 characters
    assert time.monotonic() - started < 10


def test_a_restart_command_that_hangs_is_killed_with_its_children(tmp_path):
    """Past its timeout the command and everything it started are killed; TimeoutError says so."""
    pids = tmp_path / "pids"
    command = ["sh", "-c", f'sleep 60 & echo "$$ $!" > {pids}; wait']
    started = time.monotonic()
    with pytest.raises(TimeoutError, match=r"did not finish within 0\.5 s; killed"):
        run(run_restart_command(command, 0.5))
    assert time.monotonic() - started < 5
    shell, child = (int(p) for p in pids.read_text().split())
    assert gone(shell), "the command survived its timeout"
    assert gone(child), "the command's child survived its timeout"


def test_a_restart_command_may_leave_a_server_running_in_the_background(tmp_path):
    """`ollama serve &`-style commands return when the command does, not when the server ends."""
    pid_file = tmp_path / "pid"
    command = ["sh", "-c", f"sleep 60 & echo $! > {pid_file}; echo started"]
    started = time.monotonic()
    try:
        run(run_restart_command(command, 10))
        assert time.monotonic() - started < 5  # not 60 s: the server's output is no pipe of ours
        assert not gone(int(pid_file.read_text()), timeout_s=0.1)  # and it was not killed
    finally:
        if pid_file.exists():
            os.kill(int(pid_file.read_text()), signal.SIGKILL)


def test_no_restart_command_or_a_missing_program_is_an_error():
    """An empty command and a program that does not exist fail at once, with a clear message."""
    with pytest.raises(BackendError, match="no restart command"):
        run(run_restart_command([], 5))
    with pytest.raises(FileNotFoundError, match="no-such-restart-tool"):
        run(run_restart_command(["no-such-restart-tool", "ollama"], 5))


# -- Ollama's API on a real worker --


def test_ollama_control_probes_lists_and_unloads_on_a_real_worker(worker_url):
    """version answers; the unload succeeds without loading anything; /api/ps then lacks it."""

    async def scenario() -> list[str]:
        async with closing(client(worker_url)) as c:
            control = OllamaControl(c, ["true"])
            assert control.model == GEN
            await control.probe(5)
            await control.unload(10)
            return await control.loaded_models(5)

    loaded = run(scenario())
    assert isinstance(loaded, list)
    assert GEN not in [name.removesuffix(":latest") for name in loaded]


def test_ollama_control_restart_runs_the_configured_command(worker_url, tmp_path):
    """restart() runs `restart_command`; its failure is the ladder's information."""
    marker = tmp_path / "restarted"
    run(OllamaControl(client(worker_url), ["touch", str(marker)]).restart(10))
    assert marker.exists()
    with pytest.raises(BackendError, match="false exited with 1"):
        run(OllamaControl(client(worker_url), ["false"]).restart(10))


def test_ollama_control_probe_fails_when_nothing_listens():
    """A backend that is down fails the probe (BackendUnavailable), quickly."""

    async def scenario() -> None:
        async with closing(client(f"http://127.0.0.1:{free_port()}")) as c:
            await OllamaControl(c, ["true"]).probe(2)

    with pytest.raises(BackendUnavailable):
        run(scenario())


def test_the_ladder_on_a_healthy_real_worker_unloads_confirms_and_probes(worker_url):
    """Against the real API: unload, /api/ps confirms, no restart, traffic never stopped."""
    metrics = Metrics()
    breaker = CircuitBreaker("generator", BreakerSettings(), metrics=metrics)

    async def scenario() -> EscalationLadder:
        async with closing(client(worker_url)) as c:
            control = OllamaControl(c, ["false"])  # a restart would fail loudly
            settings = LadderSettings(probe_timeout_s=10)
            ladder = EscalationLadder("generator", control, settings, breaker, metrics=metrics)
            await ladder.climb("test")
            return ladder

    ladder = run(scenario())
    assert breaker.state is BreakerState.CLOSED
    for step in ("unload", "confirm", "probe"):
        labels = {"backend": "generator", "step": step, "outcome": "ok"}
        assert metrics.registry.get_sample_value("ragvisor_ladder_steps_total", labels) == 1
    assert ladder.restarts_last_hour() == 0


# -- the embedded worker, frozen and respawned --


@pytest.fixture
def embedded_worker(tmp_path: Path, model_dir: Path) -> Iterator[WorkerProcess]:
    """A WorkerProcess built the way the daemon builds it, started and watched."""
    settings = Settings(
        store=StoreSettings(data_dir=tmp_path / "data"),
        embedder=EmbedderSettings(model_dir=model_dir),
        worker=WorkerSettings(model_path=gguf_file(), start_timeout_s=RESTART_WAIT_S),
    )
    worker = build_worker(settings)
    worker.start()
    try:
        yield worker
    finally:
        pid = worker.pid
        if pid is not None:
            os.kill(pid, signal.SIGCONT)  # a frozen child would only delay the SIGTERM
        worker.stop()


def test_worker_control_restart_replaces_a_frozen_worker(embedded_worker):
    """1. the worker answers; 2. SIGSTOP freezes it and the probe times out;
    3. restart kills it and waits for the watcher's new child; 4. the new pid answers."""
    worker = embedded_worker
    frozen = worker.pid
    assert frozen is not None

    async def scenario() -> float:
        async with closing(client(worker.url)) as c:
            control = WorkerControl(c, worker)
            await control.probe(5)
            os.kill(frozen, signal.SIGSTOP)
            with pytest.raises(BackendTimeout):
                await control.probe(1)
            started = time.monotonic()
            await control.restart(RESTART_WAIT_S)
            restart_s = time.monotonic() - started
            await control.probe(5)  # the new child answers /api/version
            return restart_s

    with capture_logs() as logs:
        restart_s = run(scenario())
    assert restart_s < RESTART_WAIT_S
    assert gone(frozen)
    assert worker.pid not in (None, frozen)
    assert worker.check_alive()
    killing = [e for e in logs if e["event"] == "worker.killing"]
    assert len(killing) == 1
    assert killing[0]["reason"] == "ladder restart"
    assert killing[0]["pid"] == frozen


def test_the_ladder_climbs_over_a_frozen_worker_to_a_restart(embedded_worker):
    """1. the worker freezes; 2. the unload times out; 3. the ladder restarts it;
    4. the probe passes and the breaker half-opens, all logged and counted."""
    worker = embedded_worker
    frozen = worker.pid
    assert frozen is not None
    metrics = Metrics()
    breaker = CircuitBreaker("generator", BreakerSettings(open_s=1), metrics=metrics)
    settings = LadderSettings(
        unload_timeout_s=1,
        confirm_timeout_s=1,
        restart_timeout_s=RESTART_WAIT_S,
        probe_timeout_s=30,
    )

    async def scenario() -> None:
        async with closing(client(worker.url)) as c:
            ladder = EscalationLadder(
                "generator",
                WorkerControl(c, worker),
                settings,
                breaker,
                metrics=metrics,
                log=structlog.get_logger(component="supervise"),
            )
            await ladder.climb("2 calls in a row timed out")

    os.kill(frozen, signal.SIGSTOP)
    with capture_logs() as logs:
        run(scenario())
    steps = {e["event"]: e for e in logs if e["event"].startswith("ladder.")}
    assert steps["ladder.unload"]["outcome"] == "failed"
    assert steps["ladder.restart"]["outcome"] == "ok"
    assert steps["ladder.probe"]["outcome"] == "ok"
    assert steps["ladder.finished"]["restarted"] is True
    assert breaker.state is BreakerState.HALF_OPEN
    assert worker.pid not in (None, frozen)
    assert gone(frozen)
    restarts = metrics.registry.get_sample_value(
        "ragvisor_backend_restarts_total", {"backend": "generator"}
    )
    assert restarts == 1
