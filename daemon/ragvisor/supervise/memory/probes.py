"""The real probe: MemAvailable, swap and its in/out rates from psutil, pressure stall
information from `/proc/pressure/memory`, and the RSS of the stack's programs (the daemon, its
worker, Ollama, Neo4j) found by pid, pid file or process name."""

from __future__ import annotations

import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from ragvisor.supervise.memory.sample import MemorySample


def parse_psi(text: str) -> tuple[float | None, float | None]:
    """The `some` and `full` avg10 values of a `/proc/pressure/memory` text (None if absent)."""
    found: dict[str, float] = {}
    for line in text.splitlines():
        kind, _, rest = line.partition(" ")
        fields = dict(item.split("=", 1) for item in rest.split() if "=" in item)
        try:
            found[kind] = float(fields["avg10"])
        except (KeyError, ValueError):
            continue
    return found.get("some"), found.get("full")


def read_psi(path: Path) -> tuple[float | None, float | None]:
    """PSI avg10 values from `path`; (None, None) where the kernel has no PSI (file missing, or
    present but refusing reads when booted with ``psi=0``)."""
    try:
        return parse_psi(path.read_text())
    except OSError:
        return None, None


def _read_pid_file(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


@dataclass
class _Watched:
    """One program of the stack found by name (or pid file), with its descendants: Ollama's
    models live in runner processes it spawns, and Neo4j 5 runs its server under a boot loader."""

    label: str
    matches: Callable[[Mapping[str, Any]], bool]
    pid_file: Path | None
    members: list[psutil.Process] = field(default_factory=list)


def _alive_rss(proc: psutil.Process) -> int | None:
    """RSS of a still-running process, None once it is gone (or its pid was reused)."""
    try:
        if not proc.is_running():  # compares create_time: a reused pid is not our process
            return None
        rss = int(proc.memory_info().rss)
    except psutil.Error:
        return None
    # An exited but unreaped child (a zombie) reports 0: no real program has an empty RSS.
    return rss or None


class SystemProbe:
    """The real probe: psutil for memory and swap, `/proc/pressure/memory` for PSI, and the RSS
    of this daemon, of `extra_pids()` (the worker) and of Ollama and Neo4j.

    Process lists are scanned at most every `rescan_interval_s` (and again soon after a watched
    process exits); between scans, known pids are re-validated (pid + create time) each sample,
    so a sample costs a few reads of /proc. Swap rates come from the deltas of psutil's
    cumulative `sin`/`sout` over at least `min_rate_window_s`, so an extra sample taken right
    after another (after an unload) does not produce a rate from a 50 ms window.
    """

    def __init__(
        self,
        *,
        ollama_process: str = "ollama",
        neo4j_process: str = "neo4j",
        ollama_pid_file: Path | None = None,
        neo4j_pid_file: Path | None = None,
        extra_pids: Callable[[], Mapping[str, int | None]] = dict,
        proc_pressure: Path = Path("/proc/pressure/memory"),
        rescan_interval_s: float = 30.0,
        min_rate_window_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._extra_pids = extra_pids
        self._proc_pressure = proc_pressure
        self._rescan_interval_s = rescan_interval_s
        self._min_rate_window_s = min_rate_window_s
        self._clock = clock
        self._lock = threading.Lock()
        self._self_proc = psutil.Process()
        self._extra: dict[str, psutil.Process] = {}
        self._next_scan = -math.inf
        self._swap_base: tuple[float, int, int] | None = None
        self._rates: tuple[float | None, float | None] = (None, None)
        neo4j_needle = neo4j_process.lower()

        def is_ollama(info: Mapping[str, Any]) -> bool:
            return bool(info.get("name") == ollama_process)

        def is_neo4j(info: Mapping[str, Any]) -> bool:
            name = info.get("name") or ""
            if name == neo4j_process:
                return True
            cmdline = " ".join(info.get("cmdline") or ()).lower()
            return name.startswith("java") and neo4j_needle in cmdline

        self._watched = (
            _Watched("ollama", is_ollama, ollama_pid_file),
            _Watched("neo4j", is_neo4j, neo4j_pid_file),
        )

    def sample(self) -> MemorySample:
        """Measure now. Raises psutil.Error only if the host's own counters cannot be read."""
        with self._lock:
            now = self._clock()
            virtual = psutil.virtual_memory()
            swap = psutil.swap_memory()
            swap_in, swap_out = self._swap_rates(now, int(swap.sin), int(swap.sout))
            psi_some, psi_full = read_psi(self._proc_pressure)
            return MemorySample(
                taken_at=now,
                total_bytes=int(virtual.total),
                available_bytes=int(virtual.available),
                swap_total_bytes=int(swap.total),
                swap_used_bytes=int(swap.used),
                swap_in_bytes_per_s=swap_in,
                swap_out_bytes_per_s=swap_out,
                psi_some_avg10=psi_some,
                psi_full_avg10=psi_full,
                rss_bytes=self._rss(now),
            )

    def _swap_rates(self, now: float, sin: int, sout: int) -> tuple[float | None, float | None]:
        if self._swap_base is None:
            self._swap_base = (now, sin, sout)
            return self._rates
        start, sin0, sout0 = self._swap_base
        elapsed = now - start
        if elapsed >= self._min_rate_window_s:
            self._rates = (max(0, sin - sin0) / elapsed, max(0, sout - sout0) / elapsed)
            self._swap_base = (now, sin, sout)
        return self._rates

    def _rss(self, now: float) -> dict[str, int]:
        rss: dict[str, int] = {}
        own = _alive_rss(self._self_proc)
        if own is not None:
            rss["daemon"] = own
        for label, pid in self._extra_pids().items():
            value = self._extra_rss(label, pid)
            if value is not None:
                rss[label] = value
        if now >= self._next_scan or self._pid_file_changed():
            self._scan(now)
        for watched in self._watched:
            values = [(proc, _alive_rss(proc)) for proc in watched.members]
            alive = [(proc, value) for proc, value in values if value is not None]
            if len(alive) < len(values):
                watched.members = [proc for proc, _ in alive]
                self._next_scan = min(self._next_scan, now + 1.0)  # look for a successor soon
            if alive:
                rss[watched.label] = sum(value for _, value in alive)
        return rss

    def _extra_rss(self, label: str, pid: int | None) -> int | None:
        if pid is None:
            self._extra.pop(label, None)
            return None
        proc = self._extra.get(label)
        if proc is None or proc.pid != pid:
            try:
                proc = self._extra[label] = psutil.Process(pid)
            except psutil.Error:
                return None
        return _alive_rss(proc)

    def _pid_file_changed(self) -> bool:
        """A pid file now names a live process we do not watch yet (the program restarted)."""
        for watched in self._watched:
            if watched.pid_file is None:
                continue
            pid = _read_pid_file(watched.pid_file)
            known = {proc.pid for proc in watched.members}
            if pid is not None and pid not in known and psutil.pid_exists(pid):
                return True
        return False

    def _scan(self, now: float) -> None:
        """One pass over the process table: roots by pid file or name, then their descendants."""
        self._next_scan = now + self._rescan_interval_s
        skip = {os.getpid(), *(p for p in self._extra_pids().values() if p is not None)}
        table: dict[int, psutil.Process] = {}
        children: dict[int, list[int]] = {}
        for proc in psutil.process_iter(["name", "cmdline", "ppid"]):
            table[proc.pid] = proc
            children.setdefault(proc.info["ppid"] or 0, []).append(proc.pid)
        for watched in self._watched:
            roots = self._pid_file_roots(watched, table)
            if not roots:
                roots = [
                    pid for pid, p in table.items() if pid not in skip and watched.matches(p.info)
                ]
            members: list[int] = []
            pending = deque(roots)
            while pending:
                pid = pending.popleft()
                if pid not in members:
                    members.append(pid)
                    pending.extend(children.get(pid, ()))
            watched.members = [table[pid] for pid in members]

    @staticmethod
    def _pid_file_roots(watched: _Watched, table: Mapping[int, psutil.Process]) -> list[int]:
        if watched.pid_file is None:
            return []
        pid = _read_pid_file(watched.pid_file)
        return [pid] if pid is not None and pid in table else []
