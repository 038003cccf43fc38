"""`ragvisor worker` over real HTTP with real llama.cpp: Ollama's API as its own client sees it.

The first group drives the worker with the official `ollama` package (the client the daemon
uses against a real Ollama), asserting on its typed response objects; the second uses plain
httpx for errors, keep-alive, context handling, cancellation and the parent watch.
Generations stay short (num_predict 8-32): the model writes ~30-55 tokens/s on two cores.
"""

from __future__ import annotations

import concurrent.futures
import json
import subprocess
import time
from datetime import UTC, datetime

import httpx
import numpy as np
import ollama
import pytest

from ragvisor import __version__
from ragvisor.embed.onnx import OnnxEmbedder
from ragvisor.llm.gguf import DEFAULT_GGUF_SHA256
from tests.integration.worker_fixtures import (
    gguf_path,
    start_worker,
    stop_worker,
    worker_model_dir,
    worker_process,
    worker_url,
)

# Importing the fixtures registers them with pytest for this module; naming them here keeps
# linters from calling the import unused when test parameters take the same names.
WORKER_FIXTURES = (gguf_path, worker_model_dir, worker_process, worker_url)

pytestmark = pytest.mark.slow

GEN = "gemma3-270m"
EMB = "all-minilm"
SHORT = {"num_predict": 16, "seed": 7}
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
COUNTING = ", ".join(str(n) for n in range(1, 41)) + ","


@pytest.fixture
def client(worker_url):
    with ollama.Client(host=worker_url, timeout=120) as official:
        yield official


@pytest.fixture
def http(worker_url):
    with httpx.Client(base_url=worker_url, timeout=120) as session:
        yield session


def loaded(http: httpx.Client) -> dict[str, dict]:
    """/api/ps as {name: entry}."""
    return {m["name"]: m for m in http.get("/api/ps").json()["models"]}


def assert_final_stats(part) -> None:
    """The statistics every final chat/generate object carries."""
    assert part.done is True
    assert part.done_reason in ("stop", "length")
    assert part.total_duration > 0
    assert part.load_duration >= 0
    assert part.prompt_eval_count > 0
    assert part.prompt_eval_duration > 0
    assert part.eval_count > 0
    assert part.eval_duration > 0
    assert datetime.fromisoformat(part.created_at).tzinfo is not None


# 1. Conformance with the official client ---------------------------------------------------


def test_chat_streams_pieces_then_final_stats(client):
    """Streamed chat: assistant pieces (first without leading space), then one final object."""
    parts = list(client.chat(model=GEN, messages=QUESTION, stream=True, options=SHORT))
    *pieces, last = parts
    assert pieces, "expected at least one piece before the final object"
    assert all(p.done is False and p.message.role == "assistant" for p in pieces)
    text = "".join(p.message.content or "" for p in pieces)
    assert text
    assert text == text.lstrip()
    assert last.message.content == ""
    assert_final_stats(last)
    assert last.eval_count <= 16


def test_chat_without_stream_returns_one_object(client):
    """stream=False: one ChatResponse with the whole content and the statistics."""
    response = client.chat(model=GEN, messages=QUESTION, stream=False, options=SHORT)
    assert response.message.role == "assistant"
    assert response.message.content
    assert_final_stats(response)


def test_num_predict_caps_generation_with_done_reason_length(client):
    """Counting never ends by itself, so num_predict stops it: done_reason length, eval_count."""
    response = client.generate(
        model=GEN, prompt=COUNTING, options={"num_predict": 8, "temperature": 0}
    )
    assert response.done_reason == "length"
    assert response.eval_count == 8
    assert response.context == []
    assert response.response
    assert_final_stats(response)


def test_embed_single_and_batch(client, worker_model_dir):
    """One and several inputs give 384-dim unit vectors equal to the embedder's own."""
    one = client.embed(model=EMB, input="The cat sat on the mat.")
    assert len(one.embeddings) == 1
    assert len(one.embeddings[0]) == 384
    assert one.prompt_eval_count > 0
    assert one.total_duration > 0
    texts = ["alpha particles", "beta decay", "gamma rays"]
    batch = client.embed(model="all-MiniLM-L6-v2-int8", input=texts)
    vectors = np.asarray(batch.embeddings)
    assert vectors.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-3)
    reference = OnnxEmbedder(worker_model_dir).embed(texts)
    assert np.allclose(vectors, reference, atol=1e-5)


def test_list_shows_both_models_with_digests(client):
    """/api/tags lists the generator (GGUF, its sha256) and the embedder under both names."""
    models = {m.model: m for m in client.list().models}
    assert set(models) == {
        "gemma3-270m:latest",
        "all-minilm:latest",
        "all-MiniLM-L6-v2-int8:latest",
    }
    generator = models["gemma3-270m:latest"]
    assert generator.digest == DEFAULT_GGUF_SHA256
    assert generator.size == 253_113_024
    assert generator.details.format == "gguf"
    assert generator.details.family == "gemma3"
    assert generator.details.quantization_level == "Q4_K_M"
    assert generator.details.parameter_size.endswith("M")
    assert generator.modified_at.tzinfo is not None
    embedder = models["all-minilm:latest"]
    assert embedder.digest == models["all-MiniLM-L6-v2-int8:latest"].digest
    assert embedder.details.family == "bert"


def test_show_gives_model_info_and_capabilities(client):
    """/api/show carries Ollama's model_info keys for both models."""
    generator = client.show(GEN)
    info = generator.modelinfo
    assert info["general.architecture"] == "gemma3"
    assert info["general.parameter_count"] > 200_000_000
    assert info["gemma3.context_length"] == 32768
    assert info["gemma3.embedding_length"] == 640
    assert generator.capabilities == ["completion"]
    assert generator.details.format == "gguf"
    assert "User:" in generator.template
    embedder = client.show(EMB)
    assert embedder.modelinfo["general.architecture"] == "bert"
    assert embedder.modelinfo["bert.embedding_length"] == 384
    assert embedder.capabilities == ["embedding"]


def test_preload_ps_and_unload(client):
    """Empty generate loads (done_reason load), ps lists it; keep_alive=0 unloads it."""
    loaded_now = client.generate(model=GEN, keep_alive="10m")
    assert loaded_now.done_reason == "load"
    running = {m.model: m for m in client.ps().models}
    entry = running["gemma3-270m:latest"]
    assert entry.context_length > 0
    assert entry.size > 250_000_000
    assert entry.size_vram == 0
    assert entry.details.format == "gguf"
    assert entry.expires_at > datetime.now(UTC)
    unloaded = client.generate(model=GEN, keep_alive=0)
    assert unloaded.done_reason == "unload"
    assert "gemma3-270m:latest" not in {m.model for m in client.ps().models}


def test_chat_with_no_messages_loads_and_unloads(client):
    """Chat's empty messages list is the same load/unload switch."""
    assert client.chat(model=GEN, messages=[]).done_reason == "load"
    assert "gemma3-270m:latest" in {m.model for m in client.ps().models}
    assert client.chat(model=GEN, messages=[], keep_alive=0).done_reason == "unload"
    assert "gemma3-270m:latest" not in {m.model for m in client.ps().models}


def test_embedder_appears_in_ps_and_unloads(client):
    """The embedder loads on first embed and leaves /api/ps with keep_alive 0."""
    client.embed(model=EMB, input="warm", keep_alive="10m")
    assert "all-minilm:latest" in {m.model for m in client.ps().models}
    client.embed(model=EMB, input=[], keep_alive=0)
    assert "all-minilm:latest" not in {m.model for m in client.ps().models}


def test_unknown_model_raises_response_error_404(client):
    """The official client sees Ollama's 404 for a model we do not have."""
    with pytest.raises(ollama.ResponseError) as caught:
        client.chat(model="llama3.2", messages=QUESTION)
    assert caught.value.status_code == 404
    assert caught.value.error == 'model "llama3.2" not found, try pulling it first'


# 2. Plain HTTP ------------------------------------------------------------------------------


def test_root_and_version(http):
    """GET and HEAD / say 'Ollama is running'; /api/version gives ragvisor's version."""
    root = http.get("/")
    assert root.status_code == 200
    assert root.text == "Ollama is running"
    assert root.headers["content-type"].startswith("text/plain")
    assert http.head("/").status_code == 200
    assert http.get("/api/version").json() == {"version": __version__}


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/chat", {"model": "nope", "messages": QUESTION}),
        ("/api/generate", {"model": "nope", "prompt": "hi"}),
        ("/api/embed", {"model": "nope", "input": "hi"}),
        ("/api/show", {"model": "nope"}),
        ("/api/ragvisor/token_count", {"model": "nope", "texts": ["hi"]}),
    ],
)
def test_unknown_model_is_404_in_ollama_shape(http, path, body):
    """Every endpoint answers an unknown model with 404 and Ollama's message."""
    response = http.post(path, json=body)
    assert response.status_code == 404
    assert response.json() == {"error": 'model "nope" not found, try pulling it first'}


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b'{"model": "gemma3-270m", "prompt": ', "invalid JSON"),
        (b"", "missing request body"),
        (b'{"prompt": "hi"}', "model is required"),
        (b'{"model": "gemma3-270m", "prompt": "hi", "options": {"num_ctx": "big"}}', "num_ctx"),
        (b'{"model": "gemma3-270m", "keep_alive": "soon"}', "invalid duration"),
        (b'{"model": "gemma3-270m", "keep_alive": true}', "keep_alive"),
    ],
)
def test_malformed_requests_are_400_with_error(http, content, expected):
    """Bad JSON, a missing model, a mistyped option or keep-alive: 400 {"error": ...}."""
    response = http.post("/api/generate", content=content)
    assert response.status_code == 400
    body = response.json()
    assert set(body) == {"error"}
    assert expected in body["error"]


def test_wrong_model_kind_is_400(http):
    """Chat with the embedder or embed with the generator is refused, not attempted."""
    chat = http.post("/api/chat", json={"model": EMB, "messages": QUESTION})
    assert chat.status_code == 400
    assert "does not support chat" in chat.json()["error"]
    embed = http.post("/api/embed", json={"model": GEN, "input": "hi"})
    assert embed.status_code == 400
    assert "does not support embeddings" in embed.json()["error"]


def test_unknown_route_is_404_json(http):
    """Paths we do not serve answer 404 with an error object, never a traceback."""
    response = http.get("/api/nothing-here")
    assert response.status_code == 404
    assert "error" in response.json()


def test_embed_over_long_input_truncates_or_refuses(http):
    """truncate:false over the token limit is 400; the default cuts it to the limit."""
    long_text = "token " * 400
    refused = http.post("/api/embed", json={"model": EMB, "input": long_text, "truncate": False})
    assert refused.status_code == 400
    assert refused.json() == {"error": "the input length exceeds the context length"}
    cut = http.post("/api/embed", json={"model": EMB, "input": long_text})
    assert cut.status_code == 200
    assert cut.json()["prompt_eval_count"] == 256
    fits = http.post("/api/embed", json={"model": EMB, "input": "short", "truncate": False})
    assert fits.status_code == 200


def test_keep_alive_duration_unloads_in_background(http, worker_process):
    """keep_alive "1s": the model leaves /api/ps on its own shortly after the request."""
    response = http.post(
        "/api/generate",
        json={"model": GEN, "prompt": "Hi", "keep_alive": "1s", "options": {"num_predict": 2}},
    )
    assert response.status_code == 200
    deadline = time.monotonic() + 15
    while "gemma3-270m:latest" in loaded(http) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "gemma3-270m:latest" not in loaded(http)
    deadline = time.monotonic() + 10  # /api/ps drops it as the unload starts; the log follows
    while not any(
        e.get("reason") == "expired" for e in worker_process.events("worker.model_unloaded")
    ):
        assert time.monotonic() < deadline, "no worker.model_unloaded with reason expired"
        time.sleep(0.1)


def test_negative_keep_alive_pins_the_model(http):
    """keep_alive -1 keeps the model loaded: its expiry is decades away."""
    response = http.post("/api/generate", json={"model": GEN, "keep_alive": -1})
    assert response.json()["done_reason"] == "load"
    expires = datetime.fromisoformat(loaded(http)["gemma3-270m:latest"]["expires_at"])
    assert expires.year >= 2100
    http.post("/api/generate", json={"model": GEN, "keep_alive": 0})


def test_num_ctx_change_reloads_the_model(http, worker_process):
    """A request with another num_ctx reloads the model with that context, as Ollama does."""
    body = {"model": GEN, "prompt": "Hello", "stream": False}
    first = http.post("/api/generate", json={**body, "options": {"num_ctx": 512, "num_predict": 2}})
    assert first.status_code == 200
    assert loaded(http)["gemma3-270m:latest"]["context_length"] == 512
    again = http.post("/api/generate", json={**body, "options": {"num_ctx": 512, "num_predict": 2}})
    assert again.json()["load_duration"] == 0
    bigger = http.post(
        "/api/generate", json={**body, "options": {"num_ctx": 1024, "num_predict": 2}}
    )
    assert bigger.json()["load_duration"] > 0
    assert loaded(http)["gemma3-270m:latest"]["context_length"] == 1024
    reasons = [e.get("reason") for e in worker_process.events("worker.model_unloaded")]
    assert "reload" in reasons


def test_prompt_longer_than_context_is_truncated(http, worker_process):
    """An over-long prompt keeps its head and tail so the answer fits: fewer tokens evaluated."""
    prompt = "The history of the river valley is long. " * 60 + "Summarise it:"
    full = http.post("/api/ragvisor/token_count", json={"model": GEN, "texts": [prompt]})
    full_count = full.json()["counts"][0] + 1  # + BOS
    assert full_count > 256
    response = http.post(
        "/api/generate",
        json={
            "model": GEN,
            "prompt": prompt,
            "stream": False,
            "options": {"num_ctx": 256, "num_predict": 8},
        },
    )
    assert response.status_code == 200
    body = response.json()
    assert body["prompt_eval_count"] == 256 - 8
    assert body["prompt_eval_count"] < full_count
    warning = worker_process.wait_for_event("worker.prompt_truncated")[-1]
    assert warning["level"] == "warning"
    assert (warning["limit"], warning["prompt"], warning["new"]) == (248, full_count, 248)


def test_token_count_matches_what_generation_evaluates(http):
    """token_count counts without BOS: a raw prompt evaluates exactly that many plus one."""
    texts = ["The capital of France is", "", "A longer sentence has more tokens than this."]
    response = http.post("/api/ragvisor/token_count", json={"model": GEN, "texts": texts})
    assert response.status_code == 200
    body = response.json()
    assert body["model"] == GEN
    counts = body["counts"]
    assert counts[1] == 0
    assert 0 < counts[0] < counts[2]
    generated = http.post(
        "/api/generate",
        json={
            "model": GEN,
            "prompt": texts[0],
            "raw": True,
            "stream": False,
            "options": {"num_predict": 2},
        },
    )
    assert generated.json()["prompt_eval_count"] == counts[0] + 1
    embedder = http.post("/api/ragvisor/token_count", json={"model": EMB, "texts": ["hello world"]})
    assert embedder.json()["counts"] == [2]


def test_client_disconnect_cancels_generation(http, worker_process, worker_url):
    """Closing a stream (or giving up on a non-streamed answer) stops the generation at once."""
    before = len(worker_process.events("worker.cancelled"))
    long_job = {
        "model": GEN,
        "prompt": COUNTING,
        "options": {"num_predict": 2000, "temperature": 0},
    }
    # 1. A stream closed after a few chunks.
    with (
        httpx.Client(timeout=60) as streaming,
        streaming.stream("POST", f"{worker_url}/api/generate", json=long_job) as response,
    ):
        lines = response.iter_lines()
        chunks = [json.loads(next(lines)) for _ in range(3)]
    assert all(chunk["done"] is False for chunk in chunks)
    # 2. The next request is served promptly: 2000 tokens would take a minute or more.
    started = time.monotonic()
    follow_up = http.post(
        "/api/generate",
        json={"model": GEN, "prompt": "Hi", "stream": False, "options": {"num_predict": 4}},
    )
    assert follow_up.status_code == 200
    assert time.monotonic() - started < 20
    cancelled = worker_process.wait_for_event("worker.cancelled")
    assert len(cancelled) == before + 1
    assert cancelled[-1]["eval_count"] < 2000
    # 3. A non-streamed request whose client stops waiting.
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            f"{worker_url}/api/generate",
            json={**long_job, "stream": False},
            timeout=httpx.Timeout(60, read=2.0),
        )
    deadline = time.monotonic() + 20
    while len(worker_process.events("worker.cancelled")) < before + 2:
        assert time.monotonic() < deadline, "the abandoned generation was not cancelled"
        time.sleep(0.1)
    assert worker_process.events("worker.cancelled")[-1]["eval_count"] < 2000


def test_generations_queue_while_the_api_stays_responsive(http, worker_url):
    """Two concurrent generations both complete; /api/version answers during them."""

    def generate(prompt: str) -> dict:
        with httpx.Client(timeout=120) as session:
            response = session.post(
                f"{worker_url}/api/generate",
                json={
                    "model": GEN,
                    "prompt": prompt,
                    "stream": False,
                    "options": {"num_predict": 24},
                },
            )
            assert response.status_code == 200
            return response.json()

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        runs = [pool.submit(generate, p) for p in ("Once upon a time", "In a galaxy far away")]
        assert http.get("/api/version", timeout=10).status_code == 200
        results = [run.result() for run in runs]
    assert all(r["eval_count"] > 0 for r in results)


def test_worker_exits_when_its_parent_dies(gguf_path, worker_model_dir, tmp_path):
    """With --parent-pid, the worker stops on its own once that process is gone."""
    parent = subprocess.Popen(["sleep", "300"])
    worker = start_worker(
        gguf_path,
        worker_model_dir,
        tmp_path / "data",
        tmp_path / "worker.log",
        "--parent-pid",
        str(parent.pid),
    )
    try:
        # 1. While the parent lives, the worker serves (several watch periods pass).
        time.sleep(1.5)
        assert httpx.get(f"{worker.url}/api/version", timeout=5).status_code == 200
        # 2. The parent dies (and is reaped); the worker notices and exits cleanly.
        parent.kill()
        parent.wait(5)
        assert worker.process.wait(timeout=20) == 0
        assert worker.events("worker.parent_gone")
        assert worker.events("worker.stopped")
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(5)
        stop_worker(worker)
