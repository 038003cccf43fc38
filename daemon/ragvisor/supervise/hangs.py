"""When hangs mean a wedged backend: a hang rate over the recent calls, not a run of hangs.

A wedged backend hangs on every call; a flaky one hangs on some. Only the first is cured by
unloading the model or restarting the server, and a run of hangs does not tell them apart: when
40 % of calls hang at random, three in a row come every 24 calls or so, and a ladder started by
three in a row unloaded the model eight times per 200 calls (the seeded simulation in
tests/unit/test_hangs.py). Here the ladder starts when, among the last `window` calls, at
least `threshold` hung *and* they make at least `rate` of those calls. With the defaults (3, 10,
0.9) that is 0.19 climbs per 200 such calls on average. A backend frozen from the start still
climbs after `threshold` hangs (its window holds only those); one that freezes after a healthy
stretch, or keeps hanging after a climb, after `ceil(rate * window)` hangs (9).

Pure: the window takes outcomes and returns decisions; the ladder holds it, under its lock.
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass

from ragvisor.config import LadderSettings


@dataclass(frozen=True, slots=True)
class HangRule:
    """How many hangs, of how many recent calls, start the ladder."""

    threshold: int = 3  # the fewest hangs in the window that may start it
    window: int = 10  # the recent calls considered
    rate: float = 0.9  # the share of those calls that must have hung

    @classmethod
    def from_settings(cls, settings: LadderSettings) -> HangRule:
        """The rule `[<backend>.ladder]` describes."""
        return cls(settings.hang_threshold, settings.hang_window, settings.hang_rate)

    def hangs_needed(self, calls: int) -> int:
        """Hangs among `calls` recent calls (at most `window`) that start the ladder."""
        calls = min(calls, self.window)
        # A small tolerance, so that 0.9 of 10 calls is 9 hangs, not 10 for a rounding error.
        return max(self.threshold, math.ceil(self.rate * calls - 1e-9))


class HangWindow:
    """The outcomes of one backend's last calls, and whether they call for the ladder."""

    def __init__(self, rule: HangRule) -> None:
        self.rule = rule
        self._hung: collections.deque[bool] = collections.deque(maxlen=rule.window)

    @property
    def calls(self) -> int:
        """Calls in the window now."""
        return len(self._hung)

    @property
    def hangs(self) -> int:
        """Hangs among them."""
        return sum(self._hung)

    def note(self, *, hung: bool) -> bool:
        """One call's outcome (hung, or answered in any way); returns whether the ladder should
        start now. Only a hang can start it."""
        self._hung.append(hung)
        return hung and self.hangs >= self.rule.hangs_needed(self.calls)

    def after_climb(self) -> None:
        """Forget the hangs a climb is dealing with: the window then counts as full of answered
        calls, so another climb needs a full window's evidence (9 of the last 10), not three
        hangs. Clearing it instead let a backend that hangs often, without being wedged, climb
        again a few seconds after each climb (measured: 12 s apart, `3 of the last 3 calls
        hung`, in `make bench-faults` on a busy box)."""
        self._hung.clear()
        self._hung.extend([False] * self.rule.window)

    def describe(self) -> str:
        """The window as a reason: "9 of the last 10 calls hung"."""
        return f"{self.hangs} of the last {self.calls} calls hung"
