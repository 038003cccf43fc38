"""Ollama keep_alive parsing: every spelling Ollama accepts, and the ones it refuses."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from ragvisor.errors import InputError
from ragvisor.llm.worker.keepalive import (
    FOREVER,
    expiry,
    parse_go_duration,
    parse_keep_alive,
)

DEFAULT_S = 300.0


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("30s", 30.0),
        ("1.5h", 5400.0),
        ("250ms", 0.25),
        ("2h45m10s", 9910.0),
        ("1m0.5s", 60.5),
        ("0", 0.0),
        ("-0", 0.0),
        ("+10s", 10.0),
        ("-1m", -60.0),
        ("100us", 1e-4),
        ("100\u00b5s", 1e-4),
        ("5000ns", 5e-6),
    ],
)
def test_go_durations_parse_like_time_parse_duration(text, seconds):
    """Go duration strings give their length in seconds, signs and fractions included."""
    assert parse_go_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5", "m", "5x", "1h 30m", "abc", "--5s", "5m-", "h5"])
def test_invalid_go_durations_are_refused(text):
    """Text Go's time.ParseDuration rejects raises InputError."""
    with pytest.raises(InputError):
        parse_go_duration(text)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("30s", 30.0),
        (30, 30.0),
        (2.5, 2.5),
        ("3600", 3600.0),
        ("0", 0.0),
        (0, 0.0),
        (0.0, 0.0),
    ],
)
def test_keep_alive_values_in_seconds(value, seconds):
    """Durations, numbers and numeric strings are seconds."""
    assert parse_keep_alive(value, DEFAULT_S) == pytest.approx(seconds)


@pytest.mark.parametrize("value", [-1, -1.0, "-1", "-5m", "-0.5"])
def test_negative_keep_alive_is_forever(value):
    """Any negative value keeps the model loaded forever."""
    assert parse_keep_alive(value, DEFAULT_S) == FOREVER


def test_missing_keep_alive_uses_default():
    """A request without keep_alive gets the server's default."""
    assert parse_keep_alive(None, DEFAULT_S) == DEFAULT_S


@pytest.mark.parametrize("value", [True, False, "soon", "", [5], {"s": 5}, math.nan, "nan"])
def test_invalid_keep_alive_is_refused(value):
    """Booleans, containers, NaN and unparseable text raise InputError."""
    with pytest.raises(InputError):
        parse_keep_alive(value, DEFAULT_S)  # type: ignore[arg-type]


def test_expiry_adds_keep_alive_to_now():
    """A finite keep-alive expires that many seconds after the last use."""
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert expiry(now, 90.0) == now + timedelta(seconds=90)
    assert expiry(now, 0.0) == now


def test_forever_expires_far_in_the_future():
    """A pinned model reports an expiry decades ahead, still a valid datetime."""
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert expiry(now, FOREVER).year >= 2100
