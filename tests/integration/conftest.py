"""Real processes over loopback: the daemon, its llama.cpp worker, the CLI, the real ONNX model
and SQLite."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import httpx
import pytest

from ragvisor.embed.model_files import assemble_default_model
from ragvisor.embed.onnx import OnnxEmbedder
from ragvisor.llm.gguf import cache_dir, ensure_default_gguf
from tests.integration.corpus import write_corpus
from tests.integration.generators import KINDS, Generator, generator_for

RAGVISOR = [sys.executable, "-m", "ragvisor.cli"]


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    """The pinned default model, assembled once per test session."""
    return assemble_default_model(tmp_path_factory.mktemp("models") / "minilm")


@pytest.fixture(scope="session")
def embedder(model_dir) -> OnnxEmbedder:
    """One real embedder shared by the tests that compute reference vectors."""
    return OnnxEmbedder(model_dir)


def free_port() -> int:
    """A port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@cache
def gguf_file() -> Path:
    """The pinned generator model in the install cache (`make install` assembled it there);
    tests point the worker at it rather than copying 242 MB into every data directory."""
    return ensure_default_gguf(cache_dir())


def cli_env(model_dir: Path, **extra: str) -> dict[str, str]:
    """Environment for a ragvisor subprocess: the shared model files, JSON logs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAGVISOR_")}
    env["RAGVISOR_EMBEDDER__MODEL_DIR"] = str(model_dir)
    env["RAGVISOR_WORKER__MODEL_PATH"] = str(gguf_file())
    if "RAGVISOR_CACHE" in os.environ:
        env["RAGVISOR_CACHE"] = os.environ["RAGVISOR_CACHE"]
    # Tests of generation, faults and supervision ask one question again and again, and need
    # each asking generated; the answer cache's own tests (test_answer_cache.py) turn it on.
    env["RAGVISOR_ASK__CACHE__ENABLED"] = "false"
    env.update(extra)
    return env


def run_cli(args: list[str], model_dir: Path, timeout: float = 300, **env: str):
    """Run `ragvisor ARGS` to completion and return the CompletedProcess."""
    return subprocess.run(
        [*RAGVISOR, *args],
        env=cli_env(model_dir, **env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@dataclass
class Daemon:
    """A running `ragvisor serve` and how to reach it."""

    process: subprocess.Popen[str]
    url: str
    data_dir: Path
    log_path: Path

    @property
    def token(self) -> str:
        return (self.data_dir / "admin_token").read_text().strip()

    def logs(self) -> str:
        return self.log_path.read_text()


# The folder watch (`[sync] watch`, on by default) is off unless a test turns it on: the other
# tests change their corpus on purpose and say when it is synced (tests/integration/
# test_freshness.py is the watch's own).
NO_WATCH = {"RAGVISOR_SYNC__WATCH": "false"}


def start_daemon(
    corpus: Path, data_dir: Path, model_dir: Path, log_path: Path, *, ready: bool = True, **env: str
):
    """Start the daemon and wait (bounded) until /readyz answers 200 — or, with `ready=False`
    (a daemon that will not be ready), only until /healthz does."""
    probe = "/readyz" if ready else "/healthz"
    port = free_port()
    with log_path.open("w") as handle:  # the child keeps its own descriptor
        process = subprocess.Popen(
            [
                *RAGVISOR,
                "serve",
                "--corpus",
                str(corpus),
                "--data-dir",
                str(data_dir),
                "--port",
                str(port),
            ],
            env=cli_env(model_dir, **{**NO_WATCH, **env}),
            stdout=handle,
            stderr=subprocess.STDOUT,
            text=True,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"daemon exited early:\n{log_path.read_text()}")
        try:
            if httpx.get(f"{url}{probe}", timeout=1).status_code == 200:
                return Daemon(process, url, data_dir, log_path)
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"daemon not answering {probe} in 60 s:\n{log_path.read_text()}")


# A daemon over a corpus synced beforehand: no start-up sync, no scheduled one.
QUIET = {"RAGVISOR_SYNC__ON_START": "false", "RAGVISOR_SYNC__INTERVAL_S": "0"}


def synced_daemon(
    base: Path,
    model_dir: Path,
    extra_files: dict[str, str] | None = None,
    store_env: dict[str, str] | None = None,
    **env: str,
) -> Daemon:
    """The small notes corpus (plus `extra_files`) under `base`, synced by `ragvisor sync`, and
    a daemon started on it, quiet (`QUIET`) unless `env` says otherwise; `store_env` (see the
    `store_backend` fixture) selects the store for both."""
    corpus = write_corpus(base / "notes")
    for name, text in (extra_files or {}).items():
        (corpus / name).write_text(text)
    store_env = store_env or {}
    sync = run_cli(
        ["sync", "--corpus", str(corpus), "--data-dir", str(base / "data"), "--json"],
        model_dir,
        **store_env,
    )
    assert sync.returncode == 0, sync.stderr
    return start_daemon(
        corpus, base / "data", model_dir, base / "daemon.log", **{**QUIET, **store_env, **env}
    )


@pytest.fixture(scope="module", params=["sqlite", "neo4j"])
def store_backend(request: pytest.FixtureRequest) -> dict[str, str]:
    """The environment that selects each store in turn: SQLite under the data directory, then
    the run's real Neo4j, emptied first (a module's daemon has the database to itself)."""
    return store_env_for(request.param, request)


def store_env_for(kind: str, request: pytest.FixtureRequest) -> dict[str, str]:
    """The `store_backend` fixture's body, for modules that choose their own combinations."""
    if kind == "sqlite":
        return {}
    engine = request.getfixturevalue("neo4j_engine")
    engine.wipe()
    return engine.daemon_env()


@pytest.fixture(scope="module", params=KINDS)
def generator(request: pytest.FixtureRequest, tmp_path_factory) -> Iterator[Generator]:
    """The generator each module's daemons talk to, in turn: the embedded worker, then a real
    Ollama of the module's own (tests/integration/generators.py)."""
    with generator_for(request.param, request, tmp_path_factory.mktemp("ollama")) as chosen:
        yield chosen


def stop_daemon(daemon: Daemon) -> None:
    """SIGTERM, then SIGKILL after a grace period."""
    daemon.process.send_signal(signal.SIGTERM)
    try:
        daemon.process.wait(15)
    except subprocess.TimeoutExpired:
        daemon.process.kill()
        daemon.process.wait(5)


@pytest.fixture
def daemon_factory(tmp_path, model_dir) -> Iterator:
    """Start daemons on demand; every one is stopped at the end of the test."""
    started: list[Daemon] = []

    def start(corpus: Path, **env: str) -> Daemon:
        daemon = start_daemon(
            corpus, tmp_path / "data", model_dir, tmp_path / f"daemon{len(started)}.log", **env
        )
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        stop_daemon(daemon)
