"""The Ollama client: the one way the daemon reaches any generator (async, streaming).

The embedded worker and a production Ollama speak the same API, so this module is exercised on
every machine. Every call is bounded: connect, first token, stall between streamed lines and the
whole call each have a deadline, and a missed one cancels the call (the connection is closed,
which makes the backend stop generating). `num_ctx` and `num_predict` are always sent — Ollama
otherwise picks its own context and generates up to ten times num_ctx tokens.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncGenerator, Sequence
from typing import Any

import httpx

from ragvisor.core.model import ChatMessage, GenerationStats, TextDelta
from ragvisor.errors import BackendError, BackendOutOfMemory, BackendTimeout
from ragvisor.ollama.wire import (
    MODEL_MISSING,
    OUT_OF_MEMORY,
    Deadlines,
    deadline_missed,
    error_for_status,
    error_text,
    json_object,
    keep_alive_value,
    transport_error,
)

TOKEN_COUNT_PATH = "/api/ragvisor/token_count"  # noqa: S105 - a URL path; worker extension


class _Phase:
    """Which deadline is running, so a timeout can be named in the error.

    `until` (event-loop time) caps the whole call from outside: what is left of the request.
    """

    def __init__(
        self, loop: asyncio.AbstractEventLoop, deadlines: Deadlines, until: float | None = None
    ) -> None:
        self.loop = loop
        self.deadlines = deadlines
        self.started = loop.time()
        self.total_at = self.started + deadlines.total_s
        self.request_cap = until is not None and until < self.total_at
        if until is not None:
            self.total_at = min(self.total_at, until)
        self.name = "first_token"

    def first_deadline(self) -> float:
        return min(self.started + self.deadlines.first_token_s, self.total_at)

    def next_deadline(self) -> float:
        self.name = "stall"
        return min(self.loop.time() + self.deadlines.stall_s, self.total_at)

    def timeout_error(self, what: str) -> BackendTimeout:
        if self.loop.time() >= self.total_at - 0.001:
            if self.request_cap:
                return deadline_missed(what, "request")
            return deadline_missed(what, "total", self.deadlines.total_s)
        if self.name == "first_token":
            return deadline_missed(what, "first_token", self.deadlines.first_token_s)
        return deadline_missed(what, "stall", self.deadlines.stall_s)


class OllamaClient:
    """Async client for Ollama's HTTP API (chat, tags, ps, show, version, unload).

    One `httpx.AsyncClient` per event loop, created on first use; call :meth:`aclose` when done.
    """

    def __init__(
        self,
        base_url: str,
        *,
        model: str,
        num_ctx: int,
        num_predict: int,
        temperature: float = 0.2,
        keep_alive: str = "5m",
        deadlines: Deadlines | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._model = model
        self._num_ctx = num_ctx
        self._num_predict = num_predict
        self.temperature = temperature
        self.keep_alive = keep_alive
        self.deadlines = deadlines or Deadlines()
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._token_count_supported: bool | None = None

    @property
    def model(self) -> str:
        """The model every request names."""
        return self._model

    @property
    def num_ctx(self) -> int:
        """Context window sent as `options.num_ctx`."""
        return self._num_ctx

    @property
    def num_predict(self) -> int:
        """Answer cap sent as `options.num_predict`."""
        return self._num_predict

    def options(self) -> dict[str, Any]:
        """The `options` object of every generation request."""
        return {
            "num_ctx": self._num_ctx,
            "num_predict": self._num_predict,
            "temperature": self.temperature,
        }

    def _http(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            d = self.deadlines
            self._client = httpx.AsyncClient(
                base_url=self.base_url,
                timeout=httpx.Timeout(
                    connect=d.connect_s, read=d.total_s, write=d.connect_s, pool=d.connect_s
                ),
                transport=self._transport,
            )
            self._loop = loop
        return self._client

    async def aclose(self) -> None:
        """Close connections of the current event loop's client."""
        if self._client is not None:
            client, self._client, self._loop = self._client, None, None
            await client.aclose()

    async def chat(
        self, messages: Sequence[ChatMessage], *, until: float | None = None
    ) -> AsyncGenerator[TextDelta | GenerationStats, None]:
        """Stream `/api/chat`: text pieces, then the final stats.

        `until` (time.monotonic()) ends the call early when the request's own deadline comes
        before the call's `total_s`.

        Raises BackendUnavailable (cannot connect, 503), BackendTimeout (a deadline passed) or
        BackendError (an error status, an `{"error"}` line, a connection cut mid-answer).
        Closing the iterator early closes the connection, which cancels the generation.
        """
        body = {
            "model": self._model,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "stream": True,
            "options": self.options(),
            "keep_alive": keep_alive_value(self.keep_alive),
        }
        client = self._http()
        loop = asyncio.get_running_loop()
        cap = None if until is None else loop.time() + (until - time.monotonic())
        phase = _Phase(loop, self.deadlines, cap)
        response: httpx.Response | None = None
        try:
            # Each wait has its own deadline and no `yield` happens inside a timeout block: a
            # timeout firing while the consumer holds control would cancel the consumer instead.
            async with asyncio.timeout_at(phase.first_deadline()):
                request = client.build_request("POST", "/api/chat", json=body)
                response = await client.send(request, stream=True)
                await raise_for_status(response, "chat")
            lines = response.aiter_lines()
            deadline = phase.first_deadline()
            while True:
                async with asyncio.timeout_at(deadline):
                    line = await anext(lines, None)
                if line is None:
                    break
                deadline = phase.next_deadline()
                if not line.strip():
                    continue
                event = _parse_chat_line(line)
                if event is not None:
                    yield event
                    if isinstance(event, GenerationStats):
                        return
            raise BackendError("generator ended the answer without its final stats line")
        except TimeoutError as exc:
            raise phase.timeout_error("generator") from exc
        except httpx.HTTPError as exc:
            what = "chat" if response is None else "chat mid-answer"
            raise transport_error(exc, backend="generator", what=what, url=self.base_url) from exc
        finally:
            if response is not None:
                await response.aclose()

    async def _get_json(
        self, method: str, path: str, body: dict[str, Any] | None = None, timeout: float = 10.0
    ) -> dict[str, Any]:
        client = self._http()
        try:
            async with asyncio.timeout(timeout):
                response = await client.request(method, path, json=body)
        except TimeoutError as exc:
            raise BackendTimeout(f"{path} did not answer within {timeout:g} s") from exc
        except httpx.HTTPError as exc:
            raise transport_error(exc, backend="generator", what=path, url=self.base_url) from exc
        await raise_for_status(response, path)
        return json_object(response.content, path, "generator")

    async def version(self, timeout: float = 2.0) -> str:
        """The backend's version: the cheapest liveness probe (loads no model)."""
        data = await self._get_json("GET", "/api/version", timeout=timeout)
        return str(data.get("version", ""))

    async def ps(self, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Models resident in memory."""
        data = await self._get_json("GET", "/api/ps", timeout=timeout)
        return list(data.get("models", []))

    async def tags(self, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Models on disk, with their digests."""
        data = await self._get_json("GET", "/api/tags", timeout=timeout)
        return list(data.get("models", []))

    async def show(self, model: str | None = None) -> dict[str, Any]:
        """A model's details and GGUF metadata (`model_info`)."""
        return await self._get_json("POST", "/api/show", {"model": model or self._model})

    async def unload(self) -> None:
        """Ask the backend to drop the model from memory now (`keep_alive: 0`)."""
        await self._get_json(
            "POST",
            "/api/generate",
            {"model": self._model, "keep_alive": 0},
            timeout=self.deadlines.total_s,
        )

    async def count_tokens(self, texts: Sequence[str]) -> list[int] | None:
        """Token counts from the worker's tokenizer; None for a backend without the extension.

        A real Ollama has no such endpoint: the first 404/405 is remembered and the caller
        falls back to an estimate without asking again.
        """
        if self._token_count_supported is False or not texts:
            return None if self._token_count_supported is False else []
        try:
            data = await self._get_json(
                "POST", TOKEN_COUNT_PATH, {"model": self._model, "texts": list(texts)}
            )
        except _NotSupported:
            self._token_count_supported = False
            return None
        counts = data.get("counts")
        if not isinstance(counts, list) or len(counts) != len(texts):
            raise BackendError("token_count answered with the wrong number of counts")
        self._token_count_supported = True
        return [int(c) for c in counts]


class _NotSupported(BackendError):
    """The backend has no such endpoint (404/405 on an extension)."""


async def raise_for_status(response: httpx.Response, what: str, backend: str = "generator") -> None:
    """Raise the classified error for an error status (reading the `{"error"}` body)."""
    if response.status_code < 400:
        return
    message = error_text(await response.aread())
    status = response.status_code
    if (
        status in (404, 405)
        and response.request.url.path == TOKEN_COUNT_PATH
        and MODEL_MISSING not in message
    ):
        raise _NotSupported(message)
    raise error_for_status(status, message, what, backend)


def _parse_chat_line(line: str) -> TextDelta | GenerationStats | None:
    try:
        data = json.loads(line)
    except ValueError as exc:
        raise BackendError(f"generator sent a line that is not JSON: {line[:120]!r}") from exc
    if not isinstance(data, dict):
        raise BackendError("generator sent a JSON line that is not an object")
    if "error" in data:
        message = str(data["error"])
        if OUT_OF_MEMORY in message:
            raise BackendOutOfMemory(f"generator is out of memory mid-answer: {message}")
        raise BackendError(f"generator error mid-answer: {message}")
    if data.get("done"):
        return GenerationStats(
            done_reason=data.get("done_reason"),
            load_ns=data.get("load_duration"),
            prompt_eval_count=data.get("prompt_eval_count"),
            prompt_eval_ns=data.get("prompt_eval_duration"),
            eval_count=data.get("eval_count"),
            eval_ns=data.get("eval_duration"),
            total_ns=data.get("total_duration"),
        )
    content = (data.get("message") or {}).get("content") or ""
    return TextDelta(content) if content else None
