"""The Nagios plugin conventions and `ragvisor health`'s judgement, without a daemon.

Ranges follow the Nagios plugin development guidelines' table; the judgement is fed the JSON a
daemon's `/status` and `/readyz` return, with parts missing or failing.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import pytest

from ragvisor.cli import main as cli_main
from ragvisor.config import parse_settings
from ragvisor.errors import InputError
from ragvisor.oncall.health import assess, default_thresholds, verdict
from ragvisor.oncall.health_probe import (
    BackendProbe,
    DeepProbe,
    Observation,
    Target,
    generator_target,
)
from ragvisor.oncall.nagios import (
    PerfDatum,
    Range,
    State,
    StatusNote,
    Threshold,
    merge_thresholds,
    parse_threshold_option,
    status_line,
    worst,
)
from ragvisor.oncall.status import DaemonReply, default_url, render_status

INF = math.inf
NAMES = ("sync_age", "queue", "mem_available")

# --- ranges -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "start", "end", "inside"),
    [
        ("10", 0, 10, False),
        ("10:", 10, INF, False),
        ("~:10", -INF, 10, False),
        ("10:20", 10, 20, False),
        ("@10:20", 10, 20, True),
        (":10", 0, 10, False),
        ("-5:-1", -5, -1, False),
        ("0.5:1.25", 0.5, 1.25, False),
        (" 7 ", 0, 7, False),
        ("~:", -INF, INF, False),
        ("@5", 0, 5, True),
    ],
)
def test_range_forms_parse(text, start, end, inside):
    """Every range form of the guidelines parses to its start, end and inside flag."""
    assert Range.parse(text) == Range(start, end, inside)


@pytest.mark.parametrize(
    ("text", "alerting", "quiet"),
    [
        ("10", [-1, 10.5, 11, 1000], [0, 5, 10]),
        ("10:", [-1, 0, 9.99], [10, 11, 1e9]),
        ("~:10", [10.01, 11], [-1e9, 0, 10]),
        ("10:20", [9, 21, -3], [10, 15, 20]),
        ("@10:20", [10, 15, 20], [9.9, 20.1, 0]),
    ],
)
def test_range_alerting_follows_the_guidelines(text, alerting, quiet):
    """A range alerts outside its interval (inside with @), its ends included in the interval."""
    parsed = Range.parse(text)
    assert [v for v in alerting if parsed.alerts(v)] == alerting
    assert [v for v in quiet if parsed.alerts(v)] == []


@pytest.mark.parametrize(
    "text",
    ["", "@", "abc", "10:5", "1e3", "inf", "nan", "1:2:3", "~", "--5", "10::", "1_000", "@:x"],
)
def test_bad_ranges_are_refused_with_the_text(text):
    """A range that is empty, not a number, or backwards raises InputError quoting it."""
    with pytest.raises(InputError, match="bad threshold range"):
        Range.parse(text)


@pytest.mark.parametrize(
    "text", ["10", "10:", "~:10", "10:20", "@10:20", "-5:-1", "0.5:1.25", "~:", "@5"]
)
def test_range_text_round_trips(text):
    """The canonical text of a parsed range parses back to the same range."""
    parsed = Range.parse(text)
    assert Range.parse(str(parsed)) == parsed
    assert str(parsed) == text


def test_threshold_critical_wins_over_warning():
    """A value in both alert ranges is CRITICAL; in the warning range only, WARNING."""
    threshold = Threshold(warn=Range.parse("10"), crit=Range.parse("20"))
    assert threshold.state(5) is State.OK
    assert threshold.state(15) is State.WARNING
    assert threshold.state(25) is State.CRITICAL
    assert Threshold().state(1e12) is State.OK


def test_threshold_options_parse_and_reject():
    """NAME=RANGE parses, NAME= clears, and unknown names or missing '=' are InputError."""
    assert parse_threshold_option("queue=5:", NAMES) == ("queue", Range(5))
    assert parse_threshold_option("sync_age=", NAMES) == ("sync_age", None)
    for bad, message in [
        ("nonsense", "expected NAME=RANGE"),
        ("=10", "expected NAME=RANGE"),
        ("load=10", "unknown name 'load'"),
        ("queue=x", "bad threshold range"),
    ]:
        with pytest.raises(InputError, match=message):
            parse_threshold_option(bad, NAMES)


def test_command_line_thresholds_override_defaults_per_level():
    """-w replaces only the warning range of its name, the last one wins, NAME= removes it."""
    defaults = {"queue": Threshold(Range(3), Range(7)), "sync_age": Threshold(Range(9), Range(30))}
    merged = merge_thresholds(
        defaults,
        warn=[("queue", Range(1)), ("queue", Range(2)), ("sync_age", None)],
        crit=[("mem_available", Range(100))],
    )
    assert merged["queue"] == Threshold(Range(2), Range(7))
    assert merged["sync_age"] == Threshold(None, Range(30))
    assert merged["mem_available"] == Threshold(None, Range(100))


# --- perfdata and the status line -------------------------------------------------------------


@pytest.mark.parametrize(
    ("datum", "text"),
    [
        (PerfDatum("queue", 3), "'queue'=3"),
        (PerfDatum("sync_age", 12.0, "s", minimum=0), "'sync_age'=12s;;;0"),
        (
            PerfDatum("mem", 1234.5678, "MB", Threshold(Range(400), Range(200)), 0, 24000),
            "'mem'=1234.568MB;400:;200:;0;24000",
        ),
        (PerfDatum("x", 0.1 + 0.2), "'x'=0.3"),
        (PerfDatum("x", -0.0001), "'x'=0"),
        (PerfDatum("x", None, "s", Threshold(Range(5))), "'x'=U;5:"),
        (PerfDatum("x", math.nan), "'x'=U"),
        (PerfDatum("with space", 1), "'with space'=1"),
        (PerfDatum("it's", 1), "'it''s'=1"),
        (PerfDatum("big", 12345678901.0, "B"), "'big'=12345678901B"),
        (PerfDatum("q", 1, "", Threshold(None, Range.parse("@1:2"))), "'q'=1;;@1:2"),
    ],
)
def test_perfdata_format(datum, text):
    """Labels are quoted (quotes doubled), numbers have no exponent, empty tails are dropped."""
    assert str(datum) == text


def test_perfdata_refuses_what_parsers_cannot_read():
    """A label with '=', an empty label or an unknown unit is a programming error."""
    for kwargs in ({"label": "a=b", "value": 1}, {"label": "", "value": 1}):
        with pytest.raises(ValueError, match="label"):
            PerfDatum(**kwargs)
    with pytest.raises(ValueError, match="unit"):
        PerfDatum("x", 1, "MiB")


def test_worst_state_ranks_unknown_below_warning():
    """CRITICAL > WARNING > UNKNOWN > OK, and no states at all is OK."""
    assert worst([State.OK, State.UNKNOWN]) is State.UNKNOWN
    assert worst([State.UNKNOWN, State.WARNING]) is State.WARNING
    assert worst([State.WARNING, State.CRITICAL, State.UNKNOWN]) is State.CRITICAL
    assert worst([]) is State.OK


def test_status_line_orders_worst_first_and_dedupes_by_subject():
    """Problems come before notes, worst first; a subject appears once, at its worst."""
    findings = [
        StatusNote(State.OK, "generator", "generator g (loaded)"),
        StatusNote(State.WARNING, "sync", "sync old"),
        StatusNote(State.CRITICAL, "generator", "generator backend down"),
        StatusNote(State.CRITICAL, "generator", "a second critical for the same thing"),
        StatusNote(State.OK, "store", "3 chunks"),
    ]
    state, line = status_line("SVC", findings, [PerfDatum("a", 1), PerfDatum("b", 2, "s")])
    assert state is State.CRITICAL
    assert line == "SVC CRITICAL - generator backend down; sync old; 3 chunks | 'a'=1 'b'=2s"


def test_status_line_is_one_line_without_stray_pipes():
    """Newlines and '|' in a message cannot break the output format."""
    state, line = status_line("SVC", [StatusNote(State.WARNING, "x", "a | b\nc")])
    assert state is State.WARNING
    assert line == "SVC WARNING - a / b c"
    assert status_line("SVC", [])[1] == "SVC OK - no findings"


# --- the judgement of `ragvisor health` -------------------------------------------------------

LANE = {
    "active": 0,
    "waiting": 0,
    "max_concurrent": 1,
    "max_queue": 8,
    "service_time_s": 1.5,
    "admitted": 3,
    "rejected": 0,
}
STATUS: dict[str, Any] = {
    "version": "0.1.0",
    "pid": 1234,
    "uptime_s": 4000.0,
    "ready": True,
    "lanes": {
        "search": {**LANE, "max_concurrent": 4, "max_queue": 64},
        "ask": dict(LANE),
        "sync": {**LANE, "max_queue": 0},
    },
    "backends": {
        "generator": {
            "kind": "embedded",
            "url": "http://127.0.0.1:40123",
            "model": "gemma3-270m",
            "num_ctx": 1024,
            "breaker": {
                "state": "closed",
                "consecutive_failures": 0,
                "opened": 0,
                "retry_in_s": None,
            },
            "ladder": {
                "running": False,
                "last_step": None,
                "restarts_last_hour": 0,
                "restart_budget_per_hour": 4,
            },
        },
        "embedder": {"kind": "onnx", "model": "m", "url": None, "breaker": None, "ladder": None},
    },
    "memory": {
        "level": "ok",
        "reasons": [],
        "available_mb": 20000.0,
        "total_mb": 24000.0,
        "swap_total_mb": 0.0,
        "swap_used_mb": 0.0,
        "swap_in_mb_s": 0.0,
        "swap_out_mb_s": 0.0,
        "psi_some_avg10": 0.0,
        "psi_full_avg10": 0.0,
        "rss_mb": {"daemon": 210.0, "worker": 96.0},
        "sampled_at": "2026-11-30T04:00:00Z",
        "interval_s": 5.0,
    },
    "sync": {
        "running": False,
        "trigger": "schedule",
        "started_at": 1764.0,
        "finished_at": 1764.5,
        "last_report": {"documents": {"new": 0, "unchanged": 3}, "skipped": [], "seconds": 0.5},
        "last_error": None,
        "last_success_at": 1764.5,
        "last_sync_age_s": 12.0,
        "interval_s": 300.0,
    },
    "store": {"ok": True, "documents": 3, "chunks": 10, "vectors": 10},
}
READYZ = {
    "ready": True,
    "checks": {
        "embedder": {"ok": True, "model": "m"},
        "store": {"ok": True, "chunks": 10},
        "generator": {"ok": True, "model": "gemma3-270m", "url": "http://127.0.0.1:40123"},
    },
}
UP = BackendProbe("http://127.0.0.1:40123", "gemma3-270m", version="0.1.0", loaded=False)
SETTINGS = parse_settings({})


def observe(
    status: dict[str, Any] | None = None, readyz: dict[str, Any] | None = None, **kwargs: Any
) -> Observation:
    reply = DaemonReply(
        "http://127.0.0.1:8321",
        readyz=copy.deepcopy(READYZ) if readyz is None else readyz,
        status=copy.deepcopy(STATUS) if status is None else status,
    )
    return Observation(reply, **{"backend": UP, "elapsed_s": 0.05, **kwargs})


def judge(obs: Observation, warn=(), crit=()) -> tuple[State, str]:
    thresholds = merge_thresholds(default_thresholds(SETTINGS, obs.daemon.status), warn, crit)
    explicit = {name for name, value in (*warn, *crit) if value is not None}
    return verdict(obs, thresholds, explicit)


def changed(path: str, value: Any) -> dict[str, Any]:
    """STATUS with one nested key (dotted path) replaced."""
    status = copy.deepcopy(STATUS)
    *parents, last = path.split(".")
    node = status
    for key in parents:
        node = node[key]
    node[last] = value
    return status


def test_healthy_daemon_is_ok_with_its_perfdata():
    """All checks pass: OK, the model named as not loaded, perfdata with default thresholds."""
    state, line = judge(observe())
    assert state is State.OK
    text, perf = line.split(" | ")
    assert text == (
        "RAGVISOR OK - generator gemma3-270m (not loaded); last sync 12 s ago; "
        "10 chunks in 3 documents"
    )
    assert perf.split() == [
        "'sync_age'=12s;900;3000;0",
        "'queue'=0;3;7;0;72",
        "'mem_available'=20000MB;400:;200:;0;24000",
        "'rss_daemon'=210MB;;;0",
        "'rss_worker'=96MB;;;0",
        "'breaker_generator'=0;;;0;2",
        "'generator_loaded'=0;;;0;1",
        "'time'=0.05s;;;0",
    ]


def test_default_thresholds_follow_the_configuration_without_status():
    """Without /status the config gives them: 3x/10x the sync interval, ask queue 50 %/90 %."""
    settings = parse_settings(
        {
            "sync": {"interval_s": 60},
            "admission": {"ask": {"max_queue": 10}},
            "memory": {"low_available_mb": 500, "critical_available_mb": 0},
        }
    )
    thresholds = default_thresholds(settings, None)
    assert thresholds["sync_age"] == Threshold(Range(0, 180), Range(0, 600))
    assert thresholds["queue"] == Threshold(Range(0, 4), Range(0, 8))  # warn at 5, crit at 9
    assert thresholds["mem_available"] == Threshold(Range(500), None)
    off = default_thresholds(parse_settings({"sync": {"interval_s": 0}}), changed("sync.x", 1))
    assert off["sync_age"] == Threshold(Range(0, 900), Range(0, 3000))  # /status's interval wins
    off = default_thresholds(parse_settings({"sync": {"interval_s": 0}}), None)
    assert off["sync_age"] == Threshold()


def test_stale_sync_is_a_warning_then_critical():
    """A sync older than 3 intervals warns, older than 10 is critical."""
    state, line = judge(observe(changed("sync.last_sync_age_s", 1000.0)))
    assert state is State.WARNING
    assert line.startswith("RAGVISOR WARNING - last sync 1000 s ago (warning threshold 900); ")
    assert "'sync_age'=1000s;900;3000;0" in line
    state, line = judge(observe(changed("sync.last_sync_age_s", 3001.0)))
    assert state is State.CRITICAL
    assert "(critical threshold 3000)" in line


def test_command_line_threshold_makes_a_fresh_sync_stale():
    """-w sync_age=0 warns about a sync 12 s old and shows the range in the perfdata."""
    state, line = judge(observe(), warn=[("sync_age", Range(0, 0))])
    assert state is State.WARNING
    assert "last sync 12 s ago (warning threshold 0)" in line
    assert "'sync_age'=12s;0;3000;0" in line


def test_never_synced_is_judged_on_uptime_and_graphed_as_unknown():
    """No successful sync yet: the age is at least the uptime; the perfdata value is U."""
    status = changed("sync.last_sync_age_s", None)
    status["uptime_s"] = 2000.0
    state, line = judge(observe(status))
    assert state is State.WARNING  # 2000 s uptime > 900
    assert "no successful sync in the daemon's 2000 s uptime (warning threshold 900)" in line
    assert "'sync_age'=U;900;3000;0" in line


def test_backend_down_is_critical_and_named_first():
    """/api/version failing is CRITICAL "generator backend down", before every other text."""
    down = BackendProbe(UP.url, UP.model, error="cannot connect to the generator")
    readyz = copy.deepcopy(READYZ)
    readyz["ready"] = False
    readyz["checks"]["generator"].update(ok=False, error="cannot connect")
    state, line = judge(observe(changed("sync.last_sync_age_s", 1000.0), readyz, backend=down))
    assert state is State.CRITICAL
    assert line.startswith(
        "RAGVISOR CRITICAL - generator backend down (http://127.0.0.1:40123: cannot connect "
        "to the generator); last sync 1000 s ago"
    )
    assert line.count("generator backend down") == 1
    assert "generator_loaded" not in line


def test_daemon_down_is_critical_with_timing_only():
    """An unreachable daemon is CRITICAL with its error; only the check time is graphed."""
    reply = DaemonReply("http://127.0.0.1:9", error="daemon unreachable at http://127.0.0.1:9")
    state, line = verdict(Observation(reply, elapsed_s=0.002), {})
    assert state is State.CRITICAL
    assert line == (
        "RAGVISOR CRITICAL - daemon unreachable at http://127.0.0.1:9 | 'time'=0.002s;;;0"
    )


@pytest.mark.parametrize(
    ("check", "text"),
    [
        ("store", "store not reachable (database is locked)"),
        ("embedder", "embedder not ready (database is locked)"),
    ],
)
def test_failed_readiness_check_is_critical_and_named(check, text):
    """/readyz naming a failed check makes the plugin CRITICAL with that check's error."""
    readyz = copy.deepcopy(READYZ)
    readyz["ready"] = False
    readyz["checks"][check] = {"ok": False, "error": "database is locked"}
    state, line = judge(observe(readyz=readyz))
    assert state is State.CRITICAL
    assert line.startswith(f"RAGVISOR CRITICAL - {text}; ")


@pytest.mark.parametrize(
    ("worker", "state"),
    [
        ({"state": "starting", "restarts": 0, "last_exit": None}, State.WARNING),
        ({"state": "starting", "restarts": 2, "last_exit": -9}, State.CRITICAL),
        ({"state": "restarting", "restarts": 0, "last_exit": 1}, State.CRITICAL),
    ],
)
def test_a_worker_on_its_first_start_warns_a_respawning_one_is_critical(worker, state):
    """The daemon serves /search while its worker starts (a second): WARNING "generator
    starting"; a worker respawning after a crash is CRITICAL, as the backend being down."""
    readyz = copy.deepcopy(READYZ)
    readyz["ready"] = False
    readyz["checks"]["generator"].update(
        ok=False, error=f"the worker is {worker['state']}", worker=worker
    )
    got, line = judge(observe(readyz=readyz))
    assert got is state, line
    if state is State.WARNING:
        assert "generator starting (the worker is starting)" in line
        assert "daemon not ready" not in line


@pytest.mark.parametrize(
    ("level", "state", "available"),
    [("critical", State.CRITICAL, 150), ("pressure", State.WARNING, 350)],
)
def test_memory_level_sets_the_state(level, state, available):
    """The memory guard's level maps to CRITICAL (critical) or WARNING (pressure); the
    mem_available threshold crossed for the same cause is not repeated."""
    status = changed("memory.level", level)
    status["memory"].update(reasons=["swap-in 9.0 MB/s"], available_mb=available)
    found, line = judge(observe(status))
    assert found is state
    assert f"memory {level} (swap-in 9.0 MB/s)" in line
    assert "MB available" not in line
    assert f"'mem_available'={available}MB;400:;200:;0;24000" in line


def test_low_available_memory_crosses_the_configured_floors():
    """mem_available below memory.low_available_mb warns, below critical_available_mb is
    critical."""
    assert judge(observe(changed("memory.available_mb", 300.0)))[0] is State.WARNING
    state, line = judge(observe(changed("memory.available_mb", 150.0)))
    assert state is State.CRITICAL
    assert "150 MB available (critical threshold 200:)" in line


def test_open_breaker_is_a_warning():
    """An open breaker degrades /ask but is not an outage: WARNING, with the retry time."""
    status = copy.deepcopy(STATUS)
    status["backends"]["generator"]["breaker"].update(state="open", retry_in_s=14.2)
    state, line = judge(observe(status))
    assert state is State.WARNING
    assert "generator breaker open, retry in 14 s" in line
    assert "'breaker_generator'=2;;;0;2" in line


def test_spent_restart_budget_and_running_ladder_warn():
    """A recovery ladder at work, or one out of restarts, is a WARNING."""
    status = copy.deepcopy(STATUS)
    status["backends"]["generator"]["ladder"].update(
        running=True, last_step={"step": "unload"}, restarts_last_hour=4
    )
    state, line = judge(observe(status))
    assert state is State.WARNING
    assert "generator recovery ladder at unload" in line
    assert "generator restart budget spent (4/4 this hour)" in line


def test_queue_near_the_ask_lane_limit():
    """Waiting requests across lanes are compared with the ask lane's 50 %/90 % marks."""
    status = copy.deepcopy(STATUS)
    status["lanes"]["ask"]["waiting"] = 4
    assert judge(observe(status))[0] is State.WARNING
    status["lanes"]["search"]["waiting"] = 4
    state, line = judge(observe(status))
    assert state is State.CRITICAL
    assert "8 requests waiting (critical threshold 7)" in line


def test_failed_last_sync_is_a_warning():
    """A sync that ended in an error is reported even while the data is fresh."""
    state, line = judge(observe(changed("sync.last_error", "disk full")))
    assert state is State.WARNING
    assert "last sync failed: disk full" in line


def test_syncs_failing_in_a_row_warn_with_the_count_from_status_and_readiness():
    """A failing streak is one WARNING naming its length, whether /status or /readyz tells it."""
    status = changed("sync.last_error", "StoreError: database is locked")
    status["sync"]["consecutive_failures"] = 3
    readyz = copy.deepcopy(READYZ)
    readyz["checks"]["sync"] = {
        "ok": False,
        "required": False,
        "consecutive_failures": 3,
        "error": "StoreError: database is locked",
    }
    for obs in (observe(status, readyz), observe(status), observe(readyz=readyz)):
        state, line = judge(obs)
        assert state is State.WARNING, line
        assert line.startswith("RAGVISOR WARNING - last 3 syncs failed: StoreError: database is ")
        assert line.count("syncs failed") == 1


def test_cancelled_sync_is_not_a_failure():
    """A last_error with no failure streak (a sync cancelled at shutdown) does not warn."""
    status = changed("sync.last_error", "sync cancelled after 3 of 9 embeddings")
    status["sync"]["consecutive_failures"] = 0
    assert judge(observe(status))[0] is State.OK


def test_older_daemon_without_status_is_judged_on_readiness():
    """No /status: OK on readiness alone, with a note; an explicit threshold is UNKNOWN."""
    reply = DaemonReply(
        "http://x",
        readyz=copy.deepcopy(READYZ),
        status=None,
        notes=("daemon has no /status (older than this command): showing readiness only",),
    )
    obs = Observation(reply, backend=UP, elapsed_s=0.01)
    state, line = judge(obs)
    assert state is State.OK
    assert "generator gemma3-270m (not loaded)" in line
    assert "daemon has no /status" in line
    state, line = judge(obs, warn=[("queue", Range(5))])
    assert state is State.UNKNOWN
    assert "cannot check queue: the daemon does not report it" in line


def test_missing_sections_are_notes_not_crashes():
    """A /status with odd or absent sections still produces a verdict."""
    status = {"version": "0.0.9", "lanes": "weird", "memory": {"level": "unknown"}, "sync": None}
    state, line = judge(observe(status))
    assert state is State.OK
    assert "memory not measured" in line


def test_generator_off_and_target_discovery():
    """The backend comes from /status (with its num_ctx), then /readyz, then the config."""
    worker = "http://127.0.0.1:40123"
    reply = DaemonReply("u", readyz=READYZ, status=STATUS)
    assert generator_target(reply, SETTINGS) == Target(worker, "gemma3-270m", 1024)
    older = DaemonReply("u", readyz=READYZ)
    assert generator_target(older, SETTINGS) == Target(worker, "gemma3-270m", 2048)
    silent = DaemonReply("u")
    assert generator_target(silent, SETTINGS) == Target(
        "http://127.0.0.1:11434", "gemma3-270m", 2048
    )
    for off in (
        changed("backends.generator", {"kind": "none", "url": None, "model": None}),
        changed("backends.generator", None),
    ):
        assert generator_target(DaemonReply("u", readyz=READYZ, status=off), SETTINGS) is None
    readyz_without = {"ready": True, "checks": {"store": {"ok": True}}}
    assert generator_target(DaemonReply("u", readyz=readyz_without), SETTINGS) is None
    obs = Observation(DaemonReply("u", readyz=READYZ, status=STATUS), has_generator=False)
    assert "generator off" in judge(obs)[1]


def test_store_unreachable_in_status_is_critical():
    """/status reporting the store unreadable is CRITICAL "store not reachable"."""
    state, line = judge(observe(changed("store", {"ok": False, "error": "disk I/O error"})))
    assert state is State.CRITICAL
    assert line.startswith("RAGVISOR CRITICAL - store not reachable (disk I/O error)")


@pytest.mark.parametrize(
    ("memory", "text"),
    [
        ({"level": "disabled"}, "memory guard off"),
        ({"level": "unknown"}, "memory not measured yet"),
        ({"level": "unknown", "probe_error": "no /proc"}, "memory not measured (no /proc)"),
    ],
)
def test_unmeasured_memory_is_a_note(memory, text):
    """A disabled or not yet sampled memory guard is said, not alerted on."""
    state, line = judge(observe(changed("memory", memory)))
    assert state is State.OK
    assert text in line
    assert "mem_available" not in line


def test_deep_results_are_reported_and_graphed():
    """--deep adds the search and generation results; a failed generation is CRITICAL."""
    deep = DeepProbe(search_s=0.012, search_hits=1, generate_s=1.5)
    state, line = judge(observe(deep=deep))
    assert state is State.OK
    assert "search ok (1 hit in 12 ms); generated 1 token in 1.50 s" in line
    assert "'search_time'=0.012s;;;0 'generate_time'=1.5s;;;0" in line
    failed = DeepProbe(search_s=0.01, search_hits=0, generate_error="out of memory")
    state, line = judge(observe(deep=failed))
    assert state is State.CRITICAL
    assert line.startswith("RAGVISOR CRITICAL - one-token generation failed (out of memory)")


def test_spent_timeout_is_unknown():
    """A step skipped because --timeout ran out is UNKNOWN, not a component failure."""
    state, line = judge(observe(backend=None, out_of_time=("generator backend",)))
    assert state is State.UNKNOWN
    assert "generator backend not checked: --timeout spent" in line


def test_assess_returns_findings_and_perfdata_separately():
    """assess gives the raw findings (for other front ends) and the perfdata list."""
    found, perf = assess(observe(), default_thresholds(SETTINGS, STATUS))
    assert {f.subject for f in found} >= {"generator", "sync_age", "store"}
    assert [p.label for p in perf][:3] == ["sync_age", "queue", "mem_available"]


# --- the command line ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-w", "nonsense"], "RAGVISOR UNKNOWN - bad threshold 'nonsense': expected NAME=RANGE"),
        (["-c", "queue=9:1"], "RAGVISOR UNKNOWN - bad threshold range '9:1'"),
        (["--timeout", "soon"], "RAGVISOR UNKNOWN - bad arguments: argument -t/--timeout"),
        (["--timeout", "-1"], "RAGVISOR UNKNOWN - bad arguments: argument -t/--timeout"),
        (["--warning"], "RAGVISOR UNKNOWN - bad arguments: argument -w/--warning"),
    ],
)
def test_bad_arguments_exit_unknown(argv, message, capsys):
    """Usage mistakes exit 3 (UNKNOWN) with a status line on stdout, never argparse's 2."""
    try:
        code = cli_main(["health", "--url", "http://127.0.0.1:9", *argv])
    except SystemExit as exc:
        code = exc.code
    assert code == 3
    out = capsys.readouterr().out
    assert out.startswith(message)
    assert out.count("\n") == 1


def test_bad_config_is_unknown(tmp_path, capsys):
    """An invalid configuration file is the plugin's own failure: UNKNOWN, naming the key."""
    config = tmp_path / "bad.toml"
    config.write_text("[sync]\ninterval_s = -1\n")
    assert cli_main(["health", "--config", str(config), "--url", "http://127.0.0.1:9"]) == 3
    assert "sync.interval_s" in capsys.readouterr().out


# --- ragvisor status rendering ---------------------------------------------------------------


def test_status_table_has_every_section():
    """The table shows each section with the values a person looks for."""
    text = render_status(DaemonReply("http://127.0.0.1:8321", readyz=READYZ, status=STATUS))
    for heading in ("daemon", "lanes", "backends", "memory", "sync", "store"):
        assert f"\n{heading}\n" in f"\n{text}"
    assert "ready    yes (embedder ok, store ok, generator ok)" in text
    assert "uptime   1h 06m" in text
    assert "20000 MB of 24000 MB" in text
    assert "last success  12.0 s ago" in text
    assert "closed" in text
    assert "4/4" not in text
    assert "0/4 restarts this hour" in text


def test_status_table_shows_the_lease_and_a_migrations_progress():
    """During a model change on a shared store: who holds the sync lease, which model serves,
    and how many chunks the new model has embedded."""
    status = copy.deepcopy(STATUS)
    status["sync"]["lease"] = {"holder": "box-2:4242", "mine": False, "expires_in_s": 21.4}
    status["store"]["generations"] = {
        "active": {"fingerprint": "sha256:aaaa/384", "model": "minilm"},
        "building": {"fingerprint": "sha256:bbbb/768", "model": "nomic-embed-text"},
        "serving": "sha256:aaaa/384",
        "migration": {"chunks_done": 1200, "chunks_total": 4800, "ratio": 0.25},
    }
    text = render_status(DaemonReply("u", readyz=READYZ, status=status))
    assert "lease         box-2:4242, 21 s left" in text
    assert "model         minilm (sha256:aaaa/384)" in text
    assert (
        "migrating to  nomic-embed-text (sha256:bbbb/768): 1200 of 4800 chunks embedded (25 %)"
        in text
    )


@pytest.mark.parametrize(
    ("counts", "line"),
    [
        (
            {"running": False, "counted": 1170, "pruned": 3, "finished_at": 1.0,
             "duration_ms": 1307.6, "counter": "gguf-sha256:a5fd"},
            "token counts  last pass counted 1170, pruned 3 in 1308 ms",
        ),
        ({"running": True}, "token counts  counting now"),
        ({"running": False}, "token counts  not run yet (after the next sync"),
    ],
)  # fmt: skip
def test_status_table_shows_the_token_count_jobs_last_pass(counts, line):
    """`sync.token_counts` (ask.stored_token_counts) reads as one line; absent, no line."""
    status = copy.deepcopy(STATUS)
    status["sync"]["token_counts"] = counts
    assert line in render_status(DaemonReply("u", readyz=READYZ, status=status))
    status["sync"]["token_counts"] = None
    assert "token counts" not in render_status(DaemonReply("u", readyz=READYZ, status=status))


def test_status_table_counts_every_skip_not_only_the_listed_ones():
    """The report lists the first SKIPPED_LISTED_MAX skips and counts all in `skipped_count`:
    the table says the count, so 5,000 skipped files do not read as 100."""
    status = copy.deepcopy(STATUS)
    listed = [{"path": f"/notes/{i}.md", "reason": "not UTF-8"} for i in range(100)]
    status["sync"]["last_report"].update(skipped=listed, skipped_count=5000)
    assert "skipped 5000;" in render_status(DaemonReply("u", readyz=READYZ, status=status))


def test_status_table_survives_missing_sections():
    """An older daemon (readiness only) and a sparse /status both render, saying what is
    missing."""
    text = render_status(DaemonReply("u", readyz=READYZ, notes=("daemon has no /status",)))
    assert "note: daemon has no /status" in text
    assert "chunks" in text  # the store counts from /readyz
    text = render_status(DaemonReply("u", readyz=None, status={"lanes": {}, "memory": None}))
    assert "(not reported)" in text


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("127.0.0.1", "http://127.0.0.1:8321"),
        ("0.0.0.0", "http://127.0.0.1:8321"),
        ("::", "http://[::1]:8321"),
        ("fe80::1", "http://[fe80::1]:8321"),
        ("box.lan", "http://box.lan:8321"),
    ],
)
def test_default_url_reaches_a_wildcard_listener_on_loopback(host, url):
    """server.host 0.0.0.0 or :: is reached on loopback; IPv6 literals are bracketed."""
    assert default_url(host, 8321) == url
