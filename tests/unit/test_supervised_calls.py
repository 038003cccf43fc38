"""Supervised calls: retries within the request deadline, the breaker, the ladder's hang count.

The generator against real HTTP is in tests/integration/test_supervised_calls.py; here the
calls are plain functions that fail on cue, and token counting goes through httpx's
MockTransport.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import httpx
import numpy as np
import pytest
import structlog
from structlog.testing import capture_logs

from ragvisor.config import BreakerSettings, LadderSettings
from ragvisor.core.deadline import remaining_s, request_deadline
from ragvisor.errors import (
    BackendError,
    BackendOutOfMemory,
    BackendRejected,
    BackendTimeout,
    BackendUnavailable,
)
from ragvisor.metrics import Metrics
from ragvisor.ollama.client import OllamaClient
from ragvisor.supervise import calls
from ragvisor.supervise.breaker import BreakerState, CircuitBreaker
from ragvisor.supervise.calls import (
    SupervisedEmbedder,
    SupervisedGenerator,
    Supervisor,
)
from ragvisor.supervise.ladder import EscalationLadder
from ragvisor.supervise.retry import RetryPolicy
from ragvisor.testing import FakeClock
from tests.unit.test_ladder import RecordingControl

POLICY = RetryPolicy(attempts=3, backoff_base_s=0.01, backoff_max_s=0.05)


def supervisor(
    policy: RetryPolicy = POLICY,
    *,
    threshold: int = 5,
    metrics: Metrics | None = None,
    log: Any = None,
    clock: FakeClock | None = None,
    ladder: Callable[[CircuitBreaker], EscalationLadder] | None = None,
) -> Supervisor:
    breaker = CircuitBreaker(
        "gen",
        BreakerSettings(failure_threshold=threshold, open_s=10.0),
        metrics=metrics,
        clock=clock or FakeClock(0.0),
    )
    return Supervisor(
        "gen",
        policy,
        breaker,
        ladder(breaker) if ladder is not None else None,
        metrics=metrics,
        log=log,
        rng=random.Random(3),
    )


class Flaky:
    """An async backend call failing with `errors` in turn, then answering "ok" (or, with
    `repeat`, failing with the last error for good); it records the budget of each attempt."""

    def __init__(self, *errors: BaseException, repeat: bool = False, hold_s: float = 0.0) -> None:
        self.errors = list(errors)
        self.repeat = repeat
        self.hold_s = hold_s
        self.budgets: list[float | None] = []

    async def __call__(self, left: float | None) -> str:
        self.budgets.append(left)
        if self.hold_s:
            await asyncio.sleep(self.hold_s if left is None else min(self.hold_s, left))
        if self.errors:
            raise self.errors[0] if self.repeat and len(self.errors) == 1 else self.errors.pop(0)
        return "ok"

    @property
    def calls(self) -> int:
        return len(self.budgets)


def forever(error: BaseException) -> Flaky:
    """A call that fails with `error` on every attempt."""
    return Flaky(error, repeat=True)


def then_ok(*errors: BaseException) -> Flaky:
    """A call that fails with each of `errors` once, then answers."""
    return Flaky(*errors)


def value(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, {"backend": "gen", **labels}) or 0.0


def test_a_failed_call_is_retried_until_it_answers():
    """Two transient failures, then an answer: the caller gets the answer; all is counted."""
    metrics = Metrics()
    sup = supervisor(metrics=metrics)
    fn = then_ok(BackendUnavailable("refused"), BackendTimeout("slow", phase="first_token"))
    with capture_logs() as logs:
        sup._log = structlog.get_logger(component="supervise")
        assert asyncio.run(sup.call("chat", fn)) == "ok"
    assert fn.calls == 3
    assert value(metrics, "ragvisor_backend_calls_total", outcome="unavailable") == 1
    assert value(metrics, "ragvisor_backend_calls_total", outcome="timeout") == 1
    assert value(metrics, "ragvisor_backend_calls_total", outcome="ok") == 1
    assert value(metrics, "ragvisor_backend_timeouts_total", phase="first_token") == 1
    assert value(metrics, "ragvisor_backend_retries_total") == 2
    names = [e["event"] for e in logs]
    assert names == ["backend.retry", "backend.retry", "backend.recovered"]
    assert logs[0]["attempt"] == 1
    assert logs[0]["outcome"] == "unavailable"
    assert 0 <= logs[0]["retry_in_ms"] <= 10  # base 0.01 s for the first retry
    assert logs[2]["attempt"] == 3
    assert "duration_ms" in logs[2]
    assert sup.breaker.snapshot()["consecutive_failures"] == 0


def test_the_call_gives_up_after_its_attempts():
    """Every attempt failing: `attempts` tries, then the last error propagates."""
    metrics = Metrics()
    sup = supervisor(metrics=metrics)
    fn = forever(BackendError("answered 500"))
    with capture_logs() as logs:
        sup._log = structlog.get_logger(component="supervise")
        with pytest.raises(BackendError, match="500"):
            asyncio.run(sup.call("chat", fn))
    assert fn.calls == 3
    assert [e["event"] for e in logs] == ["backend.retry", "backend.retry", "backend.failed"]
    assert logs[-1]["retry_in_ms"] is None
    assert value(metrics, "ragvisor_backend_retries_total") == 2
    # The breaker judges calls, not attempts: one call failed.
    assert sup.breaker.snapshot()["consecutive_failures"] == 1


def test_a_rejected_request_is_never_retried_nor_held_against_the_backend():
    """A 4xx our request caused: one attempt, and the breaker does not count it."""
    metrics = Metrics()
    sup = supervisor(metrics=metrics)
    fn = forever(BackendRejected("400: context too long"))
    with pytest.raises(BackendRejected):
        asyncio.run(sup.call("chat", fn))
    assert fn.calls == 1
    assert value(metrics, "ragvisor_backend_calls_total", outcome="rejected") == 1
    assert value(metrics, "ragvisor_backend_retries_total") == 0
    assert sup.breaker.snapshot()["consecutive_failures"] == 0


def test_out_of_memory_is_not_retried_but_counts_against_the_backend():
    """Retrying an OOM refusal makes it worse; the breaker still sees a failing backend."""
    sup = supervisor()
    fn = forever(BackendOutOfMemory("model requires more system memory"))
    with pytest.raises(BackendOutOfMemory):
        asyncio.run(sup.call("chat", fn))
    assert fn.calls == 1
    assert sup.breaker.snapshot()["consecutive_failures"] == 1


def test_retries_stop_when_the_request_deadline_leaves_no_time():
    """Inside request_deadline(), attempts get what is left and none starts without time."""
    sup = supervisor(RetryPolicy(attempts=20, backoff_base_s=0.05, backoff_max_s=0.1))
    fn = Flaky(BackendTimeout("slow", phase="first_token"), repeat=True, hold_s=0.3)

    async def bounded() -> str:
        with request_deadline(time.monotonic() + 1.0):
            return await sup.call("chat", fn)

    started = time.monotonic()
    with pytest.raises(BackendTimeout):
        asyncio.run(bounded())
    elapsed = time.monotonic() - started
    assert elapsed < 2.0  # the deadline plus a generous margin
    assert 2 <= fn.calls < 20
    budgets = [b for b in fn.budgets if b is not None]
    assert len(budgets) == fn.calls
    assert budgets[0] <= 1.0
    assert budgets == sorted(budgets, reverse=True)  # each attempt gets less
    assert min(budgets) >= calls.MIN_ATTEMPT_S


def test_an_explicit_until_wins_over_no_request_deadline():
    """before_attempt measures against `until` when given, the request's deadline otherwise."""
    sup = supervisor()
    assert remaining_s() is None
    assert sup.before_attempt("chat") is None
    left = sup.before_attempt("chat", until=time.monotonic() + 5)
    assert left is not None
    assert 4 < left <= 5
    with pytest.raises(BackendTimeout, match="leaves no time") as caught:
        sup.before_attempt("chat", until=time.monotonic() + 0.05)
    assert caught.value.phase == "request"


def test_a_passed_request_deadline_fails_before_any_attempt():
    """No time left: BackendTimeout at once, the backend is not called and not blamed."""
    sup = supervisor()
    fn = then_ok()

    async def late() -> str:
        with request_deadline(time.monotonic() - 1):
            return await sup.call("chat", fn)

    with pytest.raises(BackendTimeout, match="no time"):
        asyncio.run(late())
    assert fn.calls == 0
    assert sup.breaker.snapshot()["consecutive_failures"] == 0


def test_an_open_breaker_fails_calls_at_once():
    """Two calls failing for good open it; the third gets BackendUnavailable, uncalled."""
    sup = supervisor(threshold=2)
    fn = forever(BackendError("answered 500"))
    for _ in range(2):
        with pytest.raises(BackendError, match="500"):
            asyncio.run(sup.call("chat", fn))
    assert fn.calls == 6
    assert sup.breaker.state is BreakerState.OPEN
    with pytest.raises(BackendUnavailable, match="circuit is open") as caught:
        asyncio.run(sup.call("chat", fn))
    assert fn.calls == 6
    assert caught.value.retry_after_s == 10.0


def test_failures_that_retries_absorb_never_open_the_breaker():
    """A call that fails twice and then answers is a success: the breaker stays closed."""
    sup = supervisor(threshold=1)
    for _ in range(5):
        fn = then_ok(BackendUnavailable("refused"), BackendError("500"))
        assert asyncio.run(sup.call("chat", fn)) == "ok"
        assert fn.calls == 3
    assert sup.breaker.state is BreakerState.CLOSED
    assert sup.breaker.snapshot()["consecutive_failures"] == 0


def test_a_call_that_began_before_the_breaker_opened_does_not_reopen_a_half_open_one():
    """Only the trial's verdict moves a half-open breaker, not a straggler failing late."""

    async def scenario() -> None:
        clock = FakeClock(0.0)
        sup = supervisor(RetryPolicy(attempts=1), threshold=1, clock=clock)
        release = asyncio.Event()

        async def straggler(_: float | None) -> str:
            await release.wait()
            raise BackendError("500, late")

        late = asyncio.create_task(sup.call("chat", straggler))
        await asyncio.sleep(0.01)  # the straggler is past the breaker, waiting
        with pytest.raises(BackendError):
            await sup.call("chat", forever(BackendError("500")))
        assert sup.breaker.state is BreakerState.OPEN
        clock.now += 10
        trial = asyncio.Event()

        async def trial_call(_: float | None) -> str:
            await trial.wait()
            return "ok"

        trial_task = asyncio.create_task(sup.call("chat", trial_call))
        await asyncio.sleep(0.01)  # the trial is in flight
        release.set()
        with pytest.raises(BackendError, match="late"):
            await late
        assert sup.breaker.state is BreakerState.HALF_OPEN
        trial.set()
        assert await trial_task == "ok"
        assert sup.breaker.state is BreakerState.CLOSED

    asyncio.run(asyncio.wait_for(scenario(), 30))


def open_breaker(sup: Supervisor) -> None:
    """One failure opens a breaker whose threshold is 1."""
    sup.breaker.allow()
    sup.breaker.record_failure("error")
    assert sup.breaker.state is BreakerState.OPEN


def test_a_half_open_trial_that_is_rejected_does_not_wedge_the_breaker():
    """A trial ending in a 4xx tells nothing about the backend; the next caller may try."""
    clock = FakeClock(0.0)
    sup = supervisor(threshold=1, clock=clock)
    open_breaker(sup)
    clock.now += 10
    with pytest.raises(BackendRejected):
        asyncio.run(sup.call("chat", forever(BackendRejected("400"))))
    assert asyncio.run(sup.call("chat", then_ok())) == "ok"
    assert sup.breaker.state is BreakerState.CLOSED


@pytest.mark.parametrize("error", [ValueError("a bug"), asyncio.CancelledError()])
def test_a_half_open_trial_that_breaks_off_does_not_wedge_the_breaker(error):
    """A trial ended by a bug or a cancellation leaves no verdict; the next caller may try."""
    clock = FakeClock(0.0)
    sup = supervisor(threshold=1, clock=clock)
    open_breaker(sup)
    clock.now += 10
    with pytest.raises(type(error)):
        asyncio.run(sup.call("chat", forever(error)))
    assert sup.breaker.state is BreakerState.HALF_OPEN
    assert asyncio.run(sup.call("chat", then_ok())) == "ok"
    assert sup.breaker.state is BreakerState.CLOSED


def test_call_sync_retries_in_a_worker_thread_within_the_request_deadline():
    """The embedder's blocking path: retried, and the deadline travels with asyncio.to_thread."""
    sup = supervisor()
    budgets: list[float | None] = []
    errors = [BackendUnavailable("refused")]

    def embed(left: float | None) -> str:
        budgets.append(left)
        if errors:
            raise errors.pop()
        return threading.current_thread().name

    async def in_thread() -> str:
        with request_deadline(time.monotonic() + 5):
            return await asyncio.to_thread(sup.call_sync, "embed", embed)

    thread = asyncio.run(in_thread())
    assert thread != threading.current_thread().name
    assert len(budgets) == 2
    assert all(b is not None and 0 < b <= 5 for b in budgets)


def test_call_sync_gives_up_and_never_retries_a_rejection():
    """Blocking calls follow the same policy as async ones."""
    sup = supervisor()
    attempts: list[int] = []

    def rejected(_: float | None) -> None:
        attempts.append(1)
        raise BackendRejected("400")

    with pytest.raises(BackendRejected):
        sup.call_sync("embed", rejected)
    assert len(attempts) == 1

    def failing(_: float | None) -> None:
        attempts.append(1)
        raise BackendUnavailable("refused")

    with pytest.raises(BackendUnavailable):
        sup.call_sync("embed", failing)
    assert len(attempts) == 1 + 3


def test_hangs_through_the_supervisor_start_the_ladder():
    """Every attempt's outcome reaches the ladder: after a call that failed with errors (two
    attempts that did not hang), four calls whose two attempts hung leave 8 of the last 10
    calls hung, no climb; the fifth's first hang (9 of 10) starts one."""

    async def scenario() -> None:
        control = RecordingControl()

        def make_ladder(breaker: CircuitBreaker) -> EscalationLadder:
            settings = LadderSettings(hang_threshold=3, probe_timeout_s=2)
            return EscalationLadder("gen", control, settings, breaker)

        sup = supervisor(
            RetryPolicy(attempts=2, backoff_base_s=0.0), threshold=10, ladder=make_ladder
        )
        assert sup.ladder is not None
        sup.ladder.bind(asyncio.get_running_loop())
        with pytest.raises(BackendError):
            await sup.call("chat", forever(BackendError("500")))
        for _ in range(4):
            with pytest.raises(BackendTimeout):
                await sup.call("chat", forever(BackendTimeout("x", phase="stall")))
        await asyncio.sleep(0.05)
        assert sup.ladder.runs == 0
        with pytest.raises((BackendTimeout, BackendUnavailable)):
            await sup.call("chat", forever(BackendTimeout("x", phase="stall")))
        async with asyncio.timeout(10):
            while sup.ladder.runs == 0 or sup.ladder.running:
                await asyncio.sleep(0.01)
        assert control.calls[0] == "unload"
        assert sup.snapshot()["ladder"]["runs"] == 1

    asyncio.run(scenario())


def test_snapshot_shows_breaker_ladder_and_policy():
    """`/status` gets the breaker, the ladder (None without one) and the retry policy."""
    snap = supervisor().snapshot()
    assert snap["breaker"]["state"] == "closed"
    assert snap["ladder"] is None
    assert snap["retry"] == {"attempts": 3, "backoff_base_s": 0.01, "backoff_max_s": 0.05}


class Inner:
    """A remote embedder failing once, recording the `until` each call got."""

    model = "nomic-embed-text"
    batch_size = 8
    fingerprint = "fp"

    def __init__(self) -> None:
        self.untils: list[float | None] = []

    def embed(self, texts: Sequence[str], *, until: float | None = None) -> np.ndarray:
        self.untils.append(until)
        if len(self.untils) == 1:
            raise BackendTimeout("embed took too long", phase="total")
        return np.ones((len(texts), 4), dtype=np.float32)


def test_supervised_embedder_retries_within_the_request_deadline():
    """embed() retries a timeout and passes the request's deadline down as `until`."""
    inner = Inner()
    embedder = SupervisedEmbedder(inner, supervisor())
    assert embedder.batch_size == 8
    assert embedder.fingerprint == "fp"
    deadline = time.monotonic() + 5
    with request_deadline(deadline):
        vectors = embedder.embed(["a", "b"])
    assert vectors.shape == (2, 4)
    assert len(inner.untils) == 2
    assert all(u is not None and u <= deadline + 0.01 for u in inner.untils)
    # Outside a request nothing bounds the call but the embedder's own deadlines.
    inner.untils.clear()
    embedder.embed(["a"])
    assert inner.untils[-1] is None


@pytest.fixture
def token_backend() -> tuple[OllamaClient, list[httpx.Request]]:
    """An OllamaClient whose token_count endpoint answers over a MockTransport."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        texts = json.loads(request.content)["texts"]
        return httpx.Response(200, json={"counts": [len(t.split()) for t in texts]})

    client = OllamaClient(
        "http://gen.invalid",
        model="m",
        num_ctx=512,
        num_predict=32,
        transport=httpx.MockTransport(handler),
    )
    return client, seen


def generator(client: OllamaClient, clock: FakeClock | None = None) -> SupervisedGenerator:
    return SupervisedGenerator(client, supervisor(threshold=1, clock=clock))


async def counted(gen: SupervisedGenerator, texts: list[str]) -> list[int] | None:
    try:
        return await gen.count_tokens(texts)
    finally:
        await gen.aclose()


def test_count_tokens_asks_the_backend_while_the_breaker_is_closed(token_backend):
    """Exact counts come from the backend when it is healthy."""
    client, seen = token_backend
    gen = generator(client)
    assert (gen.model, gen.num_ctx, gen.num_predict) == ("m", 512, 32)
    assert asyncio.run(counted(gen, ["one two", "three"])) == [2, 1]
    assert len(seen) == 1


def test_count_tokens_is_none_without_a_call_while_the_breaker_is_open(token_backend):
    """An open (or half-open) breaker means "estimate": the backend is not asked."""
    client, seen = token_backend
    clock = FakeClock(0.0)
    gen = generator(client, clock)
    with pytest.raises(BackendError):
        asyncio.run(gen.supervisor.call("chat", forever(BackendError("500"))))
    assert asyncio.run(counted(gen, ["one two"])) is None
    clock.now += 10  # half-open: the trial is for a real call, not for counting
    assert asyncio.run(counted(gen, ["one two"])) is None
    assert seen == []


def test_count_tokens_gives_up_quickly_on_a_slow_backend(monkeypatch):
    """Counting is worth a few seconds at most; past them, the estimate is used."""
    monkeypatch.setattr(calls, "COUNT_TOKENS_BUDGET_S", 0.2)

    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        return httpx.Response(200, json={"counts": [1]})

    client = OllamaClient(
        "http://gen.invalid",
        model="m",
        num_ctx=512,
        num_predict=32,
        transport=httpx.MockTransport(slow),
    )
    gen = generator(client)
    started = time.monotonic()
    assert asyncio.run(counted(gen, ["x"])) is None
    assert time.monotonic() - started < 2
    assert gen.supervisor.breaker.snapshot()["consecutive_failures"] == 0
