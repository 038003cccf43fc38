"""A fake of the `Clock` protocol: time that moves only when the test moves it."""

from __future__ import annotations


class FakeClock:
    """A monotonic clock (``core.protocols.Clock``) that moves only when the test moves it, so
    a test of timeouts, pauses or averages runs in microseconds and never sleeps."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Let `seconds` pass."""
        self.now += seconds
