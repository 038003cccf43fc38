"""The memory guard: measure the box every few seconds and act before the kernel's OOM killer does.

On a 4 GB box the chat model loading beside the embedding model took the whole machine down.
Free RAM alone does not warn early enough, so the guard reads three signals: MemAvailable (what
can be had without swapping), the swap-in *rate* (a box paging back in is thrashing, however
much swap is left) and, where the kernel has it, pressure stall information (PSI: the share of
time tasks waited for memory). It also adds up the RSS of the programs of the stack (daemon,
worker, Ollama, Neo4j) against an optional budget.

Three layers, from pure to I/O:

- probes produce a :class:`MemorySample`: :class:`SystemProbe` (psutil and
  ``/proc/pressure/memory``), :class:`FileProbe` (rehearsals: readings overridden from a JSON
  file, see :func:`probe_from_env`) and :class:`ScriptedProbe` (tests);
- :func:`assess` and :func:`next_level` are pure: a sample and the settings give a level; the
  level rises at once and falls only after a few calm checks clear the marks by a margin
  (hysteresis, so the guard does not flap around a threshold);
- :class:`MemoryGuard` runs in the daemon's event loop (an APScheduler job): it samples in a
  thread, publishes metrics, logs level changes, unloads idle models under pressure (generator
  first, then embedder), tells `/ask` to answer extractively or to shed (:meth:`memory_short`,
  :meth:`ask_shed`) and checks that a model fits before it loads (:meth:`make_room`).

Sizes in settings and logs are MB meaning MiB (1,048,576 bytes), as ``free -m`` shows them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import json
import math
import os
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import psutil
import structlog

from ragvisor.config import MemorySettings
from ragvisor.metrics import MEMORY_LEVEL_VALUE, Metrics

if TYPE_CHECKING:
    from apscheduler.schedulers.asyncio import AsyncIOScheduler

MB = 1024 * 1024
TEST_MEMORY_FILE_ENV = "RAGVISOR_TEST_MEMORY_FILE"


def _mb(value: float | None) -> float | None:
    return None if value is None else round(value / MB, 1)


# --------------------------------------------------------------------------- samples and probes


@dataclass(frozen=True, slots=True)
class MemorySample:
    """One reading of the host's memory and of the watched processes."""

    taken_at: float  # time.monotonic()
    total_bytes: int
    available_bytes: int  # MemAvailable
    swap_total_bytes: int
    swap_used_bytes: int
    swap_in_bytes_per_s: float | None  # None until a first rate window has passed
    swap_out_bytes_per_s: float | None
    psi_some_avg10: float | None  # /proc/pressure/memory; None where the kernel lacks it
    psi_full_avg10: float | None
    rss_bytes: Mapping[str, int]  # "daemon", "worker", "ollama", "neo4j": only those found

    @property
    def watched_rss_bytes(self) -> int:
        """RSS of every watched process together (what `memory.budget_mb` limits)."""
        return sum(self.rss_bytes.values())


class MemoryProbe(Protocol):
    """Where samples come from; `sample()` runs in a worker thread and may block briefly."""

    def sample(self) -> MemorySample: ...


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


# Keys of a rehearsal file (and of ScriptedProbe.set): MB-valued readings and the sample fields
# they replace. One vocabulary for operators and tests.
_BYTES_KEYS = {
    "available_mb": "available_bytes",
    "total_mb": "total_bytes",
    "swap_total_mb": "swap_total_bytes",
    "swap_used_mb": "swap_used_bytes",
}
_RATE_KEYS = {"swap_in_mb_s": "swap_in_bytes_per_s", "swap_out_mb_s": "swap_out_bytes_per_s"}
_PSI_KEYS = ("psi_some_avg10", "psi_full_avg10")
OVERRIDE_KEYS = frozenset({*_BYTES_KEYS, *_RATE_KEYS, *_PSI_KEYS, "rss_mb"})


def _number(key: str, value: Any, *, nullable: bool) -> float | None:
    if value is None and nullable:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        kind = "a number >= 0" + (" or null" if nullable else "")
        raise ValueError(f"{key}: expected {kind}, got {value!r}")
    return float(value)


def apply_overrides(sample: MemorySample, overrides: Mapping[str, Any]) -> MemorySample:
    """`sample` with readings replaced by MB-valued `overrides` (the rehearsal file's keys).

    `rss_mb` merges into the measured RSS; a null removes a process. Raises ValueError naming an
    unknown key or a bad value.
    """
    unknown = sorted(set(overrides) - OVERRIDE_KEYS)
    if unknown:
        raise ValueError(f"unknown keys {unknown}; expected some of {sorted(OVERRIDE_KEYS)}")
    changes: dict[str, Any] = {}
    for key, name in _BYTES_KEYS.items():
        if key in overrides:
            changes[name] = int(_number(key, overrides[key], nullable=False) or 0) * MB
    for key, name in _RATE_KEYS.items():
        if key in overrides:
            rate = _number(key, overrides[key], nullable=True)
            changes[name] = None if rate is None else rate * MB
    for key in _PSI_KEYS:
        if key in overrides:
            changes[key] = _number(key, overrides[key], nullable=True)
    if "rss_mb" in overrides:
        table = overrides["rss_mb"]
        if not isinstance(table, Mapping):
            raise ValueError(f"rss_mb: expected a table of process -> MB, got {table!r}")
        rss = dict(sample.rss_bytes)
        for process, value in table.items():
            mb = _number(f"rss_mb.{process}", value, nullable=True)
            if mb is None:
                rss.pop(process, None)
            else:
                rss[process] = int(mb * MB)
        changes["rss_bytes"] = rss
    return dataclasses.replace(sample, **changes)


class FileProbe:
    """A rehearsal probe: the real readings of `base`, overridden by a JSON file read on each
    sample, so a test or an operator can simulate pressure on a running daemon by rewriting it.

    Keys (all optional, MB): ``available_mb``, ``total_mb``, ``swap_total_mb``, ``swap_used_mb``,
    ``swap_in_mb_s``, ``swap_out_mb_s``, ``psi_some_avg10``, ``psi_full_avg10`` and ``rss_mb``
    (``{"ollama": 2500}``). A missing file means "no overrides" (delete it to end a rehearsal);
    invalid JSON, an unknown key or a bad value raises ValueError (TypeError when the file holds
    no JSON object), which the guard logs as a failed probe.
    Write the file atomically (write a temporary file, then rename it over) so that a sample
    never reads half of it.
    """

    def __init__(self, path: Path, base: MemoryProbe) -> None:
        self.path = path
        self._base = base

    def sample(self) -> MemorySample:
        """The base probe's sample with the file's overrides applied."""
        measured = self._base.sample()
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return measured
        try:
            overrides = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{self.path}: not valid JSON: {exc}") from exc
        if not isinstance(overrides, Mapping):
            raise TypeError(f"{self.path}: expected a JSON object")
        try:
            return apply_overrides(measured, overrides)
        except ValueError as exc:
            raise ValueError(f"{self.path}: {exc}") from exc


def synthetic_sample(
    *,
    available_mb: float = 2048,
    total_mb: float = 4096,
    swap_total_mb: float = 0,
    swap_used_mb: float = 0,
    swap_in_mb_s: float | None = None,
    swap_out_mb_s: float | None = None,
    psi_some_avg10: float | None = None,
    psi_full_avg10: float | None = None,
    rss_mb: Mapping[str, float] | None = None,
    taken_at: float = 0.0,
) -> MemorySample:
    """A sample described in MB (a calm 4 GB box by default), for tests and rehearsals."""
    return MemorySample(
        taken_at=taken_at,
        total_bytes=int(total_mb * MB),
        available_bytes=int(available_mb * MB),
        swap_total_bytes=int(swap_total_mb * MB),
        swap_used_bytes=int(swap_used_mb * MB),
        swap_in_bytes_per_s=None if swap_in_mb_s is None else swap_in_mb_s * MB,
        swap_out_bytes_per_s=None if swap_out_mb_s is None else swap_out_mb_s * MB,
        psi_some_avg10=psi_some_avg10,
        psi_full_avg10=psi_full_avg10,
        rss_bytes={name: int(mb * MB) for name, mb in (rss_mb or {}).items()},
    )


class ScriptedProbe:
    """An in-process probe that returns what a test says: queued samples first, then `current`.

    ``ScriptedProbe()`` reads as a calm 4 GB box; ``probe.set(available_mb=300)`` changes the
    current reading with the rehearsal file's keys; ``probe.push(sample, ...)`` queues exact
    samples; ``probe.fail(exc, times=2)`` makes the next samples raise. `calls` counts samples
    taken. Thread-safe (the guard samples from a worker thread).
    """

    def __init__(self, *samples: MemorySample, current: MemorySample | None = None) -> None:
        self._lock = threading.Lock()
        self._queue: deque[MemorySample] = deque(samples)
        self._failures: deque[BaseException] = deque()
        self.current = current or synthetic_sample()
        self.calls = 0

    def set(self, **overrides_mb: Any) -> None:
        """Change the current reading (keys as in the rehearsal file: ``available_mb``, …)."""
        with self._lock:
            self.current = apply_overrides(self.current, overrides_mb)

    def push(self, *samples: MemorySample) -> None:
        """Queue samples to be returned, in order, before `current`."""
        with self._lock:
            self._queue.extend(samples)

    def fail(self, exc: BaseException, *, times: int = 1) -> None:
        """Make the next `times` samples raise `exc`."""
        with self._lock:
            self._failures.extend([exc] * times)

    def sample(self) -> MemorySample:
        """The next queued sample (it becomes `current`), else `current`; or a scripted failure."""
        with self._lock:
            self.calls += 1
            if self._failures:
                raise self._failures.popleft()
            if self._queue:
                self.current = self._queue.popleft()
            return self.current


def probe_from_env(
    settings: MemorySettings,
    *,
    environ: Mapping[str, str] | None = None,
    extra_pids: Callable[[], Mapping[str, int | None]] = dict,
) -> MemoryProbe:
    """The probe the daemon should use: a SystemProbe built from the settings, wrapped in a
    FileProbe when `RAGVISOR_TEST_MEMORY_FILE` names a file (a rehearsal and testing aid, not a
    setting). The override is logged as a warning so a forgotten variable is visible.
    """
    system = SystemProbe(
        ollama_process=settings.ollama_process,
        neo4j_process=settings.neo4j_process,
        ollama_pid_file=settings.ollama_pid_file,
        neo4j_pid_file=settings.neo4j_pid_file,
        extra_pids=extra_pids,
    )
    path = (os.environ if environ is None else environ).get(TEST_MEMORY_FILE_ENV, "")
    if not path:
        return system
    structlog.get_logger(component="memory").warning(
        "memory.test_probe", file=path, note=f"readings overridden by {TEST_MEMORY_FILE_ENV}"
    )
    return FileProbe(Path(path), system)


# --------------------------------------------------------------------------- pure decisions


class MemoryLevel(enum.StrEnum):
    """How short memory is; each level says what the daemon gives up."""

    OK = "ok"
    PRESSURE = "pressure"  # idle models unloaded, /ask answers extractively
    CRITICAL = "critical"  # and /ask is shed with 503

    @property
    def severity(self) -> int:
        """0, 1, 2: the order of the levels (and the value of the `memory_level` gauge)."""
        return MEMORY_LEVEL_VALUE[self.value]


@dataclass(frozen=True, slots=True)
class Assessment:
    """A level and the reasons for it, each naming the config key whose mark was crossed."""

    level: MemoryLevel
    reasons: tuple[str, ...]


def assess(sample: MemorySample, settings: MemorySettings, *, margin_mb: int = 0) -> Assessment:
    """The level one sample calls for. Pure.

    CRITICAL: available below `critical_available_mb`. PRESSURE: available below
    `low_available_mb`, swap-in above `swap_in_mb_s`, PSI some avg10 above `psi_some_avg10`, or
    the watched RSS above `budget_mb` (each rule off when its key is 0). `margin_mb` raises the
    available marks and lowers the budget: the stricter test a level must pass to be left.
    """
    available_mb = sample.available_bytes / MB
    margin = f" + recovery margin {margin_mb}" if margin_mb else ""
    reasons: list[str] = []
    level = MemoryLevel.OK
    if available_mb < settings.critical_available_mb + margin_mb:
        level = MemoryLevel.CRITICAL
        reasons.append(
            f"available {available_mb:.0f} MB < memory.critical_available_mb "
            f"{settings.critical_available_mb}{margin}"
        )
    elif available_mb < settings.low_available_mb + margin_mb:
        level = MemoryLevel.PRESSURE
        reasons.append(
            f"available {available_mb:.0f} MB < memory.low_available_mb "
            f"{settings.low_available_mb}{margin}"
        )
    swap_in = sample.swap_in_bytes_per_s
    if settings.swap_in_mb_s > 0 and swap_in is not None and swap_in / MB > settings.swap_in_mb_s:
        reasons.append(
            f"swap-in {swap_in / MB:.1f} MB/s > memory.swap_in_mb_s {settings.swap_in_mb_s:g}"
        )
    psi = sample.psi_some_avg10
    if settings.psi_some_avg10 > 0 and psi is not None and psi > settings.psi_some_avg10:
        reasons.append(
            f"PSI some avg10 {psi:.1f} > memory.psi_some_avg10 {settings.psi_some_avg10:g}"
        )
    rss_mb = sample.watched_rss_bytes / MB
    if settings.budget_mb > 0 and rss_mb > settings.budget_mb - margin_mb:
        parts = ", ".join(f"{name} {value / MB:.0f}" for name, value in sample.rss_bytes.items())
        budget_margin = f" - recovery margin {margin_mb}" if margin_mb else ""
        reasons.append(
            f"watched RSS {rss_mb:.0f} MB ({parts}) > memory.budget_mb "
            f"{settings.budget_mb}{budget_margin}"
        )
    if level is MemoryLevel.OK and reasons:
        level = MemoryLevel.PRESSURE
    return Assessment(level, tuple(reasons))


def capacity_settings(settings: MemorySettings) -> MemorySettings:
    """The settings with the rate rules (swap-in, PSI) off: what an unload can cure at once.

    Swap-in rates and PSI averages lag by seconds, so right after an unload only available
    memory and RSS say whether it helped.
    """
    return settings.model_copy(update={"swap_in_mb_s": 0.0, "psi_some_avg10": 0.0})


@dataclass(frozen=True, slots=True)
class LevelState:
    """The guard's level and how many checks in a row have argued for a lower one."""

    level: MemoryLevel = MemoryLevel.OK
    calm_checks: int = 0


def next_level(
    state: LevelState, measured: MemoryLevel, relaxed: MemoryLevel, *, recover_checks: int
) -> LevelState:
    """Hysteresis. Pure.

    The level rises on the first sample that calls for it: a model load eats hundreds of MB in
    seconds, and waiting for a second sample could be too late. It falls only after
    `recover_checks` samples in a row whose `relaxed` level (thresholds widened by the recovery
    margin) is below it, so a box hovering at a mark does not flip /ask back and forth.
    """
    if measured.severity > state.level.severity:
        return LevelState(measured, 0)
    if relaxed.severity < state.level.severity:
        calm = state.calm_checks + 1
        return LevelState(relaxed, 0) if calm >= recover_checks else LevelState(state.level, calm)
    return LevelState(state.level, 0)


# --------------------------------------------------------------------------- the guard


class GuardActions(Protocol):
    """What the guard can do about pressure; each returns True when it unloaded something.

    Implementations unload only an *idle* model (none mid-answer) and return False otherwise.
    """

    async def unload_idle_generator(self) -> bool: ...

    async def unload_idle_embedder(self) -> bool: ...


Unloader = Callable[[], Awaitable[bool]]


@dataclass
class _GuardState:
    """Everything the guard remembers between checks, in one place."""

    levels: LevelState = field(default_factory=LevelState)
    assessment: Assessment | None = None
    sample: MemorySample | None = None
    sampled_at: float | None = None  # wall time of `sample`, for /status
    checks: int = 0
    probe_error: str | None = None
    # action -> the check number before which it is not tried again (it did nothing last time)
    quiet_until: dict[str, int] = field(default_factory=dict)
    rss_labels: frozenset[str] = frozenset()


class MemoryGuard:
    """Watches memory from the daemon's event loop and acts on it; see the module docstring.

    `recover_checks` and `recovery_margin_mb` set the hysteresis (see :func:`next_level`);
    `idle_retry_checks` is how many checks an action that freed nothing waits before it is
    tried again, so an idle-less generator is not asked to unload every 5 s.
    """

    def __init__(
        self,
        probe: MemoryProbe,
        settings: MemorySettings,
        *,
        actions: GuardActions | None = None,
        metrics: Metrics | None = None,
        log: Any = None,
        clock: Callable[[], float] = time.monotonic,
        recover_checks: int = 3,
        recovery_margin_mb: int = 100,
        idle_retry_checks: int = 3,
    ) -> None:
        self._probe = probe
        self._settings = settings
        self._actions = actions
        self._metrics = metrics
        self._log = log if log is not None else structlog.get_logger(component="memory")
        self._clock = clock
        self._recover_checks = max(1, recover_checks)
        self._recovery_margin_mb = recovery_margin_mb
        self._idle_retry_checks = max(1, idle_retry_checks)
        self._state = _GuardState()
        # One unload at a time: a check and a pre-load check must not both unload the embedder.
        self._acting = asyncio.Lock()

    @property
    def level(self) -> MemoryLevel:
        """The current level (OK before the first check)."""
        return self._state.levels.level

    @property
    def last_sample(self) -> MemorySample | None:
        """The latest successful sample, None before the first."""
        return self._state.sample

    @property
    def shed_retry_after_s(self) -> float:
        """A fair `Retry-After` for a shed /ask: the soonest the level can fall."""
        return self._settings.interval_s * self._recover_checks

    def ask_shed(self) -> bool:
        """True at CRITICAL: /ask must answer 503. Call once per /ask request: each True is
        counted as `memory_actions_total{action="shed_ask",result="shed"}`."""
        shed = self.level is MemoryLevel.CRITICAL
        if shed and self._metrics is not None:
            self._metrics.memory_actions_total.labels(action="shed_ask", result="shed").inc()
        return shed

    def memory_short(self) -> str | None:
        """Why /ask should answer without the generator, or None when memory is fine."""
        assessment = self._state.assessment
        if self.level is MemoryLevel.OK or assessment is None:
            return None
        return f"memory {self.level.value}: " + "; ".join(assessment.reasons)

    # ----------------------------------------------------------------------- the periodic check

    async def check(self) -> Assessment:
        """Sample, assess, publish, log and relieve pressure. Never raises (a failed probe or
        action is logged), so the scheduled job survives whatever happens."""
        state = self._state
        state.checks += 1
        if not self._settings.enabled:
            return Assessment(MemoryLevel.OK, ("memory.enabled is false",))
        started = self._clock()
        sample = await self._sample("check")
        if sample is None:
            return state.assessment or Assessment(self.level, ("no sample yet",))
        state.probe_error = None
        measured = assess(sample, self._settings)
        relaxed = measured
        if measured.level.severity < self.level.severity:
            relaxed = assess(sample, self._settings, margin_mb=self._recovery_margin_mb)
        before = state.levels
        state.levels = next_level(
            before, measured.level, relaxed.level, recover_checks=self._recover_checks
        )
        first = state.assessment is None
        state.assessment = self._held(measured)
        if self._metrics is not None:
            self._metrics.memory_level.set(self.level.severity)
        if first or state.levels.level is not before.level:
            self._log_level("unknown" if first else before.level.value, sample)
        self._log.debug(
            "memory.sample",
            memory_level=self.level.value,
            duration_ms=self._ms_since(started),
            **_sample_fields(sample),
        )
        if measured.level is not MemoryLevel.OK:
            await self._relieve()
        return state.assessment

    def _held(self, measured: Assessment) -> Assessment:
        """The assessment at the held level: the measured reasons, plus why the level stays up."""
        levels = self._state.levels
        if levels.level is measured.level:
            return measured
        note = (
            f"holding {levels.level.value} until {self._recover_checks} checks in a row clear "
            f"the marks by the recovery margin of {self._recovery_margin_mb} MB "
            f"({levels.calm_checks} so far)"
        )
        return Assessment(levels.level, (*measured.reasons, note))

    def _log_level(self, previous: str, sample: MemorySample) -> None:
        assessment = self._state.assessment
        rising = MEMORY_LEVEL_VALUE.get(previous, 0) < self.level.severity
        emit = self._log.warning if rising else self._log.info
        emit(
            "memory.level",
            **{"from": previous, "to": self.level.value},
            reasons=list(assessment.reasons) if assessment else [],
            available_mb=_mb(sample.available_bytes),
            swap_in_mb_s=_mb(sample.swap_in_bytes_per_s),
            psi_some_avg10=sample.psi_some_avg10,
            rss_mb={name: _mb(value) for name, value in sample.rss_bytes.items()},
        )

    async def _relieve(self) -> None:
        """Unload the idle generator; if that freed nothing or not enough, the idle embedder."""
        actions = self._actions
        if actions is None:
            return
        async with self._acting:
            freed = await self._act("unload_generator", actions.unload_idle_generator)
            if freed:
                sample = await self._sample("after_unload")
                if sample is None:
                    return  # cannot tell whether it helped: the next check decides
                capacity = assess(sample, capacity_settings(self._settings))
                if capacity.level is MemoryLevel.OK:
                    return
            await self._act("unload_embedder", actions.unload_idle_embedder)

    async def _act(self, action: str, call: Unloader) -> bool:
        """Run one action unless it freed nothing lately; log and count it."""
        state = self._state
        quiet_until = state.quiet_until.get(action, 0)
        if state.checks < quiet_until:
            self._log.debug(
                "memory.action",
                action=action,
                result="skipped",
                retry_in_checks=quiet_until - state.checks,
            )
            return False
        done = await self._call(action, call)
        if done:
            state.quiet_until.pop(action, None)
        else:
            state.quiet_until[action] = state.checks + self._idle_retry_checks
        return done

    async def _call(self, action: str, call: Unloader) -> bool:
        """Run one unload; log `memory.action` and count it. Never raises."""
        started = self._clock()
        error: str | None = None
        try:
            done = bool(await call())
        except Exception as exc:  # noqa: BLE001 - an action's failure must not stop the guard
            done, error = False, f"{type(exc).__name__}: {exc}"
        result = "error" if error else ("unloaded" if done else "noop")
        duration_ms = self._ms_since(started)
        if error:
            self._log.error(
                "memory.action", action=action, result=result, duration_ms=duration_ms, error=error
            )
        else:
            self._log.info("memory.action", action=action, result=result, duration_ms=duration_ms)
        if self._metrics is not None:
            self._metrics.memory_actions_total.labels(action=action, result=result).inc()
        return done

    # ----------------------------------------------------------------------- before a model loads

    async def make_room(
        self,
        need_bytes: int,
        *,
        unloaders: Sequence[Unloader] = (),
        action: str = "unload_embedder_for_load",
    ) -> bool:
        """Whether a model of `need_bytes` fits now, unloading with `unloaders` (in order,
        re-sampling after each that freed something) until it does.

        Fits when available - `model_headroom_mb` >= `need_bytes`. When the probe fails the load
        is allowed (True, logged): the guard must not be what stops the daemon from answering.
        Never raises.
        """
        if not self._settings.enabled:
            return True
        started = self._clock()
        headroom = self._settings.model_headroom_mb * MB
        unloaded: list[str] = []
        async with self._acting:
            sample = await self._sample("preload")
            pending = list(unloaders)
            while sample is not None and sample.available_bytes - headroom < need_bytes and pending:
                unload = pending.pop(0)
                if await self._call(action, unload):
                    unloaded.append(getattr(unload, "__name__", repr(unload)))
                    sample = await self._sample("preload")
        fits = sample is None or sample.available_bytes - headroom >= need_bytes
        emit = self._log.info if fits else self._log.warning
        emit(
            "memory.preload_check",
            need_mb=_mb(need_bytes),
            available_mb=None if sample is None else _mb(sample.available_bytes),
            headroom_mb=self._settings.model_headroom_mb,
            fits=fits,
            unloaded=unloaded,
            measured=sample is not None,
            duration_ms=self._ms_since(started),
        )
        return fits

    # ----------------------------------------------------------------------- sampling and output

    async def _sample(self, purpose: str) -> MemorySample | None:
        """A sample from the probe in a worker thread, published; None (logged) if it failed."""
        try:
            sample = await asyncio.to_thread(self._probe.sample)
        except Exception as exc:  # noqa: BLE001 - a failed probe must not stop the guard
            self._state.probe_error = f"{type(exc).__name__}: {exc}"
            self._log.error("memory.probe_failed", purpose=purpose, error=self._state.probe_error)
            return None
        self._state.sample = sample
        self._state.sampled_at = time.time()
        self._publish(sample)
        return sample

    def _publish(self, sample: MemorySample) -> None:
        """Set the memory gauges; a reading the host lacks (PSI, a first rate) is NaN."""
        m = self._metrics
        if m is None:
            return
        nan = math.nan
        m.memory_available_bytes.set(sample.available_bytes)
        m.memory_total_bytes.set(sample.total_bytes)
        m.swap_used_bytes.set(sample.swap_used_bytes)
        in_rate, out_rate = sample.swap_in_bytes_per_s, sample.swap_out_bytes_per_s
        m.swap_in_bytes_per_second.set(nan if in_rate is None else in_rate)
        m.swap_out_bytes_per_second.set(nan if out_rate is None else out_rate)
        psi = sample.psi_some_avg10
        m.memory_psi_some_avg10.set(nan if psi is None else psi)
        for gone in self._state.rss_labels - sample.rss_bytes.keys():
            m.process_rss_bytes.remove(gone)
        for name, rss in sample.rss_bytes.items():
            m.process_rss_bytes.labels(process=name).set(rss)
        self._state.rss_labels = frozenset(sample.rss_bytes)

    def snapshot(self) -> dict[str, Any]:
        """The guard's view for `GET /status`; `{"level": "unknown"}` before the first check."""
        state = self._state
        if not self._settings.enabled:
            return {"level": "disabled"}
        sample, assessment = state.sample, state.assessment
        if sample is None or assessment is None or state.sampled_at is None:
            out: dict[str, Any] = {"level": "unknown"}
            if state.probe_error:
                out["probe_error"] = state.probe_error
            return out
        return {
            "level": self.level.value,
            "reasons": list(assessment.reasons),
            "available_mb": _mb(sample.available_bytes),
            "total_mb": _mb(sample.total_bytes),
            "swap_total_mb": _mb(sample.swap_total_bytes),
            "swap_used_mb": _mb(sample.swap_used_bytes),
            "swap_in_mb_s": _mb(sample.swap_in_bytes_per_s),
            "swap_out_mb_s": _mb(sample.swap_out_bytes_per_s),
            "psi_some_avg10": sample.psi_some_avg10,
            "psi_full_avg10": sample.psi_full_avg10,
            "rss_mb": {name: _mb(value) for name, value in sample.rss_bytes.items()},
            "sampled_at": datetime.fromtimestamp(state.sampled_at, UTC).isoformat(),
            "interval_s": self._settings.interval_s,
            "probe_error": state.probe_error,
        }

    def _ms_since(self, started: float) -> float:
        return round((self._clock() - started) * 1000, 1)


def _sample_fields(sample: MemorySample) -> dict[str, Any]:
    return {
        "available_mb": _mb(sample.available_bytes),
        "total_mb": _mb(sample.total_bytes),
        "swap_used_mb": _mb(sample.swap_used_bytes),
        "swap_in_mb_s": _mb(sample.swap_in_bytes_per_s),
        "swap_out_mb_s": _mb(sample.swap_out_bytes_per_s),
        "psi_some_avg10": sample.psi_some_avg10,
        "psi_full_avg10": sample.psi_full_avg10,
        "rss_mb": {name: _mb(value) for name, value in sample.rss_bytes.items()},
    }


def schedule_memory_guard(
    scheduler: AsyncIOScheduler, guard: MemoryGuard, interval_s: float
) -> None:
    """Run `guard.check` every `interval_s` on the scheduler's event loop, first right away.

    One instance at a time; missed runs coalesce into one, and a run late by up to a whole
    interval (a busy loop) still happens rather than being dropped.
    """
    scheduler.add_job(
        guard.check,
        "interval",
        seconds=interval_s,
        id="memory_guard",
        name="memory guard",
        max_instances=1,
        coalesce=True,
        misfire_grace_time=max(1, math.ceil(interval_s)),
        next_run_time=datetime.now(UTC),
        replace_existing=True,
    )
