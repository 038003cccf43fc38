"""One log event per HTTP request, written after the response's last byte, for both programs.

A plain ASGI middleware (no per-request task, as `BaseHTTPMiddleware` makes) so it adds
microseconds, not milliseconds, to a search. Handlers add fields to their request's event with
`note` (phase durations, the model, token counts, `degraded`) — or `attach` a mapping that is
read when the response ends; a noted `status` replaces the
response's, so a client that left is logged 499 (nginx's "client closed request") however the
response ended. Fields noted as None are left out.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

LOG_FIELDS_KEY = "log_fields"
LIVE_FIELDS_KEY = "log_live_fields"
REQUEST_ID_HEADER = b"x-request-id"
REQUEST_ID_MAX_CHARS = 64

# Called with the path, the logged status, the seconds taken and the fields noted for the log
# (the daemon's metrics and the status page's history).
Observer = Callable[[str, int, float, Mapping[str, Any]], None]


def note(scope: Scope, **fields: Any) -> None:
    """Add fields to this request's log event (pass `request.scope`)."""
    scope.setdefault("state", {}).setdefault(LOG_FIELDS_KEY, {}).update(fields)


def attach(scope: Scope, live: Mapping[str, Any], *, suffix: str = "") -> None:
    """Log a mapping's contents as they are when the response ends, each key with `suffix`:
    a streamed answer's timings and token counts arrive after its handler has returned."""
    scope.setdefault("state", {}).setdefault(LIVE_FIELDS_KEY, []).append((live, suffix))


def request_id(scope: Scope) -> str | None:
    """The id the request log gave this request (the caller's `X-Request-ID`, or a new one)."""
    value = scope.get("state", {}).get("request_id")
    return value if isinstance(value, str) else None


class RequestLog:
    """The middleware described in the module docstring.

    `event` names the log event and `path_field` the key of the path in it; with `request_ids`
    each request gets an id (the caller's `X-Request-ID`, cut to 64 characters, or a new one),
    logged and sent back in the same header. A 200 on one of `quiet_paths` (frequent probes)
    is logged at debug level.
    """

    def __init__(
        self,
        app: ASGIApp,
        log: Any,
        *,
        event: str,
        path_field: str = "path",
        request_ids: bool = False,
        duration_digits: int = 3,
        quiet_paths: frozenset[str] = frozenset(),
        observe: Observer | None = None,
    ) -> None:
        self.app = app
        self.log = log
        self.event = event
        self.path_field = path_field
        self.request_ids = request_ids
        self.duration_digits = duration_digits
        self.quiet_paths = quiet_paths
        self.observe = observe

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        fields: dict[str, Any] = state.setdefault(LOG_FIELDS_KEY, {})
        rid = None
        if self.request_ids:
            given = dict(scope.get("headers", ())).get(REQUEST_ID_HEADER, b"")
            rid = given.decode("latin-1")[:REQUEST_ID_MAX_CHARS] or uuid.uuid4().hex
            state["request_id"] = rid
        started = time.perf_counter()
        status = 500

        async def send_watched(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if rid is not None:
                    message.setdefault("headers", []).append((REQUEST_ID_HEADER, rid.encode()))
            await send(message)

        try:
            await self.app(scope, receive, send_watched)
        finally:
            seconds = time.perf_counter() - started
            for live, suffix in state.get(LIVE_FIELDS_KEY, ()):
                fields = {**{key + suffix: value for key, value in live.items()}, **fields}
            logged = fields.pop("status", status)
            if self.observe is not None:
                self.observe(scope["path"], logged, seconds, fields)
            quiet = scope["path"] in self.quiet_paths and logged == 200
            head = {"request_id": rid} if rid is not None else {}
            (self.log.debug if quiet else self.log.info)(
                self.event,
                **head,
                method=scope["method"],
                **{self.path_field: scope["path"]},
                status=logged,
                duration_ms=round(seconds * 1000, self.duration_digits),
                **{key: value for key, value in fields.items() if value is not None},
            )
