"""A pass-through proxy that keeps a copy of every request it forwards, so the Ollama bench can
send Ollama, alone, exactly the bytes the daemon sent it — not a prompt rebuilt beside it.

The fault proxy forwards without keeping bodies, so this is a small ASGI app (uvicorn in a
thread, httpx upstream) that relays each response chunk by chunk as it arrives. It sits in the
daemon's path only while prompts are recorded; the timed daemon talks to Ollama directly.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn

from benchlib import free_port

START_TIMEOUT_S = 10.0
UPSTREAM_TIMEOUT = httpx.Timeout(120.0, connect=5.0)
# Per connection, never forwarded (RFC 9110 §7.6.1); the length is the server's to set again.
HOP_BY_HOP = {
    b"connection",
    b"keep-alive",
    b"transfer-encoding",
    b"te",
    b"trailer",
    b"upgrade",
    b"host",
    b"content-length",
}


@dataclass(frozen=True)
class Recorded:
    """One forwarded request: its method, path and body (parsed when it is JSON)."""

    method: str
    path: str
    body: Any


class Recorder:
    """The ASGI app: read the whole request, keep it, forward it, stream the answer back."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self._lock = threading.Lock()
        self._calls: list[Recorded] = []

    def calls(self, path: str | None = None) -> list[Recorded]:
        """What was forwarded so far (to `path` only, if given), oldest first."""
        with self._lock:
            return [c for c in self._calls if path is None or c.path == path]

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        try:
            parsed: Any = json.loads(body) if body else None
        except ValueError:
            parsed = body.decode(errors="replace")
        with self._lock:
            self._calls.append(Recorded(scope["method"], scope["path"], parsed))
        target = scope["path"] + (
            f"?{scope['query_string'].decode()}" if scope["query_string"] else ""
        )
        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in HOP_BY_HOP]
        async with httpx.AsyncClient(timeout=UPSTREAM_TIMEOUT) as client:
            try:
                await self._relay(client, scope["method"], target, headers, body, send)
            except httpx.HTTPError:
                # Ollama went away (a restart) or broke off: the daemon sees a cut connection,
                # as it would without the recorder in between.
                return

    async def _relay(
        self,
        client: httpx.AsyncClient,
        method: str,
        target: str,
        headers: Any,
        body: bytes,
        send: Any,
    ) -> None:
        """Forward one request and stream its answer back chunk by chunk."""
        request = client.build_request(
            method, self.upstream + target, headers=headers, content=body
        )
        response = await client.send(request, stream=True)
        try:
            kept = [(k, v) for k, v in response.headers.raw if k.lower() not in HOP_BY_HOP]
            await send(
                {"type": "http.response.start", "status": response.status_code, "headers": kept}
            )
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            await response.aclose()


@contextlib.contextmanager
def recording_proxy(upstream: str) -> Iterator[tuple[str, Recorder]]:
    """The recorder listening on a free loopback port: yields (its URL, the recorder);
    stopped on the way out. Raises TimeoutError when it does not start in time."""
    recorder = Recorder(upstream)
    port = free_port()
    config = uvicorn.Config(
        recorder, host="127.0.0.1", port=port, log_level="warning", lifespan="off"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="recorder", daemon=True)
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT_S
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            server.should_exit = True
            raise TimeoutError(f"the recording proxy did not start within {START_TIMEOUT_S:g} s")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", recorder
    finally:
        server.should_exit = True
        thread.join(START_TIMEOUT_S)
