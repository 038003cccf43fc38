"""The fault benchmark's two generators, each behind the same fault proxy and under the same
supervision settings: the daemon's embedded worker, and a real Ollama built from source.

Either way the daemon is started here with the generator reached through `ragvisor.faultproxy`
(in-process, no faults until the run begins), its settings printed as the daemon has them, and
the model loaded before the first timed request.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from benchlib import (
    QUESTIONS,
    SERVE_ENV,
    clean_env,
    free_port,
    progress,
    running,
    serve_cmd,
    wait_ready,
)
from ollamalib import (
    OLLAMA_VERSION,
    bench_ollama,
    generator_settings,
    preload,
    prod_environment,
    settings_lines,
    tree_processes,
)
from ragvisor.faultproxy import FaultProxy, running_proxy
from ragvisor.llm.gguf import cache_dir, ensure_default_gguf

BACKENDS = ("worker", "ollama")
READY_TIMEOUT_S = 180.0
WARM_TIMEOUT_S = 120.0
# Sent with every generation call by both backends' daemons. Ollama's prod environment says 0
# (unload after each answer); here the model stays loaded, so what is measured is supervision,
# not a model load per call. The worker keeps its model loaded either way.
KEEP_ALIVE = "5m"


def supervision_env(args: argparse.Namespace) -> dict[str, str]:
    """Deadlines sized for the small model on this box: a hang costs seconds, not minutes.

    The same for both backends, so their columns compare; the ladder keeps its defaults.
    """
    return {
        "RAGVISOR_GENERATOR__NUM_PREDICT": str(args.num_predict),
        "RAGVISOR_GENERATOR__KEEP_ALIVE": KEEP_ALIVE,
        "RAGVISOR_ASK__DEFAULT_K": str(args.k),
        "RAGVISOR_GENERATOR__DEADLINES__CONNECT_S": "2",
        "RAGVISOR_GENERATOR__DEADLINES__FIRST_TOKEN_S": str(args.first_token_s),
        "RAGVISOR_GENERATOR__DEADLINES__STALL_S": "3",
        "RAGVISOR_GENERATOR__DEADLINES__TOTAL_S": "20",
        "RAGVISOR_GENERATOR__DEADLINES__REQUEST_S": str(args.request_s),
        "RAGVISOR_GENERATOR__RETRY__ATTEMPTS": "4",
        "RAGVISOR_GENERATOR__RETRY__BACKOFF_BASE_S": "0.1",
        "RAGVISOR_GENERATOR__RETRY__BACKOFF_MAX_S": "1",
        "RAGVISOR_ADMISSION__ASK__MAX_QUEUE": str(args.clients * 2),
    }


@dataclass
class Rig:
    """A daemon ready to answer, its generator behind `proxy`, and what to report about it."""

    name: str
    url: str
    proxy: FaultProxy
    daemon_pid: int
    backend_pid: int | None  # the worker (the daemon's child) or `ollama serve`
    notes: dict[str, Any] = field(default_factory=dict)

    def processes(self) -> list[psutil.Process]:
        """The daemon, the backend and their children now (for the noise meter)."""
        return tree_processes(self.daemon_pid, self.backend_pid)


@contextlib.contextmanager
def started(
    name: str, args: argparse.Namespace, corpus: Path, data_dir: Path, logs: Path
) -> Iterator[Rig]:
    """The daemon over `data_dir` with generator `name` behind a fault proxy, warmed up;
    everything started here is stopped on the way out."""
    with contextlib.ExitStack() as stack:
        server = None
        if name == "ollama":
            server = stack.enter_context(bench_ollama(logs / "ollama"))
            proxy = stack.enter_context(running_proxy(server.url))
            # The server's own settings point the daemon at it, the ladder restarting it;
            # only the URL goes through the proxy.
            backend = {**server.daemon_env(), "RAGVISOR_GENERATOR__URL": proxy.url}
        else:
            worker_port = free_port()
            proxy = stack.enter_context(running_proxy(f"http://127.0.0.1:{worker_port}"))
            backend = {
                "RAGVISOR_WORKER__MODEL_PATH": str(ensure_default_gguf(cache_dir())),
                "RAGVISOR_WORKER__PORT": str(worker_port),
                "RAGVISOR_WORKER__PROXY_URL": proxy.url,
            }
        env = clean_env(**SERVE_ENV, **supervision_env(args), **backend)
        generator = generator_settings(env)
        notes: dict[str, Any] = {"generator": generator}
        print(f"\n== {name}: " + ("\n   ".join(settings_lines(generator))))
        if server is not None:
            notes["ollama"] = {"version": OLLAMA_VERSION, "environment": prod_environment()}
            print(
                f"   ollama {OLLAMA_VERSION} serve with inventory/prod's environment "
                f"{prod_environment()}; the daemon sends keep_alive {KEEP_ALIVE!r} with every "
                "call, so the model is not reloaded each time (prod's OLLAMA_KEEP_ALIVE=0 would)"
            )
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        progress(f"{name}: starting ragvisor serve on port {port}, generator behind {proxy.url}")
        log_path = logs / f"serve-{name}.log"
        proc = stack.enter_context(running(serve_cmd(corpus, data_dir, port), env, log_path))
        wait_ready(port, proc, READY_TIMEOUT_S)
        if server is not None:
            notes["model_load_s"] = preload(server, KEEP_ALIVE)
        warm = httpx.post(f"{url}/ask", json={"question": QUESTIONS[0]}, timeout=WARM_TIMEOUT_S)
        warm_degraded = (
            (warm.json().get("degraded") or {}).get("answer") if warm.is_success else "?"
        )
        progress(f"{name}: warm-up answer {warm.status_code}, degraded: {warm_degraded}")
        notes["warm_up"] = {"status": warm.status_code, "degraded": warm_degraded}
        backend_pid = server.pid if server is not None else worker_pid(url)
        yield Rig(name, url, proxy, proc.pid, backend_pid, notes)


def worker_pid(url: str) -> int | None:
    """The embedded worker's pid, as /readyz reports it."""
    readyz = httpx.get(f"{url}/readyz", timeout=10).json()
    worker = (readyz.get("checks", {}).get("generator") or {}).get("worker") or {}
    return int(worker["pid"]) if worker.get("pid") else None
