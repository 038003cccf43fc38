"""The memory guard: thresholds, hysteresis, actions under pressure, the pre-load check, metrics,
logs and scheduling, driven by a ScriptedProbe (no real memory pressure needed)."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest
import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from structlog.testing import capture_logs

from ragvisor.config import MemorySettings
from ragvisor.metrics import Metrics
from ragvisor.supervise.memory import (
    MB,
    Assessment,
    LevelState,
    MemoryGuard,
    MemoryLevel,
    apply_overrides,
    assess,
    next_level,
    parse_psi,
    schedule_memory_guard,
    synthetic_sample,
)
from ragvisor.testing import ScriptedProbe

T = TypeVar("T")
SETTINGS = MemorySettings()  # low 400 MB, critical 200 MB, swap-in 4 MB/s, PSI 40, headroom 256


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on a fresh loop, bounded so that no test can hang."""
    return asyncio.run(asyncio.wait_for(coro, timeout=20))


def settings(**values: Any) -> MemorySettings:
    return MemorySettings.model_validate(values)


class RecordingActions:
    """GuardActions that record their calls and free memory on the scripted probe."""

    def __init__(
        self,
        probe: ScriptedProbe,
        *,
        generator_frees_mb: float | None = 600,
        embedder_frees_mb: float | None = 300,
        fail_generator: bool = False,
    ) -> None:
        self.probe = probe
        self.frees = {"generator": generator_frees_mb, "embedder": embedder_frees_mb}
        self.fail_generator = fail_generator
        self.calls: list[str] = []

    def _unload(self, which: str) -> bool:
        self.calls.append(which)
        freed = self.frees[which]
        if freed is None:  # nothing loaded (or busy): nothing to unload
            return False
        available = self.probe.current.available_bytes / MB
        self.probe.set(available_mb=available + freed)
        self.frees[which] = None  # unloaded once; the next call finds it gone
        return True

    async def unload_idle_generator(self) -> bool:
        if self.fail_generator:
            self.calls.append("generator")
            raise RuntimeError("unload endpoint answered 500")
        return self._unload("generator")

    async def unload_idle_embedder(self) -> bool:
        return self._unload("embedder")


def events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [entry for entry in logs if entry["event"] == name]


def metric(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels or None)


# --------------------------------------------------------------------------- assess()


def test_calm_box_is_ok_with_no_reasons():
    """A box with plenty available, no swapping and low PSI is OK and gives no reason."""
    sample = synthetic_sample(available_mb=2000, swap_in_mb_s=0.0, psi_some_avg10=1.0)
    assert assess(sample, SETTINGS) == Assessment(MemoryLevel.OK, ())


@pytest.mark.parametrize(
    ("available_mb", "level", "key"),
    [
        (401, MemoryLevel.OK, None),
        (399, MemoryLevel.PRESSURE, "memory.low_available_mb 400"),
        (201, MemoryLevel.PRESSURE, "memory.low_available_mb 400"),
        (199, MemoryLevel.CRITICAL, "memory.critical_available_mb 200"),
    ],
)
def test_available_memory_sets_the_level_and_names_the_key(available_mb, level, key):
    """Available below low_available_mb is pressure, below critical_available_mb critical."""
    result = assess(synthetic_sample(available_mb=available_mb), SETTINGS)
    assert result.level is level
    if key is None:
        assert result.reasons == ()
    else:
        assert result.reasons == (f"available {available_mb} MB < {key}",)


@pytest.mark.parametrize(
    ("rate", "mark", "level"),
    [(4.5, 4.0, MemoryLevel.PRESSURE), (4.0, 4.0, MemoryLevel.OK), (50.0, 0.0, MemoryLevel.OK)],
)
def test_swap_in_rate_above_its_mark_is_pressure_and_zero_turns_it_off(rate, mark, level):
    """Swap-in faster than swap_in_mb_s is pressure even with memory available; 0 disables."""
    result = assess(synthetic_sample(swap_in_mb_s=rate), settings(swap_in_mb_s=mark))
    assert result.level is level
    if level is MemoryLevel.PRESSURE:
        assert result.reasons == (f"swap-in {rate:.1f} MB/s > memory.swap_in_mb_s {mark:g}",)


def test_unknown_rates_and_psi_never_raise_the_level():
    """A first sample (no rate yet) on a kernel without PSI is judged on available memory only."""
    sample = synthetic_sample(swap_in_mb_s=None, psi_some_avg10=None)
    assert assess(sample, SETTINGS).level is MemoryLevel.OK


@pytest.mark.parametrize(
    ("psi", "mark", "level"),
    [(41.0, 40.0, MemoryLevel.PRESSURE), (40.0, 40.0, MemoryLevel.OK), (99.0, 0.0, MemoryLevel.OK)],
)
def test_psi_above_its_mark_is_pressure_and_zero_turns_it_off(psi, mark, level):
    """PSI some avg10 above psi_some_avg10 is pressure; 0 disables the rule."""
    result = assess(synthetic_sample(psi_some_avg10=psi), settings(psi_some_avg10=mark))
    assert result.level is level
    if level is MemoryLevel.PRESSURE:
        assert result.reasons == (f"PSI some avg10 {psi:.1f} > memory.psi_some_avg10 {mark:g}",)


def test_watched_rss_over_the_budget_is_pressure_and_names_each_process():
    """The RSS of daemon, worker, Ollama and Neo4j together above budget_mb is pressure."""
    sample = synthetic_sample(rss_mb={"daemon": 250, "ollama": 2000, "neo4j": 800})
    result = assess(sample, settings(budget_mb=3000))
    assert result.level is MemoryLevel.PRESSURE
    assert result.reasons == (
        "watched RSS 3050 MB (daemon 250, ollama 2000, neo4j 800) > memory.budget_mb 3000",
    )
    assert assess(sample, settings(budget_mb=0)).level is MemoryLevel.OK
    assert assess(sample, settings(budget_mb=3100)).level is MemoryLevel.OK


def test_every_crossed_mark_is_a_reason_and_critical_wins():
    """Several crossed marks give several reasons; the level is the worst of them."""
    sample = synthetic_sample(available_mb=150, swap_in_mb_s=9.0, psi_some_avg10=70.0)
    result = assess(sample, SETTINGS)
    assert result.level is MemoryLevel.CRITICAL
    assert [reason.split(" > ")[-1].split(" < ")[-1] for reason in result.reasons] == [
        "memory.critical_available_mb 200",
        "memory.swap_in_mb_s 4",
        "memory.psi_some_avg10 40",
    ]


def test_margin_widens_the_available_marks_and_narrows_the_budget():
    """With a recovery margin, 450 MB available is still pressure and 2950 MB RSS over 3000."""
    roomy = synthetic_sample(available_mb=450)
    assert assess(roomy, SETTINGS).level is MemoryLevel.OK
    held = assess(roomy, SETTINGS, margin_mb=100)
    assert held.level is MemoryLevel.PRESSURE
    assert held.reasons == ("available 450 MB < memory.low_available_mb 400 + recovery margin 100",)
    heavy = synthetic_sample(rss_mb={"ollama": 2950})
    assert assess(heavy, settings(budget_mb=3000), margin_mb=100).level is MemoryLevel.PRESSURE


# --------------------------------------------------------------------------- pure helpers


def test_next_level_rises_at_once_and_falls_after_calm_checks():
    """The level rises on one sample and falls only after `recover_checks` calm ones in a row."""
    ok, pressure, critical = MemoryLevel.OK, MemoryLevel.PRESSURE, MemoryLevel.CRITICAL
    state = next_level(LevelState(), critical, critical, recover_checks=3)
    assert state == LevelState(critical, 0)
    state = next_level(state, ok, ok, recover_checks=3)
    state = next_level(state, ok, ok, recover_checks=3)
    assert state == LevelState(critical, 2)
    state = next_level(state, ok, critical, recover_checks=3)  # within the margin: not calm
    assert state == LevelState(critical, 0)
    for _ in range(3):
        state = next_level(state, ok, pressure, recover_checks=3)
    assert state == LevelState(pressure, 0)


def test_parse_psi_reads_some_and_full_avg10():
    """The avg10 figures of both PSI lines are read; a malformed text gives None."""
    text = (
        "some avg10=12.50 avg60=3.00 avg300=0.80 total=123456\n"
        "full avg10=4.25 avg60=1.00 avg300=0.20 total=65432\n"
    )
    assert parse_psi(text) == (12.5, 4.25)
    assert parse_psi("some avg10=oops\n") == (None, None)
    assert parse_psi("") == (None, None)


def test_overrides_replace_readings_and_merge_rss():
    """MB overrides replace fields; rss_mb merges, and a null removes a process."""
    base = synthetic_sample(rss_mb={"daemon": 200, "ollama": 1000})
    changed = apply_overrides(
        base,
        {
            "available_mb": 300,
            "swap_in_mb_s": 6.5,
            "psi_some_avg10": None,
            "rss_mb": {"ollama": None, "neo4j": 700},
        },
    )
    assert changed.available_bytes == 300 * MB
    assert changed.swap_in_bytes_per_s == 6.5 * MB
    assert changed.psi_some_avg10 is None
    assert changed.rss_bytes == {"daemon": 200 * MB, "neo4j": 700 * MB}
    assert changed.total_bytes == base.total_bytes


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"available": 300}, "unknown keys ['available']"),
        ({"available_mb": "300"}, "available_mb: expected a number >= 0"),
        ({"available_mb": None}, "available_mb: expected a number >= 0"),
        ({"rss_mb": {"ollama": -1}}, "rss_mb.ollama: expected a number >= 0 or null"),
        ({"rss_mb": [1]}, "rss_mb: expected a table"),
    ],
)
def test_bad_overrides_are_refused_with_the_key(overrides, message):
    """A typo or a bad value in an override is an error naming the key, never ignored."""
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        apply_overrides(synthetic_sample(), overrides)


# --------------------------------------------------------------------------- the guard


def test_level_changes_are_logged_with_their_reasons():
    """Each level change logs memory.level (from, to, reasons, readings); steady checks do not."""
    probe = ScriptedProbe(current=synthetic_sample(available_mb=2000, rss_mb={"daemon": 210}))
    guard = MemoryGuard(probe, SETTINGS, recover_checks=2)

    async def scenario() -> list[MemoryLevel]:
        seen = [(await guard.check()).level, (await guard.check()).level]
        probe.set(available_mb=350, swap_in_mb_s=1.0, psi_some_avg10=12.0)
        seen.append((await guard.check()).level)
        probe.set(available_mb=150)
        seen.append((await guard.check()).level)
        probe.set(available_mb=1500)
        seen += [(await guard.check()).level, (await guard.check()).level]
        return seen

    with capture_logs() as logs:
        levels = run(scenario())
    assert levels == ["ok", "ok", "pressure", "critical", "critical", "ok"]
    changes = events(logs, "memory.level")
    assert [(e["from"], e["to"], e["log_level"]) for e in changes] == [
        ("unknown", "ok", "info"),
        ("ok", "pressure", "warning"),
        ("pressure", "critical", "warning"),
        ("critical", "ok", "info"),
    ]
    pressure = changes[1]
    assert pressure["reasons"] == ["available 350 MB < memory.low_available_mb 400"]
    assert pressure["available_mb"] == 350.0
    assert pressure["swap_in_mb_s"] == 1.0
    assert pressure["psi_some_avg10"] == 12.0
    assert pressure["rss_mb"] == {"daemon": 210.0}
    assert pressure["component"] == "memory"


def test_a_held_level_says_why_it_is_held():
    """While recovering, the held level keeps a reason naming the calm checks counted so far."""
    probe = ScriptedProbe(current=synthetic_sample(available_mb=300))
    guard = MemoryGuard(probe, SETTINGS, recover_checks=3)
    run(guard.check())
    probe.set(available_mb=450)  # above low (400), inside the margin (500)
    held = run(guard.check())
    assert held.level is MemoryLevel.PRESSURE
    assert held.reasons[-1].startswith("holding pressure until 3 checks in a row clear the marks")
    assert "(0 so far)" in held.reasons[-1]


def test_actions_run_generator_first_and_embedder_only_if_still_short():
    """Under pressure the idle generator is unloaded; the embedder only if that was not enough."""
    probe = ScriptedProbe(current=synthetic_sample(available_mb=300))
    enough = RecordingActions(probe, generator_frees_mb=600)
    run(MemoryGuard(probe, SETTINGS, actions=enough).check())
    assert enough.calls == ["generator"]

    probe = ScriptedProbe(current=synthetic_sample(available_mb=150))
    too_little = RecordingActions(probe, generator_frees_mb=100)
    run(MemoryGuard(probe, SETTINGS, actions=too_little).check())
    assert too_little.calls == ["generator", "embedder"]
    assert probe.current.available_bytes == 550 * MB


def test_no_action_while_memory_is_fine():
    """A calm box never has its models unloaded."""
    probe = ScriptedProbe(current=synthetic_sample(available_mb=2000))
    actions = RecordingActions(probe)
    guard = MemoryGuard(probe, SETTINGS, actions=actions)
    for _ in range(3):
        run(guard.check())
    assert actions.calls == []


def test_swap_in_alone_is_judged_on_capacity_after_an_unload():
    """After an unload the lagging swap-in rate is not counted again: the embedder stays."""
    probe = ScriptedProbe(current=synthetic_sample(available_mb=900, swap_in_mb_s=12.0))
    actions = RecordingActions(probe, generator_frees_mb=600)
    run(MemoryGuard(probe, SETTINGS, actions=actions).check())
    assert actions.calls == ["generator"]


def test_the_embedder_stays_when_the_effect_of_an_unload_cannot_be_measured():
    """If the probe fails right after the generator's unload, the next check decides."""
    probe = ScriptedProbe(current=synthetic_sample(available_mb=150))
    calls: list[str] = []

    class Actions:
        async def unload_idle_generator(self) -> bool:
            calls.append("generator")
            probe.fail(OSError("transient"))
            return True

        async def unload_idle_embedder(self) -> bool:
            calls.append("embedder")
            return True

    run(MemoryGuard(probe, SETTINGS, actions=Actions()).check())
    assert calls == ["generator"]


def test_an_action_that_freed_nothing_is_not_hammered():
    """An unload that freed nothing waits `idle_retry_checks` checks before it is tried again."""
    probe = ScriptedProbe(current=synthetic_sample(available_mb=300))
    actions = RecordingActions(probe, generator_frees_mb=None, embedder_frees_mb=None)
    metrics = Metrics()
    guard = MemoryGuard(probe, SETTINGS, actions=actions, metrics=metrics, idle_retry_checks=3)

    async def seven_checks() -> None:
        for _ in range(7):
            await guard.check()

    run(seven_checks())
    assert actions.calls == ["generator", "embedder"] * 3  # checks 1, 4 and 7
    assert (
        metric(metrics, "ragvisor_memory_actions_total", action="unload_generator", result="noop")
        == 3
    )


def test_a_failing_action_is_logged_and_the_guard_goes_on():
    """An unload that raises is logged as an error and counted; the embedder is still tried."""
    probe = ScriptedProbe(current=synthetic_sample(available_mb=300))
    actions = RecordingActions(probe, fail_generator=True)
    metrics = Metrics()
    guard = MemoryGuard(probe, SETTINGS, actions=actions, metrics=metrics)
    with capture_logs() as logs:
        result = run(guard.check())
    assert result.level is MemoryLevel.PRESSURE
    assert actions.calls == ["generator", "embedder"]
    done = events(logs, "memory.action")
    assert [(e["action"], e["result"], e["log_level"]) for e in done] == [
        ("unload_generator", "error", "error"),
        ("unload_embedder", "unloaded", "info"),
    ]
    assert done[0]["error"] == "RuntimeError: unload endpoint answered 500"
    assert all(e["duration_ms"] >= 0 for e in done)
    assert (
        metric(metrics, "ragvisor_memory_actions_total", action="unload_generator", result="error")
        == 1
    )
    assert (
        metric(
            metrics, "ragvisor_memory_actions_total", action="unload_embedder", result="unloaded"
        )
        == 1
    )


def test_a_failing_probe_is_logged_and_survived():
    """A probe that raises is logged; the check returns the last level and the next one works."""
    probe = ScriptedProbe(current=synthetic_sample(available_mb=300))
    guard = MemoryGuard(probe, SETTINGS)
    run(guard.check())
    probe.fail(OSError("/proc is gone"), times=2)
    with capture_logs() as logs:
        held = run(guard.check())
    assert held.level is MemoryLevel.PRESSURE
    failed = events(logs, "memory.probe_failed")
    assert failed[0]["error"] == "OSError: /proc is gone"
    assert failed[0]["log_level"] == "error"
    assert guard.snapshot()["probe_error"] == "OSError: /proc is gone"
    run(guard.check())
    probe.set(available_mb=100)
    assert run(guard.check()).level is MemoryLevel.CRITICAL
    assert guard.snapshot()["probe_error"] is None


def test_a_probe_failing_from_the_start_leaves_the_level_unknown():
    """Before any sample succeeded the snapshot says unknown and carries the probe's error."""
    probe = ScriptedProbe()
    probe.fail(PermissionError("denied"))
    guard = MemoryGuard(probe, SETTINGS)
    assert run(guard.check()).level is MemoryLevel.OK
    assert guard.snapshot() == {"level": "unknown", "probe_error": "PermissionError: denied"}
    assert guard.ask_shed() is False


def test_metrics_follow_the_samples():
    """Every gauge is set from the sample; a vanished process's RSS series is removed."""
    probe = ScriptedProbe(
        current=synthetic_sample(
            available_mb=350,
            total_mb=4096,
            swap_used_mb=512,
            swap_in_mb_s=2.0,
            swap_out_mb_s=1.0,
            psi_some_avg10=None,
            rss_mb={"daemon": 200, "ollama": 1500},
        )
    )
    metrics = Metrics()
    guard = MemoryGuard(probe, SETTINGS, metrics=metrics)
    run(guard.check())
    assert metric(metrics, "ragvisor_memory_available_bytes") == 350 * MB
    assert metric(metrics, "ragvisor_memory_total_bytes") == 4096 * MB
    assert metric(metrics, "ragvisor_swap_used_bytes") == 512 * MB
    assert metric(metrics, "ragvisor_swap_in_bytes_per_second") == 2 * MB
    assert metric(metrics, "ragvisor_swap_out_bytes_per_second") == 1 * MB
    assert math.isnan(metric(metrics, "ragvisor_memory_pressure_some_avg10") or 0.0)
    assert metric(metrics, "ragvisor_process_rss_bytes", process="ollama") == 1500 * MB
    assert metric(metrics, "ragvisor_memory_level") == 1

    probe.set(psi_some_avg10=7.5, rss_mb={"ollama": None}, available_mb=100)
    run(guard.check())
    assert metric(metrics, "ragvisor_memory_pressure_some_avg10") == 7.5
    assert metric(metrics, "ragvisor_process_rss_bytes", process="ollama") is None
    assert metric(metrics, "ragvisor_process_rss_bytes", process="daemon") == 200 * MB
    assert metric(metrics, "ragvisor_memory_level") == 2


def test_ask_is_shed_only_at_critical_and_answers_extractively_under_pressure():
    """ask_shed is True at critical only (and counted); memory_short gives a reason unless OK."""
    probe = ScriptedProbe(current=synthetic_sample(available_mb=2000))
    metrics = Metrics()
    guard = MemoryGuard(probe, SETTINGS, metrics=metrics, recover_checks=1)
    assert (guard.ask_shed(), guard.memory_short()) == (False, None)  # before any check
    run(guard.check())
    assert (guard.ask_shed(), guard.memory_short()) == (False, None)
    probe.set(available_mb=300)
    run(guard.check())
    assert guard.ask_shed() is False
    assert guard.memory_short() == "memory pressure: available 300 MB < memory.low_available_mb 400"
    probe.set(available_mb=100)
    run(guard.check())
    assert guard.ask_shed() is True
    assert guard.memory_short() == (
        "memory critical: available 100 MB < memory.critical_available_mb 200"
    )
    assert metric(metrics, "ragvisor_memory_actions_total", action="shed_ask", result="shed") == 1
    assert guard.shed_retry_after_s == SETTINGS.interval_s


def test_snapshot_shape_before_and_after_the_first_check():
    """The snapshot says unknown before a check, then carries every reading in MB."""
    probe = ScriptedProbe(
        current=synthetic_sample(
            available_mb=1024,
            swap_total_mb=2048,
            swap_in_mb_s=0.5,
            psi_some_avg10=3.0,
            rss_mb={"daemon": 200.5},
        )
    )
    guard = MemoryGuard(probe, SETTINGS)
    assert guard.snapshot() == {"level": "unknown"}
    assert guard.last_sample is None
    run(guard.check())
    snap = guard.snapshot()
    sampled_at = snap.pop("sampled_at")
    assert sampled_at.endswith("+00:00")
    assert snap == {
        "level": "ok",
        "reasons": [],
        "available_mb": 1024.0,
        "total_mb": 4096.0,
        "swap_total_mb": 2048.0,
        "swap_used_mb": 0.0,
        "swap_in_mb_s": 0.5,
        "swap_out_mb_s": None,
        "psi_some_avg10": 3.0,
        "psi_full_avg10": None,
        "rss_mb": {"daemon": 200.5},
        "interval_s": 5.0,
        "probe_error": None,
    }
    assert guard.last_sample is probe.current


def test_a_disabled_guard_neither_samples_nor_blocks():
    """With memory.enabled false the guard never samples, sheds or refuses a load."""
    probe = ScriptedProbe(current=synthetic_sample(available_mb=10))
    guard = MemoryGuard(probe, settings(enabled=False))
    assert run(guard.check()).level is MemoryLevel.OK
    assert run(guard.make_room(10_000 * MB)) is True
    assert probe.calls == 0
    assert guard.snapshot() == {"level": "disabled"}


def test_debug_sample_event_carries_the_readings():
    """Every check logs memory.sample at debug with the readings and its duration."""
    capture = structlog.testing.LogCapture()
    log = structlog.wrap_logger(
        None, processors=[capture], wrapper_class=structlog.BoundLogger, component="memory"
    )
    probe = ScriptedProbe(current=synthetic_sample(available_mb=1500, rss_mb={"worker": 300}))
    run(MemoryGuard(probe, SETTINGS, log=log).check())
    sample = events(capture.entries, "memory.sample")[0]
    assert sample["log_level"] == "debug"
    assert (sample["available_mb"], sample["rss_mb"], sample["memory_level"]) == (
        1500.0,
        {"worker": 300.0},
        "ok",
    )
    assert sample["duration_ms"] >= 0


# --------------------------------------------------------------------------- make_room()


def test_a_model_that_fits_loads_without_unloading():
    """available - headroom >= need: fits, and no unloader runs."""
    probe = ScriptedProbe(current=synthetic_sample(available_mb=1500))
    unloaded: list[str] = []

    async def unload_embedder() -> bool:
        unloaded.append("embedder")
        return True

    guard = MemoryGuard(probe, SETTINGS)
    with capture_logs() as logs:
        fits = run(guard.make_room(1200 * MB, unloaders=[unload_embedder]))
    assert fits is True
    assert unloaded == []
    (check,) = events(logs, "memory.preload_check")
    assert (check["need_mb"], check["available_mb"], check["headroom_mb"]) == (1200.0, 1500.0, 256)
    assert (check["fits"], check["unloaded"]) == (True, [])


def test_the_embedder_is_unloaded_when_the_model_would_not_fit():
    """When a model does not fit beside the embedder, the embedder goes first, then it fits."""
    probe = ScriptedProbe(current=synthetic_sample(available_mb=1200))

    async def unload_embedder() -> bool:
        probe.set(available_mb=1500)
        return True

    metrics = Metrics()
    guard = MemoryGuard(probe, SETTINGS, metrics=metrics)
    with capture_logs() as logs:
        fits = run(guard.make_room(1200 * MB, unloaders=[unload_embedder]))
    assert fits is True
    (check,) = events(logs, "memory.preload_check")
    assert (check["available_mb"], check["fits"], check["unloaded"]) == (
        1500.0,
        True,
        ["unload_embedder"],
    )
    assert (
        metric(
            metrics,
            "ragvisor_memory_actions_total",
            action="unload_embedder_for_load",
            result="unloaded",
        )
        == 1
    )


def test_a_model_too_big_even_after_unloading_does_not_fit():
    """When unloading cannot make room, make_room says no (and logs a warning)."""
    probe = ScriptedProbe(current=synthetic_sample(available_mb=800))
    calls: list[str] = []

    async def unload_embedder() -> bool:
        calls.append("embedder")
        probe.set(available_mb=900)
        return True

    async def nothing_loaded() -> bool:
        calls.append("other")
        return False

    guard = MemoryGuard(probe, SETTINGS)
    with capture_logs() as logs:
        fits = run(guard.make_room(2000 * MB, unloaders=[nothing_loaded, unload_embedder]))
    assert fits is False
    assert calls == ["other", "embedder"]
    (check,) = events(logs, "memory.preload_check")
    assert (check["fits"], check["unloaded"], check["log_level"]) == (
        False,
        ["unload_embedder"],
        "warning",
    )


def test_make_room_allows_the_load_when_memory_cannot_be_measured():
    """A failing probe must not stop /ask: the load is allowed and the check says unmeasured."""
    probe = ScriptedProbe()
    probe.fail(OSError("no /proc"))
    guard = MemoryGuard(probe, SETTINGS)
    with capture_logs() as logs:
        assert run(guard.make_room(1 * MB)) is True
    (check,) = events(logs, "memory.preload_check")
    assert (check["measured"], check["available_mb"]) == (False, None)


# --------------------------------------------------------------------------- scheduling


def test_scheduled_guard_checks_repeatedly_on_the_event_loop():
    """schedule_memory_guard runs a first check at once, then every interval, one at a time."""
    probe = ScriptedProbe(current=synthetic_sample(available_mb=300))
    guard = MemoryGuard(probe, SETTINGS)

    after_check: list[Any] = []  # what the status page's history receives after each check

    async def scenario() -> dict[str, Any]:
        scheduler = AsyncIOScheduler(timezone="UTC")
        schedule_memory_guard(scheduler, guard, 0.05, after=after_check.append)
        scheduler.start()
        try:
            job = scheduler.get_job("memory_guard")
            options = {"max_instances": job.max_instances, "coalesce": job.coalesce}
            async with asyncio.timeout(10):
                while probe.calls < 4:
                    await asyncio.sleep(0.01)
        finally:
            scheduler.shutdown(wait=False)
            await asyncio.sleep(0)  # shutdown is applied on the loop
        return options

    assert run(scenario()) == {"max_instances": 1, "coalesce": True}
    assert guard.level is MemoryLevel.PRESSURE
    assert guard.snapshot()["available_mb"] == 300.0
    assert len(after_check) >= 3
    assert after_check[-1] is guard.last_sample
