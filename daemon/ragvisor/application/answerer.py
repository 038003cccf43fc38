"""Answering a question: retrieve stored passages, pack them into the prompt, stream the answer.

The pure parts (packing, prompt text, citations) live in :mod:`ragvisor.core.answers`; this
module sequences them around the two slow, fallible calls — the retrieval (a thread, because
the embedder and SQLite block) and the generator (async, streamed) — and keeps the per-phase
timings an operator reads in the `http.request` log line.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from ragvisor.application.ask_cache import DROPPED_KEY, AskCache
from ragvisor.application.token_counts import StoredCounts
from ragvisor.core.answer_cache import CacheHit, CacheScope
from ragvisor.core.answers import (
    PromptCosts,
    PromptPlan,
    citations,
    counted_costs,
    estimate_tokens,
    extractive_answer,
    fixed_texts,
    passage_texts,
    plan_prompt,
    prompt_truncated,
    stored_costs,
)
from ragvisor.core.deadline import by_deadline
from ragvisor.core.model import ChunkRecord, GenerationStats, Retrying, TextDelta
from ragvisor.core.protocols import Generator, Vector
from ragvisor.core.retrieval import QueryLimits, Retriever, validate_query
from ragvisor.errors import BackendError, BackendUnavailable, StoreError
from ragvisor.metrics import Metrics


@dataclass(slots=True)
class AskTrace:
    """What one `/ask` did and how long each phase took; filled in as it goes."""

    started: float = field(default_factory=time.perf_counter)
    timings_ms: dict[str, float] = field(default_factory=dict)
    fields: dict[str, Any] = field(default_factory=dict)

    def mark(self, phase: str, since: float) -> None:
        """Record a phase that began at `since` (perf_counter) and ends now."""
        self.timings_ms[phase] = round((time.perf_counter() - since) * 1000, 3)


@dataclass(frozen=True, slots=True)
class PreparedAsk:
    """A validated question with its passages packed: everything before the generator runs.

    `degraded` is set when the answer must be extractive before the generator is even tried
    (it is down or restarting, memory is short); `search_degraded` when the passages came from
    keyword search because the embedder failed. `cached` is the answer cache's hit (then no
    passages were packed); `cache_key` what a generated answer is stored under (None: not
    cacheable).
    """

    question: str
    plan: PromptPlan
    degraded: str | None = None
    search_degraded: str | None = None
    cached: CacheHit | None = None
    cache_key: _CacheKey | None = None


@dataclass(frozen=True, slots=True)
class _CacheKey:
    """Where a generated answer goes in the answer cache."""

    scope: CacheScope
    k: int
    vector: Vector | None
    passage_ids: tuple[str, ...]


# The plan of an answer that comes from the cache: nothing is sent to the generator.
_NO_PLAN = PromptPlan(
    messages=(),
    passages=(),
    dropped=0,
    prompt_tokens=0,
    budget_tokens=0,
    counted_with="estimate",
    counted_tokens=0,
)


@dataclass(slots=True)
class _Generation:
    """What one generation produced: its text, the backend's stats, or why it failed."""

    pieces: list[str] = field(default_factory=list)
    stats: GenerationStats = field(default_factory=GenerationStats)
    failure: str | None = None


# The reason given when the model's whole answer was blank.
EMPTY_ANSWER = "the model returned an empty answer"
# Time kept back from the request deadline to build the extractive answer if generation fails.
FALLBACK_RESERVE_S = 0.5

MemoryCheck = Callable[[], Awaitable[str | None]]


class Answerer:
    """Turns a question into a cited answer using stored embeddings only.

    ``is_available`` is asked before each generation (the embedded worker's process state) and
    ``memory_check`` whether memory allows loading the generator (a reason when it does not);
    either saying no makes the answer extractive at once instead of waiting on a dead socket.
    When generation fails for good (retries exhausted, circuit open, out of time) the answer is
    extractive too: the best passages with their citations, marked ``degraded``.
    """

    def __init__(
        self,
        retriever: Retriever,
        generator: Generator,
        *,
        limits: QueryLimits,
        margin_tokens: int,
        is_available: Callable[[], bool] | None = None,
        memory_check: MemoryCheck | None = None,
        metrics: Metrics | None = None,
        cache: AskCache | None = None,
        stored_counts: StoredCounts | None = None,
    ) -> None:
        self._retriever = retriever
        self._generator = generator
        self.limits = limits
        self._margin = margin_tokens
        self._is_available = is_available
        self._memory_check = memory_check
        self._metrics = metrics
        self._cache = cache
        self._stored_counts = stored_counts

    @property
    def generator(self) -> Generator:
        """The backend answers come from."""
        return self._generator

    async def prepare(self, question: str | None, k: int, trace: AskTrace) -> PreparedAsk:
        """Validate, retrieve and pack. Raises InputError for a bad question."""
        question = validate_query(question, k, self.limits, what="question")
        scope = await self._cache.scope() if self._cache is not None else None
        if scope is not None and self._cache is not None:
            # Before the generator's state matters: a stored answer is served even while the
            # generator restarts.
            hit = self._cache.exact(scope, question, k)
            if hit is not None:
                return self._from_cache(question, hit, trace)
        degraded: str | None = None
        if self._is_available is not None and not self._is_available():
            degraded = "the generator is restarting"
        vectors: list[Vector] = []
        try:
            candidates, timings, search_degraded = await by_deadline(
                asyncio.to_thread(self._retriever.passages, question, k, vectors=vectors),
                when_late_done=lambda: None,
            )
        except TimeoutError as exc:  # the embedder is bounded by its own deadlines
            raise StoreError(
                "the store did not answer within the retrieval's deadline "
                "(embedder.deadlines.request_s)"
            ) from exc
        trace.timings_ms.update(timings)
        cache_key = None
        if scope is not None and self._cache is not None and search_degraded is None:
            vector = vectors[0] if vectors else None
            ids = tuple(record.chunk_id for record, _ in candidates)
            # A model change that switched during the retrieval: this vector belongs to
            # neither scope for sure; neither look up nor store.
            if vector is not None and self._cache.embedder_key() == scope.embedder:
                hit = self._cache.semantic(scope, vector, k, ids)
                if hit is not None:
                    return self._from_cache(question, hit, trace)
                cache_key = _CacheKey(scope, k, vector, ids)
        if self._cache is not None:
            self._cache.missed()
        if degraded is None and self._memory_check is not None:
            # Before counting tokens: the worker loads the model to count with its tokenizer,
            # and the memory check must come before anything loads it.
            started = time.perf_counter()
            degraded = await self._memory_check()
            trace.mark("memory_check", started)
        started = time.perf_counter()
        costs = await self._costs(question, candidates, degraded)
        plan = plan_prompt(
            question,
            candidates,
            costs,
            num_ctx=self._generator.num_ctx,
            num_predict=self._generator.num_predict,
            margin_tokens=self._margin,
        )
        trace.mark("pack", started)
        trace.fields.update(
            passages=len(plan.passages),
            passages_dropped=plan.dropped,
            prompt_tokens_planned=plan.prompt_tokens,
            token_counts=plan.counted_with,
            search_degraded=search_degraded,
        )
        return PreparedAsk(question, plan, degraded, search_degraded, cache_key=cache_key)

    async def _costs(
        self, question: str, candidates: list[tuple[ChunkRecord, float]], degraded: str | None
    ) -> PromptCosts:
        """The prompt's token costs: the counts stored at sync when every candidate has one
        (a lookup), else the generator's tokenizer (a round trip), else the estimate."""
        if self._stored_counts is not None and candidates:
            hashes = [record.text_sha256 for record, _ in candidates]
            try:
                stored = await asyncio.to_thread(self._stored_counts.lookup, hashes)
            except StoreError:
                stored = None  # the round trip below still counts them
            if stored is not None:
                costs = stored_costs(
                    question, candidates, stored, self._stored_counts.system_tokens
                )
                if costs is not None:
                    return costs
        texts = fixed_texts(question) + passage_texts(candidates)
        counts = None if degraded else await self._generator.count_tokens(texts)
        exact = counts is not None
        if counts is None:
            counts = [estimate_tokens(t) for t in texts]
        return counted_costs(sum(counts[:2]), counts[2:], exact=exact)

    def _from_cache(self, question: str, hit: CacheHit, trace: AskTrace) -> PreparedAsk:
        """A prepared answer that is already written: the cache's."""
        trace.fields.update(cached=hit.kind)
        if hit.kind == "semantic":
            trace.fields.update(
                cache_similarity=round(hit.similarity, 4), cached_question=hit.entry.question
            )
        return PreparedAsk(question, _NO_PLAN, cached=hit)

    async def events(
        self, prepared: PreparedAsk, trace: AskTrace, *, until: float | None = None
    ) -> AsyncGenerator[dict[str, Any], None]:
        """The answer as events: `citations` first, then `delta`s, then `done`.

        A `retry` event means the backend failed mid-answer and the deltas so far are void.
        Generation stops `FALLBACK_RESERVE_S` before `until` (time.monotonic()); when it fails
        for good, `done` carries the extractive answer and `degraded`. Closing the iterator early
        closes the backend connection, which cancels the generation.
        """
        if prepared.cached is not None:
            for event in self._cached_events(prepared.cached, trace):
                yield event
            return
        plan = prepared.plan
        yield {
            "type": "citations",
            "citations": [_without_cited(p.citation(cited=False)) for p in plan.passages],
            "dropped": plan.dropped,
        }
        if prepared.degraded is not None:
            yield self._extractive(prepared, trace, prepared.degraded)
            return
        generation = _Generation()
        gen_until = None if until is None else until - FALLBACK_RESERVE_S
        stream = self._stream(plan, trace, gen_until, generation)
        try:
            async for event in stream:
                yield event
        finally:
            await stream.aclose()
        if generation.failure is None and not "".join(generation.pieces).strip():
            # A small model sometimes ends at once, or with only blank lines: an empty answer
            # helps nobody, the passages do.
            generation.failure = EMPTY_ANSWER
        if generation.failure is not None:
            yield self._extractive(prepared, trace, generation.failure)
        else:
            done = self._done(prepared, trace, generation)
            key = prepared.cache_key
            # Only a complete generated answer from the dense passages is worth serving again.
            if key is not None and self._cache is not None and not done["truncated"]:
                self._cache.store(
                    key.scope,
                    prepared.question,
                    key.k,
                    done,
                    dropped=prepared.plan.dropped,
                    vector=key.vector,
                    passage_ids=key.passage_ids,
                )
            yield done

    def _cached_events(self, hit: CacheHit, trace: AskTrace) -> list[dict[str, Any]]:
        """A stored answer as the events of a generated one: citations, the whole text as one
        delta, then `done` with `cached` and this request's timings."""
        answer = dict(hit.entry.answer)
        dropped = answer.pop(DROPPED_KEY, 0)
        trace.mark("total", trace.started)
        return [
            {
                "type": "citations",
                "citations": [_without_cited(c) for c in answer.get("citations", [])],
                "dropped": dropped,
            },
            {"type": "delta", "text": answer.get("answer", "")},
            {"type": "done", **answer, "cached": hit.kind, "timings_ms": dict(trace.timings_ms)},
        ]

    async def _stream(
        self, plan: PromptPlan, trace: AskTrace, until: float | None, out: _Generation
    ) -> AsyncGenerator[dict[str, Any], None]:
        """`delta` and `retry` events; the text, stats or failure are left in `out`."""
        started = time.perf_counter()
        stream = self._generator.chat(plan.messages, until=until)
        try:
            while True:
                try:
                    # A backstop only: the supervised generator stops by `until` itself.
                    async with asyncio.timeout(_left(until, grace=0.25)):
                        event = await anext(stream)
                except StopAsyncIteration:
                    return
                except (BackendError, BackendUnavailable) as exc:
                    out.failure = f"the generator failed: {exc}"
                    return
                except TimeoutError:
                    out.failure = "the generator did not finish within the request deadline"
                    return
                if isinstance(event, TextDelta):
                    if not out.pieces:
                        trace.timings_ms["first_token"] = round(
                            (time.perf_counter() - trace.started) * 1000, 3
                        )
                    out.pieces.append(event.text)
                    yield {"type": "delta", "text": event.text}
                elif isinstance(event, Retrying):
                    out.pieces.clear()
                    trace.fields["retried_mid_answer"] = event.attempt - 1
                    yield {"type": "retry", "attempt": event.attempt, "reason": event.reason}
                else:
                    out.stats = event
        finally:
            await stream.aclose()
            trace.mark("generate", started)
            trace.fields.update(_stats_fields(out.stats))
            trace.timings_ms.update(out.stats.timings_ms())

    def _done(
        self, prepared: PreparedAsk, trace: AskTrace, generation: _Generation
    ) -> dict[str, Any]:
        """The final event of a generated answer, with truncation detected and metrics fed."""
        plan, stats = prepared.plan, generation.stats
        answer = "".join(generation.pieces).strip()
        truncated = prompt_truncated(stats.prompt_eval_count, plan, self._generator.num_ctx)
        if truncated:
            trace.fields["truncated"] = True
        if self._metrics is not None:
            if truncated:
                self._metrics.truncated_total.inc()
            if "first_token" in trace.timings_ms:
                self._metrics.ttft_seconds.observe(trace.timings_ms["first_token"] / 1000)
            if stats.tokens_per_s:
                self._metrics.tokens_per_second.observe(stats.tokens_per_s)
        trace.mark("total", trace.started)
        done: dict[str, Any] = {
            "type": "done",
            "answer": answer,
            "citations": citations(plan.passages, answer),
            "model": self._generator.model,
            "done_reason": stats.done_reason,
            "truncated": truncated,
            "tokens": _tokens(plan, stats),
            "timings_ms": dict(trace.timings_ms),
            "cached": None,
        }
        if prepared.search_degraded is not None:
            done["degraded"] = {"reason": prepared.search_degraded, "answer": "generated"}
        return done

    def _extractive(self, prepared: PreparedAsk, trace: AskTrace, reason: str) -> dict[str, Any]:
        """The `done` event of an answer made of passages, marked degraded with the reason."""
        plan = prepared.plan
        trace.fields["degraded"] = reason
        if self._metrics is not None:
            self._metrics.degraded_total.labels("ask", _reason_label(reason)).inc()
        trace.mark("total", trace.started)
        degraded: dict[str, Any] = {"reason": reason, "answer": "extractive"}
        if prepared.search_degraded is not None:
            degraded["search"] = prepared.search_degraded
        return {
            "type": "done",
            "answer": extractive_answer(plan.passages, reason),
            "citations": [p.citation(cited=True) for p in plan.passages],
            "model": None,
            "done_reason": "degraded",
            "truncated": False,
            "degraded": degraded,
            "tokens": _tokens(plan, GenerationStats()),
            "timings_ms": dict(trace.timings_ms),
            "cached": None,
        }

    async def answer(
        self, prepared: PreparedAsk, trace: AskTrace, *, until: float | None = None
    ) -> dict[str, Any]:
        """The whole answer as one object (the last event without its `type`)."""
        final: dict[str, Any] = {}
        async for event in self.events(prepared, trace, until=until):
            if event["type"] == "done":
                final = {k: v for k, v in event.items() if k != "type"}
        if not final:
            raise BackendError("the generator ended without an answer")
        return {"question": prepared.question, **final}


def _left(until: float | None, grace: float) -> float | None:
    """Seconds until `until` plus a grace, for asyncio.timeout (None: no limit)."""
    return None if until is None else max(0.0, until - time.monotonic() + grace)


def _reason_label(reason: str) -> str:
    """A low-cardinality metric label for a degraded answer's reason."""
    for label, marker in (
        ("memory", "memory"),
        ("restarting", "restarting"),
        ("circuit_open", "circuit is open"),
        ("lane_busy", "lane stayed busy"),
        ("timeout", "deadline ("),  # a backend call missed one of its deadlines
        ("deadline", "deadline"),  # the request's own deadline ran out
        ("empty_answer", EMPTY_ANSWER),
    ):
        if marker in reason:
            return label
    return "generator_failed"


def _without_cited(citation: dict[str, object]) -> dict[str, object]:
    """Before the answer exists nobody knows which sources it cites."""
    return {k: v for k, v in citation.items() if k != "cited"}


def _stats_fields(stats: GenerationStats) -> dict[str, Any]:
    return {
        "done_reason": stats.done_reason,
        "prompt_eval_count": stats.prompt_eval_count,
        "eval_count": stats.eval_count,
        "tokens_per_s": stats.tokens_per_s,
    }


def _tokens(plan: PromptPlan, stats: GenerationStats) -> dict[str, Any]:
    return {
        "prompt": stats.prompt_eval_count,
        "prompt_planned": plan.prompt_tokens,
        "prompt_budget": plan.budget_tokens,
        "counted_with": plan.counted_with,
        "completion": stats.eval_count,
        "per_second": stats.tokens_per_s,
    }
