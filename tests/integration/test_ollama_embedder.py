"""The Ollama embedder against a real `ragvisor worker` over loopback, and through the CLI.

The worker serves a re-exported copy of the pinned MiniLM: the same weights with another file
digest, as a new `ollama pull` of the same name would give. So its vectors must equal the
in-process ONNX embedder's, while its fingerprint differs from the default model's and a sync
switching to it re-embeds everything. Misbehaviour the worker never shows (silence, a trickling
answer, 5xx, out of memory) comes from a small scripted server in this file.
"""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from structlog.testing import capture_logs

from ragvisor.embed.ollama import ModelChanged, OllamaEmbedder
from ragvisor.embed.onnx import MODEL_FILE, OnnxEmbedder
from ragvisor.errors import (
    BackendError,
    BackendOutOfMemory,
    BackendRejected,
    BackendTimeout,
    BackendUnavailable,
    ConfigError,
)
from ragvisor.ollama.names import model_key
from ragvisor.ollama.wire import Deadlines
from tests.integration.conftest import free_port, gguf_file, run_cli
from tests.integration.corpus import write_corpus
from tests.integration.worker_fixtures import WorkerProcess, start_worker, stop_worker

pytestmark = pytest.mark.slow

ALIAS = "all-minilm"  # the worker's Ollama-style name for its embedder
FULL_NAME = "all-MiniLM-L6-v2-int8"  # the same model under embedder.model_name
DIMENSIONS = 384
FAST = Deadlines(connect_s=2.0, first_token_s=60.0, stall_s=10.0, total_s=120.0)
TEXTS = [
    "A swap file gives a 4 GB droplet room to breathe.",
    "Set vm.swappiness to 10.",
    "The Neo4j heap is set with server.memory.heap.max_size.",
    "Mix flour, water and starter, let the dough rise overnight.",
    "The cat sleeps on the windowsill.",
    "ragvisor keys vectors on the model digest, not its name.",
    "Ollama answers 503 when its queue is full.",
    "short",
    "A much longer sentence about backups, restores and the order in which they run at night.",
    "Last one.",
]


def reexport(source: Path, target: Path) -> Path:
    """Copy a model folder and give model.onnx a doc string: same weights, another digest.

    Field 6 of ONNX's ModelProto is `doc_string`; a length-delimited field appended to the
    serialized message is read as its value, so ONNX Runtime loads the same graph.
    """
    shutil.copytree(source, target)
    note = b"re-exported for the ragvisor ollama embedder tests"
    with (target / MODEL_FILE).open("ab") as handle:
        handle.write(bytes([0x32, len(note)]) + note)
    return target


@pytest.fixture(scope="module")
def served_model_dir(model_dir, tmp_path_factory) -> Path:
    """The re-exported MiniLM the worker serves."""
    return reexport(model_dir, tmp_path_factory.mktemp("served") / "minilm")


@pytest.fixture(scope="module")
def worker(served_model_dir, tmp_path_factory) -> Iterator[WorkerProcess]:
    """One worker for the module; it must exit 0 on SIGTERM at the end."""
    root = tmp_path_factory.mktemp("ollama-embedder-worker")
    process = start_worker(gguf_file(), served_model_dir, root / "data", root / "worker.log")
    yield process
    code = stop_worker(process)
    assert code == 0, f"worker exited {code}:\n{process.log_path.read_text()}"


class Recording(httpx.BaseTransport):
    """The real transport, with every request's path and JSON body written down."""

    def __init__(self, rewrite: dict[str, Any] | None = None) -> None:
        self.inner = httpx.HTTPTransport()
        self.rewrite = rewrite or {}
        self.sent: list[tuple[str, dict[str, Any] | None]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        if body is not None and self.rewrite and request.url.path == "/api/embed":
            body = {**body, **self.rewrite}
            request = httpx.Request(
                request.method, request.url, json=body, extensions=request.extensions
            )
        self.sent.append((request.url.path, body))
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()

    def bodies(self, path: str) -> list[dict[str, Any]]:
        return [body or {} for sent_path, body in self.sent if sent_path == path]


def embedder_for(
    url: str,
    model: str = ALIAS,
    *,
    batch_size: int = 4,
    deadlines: Deadlines = FAST,
    transport: httpx.BaseTransport | None = None,
) -> OllamaEmbedder:
    return OllamaEmbedder(
        url,
        model=model,
        batch_size=batch_size,
        num_ctx=2048,
        keep_alive="5m",
        deadlines=deadlines,
        transport=transport,
    )


def wait_until_unloaded(embedder: OllamaEmbedder, timeout_s: float = 15.0) -> None:
    """Unload and poll /api/ps (bounded) until the model is gone."""
    embedder.unload()
    deadline = time.monotonic() + timeout_s
    while embedder.loaded():
        assert time.monotonic() < deadline, "the embedder model is still loaded"
        time.sleep(0.1)


# 1. Identity: the fingerprint ----------------------------------------------------------------


def test_fingerprint_is_the_tags_digest_and_the_show_dimensions(worker, served_model_dir):
    """The fingerprint is /api/tags' digest plus /api/show's embedding_length; no model loads."""
    tags = httpx.get(f"{worker.url}/api/tags", timeout=30).json()["models"]
    listed = next(m for m in tags if m["name"] == f"{ALIAS}:latest")
    with capture_logs() as logs, embedder_for(worker.url) as embedder:
        fingerprint = embedder.connect()
        assert fingerprint.digest == listed["digest"]
        assert fingerprint.dimensions == DIMENSIONS
        assert fingerprint.name == ALIAS
        assert embedder.fingerprint is fingerprint  # cached, no second resolution
        assert not embedder.loaded()  # reading the identity loads nothing
    # The worker's digest is the file's sha256: the same file in-process has the same key.
    assert fingerprint.key == OnnxEmbedder(served_model_dir).fingerprint.key
    connected = [e for e in logs if e["event"] == "embedder.connected"]
    assert connected[0]["fingerprint"] == fingerprint.key
    assert connected[0]["context_length"] == 256  # the worker's MiniLM cuts at 256 tokens


def test_another_name_for_the_same_model_keeps_the_fingerprint(worker):
    """Renaming is free: every name Ollama resolves to this model gives the same key."""
    keys = set()
    for name in (ALIAS, f"{ALIAS}:latest", "ALL-MiniLM", FULL_NAME):
        with embedder_for(worker.url, name) as embedder:
            keys.add(embedder.connect().key)
    assert len(keys) == 1


def test_model_names_compare_the_way_ollama_does():
    """A bare name means :latest in the library namespace on Ollama's registry; case is ignored."""
    assert model_key("nomic-embed-text") == model_key("nomic-embed-text:latest")
    assert model_key("nomic-embed-text") == model_key(
        "registry.ollama.ai/library/Nomic-Embed-Text:latest"
    )
    assert model_key("nomic-embed-text") != model_key("nomic-embed-text:v1.5")
    assert model_key("me/embedder") != model_key("embedder")


def test_a_model_that_is_not_pulled_is_a_config_error_with_the_pull_command(worker):
    """An embedder.model the server does not list is a ConfigError saying `ollama pull …`."""
    with embedder_for(worker.url, "nomic-embed-text") as embedder, pytest.raises(ConfigError) as e:
        embedder.connect()
    assert "embedder.model" in str(e.value)
    assert "ollama pull nomic-embed-text" in str(e.value)
    assert f"{ALIAS}:latest" in str(e.value)  # what the server does have


def test_a_chat_model_is_not_taken_for_an_embedder(worker):
    """A model whose /api/show capabilities lack "embedding" is refused as the embedder."""
    with embedder_for(worker.url, "gemma3-270m") as embedder, pytest.raises(ConfigError) as e:
        embedder.connect()
    assert "not an embedding model" in str(e.value)


# 2. Vectors ------------------------------------------------------------------------------------


def test_vectors_equal_the_in_process_onnx_embedder(worker, embedder):
    """The worker's vectors for the same texts match OnnxEmbedder's: float32, unit length."""
    with embedder_for(worker.url) as remote:
        vectors = remote.embed(TEXTS)
    reference = embedder.embed(TEXTS)
    assert vectors.dtype == np.float32
    assert vectors.shape == (len(TEXTS), DIMENSIONS)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    cosines = np.sum(vectors * reference, axis=1)
    assert cosines.min() > 0.999, cosines


def test_texts_are_sent_in_batches_of_batch_size_with_the_limits(worker):
    """Ten texts at batch_size 4 are three /api/embed requests of 4, 4 and 2, in order,
    each with truncate false, num_ctx and keep_alive."""
    recording = Recording()
    with embedder_for(worker.url, batch_size=4, transport=recording) as remote:
        vectors = remote.embed(TEXTS)
        single = remote.embed([TEXTS[7]])
    bodies = recording.bodies("/api/embed")
    assert [body["input"] for body in bodies[:3]] == [TEXTS[0:4], TEXTS[4:8], TEXTS[8:10]]
    assert len(bodies) == 4
    for body in bodies:
        assert body["model"] == ALIAS
        assert body["truncate"] is False
        assert body["options"] == {"num_ctx": 2048}
        assert body["keep_alive"] == "5m"
    # Batching does not change a vector: the same text alone gives the same one.
    assert float(vectors[7] @ single[0]) > 0.9999
    assert remote.embed([]).shape == (0, DIMENSIONS)


def test_an_over_long_input_is_rejected_with_what_to_change(worker):
    """truncate: false turns a text over the model's context into a BackendRejected naming
    embedder.num_ctx and corpus.chunk_size_chars, never a silently cut vector."""
    long_text = " ".join(f"word{n}" for n in range(1200))
    with embedder_for(worker.url) as remote, pytest.raises(BackendRejected) as e:
        remote.embed(["fits", long_text])
    message = str(e.value)
    assert "input length exceeds the context length" in message
    assert "embedder.num_ctx" in message
    assert "corpus.chunk_size_chars" in message
    assert f"{len(long_text)} characters" in message
    assert e.value.retryable is False


def test_vectors_of_another_size_mean_the_model_changed(worker):
    """An answer whose vectors do not have the fingerprint's size is a non-retryable
    ModelChanged (the worker is asked for 128-dimension vectors behind the embedder's back)."""
    recording = Recording(rewrite={"dimensions": 128})
    with embedder_for(worker.url, transport=recording) as remote, pytest.raises(ModelChanged) as e:
        remote.embed(["hello"])
    assert "changed under us" in str(e.value)
    assert "128-dimension" in str(e.value)
    assert e.value.retryable is False


# 3. Lifecycle: loaded, unload, size, version ------------------------------------------------


def test_unload_and_loaded_round_trip(worker):
    """embed loads the model (/api/ps lists it); unload drops it; a second unload sends nothing,
    so it never loads a model just to unload it."""
    recording = Recording()
    with embedder_for(worker.url, transport=recording) as remote:
        remote.embed(["load me"])
        assert remote.loaded()
        wait_until_unloaded(remote)
        assert [b["keep_alive"] for b in recording.bodies("/api/embed")][-1] == 0
        sent = len(recording.bodies("/api/embed"))
        remote.unload()
        assert len(recording.bodies("/api/embed")) == sent
        assert not remote.loaded()


def test_model_size_comes_from_ps_when_loaded_and_tags_when_not(worker, served_model_dir):
    """model_size_bytes asks /api/ps first and falls back to /api/tags' size on disk."""
    on_disk = (served_model_dir / MODEL_FILE).stat().st_size
    recording = Recording()
    with embedder_for(worker.url, transport=recording) as remote:
        wait_until_unloaded(remote)
        recording.sent.clear()
        assert remote.model_size_bytes() == on_disk
        assert [path for path, _ in recording.sent] == ["/api/ps", "/api/tags"]
        remote.embed(["load me"])
        recording.sent.clear()
        assert remote.model_size_bytes() == on_disk  # the worker reports the file as resident
        assert [path for path, _ in recording.sent] == ["/api/ps"]
    with embedder_for(worker.url, "nomic-embed-text") as absent:
        assert absent.model_size_bytes() is None


def test_version_is_the_servers(worker):
    """version() returns /api/version's value."""
    expected = httpx.get(f"{worker.url}/api/version", timeout=5).json()["version"]
    with embedder_for(worker.url) as remote:
        assert remote.version() == expected


# 4. Unreachable, slow and failing servers -------------------------------------------------------


def test_a_server_that_is_down_is_backend_unavailable():
    """Connection refused is BackendUnavailable, from every method."""
    with embedder_for(f"http://127.0.0.1:{free_port()}") as remote:
        for call in (remote.connect, remote.version, remote.loaded, lambda: remote.embed(["x"])):
            with pytest.raises(BackendUnavailable) as e:
                call()
            assert "cannot connect to the embedder" in str(e.value)


@contextmanager
def full_backlog() -> Iterator[str]:
    """A port whose accept queue is full: new connections are never established."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = [socket.socket() for _ in range(3)]
        try:
            for filler in fillers:
                filler.setblocking(False)
                with suppress(BlockingIOError):
                    filler.connect(("127.0.0.1", port))
            time.sleep(0.2)
            yield f"http://127.0.0.1:{port}"
        finally:
            for filler in fillers:
                filler.close()


def test_a_connection_that_never_opens_misses_the_connect_deadline():
    """A server that never completes the handshake is BackendTimeout(phase="connect")."""
    deadlines = Deadlines(connect_s=0.5, first_token_s=5.0, stall_s=5.0, total_s=10.0)
    with full_backlog() as url, embedder_for(url, deadlines=deadlines) as remote:
        started = time.monotonic()
        with pytest.raises(BackendTimeout) as e:
            remote.connect()
    assert e.value.phase == "connect"
    assert time.monotonic() - started < 5


@dataclass
class Script:
    """How the scripted server answers /api/embed."""

    mode: str = "ok"  # ok | silent | trickle | status
    status: int = 500
    message: str = "boom"
    release: threading.Event = field(default_factory=threading.Event)


def _handler(script: Script) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_args: object) -> None:
            return

        def _send(self, status: int, body: dict[str, Any]) -> None:
            raw = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def do_GET(self) -> None:
            model = {"name": "scripted:latest", "model": "scripted:latest", "digest": "ab" * 32}
            self._send(200, {"models": [model]})

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            if self.path == "/api/show":
                info = {"general.architecture": "bert", "bert.embedding_length": 2}
                self._send(200, {"model_info": info, "capabilities": ["embedding"]})
            elif script.mode == "silent":
                script.release.wait(30)  # released at teardown; the client gives up long before
            elif script.mode == "status":
                self._send(script.status, {"error": script.message})
            elif script.mode == "trickle":
                raw = json.dumps({"embeddings": [[0.6, 0.8]]}).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                for byte in raw:
                    if script.release.wait(0.1):
                        return
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
            else:
                self._send(200, {"embeddings": [[3.0, 4.0]]})

    return Handler


@pytest.fixture
def scripted() -> Iterator[tuple[str, Script]]:
    script = Script()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(script))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", script
    finally:
        script.release.set()
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_normalises_what_the_server_returns(scripted):
    """A vector the server did not normalise comes back with unit length."""
    url, _script = scripted
    with embedder_for(url, "scripted") as remote:
        np.testing.assert_allclose(remote.embed(["x"]), [[0.6, 0.8]], rtol=1e-6)


def test_silence_before_the_answer_misses_the_first_token_deadline(scripted):
    """No answer within first_token_s is BackendTimeout(phase="first_token")."""
    url, script = scripted
    script.mode = "silent"
    deadlines = Deadlines(connect_s=2.0, first_token_s=0.5, stall_s=5.0, total_s=10.0)
    with embedder_for(url, "scripted", deadlines=deadlines) as remote:
        remote.connect()
        started = time.monotonic()
        with pytest.raises(BackendTimeout) as e:
            remote.embed(["x"])
    assert e.value.phase == "first_token"
    assert time.monotonic() - started < 5


def test_a_trickling_answer_misses_the_total_deadline(scripted):
    """An answer that keeps coming a byte at a time is cut at total_s: phase "total"."""
    url, script = scripted
    script.mode = "trickle"
    deadlines = Deadlines(connect_s=2.0, first_token_s=5.0, stall_s=5.0, total_s=1.0)
    with embedder_for(url, "scripted", deadlines=deadlines) as remote:
        remote.connect()
        started = time.monotonic()
        with pytest.raises(BackendTimeout) as e:
            remote.embed(["x"])
    assert e.value.phase == "total"
    assert time.monotonic() - started < 5


def test_the_callers_deadline_cuts_the_call_short(scripted):
    """An `until` earlier than total_s ends the call with phase "request"."""
    url, script = scripted
    script.mode = "silent"
    with embedder_for(url, "scripted") as remote:
        remote.connect()
        with pytest.raises(BackendTimeout) as e:
            remote.embed(["x"], until=time.monotonic() + 0.5)
    assert e.value.phase == "request"


@pytest.mark.parametrize(
    ("status", "message", "error", "retryable"),
    [
        (503, "server busy, please try again.", BackendUnavailable, None),
        (429, "too many requests", BackendUnavailable, None),
        (500, "llama runner process has terminated", BackendError, True),
        (
            500,
            "model requires more system memory (5.1 GiB) than is available",
            BackendOutOfMemory,
            False,
        ),
        (404, 'model "scripted" not found, try pulling it first', BackendRejected, False),
    ],
)
def test_error_statuses_are_classified_for_the_retry_policy(
    scripted, status, message, error, retryable
):
    """Busy is BackendUnavailable, 5xx a retryable BackendError, out of memory and 4xx are not
    retryable; the server's message is kept."""
    url, script = scripted
    script.mode, script.status, script.message = "status", status, message
    with embedder_for(url, "scripted") as remote, pytest.raises(error) as e:
        remote.embed(["x"])
    assert type(e.value) is error
    assert message in str(e.value)
    if retryable is not None:
        assert e.value.retryable is retryable


# 5. End to end: switching a corpus from the in-process model to Ollama ----------------------


def test_switching_to_the_ollama_embedder_re_embeds_once_and_search_works(
    tmp_path, worker, model_dir
):
    """1. sync with the default ONNX model; 2. sync with embedder.backend=ollama: another
    digest, so every chunk is embedded again; 3. sync again: nothing to embed; 4. search
    through the Ollama embedder finds the right document."""
    corpus = write_corpus(tmp_path / "notes")
    args = ["--corpus", str(corpus), "--data-dir", str(tmp_path / "data")]
    ollama = {
        "RAGVISOR_EMBEDDER__BACKEND": "ollama",
        "RAGVISOR_EMBEDDER__URL": worker.url,
        "RAGVISOR_EMBEDDER__MODEL": ALIAS,
    }

    first = run_cli(["sync", *args, "--json"], model_dir)
    assert first.returncode == 0, first.stderr
    onnx_report = json.loads(first.stdout)
    chunks = onnx_report["chunks"]["new"]
    assert onnx_report["embeddings_computed"] == chunks > 0

    second = run_cli(["sync", *args, "--json"], model_dir, **ollama)
    assert second.returncode == 0, second.stderr
    switched = json.loads(second.stdout)
    assert switched["fingerprint"] != onnx_report["fingerprint"]
    assert switched["embeddings_computed"] == chunks
    assert switched["documents"]["changed"] == onnx_report["documents"]["new"]
    assert switched["changed_because"] == {"model": onnx_report["documents"]["new"]}

    third = run_cli(["sync", *args, "--json"], model_dir, **ollama)
    assert third.returncode == 0, third.stderr
    again = json.loads(third.stdout)
    assert again["embeddings_computed"] == 0
    assert again["fingerprint"] == switched["fingerprint"]

    found = run_cli(["search", *args, "--json", "-k", "1", "swappiness"], model_dir, **ollama)
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout)["results"][0]["path"] == "ops/swap.md"
