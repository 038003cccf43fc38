"""Supervised backend calls: the request deadline, retries, the breaker and the ladder, together.

:class:`Supervisor` holds one backend's policy and state. :class:`SupervisedGenerator` and
:class:`SupervisedEmbedder` put it around the raw clients so the rest of the daemon sees the
same `Generator` and `Embedder` protocols, only better behaved: every attempt is bounded by the
client's own deadlines *and* by what is left of the request (`request_s`, carried in a context
variable the web layer sets), a failed attempt is retried with jittered backoff only when that
can help and time remains, and each outcome feeds the breaker and the ladder.
"""

from __future__ import annotations

import asyncio
import contextvars
import random
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

from ragvisor.core.deadline import current_deadline, remaining_s
from ragvisor.core.model import ChatMessage, Fingerprint, GenerationStats, Retrying, TextDelta
from ragvisor.core.protocols import Matrix
from ragvisor.errors import BackendError, BackendTimeout, BackendUnavailable
from ragvisor.metrics import Metrics
from ragvisor.ollama.client import OllamaClient
from ragvisor.ollama.names import find_model
from ragvisor.supervise.breaker import BreakerState, CircuitBreaker
from ragvisor.supervise.ladder import EscalationLadder
from ragvisor.supervise.retry import RetryPolicy, is_retryable, outcome, timeout_phase

T = TypeVar("T")

# Whether the call running in this context is its breaker's half-open trial (see
# CircuitBreaker.allow): each request runs in its own task or thread, hence its own context.
_TRIAL: contextvars.ContextVar[bool] = contextvars.ContextVar("ragvisor_trial", default=False)
# An attempt that could not get this much time is not started: it would only time out.
MIN_ATTEMPT_S = 0.2
# Exact token counts are worth this much waiting; past it, the estimate is used.
COUNT_TOKENS_BUDGET_S = 3.0


class Supervisor:
    """Retry policy, circuit breaker and escalation ladder of one backend."""

    def __init__(
        self,
        backend: str,
        policy: RetryPolicy,
        breaker: CircuitBreaker,
        ladder: EscalationLadder | None = None,
        *,
        metrics: Metrics | None = None,
        log: Any = None,
        rng: random.Random | None = None,
    ) -> None:
        self.backend = backend
        self.policy = policy
        self.breaker = breaker
        self.ladder = ladder
        self._metrics = metrics
        self._log = log
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography

    def before_attempt(self, op: str, until: float | None = None, attempt: int = 1) -> float | None:
        """Check the time left (and, before a call's first attempt, the breaker); returns the
        seconds this attempt may take.

        The breaker judges whole calls, not attempts: a call that succeeds on a retry is a
        success, so random transient failures that retries absorb never open it; only calls
        that fail for good count. `until` (time.monotonic()) is the caller's deadline; without
        one, the request's (if any). Raises BackendUnavailable (breaker open) or BackendTimeout
        (no time left).
        """
        left = remaining_s() if until is None else until - time.monotonic()
        if left is not None and left < MIN_ATTEMPT_S:
            if attempt > 1:
                self.breaker.record_neutral(trial=_TRIAL.get())  # ends without a verdict
            raise BackendTimeout(
                f"{self.backend} {op}: the request deadline leaves no time for an attempt",
                phase="request",
            )
        if attempt == 1:
            _TRIAL.set(self.breaker.allow())
        elif self.breaker.state is BreakerState.OPEN:
            # The ladder found the backend wedged while this call was backing off: stop here.
            self.breaker.record_neutral(trial=_TRIAL.get())
            raise BackendUnavailable(
                f"{self.backend} is being restarted; {op} not retried", retry_after_s=5.0
            )
        return left

    def succeeded(self, op: str, attempt: int, started: float) -> None:
        """Record a good answer."""
        self.breaker.record_success()
        if self.ladder is not None:
            self.ladder.note_success()
        if self._metrics is not None:
            self._metrics.backend_calls_total.labels(self.backend, "ok").inc()
        if attempt > 1 and self._log is not None:
            self._log.info(
                "backend.recovered",
                backend=self.backend,
                op=op,
                attempt=attempt,
                duration_ms=_ms(started),
            )

    def failed(
        self,
        op: str,
        attempt: int,
        exc: BaseException,
        started: float,
        until: float | None = None,
    ) -> float | None:
        """Record a failure; returns the backoff before the next attempt, or None to give up."""
        kind = outcome(exc)
        if self._metrics is not None:
            self._metrics.backend_calls_total.labels(self.backend, kind).inc()
            if kind == "timeout":
                phase = timeout_phase(exc)
                self._metrics.backend_timeouts_total.labels(self.backend, phase).inc()
        if kind != "rejected" and self.ladder is not None:
            self.ladder.note_failure(exc)  # the ladder counts every hang, retried or not
        delay = self._retry_delay(attempt, exc, until)
        if delay is None:  # the call gives up: now the breaker hears of it
            if kind == "rejected":
                # Our own request's fault says nothing about the backend's health (but it ends
                # a half-open trial, which must not stay "running" forever).
                self.breaker.record_neutral(trial=_TRIAL.get())
            else:
                self.breaker.record_failure(kind, trial=_TRIAL.get())
        if self._log is not None:
            self._log.warning(
                "backend.retry" if delay is not None else "backend.failed",
                backend=self.backend,
                op=op,
                attempt=attempt,
                outcome=kind,
                error=str(exc),
                duration_ms=_ms(started),
                retry_in_ms=None if delay is None else round(delay * 1000, 1),
            )
        if delay is not None and self._metrics is not None:
            self._metrics.backend_retries_total.labels(self.backend).inc()
        return delay

    def abandoned(self) -> None:
        """The caller went away mid-call, or the call broke on something that is not a
        backend failure: no verdict on the backend."""
        self.breaker.record_neutral(trial=_TRIAL.get())

    def _retry_delay(self, attempt: int, exc: BaseException, until: float | None) -> float | None:
        if attempt >= self.policy.attempts or not is_retryable(exc):
            return None
        if self.breaker.state is BreakerState.OPEN:
            # Another call's failure opened it, or a climb holds it for a wedged backend: a retry
            # would only be refused, and the caller is better served by the error itself.
            return None
        delay = self.policy.delay_s(attempt, self._rng)
        left = remaining_s() if until is None else until - time.monotonic()
        if left is not None and left - delay < MIN_ATTEMPT_S:
            return None
        return delay

    async def call(self, op: str, fn: Callable[[float | None], Awaitable[T]]) -> T:
        """Run an async call with retries; `fn` gets the seconds the attempt may take."""
        attempt = 0
        while True:
            attempt += 1
            left = self.before_attempt(op, attempt=attempt)
            started = time.perf_counter()
            try:
                result = await fn(left)
            except (BackendError, BackendUnavailable) as exc:
                delay = self.failed(op, attempt, exc, started)
                if delay is None:
                    raise
                await asyncio.sleep(delay)
                continue
            except BaseException:  # cancelled, or a bug: a half-open trial must still end
                self.abandoned()
                raise
            self.succeeded(op, attempt, started)
            return result

    def call_sync(self, op: str, fn: Callable[[float | None], T]) -> T:
        """The same for blocking calls made from worker threads (the embedder)."""
        attempt = 0
        while True:
            attempt += 1
            left = self.before_attempt(op, attempt=attempt)
            started = time.perf_counter()
            try:
                result = fn(left)
            except (BackendError, BackendUnavailable) as exc:
                delay = self.failed(op, attempt, exc, started)
                if delay is None:
                    raise
                time.sleep(delay)
                continue
            except BaseException:  # a bug or an interrupt: a half-open trial must still end
                self.abandoned()
                raise
            self.succeeded(op, attempt, started)
            return result

    def snapshot(self) -> dict[str, Any]:
        """Breaker and ladder state for `/status`."""
        return {
            "breaker": self.breaker.snapshot(),
            "ladder": self.ladder.snapshot() if self.ladder is not None else None,
            "retry": {
                "attempts": self.policy.attempts,
                "backoff_base_s": self.policy.backoff_base_s,
                "backoff_max_s": self.policy.backoff_max_s,
            },
        }


class SupervisedGenerator:
    """The `Generator` protocol around an :class:`OllamaClient`, supervised.

    A failure before the first token is retried invisibly. A failure after tokens were
    streamed is retried too, announced by a :class:`Retrying` event so the consumer can drop
    the partial text. The last failure propagates; the answerer then answers extractively.
    """

    def __init__(self, client: OllamaClient, supervisor: Supervisor) -> None:
        self.client = client
        self.supervisor = supervisor

    @property
    def model(self) -> str:
        """The model every request names."""
        return self.client.model

    @property
    def num_ctx(self) -> int:
        """Context window sent as `options.num_ctx`."""
        return self.client.num_ctx

    @property
    def num_predict(self) -> int:
        """Answer cap sent as `options.num_predict`."""
        return self.client.num_predict

    async def count_tokens(self, texts: Sequence[str]) -> list[int] | None:
        """Exact counts when the backend can give them quickly; None means "estimate".

        Not retried and not held against the backend: an estimate is a fine answer.
        """
        budget = COUNT_TOKENS_BUDGET_S
        if self.supervisor.breaker.state is not BreakerState.CLOSED:
            return None
        try:
            async with asyncio.timeout(budget):
                return await self.client.count_tokens(texts)
        except (TimeoutError, BackendError, BackendUnavailable):
            return None

    async def chat(
        self, messages: Sequence[ChatMessage], *, until: float | None = None
    ) -> AsyncGenerator[TextDelta | GenerationStats | Retrying, None]:
        """Stream an answer, retrying failed attempts until `until` (time.monotonic()).

        Without `until`, the request's deadline (see :func:`request_deadline`), if any.
        """
        if until is None:
            until = current_deadline()
        attempt = 0
        while True:
            attempt += 1
            self.supervisor.before_attempt("chat", until, attempt)
            started = time.perf_counter()
            streamed = False
            failure: BackendError | BackendUnavailable | None = None
            stream = self.client.chat(messages, until=until)
            try:
                async for event in stream:
                    if isinstance(event, TextDelta):
                        streamed = True
                    yield event
            except (BackendError, BackendUnavailable) as exc:
                failure = exc
            except BaseException:  # the consumer left (GeneratorExit, cancelled), or a bug
                self.supervisor.abandoned()
                raise
            finally:
                await stream.aclose()
            if failure is None:
                self.supervisor.succeeded("chat", attempt, started)
                return
            delay = self.supervisor.failed("chat", attempt, failure, started, until)
            if delay is None:
                raise failure
            if streamed:
                yield Retrying(attempt=attempt + 1, reason=str(failure))
            await asyncio.sleep(delay)

    @property
    def base_url(self) -> str:
        """Where the backend answers."""
        return self.client.base_url

    async def version(self, timeout: float = 2.0) -> str:
        """The backend's version, unsupervised: the readiness probe (loads no model)."""
        return await self.client.version(timeout=timeout)

    async def loaded(self, timeout: float = 5.0) -> bool:
        """Whether `/api/ps` lists the model (unsupervised: the memory guard's question)."""
        return find_model(await self.client.ps(timeout=timeout), self.client.model) is not None

    async def unload(self) -> None:
        """Ask the backend to drop the model now (`keep_alive: 0`)."""
        await self.client.unload()

    async def aclose(self) -> None:
        """Close the client's connections."""
        await self.client.aclose()


class SupervisedEmbedder:
    """The `Embedder` protocol around a remote embedder (Ollama), supervised.

    Blocking, like every embedder: the sync calls it from its thread, search from the web
    server's thread pool (which carries the request deadline along).
    """

    def __init__(self, embedder: Any, supervisor: Supervisor) -> None:
        self.inner = embedder
        self.supervisor = supervisor

    @property
    def fingerprint(self) -> Fingerprint:
        """The remote model's identity (resolved at start-up)."""
        fingerprint: Fingerprint = self.inner.fingerprint
        return fingerprint

    @property
    def batch_size(self) -> int:
        """Texts per `/api/embed` call."""
        size: int = self.inner.batch_size
        return size

    def embed(self, texts: Sequence[str]) -> Matrix:
        """Embed with retries within the request's deadline (none outside a request)."""

        def attempt(left: float | None) -> Matrix:
            until = None if left is None else time.monotonic() + left
            result: Matrix = self.inner.embed(texts, until=until)
            return result

        return self.supervisor.call_sync("embed", attempt)


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)
