"""Our worker, held against the original (issue 13, item 4): the same requests to `ragvisor
worker` and to a real Ollama 0.17.4, compared by shape, never by generated text.

Each case of CASES is sent to both servers, after the same preparatory calls (which put both in
the same state: a model loaded, or none). `differences` then compares the two answers: the
status code, the media type and, for JSON, the keys — recursively, into nested objects and the
first item of lists — and the type of every value (int, float, str, bool, list, object, null).
A streamed answer is compared at its first line, a middle one and its final `done` line.

A difference is either fixed in the worker or listed in DELIBERATE with the reason the worker
differs on purpose; docs/worker.md lists the same ("Where the worker differs from Ollama, on
purpose"). An entry no case produces any more fails `test_every_deliberate_difference_occurs`,
so the list cannot outlive what it excuses.

Both servers run the same Gemma 3 270M GGUF. Ollama's embedder is MiniLM converted to GGUF, the
worker's is the ONNX original. Ollama runs with inventory/prod's environment
(OLLAMA_KEEP_ALIVE=0, OLLAMA_MAX_LOADED_MODELS=1), so requests name `keep_alive` wherever a
model should stay loaded for the next case.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

import httpx
import pytest

from tests.integration.worker_fixtures import (
    gguf_path,
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
KEEP = "5m"  # keeps a model for the next case on both servers (Ollama's default here is 0)
SHORT = {"num_predict": 8, "temperature": 0, "seed": 7}
COUNTING = "Count to fifty: 1, 2, 3, 4, 5,"  # never ends by itself: every stream has pieces
QUESTION = [{"role": "user", "content": COUNTING}]
LONG_PROMPT = "The history of the river valley is long. " * 60 + "Summarise it:"  # ~550 tokens
SMALL_CONTEXT = {"num_ctx": 256, "num_predict": 8, "temperature": 0}
# Over MiniLM's context in both: 512 tokens in Ollama's GGUF, 256 in the worker's ONNX model.
LONG_EMBED_INPUT = "token " * 700
TIMEOUT_S = 300.0  # a model load on a busy two-core box, with room to spare
UNLOAD_WAIT_S = 20.0
MEDIA_JSON = "application/json"
MEDIA_NDJSON = "application/x-ndjson"


@dataclass(frozen=True)
class Call:
    """One HTTP request: a JSON body, or raw bytes for a body that is not valid JSON."""

    method: str
    path: str
    body: Any = None
    content: bytes | None = None

    def send(self, http: httpx.Client) -> httpx.Response:
        if self.content is not None:
            return http.request(self.method, self.path, content=self.content)
        if self.body is None:
            return http.request(self.method, self.path)
        return http.request(self.method, self.path, json=self.body)


def get(path: str) -> Call:
    return Call("GET", path)


def post(path: str, **body: Any) -> Call:
    return Call("POST", path, body=body)


def raw(path: str, content: bytes) -> Call:
    return Call("POST", path, content=content)


@dataclass(frozen=True)
class Case:
    """A request sent to both servers, after `before` (each must answer 200) and once
    `/api/ps` lists none of the models in `gone`: Ollama unloads in the background after
    keep_alive 0, listing the model until it is out of memory."""

    id: str
    call: Call
    before: tuple[Call, ...] = ()
    gone: tuple[str, ...] = ()


PRELOAD_GEN = post("/api/generate", model=GEN, keep_alive=KEEP)
UNLOAD_GEN = post("/api/generate", model=GEN, keep_alive=0)
PRELOAD_EMB = post("/api/embed", model=EMB, input=[], keep_alive=KEEP)
UNLOAD_EMB = post("/api/embed", model=EMB, input=[], keep_alive=0)
PATHS = ("/api/chat", "/api/generate", "/api/embed", "/api/show")
VALID_BODY = {
    "/api/chat": {"model": GEN, "messages": QUESTION},
    "/api/generate": {"model": GEN, "prompt": COUNTING},
    "/api/embed": {"model": EMB, "input": "hello"},
    "/api/show": {"model": GEN},
}


def _name(path: str) -> str:
    return path.rsplit("/", 1)[-1]


def _without_model(path: str) -> dict[str, Any]:
    return {k: v for k, v in VALID_BODY[path].items() if k != "model"}


CASES: tuple[Case, ...] = (
    # 1. What the server has and holds.
    Case("version", get("/api/version")),
    Case("root", get("/")),
    Case("tags", get("/api/tags")),
    Case("show-generator", post("/api/show", model=GEN)),
    Case("show-embedder", post("/api/show", model=EMB)),
    Case("ps-empty", get("/api/ps"), before=(UNLOAD_GEN, UNLOAD_EMB), gone=(GEN, EMB)),
    Case("ps-loaded", get("/api/ps"), before=(PRELOAD_GEN,)),
    # 2. Generation, streamed and not; the empty request's load and unload forms.
    Case(
        "chat",
        post(
            "/api/chat", model=GEN, messages=QUESTION, stream=False, options=SHORT, keep_alive=KEEP
        ),
    ),
    Case(
        "chat-stream",
        post(
            "/api/chat", model=GEN, messages=QUESTION, stream=True, options=SHORT, keep_alive=KEEP
        ),
    ),
    Case(
        "generate",
        post(
            "/api/generate",
            model=GEN,
            prompt=COUNTING,
            stream=False,
            options=SHORT,
            keep_alive=KEEP,
        ),
    ),
    Case(
        "generate-stream",
        post("/api/generate", model=GEN, prompt=COUNTING, options=SHORT, keep_alive=KEEP),
    ),
    Case("generate-preload", PRELOAD_GEN, before=(UNLOAD_GEN,), gone=(GEN,)),
    Case("generate-unload", UNLOAD_GEN, before=(PRELOAD_GEN,)),
    Case(
        "chat-preload",
        post("/api/chat", model=GEN, messages=[], keep_alive=KEEP),
        before=(UNLOAD_GEN,),
        gone=(GEN,),
    ),
    Case(
        "chat-unload",
        post("/api/chat", model=GEN, messages=[], keep_alive=0),
        before=(PRELOAD_GEN,),
    ),
    # 3. A prompt longer than num_ctx: both cut it and answer.
    Case(
        "generate-over-long",
        post(
            "/api/generate",
            model=GEN,
            prompt=LONG_PROMPT,
            stream=False,
            options=SMALL_CONTEXT,
            keep_alive=KEEP,
        ),
    ),
    Case(
        "chat-over-long",
        post(
            "/api/chat",
            model=GEN,
            messages=[{"role": "user", "content": LONG_PROMPT}],
            stream=False,
            options=SMALL_CONTEXT,
            keep_alive=KEEP,
        ),
    ),
    Case(
        "chat-message-without-role",
        post(
            "/api/chat",
            model=GEN,
            messages=[{"content": COUNTING}],
            stream=False,
            options=SHORT,
            keep_alive=KEEP,
        ),
    ),
    # 4. Embeddings: one input, a batch, the load and unload forms, an over-long input.
    Case("embed-single", post("/api/embed", model=EMB, input="The cat sat.", keep_alive=KEEP)),
    Case(
        "embed-batch",
        post("/api/embed", model=EMB, input=["alpha", "beta decay", "gamma"], keep_alive=KEEP),
    ),
    Case("embed-preload", PRELOAD_EMB, before=(UNLOAD_EMB,), gone=(EMB,)),
    Case("embed-unload", UNLOAD_EMB, before=(PRELOAD_EMB,)),
    Case("embed-over-long", post("/api/embed", model=EMB, input=LONG_EMBED_INPUT, keep_alive=KEEP)),
    Case(
        "embed-over-long-refused",
        post("/api/embed", model=EMB, input=LONG_EMBED_INPUT, truncate=False, keep_alive=KEEP),
    ),
    # 5. Requests that fail: unknown models, bad bodies, missing fields, the wrong model kind.
    *(
        Case(f"unknown-model-{_name(p)}", post(p, **{**VALID_BODY[p], "model": "nope"}))
        for p in PATHS
    ),
    *(Case(f"malformed-json-{_name(p)}", raw(p, b'{"model": "x", "input": ')) for p in PATHS),
    *(Case(f"empty-body-{_name(p)}", raw(p, b"")) for p in PATHS),
    *(Case(f"missing-model-{_name(p)}", post(p, **_without_model(p))) for p in PATHS),
    Case("body-not-an-object", raw("/api/chat", b"[1, 2]")),
    Case("model-not-a-string", post("/api/generate", model=5, prompt="hi")),
    Case("messages-not-a-list", post("/api/chat", model=GEN, messages="hi")),
    Case("input-not-text", post("/api/embed", model=EMB, input=5)),
    Case("input-item-not-text", post("/api/embed", model=EMB, input=[1])),
    Case("keep-alive-bool", post("/api/generate", model=GEN, keep_alive=True)),
    Case("keep-alive-bad-duration", post("/api/generate", model=GEN, keep_alive="soon")),
    Case(
        "option-wrong-type",
        post("/api/generate", model=GEN, prompt="hi", options={"num_ctx": "big"}),
    ),
    Case("chat-with-embedder", post("/api/chat", model=EMB, messages=QUESTION)),
    Case("generate-with-embedder", post("/api/generate", model=EMB, prompt="hi")),
    Case("embed-with-generator", post("/api/embed", model=GEN, input="hi")),
    Case("route-unknown", get("/api/nothing-here")),
    Case("route-wrong-method", get("/api/chat")),
)

_GGUF_ARRAYS = (
    "Ollama lists the GGUF's array keys (vocabulary, scores, token types, tags) with their values "
    "left out (null) unless `verbose`; llama.cpp's metadata, which the worker reads, has no "
    "arrays, and a null tells a client nothing"
)
_CLIENT_FAULT = (
    "the request, not the server, is at fault: a 5xx makes the daemon's Ollama client retry a "
    "request that cannot succeed and count it against the backend (ragvisor/ollama/wire.py)"
)

# (case id glob, difference glob) -> why the worker differs on purpose. Differences read
# "<path>: <what>" (see `differences`); docs/worker.md lists the same.
DELIBERATE: dict[tuple[str, str], str] = {
    ("show-generator", "tensors: only in ollama"): (
        "the worker manages no model files; listing the GGUF's 236 tensors means walking its "
        "whole header, 262k-token vocabulary included, for a field no ragvisor client reads"
    ),
    ("show-generator", "model_info/general.tags: only in ollama"): _GGUF_ARRAYS,
    ("show-generator", "model_info/tokenizer.ggml.tokens: only in ollama"): _GGUF_ARRAYS,
    ("show-generator", "model_info/tokenizer.ggml.scores: only in ollama"): _GGUF_ARRAYS,
    ("show-generator", "model_info/tokenizer.ggml.token_type: only in ollama"): _GGUF_ARRAYS,
    ("show-embedder", "tensors: only in ollama"): (
        "the worker's embedder is the ONNX model, not a GGUF: it has no GGUF tensors to list"
    ),
    ("show-embedder", "model_info/*: only in ollama"): (
        "the ONNX embedder has no GGUF metadata: the worker gives the keys a client needs "
        "(architecture, embedding_length, context_length, pooling_type, parameter_count); the "
        "rest of Ollama's converted GGUF (attention.*, tokenizer.ggml.*, file_type) has no source"
    ),
    ("generate*", "*context: empty in worker"): (
        "`context` (deprecated) is the token history a client may send back to continue; the "
        "worker keeps none, so it answers an empty list and nothing is fed back unnoticed"
    ),
    ("missing-model-generate", "status: ollama 404, worker 400"): (
        "Ollama's generate reports a missing model as a model named '' that is not found "
        "(server/routes.go keeps it 'until we can change it'); the worker says `model is "
        "required`, as Ollama's chat and show do"
    ),
    ("missing-model-embed", "status: ollama 500, worker 400"): _CLIENT_FAULT,
    ("embed-with-generator", "status: ollama 501, worker 400"): _CLIENT_FAULT,
    ("option-wrong-type", "status: ollama 500, worker 400"): _CLIENT_FAULT,
    ("route-*", "content-type: ollama text/plain, worker application/json"): (
        'every error of the worker is Ollama\'s `{"error": ...}` object, routing errors too; '
        "Ollama's router answers them in plain text. Clients go by the status, which is the same"
    ),
}

_RAN: set[str] = set()
_EXCUSED: set[tuple[str, str]] = set()


# --- comparing shapes ------------------------------------------------------------------------


def type_name(value: Any) -> str:
    """A JSON value's type: null, bool, int, float, str, list or object."""
    if value is None:
        return "null"
    if isinstance(value, bool):  # before int: bool is an int in Python
        return "bool"
    return {int: "int", float: "float", str: "str", list: "list", dict: "object"}[type(value)]


def shape_differences(ollama: Any, worker: Any, path: str = "") -> list[str]:
    """Where two JSON values differ in shape, as "<path>: <what>": keys only on one side,
    values of different types, a list empty on one side only. Objects are compared key by
    key, lists by their first items; the path joins keys with "/" and marks a list item "[]"."""
    here = path or "(top)"
    ollama_type, worker_type = type_name(ollama), type_name(worker)
    if ollama_type != worker_type:
        return [f"{here}: ollama {ollama_type}, worker {worker_type}"]
    prefix = f"{path}/" if path else ""
    found: list[str] = []
    if isinstance(ollama, dict):
        found += [f"{prefix}{key}: only in ollama" for key in ollama if key not in worker]
        found += [f"{prefix}{key}: only in worker" for key in worker if key not in ollama]
        for key in ollama.keys() & worker.keys():
            found += shape_differences(ollama[key], worker[key], f"{prefix}{key}")
    elif isinstance(ollama, list):
        if ollama and worker:
            found += shape_differences(ollama[0], worker[0], f"{path}[]")
        elif ollama or worker:
            found.append(f"{here}: empty in {'worker' if ollama else 'ollama'}")
    return sorted(found)


def media_type(response: httpx.Response) -> str:
    """The Content-Type without parameters: Go adds `; charset=utf-8` to JSON, Starlette not."""
    return response.headers.get("content-type", "").split(";")[0].strip()


def stream_samples(response: httpx.Response) -> dict[str, Any]:
    """An NDJSON stream's first line, a middle one and its final (`done`) line."""
    lines = [json.loads(line) for line in response.text.splitlines() if line.strip()]
    assert lines, "an empty stream"
    assert lines[-1].get("done") is True, f"the stream does not end with done: {lines[-1]}"
    pieces = lines[:-1] or [{}]
    return {"first": lines[0], "middle": pieces[len(pieces) // 2], "final": lines[-1]}


def differences(ollama: httpx.Response, worker: httpx.Response) -> list[str]:
    """Status, media type and body shape of two answers to one request (see the module doc)."""
    found = []
    if ollama.status_code != worker.status_code:
        found.append(f"status: ollama {ollama.status_code}, worker {worker.status_code}")
    kind = media_type(ollama)
    if kind != media_type(worker):
        return [*found, f"content-type: ollama {kind}, worker {media_type(worker)}"]
    if kind == MEDIA_NDJSON:
        return found + shape_differences(stream_samples(ollama), stream_samples(worker))
    if kind == MEDIA_JSON:
        return found + shape_differences(ollama.json(), worker.json())
    if ollama.text != worker.text:  # plain text: fixed messages such as "Ollama is running"
        found.append(f"text: ollama {ollama.text!r}, worker {worker.text!r}")
    return found


def deliberate(case_id: str, difference: str) -> tuple[str, str] | None:
    """The DELIBERATE entry that excuses `difference` in case `case_id`, if any."""
    for key in DELIBERATE:
        case_glob, difference_glob = key
        if fnmatchcase(case_id, case_glob) and fnmatchcase(difference, difference_glob):
            return key
    return None


# --- the servers -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def servers(ollama_server, worker_url) -> Iterator[dict[str, httpx.Client]]:
    """A client for each server; both models are unloaded from both when the module ends."""
    with (
        httpx.Client(base_url=ollama_server.url, timeout=TIMEOUT_S) as ollama,
        httpx.Client(base_url=worker_url, timeout=TIMEOUT_S) as worker,
    ):
        clients = {"ollama": ollama, "worker": worker}
        yield clients
        for client in clients.values():
            for call in (UNLOAD_GEN, UNLOAD_EMB):
                call.send(client)


def loaded(http: httpx.Client) -> set[str]:
    """The models `/api/ps` lists, by name without the tag."""
    return {m["name"].split(":")[0] for m in http.get("/api/ps").json()["models"]}


def prepare(http: httpx.Client, case: Case) -> None:
    """Run the case's preparatory calls, then wait (bounded) until its `gone` models are."""
    for call in case.before:
        response = call.send(http)
        assert response.status_code == 200, f"{call}: {response.status_code} {response.text}"
    deadline = time.monotonic() + UNLOAD_WAIT_S
    while still := loaded(http) & set(case.gone):
        assert time.monotonic() < deadline, f"{http.base_url} keeps {still} loaded"
        time.sleep(0.1)


def excerpt(response: httpx.Response) -> str:
    text = response.text
    return text if len(text) <= 600 else f"{text[:300]} … {text[-300:]}"


# --- the tests -------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_worker_answers_in_ollamas_shape(servers, case):
    """The worker's answer has Ollama's status, keys and value types, or differs on purpose."""
    # 1. Both servers in the same state (a model loaded or not), then the same request to each.
    answers = {}
    for name, http in servers.items():
        prepare(http, case)
        answers[name] = case.call.send(http)
    # 2. Every difference in shape is excused by DELIBERATE, or the case fails naming it.
    found = differences(answers["ollama"], answers["worker"])
    unexplained = []
    for difference in found:
        key = deliberate(case.id, difference)
        if key is None:
            unexplained.append(difference)
        else:
            _EXCUSED.add(key)
    _RAN.add(case.id)
    assert not unexplained, (
        f"{case.id}: the worker differs from Ollama in\n  "
        + "\n  ".join(unexplained)
        + f"\nollama: {excerpt(answers['ollama'])}\nworker: {excerpt(answers['worker'])}"
    )


def test_every_deliberate_difference_occurs():
    """Each DELIBERATE entry still excuses a difference some case finds (none is stale)."""
    missing = [case.id for case in CASES if case.id not in _RAN]
    if missing:
        pytest.skip(f"{len(missing)} of {len(CASES)} cases were skipped or deselected")
    stale = [key for key in DELIBERATE if key not in _EXCUSED]
    assert not stale, f"no longer different (remove from DELIBERATE and docs/worker.md): {stale}"


def test_shape_comparison_sees_keys_types_and_list_items():
    """The comparison reports missing keys, type changes (int vs float, bool vs int) and the
    first list item's shape, and nothing for equal shapes with other values."""
    ollama = {"a": 1, "b": {"c": [{"d": 1.5}]}, "e": True, "f": [], "g": None}
    other_values = {"a": 2, "b": {"c": [{"d": 0.1}]}, "e": False, "f": [], "g": None}
    assert shape_differences(ollama, other_values) == []
    worker = {"a": 1.0, "b": {"c": [{"x": 1}]}, "e": 1, "f": [3], "h": "new"}
    assert shape_differences(ollama, worker) == [
        "a: ollama int, worker float",
        "b/c[]/d: only in ollama",
        "b/c[]/x: only in worker",
        "e: ollama bool, worker int",
        "f: empty in ollama",
        "g: only in ollama",
        "h: only in worker",
    ]
