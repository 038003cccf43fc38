"""The Nagios plugin conventions, as pure values: states, threshold ranges, perfdata, one line.

Monitoring systems (Nagios, Icinga, Naemon, Sensu, Zabbix's Nagios bridge) run a plugin, read
its exit code as the state (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN) and parse the first line of
stdout: ``SERVICE STATE - text | 'label'=value[UOM];warn;crit;min;max ...``. Thresholds are
written as ranges (``10``, ``10:``, ``~:10``, ``10:20``, ``@10:20``) whose meaning is fixed by the
Nagios plugin development guidelines; getting one of them backwards pages someone for nothing or,
worse, stays silent, so the semantics live here, apart from any I/O, and are unit-tested.

Nothing in this module knows about ragvisor: `ragvisor.oncall.health` measures, this formats.

Why not the `nagiosplugin` package (1.3.3, tried against this module's tests): its `Range`
accepts an empty range as ``0:`` and a lone ``@`` (a typo in `-w` would silently mean "never
alert" or "always alert"), and ``1_000`` (Python syntax, not the guidelines'); its errors do not
quote the whole option. Its `Performance` prints values with ``%s`` (``0.0020000000000000005``),
checks no unit, and quotes only some labels. Its `Check` runtime prints, exits and arms
SIGALRM itself, which does not fit a check that probes asynchronously within a time budget and
runs under the one CLI entry point. What it would replace is the 60 lines below; they stay.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ragvisor.errors import InputError

# A plain decimal number, as the guidelines allow in ranges and perfdata (no exponent, no "inf").
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)")
# Units the guidelines define for perfdata; anything else makes graphers drop the value.
UNITS = frozenset({"", "s", "ms", "us", "%", "B", "KB", "MB", "GB", "TB", "c"})


class State(enum.IntEnum):
    """A plugin's result; the value is the exit code."""

    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3


# Worst first. UNKNOWN ranks below WARNING, as monitoring-plugins' `max_state_alt` does: a part
# that could not be measured must not hide a part that is known to be failing.
_SEVERITY = {State.OK: 0, State.UNKNOWN: 1, State.WARNING: 2, State.CRITICAL: 3}


def worst(states: Iterable[State]) -> State:
    """The state an aggregate of checks reports: CRITICAL > WARNING > UNKNOWN > OK."""
    return max(states, key=_SEVERITY.__getitem__, default=State.OK)


def _parse_number(text: str, whole: str) -> float:
    if not _NUMBER.fullmatch(text):
        raise InputError(f"bad threshold range {whole!r}: {text!r} is not a number")
    return float(text)


def _format_number(value: float) -> str:
    """A number the way perfdata parsers read it: no exponent, no trailing zeros, at most
    three decimals ("U" for a value that is not a finite number)."""
    if not math.isfinite(value):
        return "U"
    text = f"{value:.3f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


@dataclass(frozen=True, slots=True)
class Range:
    """A Nagios threshold range: alert when the value is outside [start, end], or inside it
    when `inside` is set (the ``@`` prefix). Infinite ends are written ``~`` (start) or left
    empty (end).
    """

    start: float = 0.0
    end: float = math.inf
    inside: bool = False

    @classmethod
    def parse(cls, text: str) -> Range:
        """Parse ``10``, ``10:``, ``~:10``, ``10:20``, ``@10:20`` (and ``:10``, start 0).

        Raises InputError for an empty text, a part that is not a number, or start > end.
        """
        body = text.strip()
        inside = body.startswith("@")
        if inside:
            body = body[1:]
        if not body:
            raise InputError(f"bad threshold range {text!r}: it is empty")
        if ":" in body:
            start_text, end_text = body.split(":", 1)
            if start_text == "~":
                start = -math.inf
            elif start_text == "":
                start = 0.0
            else:
                start = _parse_number(start_text, text)
            end = math.inf if end_text == "" else _parse_number(end_text, text)
        else:
            start, end = 0.0, _parse_number(body, text)
        if start > end:
            raise InputError(f"bad threshold range {text!r}: start is greater than end")
        return cls(start, end, inside)

    def alerts(self, value: float) -> bool:
        """Whether `value` raises this threshold's alert."""
        within = self.start <= value <= self.end
        return within if self.inside else not within

    def __str__(self) -> str:
        """The canonical text, as it goes into perfdata (``10``, ``10:``, ``~:10``, ``@1:2``)."""
        prefix = "@" if self.inside else ""
        end = "" if math.isinf(self.end) else _format_number(self.end)
        if self.start == 0 and end:
            return prefix + end
        start = "~" if math.isinf(self.start) else _format_number(self.start)
        return f"{prefix}{start}:{end}"


@dataclass(frozen=True, slots=True)
class Threshold:
    """The warning and critical ranges of one measured value (either may be absent)."""

    warn: Range | None = None
    crit: Range | None = None

    def state(self, value: float) -> State:
        """CRITICAL if the critical range alerts, else WARNING if the warning range does."""
        if self.crit is not None and self.crit.alerts(value):
            return State.CRITICAL
        if self.warn is not None and self.warn.alerts(value):
            return State.WARNING
        return State.OK


def parse_threshold_option(text: str, names: Iterable[str]) -> tuple[str, Range | None]:
    """One ``-w``/``-c`` argument, ``NAME=RANGE``; an empty RANGE (``NAME=``) means "no
    threshold" and switches a default off.

    Raises InputError for a missing ``=``, an unknown name or a bad range.
    """
    known = tuple(names)
    name, sep, range_text = text.partition("=")
    name = name.strip()
    if not sep or not name:
        raise InputError(f"bad threshold {text!r}: expected NAME=RANGE, NAME one of {known}")
    if name not in known:
        raise InputError(f"bad threshold {text!r}: unknown name {name!r}, expected one of {known}")
    return name, (Range.parse(range_text) if range_text.strip() else None)


def merge_thresholds(
    defaults: Mapping[str, Threshold],
    warn: Iterable[tuple[str, Range | None]],
    crit: Iterable[tuple[str, Range | None]],
) -> dict[str, Threshold]:
    """Defaults overridden by the command line's ``-w``/``-c`` (the last one of a name wins)."""
    merged = {name: defaults.get(name, Threshold()) for name in defaults}
    for name, value in warn:
        old = merged.get(name, Threshold())
        merged[name] = Threshold(warn=value, crit=old.crit)
    for name, value in crit:
        old = merged.get(name, Threshold())
        merged[name] = Threshold(warn=old.warn, crit=value)
    return merged


@dataclass(frozen=True, slots=True)
class PerfDatum:
    """One ``'label'=value[UOM];warn;crit;min;max`` item; None leaves a field empty."""

    label: str
    value: float | None
    uom: str = ""
    threshold: Threshold = Threshold()
    minimum: float | None = None
    maximum: float | None = None

    def __post_init__(self) -> None:
        if "=" in self.label or not self.label:
            raise ValueError(f"perfdata label {self.label!r} must be non-empty and have no '='")
        if self.uom not in UNITS:
            raise ValueError(f"perfdata unit {self.uom!r} is not one of {sorted(UNITS)}")

    def __str__(self) -> str:
        """The item as it goes after the ``|``: the label always quoted (a quote doubled),
        "U" for a value that could not be measured, trailing empty fields dropped."""
        label = "'" + self.label.replace("'", "''") + "'"
        value = "U" if self.value is None else _format_number(self.value) + self.uom
        fields = [
            "" if self.threshold.warn is None else str(self.threshold.warn),
            "" if self.threshold.crit is None else str(self.threshold.crit),
            "" if self.minimum is None else _format_number(self.minimum),
            "" if self.maximum is None else _format_number(self.maximum),
        ]
        return ";".join([f"{label}={value}", *fields]).rstrip(";")


@dataclass(frozen=True, slots=True)
class StatusNote:
    """One thing the plugin has to say: a problem (state above OK) or a plain note (OK).

    `subject` names what it is about, so that two signals for the same cause (the daemon's
    readiness and our own probe of the generator, say) are reported once.
    """

    state: State
    subject: str
    text: str


def _one_line(text: str) -> str:
    """Text safe for the status line: no newline, and no ``|`` (it starts the perfdata)."""
    return " ".join(text.replace("|", "/").split())


def dedupe(findings: Iterable[StatusNote]) -> list[StatusNote]:
    """One finding per subject: the worst, the first seen on a tie; order of first sight kept."""
    chosen: dict[str, StatusNote] = {}
    for finding in findings:
        old = chosen.get(finding.subject)
        if old is None or _SEVERITY[finding.state] > _SEVERITY[old.state]:
            chosen[finding.subject] = finding
    return list(chosen.values())


def status_line(
    service: str, findings: Iterable[StatusNote], perfdata: Iterable[PerfDatum] = ()
) -> tuple[State, str]:
    """The plugin's state and its one output line: worst problems first, then the notes.

    The state is the worst of the findings (OK when there are none).
    """
    kept = dedupe(findings)
    state = worst(f.state for f in kept)
    ordered = sorted(kept, key=lambda f: -_SEVERITY[f.state])  # stable: detection order kept
    text = "; ".join(_one_line(f.text) for f in ordered if f.text) or "no findings"
    line = f"{service} {state.name} - {text}"
    perf = " ".join(str(p) for p in perfdata)
    return state, f"{line} | {perf}" if perf else line
