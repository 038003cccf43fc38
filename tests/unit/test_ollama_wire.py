"""Ollama's refusal of an over-long input is one input's refusal, whatever its status: never
retried, never held against the backend, and told apart from a backend that is down."""

from __future__ import annotations

import json
import random

import httpx
import pytest

from ragvisor.config import BreakerSettings
from ragvisor.embed.ollama import OllamaEmbedder
from ragvisor.errors import (
    BackendError,
    BackendOutOfMemory,
    BackendRejected,
    BackendUnavailable,
    InputRefused,
)
from ragvisor.ollama.wire import Deadlines, error_for_status
from ragvisor.supervise.breaker import BreakerState, CircuitBreaker
from ragvisor.supervise.calls import SupervisedEmbedder, Supervisor
from ragvisor.supervise.retry import RetryPolicy
from ragvisor.testing import FakeClock

MARK = "OVERLONG"


@pytest.mark.parametrize(
    ("status", "message", "error"),
    [
        (400, "input length exceeds the context length", InputRefused),
        (500, "the input length exceeds the context length", InputRefused),
        (413, "The input length exceeds the context length", InputRefused),
        (404, 'model "nomic-embed-text" not found, try pulling it first', BackendRejected),
        (400, "invalid input type", BackendRejected),
        (500, "llama runner process has terminated", BackendError),
        (503, "server busy, please try again.", BackendUnavailable),
        (500, "model requires more system memory (5.1 GiB) than is available", BackendOutOfMemory),
    ],
)
def test_statuses_are_classified_and_an_over_long_input_is_refused_whatever_the_status(
    status, message, error
):
    """The context-length refusal is InputRefused at 400, 413 or 500; a missing model or any
    other 4xx stays a refusal of the request, a 5xx a retryable failure of the backend."""
    found = error_for_status(status, message, "embed", "embedder")
    assert type(found) is error
    assert message in str(found)


class Server:
    """An Ollama that knows one 2-dimension embedding model and refuses any /api/embed batch
    holding MARK with `refusal_status` and the context-length error; counts embed requests."""

    def __init__(self, refusal_status: int) -> None:
        self.refusal_status = refusal_status
        self.embed_requests = 0
        self.transport = httpx.MockTransport(self.handle)

    def handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/tags":
            model = {"name": "nomic-embed-text:latest", "digest": "ab" * 32}
            return httpx.Response(200, json={"models": [model]})
        if request.url.path == "/api/show":
            info = {"general.architecture": "nomic-bert", "nomic-bert.embedding_length": 2}
            info["nomic-bert.context_length"] = 2048
            return httpx.Response(200, json={"model_info": info, "capabilities": ["embedding"]})
        self.embed_requests += 1
        texts = json.loads(request.content)["input"]
        if any(MARK in text for text in texts):
            error = {"error": "the input length exceeds the context length"}
            return httpx.Response(self.refusal_status, json=error)
        return httpx.Response(200, json={"embeddings": [[3.0, 4.0]] * len(texts)})


@pytest.mark.parametrize("status", [400, 500])
def test_a_refused_input_is_not_retried_and_leaves_the_breaker_closed(status):
    """An over-long input answered with 400 or 500 reaches the caller as InputRefused with
    what to change, after one request: no retry, no breaker failure, and the next batch goes
    through."""
    ollama = Server(refusal_status=status)
    remote = OllamaEmbedder(
        "http://ollama.test",
        model="nomic-embed-text",
        batch_size=4,
        num_ctx=512,
        keep_alive="5m",
        deadlines=Deadlines(connect_s=1, first_token_s=5, stall_s=5, total_s=10),
        transport=ollama.transport,
    )
    breaker = CircuitBreaker("embedder", BreakerSettings(failure_threshold=1), clock=FakeClock())
    policy = RetryPolicy(attempts=3, backoff_base_s=0.0)
    embedder = SupervisedEmbedder(
        remote, Supervisor("embedder", policy, breaker, rng=random.Random(1))
    )
    with pytest.raises(InputRefused) as refused:
        embedder.embed(["fine", f"{MARK} " * 40])
    assert ollama.embed_requests == 1  # not three: a refusal is not retried
    assert "embedder.num_ctx" in str(refused.value)
    assert refused.value.retryable is False
    assert breaker.state is BreakerState.CLOSED
    assert embedder.embed(["fine"]).shape == (1, 2)
    remote.close()
