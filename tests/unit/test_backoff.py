"""One growth rule for every wait in supervision, and the restart history built on it."""

from __future__ import annotations

import random

from ragvisor.supervise.backoff import HOUR_S, RestartHistory, RestartPolicy, backoff_s
from ragvisor.supervise.retry import RetryPolicy
from ragvisor.testing import FakeClock


def test_the_wait_doubles_from_its_base_up_to_its_cap():
    """1, 2, 4, 8, then the cap; no wait before a first step."""
    assert [backoff_s(1.0, 10.0, step) for step in range(0, 7)] == [0, 1, 2, 4, 8, 10, 10]
    assert backoff_s(0.5, 600.0, 10_000) == 600.0  # no overflow on a long streak


def test_a_retry_waits_a_jittered_share_of_the_same_growth():
    """Full jitter: each retry's wait is drawn below the restart rule's wait for that step."""
    policy, rng = RetryPolicy(attempts=5, backoff_base_s=0.25, backoff_max_s=1.0), random.Random(7)
    for retry in range(1, 6):
        waits = [policy.delay_s(retry, rng) for _ in range(200)]
        assert max(waits) <= backoff_s(0.25, 1.0, retry)
        assert min(waits) >= 0.0


def history(budget: int | None = None) -> tuple[RestartHistory, FakeClock]:
    clock = FakeClock()
    policy = RestartPolicy(base_s=10.0, max_s=40.0, quiet_s=HOUR_S, budget_per_hour=budget)
    return RestartHistory(policy, clock), clock


def test_restarts_in_a_run_wait_longer_each_time():
    """The first restart may run at once; each next one waits twice as long after the last."""
    restarts, clock = history()
    assert restarts.wait_s() == 0.0
    restarts.note()
    assert restarts.wait_s() == 10.0
    clock.advance(10.0)
    restarts.note()
    assert restarts.wait_s() == 20.0
    assert restarts.next_delay_s() == 40.0
    clock.advance(5.0)
    assert restarts.wait_s() == 15.0


def test_a_quiet_period_starts_the_backoff_again_from_its_base():
    """After `quiet_s` without a restart the run is over: the next restart may run at once."""
    restarts, clock = history()
    for _ in range(3):
        restarts.note()
        clock.advance(restarts.wait_s())
    assert restarts.streak() == 3
    clock.advance(HOUR_S)
    assert restarts.streak() == 0
    assert restarts.wait_s() == 0.0
    assert restarts.next_delay_s() == 10.0


def test_the_budget_counts_the_last_hour_only():
    """A spent budget refuses restarts until the oldest of them is an hour old."""
    restarts, clock = history(budget=2)
    restarts.note()
    clock.advance(100.0)
    restarts.note()
    assert restarts.over_budget()
    assert restarts.last_hour() == 2
    clock.advance(HOUR_S - 99.0)
    assert restarts.last_hour() == 1
    assert not restarts.over_budget()


def test_no_budget_means_never_over_it():
    """A policy without a budget (the worker's crash respawns) is never refused by one."""
    restarts, _ = history(budget=None)
    for _ in range(100):
        restarts.note()
    assert not restarts.over_budget()
