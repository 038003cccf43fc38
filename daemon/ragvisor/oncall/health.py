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

import argparse
import asyncio
import contextlib
import math
import os
import sys
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

import structlog

from ragvisor.core.model import ChatMessage
from ragvisor.errors import RagvisorError
from ragvisor.llm.ollama_client import Deadlines, OllamaClient
from ragvisor.oncall.daemon_client import DaemonClient
from ragvisor.oncall.nagios import (
    PerfDatum,
    Range,
    State,
    StatusNote,
    Threshold,
    merge_thresholds,
    parse_threshold_option,
    status_line,
)
from ragvisor.oncall.status import (
    DEFAULT_TIMEOUT_S,
    DaemonReply,
    add_config_argument,
    default_url,
    dig,
    fetch_daemon,
    number,
)
from ragvisor.supervise.ladder import same_model

if TYPE_CHECKING:
    from ragvisor.config import Settings

SERVICE = "RAGVISOR"
THRESHOLD_NAMES = ("sync_age", "queue", "mem_available")
# Default thresholds: sync age in multiples of sync.interval_s; queue as a share of the ask
# lane's max_queue (the lane that fills first: answers take seconds, searches milliseconds).
SYNC_WARN_INTERVALS, SYNC_CRIT_INTERVALS = 3, 10
QUEUE_WARN_SHARE, QUEUE_CRIT_SHARE = 0.5, 0.9
BREAKER_LEVELS = {"closed": 0, "half_open": 1, "open": 2}
MEMORY_STATES = {"critical": State.CRITICAL, "pressure": State.WARNING}
# Findings about one cause share a subject and are reported once: the memory guard's level
# (with its reasons) and the mem_available threshold both speak of available memory.
SUBJECTS = {"mem_available": "memory"}
DEEP_QUERY = "ragvisor health check"
# A step that would get less time than this is not started: running out of --timeout is the
# plugin's failure (UNKNOWN), not proof that a component is down.
MIN_STEP_S = 0.2
# Beyond --timeout, how long the whole plugin may take before it gives up on itself.
GRACE_S = 2.0


@dataclass(frozen=True, slots=True)
class Target:
    """Where the generator backend is and what the daemon asks of it."""

    url: str
    model: str
    num_ctx: int


@dataclass(frozen=True, slots=True)
class BackendProbe:
    """What the generator backend said: `/api/version` (up?) and `/api/ps` (model loaded?)."""

    url: str
    model: str
    num_ctx: int = 2048
    version: str | None = None
    error: str | None = None
    loaded: bool | None = None  # None: /api/ps was not answered
    ps_error: str | None = None


@dataclass(frozen=True, slots=True)
class DeepProbe:
    """Results of `--deep`: a real search and a one-token generation (None = not tried)."""

    search_s: float | None = None
    search_hits: int | None = None
    search_error: str | None = None
    generate_s: float | None = None
    generate_error: str | None = None
    generate_skipped: str | None = None


@dataclass(frozen=True, slots=True)
class Observation:
    """Everything one run of the plugin measured; `assess` turns it into a verdict."""

    daemon: DaemonReply
    backend: BackendProbe | None = None  # None: no generator configured, or not reached
    deep: DeepProbe | None = None
    elapsed_s: float = 0.0
    out_of_time: tuple[str, ...] = ()  # steps skipped because --timeout was spent
    has_generator: bool = True  # False: the daemon runs without one (generator.backend "none")


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


# --- judgement (pure) -----------------------------------------------------------------------


def _backend_findings(backend: BackendProbe | None, has_generator: bool) -> list[StatusNote]:
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


def _readiness_findings(readyz: Mapping[str, Any] | None) -> list[StatusNote]:
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
        text = {
            "generator": f"generator backend down ({error})",
            "store": f"store not reachable ({error})",
        }.get(name, f"{name} not ready ({error})")
        found.append(StatusNote(State.CRITICAL, name, text))
    if readyz.get("ready") is False and not found:
        found.append(StatusNote(State.CRITICAL, "daemon", "daemon not ready"))
    return found


def _supervision_findings(status: Mapping[str, Any] | None) -> list[StatusNote]:
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


def _memory_findings(status: Mapping[str, Any] | None) -> list[StatusNote]:
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


def _store_findings(status: Mapping[str, Any] | None) -> list[StatusNote]:
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


def _sync_findings(status: Mapping[str, Any] | None) -> list[StatusNote]:
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


def _threshold_findings(
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


def _deep_findings(deep: DeepProbe | None) -> tuple[list[StatusNote], list[PerfDatum]]:
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


def _context_perfdata(obs: Observation) -> list[PerfDatum]:
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
    found = _backend_findings(obs.backend, obs.has_generator)
    found += _readiness_findings(reply.readyz)
    found += _supervision_findings(status)
    found += _memory_findings(status)
    found += _sync_findings(status)
    threshold_found, perf = _threshold_findings(status, thresholds, explicit)
    found += threshold_found
    found += _store_findings(status)
    deep_found, deep_perf = _deep_findings(obs.deep)
    found += deep_found
    found += [
        StatusNote(State.UNKNOWN, f"time.{step}", f"{step} not checked: --timeout spent")
        for step in obs.out_of_time
    ]
    found += [StatusNote(State.OK, f"note.{note}", note) for note in reply.notes]
    return found, [*perf, *_context_perfdata(obs), *deep_perf, timing]


def verdict(
    obs: Observation, thresholds: Mapping[str, Threshold], explicit: Collection[str] = ()
) -> tuple[State, str]:
    """The plugin's exit state and its output line."""
    found, perf = assess(obs, thresholds, explicit)
    return status_line(SERVICE, found, perf)


# --- probes (I/O) ---------------------------------------------------------------------------


class _Budget:
    """The time left of `--timeout`, shared by the steps of one run."""

    def __init__(self, timeout_s: float) -> None:
        self.deadline = time.monotonic() + timeout_s

    def left(self) -> float:
        return self.deadline - time.monotonic()


def generator_target(reply: DaemonReply, settings: Settings) -> Target | None:
    """The generator backend the daemon uses, or None when it has none.

    The embedded worker's port is chosen at start, so the daemon's `/status` (or `/readyz`) is
    asked first; `generator.url` from the configuration is the fallback for older daemons.
    The daemon's own model and num_ctx win over the configuration's: a one-token check with
    another num_ctx would make Ollama reload the model to resize its context.
    """
    g = settings.generator
    found = dig(reply.status, "backends", "generator")
    if found is None and dig(reply.status, "backends") is None:
        found = dig(reply.readyz, "checks", "generator")
        if found is None and reply.readyz is None and g.backend != "none":
            found = {"url": g.url}  # nothing from the daemon: trust the configuration
    if not isinstance(found, Mapping) or not found.get("url"):
        return None
    num_ctx = number(found.get("num_ctx"))
    return Target(
        str(found["url"]),
        str(found.get("model") or g.model),
        int(num_ctx) if num_ctx else g.num_ctx,
    )


def _client(target: Target | BackendProbe, timeout_s: float, keep_alive: str) -> OllamaClient:
    return OllamaClient(
        target.url,
        model=target.model,
        num_ctx=target.num_ctx,
        num_predict=1,
        temperature=0.0,
        keep_alive=keep_alive,
        deadlines=Deadlines(
            connect_s=timeout_s, first_token_s=timeout_s, stall_s=timeout_s, total_s=timeout_s
        ),
    )


def _names_model(entry: Any, model: str) -> bool:
    """Whether an `/api/ps` entry is `model`."""
    names = (dig(entry, "name"), dig(entry, "model"))
    return any(isinstance(name, str) and same_model(name, model) for name in names)


def _step_s(budget: _Budget) -> float:
    """Seconds for the next call: what is left, to a tenth (it appears in messages)."""
    return round(max(budget.left(), MIN_STEP_S), 1)


async def probe_backend(target: Target, budget: _Budget) -> BackendProbe:
    """`/api/version` then `/api/ps` on the generator backend: neither loads a model."""
    client = _client(target, _step_s(budget), "0")
    url, model, num_ctx = target.url, target.model, target.num_ctx
    try:
        try:
            version = await client.version(timeout=_step_s(budget))
        except RagvisorError as exc:
            return BackendProbe(url, model, num_ctx, error=str(exc))
        try:
            async with asyncio.timeout(_step_s(budget)):
                models = await client.ps()
        except (RagvisorError, TimeoutError) as exc:
            return BackendProbe(url, model, num_ctx, version, ps_error=str(exc) or "timed out")
        loaded = any(_names_model(entry, model) for entry in models)
        return BackendProbe(url, model, num_ctx, version, loaded=loaded)
    finally:
        await client.aclose()


async def _deep_search(
    daemon_url: str, budget: _Budget
) -> tuple[float | None, int | None, str | None]:
    started = time.perf_counter()
    daemon = DaemonClient(daemon_url, _step_s(budget))
    try:
        body = await daemon.search(DEEP_QUERY, k=1)
    except RagvisorError as exc:
        return None, None, f"{type(exc).__name__}: {exc}"
    hits = dig(body, "results")
    return time.perf_counter() - started, len(hits) if isinstance(hits, list) else 0, None


async def _deep_generate(
    backend: BackendProbe, settings: Settings, budget: _Budget
) -> tuple[float | None, str | None]:
    """One token from the configured model. A model that was not loaded is asked with
    `keep_alive: 0`, so the check does not leave hundreds of MB behind it."""
    keep_alive = settings.generator.keep_alive if backend.loaded else "0"
    client = _client(backend, _step_s(budget), keep_alive)
    started = time.perf_counter()
    try:
        # The stream ends by itself after its stats line, the one-token answer's last event.
        chat = client.chat([ChatMessage("user", "Reply with OK.")])
        async with asyncio.timeout(_step_s(budget)), contextlib.aclosing(chat) as events:
            async for _ in events:
                pass
    except TimeoutError:
        return None, f"no answer within {time.perf_counter() - started:.1f} s (--timeout)"
    except RagvisorError as exc:
        return None, str(exc)
    finally:
        await client.aclose()
    return time.perf_counter() - started, None


async def deep_checks(
    daemon_url: str, backend: BackendProbe | None, reply: DaemonReply, settings: Settings,
    budget: _Budget,
) -> DeepProbe:  # fmt: skip
    """`--deep`: a real search through the daemon, then one generated token."""
    search_s, hits, search_error = await _deep_search(daemon_url, budget)
    level = dig(reply.status, "memory", "level")
    skipped = None
    if backend is None:
        skipped = "no generator"
    elif backend.error is not None:
        skipped = "generator backend down"
    elif level in MEMORY_STATES:
        skipped = f"memory {level}: a model load would make it worse"
    elif budget.left() < MIN_STEP_S:
        skipped = "--timeout spent"
    if skipped is not None or backend is None:
        return DeepProbe(search_s, hits, search_error, generate_skipped=skipped)
    generate_s, generate_error = await _deep_generate(backend, settings, budget)
    return DeepProbe(search_s, hits, search_error, generate_s, generate_error)


async def observe(url: str, settings: Settings, timeout_s: float, *, deep: bool) -> Observation:
    """Ask the daemon, then the generator backend (and with `deep`, search and generate)."""
    started = time.perf_counter()
    budget = _Budget(timeout_s)
    reply = await fetch_daemon(url, timeout_s)
    backend: BackendProbe | None = None
    skipped: list[str] = []
    deep_probe: DeepProbe | None = None
    target = None
    if reply.error is None:
        target = generator_target(reply, settings)
        if target is not None and budget.left() < MIN_STEP_S:
            skipped.append("generator backend")
        elif target is not None:
            backend = await probe_backend(target, budget)
        if deep and budget.left() < MIN_STEP_S:
            skipped.append("deep search and generation")
        elif deep:
            deep_probe = await deep_checks(url, backend, reply, settings, budget)
    elapsed_s = time.perf_counter() - started
    return Observation(
        reply, backend, deep_probe, elapsed_s, tuple(skipped), has_generator=target is not None
    )


# --- command line ---------------------------------------------------------------------------


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number of seconds")
    return value


def usage_error(message: str) -> int:
    """Report a usage mistake the Nagios way: a status line on stdout, exit code 3 (UNKNOWN).

    For callers that parse the command line themselves (cli.py's unrecognized arguments).
    """
    print(f"{SERVICE} UNKNOWN - bad arguments: {message}")
    return int(State.UNKNOWN)


def usage_errors_are_unknown(parser: argparse.ArgumentParser) -> None:
    """Make the parser's usage errors exit 3 (UNKNOWN) with a status line, not argparse's 2:
    a monitoring system would read 2 as CRITICAL and page someone for a typo."""

    def error(message: str) -> NoReturn:
        parser.print_usage(sys.stderr)
        raise SystemExit(usage_error(message))

    # Replacing the bound method of this one parser object (argparse offers no hook for the
    # exit status) rather than subclassing, so it also works on cli.py's subparser.
    parser.error = error  # type: ignore[method-assign]


def add_health_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `ragvisor health` (`--config` only if the parser lacks it)."""
    names = ", ".join(THRESHOLD_NAMES)
    parser.add_argument(
        "--url", help="the daemon (default: http://<server.host>:<server.port> from the config)"
    )
    add_config_argument(parser)
    for flag, long, what in (("-w", "--warning", "WARNING"), ("-c", "--critical", "CRITICAL")):
        parser.add_argument(
            flag,
            long,
            action="append",
            default=[],
            metavar="NAME=RANGE",
            help=f"{what} threshold (repeatable); NAME is one of {names}; RANGE is a Nagios "
            "range (10, 10:, ~:10, 10:20, @10:20); NAME= removes the default",
        )
    parser.add_argument(
        "-t",
        "--timeout",
        type=_positive_seconds,
        default=DEFAULT_TIMEOUT_S,
        help=f"seconds for the whole check (default {DEFAULT_TIMEOUT_S:g}); a daemon or backend "
        "that does not answer in time is CRITICAL",
    )
    parser.add_argument(
        "--deep",
        action="store_true",
        help="also run a real search and a one-token generation (may load the model)",
    )
    usage_errors_are_unknown(parser)


def _print(state: State, line: str) -> int:
    print(line)
    return int(state)


def run_health(args: argparse.Namespace) -> int:
    """`ragvisor health`: print one status line and return the Nagios exit code. Never raises:
    the plugin's own failures (bad thresholds, bad config, a bug) are UNKNOWN."""
    from ragvisor.config import load_settings  # noqa: PLC0415 - pydantic only when run

    log = structlog.get_logger(component="ops")
    try:
        warn = [parse_threshold_option(text, THRESHOLD_NAMES) for text in args.warning]
        crit = [parse_threshold_option(text, THRESHOLD_NAMES) for text in args.critical]
        settings = load_settings(args.config, os.environ)
    except RagvisorError as exc:
        return _print(State.UNKNOWN, f"{SERVICE} UNKNOWN - {exc}")
    url = args.url or default_url(settings.server.host, settings.server.port)
    try:
        obs = asyncio.run(
            asyncio.wait_for(
                observe(url, settings, args.timeout, deep=args.deep), args.timeout + GRACE_S
            )
        )
    except TimeoutError:
        return _print(
            State.UNKNOWN, f"{SERVICE} UNKNOWN - plugin timed out after {args.timeout:g} s"
        )
    except Exception as exc:  # noqa: BLE001 - a plugin's own failure is UNKNOWN, not a traceback
        return _print(
            State.UNKNOWN, f"{SERVICE} UNKNOWN - plugin error: {type(exc).__name__}: {exc}"
        )
    thresholds = merge_thresholds(default_thresholds(settings, obs.daemon.status), warn, crit)
    explicit = {name for name, value in (*warn, *crit) if value is not None}
    state, line = verdict(obs, thresholds, explicit)
    log.debug(
        "health.checked", url=url, state=state.name, deep=args.deep,
        duration_ms=round(obs.elapsed_s * 1000, 1),
    )  # fmt: skip
    return _print(state, line)
