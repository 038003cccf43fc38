"""Ollama's `keep_alive` values: how long a model stays loaded after its last request.

Ollama decodes `keep_alive` (`api/types.go`, `Duration.UnmarshalJSON`) as either a JSON number of
seconds or a Go duration string (`"5m"`, `"1h30m"`, `"250ms"`); anything negative means "keep it
loaded forever" and zero means "unload right after this response". Its `OLLAMA_KEEP_ALIVE`
variable also takes a bare number of seconds as a string; we accept that in requests too (our
`worker.keep_alive` setting is a string such as `"-1"`), so every spelling Ollama accepts anywhere
works here. Pure functions: the caller supplies the clock.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timedelta

from ragvisor.errors import InputError

FOREVER = math.inf
"""A keep-alive that never expires (any negative value in Ollama's syntax)."""

# Go's time.ParseDuration units, in seconds ("µs" with the micro sign and the Greek mu).
_UNIT_S = {
    "ns": 1e-9,
    "us": 1e-6,
    "\u00b5s": 1e-6,
    "\u03bcs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_TERM = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")
_NUMBER = re.compile(r"[+-]?(\d+(?:\.\d*)?|\.\d+)")
# Far enough for "forever" yet inside datetime's range once added to any realistic now.
_FOREVER_SPAN = timedelta(days=365 * 100)


def parse_go_duration(text: str) -> float:
    """Seconds in a Go duration string such as `"1h30m"`, `"-1m"`, `"2.5s"` or `"0"`.

    Raises InputError for text that Go's `time.ParseDuration` would reject.
    """
    body = text.strip()
    sign = 1.0
    if body.startswith(("+", "-")):
        sign = -1.0 if body[0] == "-" else 1.0
        body = body[1:]
    if body == "0":
        return 0.0
    if not body:
        raise InputError(f"invalid duration {text!r}")
    total = 0.0
    position = 0
    while position < len(body):
        match = _TERM.match(body, position)
        if match is None:
            raise InputError(f"invalid duration {text!r}: expected a number and a unit (s, m, h)")
        total += float(match.group(1)) * _UNIT_S[match.group(2)]
        position = match.end()
    return sign * total


def parse_keep_alive(value: str | float | None, default_s: float) -> float:
    """Seconds to keep a model loaded: `FOREVER` for negative values, 0 to unload at once.

    `None` (the request named none) gives `default_s`. Numbers are seconds; strings are Go
    durations or bare numbers of seconds. Booleans are refused, as Ollama refuses them.
    Raises InputError for anything else.
    """
    if value is None:
        return default_s
    if isinstance(value, bool):
        raise InputError(f"invalid keep_alive {value!r}: expected a duration or seconds")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        seconds = float(value) if _NUMBER.fullmatch(value.strip()) else parse_go_duration(value)
    else:
        raise InputError(f"invalid keep_alive {value!r}: expected a duration or seconds")
    if math.isnan(seconds):
        raise InputError("invalid keep_alive: not a number")
    return FOREVER if seconds < 0 else seconds


def expiry(now: datetime, keep_alive_s: float) -> datetime:
    """When a model used at `now` should unload; a century ahead for `FOREVER`.

    `/api/ps` reports this as `expires_at`; Ollama shows a far-future date for pinned models too.
    """
    if math.isinf(keep_alive_s):
        return now + _FOREVER_SPAN
    return now + timedelta(seconds=keep_alive_s)
