"""Request bodies are bounded in size and in time, per route, before a handler reads them.

A body larger than its route's limit is refused with 413 as soon as the head says so
(`Content-Length`), without reading a byte of it; a chunked body (no length) is counted as it
arrives and refused the moment it passes the limit. A body that does not arrive within
`server.body_timeout_s` of the head is answered 408. Either way the connection is closed after
the answer, so the rest of the body is never read. Measured before this module: a 100 MB `/ask`
body was read whole (daemon RSS 418 → 584 MB) before its 422.

Starlette's own `RequestBodyLimitMiddleware` (FastAPI's `max_body_size`) was not enough: it looks
at `Content-Length` only once a handler reads the body or starts its answer, answers in plain
text rather than the error shape, keeps the connection open, and does not bound the time.

Limits are per path prefix, so the route that takes files (`PUT /documents/{path}`) accepts
more than a question: up to `corpus.max_file_bytes`, the largest file a sync indexes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ragvisor.config import ServerSettings
from ragvisor.errors import BodyTimeout, BodyTooLarge, RagvisorError
from ragvisor.web.errors import error_body, status_for

CLOSE = (b"connection", b"close")


@dataclass(frozen=True, slots=True)
class SizeLimit:
    """A body size limit and the setting it comes from (named in the 413's message)."""

    max_bytes: int
    setting: str


@dataclass(frozen=True, slots=True)
class BodyLimits:
    """How large a request body may be, per route, and how long it may take to arrive."""

    default: SizeLimit
    timeout_s: float
    # (path prefix, limit) for routes that take more (or less); the longest prefix wins.
    by_prefix: tuple[tuple[str, SizeLimit], ...] = ()

    @classmethod
    def from_settings(
        cls, server: ServerSettings, *, max_document_bytes: int | None = None
    ) -> BodyLimits:
        """The limits of `[server]`; `PUT /documents/…` takes up to `max_document_bytes`
        (`corpus.max_file_bytes`: a larger file would be skipped by the sync)."""
        documents = (
            (("/documents/", SizeLimit(max_document_bytes, "corpus.max_file_bytes")),)
            if max_document_bytes is not None
            else ()
        )
        return cls(
            default=SizeLimit(server.max_body_bytes, "server.max_body_bytes"),
            timeout_s=server.body_timeout_s,
            by_prefix=documents,
        )

    def for_path(self, path: str) -> SizeLimit:
        """The size limit of the route at `path`."""
        longest, limit = -1, self.default
        for prefix, prefix_limit in self.by_prefix:
            if path.startswith(prefix) and len(prefix) > longest:
                longest, limit = len(prefix), prefix_limit
        return limit


class BodyLimitMiddleware:
    """Refuse oversized or slow request bodies (a pure ASGI middleware, like the request log)."""

    def __init__(self, app: ASGIApp, limits: BodyLimits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limits.for_path(scope["path"])
        declared = _content_length(scope.get("headers", ()))
        if declared is not None and declared > limit.max_bytes:
            too_large = BodyTooLarge(
                f"the request body is {declared} bytes; {scope['path']} accepts at most "
                f"{limit.max_bytes} ({limit.setting})"
            )
            await _refuse(too_large, scope, receive, send)
            return
        body = _BoundedBody(receive, limit, self.limits.timeout_s, scope["path"])
        await self.app(scope, body.receive, body.closing(send))


class _BoundedBody:
    """The `receive` of one request, counting body bytes against a size and a time limit."""

    def __init__(self, receive: Receive, limit: SizeLimit, timeout_s: float, path: str) -> None:
        self._receive = receive
        self._limit = limit
        self._timeout_s = timeout_s
        self._path = path
        self._deadline = asyncio.get_running_loop().time() + timeout_s
        self._received = 0
        self._complete = False
        self.refused = False  # a limit was hit: the answer closes the connection

    async def receive(self) -> Message:
        if self._complete:  # after the body, `receive` only waits for a disconnect
            return await self._receive()
        try:
            async with asyncio.timeout_at(self._deadline):
                message = await self._receive()
        except TimeoutError as exc:
            self.refused = True
            raise BodyTimeout(
                f"the request body did not arrive within {self._timeout_s:g} s "
                "(server.body_timeout_s)"
            ) from exc
        if message["type"] == "http.request":
            self._received += len(message.get("body", b""))
            if self._received > self._limit.max_bytes:
                self.refused = True
                raise BodyTooLarge(
                    f"the request body is over {self._limit.max_bytes} bytes; {self._path} "
                    f"accepts at most {self._limit.max_bytes} ({self._limit.setting})"
                )
            self._complete = not message.get("more_body", False)
        else:
            self._complete = True  # http.disconnect: nothing more will come
        return message

    def closing(self, send: Send) -> Send:
        """`send`, adding `Connection: close` to an answer given after a limit was hit."""

        async def send_closing(message: Message) -> None:
            if self.refused and message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), CLOSE]}
            await send(message)

        return send_closing


def _content_length(headers: Iterable[tuple[bytes, bytes]]) -> int | None:
    """The declared body size (h11 has already refused a malformed or conflicting one)."""
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _refuse(exc: RagvisorError, scope: Scope, receive: Receive, send: Send) -> None:
    """Answer with the error's status and shape, and close the connection."""
    status, code = status_for(exc)
    response = JSONResponse(error_body(str(exc), code), status, headers={"Connection": "close"})
    await response(scope, receive, send)
