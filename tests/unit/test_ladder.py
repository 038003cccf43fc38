"""The escalation ladder: a hang rate, unload, confirm, restart within a budget, probe."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from ragvisor.config import BreakerSettings, LadderSettings
from ragvisor.errors import BackendError, BackendTimeout, BackendUnavailable
from ragvisor.metrics import Metrics
from ragvisor.supervise.breaker import BreakerState, CircuitBreaker
from ragvisor.supervise.ladder import BackendControl, EscalationLadder

MODEL = "gemma3-270m"
WAIT_S = 10.0  # bound on every wait in these tests
HANG = BackendTimeout("no first token", phase="first_token")


class Clock:
    """Monotonic time plus an offset tests can move forward (an hour passes at once)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


class RecordingControl:
    """A BackendControl that records each call and misbehaves on demand.

    `unload`: "ok", "fail" (an error answer), "hang" (silent until its timeout) or "ignore"
    (silent past its timeout: a control that does not honour it). `loaded`: what /api/ps lists.
    `probe_failures`: probes that fail before one passes (None: never passes); `probe_ok`, when
    set, decides instead.
    """

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.unload_mode = "ok"
        self.unload_gate: asyncio.Event | None = None
        self.loaded: list[str] = []
        self.restart_fails = False
        self.restart_s = 0.0
        self.restart_gate: asyncio.Event | None = None
        self.probe_failures: int | None = 0
        self.probe_ok: Callable[[], bool] | None = None
        self.observed: list[Any] = []  # whatever `on_restart` returns, per restart
        self.on_restart: Callable[[], Any] | None = None

    @property
    def model(self) -> str:
        return MODEL

    async def unload(self, timeout_s: float) -> None:
        self.calls.append("unload")
        if self.unload_gate is not None:
            await self.unload_gate.wait()
        if self.unload_mode == "fail":
            raise BackendError("unload answered 500")
        if self.unload_mode == "hang":
            async with asyncio.timeout(timeout_s):
                await asyncio.Event().wait()
        if self.unload_mode == "ignore":
            await asyncio.sleep(60)

    async def loaded_models(self, timeout_s: float) -> list[str]:
        self.calls.append("ps")
        return list(self.loaded)

    async def restart(self, timeout_s: float) -> None:
        self.calls.append("restart")
        if self.restart_gate is not None:
            await self.restart_gate.wait()
        await asyncio.sleep(self.restart_s)
        if self.on_restart is not None:
            self.observed.append(self.on_restart())
        if self.restart_fails:
            raise BackendError("systemctl exited with 1")

    async def probe(self, timeout_s: float) -> None:
        self.calls.append("probe")
        if self.probe_ok is not None:
            if not self.probe_ok():
                raise BackendUnavailable("connection refused")
            return
        if self.probe_failures is None:
            raise BackendUnavailable("connection refused")
        if self.probe_failures > 0:
            self.probe_failures -= 1
            raise BackendUnavailable("connection refused")


def settings(**overrides: Any) -> LadderSettings:
    values: dict[str, Any] = {
        "hang_threshold": 3,
        "unload_timeout_s": 0.3,
        "confirm_timeout_s": 0.3,
        "restart_timeout_s": 2.0,
        "restart_budget_per_hour": 4,
        "restart_backoff_s": 0.0,
        "probe_timeout_s": 3.0,
    }
    return LadderSettings(**{**values, **overrides})


class Rig:
    """A ladder, its breaker, control, clock and metrics, on the running loop.

    With `fake_sleep`, the ladder's waits (backoff, time between probes) move the clock instead
    of taking real time.
    """

    def __init__(
        self,
        breaker_open_s: float = 30.0,
        log: Any = None,
        *,
        fake_sleep: bool = False,
        **ladder: Any,
    ) -> None:
        self.clock = Clock()
        self.metrics = Metrics()
        self.control = RecordingControl()
        self.breaker = CircuitBreaker(
            "gen",
            BreakerSettings(failure_threshold=5, open_s=breaker_open_s),
            metrics=self.metrics,
            clock=self.clock,
        )
        control: BackendControl = self.control
        self.ladder = EscalationLadder(
            "gen",
            control,
            settings(**ladder),
            self.breaker,
            metrics=self.metrics,
            log=log,
            clock=self.clock,
            sleep=self.sleep if fake_sleep else asyncio.sleep,
        )
        self.ladder.bind(asyncio.get_running_loop())

    async def sleep(self, seconds: float) -> None:
        """Let `seconds` pass on the clock at once (and let other tasks run)."""
        self.clock.advance(seconds)
        await asyncio.sleep(0)

    async def climbed(self, runs: int = 1) -> None:
        """Wait (bounded) until `runs` climbs have started and none is running."""
        await until(lambda: self.ladder.runs >= runs and not self.ladder.running)

    def steps(self, step: str, outcome: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "ragvisor_ladder_steps_total", {"backend": "gen", "step": step, "outcome": outcome}
        )
        return value or 0.0

    def restarts(self) -> float:
        value = self.metrics.registry.get_sample_value(
            "ragvisor_backend_restarts_total", {"backend": "gen"}
        )
        return value or 0.0


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(WAIT_S):
        while not condition():
            await asyncio.sleep(0.005)


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    async def bounded() -> None:
        async with asyncio.timeout(60):
            await scenario()

    asyncio.run(bounded())


def test_a_backend_hanging_from_the_start_climbs_after_hang_threshold_hangs():
    """Frozen from the start: the third hang (3 of 3 calls) starts the climb, the second not."""

    async def scenario() -> None:
        rig = Rig()
        rig.ladder.note_failure(HANG)
        rig.ladder.note_failure(HANG)
        await asyncio.sleep(0.05)
        assert rig.ladder.runs == 0
        rig.ladder.note_failure(HANG)
        await rig.climbed()
        assert rig.ladder.runs == 1

    run(scenario)


def test_a_hang_rate_not_a_run_starts_the_ladder_after_a_healthy_stretch():
    """Ten answered calls (errors count as answered), then eight hangs in a row: no climb, as
    40 % random hangs make such runs; the ninth (9 of the last 10) starts it."""

    async def scenario() -> None:
        with capture_logs() as logs:
            rig = Rig(log=structlog.get_logger(component="supervise"))
            for _ in range(8):
                rig.ladder.note_success()
            rig.ladder.note_failure(BackendError("500"))
            rig.ladder.note_failure(BackendUnavailable("connection refused"))
            for _ in range(8):
                rig.ladder.note_failure(HANG)
            await asyncio.sleep(0.05)
            assert rig.ladder.runs == 0
            assert rig.control.calls == []
            rig.ladder.note_failure(HANG)
            await rig.climbed()
        assert rig.ladder.runs == 1
        started = next(e for e in logs if e["event"] == "ladder.started")
        assert started["reason"] == "9 of the last 10 calls hung"

    run(scenario)


def test_after_a_climb_another_needs_a_full_windows_evidence():
    """A climb forgets the hangs it dealt with: a backend still hanging afterwards climbs again
    at its ninth new hang (9 of 10), not at its third a few seconds later."""

    async def scenario() -> None:
        rig = Rig()
        for _ in range(3):
            rig.ladder.note_failure(HANG)
        await rig.climbed()
        for _ in range(8):
            rig.ladder.note_failure(HANG)
        await asyncio.sleep(0.05)
        assert rig.ladder.runs == 1
        rig.ladder.note_failure(HANG)
        await rig.climbed(2)
        assert rig.ladder.runs == 2

    run(scenario)


def test_a_request_deadline_cut_is_left_out_of_the_window():
    """hang, hang, cut by the request's deadline, hang: the third hang starts the climb (the
    default deadlines cut every wedged /ask's third attempt like that)."""

    async def scenario() -> None:
        rig = Rig()
        cut = BackendTimeout("the request deadline passed", phase="request")
        for exc in (HANG, HANG, cut):
            rig.ladder.note_failure(exc)
        await asyncio.sleep(0.05)
        assert rig.ladder.runs == 0
        rig.ladder.note_failure(HANG)
        await rig.climbed()
        assert rig.ladder.runs == 1

    run(scenario)


def test_unload_confirmed_needs_no_restart():
    """Unload answered and /api/ps no longer lists the model: no restart, and traffic never
    stopped (a backend that obeys an unload is slow or flaky, not wedged)."""

    async def scenario() -> None:
        rig = Rig()
        rig.control.loaded = ["nomic-embed-text:latest"]  # another model may stay
        rig.ladder.trigger("test")
        await rig.climbed()
        assert rig.control.calls == ["unload", "ps", "probe"]
        assert rig.breaker.state is BreakerState.CLOSED
        assert rig.restarts() == 0
        assert rig.steps("unload", "ok") == 1
        assert rig.steps("confirm", "ok") == 1
        assert rig.steps("probe", "ok") == 1

    run(scenario)


@pytest.mark.parametrize("mode", ["fail", "hang"])
def test_a_failed_unload_leads_to_a_restart(mode):
    """Unload errors or times out: restart, then probe, then the breaker half-opens."""

    async def scenario() -> None:
        rig = Rig()
        rig.control.unload_mode = mode
        rig.ladder.trigger("test")
        await rig.climbed()
        assert rig.control.calls == ["unload", "restart", "probe"]
        assert rig.steps("unload", "failed") == 1
        assert rig.steps("restart", "ok") == 1
        assert rig.restarts() == 1
        assert rig.breaker.state is BreakerState.HALF_OPEN
        assert rig.ladder.restarts_last_hour() == 1

    run(scenario)


@pytest.mark.parametrize("listed", [MODEL, f"{MODEL}:latest"])
def test_a_model_still_listed_after_the_unload_leads_to_a_restart(listed):
    """An unload reply alone proves little: /api/ps still listing the model means restart."""

    async def scenario() -> None:
        rig = Rig()
        rig.control.loaded = [listed]
        rig.ladder.trigger("test")
        await rig.climbed()
        # /api/ps is asked again while confirm_timeout_s (0.3) lasts, every 0.25 s.
        assert rig.control.calls == ["unload", "ps", "ps", "restart", "probe"]
        assert rig.steps("confirm", "failed") == 1
        assert rig.restarts() == 1

    run(scenario)


def test_a_model_listed_a_moment_after_the_unload_is_confirmed_without_a_restart():
    """Real Ollama goes on listing an unloaded model in /api/ps for up to a second: the confirm
    step looks again, sees it gone, and no restart follows."""

    async def scenario() -> None:
        rig = Rig()
        rig.control.loaded = [MODEL]
        rig.ladder.trigger("test")
        await asyncio.sleep(0.1)  # the first look saw it; Ollama finishes unloading now
        rig.control.loaded = []
        await rig.climbed()
        assert rig.control.calls == ["unload", "ps", "ps", "probe"]
        assert rig.steps("confirm", "ok") == 1
        assert rig.restarts() == 0
        assert rig.breaker.state is BreakerState.CLOSED

    run(scenario)


def test_a_control_that_ignores_its_timeout_cannot_stall_the_ladder():
    """A step still running well past its timeout is abandoned and the ladder moves on."""

    async def scenario() -> None:
        with capture_logs() as logs:
            rig = Rig(log=structlog.get_logger(component="supervise"))
            rig.control.unload_mode = "ignore"
            started = time.monotonic()
            rig.ladder.trigger("test")
            await rig.climbed()
        assert time.monotonic() - started < 5  # 0.3 s timeout + 1 s grace, not 60 s
        assert rig.control.calls == ["unload", "restart", "probe"]
        unload = next(e for e in logs if e["event"] == "ladder.unload")
        assert unload["outcome"] == "failed"
        assert unload["error"] == "TimeoutError: no result within 0.3 s"

    run(scenario)


def test_the_restart_budget_per_hour_is_enforced():
    """Two restarts allowed per hour: the third climb skips the restart, an hour later it runs."""

    async def scenario() -> None:
        with capture_logs() as logs:
            rig = Rig(restart_budget_per_hour=2, log=structlog.get_logger(component="supervise"))
            rig.control.unload_mode = "fail"
            for run_ in (1, 2, 3):
                rig.ladder.trigger("test")
                await rig.climbed(run_)
            assert rig.control.calls.count("restart") == 2
            assert rig.steps("restart", "skipped_budget") == 1
            assert rig.ladder.snapshot()["restarts_last_hour"] == 2
            skipped = [e for e in logs if e["event"] == "ladder.restart_skipped"]
            assert len(skipped) == 1
            assert skipped[0]["reason"] == "budget"
            assert skipped[0]["restarts_last_hour"] == 2
            assert skipped[0]["budget_per_hour"] == 2
            assert skipped[0]["log_level"] == "error"

            rig.clock.advance(3601)
            assert rig.ladder.restarts_last_hour() == 0
            rig.ladder.trigger("test")
            await rig.climbed(4)
            assert rig.control.calls.count("restart") == 3

    run(scenario)


def test_a_zero_budget_never_restarts():
    """restart_budget_per_hour = 0 turns restarts off; the ladder still unloads and probes."""

    async def scenario() -> None:
        rig = Rig(restart_budget_per_hour=0)
        rig.control.unload_mode = "fail"
        rig.ladder.trigger("test")
        await rig.climbed()
        assert rig.control.calls == ["unload", "probe"]
        assert rig.steps("restart", "skipped_budget") == 1

    run(scenario)


def test_restarts_back_off_and_the_backoff_grows():
    """10 s after a restart none is allowed; the next wait is 20 s; a quiet hour resets it."""

    async def scenario() -> None:
        rig = Rig(restart_backoff_s=10.0, restart_budget_per_hour=20)
        rig.control.unload_mode = "fail"
        runs = 0

        async def climb() -> int:
            nonlocal runs
            runs += 1
            before = rig.control.calls.count("restart")
            rig.ladder.trigger("test")
            await rig.climbed(runs)
            return rig.control.calls.count("restart") - before

        assert await climb() == 1
        assert await climb() == 0  # within 10 s
        assert rig.steps("restart", "skipped_backoff") == 1
        assert rig.ladder.last_step is not None
        rig.clock.advance(10)
        assert await climb() == 1
        rig.clock.advance(10)
        assert await climb() == 0  # the backoff is 20 s now
        rig.clock.advance(10)
        assert await climb() == 1
        rig.clock.advance(3601)
        assert await climb() == 1  # after a quiet hour…
        rig.clock.advance(10)
        assert await climb() == 1  # …the backoff is back to 10 s

    run(scenario)


def test_a_failed_probe_leaves_the_breaker_open_until_its_usual_pause():
    """No healthy answer within probe_timeout_s and no restart left in the budget: the breaker
    stays open, then half-opens on time."""

    async def scenario() -> None:
        rig = Rig(breaker_open_s=30.0, probe_timeout_s=1.0, restart_budget_per_hour=1)
        rig.control.unload_mode = "fail"  # wedged: the breaker is held from the restart on
        rig.control.probe_failures = None
        rig.ladder.trigger("test")
        await rig.climbed()
        assert rig.steps("probe", "failed") == 1
        assert rig.steps("restart", "skipped_budget") == 1
        assert rig.breaker.state is BreakerState.OPEN
        assert rig.control.calls.count("probe") >= 2  # it kept trying within the timeout
        rig.clock.advance(30)
        assert rig.breaker.state is BreakerState.HALF_OPEN

    run(scenario)


def test_the_probe_waits_for_a_backend_that_comes_up():
    """Probes failing while the backend starts are "not yet"; the first pass ends the climb."""

    async def scenario() -> None:
        rig = Rig()
        rig.control.unload_mode = "fail"
        rig.control.probe_failures = 2
        rig.ladder.trigger("test")
        await rig.climbed()
        assert rig.control.calls.count("probe") == 3
        assert rig.steps("probe", "ok") == 1
        assert rig.breaker.state is BreakerState.HALF_OPEN

    run(scenario)


def test_the_breaker_is_held_open_during_a_climb_longer_than_its_pause():
    """A restart outlasting open_s does not let a trial call through mid-restart."""

    async def scenario() -> None:
        rig = Rig(breaker_open_s=0.1)
        rig.control.unload_mode = "fail"
        rig.control.restart_s = 0.4
        rig.control.on_restart = lambda: rig.breaker.state
        rig.ladder.trigger("test")
        await until(lambda: "restart" in rig.control.calls)
        assert rig.breaker.state is BreakerState.OPEN
        await rig.climbed()
        assert rig.control.observed == [BreakerState.OPEN]
        assert rig.breaker.state is BreakerState.HALF_OPEN

    run(scenario)


def test_only_one_climb_at_a_time():
    """More hangs and triggers while a climb runs do not start a second one."""

    async def scenario() -> None:
        rig = Rig()
        rig.control.unload_gate = asyncio.Event()
        rig.ladder.trigger("first")
        await until(lambda: rig.control.calls == ["unload"])
        assert rig.ladder.running
        rig.ladder.trigger("second")
        for _ in range(6):
            rig.ladder.note_failure(HANG)
        await asyncio.sleep(0.05)
        rig.control.unload_gate.set()
        await rig.climbed()
        assert rig.ladder.runs == 1
        assert rig.control.calls.count("unload") == 1

    run(scenario)


def test_a_trigger_from_another_thread_starts_the_climb_on_the_ladders_loop():
    """The embedder's worker threads report hangs too: the climb runs on the bound loop."""

    async def scenario() -> None:
        rig = Rig()
        loop = asyncio.get_running_loop()
        seen: list[asyncio.AbstractEventLoop] = []
        original = rig.control.loaded_models

        async def record_loop(timeout_s: float) -> list[str]:
            seen.append(asyncio.get_running_loop())
            return await original(timeout_s)

        rig.control.loaded_models = record_loop  # type: ignore[method-assign]

        def from_thread() -> str:
            for _ in range(3):
                rig.ladder.note_failure(HANG)
            return threading.current_thread().name

        name = await asyncio.to_thread(from_thread)
        assert name != threading.current_thread().name
        await rig.climbed()
        assert rig.ladder.runs == 1
        assert seen == [loop]

    run(scenario)


def test_a_trigger_without_a_loop_is_logged_not_lost_silently():
    """Before start-up bound the ladder to a loop, a trigger logs ladder.not_started."""
    breaker = CircuitBreaker("gen", BreakerSettings())
    with capture_logs() as logs:
        ladder = EscalationLadder(
            "gen",
            RecordingControl(),
            settings(),
            breaker,
            log=structlog.get_logger(component="supervise"),
        )
        ladder.trigger("hangs")
    assert [e["event"] for e in logs] == ["ladder.not_started"]
    assert ladder.runs == 0


def test_every_step_is_logged_with_its_duration_and_counted():
    """started, unload, confirm, restart, probe and finished events; steps in the metrics."""

    async def scenario() -> None:
        with capture_logs() as logs:
            rig = Rig(log=structlog.get_logger(component="supervise"))
            rig.control.loaded = [MODEL]
            rig.ladder.trigger("3 calls in a row timed out")
            await rig.climbed()
        ladder_events = [e for e in logs if e["event"].startswith("ladder.")]
        names = [e["event"] for e in ladder_events]
        assert names == [
            "ladder.started",
            "ladder.unload",
            "ladder.confirm",
            "ladder.restart",
            "ladder.probe",
            "ladder.finished",
        ]
        by_name = {e["event"]: e for e in ladder_events}
        assert by_name["ladder.started"]["reason"] == "3 calls in a row timed out"
        for step in ("unload", "confirm", "restart", "probe"):
            event = by_name[f"ladder.{step}"]
            assert event["backend"] == "gen"
            assert event["duration_ms"] >= 0
        assert by_name["ladder.confirm"]["outcome"] == "failed"
        assert "still loaded" in by_name["ladder.confirm"]["error"]
        assert by_name["ladder.confirm"]["log_level"] == "warning"
        assert by_name["ladder.unload"]["log_level"] == "info"
        finished = by_name["ladder.finished"]
        assert finished["unloaded"] is True
        assert finished["confirmed"] is False
        assert finished["restarted"] is True
        assert finished["healthy"] is True
        assert finished["duration_ms"] >= 0
        for step, outcome in (
            ("unload", "ok"),
            ("confirm", "failed"),
            ("restart", "ok"),
            ("probe", "ok"),
        ):
            assert rig.steps(step, outcome) == 1, (step, outcome)
        count = rig.metrics.registry.get_sample_value(
            "ragvisor_ladder_step_duration_seconds_count", {"backend": "gen", "step": "probe"}
        )
        assert count == 1

    run(scenario)


def test_a_failed_restart_is_counted_and_the_probe_still_runs():
    """The restart command failing is logged as a failed step; the probe decides the rest."""

    async def scenario() -> None:
        rig = Rig()
        rig.control.unload_mode = "fail"
        rig.control.restart_fails = True
        rig.ladder.trigger("test")
        await rig.climbed()
        assert rig.control.calls == ["unload", "restart", "probe"]
        assert rig.steps("restart", "failed") == 1
        assert rig.restarts() == 1  # an attempt is a restart as far as the budget goes
        assert rig.breaker.state is BreakerState.HALF_OPEN

    run(scenario)


def test_aclose_cancels_a_climb_and_releases_the_breaker():
    """Shutdown cancels a running climb; the breaker is not left held open."""

    async def scenario() -> None:
        rig = Rig(breaker_open_s=5.0)
        rig.control.unload_mode = "fail"
        rig.control.restart_gate = asyncio.Event()
        rig.ladder.trigger("test")
        await until(lambda: rig.control.calls == ["unload", "restart"])
        await rig.ladder.aclose()
        assert not rig.ladder.running
        assert rig.breaker.state is BreakerState.OPEN
        rig.clock.advance(5)
        assert rig.breaker.state is BreakerState.HALF_OPEN

    run(scenario)


def test_snapshot_describes_the_ladder():
    """`/status` sees whether a climb runs, how many ran, the last step and the budget."""

    async def scenario() -> None:
        rig = Rig(restart_budget_per_hour=3)
        assert rig.ladder.snapshot() == {
            "running": False,
            "runs": 0,
            "last_step": None,
            "restarts_last_hour": 0,
            "restart_budget_per_hour": 3,
        }
        rig.control.unload_mode = "fail"
        rig.ladder.trigger("test")
        await rig.climbed()
        snap = rig.ladder.snapshot()
        assert snap["runs"] == 1
        assert snap["restarts_last_hour"] == 1
        assert snap["last_step"]["step"] == "probe"
        assert snap["last_step"]["outcome"] == "ok"

    run(scenario)


def test_a_backend_still_dead_after_a_restart_is_restarted_again_after_the_backoff():
    """The first restart does not bring the backend back, the second does: the ladder waits out
    the backoff (10 s) on its own, restarts again and half-opens the breaker, logging each
    step with its duration (no new hang is needed: the breaker is held open meanwhile)."""

    async def scenario() -> None:
        with capture_logs() as logs:
            rig = Rig(
                log=structlog.get_logger(component="supervise"),
                fake_sleep=True,
                restart_backoff_s=10.0,
                probe_timeout_s=3.0,
            )
            rig.control.unload_mode = "fail"
            restarted_at: list[float] = []

            def restart() -> None:
                restarted_at.append(rig.clock())

            rig.control.on_restart = restart
            rig.control.probe_ok = lambda: len(restarted_at) >= 2
            rig.ladder.trigger("test")
            await rig.climbed()
        assert rig.control.calls.count("restart") == 2
        assert restarted_at[1] - restarted_at[0] >= 10.0  # the backoff, on the ladder's clock
        assert rig.breaker.state is BreakerState.HALF_OPEN
        assert rig.ladder.restarts_last_hour() == 2
        assert rig.steps("restart", "ok") == 2
        assert rig.steps("probe", "failed") == 1
        assert rig.steps("probe", "ok") == 1
        names = [e["event"] for e in logs if e["event"].startswith("ladder.")]
        assert names == [
            "ladder.started",
            "ladder.unload",
            "ladder.restart",
            "ladder.probe",
            "ladder.restart_scheduled",
            "ladder.restart",
            "ladder.probe",
            "ladder.finished",
        ]
        scheduled = next(e for e in logs if e["event"] == "ladder.restart_scheduled")
        assert 6.0 <= scheduled["retry_in_s"] <= 10.0  # the backoff left after a 3 s probe
        assert scheduled["restarts"] == 1
        assert scheduled["restarts_last_hour"] == 1
        assert scheduled["budget_per_hour"] == 4
        for event in logs:
            if event["event"] in ("ladder.restart", "ladder.probe", "ladder.finished"):
                assert event["duration_ms"] >= 0
        finished = next(e for e in logs if e["event"] == "ladder.finished")
        assert finished["restarts"] == 2
        assert finished["restarted"] is True
        assert finished["healthy"] is True

    run(scenario)


def test_a_backend_that_never_comes_back_is_restarted_until_the_budget_is_spent():
    """Three restarts allowed an hour, none helps: three restarts with a growing backoff, then
    ladder.restart_skipped (budget) once, and the breaker's usual pause takes over."""

    async def scenario() -> None:
        with capture_logs() as logs:
            rig = Rig(
                log=structlog.get_logger(component="supervise"),
                fake_sleep=True,
                breaker_open_s=30.0,
                restart_budget_per_hour=3,
                restart_backoff_s=10.0,
                probe_timeout_s=3.0,
            )
            rig.control.unload_mode = "fail"
            rig.control.probe_failures = None
            rig.control.on_restart = rig.clock
            rig.ladder.trigger("test")
            await rig.climbed()
        assert rig.control.calls.count("restart") == 3
        gaps = [b - a for a, b in zip(rig.control.observed, rig.control.observed[1:], strict=False)]
        assert gaps[0] >= 10.0
        assert gaps[1] >= 20.0  # the backoff doubles
        assert rig.steps("restart", "skipped_budget") == 1
        skipped = [e for e in logs if e["event"] == "ladder.restart_skipped"]
        assert [e["reason"] for e in skipped] == ["budget"]
        assert skipped[0]["restarts_last_hour"] == 3
        assert len([e for e in logs if e["event"] == "ladder.restart_scheduled"]) == 2
        assert not rig.ladder.running
        assert rig.breaker.state is BreakerState.OPEN
        rig.clock.advance(30)
        assert rig.breaker.state is BreakerState.HALF_OPEN

    run(scenario)


def test_a_backend_that_answers_while_the_ladder_waits_is_not_restarted_again():
    """Still dead after its restart, the backend answers during the backoff: no second
    restart; ladder.recovered is logged and the breaker half-opens."""

    async def scenario() -> None:
        with capture_logs() as logs:
            rig = Rig(
                log=structlog.get_logger(component="supervise"),
                fake_sleep=True,
                restart_backoff_s=60.0,
                probe_timeout_s=3.0,
            )
            rig.control.unload_mode = "fail"
            back_at: list[float] = []

            def restart() -> None:
                back_at.append(rig.clock() + 10.0)  # comes up 10 s after the restart

            rig.control.on_restart = restart
            rig.control.probe_ok = lambda: bool(back_at) and rig.clock() >= back_at[0]
            rig.ladder.trigger("test")
            await rig.climbed()
        assert rig.control.calls.count("restart") == 1
        assert rig.breaker.state is BreakerState.HALF_OPEN
        recovered = [e for e in logs if e["event"] == "ladder.recovered"]
        assert len(recovered) == 1
        finished = next(e for e in logs if e["event"] == "ladder.finished")
        assert finished["restarts"] == 1
        assert finished["healthy"] is True

    run(scenario)


def test_a_climb_within_the_restart_backoff_waits_it_out_when_the_backend_stays_dead():
    """A second climb 0 s after a restart may not restart at once (backoff 10 s): its probe
    fails, so it waits the backoff out, restarts, and the backend answers."""

    async def scenario() -> None:
        with capture_logs() as logs:
            rig = Rig(
                log=structlog.get_logger(component="supervise"),
                fake_sleep=True,
                restart_backoff_s=10.0,
                probe_timeout_s=3.0,
            )
            rig.control.unload_mode = "fail"
            rig.control.on_restart = rig.clock
            rig.ladder.trigger("first")
            await rig.climbed()
            rig.control.probe_ok = lambda: len(rig.control.observed) >= 2
            rig.ladder.trigger("second")
            await rig.climbed(2)
        assert rig.control.calls.count("restart") == 2
        assert rig.control.observed[1] - rig.control.observed[0] >= 10.0
        assert rig.steps("restart", "skipped_backoff") == 1
        (scheduled,) = [e for e in logs if e["event"] == "ladder.restart_scheduled"]
        assert "backoff" in scheduled["why"]
        assert scheduled["restarts"] == 0
        assert rig.breaker.state is BreakerState.HALF_OPEN

    run(scenario)
