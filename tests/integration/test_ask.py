"""`POST /ask` over real HTTP: the daemon, a real generator, the real store and model.

The generator is the daemon's embedded llama.cpp worker (over SQLite, then the real Neo4j) and a
real Ollama built from source (over SQLite): the `stack` fixture.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import httpx
import psutil
import pytest

from tests.integration.conftest import Daemon, run_cli, stop_daemon, store_env_for, synced_daemon
from tests.integration.corpus import write_corpus
from tests.integration.generators import Generator, generator_for

QUESTION = "what should vm.swappiness be on a small droplet?"


# (store, generator): the worker over both stores, real Ollama over SQLite (the store makes no
# difference to the generator, and each combination costs a daemon and a model load).
STACKS = [("sqlite", "worker"), ("neo4j", "worker"), ("sqlite", "ollama")]


@pytest.fixture(scope="module", params=STACKS, ids=["-".join(stack) for stack in STACKS])
def stack(request, tmp_path_factory):
    """The store's environment and the generator, for this module's daemons."""
    store, kind = request.param
    with generator_for(kind, request, tmp_path_factory.mktemp("ollama")) as generator:
        yield store_env_for(store, request), generator


@pytest.fixture(scope="module")
def ask_generator(stack) -> Generator:
    return stack[1]


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, model_dir, stack):
    """Short answers (24 tokens) keep the module fast; the model is the real one."""
    store_env, generator = stack
    d = synced_daemon(
        tmp_path_factory.mktemp("ask"),
        model_dir,
        store_env=store_env,
        RAGVISOR_GENERATOR__NUM_PREDICT="24",
        RAGVISOR_ASK__DEFAULT_K="2",
        **generator.daemon_env(),
    )
    yield d
    stop_daemon(d)


@pytest.fixture(scope="module")
def long_daemon(tmp_path_factory, model_dir, generator):
    """Answers up to 1500 tokens and no stop at a new turn: generation that lasts seconds."""
    d = synced_daemon(
        tmp_path_factory.mktemp("ask-long"),
        model_dir,
        RAGVISOR_GENERATOR__NUM_PREDICT="1500",
        RAGVISOR_GENERATOR__TEMPERATURE="1.0",
        RAGVISOR_ASK__DEFAULT_K="1",
        **generator.daemon_env(),
    )
    yield d, generator
    stop_daemon(d)


def stream_events(url: str, body: dict) -> list[dict]:
    with httpx.stream("POST", f"{url}/ask", json={**body, "stream": True}, timeout=120) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("application/x-ndjson")
        return [json.loads(line) for line in r.iter_lines() if line.strip()]


def first_delta(url: str, question: str) -> str:
    """Stream an answer until its first piece of text, then leave (cancelling the rest)."""
    with httpx.stream(
        "POST", f"{url}/ask", json={"question": question, "stream": True}, timeout=180
    ) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            event = json.loads(line)
            assert event["type"] != "error", event
            if event["type"] == "delta":
                return str(event["text"])
    return ""


def worker_pid(daemon: Daemon) -> int:
    ready = httpx.get(f"{daemon.url}/readyz", timeout=10).json()
    return int(ready["checks"]["generator"]["worker"]["pid"])


def wait_for_log(daemon: Daemon, needle: str, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if needle in daemon.logs():
            return True
        time.sleep(0.1)
    return False


def goes_idle(pid: int, timeout: float = 20.0, window_s: float = 0.5) -> bool:
    """Whether process `pid` stops using the CPU (under 10 % of a core over `window_s`) within
    `timeout`: how a generation that was cancelled shows from outside, when the backend logs
    nothing about it (Ollama's runner)."""
    process = psutil.Process(pid)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = sum(process.cpu_times()[:2])
        time.sleep(window_s)
        if sum(process.cpu_times()[:2]) - before < 0.1 * window_s:
            return True
    return False


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_ask_answers_citing_the_chunks_search_retrieves(daemon, ask_generator):
    """The citations are the retrieved chunks — what `/search?group=chunk` returns — in rank
    order, with path, title and chunk id."""
    response = httpx.post(f"{daemon.url}/ask", json={"question": QUESTION, "k": 3}, timeout=120)
    assert response.status_code == 200, response.text
    body = response.json()
    search = httpx.get(
        f"{daemon.url}/search", params={"q": QUESTION, "k": 3, "group": "chunk"}
    ).json()
    assert [c["chunk_id"] for c in body["citations"]] == [
        hit["chunk_id"] for hit in search["results"]
    ]
    top = body["citations"][0]
    assert (top["n"], top["path"], top["title"]) == (1, "ops/swap.md", "Swap on a small droplet")
    assert isinstance(body["answer"], str)
    assert body["answer"]
    assert body["question"] == QUESTION
    assert body["done_reason"] in {"stop", "length"}
    tokens = body["tokens"]
    assert 0 < tokens["completion"] <= 24
    assert tokens["prompt"] > 0
    # The worker counts with the model's tokenizer (or its counts stored at sync, once the
    # token-count job has run: test_token_counts.py); Ollama has no token counter (an estimate).
    assert tokens["counted_with"] in (
        {"tokenizer", "stored"} if ask_generator.kind == "worker" else {"estimate"}
    )
    assert tokens["per_second"] > 0
    assert set(body["timings_ms"]) >= {
        "embed", "retrieve", "pack", "first_token", "prompt_eval", "generation", "total",
    }  # fmt: skip


def test_ask_takes_json_sent_the_way_curl_d_sends_it(daemon):
    """`curl -X POST …/ask -d '{"question": …}'` labels the body as a form; it is still JSON."""
    response = httpx.post(
        f"{daemon.url}/ask",
        content=json.dumps({"question": QUESTION, "k": 1}).encode(),
        headers={"content-type": "application/x-www-form-urlencoded"},
        timeout=120,
    )
    assert response.status_code == 200, response.text
    assert response.json()["citations"][0]["path"] == "ops/swap.md"


def test_ask_streams_citations_then_deltas_then_done(daemon):
    """A streamed /ask sends the citations first, then text deltas, then one done event."""
    events = stream_events(daemon.url, {"question": QUESTION, "k": 2})
    kinds = [e["type"] for e in events]
    assert kinds[0] == "citations"
    assert kinds[-1] == "done"
    assert set(kinds[1:-1]) == {"delta"}
    assert len(events[0]["citations"]) == 2
    assert "cited" not in events[0]["citations"][0]  # unknown before the answer exists
    done = events[-1]
    assert "".join(e["text"] for e in events if e["type"] == "delta").strip() == done["answer"]
    assert [c["chunk_id"] for c in done["citations"]] == [
        c["chunk_id"] for c in events[0]["citations"]
    ]
    assert all(isinstance(c["cited"], bool) for c in done["citations"])


def test_the_request_log_carries_the_generator_phases(daemon):
    """The http.request line of an /ask carries its request id and the generator's phase timings."""
    httpx.post(
        f"{daemon.url}/ask",
        json={"question": QUESTION},
        headers={"X-Request-ID": "ask-1"},
        timeout=120,
    )
    assert wait_for_log(daemon, '"request_id": "ask-1"')
    line = next(
        json.loads(line)
        for line in daemon.logs().splitlines()
        if '"request_id": "ask-1"' in line and "http.request" in line
    )
    assert line["path"] == "/ask"
    assert line["status"] == 200
    for key in ("prompt_eval_ms", "generation_ms", "first_token_ms", "load_ms"):
        assert line[key] >= 0
    assert line["tokens_per_s"] > 0
    assert line["eval_count"] > 0
    assert line["passages"] >= 1


def test_readiness_includes_the_generator(daemon, ask_generator):
    """/readyz checks the generator: the backend answering (the worker running) and the model
    it serves."""
    ready = httpx.get(f"{daemon.url}/readyz", timeout=30).json()
    generator = ready["checks"]["generator"]
    assert ready["ready"] is True
    assert generator["ok"] is True
    if ask_generator.kind == "worker":
        assert generator["worker"]["state"] == "running"
    assert generator["model"] == "gemma3-270m"


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({}, 400, "question must not be empty"),
        ({"question": ""}, 400, "question must not be empty"),
        ({"question": "   \n"}, 400, "question must not be empty"),
        ({"question": "x" * 1001}, 400, "the limit is 1000"),
        ({"question": "swap\x00"}, 400, "NUL"),
        ({"question": "swap", "k": 0}, 400, "k must be between 1 and 20"),
        ({"question": "swap", "k": 21}, 400, "k must be between 1 and 20"),
        ({"question": "swap", "k": "ten"}, 422, "k"),
        ({"question": 5}, 422, "question"),
        ({"question": "swap", "stream": "maybe"}, 422, "stream"),
        ({"question": "swap", "colour": "red"}, 422, "colour"),
        ([1, 2], 422, "request"),
    ],
)
def test_bad_questions_get_a_clear_4xx(daemon, body, status, needle):
    """A missing, empty, too long or badly typed question is a 4xx with a message and a code."""
    response = httpx.post(f"{daemon.url}/ask", json=body, timeout=30)
    assert response.status_code == status
    error = response.json()
    assert needle in error["error"]
    assert error["code"]


@pytest.mark.parametrize("raw", [b"not json", b'{"question": "unterminated', b"\xff\xfe"])
def test_a_body_that_is_not_json_gets_422(daemon, raw):
    """A body that is not JSON is a 422 saying so, never a 500."""
    response = httpx.post(
        f"{daemon.url}/ask", content=raw, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["code"] == "invalid_request"
    assert "not valid JSON" in response.json()["error"]


def test_an_empty_body_asks_for_a_question(daemon):
    """An empty body is a 400 that asks for a question."""
    response = httpx.post(f"{daemon.url}/ask", content=b"")
    assert response.status_code == 400
    assert response.json()["error"] == "question must not be empty"


def test_packing_under_a_small_context_sends_only_what_fits(tmp_path, model_dir):
    """num_ctx 512, num_predict 32: the prompt gets at most 432 tokens, so fewer passages go in
    than were retrieved, and the backend evaluates the prompt without cutting it."""
    paragraph = (
        "Swap on a small droplet keeps the box alive when memory runs short; bread dough "
        "rises overnight in a cool kitchen and bakes in a hot dutch oven. "
    )
    d = synced_daemon(
        tmp_path,
        model_dir,
        extra_files={
            f"swap-bread-{i}.md": f"# Swap and bread {i}\n\n{paragraph * 5}" for i in range(12)
        },
        RAGVISOR_GENERATOR__NUM_CTX="512",
        RAGVISOR_GENERATOR__NUM_PREDICT="32",
    )
    try:
        events = stream_events(d.url, {"question": "how do I bake bread and set up swap?", "k": 20})
    finally:
        stop_daemon(d)
    first, done = events[0], events[-1]
    assert done["type"] == "done", events[-1]
    tokens = done["tokens"]
    assert first["dropped"] > 0
    assert 1 <= len(first["citations"]) < 20
    assert tokens["prompt_budget"] == 512 - 32 - 48
    assert tokens["prompt_planned"] <= tokens["prompt_budget"]
    # The worker counts the rendered chat, template included: within the margin, and not cut
    # (a cut prompt reports far fewer tokens than planned; pieces counted apart may merge at
    # their joins, so the whole can be a few tokens shorter than the sum).
    assert tokens["prompt"] <= 512 - 32
    assert tokens["prompt"] >= 0.95 * tokens["prompt_planned"]


def test_a_disconnecting_client_cancels_the_generation(long_daemon):
    """A client that leaves mid-answer stops the generation in the backend — the worker logs
    `worker.cancelled`; Ollama's runner (which logs nothing then) stops using the CPU — and the
    request is logged as 499."""
    long_daemon, generator = long_daemon
    # Gemma under Ollama's own template ends its turn sooner: leave at its first words.
    leave_after = 3 if generator.server is None else 1
    with httpx.stream(
        "POST",
        f"{long_daemon.url}/ask",
        json={"question": "tell me everything about bread", "stream": True},
        headers={"X-Request-ID": "leaver"},
        timeout=60,
    ) as response:
        deltas = 0
        for line in response.iter_lines():
            if '"delta"' in line:
                deltas += 1
            if deltas >= leave_after:
                break  # leave mid-answer
    if generator.server is None:
        assert wait_for_log(long_daemon, "worker.cancelled"), long_daemon.logs()[-3000:]
    else:
        runner = generator.server.runner_pids()[0]
        assert goes_idle(runner), "Ollama's runner kept generating for a client that left"
    assert wait_for_log(long_daemon, '"client_gone": true')
    # The worker is free again at once: the next answer starts, not stuck behind the abandoned
    # one (its first piece is enough; this daemon's answers run to 1500 tokens).
    assert first_delta(long_daemon.url, "swap?")


def test_a_generator_killed_mid_answer_is_answered_and_replaced(long_daemon):
    """The process generating (the worker; Ollama's model runner) killed mid-answer: the
    client still gets an answer, and generation comes back — the daemon respawns its worker,
    Ollama starts a new runner on the next request."""
    long_daemon, generator = long_daemon
    pid = generator.hang_pid(long_daemon.url)
    killed = threading.Event()
    with httpx.stream(
        "POST",
        f"{long_daemon.url}/ask",
        json={"question": "tell me everything about bread", "stream": True},
        timeout=60,
    ) as response:
        events = []
        for line in response.iter_lines():
            if not line.strip():
                continue
            events.append(json.loads(line))
            if events[-1]["type"] == "delta" and not killed.is_set():
                os.kill(pid, signal.SIGKILL)
                killed.set()
    # The cut answer is never left hanging: either a retry on the respawned worker produced a
    # new answer (a `retry` event voids the text so far) or, while the worker was down, the
    # answer is the passages themselves, marked degraded with the reason.
    last = events[-1]
    assert last["type"] == "done", last
    if last.get("degraded"):
        assert last["degraded"]["answer"] == "extractive"
        assert "generator" in last["degraded"]["reason"]
    else:
        assert "retry" in [e["type"] for e in events]

    # Right after the kill the worker is down or restarting: an extractive answer saying so
    # (or, if it is already back, a normal one) — never a hang or a 5xx.
    during = httpx.post(f"{long_daemon.url}/ask", json={"question": "swap?", "k": 1}, timeout=120)
    assert during.status_code == 200, during.text
    if during.json().get("degraded"):
        assert during.json()["citations"]

    if generator.server is not None:
        assert first_delta(long_daemon.url, "swap?")  # a new runner answers
        assert gone(pid)
        assert pid not in generator.server.runner_pids()
        return
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready = httpx.get(f"{long_daemon.url}/readyz", timeout=30).json()["checks"]["generator"]
        if ready["ok"] and ready["worker"]["state"] == "running":
            break
        time.sleep(0.2)
    assert ready["worker"]["restarts"] >= 1
    assert ready["worker"]["pid"] != pid
    assert gone(pid)
    assert first_delta(long_daemon.url, "swap?")  # the new worker answers
    assert "worker.exited" in long_daemon.logs()
    assert "worker.restarted" in long_daemon.logs()


def test_no_worker_outlives_its_daemon(tmp_path, model_dir):
    """kill -9 of the daemon: the worker notices and exits by itself within seconds."""
    d = synced_daemon(tmp_path, model_dir)
    pid = worker_pid(d)
    d.process.kill()
    d.process.wait(10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not gone(pid):
        time.sleep(0.1)
    assert gone(pid), "the worker outlived its daemon"


def test_sigterm_stops_the_worker_with_the_daemon(tmp_path, model_dir):
    """SIGTERM stops the daemon cleanly and its worker with it."""
    d = synced_daemon(tmp_path, model_dir)
    pid = worker_pid(d)
    stop_daemon(d)
    assert d.process.returncode == 0
    assert gone(pid)
    assert "worker.stopped" in d.logs()


def test_ask_is_off_without_a_generator(tmp_path, model_dir):
    """With generator.backend none, /ask is a 503 naming the setting and readiness says so."""
    d = synced_daemon(tmp_path, model_dir, RAGVISOR_GENERATOR__BACKEND="none")
    try:
        response = httpx.post(f"{d.url}/ask", json={"question": QUESTION}, timeout=30)
        ready = httpx.get(f"{d.url}/readyz", timeout=30).json()
    finally:
        stop_daemon(d)
    assert response.status_code == 503
    assert "generator.backend" in response.json()["error"]
    assert "generator" not in ready["checks"]


def test_cli_ask_streams_from_a_daemon_and_in_process(daemon, tmp_path, model_dir):
    """`ragvisor ask` answers with sources over HTTP, as JSON, and in process."""
    over_http = run_cli(["ask", "--url", daemon.url, QUESTION, "-k", "2"], model_dir)
    assert over_http.returncode == 0, over_http.stderr
    assert "Sources:" in over_http.stdout
    assert "[1] ops/swap.md" in over_http.stdout

    as_json = run_cli(["ask", "--url", daemon.url, "--json", QUESTION], model_dir)
    assert as_json.returncode == 0, as_json.stderr
    body = json.loads(as_json.stdout)
    assert body["citations"][0]["path"] == "ops/swap.md"
    assert body["answer"]

    corpus = write_corpus(tmp_path / "notes")
    where = ["--corpus", str(corpus), "--data-dir", str(tmp_path / "data")]
    assert run_cli(["sync", *where], model_dir).returncode == 0
    local = run_cli(["ask", *where, QUESTION], model_dir, RAGVISOR_GENERATOR__NUM_PREDICT="16")
    assert local.returncode == 0, local.stderr
    assert "[1] ops/swap.md" in local.stdout

    bad = run_cli(["ask", "--url", daemon.url, " "], model_dir)
    assert bad.returncode == 2
    assert "question must not be empty" in bad.stderr
