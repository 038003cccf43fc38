"""When a model the worker loaded expires: its keep-alive after its last use (the parsing of
keep-alive values is tested with core.durations in test_durations.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ragvisor.llm.worker.keepalive import FOREVER, expiry


def test_expiry_adds_keep_alive_to_now():
    """A finite keep-alive expires that many seconds after the last use."""
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert expiry(now, 90.0) == now + timedelta(seconds=90)
    assert expiry(now, 0.0) == now


def test_forever_expires_far_in_the_future():
    """A pinned model reports an expiry decades ahead, still a valid datetime."""
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert expiry(now, FOREVER).year >= 2100
