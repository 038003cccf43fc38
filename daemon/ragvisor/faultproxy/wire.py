"""The proxy's client side, on raw sockets with h11: reading a request within bounds, and
writing a response (or a fault) back byte by byte, so a stall or a reset is exactly that."""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from collections.abc import Awaitable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import h11

from ragvisor.faultproxy.limits import MAX_REQUEST_BYTES, READ_SIZE


@dataclass(frozen=True, slots=True)
class ClientRequest:
    """One client request, read whole (Ollama requests are small JSON documents)."""

    method: str
    target: str
    headers: list[tuple[bytes, bytes]]
    body: bytes

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]


class RequestTooLarge(Exception):
    """The client sent more than MAX_REQUEST_BYTES."""


class Wire:
    """One client connection: h11's view of the protocol plus the socket, so answers are
    written as HTTP events rather than bytes."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.http = h11.Connection(h11.SERVER)
        self.response_started = False

    async def read_request(self) -> ClientRequest | None:
        """The next request, or None when the client closed without sending one.

        Raises h11.RemoteProtocolError for malformed HTTP and RequestTooLarge.
        """
        head: h11.Request | None = None
        body = bytearray()
        while True:
            event = self.http.next_event()
            if event is h11.NEED_DATA:
                if self.http.they_are_waiting_for_100_continue:
                    await self.send(h11.InformationalResponse(status_code=100, headers=[]))
                self.http.receive_data(await self.reader.read(READ_SIZE))
            elif isinstance(event, h11.Request):
                head = event
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > MAX_REQUEST_BYTES:
                    raise RequestTooLarge
            elif isinstance(event, h11.EndOfMessage) and head is not None:
                return ClientRequest(
                    head.method.decode("ascii"),
                    head.target.decode("latin-1"),  # h11 checked it; only ASCII in practice
                    list(head.headers.raw_items()),
                    bytes(body),
                )
            else:  # ConnectionClosed before a whole request
                return None

    async def send(self, *events: h11.Event) -> None:
        """Write events and wait until the socket took them: each chunk goes out as it comes."""
        for event in events:
            if isinstance(event, h11.Response):
                self.response_started = True
            data = self.http.send(event)
            if data:
                self.writer.write(data)
        await self.writer.drain()

    async def send_head(
        self, status: int, headers: Sequence[tuple[bytes, bytes]], reason: bytes = b""
    ) -> None:
        """The status line and headers; every answer closes the connection afterwards."""
        headers = [*headers, (b"connection", b"close")]
        await self.send(h11.Response(status_code=status, headers=headers, reason=reason))

    async def send_json(self, status: int, document: Any) -> None:
        """A whole JSON answer (control API, canned faults, the proxy's own errors)."""
        body = json.dumps(document).encode()
        await self.send_head(
            status,
            [
                (b"content-type", b"application/json; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
            ],
        )
        await self.send(h11.Data(data=body), h11.EndOfMessage())

    async def while_connected(self, work: Awaitable[None]) -> bool:
        """Run `work` until it ends or the client goes away; True when it ended first.

        A client that gives up (its deadline passed) closes the connection; cancelling the work
        then closes the upstream call too, so cancellation travels through the proxy.
        """
        job = asyncio.ensure_future(work)
        watch = asyncio.ensure_future(self._until_disconnected())
        try:
            await asyncio.wait((job, watch), return_when=asyncio.FIRST_COMPLETED)
        finally:
            job.cancel()
            watch.cancel()
            await asyncio.gather(job, watch, return_exceptions=True)
        if job.cancelled():
            return False
        error = job.exception()
        if error is not None:
            raise error
        return True

    async def _until_disconnected(self) -> None:
        # After a whole request the client only reads: any end of its stream means it left.
        with suppress(OSError):
            while await self.reader.read(READ_SIZE):
                pass

    def reset(self) -> None:
        """Close with a TCP RST (SO_LINGER 0), as when the backend process is killed."""
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()

    def cut(self) -> None:
        """Drop the connection mid-answer, as the upstream did."""
        self.writer.transport.abort()

    async def close(self) -> None:
        self.writer.close()
        with suppress(OSError, TimeoutError):
            async with asyncio.timeout(1.0):
                await self.writer.wait_closed()
