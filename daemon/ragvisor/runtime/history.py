"""The last hour of the daemon in numbers, for the status page's plots (`GET /status/history`).

Why in-process and fixed-size: on-call wants the trend — is memory sinking, did latency climb
before the page fired — without running Prometheus on a 4 GB box. The history is a ring of
preallocated arrays, one slot per memory-guard check (`memory.interval_s`, on the schedule that
already exists: no timer of its own), so its memory is fixed at start and small
(`History.nbytes`, printed by bench/pages_bench.py). Request latencies are gathered between two
samples and folded into that interval's median, maximum and count.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ragvisor.supervise.memory import MB, MemorySample

LATENCY_SERIES = ("search", "ask", "first_token")
# Durations kept per series and interval for the median; past it only the count and the
# maximum grow, so a burst cannot grow memory (the median of the first 512 stands).
MAX_DURATIONS_PER_INTERVAL = 512
# Processes with an RSS line (daemon, worker, ollama, neo4j, …); a name past these is dropped.
MAX_PROCESSES = 8


def capacity_for(history_s: float, interval_s: float) -> int:
    """Slots for `history_s` of samples taken every `interval_s` (720 for an hour at 5 s)."""
    return max(2, math.ceil(history_s / max(interval_s, 0.001)))


class _Latency:
    """One latency series: the current interval's durations, and the ring of its summaries."""

    def __init__(self, capacity: int) -> None:
        self.p50 = np.full(capacity, np.nan)
        self.max = np.full(capacity, np.nan)
        self.count = np.zeros(capacity, dtype=np.int32)
        self.pending: list[float] = []
        self.pending_count = 0
        self.pending_max = math.nan

    def add(self, seconds: float) -> None:
        self.pending_count += 1
        if not seconds <= self.pending_max:  # NaN-safe: the first one sets it
            self.pending_max = seconds
        if len(self.pending) < MAX_DURATIONS_PER_INTERVAL:
            self.pending.append(seconds)

    def close(self, slot: int) -> None:
        """Fold the interval into `slot` and start the next one."""
        if self.pending:
            self.p50[slot] = float(np.median(self.pending)) * 1000
            self.max[slot] = self.pending_max * 1000
        else:
            self.p50[slot] = self.max[slot] = np.nan
        self.count[slot] = self.pending_count
        self.pending = []
        self.pending_count = 0
        self.pending_max = math.nan

    def nbytes(self) -> int:
        return self.p50.nbytes + self.max.nbytes + self.count.nbytes


class History:
    """The ring buffer described in the module docstring. `record` is called from request
    threads and the event loop, `sample` from the memory guard's job; one lock covers both."""

    def __init__(
        self, capacity: int, interval_s: float, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.capacity = capacity
        self.interval_s = interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._t = np.full(capacity, np.nan)
        self._available_mb = np.full(capacity, np.nan)
        self._rss_mb: dict[str, np.ndarray] = {}
        self._latency = {name: _Latency(capacity) for name in LATENCY_SERIES}
        self._next = 0  # the slot the next sample writes
        self._size = 0

    @classmethod
    def for_window(cls, history_s: float, interval_s: float) -> History:
        return cls(capacity_for(history_s, interval_s), interval_s)

    def record(self, series: str, seconds: float) -> None:
        """One finished request (or first token) of `series`, in seconds."""
        with self._lock:
            self._latency[series].add(seconds)

    def sample(self, memory: MemorySample | None) -> None:
        """Close the interval: the time, memory as the guard just read it (None when it has no
        reading), and the latencies gathered since the last sample."""
        with self._lock:
            slot = self._next
            self._t[slot] = self._clock()
            self._available_mb[slot] = memory.available_bytes / MB if memory is not None else np.nan
            rss = dict(memory.rss_bytes) if memory is not None else {}
            for name, ring in self._rss_mb.items():
                ring[slot] = rss.pop(name) / MB if name in rss else np.nan
            for name, value in rss.items():  # a process seen for the first time
                if len(self._rss_mb) < MAX_PROCESSES:
                    ring = np.full(self.capacity, np.nan)
                    ring[slot] = value / MB
                    self._rss_mb[name] = ring
            for latency in self._latency.values():
                latency.close(slot)
            self._next = (slot + 1) % self.capacity
            self._size = min(self._size + 1, self.capacity)

    def as_dict(self) -> dict[str, Any]:
        """The samples so far, oldest first; NaN (no value) as null."""
        with self._lock:
            order = self._order()

            def values(ring: np.ndarray, digits: int = 1) -> list[float | None]:
                picked = ring[order]
                return [None if math.isnan(v) else round(v, digits) for v in picked.tolist()]

            return {
                "interval_s": self.interval_s,
                "window_s": round(self.capacity * self.interval_s, 3),
                "capacity": self.capacity,
                "t": values(self._t, 3),
                "available_mb": values(self._available_mb),
                "rss_mb": {name: values(ring) for name, ring in self._rss_mb.items()},
                **{
                    f"{name}_ms": {
                        "p50": values(latency.p50, 2),
                        "max": values(latency.max, 2),
                        "count": latency.count[order].tolist(),
                    }
                    for name, latency in self._latency.items()
                },
            }

    def nbytes(self) -> int:
        """Bytes held by the rings (the interval's pending durations come and go on top)."""
        with self._lock:
            rings = self._t.nbytes + self._available_mb.nbytes
            rings += sum(ring.nbytes for ring in self._rss_mb.values())
            return rings + sum(latency.nbytes() for latency in self._latency.values())

    def _order(self) -> np.ndarray:
        """Slot indexes from the oldest sample to the newest."""
        if self._size < self.capacity:
            return np.arange(self._size)
        return (np.arange(self.capacity) + self._next) % self.capacity


def observe_request(history: History) -> Callable[[str, int, float, Mapping[str, Any]], None]:
    """What the request log calls when a response ends: answered `/search` and `/ask` requests
    (status below 400: a refusal or a shed request says nothing about how fast answers are)
    and each answer's time to first token, as the route noted it."""

    def observe(path: str, status: int, seconds: float, fields: Mapping[str, Any]) -> None:
        if status >= 400:
            return
        if path == "/search":
            history.record("search", seconds)
        elif path == "/ask":
            history.record("ask", seconds)
            first_token_ms = fields.get("first_token_ms")
            if isinstance(first_token_ms, int | float):
                history.record("first_token", first_token_ms / 1000)

    return observe
