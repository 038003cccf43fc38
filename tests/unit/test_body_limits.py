"""Body limits in front of a real FastAPI app with the daemon's error handlers, driven with
scripted ASGI messages: refused before reading, cut at the limit, bounded in time, 499 on leave."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from fastapi import FastAPI, Request

from ragvisor.web.errors import install_error_handlers
from ragvisor.web.limits import BodyLimitMiddleware, BodyLimits, SizeLimit

LIMITS = BodyLimits(
    default=SizeLimit(100, "server.max_body_bytes"),
    timeout_s=0.05,
    by_prefix=(("/documents/", SizeLimit(1000, "server.max_upload_bytes")),),
)


def echo_app(reads: list[int]) -> FastAPI:
    """An app whose routes read the whole body and answer its length (noting each read)."""
    app = FastAPI()
    install_error_handlers(app, structlog.get_logger())
    app.add_middleware(BodyLimitMiddleware, limits=LIMITS)

    async def echo(request: Request) -> dict[str, int]:
        reads.append(1)
        return {"bytes": len(await request.body())}

    app.add_api_route("/ask", echo, methods=["POST"])
    app.add_api_route("/documents/{path:path}", echo, methods=["PUT"])
    return app


def run(
    path: str, messages: list[dict[str, Any]], headers: list[tuple[bytes, bytes]] | None = None
) -> tuple[dict[str, Any], list[int]]:
    """Send one request whose body arrives as `messages` (then nothing more, ever); return the
    response start (with `body`) and the app's body reads."""
    reads: list[int] = []
    sent: list[dict[str, Any]] = []
    pending = list(messages)

    async def receive() -> dict[str, Any]:
        if pending:
            return pending.pop(0)
        await asyncio.Event().wait()  # a client that sends no more
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    method = "PUT" if path.startswith("/documents/") else "POST"
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": headers or [],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 2),
    }
    app: Callable[..., Awaitable[None]] = echo_app(reads)
    asyncio.run(asyncio.wait_for(app(scope, receive, send), timeout=5))
    start = sent[0]
    body = b"".join(m.get("body", b"") for m in sent[1:])
    return {**start, "headers": dict(start["headers"]), "body": body}, reads


def chunk(size: int, more: bool = True) -> dict[str, Any]:
    return {"type": "http.request", "body": b"x" * size, "more_body": more}


def test_the_longest_path_prefix_sets_the_limit():
    """A route with its own limit (an upload) gets it; every other path the default."""
    assert LIMITS.for_path("/documents/notes/a.md").max_bytes == 1000
    assert LIMITS.for_path("/ask").max_bytes == 100
    assert LIMITS.for_path("/documents").max_bytes == 100


def test_a_declared_length_over_the_limit_is_refused_before_the_app_runs():
    """413 in the error shape, `Connection: close`, and the handler never ran nor read."""
    response, reads = run("/ask", [], headers=[(b"content-length", b"101")])
    assert response["status"] == 413
    assert response["headers"][b"connection"] == b"close"
    assert json.loads(response["body"]) == {
        "error": "the request body is 101 bytes; /ask accepts at most 100 (server.max_body_bytes)",
        "code": "body_too_large",
    }
    assert reads == []


def test_a_body_without_length_is_cut_when_it_passes_the_limit():
    """Counted as it arrives: refused on the chunk that passes the limit, the rest never read."""
    response, _ = run("/ask", [chunk(40), chunk(40), chunk(40), chunk(40, more=False)])
    assert response["status"] == 413
    assert response["headers"][b"connection"] == b"close"
    assert "over 100 bytes" in json.loads(response["body"])["error"]


def test_a_route_with_a_larger_limit_takes_a_larger_body():
    """The upload prefix accepts 1000 bytes where /ask accepts 100, and names its own setting."""
    ok, _ = run("/documents/a.md", [chunk(600, more=False)])
    assert (ok["status"], json.loads(ok["body"])) == (200, {"bytes": 600})
    assert b"connection" not in ok["headers"]
    refused, _ = run("/documents/a.md", [], headers=[(b"content-length", b"1001")])
    assert "(server.max_upload_bytes)" in json.loads(refused["body"])["error"]


def test_a_body_that_stalls_is_answered_408():
    """A body that stops arriving is answered 408 after timeout_s, and the connection closes."""
    response, _ = run("/ask", [chunk(10)])
    assert response["status"] == 408
    assert response["headers"][b"connection"] == b"close"
    assert json.loads(response["body"])["code"] == "body_timeout"


def test_a_client_that_leaves_mid_body_is_a_499():
    """A disconnect while the body is read becomes status 499 (for the log), not a 500."""
    response, _ = run("/ask", [chunk(10), {"type": "http.disconnect"}])
    assert response["status"] == 499


def test_a_body_within_the_limits_passes_untouched():
    """A body under the limit, on time, reaches the handler whole; the connection stays open."""
    response, _ = run("/ask", [chunk(50), chunk(50, more=False)])
    assert (response["status"], json.loads(response["body"])) == (200, {"bytes": 100})
    assert b"connection" not in response["headers"]
