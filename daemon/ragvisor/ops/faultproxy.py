"""A fault-injecting HTTP proxy for rehearsing backend failures (`ragvisor faultproxy`).

It sits between the daemon and an Ollama-protocol backend and, request by request, either
forwards the call or answers the way a failing Ollama does: silence before the first token, a
stream that stops mid-answer, a 500, a 503 "server busy", an `{"error"}` line mid-stream, a
reset connection, a refusal to load a model for lack of memory. Which fault a request gets comes
from a script (consumed in order) and then from seeded probabilities. Tests drive the client's
deadlines and error mapping through it over real HTTP; operators run it to watch retries, the
circuit breaker and the restart ladder react before a real outage pages them.

Only generation and embedding paths are faulted by default: the cheap probes (`/api/version`,
`/api/ps`, `/api/tags`, …) and the proxy's own control API under `/_faultproxy/` always pass, so
a rehearsal tests the supervision of inference calls, not the health checks.
"""

from __future__ import annotations

import argparse
import asyncio
import enum
import json
import math
import random
import signal
import socket
import struct
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import h11
import httpx
import pydantic
import structlog

from ragvisor.logs import configure_logging

__all__ = [
    "CONTROL_PREFIX",
    "DEFAULT_PATHS",
    "Fault",
    "FaultPlan",
    "FaultProxy",
    "add_arguments",
    "main",
    "run",
    "running_proxy",
]

CONTROL_PREFIX = "/_faultproxy/"
DEFAULT_PATHS = ("/api/chat", "/api/generate", "/api/embed", "/api/embeddings")
MAX_REQUEST_BYTES = 64 * 1024 * 1024  # a large /api/embed batch fits; a runaway upload does not
REQUEST_READ_S = 30.0  # a client that never finishes its request is dropped
# The proxy is transparent: the caller's own deadlines bound a call, and a caller that gives up
# closes its connection, which cancels the upstream call. This bound only stops a forgotten
# upstream stream from living forever.
UPSTREAM_READ_S = 600.0
STOP_GRACE_S = 5.0
READ_SIZE = 65536

# Headers about one connection, not the message; ours always say `Connection: close`.
HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"te"}
    | {b"trailer", b"upgrade"}
)


class Fault(enum.StrEnum):
    """What the proxy does with one request; the values are the names on the CLI and in JSON."""

    PASS = "pass"  # noqa: S105 - a fault name, not a password; forward untouched, streaming chunk by chunk
    HANG = "hang"  # a wedged runner: the request is read, nothing ever comes back
    SLOW_FIRST_BYTE = "slow_first_byte"  # a model loading from a slow disk
    STALL = "stall"  # a runner that froze mid-answer: some lines, then silence
    HTTP_500 = "http_500"  # a crashed runner: "500 internal server error"
    BUSY_503 = "busy_503"  # Ollama's queue is full (OLLAMA_MAX_QUEUE)
    ERROR_LINE = "error_line"  # a runner that died mid-stream: an {"error"} line, then the end
    RESET = "reset"  # a process killed under the connection: TCP RST
    OOM = "oom"  # Ollama refusing to load a model that does not fit in memory


# Faults answered by the proxy itself; the backend never sees these requests.
CANNED: Mapping[Fault, tuple[int, str]] = MappingProxyType(
    {
        Fault.HTTP_500: (500, "injected fault: internal server error"),
        Fault.BUSY_503: (
            503,
            "server busy, please try again.  maximum pending requests exceeded",
        ),
        Fault.OOM: (
            500,
            "model requires more system memory (5.6 GiB) than is available (3.1 GiB)",
        ),
    }
)
ERROR_LINE_MESSAGE = "injected fault: an error mid-stream"


def parse_fault(name: str) -> Fault:
    """The fault called `name`; raises ValueError listing the valid names."""
    if isinstance(name, Fault):
        return name
    try:
        return Fault(name.strip())
    except ValueError:
        choices = ", ".join(f.value for f in Fault)
        raise ValueError(f"unknown fault {name!r}; choose from: {choices}") from None


@dataclass(frozen=True, slots=True)
class FaultPlan:
    """Which faults to inject, validated once; immutable so a running proxy can swap it whole.

    `script` is consumed in order first; after it, each faulted request draws from
    `probabilities` (the remainder passes), with `seed` making the sequence repeatable. Only
    requests whose path starts with one of `paths` are faulted.
    """

    probabilities: Mapping[Fault, float] = field(default_factory=dict)
    script: Sequence[Fault] = ()
    seed: int | None = None
    paths: tuple[str, ...] = DEFAULT_PATHS
    slow_s: float = 2.0
    stall_after_lines: int = 1

    def __post_init__(self) -> None:
        """Normalise to immutable values and validate; raises ValueError naming the field."""
        probabilities = {parse_fault(k): float(v) for k, v in self.probabilities.items()}
        for fault, probability in probabilities.items():
            if not 0.0 <= probability <= 1.0:
                raise ValueError(
                    f"probabilities.{fault.value} must be between 0 and 1, got {probability:g}"
                )
        total = math.fsum(probabilities.values())
        if total > 1.0 + 1e-9:
            raise ValueError(f"probabilities add up to {total:g}; at most 1 (the rest passes)")
        if any(not isinstance(p, str) or not p.startswith("/") for p in self.paths):
            raise ValueError(f"paths must be path prefixes starting with '/', got {self.paths!r}")
        if not (math.isfinite(self.slow_s) and self.slow_s >= 0):
            raise ValueError(f"slow_s must be a number of seconds >= 0, got {self.slow_s!r}")
        if self.stall_after_lines < 0:
            raise ValueError(f"stall_after_lines must be >= 0, got {self.stall_after_lines}")
        object.__setattr__(self, "probabilities", MappingProxyType(probabilities))
        object.__setattr__(self, "script", tuple(parse_fault(f) for f in self.script))
        object.__setattr__(self, "paths", tuple(self.paths))

    @classmethod
    def from_json(cls, data: Any) -> FaultPlan:
        """A plan from its JSON form (see :meth:`to_json`, missing keys take the defaults);
        raises ValueError naming each bad key."""
        try:
            document = _PlanDocument.model_validate(data)
        except pydantic.ValidationError as exc:
            problems = (
                f"{'.'.join(map(str, e['loc'])) or 'plan'}: {e['msg']}" for e in exc.errors()
            )
            raise ValueError("; ".join(problems)) from None
        return cls(**document.model_dump())

    def to_json(self) -> dict[str, Any]:
        """The plan as the control API shows and accepts it."""
        return {
            "probabilities": {f.value: p for f, p in self.probabilities.items()},
            "script": [f.value for f in self.script],
            "seed": self.seed,
            "paths": list(self.paths),
            "slow_s": self.slow_s,
            "stall_after_lines": self.stall_after_lines,
        }


def _dotted(location: tuple[int | str, ...]) -> str:
    return ".".join(map(str, location)) or "plan"


class _PlanDocument(pydantic.BaseModel):
    """The JSON shape of a plan: types are checked here, ranges by FaultPlan itself."""

    model_config = pydantic.ConfigDict(extra="forbid")

    probabilities: dict[Fault, float] = {}
    script: tuple[Fault, ...] = ()
    seed: pydantic.StrictInt | None = None
    paths: tuple[str, ...] = DEFAULT_PATHS
    slow_s: float = 2.0
    stall_after_lines: pydantic.StrictInt = 1


class _Chooser:
    """A plan and where it stands: the script still to play and the seeded random sequence.

    Pure decisions: given a path it returns a fault; it never touches the network or the clock.
    """

    def __init__(self, plan: FaultPlan) -> None:
        self.plan = plan
        self._script = deque(plan.script)
        self._random = random.Random(plan.seed)  # noqa: S311 - rehearsal draws, not secrets

    def choose(self, path: str) -> Fault:
        if not path.startswith(self.plan.paths):
            return Fault.PASS
        if self._script:
            return self._script.popleft()
        draw = self._random.random()
        for fault, probability in self.plan.probabilities.items():
            if draw < probability:
                return fault
            draw -= probability
        return Fault.PASS


@dataclass(frozen=True, slots=True)
class _Request:
    """One client request, read whole (Ollama requests are small JSON documents)."""

    method: str
    target: str
    headers: list[tuple[bytes, bytes]]
    body: bytes

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]


class _RequestTooLarge(Exception):
    """The client sent more than MAX_REQUEST_BYTES."""


class _Wire:
    """One client connection: h11's view of the protocol plus the socket, so answers are
    written as HTTP events rather than bytes."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.http = h11.Connection(h11.SERVER)
        self.response_started = False

    async def read_request(self) -> _Request | None:
        """The next request, or None when the client closed without sending one.

        Raises h11.RemoteProtocolError for malformed HTTP and _RequestTooLarge.
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
                    raise _RequestTooLarge
            elif isinstance(event, h11.EndOfMessage) and head is not None:
                return _Request(
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


@dataclass
class _Exchange:
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
        self._chooser = _Chooser(plan or FaultPlan())
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
            self._chooser = _Chooser(plan)
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
        wire = _Wire(reader, writer)
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

    async def _read(self, wire: _Wire) -> _Request | None:
        try:
            async with asyncio.timeout(REQUEST_READ_S):
                return await wire.read_request()
        except TimeoutError:
            return None
        except _RequestTooLarge:
            await wire.send_json(413, {"error": "faultproxy: request body too large"})
        except h11.RemoteProtocolError as exc:
            with suppress(h11.LocalProtocolError):
                await wire.send_json(exc.error_status_hint, {"error": f"faultproxy: {exc}"})
        return None

    async def _proxy(self, request: _Request, wire: _Wire) -> None:
        fault, plan = self._decide(request.path)
        started = time.monotonic()
        exchange = _Exchange()
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
        self, fault: Fault, plan: FaultPlan, request: _Request, wire: _Wire, exchange: _Exchange
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
        self, fault: Fault, plan: FaultPlan, request: _Request, wire: _Wire, exchange: _Exchange
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

    def _control(self, request: _Request) -> tuple[int, Any]:
        """The control API's answer: (status, JSON document). Never faulted, never counted."""
        routes: dict[tuple[str, str], Callable[[_Request], Any]] = {
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

    def _delete_stats(self, _: _Request) -> dict[str, Any]:
        self.reset_stats()
        return self.stats()

    def _put_plan(self, request: _Request) -> dict[str, Any]:
        plan = FaultPlan.from_json(json.loads(request.body or b"null"))
        self.set_plan(plan)
        return plan.to_json()


def _is_ndjson(response: httpx.Response) -> bool:
    return "ndjson" in response.headers.get("content-type", "")


def _response_headers(response: httpx.Response, *, rewritten: bool) -> list[tuple[bytes, bytes]]:
    """Upstream headers minus per-connection ones; a rewritten body loses its length/encoding."""
    drop = HOP_BY_HOP | ({b"content-length", b"content-encoding"} if rewritten else set())
    return [(k, v) for k, v in response.headers.raw if k.lower() not in drop]


async def _send_upstream_head(response: httpx.Response, wire: _Wire, *, rewritten: bool) -> None:
    headers = _response_headers(response, rewritten=rewritten)
    await wire.send_head(response.status_code, headers, response.reason_phrase.encode())


async def _relay(response: httpx.Response, wire: _Wire) -> None:
    """Forward untouched, each chunk as it arrives (keeps time-to-first-token)."""
    await _send_upstream_head(response, wire, rewritten=False)
    async for chunk in response.aiter_raw():
        await wire.send(h11.Data(data=chunk))
    await wire.send(h11.EndOfMessage())


async def _relay_lines(response: httpx.Response, wire: _Wire, lines: int) -> None:
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


async def _stall(response: httpx.Response, wire: _Wire, lines: int) -> None:
    """Status, headers and the first lines of an NDJSON stream (none of a JSON body), then
    silence until the client leaves or the proxy stops."""
    await _send_upstream_head(response, wire, rewritten=True)
    await _relay_lines(response, wire, lines if _is_ndjson(response) else 0)
    await asyncio.Event().wait()


async def _error_line(response: httpx.Response, wire: _Wire, lines: int) -> None:
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


# --- command line ---------------------------------------------------------------------------


def _listen_address(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT such as 127.0.0.1:11435: {value!r}")
    return host.strip("[]"), int(port)


def _upstream_url(value: str) -> str:
    try:
        url = httpx.URL(value)
    except httpx.InvalidURL as exc:
        raise argparse.ArgumentTypeError(f"not a URL: {value!r} ({exc})") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise argparse.ArgumentTypeError(f"expected http://HOST:PORT, got {value!r}")
    return value.rstrip("/")


def _fault_probability(value: str) -> tuple[Fault, float]:
    name, sep, probability = value.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected NAME=PROB such as hang=0.4, got {value!r}")
    try:
        return parse_fault(name), float(probability)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{value!r}: {exc}") from None


def _script_file(value: str) -> tuple[Fault, ...]:
    """Fault names, one per line; `#` starts a comment, blank lines are skipped."""
    try:
        text = Path(value).read_text(encoding="utf-8")
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"cannot read {value}: {exc.strerror}") from None
    script: list[Fault] = []
    for number, line in enumerate(text.splitlines(), start=1):
        name = line.split("#", 1)[0].strip()
        if name:
            try:
                script.append(parse_fault(name))
            except ValueError as exc:
                raise argparse.ArgumentTypeError(f"{value} line {number}: {exc}") from None
    return tuple(script)


def _path_list(value: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in value.split(",") if p.strip())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `ragvisor faultproxy` flags."""
    names = ", ".join(f.value for f in Fault)
    parser.add_argument(
        "--listen",
        type=_listen_address,
        required=True,
        metavar="HOST:PORT",
        help="where the proxy listens (port 0: any free port; the URL is printed first)",
    )
    parser.add_argument(
        "--upstream",
        type=_upstream_url,
        required=True,
        metavar="URL",
        help="the Ollama-protocol backend, e.g. http://127.0.0.1:11434",
    )
    parser.add_argument(
        "--fault",
        type=_fault_probability,
        action="append",
        default=[],
        metavar="NAME=PROB",
        help=f"inject NAME with probability PROB (repeatable; the rest passes). Names: {names}",
    )
    parser.add_argument(
        "--script",
        type=_script_file,
        default=(),
        metavar="FILE",
        help="faults for the first requests, one name per line, played before the probabilities",
    )
    parser.add_argument(
        "--seed", type=int, default=None, metavar="N", help="seed for repeatable draws"
    )
    parser.add_argument(
        "--paths",
        type=_path_list,
        default=DEFAULT_PATHS,
        metavar="/a,/b",
        help=f"path prefixes subject to faults (default: {','.join(DEFAULT_PATHS)})",
    )
    parser.add_argument(
        "--slow-s",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="delay of slow_first_byte (2)",
    )
    parser.add_argument(
        "--stall-after-lines",
        type=int,
        default=1,
        metavar="N",
        help="NDJSON lines forwarded before a stall or an error line (1)",
    )


def plan_from_args(args: argparse.Namespace) -> FaultPlan:
    """The plan the flags describe; raises ValueError for a fault given twice or bad values."""
    probabilities: dict[Fault, float] = {}
    for fault, probability in args.fault:
        if fault in probabilities:
            raise ValueError(f"--fault {fault.value} given twice")
        probabilities[fault] = probability
    return FaultPlan(
        probabilities=probabilities,
        script=args.script,
        seed=args.seed,
        paths=args.paths,
        slow_s=args.slow_s,
        stall_after_lines=args.stall_after_lines,
    )


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT or SIGTERM; 0 then, 2 for a bad plan, 1 when it cannot listen."""
    try:
        plan = plan_from_args(args)
    except ValueError as exc:
        print(f"ragvisor faultproxy: {exc}", file=sys.stderr)
        return 2
    host, port = args.listen
    proxy = FaultProxy(args.upstream, host=host, port=port, plan=plan)
    try:
        asyncio.run(_serve_until_signalled(proxy))
    except OSError as exc:
        print(f"ragvisor faultproxy: cannot listen on {host}:{port}: {exc}", file=sys.stderr)
        return 1
    return 0


async def _serve_until_signalled(proxy: FaultProxy) -> None:
    # The handlers only set an event; stopping (bounded by STOP_GRACE_S) happens here.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    for signum in signals:
        loop.add_signal_handler(signum, stop.set)
    try:
        await proxy.start()
        print(proxy.url, flush=True)  # first line of stdout: scripts and tests read it
        await stop.wait()
    finally:
        await proxy.stop()
        for signum in signals:
            loop.remove_signal_handler(signum)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m ragvisor.ops.faultproxy`: the same as `ragvisor faultproxy`."""
    parser = argparse.ArgumentParser(
        prog="python -m ragvisor.ops.faultproxy",
        description="Proxy an Ollama-protocol backend, injecting failures.",
    )
    add_arguments(parser)
    parser.add_argument("--log-level", default="info", help="debug, info, warning, error")
    args = parser.parse_args(argv)
    configure_logging(level=args.log_level)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
