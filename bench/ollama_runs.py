"""The Ollama bench's measurements: the prompts the daemon sends (recorded on the wire), time to
first token through the daemon beside Ollama alone, a frozen runner's way back to a generated
answer, and the memory of the daemon and of Ollama's process tree."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from benchlib import free_port, progress, rss_mb, running, serve_cmd, wait_ready
from ollama_recorder import recording_proxy
from ollamalib import CHAT_MODEL, Server, loaded_models, log_events, tree_rss_mb

READY_TIMEOUT_S = 180.0
ANSWER_TIMEOUT_S = 90.0  # one /ask or one chat, from request to its last line
RECOVERY_BOUND_S = 240.0  # a frozen runner that is not cleared by then counts as not recovered
STUCK_CLIENT_S = 300.0  # the other application's request waits on the frozen runner this long
PAUSE_BETWEEN_ASKS_S = 0.25  # while answers come back degraded: no tight loop
LADDER_EVENTS = (
    "ladder.started",
    "ladder.unload",
    "ladder.confirm",
    "ladder.restart",
    "ladder.restart_skipped",
    "ladder.probe",
    "ladder.finished",
)
# Words for the flush prompts: nothing to do with the docs, so no prompt prefix is shared.
_FLUSH_TEXT = (
    "harbor violet gravel orchard lantern pepper walrus canyon tulip saddle marble comet "
    "meadow biscuit falcon ribbon glacier cobalt parsley thimble anchor velvet quarry maple"
)
FLUSH_WORDS = _FLUSH_TEXT.split()


@contextlib.contextmanager
def daemon(
    env: dict[str, str], corpus: Path, data_dir: Path, log: Path
) -> Iterator[tuple[str, int]]:
    """`ragvisor serve` over the synced store with `env`; yields (URL, pid) once ready."""
    port = free_port()
    with running(serve_cmd(corpus, data_dir, port), env, log) as proc:
        wait_ready(port, proc, READY_TIMEOUT_S)
        yield f"http://127.0.0.1:{port}", proc.pid


def ask_streamed(client: httpx.Client, url: str, question: str) -> dict[str, Any]:
    """Stream `/ask`: client-side time to the first `delta` with text, and the `done` event.

    An answer that retried mid-stream or came back extractive carries `error`: its first
    token is not a first token of the model's answer to this prompt.
    """
    result: dict[str, Any] = {}
    first = None
    started = time.perf_counter()
    body = {"question": question, "stream": True}
    with client.stream("POST", f"{url}/ask", json=body, timeout=ANSWER_TIMEOUT_S) as response:
        if response.status_code != 200:
            response.read()
            return {"error": f"{response.status_code}: {response.text[:300]}"}
        for line in response.iter_lines():
            event = json.loads(line) if line.strip() else {}
            kind = event.get("type")
            if kind == "delta" and first is None and event.get("text"):
                first = time.perf_counter()
            elif kind == "retry":
                result["error"] = f"retried mid-answer: {event.get('reason')}"
            elif kind == "done":
                result["done"] = event
                if (event.get("degraded") or {}).get("answer") == "extractive":
                    result["error"] = f"extractive: {event['degraded'].get('reason')}"
            elif kind == "error":
                result["error"] = f"error event: {event}"
    if first is None:
        result.setdefault("error", "no delta event")
    result["ttft_ms"] = (first - started) * 1000 if first is not None else float("nan")
    result["total_ms"] = (time.perf_counter() - started) * 1000
    return result


def chat_streamed(client: httpx.Client, url: str, body: dict[str, Any]) -> dict[str, Any]:
    """Send Ollama a recorded `/api/chat` body as it is; time to the first content chunk."""
    result: dict[str, Any] = {}
    first = None
    started = time.perf_counter()
    with client.stream("POST", f"{url}/api/chat", json=body, timeout=ANSWER_TIMEOUT_S) as response:
        if response.status_code != 200:
            response.read()
            return {"error": f"{response.status_code}: {response.text[:300]}"}
        for line in response.iter_lines():
            data = json.loads(line) if line.strip() else {}
            if "error" in data:
                result["error"] = str(data["error"])
            elif first is None and (data.get("message") or {}).get("content"):
                first = time.perf_counter()
            if data.get("done"):
                result["final"] = {k: v for k, v in data.items() if k != "message"}
    if first is None:
        result.setdefault("error", "no content chunk")
    result["ttft_ms"] = (first - started) * 1000 if first is not None else float("nan")
    result["total_ms"] = (time.perf_counter() - started) * 1000
    return result


def flush(client: httpx.Client, url: str, body: dict[str, Any], rng: random.Random) -> None:
    """One token of unrelated raw text with the recorded options (so no reload): the runner's
    KV cache then holds no prefix of the next prompt, whichever path sends it.

    Raises httpx.HTTPStatusError when Ollama refuses it.
    """
    flush_body = {
        "model": body["model"],
        "prompt": " ".join(rng.choice(FLUSH_WORDS) for _ in range(24)),
        "raw": True,
        "stream": False,
        "options": {**(body.get("options") or {}), "num_predict": 1},
        "keep_alive": body.get("keep_alive"),
    }
    client.post(f"{url}/api/generate", json=flush_body, timeout=ANSWER_TIMEOUT_S).raise_for_status()


# -- a. the prompts, and time to first token -----------------------------------------------------


def record_prompts(
    server: Server, env: dict[str, str], corpus: Path, data_dir: Path, log: Path, questions: list
) -> tuple[dict[str, dict[str, Any]], list[dict[str, int]]]:
    """Ask each question once through a daemon whose generator is reached through the
    recorder: the `/api/chat` body it sent per question, and the calls per `/ask` by path.

    A call that was retried (a slow box misses a deadline) sent the same body again: that is
    checked, and the body kept. Raises RuntimeError when a question made no chat call, its
    calls differ, or the body does not carry the question.
    """
    prompts: dict[str, dict[str, Any]] = {}
    calls: list[dict[str, int]] = []
    with recording_proxy(server.url) as (url, recorder):
        recording_env = {**env, "RAGVISOR_GENERATOR__URL": url}
        with daemon(recording_env, corpus, data_dir, log) as (daemon_url, _), httpx.Client() as c:
            for question in dict.fromkeys(questions):
                before = len(recorder.calls())
                answer = ask_streamed(c, daemon_url, question)
                made = recorder.calls()[before:]
                calls.append(dict(Counter(call.path for call in made)))
                chats = [call.body for call in made if call.path == "/api/chat"]
                if "error" in answer:
                    progress(f"recording {question!r}: {answer['error']}; calls {calls[-1]}")
                if not chats or any(chat != chats[0] for chat in chats):
                    raise RuntimeError(
                        f"recording {question!r}: chat calls {len(chats)}, differing"
                    )
                if question not in json.dumps(chats[0]["messages"]):
                    raise RuntimeError(f"the recorded prompt does not hold {question!r}")
                prompts[question] = chats[0]
    return prompts, calls


def ttft_rounds(
    server: Server, daemon_url: str, prompts: dict[str, dict[str, Any]], count: int, label: str
) -> list[dict[str, Any]]:
    """`count` rounds, each one question both ways (daemon, Ollama alone), alternating which
    goes first (ABBA), each preceded by a cache flush; progress per round on stderr."""
    rng = random.Random(20261204)
    questions = list(prompts)
    rounds: list[dict[str, Any]] = []
    with httpx.Client() as daemon_client, httpx.Client() as direct:
        for i in range(count):
            question = questions[i % len(questions)]
            daemon_first = i % 2 == 0
            result: dict[str, Any] = {"question": question, "daemon_first": daemon_first}
            for arm in ("daemon", "ollama") if daemon_first else ("ollama", "daemon"):
                try:
                    flush(direct, server.url, prompts[question], rng)
                    if arm == "daemon":
                        result[arm] = ask_streamed(daemon_client, daemon_url, question)
                    else:
                        result[arm] = chat_streamed(direct, server.url, prompts[question])
                except (httpx.HTTPError, ValueError) as exc:
                    result[arm] = {"error": f"{type(exc).__name__}: {exc}", "ttft_ms": float("nan")}
            a, b = result["daemon"], result["ollama"]
            problems = "; ".join(
                f"{k}: {r['error']}" for k, r in (("daemon", a), ("ollama", b)) if "error" in r
            )
            progress(
                f"{label} {i + 1}/{count}: TTFT /ask {a['ttft_ms']:.0f} ms, Ollama alone "
                f"{b['ttft_ms']:.0f} ms{'; ' + problems if problems else ''}"
            )
            rounds.append(result)
    return rounds


# -- b. a frozen runner --------------------------------------------------------------------------


def _stuck_client(url: str) -> None:
    """Another application's request, stuck on the frozen runner for as long as it lasts
    (so Ollama cannot unload the model: tests/integration/test_ollama_wedge.py's wedge)."""
    body = {"model": CHAT_MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": False}
    with contextlib.suppress(httpx.HTTPError):
        httpx.post(f"{url}/api/chat", json=body, timeout=STUCK_CLIENT_S)


def _ask_once(url: str) -> dict[str, Any]:
    """One plain `/ask`: status, whether generated, latency."""
    started = time.monotonic()
    try:
        response = httpx.post(
            f"{url}/ask", json={"question": "What does /readyz check?"}, timeout=ANSWER_TIMEOUT_S
        )
    except httpx.HTTPError as exc:
        return {"status": None, "error": repr(exc), "took_s": time.monotonic() - started}
    body = (
        response.json()
        if response.headers.get("content-type", "").startswith("application/json")
        else {}
    )
    degraded = body.get("degraded") or {}
    return {
        "status": response.status_code,
        "generated": response.status_code == 200 and degraded.get("answer") != "extractive",
        "reason": degraded.get("reason"),
        "took_s": time.monotonic() - started,
    }


def _ask_until_generated(url: str, bound_s: float) -> dict[str, Any]:
    """Ask until an answer is generated (the model loaded, the runner known), bounded; the
    last outcome. On a busy box the first may miss the short deadlines."""
    deadline = time.monotonic() + bound_s
    while True:
        one = _ask_once(url)
        if one.get("generated") or time.monotonic() > deadline:
            return one
        time.sleep(1.0)


def frozen_runner(
    server: Server, env: dict[str, str], corpus: Path, data_dir: Path, log: Path
) -> dict[str, Any]:
    """Freeze the loaded runner (SIGSTOP) with another client's request stuck on it, then ask
    until an answer is generated again: seconds from the freeze to that answer, what the
    ladder did (from the daemon's log), and whether `ollama serve` was replaced."""
    with daemon(env, corpus, data_dir, log) as (url, _):
        warm = _ask_until_generated(url, RECOVERY_BOUND_S)
        if not warm.get("generated") or not server.runner_pids():
            raise RuntimeError(f"no generated answer before the freeze: {warm}")
        runner, server_pid = server.runner_pids()[0], server.pid
        frozen_wall, frozen = time.time(), time.monotonic()
        os.kill(runner, signal.SIGSTOP)
        stuck = threading.Thread(target=_stuck_client, args=(server.url,), daemon=True)
        stuck.start()
        asks: list[dict[str, Any]] = []
        recovered_s = None
        while time.monotonic() - frozen < RECOVERY_BOUND_S:
            one = _ask_once(url)
            one["ended_s"] = time.monotonic() - frozen
            asks.append(one)
            if one.get("generated"):
                recovered_s = one["ended_s"]
                break
            time.sleep(PAUSE_BETWEEN_ASKS_S)
    replaced = server.pid not in (None, server_pid)
    if not replaced:  # the ladder did not clear it: clear it here, for the next repeat
        progress("WARNING: the frozen server was not replaced by the ladder; restarting it")
        with contextlib.suppress(ProcessLookupError):
            os.kill(runner, signal.SIGCONT)
        server.restart()
    stuck.join(10)
    events = [_relative(e, frozen_wall) for e in log_events(log, *LADDER_EVENTS)]
    return {
        "recovered_s": recovered_s,
        "server_replaced": replaced,
        "asks": asks,
        "degraded_answers": sum(1 for a in asks if not a.get("generated")),
        "longest_ask_s": max(a["took_s"] for a in asks),
        "ladder": events,
    }


def _relative(event: dict[str, Any], since_wall: float) -> dict[str, Any]:
    """A log event with its time as seconds since the freeze, its bulky fields left out."""
    at = event.get("timestamp")
    kept = {
        k: v
        for k, v in event.items()
        if k in ("event", "outcome", "duration_ms", "restarted", "healthy", "reason", "error")
    }
    if isinstance(at, str):
        kept["at_s"] = dt.datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp() - since_wall
    return kept


# -- c. memory -----------------------------------------------------------------------------------


def memory(daemon_pid: int, server: Server) -> dict[str, Any]:
    """RSS of the daemon (its process tree) and of Ollama (server plus runner), in MB."""
    ollama = tree_rss_mb(server.pid)
    return {
        "daemon_mb": tree_rss_mb(daemon_pid)["total"],
        "daemon_own_mb": rss_mb(daemon_pid),
        "ollama_mb": ollama["total"],
        "ollama_processes_mb": {k: v for k, v in ollama.items() if k != "total"},
        "loaded": loaded_models(server),
    }


def wait_unloaded(server: Server, timeout_s: float = 30.0) -> bool:
    """Whether the model is unloaded and its runner gone within the timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not loaded_models(server) and not server.runner_pids():
            return True
        time.sleep(0.2)
    return False
