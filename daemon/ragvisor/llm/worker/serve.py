"""`ragvisor worker`: serve the worker app until SIGTERM, or until the daemon that started it dies.

A daemon killed with -9 cannot stop its worker, so the worker watches its parent: every half
second it checks that the process given as `--parent-pid` still exists and, if the worker was
started as that process's child, that it has not been re-parented (the parent died and init or
a subreaper adopted us). Then it stops itself the graceful way (SIGTERM to itself, the handler
uvicorn installed) and, should that hang, exits hard after `worker.stop_timeout_s`.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import structlog

from ragvisor.asgi.serve import serve
from ragvisor.config import Settings
from ragvisor.embed.onnx import build_onnx_embedder
from ragvisor.llm.gguf import resolve_gguf
from ragvisor.llm.worker.api import create_worker_app

OLLAMA_PORT = 11434  # what `worker.port = 0` means for a worker run on its own
PARENT_POLL_S = 0.5
EXIT_HARD = 1


def parent_gone(parent_pid: int, *, adopted_from_parent: bool, current_ppid: int) -> bool:
    """Whether the watched parent is gone: re-parented (if it was our parent) or no such pid."""
    if adopted_from_parent and current_ppid != parent_pid:
        return True
    try:
        os.kill(parent_pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # it exists, owned by someone else
        return False
    return False


class ParentWatch:
    """The background check described in the module docstring."""

    def __init__(self, parent_pid: int, *, stop_timeout_s: float) -> None:
        self._parent_pid = parent_pid
        self._was_child = os.getppid() == parent_pid
        self._stop_timeout_s = stop_timeout_s
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="parent-watch", daemon=True)

    def start(self) -> None:
        """Begin watching."""
        self._thread.start()

    def stop(self) -> None:
        """Stop watching (the worker is exiting anyway)."""
        self._stopped.set()

    def _run(self) -> None:
        while not self._stopped.wait(PARENT_POLL_S):
            if parent_gone(
                self._parent_pid, adopted_from_parent=self._was_child, current_ppid=os.getppid()
            ):
                break
        else:
            return
        log = structlog.get_logger(component="worker")
        log.warning("worker.parent_gone", parent_pid=self._parent_pid)
        os.kill(os.getpid(), signal.SIGTERM)  # uvicorn's handler: graceful shutdown
        if not self._stopped.wait(self._stop_timeout_s):
            log.error("worker.exit_forced", after_s=self._stop_timeout_s)
            # A stuck shutdown must not leave an orphan holding a model's memory.
            os._exit(EXIT_HARD)


def run_worker(settings: Settings, *, parent_pid: int | None) -> None:
    """Serve until SIGTERM/SIGINT (or the parent's death); nothing is loaded before first use.

    Raises ModelFileError when the model file is missing.
    """
    log = structlog.get_logger(component="worker")
    worker = settings.worker
    data_dir = Path(settings.store.data_dir)
    model_path = resolve_gguf(settings.worker.model_path, data_dir)
    port = worker.port or OLLAMA_PORT
    app = create_worker_app(
        settings,
        model_path=model_path,
        build_embedder=lambda: build_onnx_embedder(settings.embedder, data_dir),
        log=log,
    )
    watch = (
        ParentWatch(parent_pid, stop_timeout_s=worker.stop_timeout_s)
        if parent_pid is not None
        else None
    )
    log.info(
        "worker.started",
        model=settings.generator.model,
        path=str(model_path),
        threads=worker.threads,
        batch_size=worker.batch_size,
        host=worker.host,
        port=port,
        pid=os.getpid(),
        parent_pid=parent_pid,
    )
    if watch is not None:
        watch.start()
    try:
        serve(app, host=worker.host, port=port, graceful_s=worker.stop_timeout_s)
    finally:
        if watch is not None:
            watch.stop()
        log.info("worker.stopped")
