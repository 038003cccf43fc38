"""The guard's pure decisions: a sample and the settings give a level (ok, pressure,
critical); the level rises at once and falls only after a few calm checks clear the marks by a
margin (hysteresis, so the guard does not flap around a threshold)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ragvisor.config import MemorySettings
from ragvisor.metrics import MEMORY_LEVEL_VALUE
from ragvisor.supervise.memory.sample import MB, MemorySample


class MemoryLevel(enum.StrEnum):
    """How short memory is; each level says what the daemon gives up."""

    OK = "ok"
    PRESSURE = "pressure"  # idle models unloaded, /ask answers extractively
    CRITICAL = "critical"  # and /ask is shed with 503

    @property
    def severity(self) -> int:
        """0, 1, 2: the order of the levels (and the value of the `memory_level` gauge)."""
        return MEMORY_LEVEL_VALUE[self.value]


@dataclass(frozen=True, slots=True)
class Assessment:
    """A level and the reasons for it, each naming the config key whose mark was crossed."""

    level: MemoryLevel
    reasons: tuple[str, ...]


def assess(sample: MemorySample, settings: MemorySettings, *, margin_mb: int = 0) -> Assessment:
    """The level one sample calls for. Pure.

    CRITICAL: available below `critical_available_mb`. PRESSURE: available below
    `low_available_mb`, swap-in above `swap_in_mb_s`, PSI some avg10 above `psi_some_avg10`, or
    the watched RSS above `budget_mb` (each rule off when its key is 0). `margin_mb` raises the
    available marks and lowers the budget: the stricter test a level must pass to be left.
    """
    available_mb = sample.available_bytes / MB
    margin = f" + recovery margin {margin_mb}" if margin_mb else ""
    reasons: list[str] = []
    level = MemoryLevel.OK
    if available_mb < settings.critical_available_mb + margin_mb:
        level = MemoryLevel.CRITICAL
        reasons.append(
            f"available {available_mb:.0f} MB < memory.critical_available_mb "
            f"{settings.critical_available_mb}{margin}"
        )
    elif available_mb < settings.low_available_mb + margin_mb:
        level = MemoryLevel.PRESSURE
        reasons.append(
            f"available {available_mb:.0f} MB < memory.low_available_mb "
            f"{settings.low_available_mb}{margin}"
        )
    swap_in = sample.swap_in_bytes_per_s
    if settings.swap_in_mb_s > 0 and swap_in is not None and swap_in / MB > settings.swap_in_mb_s:
        reasons.append(
            f"swap-in {swap_in / MB:.1f} MB/s > memory.swap_in_mb_s {settings.swap_in_mb_s:g}"
        )
    psi = sample.psi_some_avg10
    if settings.psi_some_avg10 > 0 and psi is not None and psi > settings.psi_some_avg10:
        reasons.append(
            f"PSI some avg10 {psi:.1f} > memory.psi_some_avg10 {settings.psi_some_avg10:g}"
        )
    rss_mb = sample.watched_rss_bytes / MB
    if settings.budget_mb > 0 and rss_mb > settings.budget_mb - margin_mb:
        parts = ", ".join(f"{name} {value / MB:.0f}" for name, value in sample.rss_bytes.items())
        budget_margin = f" - recovery margin {margin_mb}" if margin_mb else ""
        reasons.append(
            f"watched RSS {rss_mb:.0f} MB ({parts}) > memory.budget_mb "
            f"{settings.budget_mb}{budget_margin}"
        )
    if level is MemoryLevel.OK and reasons:
        level = MemoryLevel.PRESSURE
    return Assessment(level, tuple(reasons))


def capacity_settings(settings: MemorySettings) -> MemorySettings:
    """The settings with the rate rules (swap-in, PSI) off: what an unload can cure at once.

    Swap-in rates and PSI averages lag by seconds, so right after an unload only available
    memory and RSS say whether it helped.
    """
    return settings.model_copy(update={"swap_in_mb_s": 0.0, "psi_some_avg10": 0.0})


@dataclass(frozen=True, slots=True)
class LevelState:
    """The guard's level and how many checks in a row have argued for a lower one."""

    level: MemoryLevel = MemoryLevel.OK
    calm_checks: int = 0


def next_level(
    state: LevelState, measured: MemoryLevel, relaxed: MemoryLevel, *, recover_checks: int
) -> LevelState:
    """Hysteresis. Pure.

    The level rises on the first sample that calls for it: a model load eats hundreds of MB in
    seconds, and waiting for a second sample could be too late. It falls only after
    `recover_checks` samples in a row whose `relaxed` level (thresholds widened by the recovery
    margin) is below it, so a box hovering at a mark does not flip /ask back and forth.
    """
    if measured.severity > state.level.severity:
        return LevelState(measured, 0)
    if relaxed.severity < state.level.severity:
        calm = state.calm_checks + 1
        return LevelState(relaxed, 0) if calm >= recover_checks else LevelState(state.level, calm)
    return LevelState(state.level, 0)
