"""Answering a question: retrieve stored passages, pack them into the prompt, stream the answer.

The pure parts (packing, prompt text, citations) live in :mod:`ragvisor.core.answers`; this
module sequences them around the two slow, fallible calls — the retrieval (a thread, because
the embedder and SQLite block) and the generator (async, streamed) — and keeps the per-phase
timings an operator reads in the `http.request` log line.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

from ragvisor.core.answers import (
    PromptPlan,
    citations,
    estimate_tokens,
    fixed_texts,
    passage_texts,
    plan_prompt,
)
from ragvisor.core.model import GenerationStats, TextDelta
from ragvisor.core.protocols import Generator
from ragvisor.core.retrieval import QueryLimits, Retriever, validate_query
from ragvisor.errors import BackendError, BackendUnavailable


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
    """A validated question with its passages packed: everything before the generator runs."""

    question: str
    plan: PromptPlan


class Answerer:
    """Turns a question into a cited answer using stored embeddings only.

    ``is_available`` is asked before each generation (the embedded worker's process state);
    when it says no, the request fails fast with 503 instead of waiting on a dead socket.
    """

    def __init__(
        self,
        retriever: Retriever,
        generator: Generator,
        *,
        limits: QueryLimits,
        margin_tokens: int,
        is_available: Any = None,
    ) -> None:
        self._retriever = retriever
        self._generator = generator
        self.limits = limits
        self._margin = margin_tokens
        self._is_available = is_available

    @property
    def generator(self) -> Generator:
        """The backend answers come from."""
        return self._generator

    async def prepare(self, question: str | None, k: int, trace: AskTrace) -> PreparedAsk:
        """Validate, retrieve and pack. Raises InputError, BackendUnavailable or BackendError."""
        question = validate_query(question, k, self.limits, what="question")
        if self._is_available is not None and not self._is_available():
            raise BackendUnavailable("the generator is restarting; try again in a few seconds")
        candidates, timings = await asyncio.to_thread(self._retriever.passages, question, k)
        trace.timings_ms.update(timings)
        started = time.perf_counter()
        texts = fixed_texts(question) + passage_texts(candidates)
        counts = await self._generator.count_tokens(texts)
        exact = counts is not None
        if counts is None:
            counts = [estimate_tokens(t) for t in texts]
        plan = plan_prompt(
            question,
            candidates,
            fixed_tokens=sum(counts[:2]),
            passage_tokens=counts[2:],
            num_ctx=self._generator.num_ctx,
            num_predict=self._generator.num_predict,
            margin_tokens=self._margin,
            exact_counts=exact,
        )
        trace.mark("pack", started)
        trace.fields.update(
            passages=len(plan.passages),
            passages_dropped=plan.dropped,
            prompt_tokens_planned=plan.prompt_tokens,
            token_counts="tokenizer" if exact else "estimate",
        )
        return PreparedAsk(question, plan)

    async def events(
        self, prepared: PreparedAsk, trace: AskTrace
    ) -> AsyncGenerator[dict[str, Any], None]:
        """The answer as events: `citations` first, then `delta`s, then `done`.

        Raises BackendError/BackendTimeout/BackendUnavailable from the generator after the
        first event; the caller turns that into its own error shape. Closing the iterator
        early closes the backend connection, which cancels the generation.
        """
        plan = prepared.plan
        yield {
            "type": "citations",
            "citations": [_without_cited(p.citation(cited=False)) for p in plan.passages],
            "dropped": plan.dropped,
        }
        started = time.perf_counter()
        pieces: list[str] = []
        stats = GenerationStats()
        stream = self._generator.chat(plan.messages)
        try:
            async for event in stream:
                if isinstance(event, TextDelta):
                    if not pieces:
                        trace.timings_ms["first_token"] = round(
                            (time.perf_counter() - trace.started) * 1000, 3
                        )
                    pieces.append(event.text)
                    yield {"type": "delta", "text": event.text}
                else:
                    stats = event
        finally:
            await stream.aclose()
            trace.mark("generate", started)
            trace.fields.update(_stats_fields(stats))
            trace.timings_ms.update(stats.timings_ms())
        answer = "".join(pieces).strip()
        trace.mark("total", trace.started)
        yield {
            "type": "done",
            "answer": answer,
            "citations": citations(plan.passages, answer),
            "model": self._generator.model,
            "done_reason": stats.done_reason,
            "tokens": _tokens(plan, stats),
            "timings_ms": dict(trace.timings_ms),
        }

    async def answer(self, prepared: PreparedAsk, trace: AskTrace) -> dict[str, Any]:
        """The whole answer as one object (the last event without its `type`)."""
        final: dict[str, Any] = {}
        async for event in self.events(prepared, trace):
            if event["type"] == "done":
                final = {k: v for k, v in event.items() if k != "type"}
        if not final:
            raise BackendError("the generator ended without an answer")
        return {"question": prepared.question, **final}


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
        "counted_with": "tokenizer" if plan.exact_counts else "estimate",
        "completion": stats.eval_count,
        "per_second": stats.tokens_per_s,
    }
