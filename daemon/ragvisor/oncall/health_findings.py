"""The judgement of `ragvisor health`, one subject at a time: the backend, readiness,
supervision, memory, the store, the sync, thresholds and the deep checks. Pure functions of what
was observed; :func:`ragvisor.oncall.health.assess` puts them together.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from ragvisor.oncall.health_probe import MEMORY_STATES, BackendProbe, DeepProbe, Observation
from ragvisor.oncall.nagios import (
    PerfDatum,
    State,
    StatusNote,
    Threshold,
)
from ragvisor.oncall.status import (
    dig,
    number,
)

BREAKER_LEVELS = {"closed": 0, "half_open": 1, "open": 2}
# Findings about one cause share a subject and are reported once: the memory guard's level
# (with its reasons) and the mem_available threshold both speak of available memory.
SUBJECTS = {"mem_available": "memory"}


@dataclass(frozen=True, slots=True)
class _Measure:
    value: float | None
    uom: str
    maximum: float | None = None
    text: str = ""  # how the value is described in a finding
    graphed: bool = True  # False: judged on a stand-in value, perfdata says "U"


def measurements(status: Mapping[str, Any] | None) -> dict[str, _Measure]:
    """The three thresholded values from `/status` (value None when not reported)."""
    age = number(dig(status, "sync", "last_sync_age_s"))
    sync_age = _Measure(age, "s", text=f"last sync {age or 0:.0f} s ago")
    if age is None and isinstance(dig(status, "sync"), Mapping):
        # Never synced since start: the data is at least as old as the daemon's uptime.
        uptime = number(dig(status, "uptime_s"))
        text = f"no successful sync in the daemon's {uptime or 0:.0f} s uptime"
        sync_age = _Measure(uptime, "s", text=text, graphed=False)
    lanes = dig(status, "lanes")
    queue = max_queue = None
    if isinstance(lanes, Mapping) and lanes:
        queue = sum(number(dig(lane, "waiting")) or 0 for lane in lanes.values())
        max_queue = sum(number(dig(lane, "max_queue")) or 0 for lane in lanes.values())
    available = number(dig(status, "memory", "available_mb"))
    return {
        "sync_age": sync_age,
        "queue": _Measure(queue, "", max_queue, f"{queue or 0:.0f} requests waiting"),
        "mem_available": _Measure(
            available,
            "MB",
            number(dig(status, "memory", "total_mb")),
            f"{available or 0:.0f} MB available",
        ),
    }


def backend_findings(backend: BackendProbe | None, has_generator: bool) -> list[StatusNote]:
    if not has_generator:
        return [StatusNote(State.OK, "generator", "generator off")]
    if backend is None:
        return []  # not probed: --timeout was spent (reported as such)
    if backend.error is not None:
        return [
            StatusNote(
                State.CRITICAL,
                "generator",
                f"generator backend down ({backend.url}: {backend.error})",
            )
        ]
    if backend.loaded is None:
        what = f"up, /api/ps failed: {backend.ps_error}"
    else:
        what = "loaded" if backend.loaded else "not loaded"
    return [StatusNote(State.OK, "generator", f"generator {backend.model} ({what})")]


def readiness_findings(readyz: Mapping[str, Any] | None) -> list[StatusNote]:
    if readyz is None:
        return []
    checks = readyz.get("checks")
    checks = checks if isinstance(checks, Mapping) else {}
    found = []
    for name, check in checks.items():
        if dig(check, "ok"):
            continue
        if dig(check, "required") is False:  # reported, not a reason to be unready: a warning
            if name == "sync":
                text = _sync_failed_text(dig(check, "error"), dig(check, "consecutive_failures"))
            else:
                text = f"{name} failing ({dig(check, 'error') or 'check failed'})"
            found.append(StatusNote(State.WARNING, name, text))
            continue
        error = dig(check, "error") or "check failed"
        if name == "generator" and _first_start(check):
            # The daemon serves /search while its worker comes up (about a second): paging
            # someone for a start is noise; a worker that fails to start is reported as down.
            found.append(StatusNote(State.WARNING, name, f"generator starting ({error})"))
            continue
        text = {
            "generator": f"generator backend down ({error})",
            "store": f"store not reachable ({error})",
        }.get(name, f"{name} not ready ({error})")
        found.append(StatusNote(State.CRITICAL, name, text))
    if readyz.get("ready") is False and not found:
        found.append(StatusNote(State.CRITICAL, "daemon", "daemon not ready"))
    return found


def _first_start(check: Any) -> bool:
    """Whether a generator check failed only because the embedded worker is on its first start
    (not a respawn after a crash)."""
    worker = dig(check, "worker")
    return (
        dig(worker, "state") == "starting"
        and not dig(worker, "restarts")
        and dig(worker, "last_exit") is None
    )


def supervision_findings(status: Mapping[str, Any] | None) -> list[StatusNote]:
    """Open breakers and running or exhausted restart ladders: the daemon is coping, degraded."""
    backends = dig(status, "backends")
    found = []
    for name, backend in backends.items() if isinstance(backends, Mapping) else ():
        state = dig(backend, "breaker", "state")
        if state in ("open", "half_open"):
            retry = number(dig(backend, "breaker", "retry_in_s"))
            when = f", retry in {retry:.0f} s" if retry is not None else ", trial call running"
            found.append(
                StatusNote(State.WARNING, f"{name}.breaker", f"{name} breaker {state}{when}")
            )
        ladder = dig(backend, "ladder")
        if dig(ladder, "running"):
            step = dig(ladder, "last_step", "step") or "starting"
            found.append(
                StatusNote(State.WARNING, f"{name}.ladder", f"{name} recovery ladder at {step}")
            )
        restarts = number(dig(ladder, "restarts_last_hour"))
        budget = number(dig(ladder, "restart_budget_per_hour"))
        if restarts is not None and budget and restarts >= budget:
            found.append(
                StatusNote(
                    State.WARNING,
                    f"{name}.budget",
                    f"{name} restart budget spent ({restarts:.0f}/{budget:.0f} this hour)",
                )
            )
    return found


def memory_findings(status: Mapping[str, Any] | None) -> list[StatusNote]:
    level = dig(status, "memory", "level")
    reasons = dig(status, "memory", "reasons")
    why = "; ".join(str(r) for r in reasons) if isinstance(reasons, list) and reasons else ""
    if level in MEMORY_STATES:
        text = f"memory {level}" + (f" ({why})" if why else "")
        return [StatusNote(MEMORY_STATES[level], "memory", text)]
    if level == "disabled":
        return [StatusNote(State.OK, "memory", "memory guard off")]
    if level == "unknown":
        error = dig(status, "memory", "probe_error")
        text = f"memory not measured ({error})" if error else "memory not measured yet"
        return [StatusNote(State.OK, "memory", text)]
    return []


def store_findings(status: Mapping[str, Any] | None) -> list[StatusNote]:
    store = dig(status, "store")
    if not isinstance(store, Mapping):
        return []
    if store.get("ok") is False:
        error = store.get("error") or "unknown error"
        return [StatusNote(State.CRITICAL, "store", f"store not reachable ({error})")]
    chunks, documents = store.get("chunks"), store.get("documents")
    if chunks is None:
        return []
    return [StatusNote(State.OK, "store", f"{chunks} chunks in {documents} documents")]


def _sync_failed_text(error: Any, consecutive: Any) -> str:
    """The finding's text: `last sync failed: E`, or `last 3 syncs failed: E` in a streak."""
    count = number(consecutive)
    many = count is not None and count > 1
    what = f"last {count:.0f} syncs failed" if many else "last sync failed"
    return f"{what}: {error or 'unknown error'}"


def sync_findings(status: Mapping[str, Any] | None) -> list[StatusNote]:
    """A failed last sync warns, however fresh the data (search still answers from it).

    Not critical however long it lasts: the sync_age threshold (10 x the interval since the
    last *successful* sync, by default) turns a sync that keeps failing critical on its own.
    """
    error = dig(status, "sync", "last_error")
    failures = dig(status, "sync", "consecutive_failures")
    found = []
    if error and (failures is None or (number(failures) or 0) > 0):
        found.append(StatusNote(State.WARNING, "sync", _sync_failed_text(error, failures)))
    elif dig(status, "sync", "running"):
        found.append(StatusNote(State.OK, "sync", "sync running"))
    return found


def threshold_findings(
    status: Mapping[str, Any] | None,
    thresholds: Mapping[str, Threshold],
    explicit: Collection[str],
) -> tuple[list[StatusNote], list[PerfDatum]]:
    found, perf = [], []
    for name, measure in measurements(status).items():
        threshold = thresholds.get(name, Threshold())
        if measure.value is None:
            if name in explicit:
                found.append(
                    StatusNote(
                        State.UNKNOWN, name, f"cannot check {name}: the daemon does not report it"
                    )
                )
            continue
        state = threshold.state(measure.value)
        if state is not State.OK:
            alert = threshold.crit if state is State.CRITICAL else threshold.warn
            found.append(
                StatusNote(
                    state,
                    SUBJECTS.get(name, name),
                    f"{measure.text} ({state.name.lower()} threshold {alert})",
                )
            )
        elif name == "sync_age":
            found.append(StatusNote(State.OK, name, measure.text))
        perf.append(
            PerfDatum(
                name,
                measure.value if measure.graphed else None,
                measure.uom,
                threshold,
                minimum=0,
                maximum=measure.maximum,
            )
        )
    return found, perf


def _hits(count: int | None) -> str:
    return "1 hit" if count == 1 else f"{count} hits"


def deep_findings(deep: DeepProbe | None) -> tuple[list[StatusNote], list[PerfDatum]]:
    if deep is None:
        return [], []
    found, perf = [], []
    if deep.search_error is not None:
        found.append(StatusNote(State.CRITICAL, "search", f"search failed ({deep.search_error})"))
    elif deep.search_s is not None:
        found.append(
            StatusNote(
                State.OK,
                "search",
                f"search ok ({_hits(deep.search_hits)} in {deep.search_s * 1000:.0f} ms)",
            )
        )
        perf.append(PerfDatum("search_time", deep.search_s, "s", minimum=0))
    if deep.generate_error is not None:
        found.append(
            StatusNote(
                State.CRITICAL, "generate", f"one-token generation failed ({deep.generate_error})"
            )
        )
    elif deep.generate_skipped is not None:
        found.append(
            StatusNote(State.OK, "generate", f"generation skipped ({deep.generate_skipped})")
        )
    elif deep.generate_s is not None:
        found.append(
            StatusNote(State.OK, "generate", f"generated 1 token in {deep.generate_s:.2f} s")
        )
        perf.append(PerfDatum("generate_time", deep.generate_s, "s", minimum=0))
    return found, perf


def context_perfdata(obs: Observation) -> list[PerfDatum]:
    """Values that are graphed but not thresholded: RSS, breaker states, model residency."""
    status = obs.daemon.status
    perf = []
    rss = dig(status, "memory", "rss_mb")
    for name, value in rss.items() if isinstance(rss, Mapping) else ():
        if number(value) is not None:
            perf.append(PerfDatum(f"rss_{name}", number(value), "MB", minimum=0))
    backends = dig(status, "backends")
    for name, backend in backends.items() if isinstance(backends, Mapping) else ():
        level = BREAKER_LEVELS.get(str(dig(backend, "breaker", "state")))
        if level is not None:
            perf.append(PerfDatum(f"breaker_{name}", level, minimum=0, maximum=2))
    if obs.backend is not None and obs.backend.loaded is not None:
        perf.append(PerfDatum("generator_loaded", int(obs.backend.loaded), minimum=0, maximum=1))
    return perf
