"""The memory guard itself: runs on the daemon's event loop (an APScheduler job), samples in a
thread, publishes metrics, logs level changes, unloads idle models under pressure (generator
first, then embedder), tells `/ask` to answer extractively or to shed, and checks that a model
fits before it loads."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from ragvisor.config import MemorySettings
from ragvisor.metrics import MEMORY_LEVEL_VALUE, Metrics
from ragvisor.supervise.memory.levels import (
    Assessment,
    LevelState,
    MemoryLevel,
    assess,
    capacity_settings,
    next_level,
)
from ragvisor.supervise.memory.sample import MB, MemoryProbe, MemorySample, to_mb

if TYPE_CHECKING:
    from apscheduler.schedulers.asyncio import AsyncIOScheduler


class GuardActions(Protocol):
    """What the guard can do about pressure; each returns True when it unloaded something.

    Implementations unload only an *idle* model (none mid-answer) and return False otherwise.
    """

    async def unload_idle_generator(self) -> bool: ...

    async def unload_idle_embedder(self) -> bool: ...


Unloader = Callable[[], Awaitable[bool]]


@dataclass
class _GuardState:
    """Everything the guard remembers between checks, in one place."""

    levels: LevelState = field(default_factory=LevelState)
    assessment: Assessment | None = None
    sample: MemorySample | None = None
    sampled_at: float | None = None  # wall time of `sample`, for /status
    checks: int = 0
    probe_error: str | None = None
    # action -> the check number before which it is not tried again (it did nothing last time)
    quiet_until: dict[str, int] = field(default_factory=dict)
    rss_labels: frozenset[str] = frozenset()


class MemoryGuard:
    """Watches memory from the daemon's event loop and acts on it; see the module docstring.

    `recover_checks` and `recovery_margin_mb` set the hysteresis (see :func:`next_level`);
    `idle_retry_checks` is how many checks an action that freed nothing waits before it is
    tried again, so an idle-less generator is not asked to unload every 5 s.
    """

    def __init__(
        self,
        probe: MemoryProbe,
        settings: MemorySettings,
        *,
        actions: GuardActions | None = None,
        metrics: Metrics | None = None,
        log: Any = None,
        clock: Callable[[], float] = time.monotonic,
        recover_checks: int = 3,
        recovery_margin_mb: int = 100,
        idle_retry_checks: int = 3,
    ) -> None:
        self._probe = probe
        self._settings = settings
        self._actions = actions
        self._metrics = metrics
        self._log = log if log is not None else structlog.get_logger(component="memory")
        self._clock = clock
        self._recover_checks = max(1, recover_checks)
        self._recovery_margin_mb = recovery_margin_mb
        self._idle_retry_checks = max(1, idle_retry_checks)
        self._state = _GuardState()
        # One unload at a time: a check and a pre-load check must not both unload the embedder.
        self._acting = asyncio.Lock()

    @property
    def level(self) -> MemoryLevel:
        """The current level (OK before the first check)."""
        return self._state.levels.level

    @property
    def last_sample(self) -> MemorySample | None:
        """The latest successful sample, None before the first."""
        return self._state.sample

    @property
    def shed_retry_after_s(self) -> float:
        """A fair `Retry-After` for a shed /ask: the soonest the level can fall."""
        return self._settings.interval_s * self._recover_checks

    def ask_shed(self) -> bool:
        """True at CRITICAL: /ask must answer 503. Call once per /ask request: each True is
        counted as `memory_actions_total{action="shed_ask",result="shed"}`."""
        shed = self.level is MemoryLevel.CRITICAL
        if shed and self._metrics is not None:
            self._metrics.memory_actions_total.labels(action="shed_ask", result="shed").inc()
        return shed

    def memory_short(self) -> str | None:
        """Why /ask should answer without the generator, or None when memory is fine."""
        assessment = self._state.assessment
        if self.level is MemoryLevel.OK or assessment is None:
            return None
        return f"memory {self.level.value}: " + "; ".join(assessment.reasons)

    # ----------------------------------------------------------------------- the periodic check

    async def check(self) -> Assessment:
        """Sample, assess, publish, log and relieve pressure. Never raises (a failed probe or
        action is logged), so the scheduled job survives whatever happens."""
        state = self._state
        state.checks += 1
        if not self._settings.enabled:
            return Assessment(MemoryLevel.OK, ("memory.enabled is false",))
        started = self._clock()
        sample = await self._sample("check")
        if sample is None:
            return state.assessment or Assessment(self.level, ("no sample yet",))
        state.probe_error = None
        measured = assess(sample, self._settings)
        relaxed = measured
        if measured.level.severity < self.level.severity:
            relaxed = assess(sample, self._settings, margin_mb=self._recovery_margin_mb)
        before = state.levels
        state.levels = next_level(
            before, measured.level, relaxed.level, recover_checks=self._recover_checks
        )
        first = state.assessment is None
        state.assessment = self._held(measured)
        if self._metrics is not None:
            self._metrics.memory_level.set(self.level.severity)
        if first or state.levels.level is not before.level:
            self._log_level("unknown" if first else before.level.value, sample)
        self._log.debug(
            "memory.sample",
            memory_level=self.level.value,
            duration_ms=self._ms_since(started),
            **_sample_fields(sample),
        )
        if measured.level is not MemoryLevel.OK:
            await self._relieve()
        return state.assessment

    def _held(self, measured: Assessment) -> Assessment:
        """The assessment at the held level: the measured reasons, plus why the level stays up."""
        levels = self._state.levels
        if levels.level is measured.level:
            return measured
        note = (
            f"holding {levels.level.value} until {self._recover_checks} checks in a row clear "
            f"the marks by the recovery margin of {self._recovery_margin_mb} MB "
            f"({levels.calm_checks} so far)"
        )
        return Assessment(levels.level, (*measured.reasons, note))

    def _log_level(self, previous: str, sample: MemorySample) -> None:
        assessment = self._state.assessment
        rising = MEMORY_LEVEL_VALUE.get(previous, 0) < self.level.severity
        emit = self._log.warning if rising else self._log.info
        emit(
            "memory.level",
            **{"from": previous, "to": self.level.value},
            reasons=list(assessment.reasons) if assessment else [],
            available_mb=to_mb(sample.available_bytes),
            swap_in_mb_s=to_mb(sample.swap_in_bytes_per_s),
            psi_some_avg10=sample.psi_some_avg10,
            rss_mb={name: to_mb(value) for name, value in sample.rss_bytes.items()},
        )

    async def _relieve(self) -> None:
        """Unload the idle generator; if that freed nothing or not enough, the idle embedder."""
        actions = self._actions
        if actions is None:
            return
        async with self._acting:
            freed = await self._act("unload_generator", actions.unload_idle_generator)
            if freed:
                sample = await self._sample("after_unload")
                if sample is None:
                    return  # cannot tell whether it helped: the next check decides
                capacity = assess(sample, capacity_settings(self._settings))
                if capacity.level is MemoryLevel.OK:
                    return
            await self._act("unload_embedder", actions.unload_idle_embedder)

    async def _act(self, action: str, call: Unloader) -> bool:
        """Run one action unless it freed nothing lately; log and count it."""
        state = self._state
        quiet_until = state.quiet_until.get(action, 0)
        if state.checks < quiet_until:
            self._log.debug(
                "memory.action",
                action=action,
                result="skipped",
                retry_in_checks=quiet_until - state.checks,
            )
            return False
        done = await self._call(action, call)
        if done:
            state.quiet_until.pop(action, None)
        else:
            state.quiet_until[action] = state.checks + self._idle_retry_checks
        return done

    async def _call(self, action: str, call: Unloader) -> bool:
        """Run one unload; log `memory.action` and count it. Never raises."""
        started = self._clock()
        error: str | None = None
        try:
            done = bool(await call())
        except Exception as exc:  # noqa: BLE001 - an action's failure must not stop the guard
            done, error = False, f"{type(exc).__name__}: {exc}"
        result = "error" if error else ("unloaded" if done else "noop")
        duration_ms = self._ms_since(started)
        if error:
            self._log.error(
                "memory.action", action=action, result=result, duration_ms=duration_ms, error=error
            )
        else:
            self._log.info("memory.action", action=action, result=result, duration_ms=duration_ms)
        if self._metrics is not None:
            self._metrics.memory_actions_total.labels(action=action, result=result).inc()
        return done

    # ----------------------------------------------------------------------- before a model loads

    async def make_room(
        self,
        need_bytes: int,
        *,
        unloaders: Sequence[Unloader] = (),
        action: str = "unload_embedder_for_load",
    ) -> bool:
        """Whether a model of `need_bytes` fits now, unloading with `unloaders` (in order,
        re-sampling after each that freed something) until it does.

        Fits when available - `model_headroom_mb` >= `need_bytes`. When the probe fails the load
        is allowed (True, logged): the guard must not be what stops the daemon from answering.
        Never raises.
        """
        if not self._settings.enabled:
            return True
        started = self._clock()
        headroom = self._settings.model_headroom_mb * MB
        unloaded: list[str] = []
        async with self._acting:
            sample = await self._sample("preload")
            pending = list(unloaders)
            while sample is not None and sample.available_bytes - headroom < need_bytes and pending:
                unload = pending.pop(0)
                if await self._call(action, unload):
                    unloaded.append(getattr(unload, "__name__", repr(unload)))
                    sample = await self._sample("preload")
        fits = sample is None or sample.available_bytes - headroom >= need_bytes
        emit = self._log.info if fits else self._log.warning
        emit(
            "memory.preload_check",
            need_mb=to_mb(need_bytes),
            available_mb=None if sample is None else to_mb(sample.available_bytes),
            headroom_mb=self._settings.model_headroom_mb,
            fits=fits,
            unloaded=unloaded,
            measured=sample is not None,
            duration_ms=self._ms_since(started),
        )
        return fits

    # ----------------------------------------------------------------------- sampling and output

    async def _sample(self, purpose: str) -> MemorySample | None:
        """A sample from the probe in a worker thread, published; None (logged) if it failed."""
        try:
            sample = await asyncio.to_thread(self._probe.sample)
        except Exception as exc:  # noqa: BLE001 - a failed probe must not stop the guard
            self._state.probe_error = f"{type(exc).__name__}: {exc}"
            self._log.error("memory.probe_failed", purpose=purpose, error=self._state.probe_error)
            return None
        self._state.sample = sample
        self._state.sampled_at = time.time()
        self._publish(sample)
        return sample

    def _publish(self, sample: MemorySample) -> None:
        """Set the memory gauges; a reading the host lacks (PSI, a first rate) is NaN."""
        m = self._metrics
        if m is None:
            return
        nan = math.nan
        m.memory_available_bytes.set(sample.available_bytes)
        m.memory_total_bytes.set(sample.total_bytes)
        m.swap_used_bytes.set(sample.swap_used_bytes)
        in_rate, out_rate = sample.swap_in_bytes_per_s, sample.swap_out_bytes_per_s
        m.swap_in_bytes_per_second.set(nan if in_rate is None else in_rate)
        m.swap_out_bytes_per_second.set(nan if out_rate is None else out_rate)
        psi = sample.psi_some_avg10
        m.memory_psi_some_avg10.set(nan if psi is None else psi)
        for gone in self._state.rss_labels - sample.rss_bytes.keys():
            m.process_rss_bytes.remove(gone)
        for name, rss in sample.rss_bytes.items():
            m.process_rss_bytes.labels(process=name).set(rss)
        self._state.rss_labels = frozenset(sample.rss_bytes)

    def snapshot(self) -> dict[str, Any]:
        """The guard's view for `GET /status`; `{"level": "unknown"}` before the first check."""
        state = self._state
        if not self._settings.enabled:
            return {"level": "disabled"}
        sample, assessment = state.sample, state.assessment
        if sample is None or assessment is None or state.sampled_at is None:
            out: dict[str, Any] = {"level": "unknown"}
            if state.probe_error:
                out["probe_error"] = state.probe_error
            return out
        return {
            "level": self.level.value,
            "reasons": list(assessment.reasons),
            **_sample_fields(sample, with_swap_total=True),
            "sampled_at": datetime.fromtimestamp(state.sampled_at, UTC).isoformat(),
            "interval_s": self._settings.interval_s,
            "probe_error": state.probe_error,
        }

    def _ms_since(self, started: float) -> float:
        return round((self._clock() - started) * 1000, 1)


def _sample_fields(sample: MemorySample, *, with_swap_total: bool = False) -> dict[str, Any]:
    """A sample's readings in MB, as log events and `/status` show them."""
    swap_total = {"swap_total_mb": to_mb(sample.swap_total_bytes)} if with_swap_total else {}
    return {
        "available_mb": to_mb(sample.available_bytes),
        "total_mb": to_mb(sample.total_bytes),
        **swap_total,
        "swap_used_mb": to_mb(sample.swap_used_bytes),
        "swap_in_mb_s": to_mb(sample.swap_in_bytes_per_s),
        "swap_out_mb_s": to_mb(sample.swap_out_bytes_per_s),
        "psi_some_avg10": sample.psi_some_avg10,
        "psi_full_avg10": sample.psi_full_avg10,
        "rss_mb": {name: to_mb(value) for name, value in sample.rss_bytes.items()},
    }


def schedule_memory_guard(
    scheduler: AsyncIOScheduler,
    guard: MemoryGuard,
    interval_s: float,
    *,
    after: Callable[[MemorySample | None], None] | None = None,
) -> None:
    """Run `guard.check` every `interval_s` on the scheduler's event loop, first right away;
    then `after` with the guard's latest sample (the status page's history is filled so, on
    this schedule rather than one of its own).

    One instance at a time; missed runs coalesce into one, and a run late by up to a whole
    interval (a busy loop) still happens rather than being dropped.
    """

    async def check() -> None:
        await guard.check()
        if after is not None:
            after(guard.last_sample)

    scheduler.add_job(
        check,
        "interval",
        seconds=interval_s,
        id="memory_guard",
        name="memory guard",
        max_instances=1,
        coalesce=True,
        misfire_grace_time=max(1, math.ceil(interval_s)),
        next_run_time=datetime.now(UTC),
        replace_existing=True,
    )
