"""The Ollama client against a scripted server over real HTTP: deadlines, errors, cancellation."""

from __future__ import annotations

import asyncio
import time

import pytest

from ragvisor.core.model import ChatMessage, GenerationStats, TextDelta
from ragvisor.errors import BackendError, BackendTimeout, BackendUnavailable
from ragvisor.ollama.client import OllamaClient
from ragvisor.ollama.wire import Deadlines
from tests.integration.conftest import free_port
from tests.integration.scripted_ollama import scripted_ollama

MESSAGES = [ChatMessage("user", "hello")]


def client(url: str, **deadlines: float) -> OllamaClient:
    return OllamaClient(
        url,
        model="scripted",
        num_ctx=1024,
        num_predict=64,
        keep_alive="0",
        deadlines=Deadlines(**{"connect_s": 2.0, **deadlines}),
    )


async def collect(c: OllamaClient) -> list[TextDelta | GenerationStats]:
    try:
        return [event async for event in c.chat(MESSAGES)]
    finally:
        await c.aclose()


@pytest.fixture
def server():
    with scripted_ollama() as (url, script):
        yield url, script


def test_streams_pieces_then_stats_and_always_sends_the_limits(server):
    """The client yields text pieces then the stats, and always sends num_ctx and num_predict."""
    url, script = server
    events = asyncio.run(collect(client(url)))
    assert [e.text for e in events if isinstance(e, TextDelta)] == [f"w{i} " for i in range(5)]
    stats = events[-1]
    assert isinstance(stats, GenerationStats)
    assert stats.eval_count == 5
    assert stats.tokens_per_s == 2500.0
    assert stats.timings_ms() == {"load": 1.0, "prompt_eval": 2.0, "generation": 2.0}
    sent = script.requests[-1]
    assert sent["options"]["num_ctx"] == 1024
    assert sent["options"]["num_predict"] == 64
    assert sent["keep_alive"] == 0  # "0" goes out as the number Ollama reads as "unload now"
    assert sent["stream"] is True


def test_silence_before_the_first_token_misses_the_first_token_deadline(server):
    """No first token in time cancels the call at the server, as a first_token timeout."""
    url, script = server
    script.mode = "hang_first"
    started = time.monotonic()
    with pytest.raises(BackendTimeout, match="first_token deadline"):
        asyncio.run(collect(client(url, first_token_s=0.5)))
    assert time.monotonic() - started < 10  # cancelled, not left hanging for hang_s (60 s)
    assert script.disconnected.wait(5), "the server never saw the call cancelled"


def test_a_stall_mid_stream_misses_the_stall_deadline(server):
    """A stream that goes silent mid-answer is a stall timeout."""
    url, script = server
    script.mode = "stall"
    with pytest.raises(BackendTimeout, match="stall deadline"):
        asyncio.run(collect(client(url, stall_s=0.5)))


def test_a_slow_but_steady_stream_misses_the_total_deadline(server):
    """A stream that trickles on past total_s is a total timeout, however steady."""
    url, script = server
    script.pieces, script.delay_s = 50, 0.1
    with pytest.raises(BackendTimeout, match="total deadline"):
        asyncio.run(collect(client(url, stall_s=5, total_s=1.0)))


def test_an_error_line_mid_stream_is_a_backend_error(server):
    """An error line in the stream is a BackendError carrying Ollama's message."""
    url, script = server
    script.mode = "error_line"
    with pytest.raises(BackendError, match="model runner crashed"):
        asyncio.run(collect(client(url)))


def test_a_connection_cut_mid_stream_is_a_backend_error(server):
    """A connection cut mid-answer is a BackendError that says so."""
    url, script = server
    script.mode = "cut"
    with pytest.raises(BackendError, match="mid-answer"):
        asyncio.run(collect(client(url)))


@pytest.mark.parametrize(("status", "error"), [(503, BackendUnavailable), (500, BackendError)])
def test_error_statuses_map_to_our_errors(server, status, error):
    """A 503 is the backend busy (retried), a 500 a backend error."""
    url, script = server
    script.mode, script.status = "status", status
    with pytest.raises(error, match="busy" if status == 503 else "500"):
        asyncio.run(collect(client(url)))


def test_nothing_listening_is_unavailable():
    """Nothing listening on the port is BackendUnavailable."""
    with pytest.raises(BackendUnavailable, match="cannot connect"):
        asyncio.run(collect(client(f"http://127.0.0.1:{free_port()}")))


def test_closing_the_stream_early_cancels_the_call(server):
    """A consumer that stops reading (a client that left) closes the backend connection."""
    url, script = server
    script.pieces, script.delay_s = 200, 0.05

    async def take_two() -> None:
        c = client(url)
        stream = c.chat(MESSAGES)
        async for _ in stream:
            break
        await stream.aclose()
        await c.aclose()

    asyncio.run(take_two())
    assert script.disconnected.wait(5)


def test_token_count_falls_back_once_on_a_backend_without_it(server):
    """A backend without the token-count extension is asked once, then estimated for."""
    url, _ = server

    async def twice() -> tuple[list[int] | None, list[int] | None]:
        c = client(url)
        try:
            return await c.count_tokens(["a"]), await c.count_tokens(["b"])
        finally:
            await c.aclose()

    assert asyncio.run(twice()) == (None, None)
