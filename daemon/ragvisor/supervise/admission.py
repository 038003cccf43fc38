"""Bounded admission per lane: a full lane answers 503 with an honest `Retry-After`.

Ollama's own queue does not bound requests for a model that is already loaded (ollama #7758),
so without a bound of our own every caller of a slow box waits behind every other. A lane runs
``max_concurrent`` requests and lets ``max_queue`` wait; the next one is refused at once with
:class:`~ragvisor.errors.Overloaded`, whose ``retry_after_s`` is the measured mean service time
(an exponentially weighted moving average) times the number of turns ahead of a newcomer.
Lanes are separate — search, ask, sync — so a queue of slow answers never delays a search.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from ragvisor.config import LaneSettings
from ragvisor.core.protocols import Clock
from ragvisor.errors import Overloaded
from ragvisor.metrics import Metrics

# Weight of the newest observation in the service-time average: about the last ten requests.
EWMA_ALPHA = 0.2


class Lane:
    """One admission lane, used from the event loop of the web server."""

    def __init__(
        self,
        name: str,
        settings: LaneSettings,
        *,
        initial_service_s: float = 1.0,
        metrics: Metrics | None = None,
        clock: Clock = time.perf_counter,
    ) -> None:
        self.name = name
        self._clock = clock
        self.max_concurrent = settings.max_concurrent
        self.max_queue = settings.max_queue
        self._semaphore = asyncio.Semaphore(settings.max_concurrent)
        self._service_s = initial_service_s
        self._measured = False
        self.active = 0
        self.waiting = 0
        self.admitted = 0
        self.rejected = 0
        self._metrics = metrics
        self._gauges()

    @property
    def service_time_s(self) -> float:
        """Mean time a request holds a slot (moving average; the initial guess until measured)."""
        return self._service_s

    def retry_after_s(self) -> float:
        """Seconds until a newcomer would likely get a slot: the turns ahead times service time."""
        turns = (self.waiting + self.active + 1) / self.max_concurrent
        return max(1.0, math.ceil(turns * self._service_s))

    async def acquire(self) -> Ticket:
        """Wait for a slot; release it with :meth:`Ticket.release` (exactly once is enforced).

        Raises Overloaded when the lane is running its maximum and its queue is full. A caller
        cancelled while queued (client gone, request deadline) leaves the queue cleanly.
        """
        if self._semaphore.locked() and self.waiting >= self.max_queue:
            self.rejected += 1
            if self._metrics is not None:
                self._metrics.lane_rejected_total.labels(self.name).inc()
            raise Overloaded(
                f"the {self.name} lane is full ({self.active} running, {self.waiting} waiting); "
                f"try again in {self.retry_after_s():.0f} s",
                retry_after_s=self.retry_after_s(),
            )
        queued = self._clock()
        self.waiting += 1
        self._gauges()
        try:
            await self._semaphore.acquire()
        finally:
            self.waiting -= 1
            self._gauges()
        wait_s = self._clock() - queued
        self.active += 1
        self.admitted += 1
        self._gauges()
        if self._metrics is not None:
            self._metrics.lane_wait_seconds.labels(self.name).observe(wait_s)
        return Ticket(self, wait_s)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[float]:
        """Hold a slot for the body; yields the seconds spent queued."""
        ticket = await self.acquire()
        try:
            yield ticket.waited_s
        finally:
            ticket.release()

    def _release(self, held_s: float) -> None:
        self._observe(held_s)
        self.active -= 1
        self._semaphore.release()
        self._gauges()

    def _observe(self, seconds: float) -> None:
        if not self._measured:
            self._service_s, self._measured = seconds, True
        else:
            self._service_s += EWMA_ALPHA * (seconds - self._service_s)

    def _gauges(self) -> None:
        if self._metrics is not None:
            self._metrics.lane_waiting.labels(self.name).set(self.waiting)
            self._metrics.lane_active.labels(self.name).set(self.active)

    def snapshot(self) -> dict[str, Any]:
        """State for `/status`."""
        return {
            "active": self.active,
            "waiting": self.waiting,
            "max_concurrent": self.max_concurrent,
            "max_queue": self.max_queue,
            "service_time_s": round(self._service_s, 4),
            "admitted": self.admitted,
            "rejected": self.rejected,
        }


class Ticket:
    """A held slot of a lane; `release()` gives it back (a second call does nothing)."""

    def __init__(self, lane: Lane, waited_s: float) -> None:
        self._lane: Lane | None = lane
        self.waited_s = waited_s
        self._started = lane._clock()

    def release(self) -> None:
        """Free the slot and feed the lane's service-time average."""
        lane, self._lane = self._lane, None
        if lane is not None:
            lane._release(lane._clock() - self._started)
