"""Fixtures for `ragvisor worker`: the pinned GGUF and a real worker process on loopback.

Import them where needed (`from tests.integration.worker_fixtures import gguf_path, worker_url`);
`start_worker` / `stop_worker` start extra workers for tests that need their own process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.conftest import free_port, gguf_file

RAGVISOR = [sys.executable, "-m", "ragvisor.cli"]
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0


@dataclass
class WorkerProcess:
    """A running `ragvisor worker`, its URL and its log file (JSON lines on stderr)."""

    process: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        """Structured log events so far, optionally only those named `name`."""
        found = []
        for line in self.log_path.read_text().splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if name is None or event.get("event") == name:
                found.append(event)
        return found

    def wait_for_event(self, name: str, timeout_s: float = 10.0) -> list[dict[str, Any]]:
        """Poll the log (bounded) until at least one `name` event is there; returns them all."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if found := self.events(name):
                return found
            time.sleep(0.05)
        raise AssertionError(f"no {name} event in {timeout_s} s:\n{self.log_path.read_text()}")


def worker_env(model_dir: Path) -> dict[str, str]:
    """Environment for a worker subprocess: no inherited RAGVISOR_*, the given embedder dir."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAGVISOR_")}
    env["RAGVISOR_EMBEDDER__MODEL_DIR"] = str(model_dir)
    return env


def start_worker(
    gguf: Path, model_dir: Path, data_dir: Path, log_path: Path, *extra: str
) -> WorkerProcess:
    """Start `ragvisor worker` on a free port and wait (bounded) until /api/version answers."""
    port = free_port()
    with log_path.open("wb") as log:  # the child keeps its own descriptor
        process = subprocess.Popen(
            [
                *RAGVISOR,
                "worker",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--model-path",
                str(gguf),
                "--data-dir",
                str(data_dir),
                *extra,
            ],
            env=worker_env(model_dir),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"worker exited early:\n{log_path.read_text()}")
        try:
            if httpx.get(f"{url}/api/version", timeout=1).status_code == 200:
                return WorkerProcess(process, url, log_path)
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    process.kill()
    process.wait(5)
    raise RuntimeError(f"worker not answering in {START_TIMEOUT_S} s:\n{log_path.read_text()}")


def stop_worker(worker: WorkerProcess) -> int:
    """SIGTERM, then SIGKILL after a grace period; returns the exit code."""
    if worker.process.poll() is None:
        worker.process.send_signal(signal.SIGTERM)
    try:
        return worker.process.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        worker.process.kill()
        return worker.process.wait(5)


@pytest.fixture(scope="session")
def gguf_path() -> Path:
    """The pinned Gemma 3 270M GGUF, in the install-time cache."""
    return gguf_file()


@pytest.fixture(scope="session")
def worker_model_dir(model_dir) -> Path:
    """The pinned MiniLM embedder, for the worker's /api/embed (the session's model dir)."""
    return model_dir


@pytest.fixture(scope="session")
def worker_process(gguf_path, worker_model_dir, tmp_path_factory) -> Iterator[WorkerProcess]:
    """One `ragvisor worker` for the session; it must exit 0 on SIGTERM at the end."""
    root = tmp_path_factory.mktemp("worker")
    worker = start_worker(gguf_path, worker_model_dir, root / "data", root / "worker.log")
    yield worker
    code = stop_worker(worker)
    assert code == 0, f"worker exited {code}:\n{worker.log_path.read_text()}"


@pytest.fixture(scope="session")
def worker_url(worker_process) -> str:
    """Base URL of the session's worker, e.g. ``http://127.0.0.1:40123``."""
    return worker_process.url
