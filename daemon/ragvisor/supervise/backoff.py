"""How long to wait before trying again: one growth rule for retries and for restarts.

Every wait in supervision doubles from a base up to a cap — a retry of a failed call (drawn
with full jitter, AWS Architecture Blog "Exponential Backoff and Jitter", so that clients that
failed together do not retry together), the ladder's restart of a wedged backend and the
respawn of an embedded worker that died. A restart policy adds two rules to the growth: a quiet
period after which the backoff starts again from its base, and an optional budget of restarts
per hour. The ladder and the worker's watcher each keep a :class:`RestartHistory` under their
own :class:`RestartPolicy` (`[<backend>.ladder]` and `[worker]` configure them).
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from dataclasses import dataclass

HOUR_S = 3600.0


def backoff_s(base_s: float, max_s: float, step: int) -> float:
    """The wait before step `step` (1 for the first): `base_s` doubled per step, up to `max_s`."""
    if step < 1:
        return 0.0
    growth: float = base_s * 2.0 ** min(step - 1, 62)
    return min(max_s, growth)


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """When a supervised process may be restarted again."""

    base_s: float
    max_s: float
    quiet_s: float  # this long without a restart and the backoff starts from its base again
    budget_per_hour: int | None = None  # None: no budget

    def delay_s(self, streak: int) -> float:
        """The wait after the `streak`-th restart of a run before the next (0 before the first)."""
        return backoff_s(self.base_s, self.max_s, streak)


class RestartHistory:
    """The restarts of one process under one policy: the run they form, and the last hour's.

    `clock` is monotonic seconds (injected so tests need not sleep).
    """

    def __init__(self, policy: RestartPolicy, clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy
        self._clock = clock
        self._times: collections.deque[float] = collections.deque()
        self._streak = 0
        self._last: float | None = None

    def streak(self) -> int:
        """Restarts in the current run (0 once `quiet_s` has passed since the last one)."""
        if self._last is not None and self._clock() - self._last >= self.policy.quiet_s:
            self._streak = 0
        return self._streak

    def last_hour(self) -> int:
        """Restarts within the last hour (what the budget counts)."""
        horizon = self._clock() - HOUR_S
        while self._times and self._times[0] < horizon:
            self._times.popleft()
        return len(self._times)

    def over_budget(self) -> bool:
        """Whether the hour's budget is spent."""
        budget = self.policy.budget_per_hour
        return budget is not None and self.last_hour() >= budget

    def wait_s(self) -> float:
        """Seconds until the backoff allows another restart (0: now)."""
        streak = self.streak()
        if streak == 0 or self._last is None:
            return 0.0
        return max(0.0, self._last + self.policy.delay_s(streak) - self._clock())

    def next_delay_s(self) -> float:
        """The wait before the restart that would come next, counted from now."""
        return self.policy.delay_s(self.streak() + 1)

    def note(self) -> None:
        """A restart happened now."""
        now = self._clock()
        self.streak()
        self._streak += 1
        self._last = now
        self._times.append(now)
