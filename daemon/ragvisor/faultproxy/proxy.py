"""The fault proxy itself: forward a call upstream or answer with its planned fault, count what
happened, and serve the control API under `/_faultproxy/`."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

import h11
import httpx
import structlog

from ragvisor.faultproxy.limits import (
    CONTROL_PREFIX,
    HOP_BY_HOP,
    REQUEST_READ_S,
    STOP_GRACE_S,
    UPSTREAM_READ_S,
)
from ragvisor.faultproxy.plan import CANNED, ERROR_LINE_MESSAGE, Chooser, Fault, FaultPlan
from ragvisor.faultproxy.wire import ClientRequest, RequestTooLarge, Wire


@dataclass
class Exchange:
    """What happened to one proxied request, for its log event."""

    upstream_status: int | None = None
    upstream_error: str | None = None


class FaultProxy:
    """The proxy: an asyncio server that reads each request with h11, picks a fault and
    answers it itself or forwards it upstream with httpx.

    Start and stop it on one event loop; :meth:`set_plan`, :meth:`stats` and
    :meth:`reset_stats` may be called from any thread.
    """

    def __init__(
        self,
        upstream: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        plan: FaultPlan | None = None,
    ) -> None:
        self.upstream = upstream.rstrip("/")
        self.host = host
        self._port = port
        self._lock = threading.Lock()
        self._chooser = Chooser(plan or FaultPlan())
        self._by_fault: Counter[Fault] = Counter()
        self._by_path: Counter[str] = Counter()
        self._server: asyncio.Server | None = None
        self._client: httpx.AsyncClient | None = None
        self._connections: set[asyncio.Task[Any]] = set()
        self._log = structlog.get_logger(component="faultproxy")

    @property
    def url(self) -> str:
        """Where clients reach the proxy (the bound port once started)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self._port}"

    @property
    def plan(self) -> FaultPlan:
        """The plan in force."""
        with self._lock:
            return self._chooser.plan

    def set_plan(self, plan: FaultPlan) -> None:
        """Replace the plan; its script and its random sequence start from the beginning."""
        with self._lock:
            self._chooser = Chooser(plan)
        self._log.info("faultproxy.plan_changed", plan=plan.to_json())

    def stats(self) -> dict[str, Any]:
        """Requests proxied since start (or the last reset): total, per fault, per path."""
        with self._lock:
            return {
                "requests_total": sum(self._by_fault.values()),
                "by_fault": {f.value: self._by_fault[f] for f in Fault},
                "by_path": dict(self._by_path),
            }

    def reset_stats(self) -> None:
        """Start counting from zero."""
        with self._lock:
            self._by_fault.clear()
            self._by_path.clear()

    def _decide(self, path: str) -> tuple[Fault, FaultPlan]:
        with self._lock:
            fault = self._chooser.choose(path)
            self._by_fault[fault] += 1
            self._by_path[path] += 1
            return fault, self._chooser.plan

    async def start(self) -> None:
        """Listen; raises OSError when the address cannot be bound."""
        self._client = httpx.AsyncClient(
            base_url=self.upstream,
            timeout=httpx.Timeout(connect=10.0, read=UPSTREAM_READ_S, write=30.0, pool=30.0),
        )
        try:
            self._server = await asyncio.start_server(self._handle, self.host, self._port)
        except OSError:
            await self._client.aclose()
            raise
        self._port = int(self._server.sockets[0].getsockname()[1])
        self._log.info("faultproxy.started", url=self.url, upstream=self.upstream)

    async def stop(self) -> None:
        """Stop listening and close every connection now, hanging and stalled ones included."""
        server, self._server = self._server, None
        if server is None:
            return
        started = time.monotonic()
        server.close()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.wait(list(self._connections), timeout=STOP_GRACE_S)
        with suppress(TimeoutError):
            async with asyncio.timeout(STOP_GRACE_S):
                await server.wait_closed()
        if self._client is not None:
            await self._client.aclose()
        duration_ms = round((time.monotonic() - started) * 1000, 1)
        self._log.info("faultproxy.stopped", url=self.url, duration_ms=duration_ms)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        wire = Wire(reader, writer)
        try:
            request = await self._read(wire)
            if request is None:
                return
            if request.path.startswith(CONTROL_PREFIX):
                await wire.send_json(*self._control(request))
            else:
                await self._proxy(request, wire)
        except OSError:
            pass  # the client went away: nobody is left to answer
        finally:
            await wire.close()
            if task is not None:
                self._connections.discard(task)

    async def _read(self, wire: Wire) -> ClientRequest | None:
        try:
            async with asyncio.timeout(REQUEST_READ_S):
                return await wire.read_request()
        except TimeoutError:
            return None
        except RequestTooLarge:
            await wire.send_json(413, {"error": "faultproxy: request body too large"})
        except h11.RemoteProtocolError as exc:
            with suppress(h11.LocalProtocolError):
                await wire.send_json(exc.error_status_hint, {"error": f"faultproxy: {exc}"})
        return None

    async def _proxy(self, request: ClientRequest, wire: Wire) -> None:
        fault, plan = self._decide(request.path)
        started = time.monotonic()
        exchange = Exchange()
        completed = False
        try:
            completed = await wire.while_connected(
                self._answer(fault, plan, request, wire, exchange)
            )
        finally:
            details = {k: v for k, v in vars(exchange).items() if v is not None}
            self._log.info(
                "faultproxy.request",
                method=request.method,
                path=request.path,
                fault=fault.value,
                completed=completed,  # false: the client left (or the proxy stopped) first
                duration_ms=round((time.monotonic() - started) * 1000, 1),
                **details,
            )

    async def _answer(
        self, fault: Fault, plan: FaultPlan, request: ClientRequest, wire: Wire, exchange: Exchange
    ) -> None:
        if fault is Fault.HANG:
            await asyncio.Event().wait()  # until the client leaves or the proxy stops
        elif fault is Fault.RESET:
            wire.reset()
        elif fault in CANNED:
            status, message = CANNED[fault]
            await wire.send_json(status, {"error": message})
        else:
            if fault is Fault.SLOW_FIRST_BYTE:
                await asyncio.sleep(plan.slow_s)
            await self._forward(fault, plan, request, wire, exchange)

    async def _forward(
        self, fault: Fault, plan: FaultPlan, request: ClientRequest, wire: Wire, exchange: Exchange
    ) -> None:
        assert self._client is not None, "start() the proxy first"
        skip = HOP_BY_HOP | {b"host", b"content-length", b"expect"}  # 100-continue done here
        upstream_request = self._client.build_request(
            request.method,
            request.target,
            headers=[(k, v) for k, v in request.headers if k.lower() not in skip],
            content=request.body,
        )
        try:
            response = await self._client.send(upstream_request, stream=True)
        except httpx.HTTPError as exc:
            exchange.upstream_error = f"{type(exc).__name__}: {exc}"
            message = f"faultproxy: upstream {self.upstream} failed: {type(exc).__name__}"
            await wire.send_json(502, {"error": message})
            return
        exchange.upstream_status = response.status_code
        try:
            if fault is Fault.STALL:
                await _stall(response, wire, plan.stall_after_lines)
            elif fault is Fault.ERROR_LINE and _is_ndjson(response):
                await _error_line(response, wire, plan.stall_after_lines)
            else:
                await _relay(response, wire)
        except httpx.HTTPError as exc:
            exchange.upstream_error = f"{type(exc).__name__}: {exc}"
            if wire.response_started:
                wire.cut()  # pass the upstream's cut on: the client must not see a clean end
            else:
                await wire.send_json(502, {"error": "faultproxy: upstream broke off"})
        finally:
            await response.aclose()

    def _control(self, request: ClientRequest) -> tuple[int, Any]:
        """The control API's answer: (status, JSON document). Never faulted, never counted."""
        routes: dict[tuple[str, str], Callable[[ClientRequest], Any]] = {
            ("GET", "stats"): lambda _: self.stats(),
            ("DELETE", "stats"): self._delete_stats,
            ("GET", "plan"): lambda _: self.plan.to_json(),
            ("PUT", "plan"): self._put_plan,
        }
        route = request.path.removeprefix(CONTROL_PREFIX)
        if (request.method, route) in routes:
            try:
                return 200, routes[request.method, route](request)
            except ValueError as exc:
                return 400, {"error": f"bad plan: {exc}"}
        if any(name == route for _, name in routes):
            return 405, {"error": f"{request.method} is not allowed on {request.path}"}
        return 404, {"error": f"no control endpoint {request.path}"}

    def _delete_stats(self, _: ClientRequest) -> dict[str, Any]:
        self.reset_stats()
        return self.stats()

    def _put_plan(self, request: ClientRequest) -> dict[str, Any]:
        plan = FaultPlan.from_json(json.loads(request.body or b"null"))
        self.set_plan(plan)
        return plan.to_json()


def _is_ndjson(response: httpx.Response) -> bool:
    return "ndjson" in response.headers.get("content-type", "")


def _response_headers(response: httpx.Response, *, rewritten: bool) -> list[tuple[bytes, bytes]]:
    """Upstream headers minus per-connection ones; a rewritten body loses its length/encoding."""
    drop = HOP_BY_HOP | ({b"content-length", b"content-encoding"} if rewritten else set())
    return [(k, v) for k, v in response.headers.raw if k.lower() not in drop]


async def _send_upstream_head(response: httpx.Response, wire: Wire, *, rewritten: bool) -> None:
    headers = _response_headers(response, rewritten=rewritten)
    await wire.send_head(response.status_code, headers, response.reason_phrase.encode())


async def _relay(response: httpx.Response, wire: Wire) -> None:
    """Forward untouched, each chunk as it arrives (keeps time-to-first-token)."""
    await _send_upstream_head(response, wire, rewritten=False)
    async for chunk in response.aiter_raw():
        await wire.send(h11.Data(data=chunk))
    await wire.send(h11.EndOfMessage())


async def _relay_lines(response: httpx.Response, wire: Wire, lines: int) -> None:
    """Forward the body up to and including its `lines`-th newline, as it arrives; then close
    the upstream call (the backend stops generating)."""
    if lines > 0:
        async for chunk in response.aiter_bytes():
            kept, lines = cut_after_lines(chunk, lines)
            if kept:
                await wire.send(h11.Data(data=kept))
            if lines == 0:
                break
    await response.aclose()


def cut_after_lines(chunk: bytes, lines: int) -> tuple[bytes, int]:
    """The part of `chunk` up to and including its `lines`-th newline, and the lines still
    wanted after it (0 once enough were seen)."""
    end = 0
    while lines > 0:
        newline = chunk.find(b"\n", end)
        if newline < 0:
            return chunk, lines
        end, lines = newline + 1, lines - 1
    return chunk[:end], 0


async def _stall(response: httpx.Response, wire: Wire, lines: int) -> None:
    """Status, headers and the first lines of an NDJSON stream (none of a JSON body), then
    silence until the client leaves or the proxy stops."""
    await _send_upstream_head(response, wire, rewritten=True)
    await _relay_lines(response, wire, lines if _is_ndjson(response) else 0)
    await asyncio.Event().wait()


async def _error_line(response: httpx.Response, wire: Wire, lines: int) -> None:
    """The first lines, then Ollama's mid-stream error shape, then a clean end of the stream."""
    await _send_upstream_head(response, wire, rewritten=True)
    await _relay_lines(response, wire, lines)
    line = json.dumps({"error": ERROR_LINE_MESSAGE}).encode() + b"\n"
    await wire.send(h11.Data(data=line), h11.EndOfMessage())


@contextmanager
def running_proxy(
    upstream: str,
    plan: FaultPlan | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    timeout_s: float = 10.0,
) -> Iterator[FaultProxy]:
    """Run a FaultProxy on its own event loop in a background thread; yields it started.

    For synchronous tests and in-process use. On exit the proxy is stopped (hanging clients
    are disconnected) and the thread joined, each within `timeout_s`. Raises OSError when the
    address cannot be bound.
    """
    proxy = FaultProxy(upstream, host=host, port=port, plan=plan)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="faultproxy", daemon=True)
    thread.start()

    def on_loop(coroutine: Any) -> None:
        asyncio.run_coroutine_threadsafe(coroutine, loop).result(timeout=timeout_s)

    try:
        on_loop(proxy.start())
        yield proxy
    finally:
        try:
            on_loop(proxy.stop())
            on_loop(loop.shutdown_asyncgens())
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout_s)
            if not thread.is_alive():
                loop.close()
