"""The circuit breaker: closed → open → half-open, one trial, a doubling pause, thread safety."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import structlog
from structlog.testing import capture_logs

from ragvisor.config import BreakerSettings
from ragvisor.errors import BackendUnavailable
from ragvisor.metrics import Metrics
from ragvisor.supervise.breaker import BreakerState, CircuitBreaker
from ragvisor.testing import FakeClock

SETTINGS = BreakerSettings(failure_threshold=3, open_s=10.0, open_max_s=35.0)


def make(
    settings: BreakerSettings = SETTINGS, metrics: Metrics | None = None, log: object = None
) -> tuple[CircuitBreaker, FakeClock]:
    clock = FakeClock()
    return CircuitBreaker("x", settings, metrics=metrics, log=log, clock=clock), clock


def fail(breaker: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        breaker.allow()
        breaker.record_failure("timeout")


def gauge(metrics: Metrics) -> float | None:
    return metrics.registry.get_sample_value("ragvisor_breaker_state", {"backend": "x"})


def transitions(metrics: Metrics, state: str) -> float:
    value = metrics.registry.get_sample_value(
        "ragvisor_breaker_transitions_total", {"backend": "x", "state": state}
    )
    return value or 0.0


def test_opens_after_threshold_consecutive_failures_not_before():
    """Two failures leave it closed; the third opens it."""
    breaker, _ = make()
    fail(breaker, 2)
    assert breaker.state is BreakerState.CLOSED
    breaker.allow()  # still lets calls through
    breaker.record_failure("timeout")
    assert breaker.state is BreakerState.OPEN


def test_a_success_resets_the_count():
    """Failures must be consecutive: a success in between starts the count over."""
    breaker, _ = make()
    fail(breaker, 2)
    breaker.allow()
    breaker.record_success()
    fail(breaker, 2)
    assert breaker.state is BreakerState.CLOSED
    assert breaker.snapshot()["consecutive_failures"] == 2


def test_open_refuses_at_once_with_the_time_until_the_trial():
    """An open breaker raises BackendUnavailable carrying the seconds until the next trial."""
    breaker, clock = make()
    fail(breaker, 3)
    clock.advance(4)
    with pytest.raises(BackendUnavailable, match="circuit is open") as caught:
        breaker.allow()
    assert caught.value.retry_after_s == pytest.approx(6.0)
    assert breaker.snapshot()["retry_in_s"] == 6.0


def test_retry_after_is_at_least_one_second():
    """Retry-After is never 0, even in the last instant of the pause."""
    breaker, clock = make()
    fail(breaker, 3)
    clock.advance(9.95)
    with pytest.raises(BackendUnavailable) as caught:
        breaker.allow()
    assert caught.value.retry_after_s == 1.0


def test_after_the_pause_exactly_one_trial_goes_through():
    """Half-open lets one caller through; a second one, while the trial runs, is refused."""
    breaker, clock = make()
    fail(breaker, 3)
    clock.advance(10)
    assert breaker.state is BreakerState.HALF_OPEN
    breaker.allow()  # the trial
    with pytest.raises(BackendUnavailable):
        breaker.allow()


def test_a_successful_trial_closes():
    """The trial's success closes the breaker and resets the pause to open_s."""
    breaker, clock = make()
    fail(breaker, 3)
    clock.advance(10)
    breaker.allow()
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED
    breaker.allow()
    breaker.allow()  # no trial limit once closed
    # Opening again pauses open_s, not a doubled pause.
    fail(breaker, 3)
    clock.advance(9.9)
    assert breaker.state is BreakerState.OPEN
    clock.advance(0.1)
    assert breaker.state is BreakerState.HALF_OPEN


def test_a_failed_trial_reopens_with_a_doubled_pause_capped_at_open_max():
    """10 s, then 20 s, then 35 s (open_max_s), then 35 s again."""
    breaker, clock = make()
    fail(breaker, 3)
    clock.advance(10)
    for pause in (20.0, 35.0, 35.0):
        breaker.allow()  # the trial
        breaker.record_failure("timeout")
        assert breaker.state is BreakerState.OPEN
        clock.advance(pause - 0.01)
        assert breaker.state is BreakerState.OPEN, pause
        clock.advance(0.01)
        assert breaker.state is BreakerState.HALF_OPEN, pause


def test_allow_tells_the_trial_apart():
    """allow() is False for calls through a closed breaker, True for the half-open trial."""
    breaker, clock = make()
    assert breaker.allow() is False
    fail(breaker, 3)
    clock.advance(10)
    assert breaker.allow() is True


def test_a_late_failure_while_open_changes_nothing():
    """A call that began before the breaker opened and fails now neither counts nor reopens."""
    breaker, clock = make()
    fail(breaker, 3)
    clock.advance(4)
    for _ in range(5):
        breaker.record_failure("timeout", trial=False)
    snap = breaker.snapshot()
    assert snap["consecutive_failures"] == 3
    assert snap["opened"] == 1
    assert snap["retry_in_s"] == 6.0  # the pause was not restarted


def test_in_half_open_only_the_trials_failure_reopens():
    """A straggler's failure leaves a half-open breaker alone; the trial's failure reopens it."""
    breaker, clock = make()
    fail(breaker, 3)
    clock.advance(10)
    assert breaker.allow() is True
    breaker.record_failure("timeout", trial=False)
    assert breaker.state is BreakerState.HALF_OPEN
    breaker.record_neutral(trial=False)  # nor does a straggler's neutral end free the trial
    with pytest.raises(BackendUnavailable):
        breaker.allow()
    breaker.record_failure("timeout", trial=True)
    assert breaker.state is BreakerState.OPEN


def test_a_neutral_end_of_the_trial_lets_the_next_caller_try():
    """A trial whose caller left tells nothing; the next caller becomes the trial."""
    breaker, clock = make()
    fail(breaker, 3)
    clock.advance(10)
    breaker.allow()
    breaker.record_neutral()
    assert breaker.state is BreakerState.HALF_OPEN
    breaker.allow()  # the new trial


def test_force_open_holds_the_breaker_open_past_its_pause():
    """While the ladder climbs, the breaker stays open however long the climb takes."""
    breaker, clock = make()
    breaker.force_open("ladder: hangs")
    assert breaker.state is BreakerState.OPEN
    clock.advance(1000)
    assert breaker.state is BreakerState.OPEN
    with pytest.raises(BackendUnavailable):
        breaker.allow()
    # A call that started before the climb and succeeds now does not reopen traffic.
    breaker.record_success()
    assert breaker.state is BreakerState.OPEN


def test_half_open_now_lets_the_next_call_be_the_trial():
    """A passed health probe moves an open (held) breaker to half-open at once."""
    breaker, _ = make()
    breaker.force_open("ladder: hangs")
    breaker.half_open_now()
    assert breaker.state is BreakerState.HALF_OPEN
    breaker.allow()
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED


def test_release_hold_starts_the_usual_pause_from_now():
    """A climb that ends without a healthy backend leaves the usual pause running from then."""
    breaker, clock = make()
    breaker.force_open("ladder: hangs")
    clock.advance(500)
    breaker.release_hold()
    clock.advance(9.9)
    assert breaker.state is BreakerState.OPEN
    clock.advance(0.1)
    assert breaker.state is BreakerState.HALF_OPEN


def test_half_open_now_is_a_no_op_on_a_closed_breaker():
    """A probe passing while the breaker is closed changes nothing."""
    breaker, _ = make()
    breaker.half_open_now()
    assert breaker.state is BreakerState.CLOSED


def test_gauge_and_transition_counter_follow_the_state():
    """ragvisor_breaker_state reads 0/2/1/0 and each entered state is counted."""
    metrics = Metrics()
    breaker, clock = make(metrics=metrics)
    assert gauge(metrics) == 0
    fail(breaker, 3)
    assert gauge(metrics) == 2
    clock.advance(10)
    assert breaker.state is BreakerState.HALF_OPEN
    assert gauge(metrics) == 1
    breaker.allow()
    breaker.record_failure("timeout")
    assert gauge(metrics) == 2
    clock.advance(20)
    breaker.allow()
    breaker.record_success()
    assert gauge(metrics) == 0
    assert transitions(metrics, "open") == 2
    assert transitions(metrics, "half_open") == 2
    assert transitions(metrics, "closed") == 1


def test_transitions_are_logged_with_their_reason():
    """Every state change is a breaker.<state> warning naming the backend and the cause."""
    with capture_logs() as logs:
        breaker, clock = make(log=structlog.get_logger(component="supervise"))
        fail(breaker, 3)
        clock.advance(10)
        breaker.allow()
        breaker.record_success()
    events = [e for e in logs if e["event"].startswith("breaker.")]
    assert [e["event"] for e in events] == ["breaker.open", "breaker.half_open", "breaker.closed"]
    opened = events[0]
    assert opened["backend"] == "x"
    assert opened["reason"] == "timeout"
    assert opened["open_s"] == 10.0
    assert opened["consecutive_failures"] == 3
    assert opened["log_level"] == "warning"
    assert events[1]["previous"] == "open"


def test_snapshot_reports_state_failures_and_openings():
    """`/status` sees the state, the failure run, how often it opened and when it retries."""
    breaker, clock = make()
    assert breaker.snapshot() == {
        "state": "closed",
        "consecutive_failures": 0,
        "opened": 0,
        "retry_in_s": None,
    }
    fail(breaker, 3)
    clock.advance(2.5)
    snap = breaker.snapshot()
    assert snap["state"] == "open"
    assert snap["opened"] == 1
    assert snap["retry_in_s"] == 7.5


def test_many_threads_recording_keep_the_breaker_consistent():
    """Concurrent failures open it exactly once; concurrent trials admit exactly one caller."""
    metrics = Metrics()
    breaker, clock = make(BreakerSettings(failure_threshold=50, open_s=5), metrics=metrics)
    start = threading.Barrier(16)

    def hammer() -> None:
        start.wait(10)
        for _ in range(200):
            try:
                breaker.allow()
            except BackendUnavailable:
                continue
            breaker.record_failure("error")

    with ThreadPoolExecutor(16) as pool:
        for future in [pool.submit(hammer) for _ in range(16)]:
            future.result(timeout=30)
    assert breaker.state is BreakerState.OPEN
    assert transitions(metrics, "open") == 1
    assert breaker.snapshot()["opened"] == 1

    clock.advance(5)
    admitted: list[int] = []
    gate = threading.Barrier(16)

    def try_trial(i: int) -> None:
        gate.wait(10)
        try:
            breaker.allow()
        except BackendUnavailable:
            return
        admitted.append(i)

    with ThreadPoolExecutor(16) as pool:
        for future in [pool.submit(try_trial, i) for i in range(16)]:
            future.result(timeout=30)
    assert len(admitted) == 1
