"""The daemon's one scheduler: which jobs it holds for which settings."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from ragvisor.config import parse_settings
from ragvisor.runtime.history import History
from ragvisor.runtime.lifecycle import build_scheduler


def services(sync: dict, *, guard: bool, history: bool = False) -> SimpleNamespace:
    """Just what build_scheduler reads: the settings, the sync runner, the memory guard and the
    status page's history."""
    settings = parse_settings({"sync": sync})
    return SimpleNamespace(
        settings=settings,
        sync_runner=SimpleNamespace(run_quietly=lambda trigger: None),
        memory_guard=SimpleNamespace(check=lambda: None) if guard else None,
        history=History.for_window(3600, 5) if history else None,
    )


def jobs(sync: dict, *, guard: bool = True, history: bool = False) -> dict[str, str]:
    scheduler = build_scheduler(services(sync, guard=guard, history=history))  # type: ignore[arg-type]
    return {job.id: type(job.trigger).__name__ for job in scheduler.get_jobs()}


@pytest.mark.parametrize(
    ("sync", "guard", "expected"),
    [
        ({"interval_s": 300, "on_start": True}, True, {"sync": "IntervalTrigger"}),
        ({"interval_s": 300, "on_start": False}, True, {"sync": "IntervalTrigger"}),
        ({"interval_s": 0, "on_start": True}, True, {"sync": "DateTrigger"}),
        ({"interval_s": 0, "on_start": False}, True, {}),
        ({"interval_s": 0, "on_start": False}, False, {}),
    ],
)
def test_the_scheduler_holds_the_sync_and_the_memory_guard(sync, guard, expected):
    """A periodic sync is an interval job, a sync only at start a one-off, and the memory guard
    (when enabled) an interval job beside it, all on the one scheduler — with the store watch
    (generations switched and leases abandoned by other daemons) always."""
    expected = expected | {"store-watch": "IntervalTrigger"}
    if guard:
        expected = expected | {"memory_guard": "IntervalTrigger"}
    assert jobs(sync, guard=guard) == expected


def test_the_history_is_sampled_by_the_memory_guard_job_or_on_its_own_without_one():
    """With the guard, the history adds no job of its own (it is sampled after each check);
    with `memory.enabled = false` it gets one, on the same interval."""
    quiet = {"interval_s": 0, "on_start": False}
    assert jobs(quiet, guard=True, history=True) == {
        "memory_guard": "IntervalTrigger",
        "store-watch": "IntervalTrigger",
    }
    assert jobs(quiet, guard=False, history=True) == {
        "history": "IntervalTrigger",
        "store-watch": "IntervalTrigger",
    }


def next_sync_in_s(sync: dict) -> float | None:
    """Seconds from now to the sync job's next run once the scheduler has started."""

    async def started() -> float | None:
        scheduler = build_scheduler(services(sync, guard=False))  # type: ignore[arg-type]
        scheduler.start(paused=True)
        try:
            when = scheduler.get_job("sync").next_run_time
            return None if when is None else (when - datetime.now(UTC)).total_seconds()
        finally:
            scheduler.shutdown(wait=False)

    return asyncio.run(started())


def test_a_periodic_sync_runs_at_start_only_when_asked_and_always_runs_later():
    """`sync.on_start` makes the first run now; without it the first run is one interval on —
    the job is never left paused (APScheduler's meaning of a next_run_time of None)."""
    at_start = next_sync_in_s({"interval_s": 300, "on_start": True})
    later = next_sync_in_s({"interval_s": 300, "on_start": False})
    assert at_start is not None
    assert at_start <= 1
    assert later is not None
    assert 290 < later <= 300
