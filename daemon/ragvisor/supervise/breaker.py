"""A circuit breaker per backend: stop calling a backend that keeps failing, test it now and then.

closed → (``failure_threshold`` failures in a row) → open → (``open_s`` later) → half-open: one
trial call is let through; its success closes the breaker, its failure opens it again for twice
as long (up to ``open_max_s``). While open, callers fail at once with BackendUnavailable carrying
``retry_after_s``, and serve a degraded answer instead of waiting on a dead backend. Failures
count per call (after its retries), and in half-open only the trial's verdict counts. When the
escalation ladder finds a backend wedged (its unload did not take) it holds the breaker open
through the restart (which can outlast ``open_s``: a trial call would land mid-restart), then
moves it to half-open once its health probe passes, or lets the usual pause run when it does not.

Thread-safe: the async generator path and the embedder's worker threads share one breaker.
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable
from typing import Any

from ragvisor.config import BreakerSettings
from ragvisor.errors import BackendUnavailable
from ragvisor.metrics import BREAKER_STATE_VALUE, Metrics


class BreakerState(enum.Enum):
    """Where the breaker stands."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Counts consecutive failures of one backend and refuses calls while it is open."""

    def __init__(
        self,
        backend: str,
        settings: BreakerSettings,
        *,
        metrics: Metrics | None = None,
        log: Any = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.backend = backend
        self._settings = settings
        self._metrics = metrics
        self._log = log
        self._clock = clock
        self._lock = threading.Lock()
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._open_for = settings.open_s
        self._trial_running = False
        self._held = False
        self._opened = 0
        self._set_gauge()

    @property
    def state(self) -> BreakerState:
        """The current state (an open breaker past its pause reads as half-open)."""
        with self._lock:
            self._maybe_half_open()
            return self._state

    def allow(self) -> bool:
        """Let a call through or raise BackendUnavailable with the seconds until the next trial.

        Returns True when the call is the half-open trial: the caller passes that back with its
        outcome, so only the trial's verdict moves a half-open breaker — not a call that began
        before the breaker opened and fails late.
        """
        with self._lock:
            self._maybe_half_open()
            if self._state is BreakerState.CLOSED:
                return False
            if self._state is BreakerState.HALF_OPEN and not self._trial_running:
                self._trial_running = True
                return True
            wait = max(0.0, self._opened_at + self._open_for - self._clock())
        raise BackendUnavailable(
            f"{self.backend} circuit is open after repeated failures; next trial in {wait:.0f} s",
            retry_after_s=max(1.0, wait),
        )

    def record_success(self) -> None:
        """A call succeeded: the backend works, close the breaker.

        Not while the ladder holds it open: a call that started before the climb proves nothing
        about the backend the ladder is unloading or restarting.
        """
        with self._lock:
            self._failures = 0
            self._trial_running = False
            if self._state is not BreakerState.CLOSED and not self._held:
                self._open_for = self._settings.open_s
                self._transition(BreakerState.CLOSED)

    def record_failure(self, reason: str, *, trial: bool = True) -> None:
        """A call failed for good (after its retries): maybe open the breaker.

        `trial` is what :meth:`allow` returned for this call; in half-open only the trial's
        failure reopens the breaker, and while open a late failure changes nothing.
        """
        with self._lock:
            if self._state is BreakerState.OPEN:
                return
            if self._state is BreakerState.HALF_OPEN and not trial:
                return
            self._failures += 1
            if self._state is BreakerState.HALF_OPEN:
                self._trial_running = False
                self._open_for = min(self._open_for * 2, self._settings.open_max_s)
                self._open(reason)
            elif (
                self._state is BreakerState.CLOSED
                and self._failures >= self._settings.failure_threshold
            ):
                self._open(reason)

    def record_neutral(self, *, trial: bool = True) -> None:
        """A call ended without telling anything about the backend (the client left)."""
        with self._lock:
            if trial:
                self._trial_running = False

    def force_open(self, reason: str) -> None:
        """Open now and stay open, past ``open_s``, until :meth:`half_open_now` or
        :meth:`release_hold` (the ladder is restarting the backend): callers degrade at once.
        """
        with self._lock:
            self._held = True
            if self._state is not BreakerState.OPEN:
                self._open(reason)

    def half_open_now(self) -> None:
        """The backend passed a health probe: let the next call be the trial."""
        with self._lock:
            self._held = False
            if self._state is BreakerState.OPEN:
                self._trial_running = False
                self._transition(BreakerState.HALF_OPEN)

    def release_hold(self) -> None:
        """End a :meth:`force_open` without a passed probe: the usual pause runs from now."""
        with self._lock:
            if self._held:
                self._held = False
                self._opened_at = self._clock()

    def snapshot(self) -> dict[str, Any]:
        """State for `/status`."""
        with self._lock:
            self._maybe_half_open()
            retry_in = None
            if self._state is BreakerState.OPEN:
                retry_in = round(max(0.0, self._opened_at + self._open_for - self._clock()), 1)
            return {
                "state": self._state.value,
                "consecutive_failures": self._failures,
                "opened": self._opened,
                "retry_in_s": retry_in,
            }

    # -- internals (called with the lock held) --

    def _maybe_half_open(self) -> None:
        if self._held or self._state is not BreakerState.OPEN:
            return
        if self._clock() >= self._opened_at + self._open_for:
            self._trial_running = False
            self._transition(BreakerState.HALF_OPEN)

    def _open(self, reason: str) -> None:
        self._opened_at = self._clock()
        self._opened += 1
        self._transition(BreakerState.OPEN, reason=reason, open_s=self._open_for)

    def _transition(self, state: BreakerState, **fields: Any) -> None:
        previous, self._state = self._state, state
        if self._log is not None:
            self._log.warning(
                f"breaker.{state.value}",
                backend=self.backend,
                previous=previous.value,
                consecutive_failures=self._failures,
                **fields,
            )
        if self._metrics is not None:
            self._metrics.breaker_transitions_total.labels(self.backend, state.value).inc()
        self._set_gauge()

    def _set_gauge(self) -> None:
        if self._metrics is not None:
            self._metrics.breaker_state.labels(self.backend).set(
                BREAKER_STATE_VALUE[self._state.value]
            )
