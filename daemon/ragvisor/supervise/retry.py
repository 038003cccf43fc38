"""Which backend failures are worth another attempt, and how long to wait before it.

One policy for every backend call: a timeout, a refused or reset connection, a 5xx, a 503
"server busy" or an `{"error"}` line mid-stream may be gone on the next attempt; a 4xx caused
by our own request or an out-of-memory refusal will not be, and retrying would only add load.
Backoff grows as every wait in supervision does (:func:`ragvisor.supervise.backoff.backoff_s`),
drawn with full jitter so that clients that failed together do not retry together.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from ragvisor.config import RetrySettings
from ragvisor.errors import (
    BackendError,
    BackendOutOfMemory,
    BackendRejected,
    BackendTimeout,
    BackendUnavailable,
)
from ragvisor.supervise.backoff import backoff_s


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Attempts in all (the first included) and the backoff between them."""

    attempts: int = 3
    backoff_base_s: float = 0.25
    backoff_max_s: float = 4.0

    @classmethod
    def from_settings(cls, settings: RetrySettings) -> RetryPolicy:
        """The policy `[<backend>.retry]` describes."""
        return cls(settings.attempts, settings.backoff_base_s, settings.backoff_max_s)

    def delay_s(self, retry: int, rng: random.Random) -> float:
        """Seconds to wait before retry number `retry` (1 for the first retry): full jitter."""
        return rng.uniform(0.0, backoff_s(self.backoff_base_s, self.backoff_max_s, retry))


def outcome(exc: BaseException) -> str:
    """The failure's kind as logged and counted: timeout, unavailable, rejected, oom or error."""
    if isinstance(exc, BackendTimeout | TimeoutError):
        return "timeout"
    if isinstance(exc, BackendUnavailable):
        return "unavailable"
    if isinstance(exc, BackendRejected):
        return "rejected"
    if isinstance(exc, BackendOutOfMemory):
        return "oom"
    return "error"


def is_retryable(exc: BaseException) -> bool:
    """Could the same request succeed on another attempt?"""
    if isinstance(exc, BackendUnavailable | TimeoutError):
        return True
    if isinstance(exc, BackendError):
        return exc.retryable
    return False


def is_hang(exc: BaseException) -> bool:
    """A call that went silent (as opposed to one that answered with an error): the ladder's cue.

    A call cut short by its request's own deadline is not one: the backend may simply be slower
    than the request allows (a cold model load), and unloading it would make that worse.
    """
    if isinstance(exc, BackendTimeout):
        return exc.phase != "request"
    return isinstance(exc, TimeoutError)


def timeout_phase(exc: BaseException) -> str:
    """The deadline a timeout missed, for the per-phase metric."""
    return exc.phase if isinstance(exc, BackendTimeout) else "request"
