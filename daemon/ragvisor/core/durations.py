"""Durations as Ollama reads them — Go duration strings and `keep_alive` values — in one place,
so the daemon's settings, `ragvisor doctor`'s reading of `OLLAMA_KEEP_ALIVE` and the embedded
worker's requests cannot disagree. Pure: no clock, no I/O.

A keep-alive is seconds as a float: 0 unloads the model right after the response and `FOREVER`
(`math.inf`) keeps it loaded, which is what Ollama makes of any negative value (`api/types.go`
`Duration.UnmarshalJSON` for requests, `envconfig.KeepAlive` for `OLLAMA_KEEP_ALIVE`).

What each reader accepts, and why:

- `parse_go_duration`: Go's `time.ParseDuration` — one or more terms of a number and a unit
  (`ns`, `us`, `µs`, `ms`, `s`, `m`, `h`), optionally signed (`"5m"`, `"1h30m"`, `"1.5h"`,
  `".5s"`, `"-1m"`, `"+5m"`), or a bare `"0"`. Whitespace around it is ignored.
- `parse_keep_alive_setting` (our `keep_alive` settings and `OLLAMA_KEEP_ALIVE`): a Go duration
  or whole seconds (`"300"`, `"-1"`, `"+5"`), exactly what `OLLAMA_KEEP_ALIVE` takes. It is the
  union of what the config loader (whole seconds, unsigned durations) and doctor (signed
  durations, but not `".5s"`) took before. A setting is sent to Ollama as is — whole seconds as
  a JSON number, anything else as text Ollama parses as a Go duration — so fractional text
  (`"1.5"`) is refused: Ollama would answer 400.
- `parse_keep_alive` (a request to the worker): also any JSON number and numeric text, fractional
  included (`1.5`, `"1.5"`), as the worker always took; booleans, NaN and other types are refused.
"""

from __future__ import annotations

import math
import re

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


_WHOLE_SECONDS = re.compile(r"[+-]?\d+")


def parse_keep_alive_setting(text: str) -> float:
    """Seconds in a keep-alive setting or `OLLAMA_KEEP_ALIVE`: whole seconds or a Go duration;
    `FOREVER` for a negative value. Raises InputError for anything else (`"1.5"`, `"5 m"`)."""
    body = text.strip()
    seconds = float(int(body)) if _WHOLE_SECONDS.fullmatch(body) else parse_go_duration(body)
    return FOREVER if seconds < 0 else seconds
