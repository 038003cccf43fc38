"""What Ollama's answers mean to us: deadlines per phase, and its failures as our errors.

One translation from httpx's exceptions and Ollama's error statuses to :mod:`ragvisor.errors`,
classified for the retry policy, shared by the async generator client and the synchronous
embedder — so a refused connection, a busy server or a model that does not fit is the same
error whichever of them met it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx

from ragvisor.errors import (
    BackendError,
    BackendOutOfMemory,
    BackendRejected,
    BackendTimeout,
    BackendUnavailable,
    InputRefused,
    RagvisorError,
)

# Ollama's answer for a model it does not have: not the same as a route it does not have.
MODEL_MISSING = "try pulling it first"
# Ollama's refusal to load a model that does not fit (llm/server.go); retrying cannot help.
OUT_OF_MEMORY = "requires more system memory"
# Ollama's refusal of an input longer than the context when `truncate` is false: a 400 from
# server/routes.go ("input length exceeds the context length"), and, from versions that embed in
# the runner, a 500 ("the input length exceeds the context length"). Matched in lower case.
CONTEXT_EXCEEDED = "input length exceeds the context length"
_ERROR_TEXT_CHARS = 500


@dataclass(frozen=True, slots=True)
class Deadlines:
    """Seconds allowed per phase of one backend call (see `[generator.deadlines]`)."""

    connect_s: float = 5.0
    first_token_s: float = 120.0
    stall_s: float = 30.0
    total_s: float = 300.0


def keep_alive_value(raw: str) -> str | int:
    """Ollama's keep_alive as sent: whole numbers as numbers ("0" unloads), durations as text."""
    try:
        return int(raw)
    except ValueError:
        return raw


def timeout_phase(exc: httpx.TimeoutException) -> str:
    """Which of our deadlines an httpx timeout stands for."""
    if isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout):
        return "connect"
    return "total"


def transport_error(exc: httpx.HTTPError, *, backend: str, what: str, url: str) -> RagvisorError:
    """The error an httpx failure stands for: cannot connect (retried as unavailable), a
    timeout (with the phase it stands for), or any other failure of the exchange.
    """
    if isinstance(exc, httpx.ConnectError):
        return BackendUnavailable(f"cannot connect to the {backend} at {url}")
    if isinstance(exc, httpx.TimeoutException):
        return BackendTimeout(
            f"{backend} {what} timed out: {type(exc).__name__}", phase=timeout_phase(exc)
        )
    return BackendError(f"{backend} {what} failed: {type(exc).__name__}: {exc}")


def error_for_status(status: int, message: str, what: str, backend: str = "generator") -> Exception:
    """The error an Ollama-protocol status stands for, classified for the retry policy.

    503 (queue full, starting) and 429 are "busy": retried. A message saying a model does not
    fit in memory is never retried. An input longer than the context is refused for that input,
    whatever the status (400, or 500 from newer runners): not retried, and a sync skips it.
    Other 4xx are our own request's fault: not retried. Other 5xx are the backend's: retried.
    """
    if OUT_OF_MEMORY in message:
        return BackendOutOfMemory(f"{backend} is out of memory ({what}): {message}")
    if is_context_exceeded(message):
        return InputRefused(f"{backend} refused {what} ({status}): {message}")
    if status in (503, 429):
        return BackendUnavailable(f"{backend} is busy or starting ({what}): {message}")
    if 400 <= status < 500:
        return BackendRejected(f"{backend} refused {what} ({status}): {message}")
    return BackendError(f"{backend} answered {status} to {what}: {message}")


def is_context_exceeded(message: str) -> bool:
    """Whether an error message is Ollama's refusal of an input longer than the context."""
    return CONTEXT_EXCEEDED in message.lower()


def error_text(raw: bytes | str) -> str:
    """Ollama's `{"error": ...}` message, or the start of whatever the body was."""
    text = (raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw).strip()
    try:
        data = json.loads(text)
    except ValueError:
        return text[:_ERROR_TEXT_CHARS]
    if isinstance(data, dict) and "error" in data:
        return str(data["error"])
    return text[:_ERROR_TEXT_CHARS]


def deadline_missed(what: str, phase: str, limit_s: float = 0.0) -> BackendTimeout:
    """The error for a call cancelled at a deadline, named by its phase (`first_token`,
    `stall`, `total`, or `request`: the caller's own deadline came first)."""
    if phase == "request":
        return BackendTimeout(f"{what}: the request deadline passed; call cancelled", phase=phase)
    return BackendTimeout(
        f"{what}: missed the {phase} deadline ({limit_s:g} s); call cancelled", phase=phase
    )


def json_object(raw: bytes | str, what: str, backend: str) -> dict[str, Any]:
    """An answer's JSON object. Raises BackendError for anything else."""
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise BackendError(f"{backend} answered {what} with something that is not JSON") from exc
    if not isinstance(data, dict):
        raise BackendError(f"{backend} answered {what} with JSON that is not an object")
    return data
