"""The fault-injecting proxy over real HTTP: every fault as the Ollama client classifies it,
scripts and seeded probabilities, the control API, a prompt stop and the CLI as a process.

The upstream is the scripted Ollama server (answering normally); each fault comes from the
proxy alone. Clients use small deadlines (1 s) so a hang or a stall costs a second.
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
import pytest
from structlog.testing import capture_logs

from ragvisor.core.model import ChatMessage, GenerationStats, TextDelta
from ragvisor.errors import (
    BackendError,
    BackendOutOfMemory,
    BackendTimeout,
    BackendUnavailable,
    RagvisorError,
)
from ragvisor.faultproxy import Fault, FaultPlan, FaultProxy, cut_after_lines, running_proxy
from ragvisor.ollama.client import OllamaClient
from ragvisor.ollama.wire import Deadlines
from tests.integration.conftest import free_port
from tests.integration.scripted_ollama import scripted_ollama

MESSAGES = [ChatMessage("user", "hello")]
Event = TextDelta | GenerationStats


@pytest.fixture
def upstream():
    """A well-behaved scripted Ollama: five pieces, then the final stats line."""
    with scripted_ollama() as (url, script):
        yield url, script


def chat(url: str, first_token_s: float = 1.0) -> tuple[list[Event], RagvisorError | None, float]:
    """One streamed chat through `url`: the events received, the error raised, seconds taken.

    Any exception that is not one of ours (a raw httpx error) fails the test.
    """

    async def drive() -> tuple[list[Event], RagvisorError | None]:
        client = OllamaClient(
            url,
            model="scripted",
            num_ctx=1024,
            num_predict=64,
            deadlines=Deadlines(
                connect_s=2.0, first_token_s=first_token_s, stall_s=1.0, total_s=10.0
            ),
        )
        events: list[Event] = []
        try:
            async for event in client.chat(MESSAGES):
                events.append(event)
        except RagvisorError as exc:
            return events, exc
        finally:
            await client.aclose()
        return events, None

    started = time.monotonic()
    events, error = asyncio.run(drive())
    return events, error, time.monotonic() - started


def texts(events: list[Event]) -> list[str]:
    return [e.text for e in events if isinstance(e, TextDelta)]


@dataclass(frozen=True)
class Expected:
    """How the client classifies one fault, and whether the backend saw the request."""

    error: type[RagvisorError]
    forwarded: bool
    phase: str | None = None
    deltas_first: int = 0  # text pieces received before the error


EXPECTED = {
    Fault.HANG: Expected(BackendTimeout, forwarded=False, phase="first_token"),
    Fault.STALL: Expected(BackendTimeout, forwarded=True, phase="stall", deltas_first=1),
    Fault.ERROR_LINE: Expected(BackendError, forwarded=True, deltas_first=1),
    Fault.HTTP_500: Expected(BackendError, forwarded=False),
    Fault.BUSY_503: Expected(BackendUnavailable, forwarded=False),
    Fault.OOM: Expected(BackendOutOfMemory, forwarded=False),
}


@pytest.mark.parametrize("fault", list(EXPECTED), ids=lambda f: f.value)
def test_each_fault_reaches_the_client_as_the_error_ollama_would_cause(upstream, fault):
    """A scripted fault is classified by the Ollama client exactly as the real failure is."""
    url, script = upstream
    expected = EXPECTED[fault]
    # 1. One chat through a proxy scripted to inject the fault.
    with running_proxy(url, FaultPlan(script=[fault])) as proxy:
        events, error, _ = chat(proxy.url)
        stats = proxy.stats()
    # 2. The client raised our error, of the expected class (not a subclass of it).
    assert type(error) is expected.error, error
    if isinstance(error, BackendError):
        assert error.retryable is (fault is not Fault.OOM)
    if expected.phase is not None:
        assert isinstance(error, BackendTimeout)
        assert error.phase == expected.phase
    if fault in (Fault.ERROR_LINE, Fault.HTTP_500):
        assert "injected fault" in str(error)
    # 3. What arrived before the error, and whether the backend ever saw the request.
    assert texts(events) == ["w0 "] * expected.deltas_first
    assert len(script.requests) == int(expected.forwarded)
    assert stats["by_fault"][fault.value] == 1


def test_a_reset_is_one_of_our_errors_and_never_reaches_the_backend(upstream):
    """A TCP reset after the request surfaces as a BackendError/Unavailable, not an httpx error."""
    url, script = upstream
    with running_proxy(url, FaultPlan(script=[Fault.RESET])) as proxy:
        events, error, _ = chat(proxy.url)
    assert isinstance(error, BackendError | BackendUnavailable), error
    assert isinstance(error.__cause__, httpx.TransportError)
    assert events == []
    assert script.requests == []


def test_a_reset_is_a_real_tcp_rst(upstream):
    """The reset fault closes with SO_LINGER 0: the client's recv fails with ECONNRESET."""
    url, _ = upstream
    with running_proxy(url, FaultPlan(script=[Fault.RESET])) as proxy:
        host, port = proxy.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            sock.sendall(b"POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
            with pytest.raises(ConnectionResetError):
                sock.recv(1024)  # a plain close would return b"" instead


def test_a_stall_on_a_plain_json_answer_sends_the_headers_then_nothing(upstream):
    """For a non-streamed body, stall sends the status line and headers, then goes silent."""
    url, _ = upstream
    plan = FaultPlan(script=[Fault.STALL], paths=("/api/version",))
    with running_proxy(url, plan) as proxy:
        timeout = httpx.Timeout(5.0, read=1.0)
        with httpx.stream("GET", f"{proxy.url}/api/version", timeout=timeout) as response:
            assert response.status_code == 200
            with pytest.raises(httpx.ReadTimeout):
                response.read()


def test_an_unreachable_upstream_is_a_502_the_client_treats_as_a_backend_error():
    """With nothing behind the proxy, a passed call gets 502 naming the proxy: retryable."""
    with running_proxy(f"http://127.0.0.1:{free_port()}") as proxy:
        events, error, _ = chat(proxy.url)
    assert type(error) is BackendError
    assert error.retryable
    assert "502" in str(error)
    assert "faultproxy: upstream" in str(error)
    assert events == []


def test_pass_gives_the_same_answer_as_going_direct(upstream):
    """`pass` forwards untouched: same pieces, same final stats as without the proxy."""
    url, script = upstream
    direct, direct_error, _ = chat(url)
    with running_proxy(url) as proxy:
        proxied, proxied_error, _ = chat(proxy.url)
        assert proxy.stats()["by_fault"]["pass"] == 1
    assert direct_error is None
    assert proxied_error is None
    assert proxied == direct
    assert texts(proxied) == [f"w{i} " for i in range(5)]
    assert script.requests[0] == script.requests[1]  # the body reached the backend unchanged


def test_pass_streams_each_line_as_it_arrives(upstream):
    """The first piece reaches the client long before a slow stream ends (TTFT is kept)."""
    url, script = upstream
    script.pieces, script.delay_s = 4, 0.5  # the whole answer takes about two seconds
    with running_proxy(url) as proxy:
        started = time.monotonic()
        with httpx.stream("POST", f"{proxy.url}/api/chat", json={}, timeout=10) as response:
            lines = response.iter_lines()
            first = next(lines)
            first_at = time.monotonic() - started
            rest = list(lines)
        whole = time.monotonic() - started
    assert json.loads(first)["message"]["content"] == "w0 "
    assert len(rest) == 4  # three more pieces and the final stats line
    assert first_at < whole - 1.0  # generous: the first line came well before the end


def test_slow_first_byte_succeeds_later(upstream):
    """slow_first_byte delays the call by slow_s and then answers normally."""
    url, _ = upstream
    with running_proxy(url, FaultPlan(script=[Fault.SLOW_FIRST_BYTE], slow_s=1.5)) as proxy:
        events, error, seconds = chat(proxy.url, first_token_s=5.0)
    assert error is None
    assert texts(events) == [f"w{i} " for i in range(5)]
    assert seconds >= 1.5


def test_the_script_is_played_in_order_then_probabilities_take_over(upstream):
    """Script entries are consumed one per faulted request, in order; then the plan's odds."""
    url, _ = upstream
    plan = FaultPlan(
        script=[Fault.HTTP_500, Fault.PASS, Fault.BUSY_503, Fault.OOM],
        probabilities={Fault.HTTP_500: 1.0},
        paths=("/api/version",),
    )
    with running_proxy(url, plan) as proxy:
        responses = [httpx.get(f"{proxy.url}/api/version", timeout=5) for _ in range(6)]
    assert [r.status_code for r in responses] == [500, 200, 503, 500, 500, 500]
    assert responses[1].json() == {"version": "0.0.0-scripted"}
    assert "server busy" in responses[2].json()["error"]
    assert "requires more system memory" in responses[3].json()["error"]
    assert responses[4].json()["error"] == "injected fault: internal server error"


def test_seeded_probabilities_give_the_expected_proportions_repeatably(upstream):
    """Over 200 calls the faults come in about the configured shares, identically per seed."""
    url, _ = upstream
    plan = FaultPlan(
        probabilities={Fault.HTTP_500: 0.3, Fault.BUSY_503: 0.2},
        seed=7,
        paths=("/api/version",),
    )

    def statuses(proxy: FaultProxy) -> list[int]:
        with httpx.Client(base_url=proxy.url, timeout=5) as client:
            return [client.get("/api/version").status_code for _ in range(200)]

    with running_proxy(url, plan) as proxy:
        first = statuses(proxy)
        stats = proxy.stats()
        proxy.set_plan(plan)  # the same plan again: the same seeded sequence
        second = statuses(proxy)
    counts = Counter(first)
    assert 40 <= counts[500] <= 80  # expected 60
    assert 22 <= counts[503] <= 58  # expected 40
    assert counts[500] + counts[503] + counts[200] == 200
    assert stats["requests_total"] == 200
    assert stats["by_fault"]["http_500"] == counts[500]
    assert stats["by_fault"]["busy_503"] == counts[503]
    assert stats["by_path"] == {"/api/version": 200}
    assert second == first


def test_paths_outside_the_plan_always_pass(upstream):
    """With every faulted call failing, /api/version (not a faulted path) still answers."""
    url, _ = upstream
    with running_proxy(url, FaultPlan(probabilities={Fault.HTTP_500: 1.0})) as proxy:
        versions = [httpx.get(f"{proxy.url}/api/version", timeout=5) for _ in range(10)]
        chat_response = httpx.post(f"{proxy.url}/api/chat", json={}, timeout=5)
        stats = proxy.stats()
    assert {r.status_code for r in versions} == {200}
    assert chat_response.status_code == 500
    assert stats["by_fault"]["pass"] == 10
    assert stats["by_path"] == {"/api/version": 10, "/api/chat": 1}


def test_the_control_api_changes_the_plan_and_reports_stats(upstream):
    """PUT /_faultproxy/plan takes effect at once; stats count what happened; bad plans get 400."""
    url, _ = upstream
    # 1. Every path is faulted at 100 %: the control API itself is still never faulted.
    plan = FaultPlan(probabilities={Fault.BUSY_503: 1.0}, paths=("/",))
    with running_proxy(url, plan) as proxy, httpx.Client(base_url=proxy.url, timeout=5) as http:
        assert http.get("/_faultproxy/plan").json()["probabilities"] == {"busy_503": 1.0}
        assert http.get("/api/version").status_code == 503
        # 2. A new plan through the API.
        new_plan = {"script": ["http_500"], "paths": ["/api/version"], "seed": 1}
        answer = http.put("/_faultproxy/plan", json=new_plan)
        assert answer.status_code == 200
        assert answer.json()["script"] == ["http_500"]
        assert proxy.plan.script == (Fault.HTTP_500,)
        assert [http.get("/api/version").status_code for _ in range(2)] == [500, 200]
        # 3. Stats count proxied requests only, and can be reset.
        stats = http.get("/_faultproxy/stats").json()
        assert stats["requests_total"] == 3
        assert stats["by_fault"]["busy_503"] == stats["by_fault"]["http_500"] == 1
        assert http.delete("/_faultproxy/stats").json()["requests_total"] == 0
        # 4. Bad plans are refused with a JSON error naming the problem; the plan is unchanged.
        bad = {
            "add up to": {"probabilities": {"hang": 0.7, "http_500": 0.5}},
            "script.0": {"script": ["explode"]},
            "probabilities.hang": {"probabilities": {"hang": "lots"}},
            "colour": {"colour": "red"},
            "stall_after_lines": {"stall_after_lines": -1},
        }
        for needle, document in bad.items():
            refused = http.put("/_faultproxy/plan", json=document)
            assert refused.status_code == 400, document
            assert needle in refused.json()["error"], refused.json()
        assert http.put("/_faultproxy/plan", content=b"{not json").status_code == 400
        assert http.get("/_faultproxy/plan").json()["script"] == ["http_500"]
        assert http.post("/_faultproxy/plan").status_code == 405
        assert http.get("/_faultproxy/nothing").status_code == 404


def test_every_proxied_request_logs_one_event(upstream):
    """faultproxy.request carries method, path, fault, upstream status and duration_ms."""
    url, _ = upstream
    plan = FaultPlan(script=[Fault.HTTP_500], paths=("/api/version",))
    with capture_logs() as logs, running_proxy(url, plan) as proxy:
        httpx.get(f"{proxy.url}/api/version", timeout=5)
        httpx.get(f"{proxy.url}/api/version", timeout=5)
        httpx.get(f"{proxy.url}/_faultproxy/stats", timeout=5)
    events = [e for e in logs if e["event"] == "faultproxy.request"]
    assert [(e["method"], e["path"], e["fault"]) for e in events] == [
        ("GET", "/api/version", "http_500"),
        ("GET", "/api/version", "pass"),
    ]
    assert "upstream_status" not in events[0]  # the backend never saw it
    assert events[1]["upstream_status"] == 200
    assert all(e["duration_ms"] >= 0 and e["completed"] for e in events)


def test_stop_releases_hanging_and_stalled_clients_promptly(upstream):
    """Stopping the proxy closes a hanging and a stalled connection at once (bounded)."""
    url, script = upstream
    stalled_headers = threading.Event()

    def hang_call(proxy_url: str) -> None:
        httpx.post(f"{proxy_url}/api/chat", json={}, timeout=30)

    def stall_call(proxy_url: str) -> None:
        with httpx.stream("POST", f"{proxy_url}/api/chat", json={}, timeout=30) as response:
            stalled_headers.set()
            for _ in response.iter_lines():
                pass

    plan = FaultPlan(script=[Fault.HANG, Fault.STALL])
    with ThreadPoolExecutor(2) as pool:
        with running_proxy(url, plan) as proxy:
            # 1. Two clients, one hanging before any answer, one stalled after the first line.
            hanging = pool.submit(hang_call, proxy.url)
            deadline = time.monotonic() + 10
            while proxy.stats()["requests_total"] < 1 and time.monotonic() < deadline:
                time.sleep(0.02)
            stalled = pool.submit(stall_call, proxy.url)
            assert stalled_headers.wait(10)
            assert not hanging.done()
            assert not stalled.done()
            stopping = time.monotonic()
        # 2. Leaving the context stops the proxy: both clients are cut off, well within bounds.
        assert time.monotonic() - stopping < 10
        for call in (hanging, stalled):
            with pytest.raises(httpx.TransportError):
                call.result(timeout=10)
    assert len(script.requests) == 1  # only the stall was forwarded


def test_cut_after_lines_keeps_whole_lines_only():
    """The line cutter keeps up to the n-th newline and says how many lines are still wanted."""
    assert cut_after_lines(b'{"a":1}\n{"b":2}\n{"c"', 2) == (b'{"a":1}\n{"b":2}\n', 0)
    assert cut_after_lines(b'{"a":1}\n{"b"', 2) == (b'{"a":1}\n{"b"', 1)
    assert cut_after_lines(b"no newline", 1) == (b"no newline", 1)


def test_plans_are_validated_on_construction():
    """A plan that cannot be honoured is refused with a ValueError naming the field."""
    with pytest.raises(ValueError, match=r"add up to 1\.2"):
        FaultPlan(probabilities={Fault.HANG: 0.8, Fault.STALL: 0.4})
    with pytest.raises(ValueError, match="between 0 and 1"):
        FaultPlan(probabilities={Fault.HANG: -0.1})
    with pytest.raises(ValueError, match="unknown fault 'boom'"):
        FaultPlan(script=["boom"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="starting with '/'"):
        FaultPlan(paths=("api/chat",))
    assert FaultPlan.from_json(FaultPlan(seed=3).to_json()) == FaultPlan(seed=3)


# --- the command line, as a process -----------------------------------------------------------

PROXY_MODULE = [sys.executable, "-m", "ragvisor.faultproxy"]


def read_line(process: subprocess.Popen[str], timeout_s: float) -> str:
    """The next line of the child's stdout, waiting at most `timeout_s`."""
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout_s)
    if not ready:
        process.kill()
        pytest.fail(f"no output within {timeout_s} s: {process.communicate(timeout=5)}")
    return process.stdout.readline().strip()


@pytest.mark.parametrize("module", ["ragvisor.faultproxy", "ragvisor.ops.faultproxy"])
def test_the_cli_proxies_and_exits_0_on_sigterm(upstream, tmp_path, module):
    """`python -m ragvisor.faultproxy` (and its former name, `ragvisor.ops.faultproxy`) prints
    its URL, injects its plan, stops on SIGTERM."""
    url, script = upstream
    script_file = tmp_path / "faults.txt"
    script_file.write_text("# first call fails, then the odds apply\n\nbusy_503\n")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            module,
            "--log-level",
            "info",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            url,
            "--script",
            str(script_file),
            "--fault",
            "http_500=1.0",
            "--paths",
            "/api/chat",
            "--seed",
            "5",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        # 1. The first stdout line is the URL the proxy listens on.
        proxy_url = read_line(process, 30)
        assert proxy_url.startswith("http://127.0.0.1:")
        # 2. It proxies: a non-faulted path passes, the chat gets the script then the odds.
        with httpx.Client(base_url=proxy_url, timeout=5) as http:
            assert http.get("/api/version").json() == {"version": "0.0.0-scripted"}
            assert http.post("/api/chat", json={}).status_code == 503
            assert http.post("/api/chat", json={}).status_code == 500
            plan = http.get("/_faultproxy/plan").json()
        assert plan["probabilities"] == {"http_500": 1.0}
        assert plan["seed"] == 5
        assert script.requests == []
        # 3. SIGTERM: a clean exit with status 0, the requests logged as JSON on stderr.
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=5)
    assert process.returncode == 0, stderr
    logged = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    faults = [e["fault"] for e in logged if e.get("event") == "faultproxy.request"]
    assert faults == ["pass", "busy_503", "http_500"]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--fault", "explode=0.1"], "unknown fault 'explode'"),
        (["--fault", "hang=0.7", "--fault", "stall=0.7"], "add up to 1.4"),
        (["--fault", "hang"], "expected NAME=PROB"),
        (["--listen", "nowhere"], "expected HOST:PORT"),
        (["--script", "/nonexistent/faults.txt"], "cannot read"),
        (["--upstream", "ftp://x"], "expected http://HOST:PORT"),
    ],
)
def test_bad_flags_exit_2_with_a_clear_message(flags, message):
    """A flag the proxy cannot honour is refused before listening, with exit status 2."""
    base = {"--listen": "127.0.0.1:0", "--upstream": "http://127.0.0.1:9"}
    for flag in flags[::2]:
        base.pop(flag, None)
    argv = [*PROXY_MODULE, *[part for item in base.items() for part in item], *flags]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 2
    assert message in result.stderr
    assert result.stdout == ""
