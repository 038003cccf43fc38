"""What the benches that run a real Ollama share, beside benchlib: a bench-owned `ollama serve`
(tests/infra/ollama_engine.py's `Server`, the same build and prod environment the tests use),
loading and unloading its model, the RSS of a process tree, the generator settings a daemon
environment puts in effect, and the events of a daemon's JSON log.

A module of its own rather than more of benchlib: only fault_bench and ollama_bench need it,
and importing it puts the repo root on sys.path for tests/infra (benchlib stays free of that).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import psutil

from benchlib import REPO, free_port, progress
from ragvisor.config import load_settings

sys.path.insert(0, str(REPO))  # the engine helper lives in tests/infra
from tests.infra.ollama_engine import (
    CHAT_MODEL,
    EMBED_MODEL,
    OLLAMA_VERSION,
    Server,
    build,
    prod_environment,
)

__all__ = [
    "CHAT_MODEL",
    "EMBED_MODEL",
    "OLLAMA_VERSION",
    "Server",
    "bench_ollama",
    "build",
    "generator_settings",
    "loaded_models",
    "log_events",
    "preload",
    "prod_environment",
    "settings_lines",
    "tree_processes",
    "tree_rss_mb",
    "unload",
]

# A model load from the page cache takes ~0.6 s here; generous for a busy box.
LOAD_TIMEOUT_S = 120.0


@contextlib.contextmanager
def bench_ollama(home: Path) -> Iterator[Server]:
    """`ollama serve` on a free loopback port with its log, pid and settings under `home`;
    stopped on the way out, a runner the bench froze (SIGSTOP) included.

    The daemon's ladder may replace the server (its `restart_command`); `Server` finds the
    current one through its pid file, so the stop at the end stops whichever runs then.
    """
    server = Server(home, free_port())
    progress(f"starting ollama {OLLAMA_VERSION} serve on {server.url} (log {server.log_path})")
    server.start()
    try:
        yield server
    finally:
        pid = server.pid
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGCONT)  # a frozen runner ignores SIGTERM until continued
        server.stop()


def preload(server: Server, keep_alive: str) -> float:
    """Load the chat model (an empty generate) and keep it for `keep_alive`; seconds taken.

    So that the first timed call meets a loaded model, as a warm production server would.
    Raises httpx.HTTPError when Ollama does not load it.
    """
    body = {"model": CHAT_MODEL, "keep_alive": keep_alive}
    response = httpx.post(f"{server.url}/api/generate", json=body, timeout=LOAD_TIMEOUT_S)
    response.raise_for_status()
    return float(response.json().get("load_duration", 0)) / 1e9


def unload(server: Server) -> None:
    """Ask Ollama to unload the chat model now (`keep_alive: 0`)."""
    body = {"model": CHAT_MODEL, "keep_alive": 0}
    httpx.post(f"{server.url}/api/generate", json=body, timeout=LOAD_TIMEOUT_S).raise_for_status()


def loaded_models(server: Server) -> list[str]:
    """The models `/api/ps` lists as loaded."""
    models = httpx.get(f"{server.url}/api/ps", timeout=10).json().get("models") or []
    return [str(m.get("name")) for m in models]


def tree_processes(*pids: int | None) -> list[psutil.Process]:
    """These processes and their descendants, each once (for the noise meter: the daemon and
    Ollama's server and runner all run through the timed phases)."""
    found: dict[int, psutil.Process] = {}
    for pid in pids:
        if pid is None:
            continue
        with contextlib.suppress(psutil.Error):
            root = psutil.Process(pid)
            for proc in (root, *root.children(recursive=True)):
                found.setdefault(proc.pid, proc)
    return list(found.values())


def tree_rss_mb(pid: int | None) -> dict[str, float]:
    """RSS in MB of a process and of each descendant, by `name pid`, plus their `total`.

    Ollama's memory is mostly its runner's (the model and KV cache), a child of the server:
    the server's own RSS alone would hide it.
    """
    found: dict[str, float] = {}
    if pid is None:
        return {"total": float("nan")}
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return {"total": float("nan")}
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            name = "runner" if "runner" in proc.cmdline() else proc.name()
            found[f"{name} {proc.pid}"] = proc.memory_info().rss / 1e6
    found["total"] = sum(found.values())
    return found


def generator_settings(env: Mapping[str, str]) -> dict[str, Any]:
    """The `[generator]` settings a daemon started with `env` has: the same loader, so what is
    printed is what is in effect (defaults included), whatever the ladder's keys are today."""
    settings = load_settings(None, env)
    return settings.generator.model_dump(mode="json")


def settings_lines(generator: Mapping[str, Any]) -> list[str]:
    """The generator settings worth printing beside supervision figures, one section a line."""
    lines = [
        f"generator: backend {generator['backend']}, model {generator['model']}, "
        f"keep_alive {generator['keep_alive']!r}, num_predict {generator['num_predict']}, "
        f"num_ctx {generator['num_ctx']}"
    ]
    for section in ("deadlines", "retry", "breaker", "ladder"):
        values = ", ".join(f"{k} {v}" for k, v in generator[section].items())
        lines.append(f"  [generator.{section}] {values}")
    return lines


def log_events(path: Path, *names: str) -> list[dict[str, Any]]:
    """The events of a JSON log (one object a line) whose `event` is one of `names`."""
    found: list[dict[str, Any]] = []
    if not path.exists():
        return found
    for line in path.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            event = json.loads(line)
            if isinstance(event, dict) and event.get("event") in names:
                found.append(event)
    return found
