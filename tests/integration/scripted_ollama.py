"""A tiny Ollama-protocol server with scripted misbehaviour, served by uvicorn over loopback.

The real worker answers correctly; this one answers the way a wedged or failing Ollama does —
silence before the first token, a stall mid-stream, an error line, a 503, a cut connection — so
the client's deadlines and error mapping are tested against real HTTP.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.integration.conftest import free_port


@dataclass
class Script:
    """What the next chat request gets. Tests set the fields, the server reads them."""

    mode: str = "ok"  # ok | hang_first | stall | error_line | status | cut
    pieces: int = 5
    delay_s: float = 0.0  # between pieces
    hang_s: float = 60.0
    status: int = 500
    prompt_eval_count: int = 12  # what the final line reports (== num_ctx: a cut prompt)
    requests: list[dict[str, Any]] = field(default_factory=list)
    disconnected: threading.Event = field(default_factory=threading.Event)


def _final(prompt_eval_count: int = 12) -> dict[str, Any]:
    return {
        "model": "scripted",
        "created_at": "2026-01-01T00:00:00Z",
        "message": {"role": "assistant", "content": ""},
        "done": True,
        "done_reason": "stop",
        "total_duration": 5_000_000,
        "load_duration": 1_000_000,
        "prompt_eval_count": prompt_eval_count,
        "prompt_eval_duration": 2_000_000,
        "eval_count": 5,
        "eval_duration": 2_000_000,
    }


def _piece(text: str) -> bytes:
    body = {
        "model": "scripted",
        "created_at": "2026-01-01T00:00:00Z",
        "message": {"role": "assistant", "content": text},
        "done": False,
    }
    return (json.dumps(body) + "\n").encode()


def build_app(script: Script) -> Starlette:
    async def chat(request: Request) -> Response:
        body = await request.json()
        script.requests.append(body)
        if script.mode == "status":
            message = "server busy, please try again." if script.status == 503 else "boom"
            return JSONResponse({"error": message}, status_code=script.status)

        async def lines() -> AsyncIterator[bytes]:
            try:
                if script.mode == "hang_first":
                    await asyncio.sleep(script.hang_s)
                for i in range(script.pieces):
                    if script.mode == "stall" and i == 2:
                        await asyncio.sleep(script.hang_s)
                    if script.mode == "error_line" and i == 2:
                        yield (json.dumps({"error": "model runner crashed"}) + "\n").encode()
                        return
                    if script.mode == "cut" and i == 2:
                        raise RuntimeError("connection cut on purpose")
                    yield _piece(f"w{i} ")
                    await asyncio.sleep(script.delay_s)
                yield (json.dumps(_final(script.prompt_eval_count)) + "\n").encode()
            except asyncio.CancelledError:
                script.disconnected.set()
                raise
            finally:
                if await request.is_disconnected():
                    script.disconnected.set()

        return StreamingResponse(lines(), media_type="application/x-ndjson")

    async def version(_: Request) -> Response:
        return JSONResponse({"version": "0.0.0-scripted"})

    async def not_found(_: Request) -> Response:
        return JSONResponse({"error": "404 page not found"}, status_code=404)

    return Starlette(
        routes=[
            Route("/api/chat", chat, methods=["POST"]),
            Route("/api/version", version),
            Route("/api/ragvisor/token_count", not_found, methods=["POST"]),
        ]
    )


@contextmanager
def scripted_ollama(script: Script | None = None) -> Iterator[tuple[str, Script]]:
    """Serve a scripted Ollama on a free loopback port; yields (base_url, script).

    Pass a `Script` subclass to script request by request (see test_supervised_calls).
    """
    script = script if script is not None else Script()
    port = free_port()
    config = uvicorn.Config(
        build_app(script), host="127.0.0.1", port=port, log_config=None, access_log=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", script
    finally:
        server.should_exit = True
        thread.join(10)
