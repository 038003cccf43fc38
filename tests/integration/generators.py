"""Which generator a test's daemon talks to: its embedded worker, or a real Ollama.

Why: every supervision promise is proven against both backends — the stand-in we wrote and the
original it stands in for (issue 13). A test module asks for the `generator` fixture (in
tests/integration/conftest.py) and runs once per backend; what differs between them (how the
daemon is pointed at it, which process a hang freezes) lives here, in one place.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.infra.engine_steps import free_port
from tests.infra.ollama_engine import CHAT_MODEL, Server

KINDS = ("worker", "ollama")


@dataclass
class Generator:
    """One backend for a module's daemons. `server` is that module's own `ollama serve` (so a
    test may freeze, restart or tune it without touching the rest of the run)."""

    kind: str
    server: Server | None = None
    extra_servers: list[Server] = field(default_factory=list)

    @property
    def label(self) -> str:
        """The backend's name in `/status` and `ragvisor status`."""
        return "embedded" if self.kind == "worker" else "ollama"

    def daemon_env(self, url: str | None = None) -> dict[str, str]:
        """Settings that point a daemon's generator at this backend — through `url` (a fault
        proxy in front of it) when given. The worker is the daemon's own child: with a proxy,
        the daemon is told the worker's port and reaches it through the proxy."""
        if self.server is None:
            return {}
        env = self.server.daemon_env()
        if url is not None:
            env["RAGVISOR_GENERATOR__URL"] = url
        return env

    def backend_url(self, daemon_url: str) -> str:
        """Where the backend itself answers (not through any proxy)."""
        if self.server is not None:
            return self.server.url
        status = httpx.get(f"{daemon_url}/status", timeout=10).json()
        return str(status["backends"]["generator"]["url"])

    def hang_pid(self, daemon_url: str) -> int:
        """The process whose freezing wedges generation while the API stays up: the worker, or
        Ollama's runner of the chat model (loaded first if it is not)."""
        if self.server is None:
            ready = httpx.get(f"{daemon_url}/readyz", timeout=10).json()
            return int(ready["checks"]["generator"]["worker"]["pid"])
        preload = httpx.post(
            f"{self.server.url}/api/generate",
            json={"model": CHAT_MODEL, "keep_alive": "10m"},
            timeout=60,
        )
        assert preload.status_code == 200, preload.text
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if runners := self.server.runner_pids():
                return runners[0]
            time.sleep(0.1)
        raise AssertionError(f"no ollama runner after a preload:\n{self.server.tail()}")

    def loaded_models(self) -> list[str]:
        """What the backend's `/api/ps` lists (Ollama only)."""
        assert self.server is not None
        models = httpx.get(f"{self.server.url}/api/ps", timeout=10).json()["models"]
        return [m["name"] for m in models]

    def start_server(self, home: Path, **env: str) -> Server:
        """Another real Ollama for this module (an embedder's, say), stopped with the module."""
        server = Server(home, free_port(), extra_env=env or None).start()
        self.extra_servers.append(server)
        return server


@contextlib.contextmanager
def generator_for(kind: str, request: pytest.FixtureRequest, home: Path) -> Iterator[Generator]:
    """The `generator` fixture's body: for `ollama`, the run's build (skips only on a machine
    that cannot build it) and a server of this module's own under `home`."""
    if kind == "worker":
        yield Generator("worker")
        return
    request.getfixturevalue("ollama_build")  # built (or skipped, saying why) once per run
    generator = Generator("ollama")
    generator.server = Server(home, free_port()).start()
    try:
        yield generator
    finally:
        for server in [generator.server, *generator.extra_servers]:
            server.stop()
