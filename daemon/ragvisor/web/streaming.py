"""Streaming NDJSON that notices a departed client and always closes what it streams.

Starlette's `StreamingResponse` (ASGI spec 2.4) only learns of a disconnect when the next write
fails and then leaves the iterator unclosed until garbage collection — so a generation would
keep running while the model thinks. Here a listener task watches for `http.disconnect` the
whole time, and the iterator is closed (cancelling the backend call) in every case.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

T = TypeVar("T")


class ClientGone(Exception):
    """The client closed the connection before the answer was complete."""


async def _wait_for_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def until_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Await `work`, cancelling it if the client disconnects first (then raise ClientGone).

    When the caller itself is cancelled (a deadline), the work is cancelled too and the
    cancellation propagates, so the caller's timeout sees it as a timeout.
    """
    task = asyncio.ensure_future(work)
    listener = asyncio.ensure_future(_wait_for_disconnect(request.receive))
    try:
        await asyncio.wait({task, listener}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        await _cancel(task)
        raise
    finally:
        listener.cancel()
    if not task.done():
        await _cancel(task)
        raise ClientGone
    return task.result()


async def _cancel(task: asyncio.Future[Any]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


class NdjsonStream(Response):
    """`application/x-ndjson`: one JSON object per line, from an async generator of dicts."""

    media_type = "application/x-ndjson"

    def __init__(
        self,
        events: AsyncGenerator[dict[str, Any], None],
        status_code: int = 200,
        on_client_gone: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(content=None, status_code=status_code)
        # Response sets `content-length: 0` for an empty body; a stream has no length.
        self.raw_headers = [(k, v) for k, v in self.raw_headers if k != b"content-length"]
        self.events = events
        self.client_gone = False
        self._on_client_gone = on_client_gone

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        listener = asyncio.ensure_future(_wait_for_disconnect(receive))
        streamer = asyncio.ensure_future(self._stream(send))
        try:
            done, _ = await asyncio.wait({listener, streamer}, return_when=asyncio.FIRST_COMPLETED)
            if streamer not in done:
                self.client_gone = True
                if self._on_client_gone is not None:
                    self._on_client_gone()
                streamer.cancel()
                with contextlib.suppress(asyncio.CancelledError, OSError):
                    await streamer
            else:
                with contextlib.suppress(OSError):
                    streamer.result()
        finally:
            listener.cancel()
            await self.events.aclose()

    async def _stream(self, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        async for event in self.events:
            line = json.dumps(event, ensure_ascii=False).encode("utf-8") + b"\n"
            await send({"type": "http.response.body", "body": line, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
