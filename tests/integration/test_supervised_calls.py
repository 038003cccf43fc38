"""The supervised generator against a scripted, misbehaving Ollama over real HTTP.

A first attempt that hangs or breaks off is retried; the caller sees one good answer (with a
`Retrying` marker when text had already streamed), and the whole call never outlives `until`.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator
from typing import Any

import pytest

from ragvisor.config import BreakerSettings
from ragvisor.core.deadline import request_deadline
from ragvisor.core.model import ChatMessage, GenerationStats, Retrying, TextDelta
from ragvisor.errors import BackendRejected, BackendTimeout, BackendUnavailable
from ragvisor.metrics import Metrics
from ragvisor.ollama.client import OllamaClient
from ragvisor.ollama.wire import Deadlines
from ragvisor.supervise.breaker import BreakerState, CircuitBreaker
from ragvisor.supervise.calls import SupervisedGenerator, Supervisor
from ragvisor.supervise.retry import RetryPolicy
from tests.integration.scripted_ollama import Script, scripted_ollama

MESSAGES = [ChatMessage("user", "hello")]
GOOD = [f"w{i} " for i in range(5)]


class SequencedScript(Script):
    """A Script whose mode changes per chat request: `modes[i]` for the i-th (the last repeats).

    The scripted server reads `script.mode` while it answers a request, so a property keyed on
    the number of requests received so far scripts "first attempt hangs, the second answers".
    """

    def __init__(self) -> None:
        super().__init__()
        self.modes: list[str] = ["ok"]

    @property  # type: ignore[override]
    def mode(self) -> str:
        return self.modes[min(max(len(self.requests) - 1, 0), len(self.modes) - 1)]

    @mode.setter
    def mode(self, value: str) -> None:
        """Script's own __init__ sets a default; `modes` is what tests set."""


@pytest.fixture
def server() -> Iterator[tuple[str, SequencedScript]]:
    """The scripted Ollama app (tests/integration/scripted_ollama.py) on a loopback port."""
    script = SequencedScript()
    with scripted_ollama(script) as (url, _):
        yield url, script


def generator(
    url: str,
    *,
    attempts: int = 3,
    threshold: int = 5,
    metrics: Metrics | None = None,
    **deadlines: float,
) -> SupervisedGenerator:
    client = OllamaClient(
        url,
        model="scripted",
        num_ctx=1024,
        num_predict=64,
        keep_alive="0",
        deadlines=Deadlines(**{"connect_s": 2.0, "first_token_s": 5.0, **deadlines}),
    )
    breaker = CircuitBreaker(
        "generator", BreakerSettings(failure_threshold=threshold, open_s=30), metrics=metrics
    )
    policy = RetryPolicy(attempts=attempts, backoff_base_s=0.05, backoff_max_s=0.2)
    supervisor = Supervisor("generator", policy, breaker, metrics=metrics, rng=random.Random(5))
    return SupervisedGenerator(client, supervisor)


async def collect(
    gen: SupervisedGenerator, until: float | None = None
) -> list[TextDelta | GenerationStats | Retrying]:
    try:
        async with asyncio.timeout(60):  # a backstop: no test waits forever
            return [event async for event in gen.chat(MESSAGES, until=until)]
    finally:
        await gen.aclose()


def texts(events: list[Any]) -> list[str]:
    return [e.text for e in events if isinstance(e, TextDelta)]


def test_a_first_attempt_that_hangs_is_retried_invisibly(server):
    """1. the first request gets no token within first_token_s; 2. the retry answers;
    3. the caller sees only the good answer, no Retrying marker (nothing had streamed)."""
    url, script = server
    script.modes = ["hang_first", "ok"]
    script.hang_s = 30
    metrics = Metrics()
    gen = generator(url, first_token_s=0.5, metrics=metrics)
    events = asyncio.run(collect(gen))
    assert texts(events) == GOOD
    assert isinstance(events[-1], GenerationStats)
    assert not any(isinstance(e, Retrying) for e in events)
    assert len(script.requests) == 2
    assert script.disconnected.wait(5), "the hung attempt was not cancelled"
    timeouts = metrics.registry.get_sample_value(
        "ragvisor_backend_timeouts_total", {"backend": "generator", "phase": "first_token"}
    )
    assert timeouts == 1
    assert gen.supervisor.breaker.snapshot()["consecutive_failures"] == 0


@pytest.mark.parametrize("failure", ["error_line", "cut"])
def test_a_failure_after_text_streamed_is_announced_then_answered_anew(server, failure):
    """1. two pieces stream, then the backend fails; 2. a Retrying event voids them;
    3. the second attempt's whole answer follows."""
    url, script = server
    script.modes = [failure, "ok"]
    events = asyncio.run(collect(generator(url)))
    marker = next(i for i, e in enumerate(events) if isinstance(e, Retrying))
    assert texts(events[:marker]) == GOOD[:2]
    retrying = events[marker]
    assert isinstance(retrying, Retrying)
    assert retrying.attempt == 2
    assert retrying.reason
    assert texts(events[marker + 1 :]) == GOOD
    assert isinstance(events[-1], GenerationStats)
    assert len(script.requests) == 2


def test_until_bounds_the_whole_call_retries_included(server):
    """A backend that never answers: attempts and backoff stop by `until`, not after them all."""
    url, script = server
    script.modes = ["hang_first"]
    script.hang_s = 30
    gen = generator(url, attempts=10, first_token_s=0.6)
    until = time.monotonic() + 2.0
    with pytest.raises(BackendTimeout):
        asyncio.run(collect(gen, until=until))
    assert time.monotonic() < until + 1.0
    assert 2 <= len(script.requests) < 10


def test_the_request_deadline_bounds_a_chat_without_until(server):
    """Inside request_deadline(), chat stops by the request's deadline on its own."""
    url, script = server
    script.modes = ["hang_first"]
    script.hang_s = 30
    gen = generator(url, first_token_s=20)

    async def in_request() -> None:
        with request_deadline(time.monotonic() + 1.0):
            await collect(gen)

    started = time.monotonic()
    with pytest.raises(BackendTimeout) as caught:
        asyncio.run(in_request())
    assert time.monotonic() - started < 2.0
    assert caught.value.phase == "request"


def test_a_rejected_request_is_not_retried(server):
    """A 400 for our own request: one attempt, the error goes to the caller at once."""
    url, script = server
    script.modes = ["status"]
    script.status = 400
    with pytest.raises(BackendRejected, match="400"):
        asyncio.run(collect(generator(url)))
    assert len(script.requests) == 1


def test_a_busy_backend_is_retried_until_the_attempts_run_out(server):
    """503 "server busy" each time: three attempts, then BackendUnavailable."""
    url, script = server
    script.modes = ["status"]
    script.status = 503
    with pytest.raises(BackendUnavailable, match="busy"):
        asyncio.run(collect(generator(url)))
    assert len(script.requests) == 3


def test_an_open_breaker_answers_at_once_without_calling_the_backend(server):
    """Calls failing for good open the breaker; the next chat fails at once, unsent."""
    url, script = server
    script.modes = ["status"]
    script.status = 500
    gen = generator(url, attempts=2, threshold=2)
    for _ in range(2):  # two calls failing for good (each after its retry)
        with pytest.raises(Exception, match="500"):
            asyncio.run(collect(gen))
    assert len(script.requests) == 4
    assert gen.supervisor.breaker.state is BreakerState.OPEN
    sent = len(script.requests)
    started = time.monotonic()
    with pytest.raises(BackendUnavailable, match="circuit is open"):
        asyncio.run(collect(gen))
    assert time.monotonic() - started < 1.0
    assert len(script.requests) == sent


def test_closing_the_stream_early_is_no_verdict_on_the_backend(server):
    """A consumer that leaves mid-answer neither counts as a failure nor keeps the call open."""
    url, script = server
    script.modes = ["ok"]
    script.pieces, script.delay_s = 200, 0.05
    gen = generator(url)

    async def take_one() -> None:
        stream = gen.chat(MESSAGES)
        async for _ in stream:
            break
        await stream.aclose()
        await gen.aclose()

    asyncio.run(take_one())
    assert script.disconnected.wait(5)
    snap = gen.supervisor.breaker.snapshot()
    assert snap["state"] == "closed"
    assert snap["consecutive_failures"] == 0
