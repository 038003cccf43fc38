"""A fake of the memory guard's `MemoryProbe`: readings a test scripts, in the rehearsal file's
vocabulary (`available_mb`, `swap_in_mb_s`, `rss_mb`, …)."""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

from ragvisor.supervise.memory.rehearsal import apply_overrides, synthetic_sample
from ragvisor.supervise.memory.sample import MemorySample


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
