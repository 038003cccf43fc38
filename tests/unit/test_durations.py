"""One duration parser: Go durations as `time.ParseDuration` reads them, keep-alive values in
seconds (0 unloads, negative is forever), and the daemon's settings, doctor's reading of
OLLAMA_KEEP_ALIVE and the worker's requests agreeing on every spelling."""

from __future__ import annotations

import math

import pytest

from ragvisor.config import parse_settings
from ragvisor.core.durations import (
    FOREVER,
    parse_go_duration,
    parse_keep_alive,
    parse_keep_alive_setting,
)
from ragvisor.errors import ConfigError, InputError
from ragvisor.oncall.host_facts import keep_alive_s

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
    """Durations, numbers and numeric strings are seconds; zero stays zero (unload at once)."""
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


SETTINGS = [
    ("5m", 300.0),
    ("1h30m", 5400.0),
    ("250ms", 0.25),
    (".5s", 0.5),
    ("1.5h", 5400.0),
    ("2\u00b5s", 2e-6),
    ("+5m", 300.0),
    ("0", 0.0),
    ("300", 300.0),
    ("-1", FOREVER),
    ("-1m", FOREVER),
    (" 5m ", 300.0),
]
NOT_SETTINGS = ["", "5 m", "1.5", "five", "5d", "m", "--1", "1e3", "-"]


@pytest.mark.parametrize(("text", "seconds"), SETTINGS)
def test_a_setting_means_the_same_to_config_doctor_and_worker(text, seconds):
    """Each spelling Ollama accepts gives the same seconds to all three readers."""
    assert parse_keep_alive_setting(text) == pytest.approx(seconds)
    assert keep_alive_s(text) == pytest.approx(seconds)
    assert parse_keep_alive(text, 0.0) == pytest.approx(seconds)
    settings = parse_settings({"generator": {"keep_alive": text}})
    assert settings.generator.keep_alive == text.strip()


@pytest.mark.parametrize("text", NOT_SETTINGS)
def test_what_ollama_would_not_take_is_refused_everywhere_alike(text):
    """A setting Ollama would not read is refused by config, ignored by doctor (None), and
    raises InputError in the parser."""
    with pytest.raises(InputError):
        parse_keep_alive_setting(text)
    assert keep_alive_s(text) is None
    with pytest.raises(ConfigError, match=r"generator\.keep_alive"):
        parse_settings({"generator": {"keep_alive": text}})


def test_a_request_may_also_carry_fractional_seconds():
    """Only a request (a JSON number, or its text) may be fractional seconds; a setting is sent
    to Ollama as is, and Ollama reads a fractional text as no duration."""
    assert parse_keep_alive(1.5, 0.0) == 1.5
    assert parse_keep_alive("1.5", 0.0) == 1.5
    with pytest.raises(InputError):
        parse_keep_alive_setting("1.5")


def test_doctor_reads_a_quoted_env_value():
    """`OLLAMA_KEEP_ALIVE="5m"` in an env file is 5 minutes, not an unreadable value."""
    assert keep_alive_s('"5m"') == 300.0
    assert math.isinf(keep_alive_s("'-1'") or 0.0)
