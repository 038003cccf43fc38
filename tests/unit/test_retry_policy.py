"""The retry policy: which failures are worth another attempt, and how long to wait before it."""

from __future__ import annotations

import random

import pytest

from ragvisor.config import RetrySettings
from ragvisor.errors import (
    BackendError,
    BackendOutOfMemory,
    BackendRejected,
    BackendTimeout,
    BackendUnavailable,
    InputError,
    Overloaded,
)
from ragvisor.supervise.retry import RetryPolicy, is_hang, is_retryable, outcome, timeout_phase


@pytest.mark.parametrize(
    "exc",
    [
        BackendUnavailable("connection refused"),
        BackendTimeout("no first token", phase="first_token"),
        BackendError("answered 500"),
        TimeoutError(),
    ],
)
def test_transient_failures_are_retryable(exc):
    """A refused connection, a timeout and a 5xx may be gone on the next attempt."""
    assert is_retryable(exc)


@pytest.mark.parametrize(
    "exc",
    [
        BackendRejected("400: bad request"),
        BackendOutOfMemory("model requires more system memory"),
        InputError("question too long"),
        Overloaded("lane full"),
        ValueError("a bug"),
    ],
)
def test_failures_that_would_repeat_are_not_retryable(exc):
    """Our own bad request, an out-of-memory refusal and non-backend errors are never retried."""
    assert not is_retryable(exc)


@pytest.mark.parametrize(
    ("exc", "label"),
    [
        (BackendTimeout("stall", phase="stall"), "timeout"),
        (TimeoutError(), "timeout"),
        (BackendUnavailable("refused"), "unavailable"),
        (BackendRejected("400"), "rejected"),
        (BackendOutOfMemory("oom"), "oom"),
        (BackendError("500"), "error"),
        (RuntimeError("other"), "error"),
    ],
)
def test_outcome_labels_name_the_kind_of_failure(exc, label):
    """Each failure is counted under one of timeout, unavailable, rejected, oom, error."""
    assert outcome(exc) == label


def test_only_timeouts_are_hangs():
    """The ladder climbs on silence, not on a backend that answers with an error."""
    assert is_hang(BackendTimeout("x", phase="first_token"))
    assert is_hang(TimeoutError())
    assert not is_hang(BackendError("500"))
    assert not is_hang(BackendUnavailable("refused"))


def test_timeout_phase_names_the_missed_deadline():
    """A BackendTimeout carries its phase; a bare TimeoutError is the request's."""
    assert timeout_phase(BackendTimeout("x", phase="stall")) == "stall"
    assert timeout_phase(TimeoutError()) == "request"


@pytest.mark.parametrize("retry", [1, 2, 3, 4, 5, 8])
def test_backoff_stays_within_the_full_jitter_ceiling(retry):
    """Every delay lies in [0, min(max, base * 2^(n-1))]."""
    policy = RetryPolicy(attempts=10, backoff_base_s=0.25, backoff_max_s=1.5)
    ceiling = min(1.5, 0.25 * 2 ** (retry - 1))
    rng = random.Random(retry)
    delays = [policy.delay_s(retry, rng) for _ in range(500)]
    assert all(0.0 <= d <= ceiling for d in delays)
    # Spread over the whole range, not pinned to the ceiling or to zero.
    assert min(delays) < ceiling * 0.1
    assert max(delays) > ceiling * 0.9


def test_backoff_is_jittered_and_reproducible_with_a_seed():
    """Two clients do not retry in lockstep, yet a seeded generator replays the same delays."""
    policy = RetryPolicy(attempts=5, backoff_base_s=1.0, backoff_max_s=8.0)
    first = [policy.delay_s(3, random.Random(7)) for _ in range(3)]
    assert len(set(first)) == 1  # same seed, same delay
    rng = random.Random(7)
    sequence = [policy.delay_s(3, rng) for _ in range(20)]
    assert len(set(sequence)) == 20  # one generator, twenty different delays


def test_a_zero_base_means_retry_at_once():
    """backoff_base_s = 0 turns the backoff off."""
    policy = RetryPolicy(attempts=3, backoff_base_s=0.0, backoff_max_s=4.0)
    assert policy.delay_s(1, random.Random(1)) == 0.0
    assert policy.delay_s(5, random.Random(1)) == 0.0


def test_policy_from_settings():
    """`[<backend>.retry]` maps one to one onto the policy."""
    settings = RetrySettings(attempts=5, backoff_base_s=0.1, backoff_max_s=2.0)
    assert RetryPolicy.from_settings(settings) == RetryPolicy(5, 0.1, 2.0)
