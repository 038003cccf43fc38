"""The ask benchmark's requests: one question through the daemon's `/ask` and the same prompt
straight to the worker (so the daemon's own overhead is a difference), with the prompt built
in-process exactly as the daemon builds it, and a cache flush between rounds.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from pathlib import Path
from typing import Any

import httpx

# bench/ is the script's folder, so the shared library imports directly.
from ragvisor.app import attach_generator, build_services
from ragvisor.application.answerer import AskTrace
from ragvisor.config import load_settings
from ragvisor.ollama.wire import keep_alive_value

# Words for the flush prompts: nothing to do with the docs, so no prompt prefix is shared.
_FLUSH_TEXT = (
    "harbor violet gravel orchard lantern pepper walrus canyon tulip saddle marble comet "
    "meadow biscuit falcon ribbon glacier cobalt parsley thimble anchor velvet quarry maple"
)
FLUSH_WORDS = _FLUSH_TEXT.split()


ASK_TIMEOUT_S = 180.0  # one streamed answer, from request to the last line


# -- one request each way -----------------------------------------------------------------------


def flush_cache(client: httpx.Client, worker_url: str, gen: dict[str, Any], rng: random.Random):
    """A one-token raw generation of unrelated text: the worker's KV cache then holds no prefix
    of the next prompt, whichever path sends it."""
    prompt = " ".join(rng.choice(FLUSH_WORDS) for _ in range(24))
    response = client.post(
        f"{worker_url}/api/generate",
        json={
            "model": gen["model"],
            "prompt": prompt,
            "raw": True,
            "stream": False,
            "options": {"num_predict": 1, "num_ctx": gen["options"]["num_ctx"]},
            "keep_alive": gen["keep_alive"],
        },
    )
    if response.status_code != 200:
        raise RuntimeError(f"flush request: {response.status_code} {response.text[:200]}")


def ndjson_lines(response: httpx.Response, started: float, max_lines: int):
    """Decoded NDJSON objects of a streamed response, bounded in count and time."""
    for count, line in enumerate(response.iter_lines()):
        if count >= max_lines:
            raise RuntimeError(f"more than {max_lines} lines in one answer")
        if time.perf_counter() - started > ASK_TIMEOUT_S:
            raise TimeoutError(f"an answer took longer than {ASK_TIMEOUT_S:.0f}s")
        if line.strip():
            yield json.loads(line)


def ask_daemon(
    client: httpx.Client, url: str, question: str, k: int, request_id: str, max_lines: int
) -> dict[str, Any]:
    """Stream `/ask`; client-side TTFT (request sent → first delta) and the `done` event."""
    result: dict[str, Any] = {"request_id": request_id}
    first = citations_at = None
    started = time.perf_counter()
    with client.stream(
        "POST",
        f"{url}/ask",
        json={"question": question, "k": k, "stream": True},
        headers={"X-Request-ID": request_id},
    ) as response:
        if response.status_code != 200:
            response.read()
            return {**result, "error": f"{response.status_code}: {response.text[:300]}"}
        for event in ndjson_lines(response, started, max_lines):
            kind = event.get("type")
            if kind == "citations" and citations_at is None:
                citations_at = time.perf_counter()
            elif kind == "delta" and first is None and event.get("text"):
                first = time.perf_counter()
            elif kind == "done":
                result["done"] = event
            elif kind == "error":
                result["error"] = f"error event: {event}"
    ended = time.perf_counter()
    if first is None and "error" not in result:
        result["error"] = "no delta event"
    result["ttft_ms"] = (first - started) * 1000 if first is not None else float("nan")
    result["citations_ms"] = (citations_at - started) * 1000 if citations_at else float("nan")
    result["total_ms"] = (ended - started) * 1000
    return result


def ask_worker(
    client: httpx.Client, worker_url: str, gen: dict[str, Any], messages: list, max_lines: int
) -> dict[str, Any]:
    """Stream `/api/chat` straight to the worker; TTFT to the first non-empty content."""
    body = {
        "model": gen["model"],
        "messages": messages,
        "stream": True,
        "options": gen["options"],
        "keep_alive": gen["keep_alive"],
    }
    result: dict[str, Any] = {}
    first = None
    started = time.perf_counter()
    with client.stream("POST", f"{worker_url}/api/chat", json=body) as response:
        if response.status_code != 200:
            response.read()
            return {"error": f"{response.status_code}: {response.text[:300]}"}
        for data in ndjson_lines(response, started, max_lines):
            if "error" in data:
                result["error"] = str(data["error"])
                break
            if data.get("done"):
                result["final"] = {k: v for k, v in data.items() if k != "message"}
                break
            if first is None and (data.get("message") or {}).get("content"):
                first = time.perf_counter()
    ended = time.perf_counter()
    if first is None and "error" not in result:
        result["error"] = "no content chunk"
    result["ttft_ms"] = (first - started) * 1000 if first is not None else float("nan")
    result["total_ms"] = (ended - started) * 1000
    final = result.get("final", {})
    if final.get("eval_count") and final.get("eval_duration"):
        result["tokens_per_s"] = final["eval_count"] / final["eval_duration"] * 1e9
    return result


# -- the prompts, built in-process exactly as the daemon builds them ----------------------------


def prepare_prompts(
    corpus: Path, data_dir: Path, worker_url: str, num_predict: int, k: int, questions: list[str]
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The generator's request fields and, per question, the messages `Answerer.prepare` packs.

    Same store, same embedder, same settings as the daemon, with the generator pointed at the
    daemon's worker (token counts come from its tokenizer, as in the daemon).
    """
    settings = load_settings(
        None,
        {},
        {
            "corpus": {"paths": [str(corpus)]},
            "store": {"data_dir": str(data_dir)},
            "generator": {"backend": "ollama", "url": worker_url, "num_predict": num_predict},
        },
    )
    services = build_services(settings)
    try:
        attach_generator(services, start_worker=False)
        answerer, generator = services.answerer, services.generator
        if answerer is None or generator is None:
            raise RuntimeError("no generator attached")

        async def prepare_all() -> dict[str, dict[str, Any]]:
            prepared: dict[str, dict[str, Any]] = {}
            try:
                for question in dict.fromkeys(questions):
                    trace = AskTrace()
                    ask = await answerer.prepare(question, k, trace)
                    prepared[question] = {
                        "messages": [
                            {"role": m.role, "content": m.content} for m in ask.plan.messages
                        ],
                        "prompt_tokens_planned": ask.plan.prompt_tokens,
                        "passages": len(ask.plan.passages),
                        "dropped": ask.plan.dropped,
                        "timings_ms": dict(trace.timings_ms),
                    }
            finally:
                await generator.aclose()
            return prepared

        prompts = asyncio.run(prepare_all())
        gen = {
            "model": generator.model,
            "options": generator.client.options(),  # the raw client behind the supervision
            "keep_alive": keep_alive_value(generator.client.keep_alive),
        }
    finally:
        services.close()
    return gen, prompts
