"""Connections cannot pin the daemon: every request head has a deadline, and the number of open
connections is bounded without letting idle ones lock anybody out.

uvicorn (0.54, h11) arms its keep-alive timer only after a response and cancels it on any byte
received, so a connection that never sends a byte, or sends its head one header at a time
(slowloris), stays open for good. Measured before this module: 20 slowloris clients and 400 idle
or half-sent connections were all still open after 20-40 s, and 1,200 idle sockets all stayed
open. uvicorn's `limit_concurrency` is no bound for this: it counts idle connections as load and
answers 503 in plain text, so a few hundred idle sockets would turn every real client away.

`GuardedH11Protocol` is uvicorn's h11 protocol plus:

- a head deadline, `server.header_timeout_s`, from a connection's start (or from the first byte
  of a later request) until that request's whole head has arrived; a slower client is
  disconnected, quietly, as nginx does (a 408 would go to a client that is not listening);
- a bound, `server.max_connections`: past it the connection idle the longest (no request in
  flight: waiting for its head, or between two requests) is closed to make room, so idle and
  slow clients cannot keep a new one out; only when every connection has a request in flight is
  the newcomer's request answered 503, with `Retry-After`, and its connection closed;
- an answer sent before the request body was all received closes the connection: uvicorn would
  otherwise read and drop whatever the client goes on sending, for as long as it sends.

Idle time between requests stays uvicorn's own `timeout_keep_alive` (`server.keep_alive_s`).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

import h11
import structlog
from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send
from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

from ragvisor.config import ServerSettings
from ragvisor.errors import Overloaded
from ragvisor.metrics import Metrics
from ragvisor.web.errors import error_body, retry_after_s, status_for

# Seconds a refused client is asked to wait: a connection frees up as soon as a request ends.
OVER_CAPACITY_RETRY_S = 1.0


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """How long a request head may take, how long a connection may idle between requests, and
    how many connections may be open."""

    header_timeout_s: float
    keep_alive_s: int  # uvicorn's timeout_keep_alive takes whole seconds
    max_connections: int

    @classmethod
    def from_settings(cls, server: ServerSettings) -> ConnectionLimits:
        """The limits of `[server]`."""
        return cls(server.header_timeout_s, server.keep_alive_s, server.max_connections)


ConnectionT = TypeVar("ConnectionT", bound=Hashable)


class ConnectionTable(Generic[ConnectionT]):
    """The open connections and which of them are idle, the one idle longest first.

    Bookkeeping only (no sockets, no clock), so the eviction rule is tested on plain objects.
    """

    def __init__(self, max_connections: int) -> None:
        self.max_connections = max_connections
        self._open: set[ConnectionT] = set()
        self._idle: OrderedDict[ConnectionT, None] = OrderedDict()

    @property
    def open_count(self) -> int:
        """Connections open (those this table closed itself no longer count)."""
        return len(self._open)

    @property
    def idle_count(self) -> int:
        """Open connections without a request in flight."""
        return len(self._idle)

    @property
    def active_count(self) -> int:
        """Open connections with a request in flight."""
        return len(self._open) - len(self._idle)

    def over_bound(self) -> bool:
        """More connections are open than `max_connections`."""
        return len(self._open) > self.max_connections

    def opened(self, connection: ConnectionT) -> None:
        """A new connection: open, and idle until its first request's head has arrived."""
        self._open.add(connection)
        self._idle[connection] = None

    def idle(self, connection: ConnectionT) -> None:
        """`connection` has no request in flight from now on."""
        if connection in self._open:
            self._idle[connection] = None
            self._idle.move_to_end(connection)

    def active(self, connection: ConnectionT) -> None:
        """A request of `connection` is in flight: it is never evicted."""
        self._idle.pop(connection, None)

    def closed(self, connection: ConnectionT) -> None:
        """`connection` is closed (or closing)."""
        self._open.discard(connection)
        self._idle.pop(connection, None)

    def make_room(self, newcomer: ConnectionT) -> ConnectionT | None:
        """While over the bound: the connection idle the longest other than `newcomer`, already
        forgotten here, for the caller to close. None within the bound or when none is idle."""
        if not self.over_bound():
            return None
        for connection in self._idle:
            if connection != newcomer:
                self.closed(connection)
                return connection
        return None


class ConnectionGuard:
    """One server's connection limits and table, shared by all its connections."""

    def __init__(self, limits: ConnectionLimits, metrics: Metrics | None = None) -> None:
        self.limits = limits
        self.table: ConnectionTable[GuardedH11Protocol] = ConnectionTable(limits.max_connections)
        self._metrics = metrics
        self._log = structlog.get_logger(component="web")
        if metrics is not None:  # read at scrape time, nothing to update per connection
            metrics.http_connections.labels("idle").set_function(lambda: self.table.idle_count)
            metrics.http_connections.labels("active").set_function(lambda: self.table.active_count)

    def closing(self, reason: str) -> None:
        """Count a connection the daemon closes on its own, and why."""
        if self._metrics is not None:
            self._metrics.http_connections_closed_total.labels(reason).inc()
        # Debug: under a flood of slow clients this would be one line per connection.
        self._log.debug("http.connection_closed", reason=reason, open=self.table.open_count)

    async def refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI app of a request that came while every connection had one in flight: 503
        in the error shape, with `Retry-After`, and the connection closed."""
        limit = self.limits.max_connections
        exc = Overloaded(
            f"all {limit} connections (server.max_connections) have a request in flight; "
            f"try again in {OVER_CAPACITY_RETRY_S:g} s",
            retry_after_s=OVER_CAPACITY_RETRY_S,
        )
        self.closing("over_capacity")
        self._log.warning("http.over_capacity", path=scope["path"], max_connections=limit)
        status, code = status_for(exc)
        headers = {"Retry-After": str(retry_after_s(exc)), "Connection": "close"}
        await JSONResponse(error_body(str(exc), code), status, headers=headers)(
            scope, receive, send
        )


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for each request head and a bound on connections.

    uvicorn builds one per connection; `guarded_protocol` binds the class to one server's guard.
    """

    guard: ClassVar[ConnectionGuard]

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._served_app = self.app
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.guard.table.opened(self)
        self._make_room()
        self._start_head_clock()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_clock()
        self.guard.table.closed(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.conn.their_state is h11.IDLE:  # bytes of a new request's head
            if self._head_timer is None:
                self._start_head_clock()
            # Read when h11 yields the head: the app that answers this request.
            self.app = self._served_app if self._make_room() else self.guard.refuse
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:  # the head is in: a request is in flight
            self._stop_head_clock()
            self.guard.table.active(self)

    def on_response_complete(self) -> None:
        if self.conn.their_state is h11.SEND_BODY and not self.transport.is_closing():
            # Answered before the body came in (refused, or not needed): nobody reads the rest.
            self._close("unread_body")
        super().on_response_complete()  # returns at once when closing
        if self.transport.is_closing():
            return
        if self.conn.their_state is h11.IDLE:
            self.guard.table.idle(self)  # until the next request: uvicorn's keep-alive timer
            if self.conn.trailing_data[0]:  # part of a pipelined head is already in
                self._start_head_clock()
        else:  # a pipelined request has started
            self.guard.table.active(self)

    def timeout_keep_alive_handler(self) -> None:
        if not self.transport.is_closing():
            self.guard.table.closed(self)
            self.guard.closing("keep_alive")
        super().timeout_keep_alive_handler()

    def _make_room(self) -> bool:
        """Close idle connections while over the bound; False if it is still exceeded (every
        other connection has a request in flight)."""
        table = self.guard.table
        while (victim := table.make_room(self)) is not None:
            victim._close("evicted")
        return not table.over_bound()

    def _start_head_clock(self) -> None:
        self._head_timer = self.loop.call_later(
            self.guard.limits.header_timeout_s, self._head_timed_out
        )

    def _stop_head_clock(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.conn.their_state is h11.IDLE:
            self._close("header_timeout")

    def _close(self, reason: str) -> None:
        if self.transport.is_closing():
            return
        self.guard.table.closed(self)
        self.guard.closing(reason)
        self.transport.close()


def guarded_protocol(guard: ConnectionGuard) -> type[GuardedH11Protocol]:
    """The protocol class for `uvicorn.Config(http=…)`, bound to one server's guard."""

    class BoundGuardedH11Protocol(GuardedH11Protocol):
        pass

    BoundGuardedH11Protocol.guard = guard
    return BoundGuardedH11Protocol
