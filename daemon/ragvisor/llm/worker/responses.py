"""The JSON objects `/api/chat` and `/api/generate` answer with, in Ollama's exact shapes.

Chat carries text in `message.content`, generate in `response` (and a final `context` list,
which we leave empty: it is deprecated and we keep no token history per client). Statistics
are on the final object only; durations are nanoseconds.
"""

from __future__ import annotations

import enum
from typing import Any

from ragvisor.llm.worker.catalog import rfc3339
from ragvisor.llm.worker.generation import Finished
from ragvisor.llm.worker.slot import utc_now


class Shape(enum.Enum):
    """Which endpoint's objects to write."""

    CHAT = "chat"
    GENERATE = "generate"


def _text(shape: Shape, text: str) -> dict[str, Any]:
    if shape is Shape.CHAT:
        return {"message": {"role": "assistant", "content": text}}
    return {"response": text}


def piece(shape: Shape, model: str, text: str) -> dict[str, Any]:
    """One streamed piece of text."""
    return {"model": model, "created_at": rfc3339(utc_now()), **_text(shape, text), "done": False}


def final(shape: Shape, model: str, text: str, finished: Finished) -> dict[str, Any]:
    """The last object: the whole text when not streaming (else empty) and the statistics."""
    stats = finished.stats
    body: dict[str, Any] = {
        "model": model,
        "created_at": rfc3339(utc_now()),
        **_text(shape, text),
        "done": True,
        "done_reason": stats.done_reason,
    }
    if shape is Shape.GENERATE:
        body["context"] = []
    body.update(
        total_duration=finished.total_duration_ns,
        load_duration=finished.load_duration_ns,
        prompt_eval_count=stats.prompt_eval_count,
        prompt_eval_duration=stats.prompt_eval_duration_ns,
        eval_count=stats.eval_count,
        eval_duration=stats.eval_duration_ns,
    )
    return body


def lifecycle(shape: Shape, model: str, done_reason: str) -> dict[str, Any]:
    """The answer to an empty request: `done_reason` is ``load`` or ``unload``."""
    return {
        "model": model,
        "created_at": rfc3339(utc_now()),
        **_text(shape, ""),
        "done": True,
        "done_reason": done_reason,
    }
