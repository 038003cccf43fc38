"""`ragvisor health`: a Nagios/Icinga plugin built from cheap signals.

It asks the daemon (`/readyz`, `/status`) and the generator backend (`/api/version`, `/api/ps`)
and judges the answers: exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN, one line of text with
perfdata. None of those calls loads a model — a health check that loads a model to answer (as
LiteLLM's `/health` does) costs a CPU box seconds and hundreds of MB every few minutes. Only
`--deep` does real work: a search through the daemon and a one-token generation, and even that
leaves the backend as it found it (a model that was not loaded is unloaded right after).

The judgement (`assess`) is a pure function of what was observed, so every state is unit-tested
without a daemon; the probes (`observe`) are thin and bounded by `--timeout`.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Any

from ragvisor.oncall.health_findings import (
    backend_findings,
    context_perfdata,
    deep_findings,
    memory_findings,
    readiness_findings,
    store_findings,
    supervision_findings,
    sync_findings,
    threshold_findings,
)
from ragvisor.oncall.health_probe import Observation
from ragvisor.oncall.nagios import (
    PerfDatum,
    Range,
    State,
    StatusNote,
    Threshold,
    status_line,
)
from ragvisor.oncall.status import (
    dig,
    number,
)

if TYPE_CHECKING:
    from ragvisor.config import Settings

SERVICE = "RAGVISOR"
THRESHOLD_NAMES = ("sync_age", "queue", "mem_available")
# Default thresholds: sync age in multiples of sync.interval_s; queue as a share of the ask
# lane's max_queue (the lane that fills first: answers take seconds, searches milliseconds).
SYNC_WARN_INTERVALS, SYNC_CRIT_INTERVALS = 3, 10
QUEUE_WARN_SHARE, QUEUE_CRIT_SHARE = 0.5, 0.9
# Beyond --timeout, how long the whole plugin may take before it gives up on itself.
GRACE_S = 2.0


# --- thresholds -----------------------------------------------------------------------------


def default_thresholds(
    settings: Settings, status: Mapping[str, Any] | None
) -> dict[str, Threshold]:
    """Thresholds when no `-w`/`-c` is given, from the daemon's own `/status` where it reports
    the setting (sync interval, lane sizes) and from the configuration otherwise.

    sync_age: warn above 3 x sync.interval_s, critical above 10 x (none when the interval is 0).
    queue: warn at 50 %, critical at 90 % of the ask lane's max_queue, rounded up (none for 0).
    mem_available: warn below memory.low_available_mb, critical below critical_available_mb.
    """
    interval = number(dig(status, "sync", "interval_s"))
    if interval is None:
        interval = settings.sync.interval_s
    ask_queue = number(dig(status, "lanes", "ask", "max_queue"))
    if ask_queue is None:
        ask_queue = settings.admission.ask.max_queue
    memory = settings.memory
    thresholds = {name: Threshold() for name in THRESHOLD_NAMES}
    if interval > 0:
        thresholds["sync_age"] = Threshold(
            warn=Range(0, SYNC_WARN_INTERVALS * interval),
            crit=Range(0, SYNC_CRIT_INTERVALS * interval),
        )
    if ask_queue > 0:
        # "Alert at N waiting or more" is the range 0..N-1.
        thresholds["queue"] = Threshold(
            warn=Range(0, math.ceil(QUEUE_WARN_SHARE * ask_queue) - 1),
            crit=Range(0, math.ceil(QUEUE_CRIT_SHARE * ask_queue) - 1),
        )
    thresholds["mem_available"] = Threshold(
        warn=Range(memory.low_available_mb) if memory.low_available_mb > 0 else None,
        crit=Range(memory.critical_available_mb) if memory.critical_available_mb > 0 else None,
    )
    return thresholds


def assess(
    obs: Observation,
    thresholds: Mapping[str, Threshold],
    explicit: Collection[str] = (),
) -> tuple[list[StatusNote], list[PerfDatum]]:
    """Judge one observation: every problem and note, and the perfdata.

    `explicit` names the thresholds given on the command line: a value that cannot be measured
    is UNKNOWN when someone asked for it, and silently skipped when only a default applies.
    """
    timing = PerfDatum("time", obs.elapsed_s, "s", minimum=0)
    reply = obs.daemon
    if reply.error is not None:
        return [StatusNote(State.CRITICAL, "daemon", reply.error)], [timing]
    status = reply.status
    found = backend_findings(obs.backend, obs.has_generator)
    found += readiness_findings(reply.readyz)
    found += supervision_findings(status)
    found += memory_findings(status)
    found += sync_findings(status)
    threshold_found, perf = threshold_findings(status, thresholds, explicit)
    found += threshold_found
    found += store_findings(status)
    deep_found, deep_perf = deep_findings(obs.deep)
    found += deep_found
    found += [
        StatusNote(State.UNKNOWN, f"time.{step}", f"{step} not checked: --timeout spent")
        for step in obs.out_of_time
    ]
    found += [StatusNote(State.OK, f"note.{note}", note) for note in reply.notes]
    return found, [*perf, *context_perfdata(obs), *deep_perf, timing]


def verdict(
    obs: Observation, thresholds: Mapping[str, Threshold], explicit: Collection[str] = ()
) -> tuple[State, str]:
    """The plugin's exit state and its output line."""
    found, perf = assess(obs, thresholds, explicit)
    return status_line(SERVICE, found, perf)
