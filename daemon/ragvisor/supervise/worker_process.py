"""The embedded worker as a child process: start it, wait until it answers, watch it, restart
it when it dies, stop it with the daemon.

A worker never outlives its daemon: it is started with ``--parent-pid`` and exits on its own
when the daemon is gone (even after ``kill -9``), and on Linux it also gets SIGTERM from the
kernel when the thread that started it exits (``PR_SET_PDEATHSIG``; only the main thread or
the long-lived watcher thread ever start it).
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

from ragvisor.errors import BackendUnavailable
from ragvisor.supervise.backoff import RestartHistory, RestartPolicy

PR_SET_PDEATHSIG = 1
POLL_S = 0.5
# A worker that died waits 1 s, then 2 s, 4 s … before its respawn; a minute without a restart
# and the next one waits 1 s again.
CRASH_BACKOFF_BASE_S = 1.0
CRASH_QUIET_S = 60.0


def free_loopback_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (the worker binds it a moment later)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


class WorkerProcess:
    """Owns one `ragvisor worker` child: spawn, readiness, watch-and-restart, stop.

    ``state`` is one of: stopped, starting, running, restarting. A child that dies is respawned
    after a backoff (1 s, 2 s, 4 s … up to ``backoff_max_s``, from 1 s again after a minute of
    health). A child the escalation ladder killed (:meth:`kill`) is respawned at once: the
    ladder's own restart policy (budget and backoff) already decided that restart, and one
    child answers to one policy per cause, not to two stacked.
    """

    def __init__(
        self,
        *,
        host: str,
        port: int,
        model_path: Path,
        env: Mapping[str, str],
        data_dir: Path,
        start_timeout_s: float,
        stop_timeout_s: float,
        backoff_max_s: float,
        log: Any,
    ) -> None:
        self.host = host
        self.port = port
        self.model_path = model_path
        self._env = dict(env)
        self._data_dir = data_dir
        self.start_timeout_s = start_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.backoff_max_s = backoff_max_s
        self._crashes = RestartHistory(
            RestartPolicy(base_s=CRASH_BACKOFF_BASE_S, max_s=backoff_max_s, quiet_s=CRASH_QUIET_S)
        )
        self._kill_requested = False
        self._log = log
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None
        self.state = "stopped"
        self.restarts = 0
        self.last_exit: int | None = None
        self._spawn_started = 0.0

    @property
    def url(self) -> str:
        """Base URL of the worker's Ollama API."""
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """Process id of the running child, if any."""
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def command(self) -> list[str]:
        """The child's command line: it logs at our level; its settings come from the
        environment (see app.worker_env)."""
        level = logging.getLevelName(logging.getLogger().getEffectiveLevel()).lower()
        cmd = [sys.executable, "-m", "ragvisor", "--log-level", level, "worker"]
        cmd += [
            "--host", self.host,
            "--port", str(self.port),
            "--model-path", str(self.model_path),
            "--data-dir", str(self._data_dir),
            "--parent-pid", str(os.getpid()),
        ]  # fmt: skip
        return cmd

    def start(self) -> None:
        """Spawn the worker and wait until it answers (see :meth:`spawn`, :meth:`wait_ready`)."""
        self.spawn()
        self.wait_ready()

    def spawn(self) -> None:
        """Start the child without waiting, so the caller can do other start-up work meanwhile.

        A stopped WorkerProcess stays stopped: build a new one to start again.
        """
        with self._lock:
            if self._stopping.is_set():
                raise BackendUnavailable("the worker is stopping")
            self.state = "starting"
            self._spawn_started = time.perf_counter()
            self._proc = subprocess.Popen(
                self.command(),
                env=self._env,
                stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent,  # noqa: PLW1509 - prctl only, no locks taken
            )
            self._log.info("worker.spawned", pid=self._proc.pid, url=self.url)

    def wait_ready(self) -> None:
        """Wait until `/api/version` answers, then watch the child from a thread.

        Raises BackendUnavailable (and stops the child) when it exits or stays silent for
        ``start_timeout_s``. The watcher starts either way: the daemon serves searches while the
        worker comes up (`runtime.lifecycle`), so a worker that failed to start is respawned
        with the crash backoff like one that died later, until :meth:`stop`.
        """
        try:
            self._wait_ready(self._spawn_started)
        finally:
            if self._watcher is None and not self._stopping.is_set():
                self._watcher = threading.Thread(
                    target=self._watch, name="worker-watch", daemon=True
                )
                self._watcher.start()

    def _wait_ready(self, started: float) -> None:
        deadline = started + self.start_timeout_s
        proc = self._proc
        if proc is None:
            raise BackendUnavailable("worker was never started")
        while time.perf_counter() < deadline and not self._stopping.is_set():
            code = proc.poll()
            if code is not None:
                self.state = "stopped"
                raise BackendUnavailable(f"worker exited with status {code} while starting")
            try:
                if httpx.get(self.url + "/api/version", timeout=1.0).status_code == 200:
                    self.state = "running"
                    self._log.info(
                        "worker.ready",
                        pid=proc.pid,
                        url=self.url,
                        duration_ms=round((time.perf_counter() - started) * 1000, 1),
                    )
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        if self._stopping.is_set():
            return
        self._terminate(proc)
        self.state = "stopped"
        raise BackendUnavailable(f"worker did not answer within {self.start_timeout_s:g} s")

    def _watch(self) -> None:
        while not self._stopping.wait(POLL_S):
            proc = self._proc
            code = proc.poll() if proc is not None else None
            if code is None:
                continue
            self.last_exit = code
            self.state = "restarting"
            requested, self._kill_requested = self._kill_requested, False
            delay_s = 0.0 if requested else self._crashes.next_delay_s()
            self._log.error(
                "worker.exited",
                pid=proc.pid if proc else None,
                returncode=code,
                restart_in_s=delay_s,
            )
            if self._stopping.wait(delay_s):
                break
            if not requested:
                self._crashes.note()
            try:
                started = time.perf_counter()
                self.spawn()
                self._wait_ready(started)
                self.restarts += 1
                self._log.warning(
                    "worker.restarted",
                    pid=self.pid,
                    restarts=self.restarts,
                    duration_ms=round((time.perf_counter() - started) * 1000, 1),
                )
            except BackendUnavailable as exc:
                self._log.error("worker.restart_failed", error=str(exc))

    def kill(self, reason: str) -> None:
        """SIGKILL the child (a frozen one ignores SIGTERM); the watcher respawns it.

        The escalation ladder's restart for the embedded worker.
        """
        with self._lock:
            proc = self._proc
            if proc is None or proc.poll() is not None:
                return
            self.state = "restarting"
            self._kill_requested = True
            self._log.warning("worker.killing", pid=proc.pid, reason=reason)
            proc.kill()
            proc.wait()

    def check_alive(self) -> bool:
        """Whether the child is running now (the watcher notices a death within 0.5 s)."""
        proc = self._proc
        return proc is not None and proc.poll() is None and self.state == "running"

    def stop(self) -> None:
        """SIGTERM, wait up to ``stop_timeout_s``, then SIGKILL. Safe to call twice."""
        self._stopping.set()
        if self._watcher is not None and self._watcher is not threading.current_thread():
            self._watcher.join(timeout=self.stop_timeout_s + 2)
        with self._lock:
            proc = self._proc
            if proc is not None:
                self._terminate(proc)
            self.state = "stopped"

    def _terminate(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is not None:
            return
        started = time.perf_counter()
        proc.terminate()
        try:
            code = proc.wait(self.stop_timeout_s)
            how = "terminated"
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
            how = "killed"
        self._log.info(
            "worker.stopped",
            pid=proc.pid,
            how=how,
            returncode=code,
            duration_ms=round((time.perf_counter() - started) * 1000, 1),
        )

    def describe(self) -> dict[str, Any]:
        """State for `/readyz` and status output."""
        return {
            "state": self.state,
            "pid": self.pid,
            "url": self.url,
            "restarts": self.restarts,
            "last_exit": self.last_exit,
        }
