"""What the benchmarks share: where things are, running the daemon and a sync, sampling memory
and the box's load, medians and percentiles, and one way to report (a table, then JSON).

The benches import this and nothing of each other. Nothing here asserts: benches print figures.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil

REPO = Path(__file__).resolve().parents[1]


VENV_BIN = Path(sys.executable).parent


RAGVISOR = VENV_BIN / "ragvisor"


PYTHON = sys.executable


POLL_INTERVAL_S = 0.02


STOP_TIMEOUT_S = 30.0


_T0 = time.perf_counter()


def progress(message: str) -> None:
    """A plain progress line on stderr, stamped with the time since the script started."""
    print(f"[bench {time.perf_counter() - _T0:7.1f}s] {message}", file=sys.stderr, flush=True)


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (linear interpolation), or NaN for no values."""
    return float(np.percentile(values, q)) if values else float("nan")


def median(values: list[float]) -> float:
    """Median, or NaN for no values."""
    return float(statistics.median(values)) if values else float("nan")


def rnd(value: float, digits: int = 3) -> float:
    """Round for printing and JSON."""
    return round(float(value), digits)


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for child processes: ours minus any RAGVISOR_* settings, plus extras."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAGVISOR_")}
    env.update(extra)
    return env


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_mb(pid: int) -> float:
    """Resident set size of a process in MB (NaN if it is gone)."""
    try:
        return psutil.Process(pid).memory_info().rss / 1e6
    except psutil.Error:
        return float("nan")


def hwm_mb(pid: int) -> float:
    """Peak RSS (VmHWM) of a process in MB (NaN if it is gone or the kernel has no such line)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / 1e6
    except OSError:
        pass
    return float("nan")


def stop(proc: subprocess.Popen[Any]) -> None:
    """SIGTERM, wait; SIGKILL if it does not exit in time. Safe to call twice."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        progress(f"WARNING: pid {proc.pid} ignored SIGTERM for {STOP_TIMEOUT_S:.0f}s; killing")
        proc.kill()
        proc.wait(timeout=STOP_TIMEOUT_S)


@contextlib.contextmanager
def running(cmd: list[str], env: dict[str, str], log_path: Path) -> Iterator[subprocess.Popen[Any]]:
    """Start a process with stderr to ``log_path``; always stop it on the way out."""
    with log_path.open("ab") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=log, cwd=REPO)
        try:
            yield proc
        finally:
            stop(proc)


def run_sync(
    corpus: Path,
    data_dir: Path,
    log_path: Path,
    *,
    timeout_s: float,
    watch: bool = False,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Run `ragvisor sync --json`; returns the report plus wall time and (if watched) RSS.

    ``env`` adds settings to the clean environment (another store, a shared model dir)."""
    cmd = [str(RAGVISOR), "sync", "--corpus", str(corpus), "--data-dir", str(data_dir), "--json"]
    rss_samples: list[float] = []
    hwm = float("nan")
    started = time.perf_counter()
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            cmd, env=clean_env(**(env or {})), stdout=subprocess.PIPE, stderr=log, cwd=REPO
        )
        try:
            deadline = started + timeout_s
            next_note = started + 20.0
            while proc.poll() is None:
                if time.perf_counter() > deadline:
                    raise TimeoutError(f"ragvisor sync ran past {timeout_s:.0f}s")
                if watch:
                    sample = rss_mb(proc.pid)
                    peak = hwm_mb(proc.pid)
                    if sample == sample and sample > 0:  # NaN or 0: exited / a zombie
                        rss_samples.append(sample)
                    if peak == peak and peak > 0:
                        hwm = peak  # VmHWM only grows; the last reading is the best
                    if time.perf_counter() >= next_note:
                        progress(
                            f"first sync running: {time.perf_counter() - started:.0f}s, "
                            f"RSS {sample:.0f} MB"
                        )
                        next_note += 20.0
                time.sleep(0.25 if watch else 0.01)
            out = proc.stdout.read() if proc.stdout else b""
        finally:
            stop(proc)
            if proc.stdout:
                proc.stdout.close()
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"ragvisor sync exited {proc.returncode}; see {log_path}")
    report: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    report["wall_s"] = wall
    if watch:
        report["rss_last_mb"] = rss_samples[-1] if rss_samples else float("nan")
        report["rss_max_sampled_mb"] = max(rss_samples) if rss_samples else float("nan")
        report["hwm_mb"] = hwm
    return report


class LoadMeter:
    """How much of the box other processes used during each phase (the noise indicator).

    Busy CPU time of the whole machine minus the CPU time of this script and its waited-for
    children, as a share of the phase's wall time x CPUs; steal time separately (a VM whose
    host is busy). Phase boundaries fall where no child of ours is still running.
    """

    def __init__(self) -> None:
        self.phases: dict[str, dict[str, float]] = {}
        self._name: str | None = None
        self._start: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)

    @staticmethod
    def _snapshot() -> tuple[float, float, float, float]:
        ct = psutil.cpu_times()
        busy = ct.user + ct.nice + ct.system + getattr(ct, "irq", 0.0) + getattr(ct, "softirq", 0.0)
        mine = psutil.Process().cpu_times()
        ours = mine.user + mine.system + mine.children_user + mine.children_system
        return time.perf_counter(), busy, ours, getattr(ct, "steal", 0.0)

    def mark(self, name: str | None) -> None:
        """End the current phase (if any) and start ``name`` (None: just end)."""
        now = self._snapshot()
        if self._name is not None:
            wall = now[0] - self._start[0]
            capacity = max(wall * (os.cpu_count() or 1), 1e-9)
            foreign = max(0.0, (now[1] - self._start[1]) - (now[2] - self._start[2]))
            self.phases[self._name] = {
                "wall_s": wall,
                "other_processes_cpu_share": foreign / capacity,
                "steal_share": (now[3] - self._start[3]) / capacity,
                "loadavg_1m_end": os.getloadavg()[0],
            }
        self._name, self._start = name, now


def serve_cmd(corpus: Path, data_dir: Path, port: int) -> list[str]:
    """The command line of the daemon."""
    return [
        str(RAGVISOR),
        "serve",
        "--corpus",
        str(corpus),
        "--data-dir",
        str(data_dir),
        "--port",
        str(port),
    ]


# The benches time generation and ask the same questions round after round: answered from the
# answer cache they would time the cache (bench/answer_cache_bench.py does that on purpose).
SERVE_ENV = {
    # The folder watch would sync the benches' own edits behind their backs (the freshness
    # bench turns it on: it measures it).
    "RAGVISOR_SYNC__WATCH": "false",
    "RAGVISOR_SYNC__ON_START": "false",
    "RAGVISOR_SYNC__INTERVAL_S": "0",
    "RAGVISOR_ASK__CACHE__ENABLED": "false",
}


def wait_ready(port: int, proc: subprocess.Popen[Any], timeout_s: float) -> None:
    """Poll /readyz until 200 (bounded)."""
    deadline = time.perf_counter() + timeout_s
    with httpx.Client(timeout=httpx.Timeout(1.0, connect=0.2)) as client:
        while time.perf_counter() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"ragvisor serve exited {proc.returncode}")
            try:
                if client.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(POLL_INTERVAL_S)
    raise TimeoutError(f"/readyz not 200 within {timeout_s:.0f}s")


SUMMARY_HEADER = ("figure", "value", "target", "verdict")


def print_table(rows: Sequence[Sequence[str]], header: Sequence[str] = SUMMARY_HEADER) -> None:
    """A fixed-width table on stdout: the figure's name, its value columns right-aligned, then
    target and verdict. A bench comparing backends gives one value column per backend."""
    widths = [max(len(r[i]) for r in [*rows, header]) for i in range(len(header))]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))
    print(line)
    print("-" * len(line))
    for row in rows:
        cells = [row[0].ljust(widths[0])]
        cells += [cell.rjust(width) for cell, width in zip(row[1:-2], widths[1:-2], strict=True)]
        cells += [row[-2].ljust(widths[-2]), row[-1]]
        print("  ".join(cells))


def jsonable(value: Any) -> Any:
    """Round floats and turn NaN into None so the JSON file is strict."""
    if isinstance(value, float):
        return None if value != value else rnd(value, 4)
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def output_folders(out: Path, kind: str) -> tuple[Path, str, Path]:
    """The results folder (git-ignored), this run's time stamp and its own logs folder."""
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    if not (out / ".gitignore").exists():
        (out / ".gitignore").write_text("*\n", encoding="utf-8")
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    logs = out / (f"logs-{kind}-{stamp}" if kind else f"logs-{stamp}")
    logs.mkdir()
    return out, stamp, logs


def run_header(stamp: str, args: argparse.Namespace) -> dict[str, Any]:
    """The start of every benchmark's figures: when, on what machine, with which options."""
    return {
        "started_utc": stamp,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "mem_total_mb": psutil.virtual_memory().total / 1e6,
        },
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
    }


def finish_report(
    figures: dict[str, Any],
    rows: Sequence[Sequence[str]],
    path: Path,
    logs: Path,
    busy_advice: str,
    header: Sequence[str] = SUMMARY_HEADER,
) -> None:
    """Print the noise line, the summary table, then save every figure as JSON to `path`.

    Shared by the benchmarks so their reports read the same way; `header` names the table's
    columns (and the keys of each row in the JSON's `summary`).
    """
    noise = figures.get("noise", {})
    print(
        "other processes' CPU share per phase (0 = quiet box): "
        + ", ".join(f"{k} {v['other_processes_cpu_share']:.0%}" for k, v in noise.items())
        + "; steal max "
        + f"{max((v['steal_share'] for v in noise.values()), default=0.0):.0%}"
    )
    busy = [k for k, v in noise.items() if v["other_processes_cpu_share"] > 0.1]
    if busy:
        phases = ", ".join(busy)
        print(f"WARNING: other processes used >10% of the CPUs during {phases}; {busy_advice}")
    print()
    print_table(rows, header)
    figures["summary"] = [dict(zip(header, row, strict=True)) for row in rows]
    path.write_text(json.dumps(jsonable(figures), indent=2) + "\n", encoding="utf-8")
    print()
    print(f"figures: {path}")
    print(f"logs:    {logs}")


# Realistic questions about the repo's docs; drawn round-robin.
QUESTIONS = [
    "How does sync decide what to re-embed?",
    "What does /readyz check?",
    "How do I override a setting with an environment variable?",
    "What happens to a sync if the process is killed halfway through?",
    "What is the model fingerprint and when does it change?",
    "Which exit codes does the ragvisor command use?",
    "How do I follow one request through the logs?",
    "What does the keep_alive setting of the generator do?",
    "How do I trigger a sync through the admin endpoint?",
    "What is stored in the data directory and how do I back it up?",
]


class TreeLoadMeter(LoadMeter):
    """search_bench's noise meter, also counting the live daemon and backend as ours.

    The base class counts only children that have exited; here the daemon, its worker or an
    Ollama server and runner run through the timed phases, so their CPU time is read from
    them directly (with their reaped children's). A watched process that is gone by the next
    reading is counted where its time went: into our children's (a child we reaped), into
    a watched parent's (a runner its server reaped), or else — an Ollama server the ladder
    replaced, reaped by init — at its last reading, so that it is never read as other
    processes' CPU (the phase's share after it is lost, a slight over-estimate of the noise).
    """

    def __init__(self) -> None:
        super().__init__()
        self.watched: list[psutil.Process] = []
        self._last: dict[psutil.Process, tuple[float, int]] = {}  # CPU s and parent pid

    def _snapshot(self) -> tuple[float, float, float, float]:
        now, busy, ours, steal = LoadMeter._snapshot()
        alive = {proc.pid for proc in self.watched if proc.is_running()}
        for proc in self.watched:
            try:
                times = proc.cpu_times()
                used = times.user + times.system + times.children_user + times.children_system
                self._last[proc] = (used, proc.ppid())
            except psutil.Error:
                used, parent = self._last.get(proc, (0.0, os.getpid()))
                if parent == os.getpid() or parent in alive:
                    used = 0.0  # in our children's time, or in a watched parent's
            ours += used
        return now, busy, ours, steal
