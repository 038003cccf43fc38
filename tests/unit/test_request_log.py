"""The one request log both HTTP programs use: one event per request, after its last byte."""

from __future__ import annotations

import asyncio
from typing import Any

import structlog
from structlog.testing import capture_logs

from ragvisor.asgi.request_log import RequestLog, attach, note, request_id


def call(middleware: RequestLog, path: str = "/x", headers: list | None = None) -> list[dict]:
    """Run one GET through the middleware; returns the messages sent."""
    sent: list[dict] = []
    scope = {"type": "http", "method": "GET", "path": path, "headers": headers or []}

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(middleware(scope, receive, send))
    return sent


def app_that(handler: Any) -> Any:
    """An ASGI app that runs `handler(scope)` and answers 200."""

    async def app(scope: dict, _receive: Any, send: Any) -> None:
        handler(scope)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    return app


def test_noted_fields_are_logged_and_none_is_left_out():
    """Fields noted by the handler join the event; a field noted as None does not."""
    log = structlog.get_logger()
    app = app_that(lambda scope: note(scope, model="m", nothing=None))
    with capture_logs() as events:
        call(RequestLog(app, log, event="worker.request", path_field="endpoint"))
    (event,) = events
    assert event["event"] == "worker.request"
    assert (event["endpoint"], event["status"], event["model"]) == ("/x", 200, "m")
    assert "nothing" not in event


def test_a_noted_status_replaces_the_responses():
    """A handler that saw its client leave notes 499, and 499 is what is logged and observed."""
    observed: list[tuple] = []
    app = app_that(lambda scope: note(scope, status=499))
    middleware = RequestLog(
        app, structlog.get_logger(), event="http.request", observe=lambda *a: observed.append(a)
    )
    with capture_logs() as events:
        call(middleware)
    assert events[0]["status"] == 499
    assert observed[0][:2] == ("/x", 499)


def test_an_attached_mapping_is_read_when_the_response_ends():
    """A live mapping attached by the handler is logged as it is at the end, with its suffix."""
    timings: dict[str, float] = {}

    def handler(scope: dict) -> None:
        attach(scope, timings, suffix="_ms")
        timings["first_token"] = 12.5  # arrives after attaching, as a streamed answer's do

    with capture_logs() as events:
        call(RequestLog(app_that(handler), structlog.get_logger(), event="http.request"))
    assert events[0]["first_token_ms"] == 12.5


def test_request_ids_are_taken_or_made_and_sent_back():
    """The caller's X-Request-ID (cut to 64 characters) is logged and echoed; without one, a
    new id is made."""
    seen: list[str | None] = []
    app = app_that(lambda scope: seen.append(request_id(scope)))
    middleware = RequestLog(app, structlog.get_logger(), event="http.request", request_ids=True)
    with capture_logs() as events:
        sent = call(middleware, headers=[(b"x-request-id", b"a" * 80)])
        call(middleware)
    assert seen[0] == events[0]["request_id"] == "a" * 64
    assert (b"x-request-id", b"a" * 64) in sent[0]["headers"]
    assert seen[1] is not None
    assert len(seen[1]) == 32


def test_a_200_on_a_quiet_path_is_logged_at_debug():
    """Frequent probes answered 200 are debug events; anything else on them stays info."""
    quiet = RequestLog(
        app_that(lambda scope: None),
        structlog.get_logger(),
        event="worker.request",
        quiet_paths=frozenset({"/api/version"}),
    )
    with capture_logs() as events:
        call(quiet, "/api/version")
        call(quiet, "/api/chat")
    assert [e["log_level"] for e in events] == ["debug", "info"]
