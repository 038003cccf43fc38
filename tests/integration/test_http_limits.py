"""Every malformed request is a 4xx, and no connection can pin the daemon, over real sockets.

Two daemons run with the real ONNX embedder and store. `generator.backend` is "none": every
check here happens before an answer would be generated, so no model needs to load.

- `daemon`: short limits (a head within 2 s, a body within 2 s, 1 s idle between requests) and
  room for 1,000 connections, so that the timeouts, not the bound, close what the tests open.
- `bounded`: at most 8 connections and long timeouts, so that only the bound acts.

Sockets are raw where a client must misbehave: send half a head, dribble headers, lie about
its body, or leave.
"""

from __future__ import annotations

import json
import re
import socket
import statistics
import time
from collections.abc import Iterator
from contextlib import ExitStack, closing
from dataclasses import dataclass

import httpx
import psutil
import pytest

from tests.integration.conftest import Daemon, start_daemon, stop_daemon
from tests.integration.corpus import write_corpus

pytestmark = pytest.mark.slow

HEADER_TIMEOUT_S = 2
BODY_TIMEOUT_S = 2
KEEP_ALIVE_S = 4  # well above read_reply's 1 s look for a close, so the two never race
MAX_BODY_BYTES = 65_536  # the default
BOUND = 8
ASK_HEAD = b"POST /ask HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, model_dir) -> Iterator[Daemon]:
    """A daemon with short head, body and keep-alive timeouts and a high connection bound."""
    base = tmp_path_factory.mktemp("limits")
    d = start_daemon(
        write_corpus(base / "notes"),
        base / "data",
        model_dir,
        base / "daemon.log",
        RAGVISOR_GENERATOR__BACKEND="none",
        RAGVISOR_SYNC__INTERVAL_S="0",
        RAGVISOR_SERVER__HEADER_TIMEOUT_S=str(HEADER_TIMEOUT_S),
        RAGVISOR_SERVER__BODY_TIMEOUT_S=str(BODY_TIMEOUT_S),
        RAGVISOR_SERVER__KEEP_ALIVE_S=str(KEEP_ALIVE_S),
        RAGVISOR_SERVER__MAX_CONNECTIONS="1000",
    )
    yield d
    stop_daemon(d)


@pytest.fixture(scope="module")
def bounded(tmp_path_factory, model_dir) -> Iterator[Daemon]:
    """A daemon that keeps at most 8 connections open, with timeouts too long to matter."""
    base = tmp_path_factory.mktemp("bounded")
    d = start_daemon(
        write_corpus(base / "notes"),
        base / "data",
        model_dir,
        base / "daemon.log",
        RAGVISOR_GENERATOR__BACKEND="none",
        RAGVISOR_SYNC__ON_START="false",
        RAGVISOR_SYNC__INTERVAL_S="0",
        RAGVISOR_SERVER__MAX_CONNECTIONS=str(BOUND),
        RAGVISOR_SERVER__HEADER_TIMEOUT_S="60",
        RAGVISOR_SERVER__BODY_TIMEOUT_S="60",
        RAGVISOR_SERVER__KEEP_ALIVE_S="60",
    )
    yield d
    stop_daemon(d)


@dataclass
class Reply:
    """An HTTP answer read off a raw socket."""

    status: int
    headers: dict[str, str]
    body: bytes
    closed: bool  # the daemon closed the connection after it

    def json(self) -> dict:
        return json.loads(self.body)


def connect(daemon: Daemon) -> socket.socket:
    """A raw TCP connection to the daemon."""
    host, port = daemon.url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=5)


def read_reply(sock: socket.socket, within_s: float = 5.0) -> Reply:
    """Read one answer (fails if none comes within `within_s`), then whether the daemon closed
    the connection after it."""
    sock.settimeout(within_s)
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            assert chunk, f"connection closed without an answer (got {data!r})"
            data += chunk
    except TimeoutError:
        pytest.fail(f"no answer within {within_s} s (got {data!r})")
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {
        k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])
    }
    while len(body) < int(headers.get("content-length", "0")):
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return Reply(int(lines[0].split()[1]), headers, body, is_closed(sock, wait_s=1.0))


def is_closed(sock: socket.socket, wait_s: float = 0.0) -> bool:
    """Did the daemon close this connection (within `wait_s`)?"""
    if wait_s > 0:
        sock.settimeout(wait_s)
    else:
        sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except (BlockingIOError, TimeoutError):
        return False
    except ConnectionResetError:
        return True


def logged(daemon: Daemon, request_id: str, within_s: float = 3.0) -> dict:
    """The `http.request` event of a request id, waiting (bounded) for it to be written."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        for line in daemon.logs().splitlines():
            if line.startswith("{") and f'"{request_id}"' in line:
                event = json.loads(line)
                if event.get("event") == "http.request":
                    return event
        time.sleep(0.02)
    pytest.fail(f"no http.request event for {request_id} within {within_s} s")


def connection_counts(daemon: Daemon) -> dict[str, float] | None:
    """The connection gauges from /metrics (this request's own connection counts as active),
    or None when the daemon turned the request away."""
    response = httpx.get(f"{daemon.url}/metrics", headers={"Connection": "close"}, timeout=5)
    if response.status_code != 200:
        return None
    found = re.findall(r'^ragvisor_http_connections\{state="(\w+)"\} (\S+)$', response.text, re.M)
    return {state: float(value) for state, value in found}


def settle(daemon: Daemon) -> None:
    """Wait (bounded) until the daemon holds no connection but the one asking."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if connection_counts(daemon) == {"idle": 0.0, "active": 1.0}:
            return
        time.sleep(0.05)
    pytest.fail(f"connections did not settle: {connection_counts(daemon)}")


# 1. Bodies and queries that used to be 500s.


@pytest.mark.parametrize(
    "body",
    [
        '{"question": ' + "[" * 5000 + "]" * 5000 + "}",
        "[" * 961 + "]" * 961,
        '{"a": ' * 2000 + "1" + "}" * 2000,
    ],
    ids=["array_in_question", "bare_arrays", "objects"],
)
def test_deeply_nested_json_is_a_400(daemon, body):
    """A body nested thousands of levels deep is refused with 400 naming the bound, not a 500."""
    response = httpx.post(f"{daemon.url}/ask", content=body, timeout=10)
    assert response.status_code == 400
    assert response.json() == {
        "error": "the JSON body nests deeper than 32 levels (server.max_json_depth)",
        "code": "bad_request",
    }


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (rb'{"question": "\ud800 backup"}', "question is not valid Unicode"),
        (rb'{"question": "restore \udfff"}', "question is not valid Unicode"),
        (rb'{"question": "a\u0000b"}', "question must not contain NUL characters"),
        (rb'{"\ud800": 1}', "a field name is not valid Unicode"),
        (rb'{"question": "x", "k": "\ud800"}', "k is not valid Unicode"),
        (rb'{"question": "x", "stream": ["ok", "\u0000"]}', "stream[1] must not contain NUL"),
    ],
)
def test_lone_surrogate_or_nul_in_the_ask_body_is_a_400(daemon, body, message):
    """JSON can spell a lone surrogate or a NUL; either, anywhere in the body, is a clear 400
    before the request is admitted (here /ask is off, and still the answer is 400, not 503)."""
    response = httpx.post(f"{daemon.url}/ask", content=body)
    assert response.status_code == 400
    assert message in response.json()["error"]
    assert response.json()["code"] == "bad_request"


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("q=%ED%A0%80", "query string is not valid UTF-8"),  # U+D800 encoded as if it were text
        ("q=backup%ED%B3%BF", "query string is not valid UTF-8"),
        ("q=%00", "query must not contain NUL characters"),
        ("q=a%00b&mode=keyword", "query must not contain NUL characters"),
    ],
)
def test_lone_surrogate_or_nul_in_the_search_query_is_a_400(daemon, query, message):
    """A query string spelling a surrogate or a NUL is a 400 in every search mode."""
    response = httpx.get(f"{daemon.url}/search?{query}")
    assert response.status_code == 400
    assert response.json()["error"] == message


# 2. Bodies too large or too slow, and clients that leave.


@pytest.mark.parametrize(
    "request_line", [b"POST /ask", b"GET /search?q=swap", b"POST /admin/sync"], ids=str
)
def test_a_declared_100_mb_body_is_refused_before_it_is_sent(daemon, request_line):
    """Headers alone announcing 100 MB get 413 at once, in the error shape, and the connection
    is closed: not one byte of the body is waited for."""
    with closing(connect(daemon)) as sock:
        sock.sendall(request_line + b" HTTP/1.1\r\nHost: t\r\nContent-Length: 100000000\r\n\r\n")
        started = time.monotonic()
        reply = read_reply(sock, within_s=BODY_TIMEOUT_S / 2)
        print(f"413 after {(time.monotonic() - started) * 1000:.1f} ms")
    assert reply.status == 413
    assert reply.json()["code"] == "body_too_large"
    assert "at most 65536 (server.max_body_bytes)" in reply.json()["error"]
    assert reply.closed


def test_a_chunked_body_is_cut_at_the_limit(daemon):
    """A chunked body (no length) is refused the moment it passes max_body_bytes, without
    waiting for its end, and the connection is closed."""
    with closing(connect(daemon)) as sock:
        sock.sendall(ASK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n")
        chunk = b"a" * 16_384
        for _ in range(MAX_BODY_BYTES // len(chunk)):
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        sock.sendall(b"1\r\nb\r\n")  # one byte over, and the terminating chunk never comes
        reply = read_reply(sock, within_s=BODY_TIMEOUT_S / 2)
    assert reply.status == 413
    assert reply.json()["error"] == (
        "the request body is over 65536 bytes; /ask accepts at most 65536 (server.max_body_bytes)"
    )
    assert reply.closed


def test_sending_100_mb_does_not_grow_the_daemon(daemon):
    """A client that streams a 100 MB body regardless is cut off early; the daemon's RSS does
    not grow by the body (it grew 418 -> 584 MB when the body was read whole)."""
    process = psutil.Process(daemon.process.pid)
    before = process.memory_info().rss
    sent = 0
    with closing(connect(daemon)) as sock:
        sock.sendall(ASK_HEAD + b"Content-Length: 100000000\r\n\r\n")
        block = b"x" * (1 << 20)
        try:
            while sent < 100_000_000:
                sock.sendall(block)
                sent += len(block)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the daemon answered 413 and closed the connection
    after = process.memory_info().rss
    print(
        f"sent {sent >> 20} MiB before the daemon closed; RSS {before >> 20} -> {after >> 20} MiB"
    )
    assert sent < 50_000_000
    assert after - before < 30 << 20


def test_a_client_leaving_mid_body_is_logged_499_at_once(daemon):
    """A client that sends part of its body and leaves is logged as 499 (not 500) as soon as it
    has gone, and no traceback is logged."""
    with closing(connect(daemon)) as sock:
        sock.sendall(
            ASK_HEAD + b"X-Request-ID: left-mid-body\r\nContent-Length: 1000\r\n\r\n" + b'{"qu'
        )
    left = time.monotonic()
    event = logged(daemon, "left-mid-body", within_s=BODY_TIMEOUT_S / 2)
    print(f"logged {(time.monotonic() - left) * 1000:.0f} ms after the client left")
    assert event["status"] == 499
    assert event["client_gone"] is True
    assert "http.unhandled" not in daemon.logs()


def test_a_body_that_stalls_is_answered_408(daemon):
    """A body that does not arrive within body_timeout_s is answered 408 and the connection is
    closed, instead of holding it and a task forever."""
    with closing(connect(daemon)) as sock:
        sock.sendall(ASK_HEAD + b"Content-Length: 100\r\n\r\n" + b'{"question": "sw')
        started = time.monotonic()
        reply = read_reply(sock, within_s=BODY_TIMEOUT_S + 3)
        waited_s = time.monotonic() - started
    print(f"408 after {waited_s:.2f} s")
    assert reply.status == 408
    assert reply.json() == {
        "error": "the request body did not arrive within 2 s (server.body_timeout_s)",
        "code": "body_timeout",
    }
    assert reply.closed
    assert BODY_TIMEOUT_S - 0.2 <= waited_s <= BODY_TIMEOUT_S + 2


# 3. Connections: heads have a deadline, idle connections close, the count is bounded.


def test_slow_and_idle_clients_are_cut_off_while_health_and_search_answer(daemon):
    """400 connections that never finish a head (silent, dribbling a header every 0.25 s, or
    stopped half-way) are all closed after header_timeout_s, while /healthz and /search, asked
    over fresh connections meanwhile, keep answering quickly."""
    kinds = ["silent"] * 150 + ["dribbling"] * 150 + ["half_sent"] * 100
    opened: list[float] = []
    closed_after: dict[int, float] = {}
    latencies_ms: list[float] = []
    with ExitStack() as stack:
        # 1. Open them all.
        socks: list[socket.socket] = []
        for kind in kinds:
            sock = stack.enter_context(closing(connect(daemon)))
            socks.append(sock)
            opened.append(time.monotonic())
            if kind == "dribbling":
                sock.sendall(b"GET /healthz HTTP/1.1\r\n")
            elif kind == "half_sent":
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Half: ")
            sock.setblocking(False)
        # 2. Keep dribbling, ask /healthz every 0.2 s, note when each connection is closed.
        deadline = opened[-1] + HEADER_TIMEOUT_S + 6
        next_dribble = next_probe = 0.0
        searched = False
        while len(closed_after) < len(socks) and time.monotonic() < deadline:
            now = time.monotonic()
            for i, sock in enumerate(socks):
                if i not in closed_after and is_closed(sock):
                    closed_after[i] = now - opened[i]
            if now >= next_dribble:
                next_dribble = now + 0.25
                for i, sock in enumerate(socks):
                    if kinds[i] == "dribbling" and i not in closed_after:
                        try:
                            sock.send(b"X-Slow: 1\r\n")
                        except OSError:
                            closed_after[i] = now - opened[i]
            if now >= next_probe:
                next_probe = now + 0.2
                started = time.perf_counter()
                health = httpx.get(f"{daemon.url}/healthz", timeout=5)
                latencies_ms.append((time.perf_counter() - started) * 1000)
                assert health.status_code == 200
                if not searched:
                    search = httpx.get(f"{daemon.url}/search", params={"q": "swap"}, timeout=10)
                    assert search.status_code == 200
                    assert search.json()["results"][0]["path"] == "ops/swap.md"
                    searched = True
            time.sleep(0.02)
    # 3. All closed, none before the deadline, none long after it.
    still_open = [kinds[i] for i in range(len(socks)) if i not in closed_after]
    print(
        f"/healthz with up to {len(kinds)} slow connections open: {len(latencies_ms)} requests, "
        f"median {statistics.median(latencies_ms):.1f} ms, max {max(latencies_ms):.1f} ms; "
        f"{len(still_open)} connections still open at the end"
    )
    assert not still_open, f"{len(still_open)} still open: {sorted(set(still_open))}"
    print(
        f"closed {min(closed_after.values()):.2f}-{max(closed_after.values()):.2f} s after opening"
    )
    assert min(closed_after.values()) >= HEADER_TIMEOUT_S - 0.1
    assert max(closed_after.values()) <= HEADER_TIMEOUT_S + 2.5
    assert max(latencies_ms) < 2000


def test_an_idle_connection_between_requests_is_closed_after_keep_alive_s(daemon):
    """After an answer, a connection that sends nothing more is closed after keep_alive_s."""
    with closing(connect(daemon)) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        reply = read_reply(sock)
        assert reply.status == 200
        assert not reply.closed  # kept alive for a while...
        assert is_closed(sock, wait_s=KEEP_ALIVE_S + 1.5)  # ...then closed


def test_past_the_bound_the_longest_idle_connections_make_room(bounded):
    """Past max_connections the connections idle the longest are closed, so 200 idle sockets
    leave only the bound open and a newcomer is still served."""
    settle(bounded)
    with ExitStack() as stack:
        # 1. 200 connections that never send a byte: all but the newest 8 are closed.
        socks = [stack.enter_context(closing(connect(bounded))) for _ in range(200)]
        deadline = time.monotonic() + 5
        while sum(is_closed(s) for s in socks[:-BOUND]) < 200 - BOUND:
            assert time.monotonic() < deadline, "the oldest idle connections were not closed"
            time.sleep(0.05)
        assert not any(is_closed(s) for s in socks[-BOUND:])
        # 2. A newcomer is served; the oldest of the 8 idle ones makes room for it.
        assert httpx.get(f"{bounded.url}/healthz", timeout=5).status_code == 200
        assert is_closed(socks[-BOUND], wait_s=1.0)
        assert not any(is_closed(s) for s in socks[-BOUND + 1 :])


def test_when_every_connection_is_busy_a_newcomer_gets_503(bounded):
    """With a request in flight on each of max_connections connections, a newcomer is answered
    503 with Retry-After and closed; once one request ends, newcomers are served again."""
    settle(bounded)
    with ExitStack() as stack:
        # 1. Eight connections, each answered once (so the daemon has accepted them all)...
        socks = [stack.enter_context(closing(connect(bounded))) for _ in range(BOUND)]
        for sock in socks:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            assert read_reply(sock).status == 200
        # 2. ...then each starts an /ask whose body never completes: all eight are busy.
        for sock in socks:
            sock.sendall(ASK_HEAD + b"Content-Length: 100\r\n\r\n" + b'{"q')
        # 3. A ninth connection is refused in the error shape.
        refused = httpx.get(f"{bounded.url}/healthz", timeout=5)
        assert refused.status_code == 503
        assert refused.json() == {
            "error": f"all {BOUND} connections (server.max_connections) have a request in "
            "flight; try again in 1 s",
            "code": "overloaded",
        }
        assert refused.headers["retry-after"] == "1"
        assert refused.headers["connection"] == "close"
        assert not any(is_closed(s) for s in socks)  # nobody busy was cut off
        # 4. One client gives up; the next newcomer is served.
        socks[0].close()
        deadline = time.monotonic() + 5
        while httpx.get(f"{bounded.url}/healthz", timeout=5).status_code != 200:
            assert time.monotonic() < deadline, "no newcomer served after a connection ended"
            time.sleep(0.05)
    assert '"event": "http.over_capacity"' in bounded.logs()
