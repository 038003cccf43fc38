"""What `/ask` adds on top of the generator: time to first token through the daemon vs. the
worker alone, on the identical prompt.

One run, on this machine:

1. syncs a corpus (default: the repo's ``docs/``) into a temp data dir and starts
   ``ragvisor serve`` (embedded worker: llama.cpp + Gemma 3 270M behind Ollama's API);
2. builds, in this process, the exact chat messages the daemon sends for each question
   (``Answerer.prepare`` on the same store, pointed at the same worker);
3. per question, after ``--warmup`` untimed rounds: streams ``POST /ask`` from the daemon and
   ``POST /api/chat`` straight to the worker with those messages and the same options, each
   preceded by a flush request to the worker (so neither reuses the other's KV-cache prefix),
   alternating which goes first;
4. reports medians: TTFT both ways, the daemon's overhead (difference of medians and median of
   paired differences), tokens/s, total time, prompt tokens, the daemon's own phase timings,
   and the RSS of the daemon and the worker.

Figures go to stdout and to ``<out>/ask_bench-<timestamp>.json``; progress lines go to stderr.
Timings are printed, never asserted. Every request goes to 127.0.0.1, every loop is bounded in
count and time, and every process started here (the daemon, and through it the worker) is
stopped before the script exits. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

# bench/ is the script's folder, so the shared library imports directly.
from benchlib import (
    QUESTIONS,
    REPO,
    SERVE_ENV,
    TreeLoadMeter,
    clean_env,
    finish_report,
    free_port,
    hwm_mb,
    median,
    output_folders,
    pct,
    progress,
    rss_mb,
    run_header,
    run_sync,
    running,
    serve_cmd,
    wait_ready,
)
from ragvisor.app import attach_generator, build_services
from ragvisor.application.answerer import AskTrace
from ragvisor.config import load_settings
from ragvisor.llm.gguf import cache_dir, ensure_default_gguf
from ragvisor.logs import configure_logging
from ragvisor.ollama.wire import keep_alive_value

# Words for the flush prompts: nothing to do with the docs, so no prompt prefix is shared.
_FLUSH_TEXT = (
    "harbor violet gravel orchard lantern pepper walrus canyon tulip saddle marble comet "
    "meadow biscuit falcon ribbon glacier cobalt parsley thimble anchor velvet quarry maple"
)
FLUSH_WORDS = _FLUSH_TEXT.split()

TARGETS: dict[str, tuple[str, float, str]] = {
    "overhead_ms": ("<=", 50.0, "ms"),  # brief: /ask overhead over the raw generator, to TTFT
    "daemon_rss_mb": ("<=", 300.0, "MB"),  # brief: daemon RSS with the embedder loaded
}

SYNC_TIMEOUT_S = 1800.0
READY_TIMEOUT_S = 180.0
ASK_TIMEOUT_S = 180.0  # one streamed answer, from request to the last line
RUN_BUDGET_S = 3600.0  # warm-up plus timed rounds, all together
STOP_TIMEOUT_S = 30.0


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


# -- processes ----------------------------------------------------------------------------------


def worker_process(readyz: dict[str, Any], daemon_pid: int) -> psutil.Process | None:
    """The daemon's worker child, as psutil sees it (None when /readyz names none)."""
    pid = ((readyz.get("checks", {}).get("generator") or {}).get("worker") or {}).get("pid")
    if not pid:
        return None
    try:
        proc = psutil.Process(int(pid))
        parent = proc.ppid()
    except psutil.Error:
        return None
    if parent != daemon_pid:
        progress(f"WARNING: worker pid {pid} is not a child of the daemon ({daemon_pid})")
    return proc


def exits_within(proc: psutil.Process, timeout_s: float) -> bool:
    """True when the process is gone (or goes) within the timeout."""
    try:
        proc.wait(timeout=timeout_s)
    except psutil.TimeoutExpired:
        return False
    except psutil.Error:
        pass
    return True


def make_sure_gone(proc: psutil.Process | None) -> None:
    """The daemon stops its worker; if that one is still there, stop it ourselves."""
    if proc is None or exits_within(proc, STOP_TIMEOUT_S / 3):
        return
    progress(f"WARNING: worker pid {proc.pid} outlived the daemon; terminating it")
    with contextlib.suppress(psutil.Error):
        proc.terminate()  # psutil checks the create time: never a recycled pid
    if not exits_within(proc, STOP_TIMEOUT_S):
        with contextlib.suppress(psutil.Error):
            proc.kill()


def alive(proc: psutil.Process | None) -> bool:
    """Whether the process still runs (an exited child not yet reaped counts as gone)."""
    try:
        return proc is not None and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def cpu_ms(proc: psutil.Process | None) -> float:
    """User + system CPU time of a process so far, in ms (NaN if it is gone)."""
    try:
        times = proc.cpu_times() if proc is not None else None
    except psutil.Error:
        times = None
    return (times.user + times.system) * 1000 if times is not None else float("nan")


def memory_of(daemon_pid: int, worker: psutil.Process | None) -> dict[str, float]:
    """RSS of the daemon and of its worker, in MB."""
    return {
        "daemon_rss_mb": rss_mb(daemon_pid),
        "worker_rss_mb": rss_mb(worker.pid) if worker is not None else float("nan"),
    }


# -- the rounds ---------------------------------------------------------------------------------


def run_rounds(
    args: argparse.Namespace,
    url: str,
    worker_url: str,
    gen: dict[str, Any],
    prompts: dict[str, dict[str, Any]],
    procs: dict[str, psutil.Process | None],
    warmup_done: Any,
) -> list[dict[str, Any]]:
    """Warm-up rounds, then the timed ones; each round asks one question both ways.

    Each ask also records the CPU time the daemon and the worker spent during it: CPU the
    daemon burns while the worker evaluates the prompt is taken from llama.cpp's threads.
    """
    rng = random.Random(20240601)
    max_lines = args.num_predict * 4 + 100
    rounds: list[dict[str, Any]] = []
    budget_end = time.perf_counter() + RUN_BUDGET_S
    timeout = httpx.Timeout(ASK_TIMEOUT_S, connect=5.0)
    total = args.warmup + args.questions
    with httpx.Client(timeout=timeout) as daemon_client, httpx.Client(timeout=timeout) as direct:
        for i in range(total):
            if time.perf_counter() > budget_end:
                progress(f"WARNING: time budget of {RUN_BUDGET_S:.0f}s spent after {i} rounds")
                break
            if i == args.warmup:
                warmup_done()
            timed = i >= args.warmup
            number = i - args.warmup
            question = QUESTIONS[(number if timed else i) % len(QUESTIONS)]
            daemon_first = i % 2 == 0  # alternate which path runs first
            result: dict[str, Any] = {"question": question, "daemon_first": daemon_first}
            rid = f"ask-bench-{'q' if timed else 'w'}{number if timed else i}"
            for path in ("daemon", "worker") if daemon_first else ("worker", "daemon"):
                cpu_before: dict[str, float] = {}
                try:
                    flush_cache(direct, worker_url, gen, rng)
                    cpu_before = {name: cpu_ms(proc) for name, proc in procs.items()}
                    if path == "daemon":
                        one = ask_daemon(daemon_client, url, question, args.k, rid, max_lines)
                    else:
                        messages = prompts[question]["messages"]
                        one = ask_worker(direct, worker_url, gen, messages, max_lines)
                except (httpx.HTTPError, RuntimeError, TimeoutError, ValueError) as exc:
                    one = {"error": f"{type(exc).__name__}: {exc}"}
                one.setdefault("request_id", rid)
                one["cpu_ms"] = {
                    name: cpu_ms(proc) - cpu_before.get(name, float("nan"))
                    for name, proc in procs.items()
                }
                result[path] = one
            a, b = result["daemon"], result["worker"]
            label = (
                f"q {number + 1}/{args.questions}" if timed else f"warm-up {i + 1}/{args.warmup}"
            )
            problems = "; ".join(x["error"] for x in (a, b) if "error" in x)
            progress(
                f"{label}: TTFT /ask {a.get('ttft_ms', float('nan')):.0f} ms, worker "
                f"{b.get('ttft_ms', float('nan')):.0f} ms ({'daemon' if daemon_first else 'worker'}"
                f" first){'; ERROR ' + problems if problems else ''}"
            )
            if timed:
                rounds.append(result)
            if problems and not alive(procs["daemon"]):
                progress("WARNING: the daemon is gone; ending the rounds early")
                break
    return rounds


# -- figures ------------------------------------------------------------------------------------


def log_phases(log_path: Path, request_ids: set[str]) -> dict[str, list[float]]:
    """The daemon's `http.request` lines for our `/ask` requests: every `*_ms` field."""
    phases: dict[str, list[float]] = {}
    if not log_path.exists():
        return phases
    for raw in log_path.read_bytes().splitlines():
        try:
            record = json.loads(raw)
        except ValueError:
            continue
        if not isinstance(record, dict) or record.get("event") != "http.request":
            continue
        if record.get("path") != "/ask" or record.get("request_id") not in request_ids:
            continue
        for key, value in record.items():
            if key.endswith("_ms") and isinstance(value, int | float):
                phases.setdefault(key, []).append(float(value))
    return phases


def summarize(rounds: list[dict[str, Any]], prompts: dict[str, Any], log_path: Path) -> dict:
    """Medians and friends over the timed rounds (rounds with an error on either side are
    left out of the paired figures and counted)."""
    ok = [r for r in rounds if "error" not in r["daemon"] and "error" not in r["worker"]]
    daemon = [r["daemon"] for r in ok]
    worker = [r["worker"] for r in ok]
    ttft_a = [d["ttft_ms"] for d in daemon]
    ttft_b = [w["ttft_ms"] for w in worker]
    paired = [a - b for a, b in zip(ttft_a, ttft_b, strict=True)]
    paired_daemon_first = [
        r["daemon"]["ttft_ms"] - r["worker"]["ttft_ms"] for r in ok if r["daemon_first"]
    ]
    paired_worker_first = [
        r["daemon"]["ttft_ms"] - r["worker"]["ttft_ms"] for r in ok if not r["daemon_first"]
    ]
    done = [d["done"] for d in daemon]
    finals = [w.get("final", {}) for w in worker]
    server: dict[str, list[float]] = {}
    for event in done:
        for key, value in (event.get("timings_ms") or {}).items():
            server.setdefault(key, []).append(float(value))
    pre_generation = [
        sum(float(e["timings_ms"].get(p, 0.0)) for p in ("embed", "retrieve", "fetch", "pack"))
        for e in done
    ]
    first_token = [float(e["timings_ms"].get("first_token", float("nan"))) for e in done]
    # The worker's own prompt-eval time (request → first sampled token, inside llama.cpp):
    # the same both ways unless the cache state or the CPU available differed.
    eval_a = [float(e["timings_ms"].get("prompt_eval", float("nan"))) for e in done]
    eval_b = [f.get("prompt_eval_duration", float("nan")) / 1e6 for f in finals]
    prompt_daemon = [e["tokens"].get("prompt") for e in done]
    prompt_worker = [f.get("prompt_eval_count") for f in finals]
    mismatched = sum(1 for a, b in zip(prompt_daemon, prompt_worker, strict=True) if a != b)
    ids = {r["daemon"]["request_id"] for r in rounds}
    rest_a = [t - e for t, e in zip(ttft_a, eval_a, strict=True)]
    rest_b = [t - e for t, e in zip(ttft_b, eval_b, strict=True)]
    # An answer that never reached the model (a cache hit, say) would flatter the daemon.
    no_model = sum(1 for e in done if not e["timings_ms"].get("prompt_eval"))
    median_a, median_b = median(ttft_a), median(ttft_b)
    return {
        "rounds": len(rounds),
        "rounds_ok": len(ok),
        "errors": [
            {
                "question": r["question"],
                "daemon": r["daemon"].get("error"),
                "worker": r["worker"].get("error"),
            }
            for r in rounds
            if r not in ok
        ],
        "ttft_daemon_ms": {"median": median_a, "p90": pct(ttft_a, 90), "values": ttft_a},
        "ttft_worker_ms": {"median": median_b, "p90": pct(ttft_b, 90), "values": ttft_b},
        "overhead_diff_of_medians_ms": median_a - median_b,
        "overhead_paired_median_ms": median(paired),
        "overhead_paired_ms": {
            "p10": pct(paired, 10),
            "p90": pct(paired, 90),
            "median_when_daemon_first": median(paired_daemon_first),
            "median_when_worker_first": median(paired_worker_first),
        },
        "ratio_daemon_to_worker": median_a / median_b if median_b else float("nan"),
        "tokens_per_s_daemon": median(
            [float(e["tokens"]["per_second"]) for e in done if e["tokens"].get("per_second")]
        ),
        "tokens_per_s_worker": median([w["tokens_per_s"] for w in worker if "tokens_per_s" in w]),
        "total_daemon_ms": median([d["total_ms"] for d in daemon]),
        "total_worker_ms": median([w["total_ms"] for w in worker]),
        "citations_event_ms": median([d["citations_ms"] for d in daemon]),
        "prompt_tokens": median([float(p) for p in prompt_daemon if p is not None]),
        "prompt_tokens_worker": median([float(p) for p in prompt_worker if p is not None]),
        "prompt_token_mismatches": mismatched,
        "completion_tokens": median(
            [float(e["tokens"]["completion"]) for e in done if e["tokens"].get("completion")]
        ),
        "prompt_eval_ms": {
            "via_ask": median(eval_a),
            "direct": median(eval_b),
            "paired_diff": median([a - b for a, b in zip(eval_a, eval_b, strict=True)]),
        },
        "ttft_minus_prompt_eval_ms": {"via_ask": median(rest_a), "direct": median(rest_b)},
        "overhead_outside_model_paired_median_ms": median(
            [a - b for a, b in zip(rest_a, rest_b, strict=True)]
        ),
        "rounds_without_prompt_eval": no_model,
        "cpu_ms_per_ask_median": {
            f"{who}_during_{path}": median([r[path]["cpu_ms"][who] for r in ok])
            for path in ("daemon", "worker")
            for who in ("daemon", "worker")
        },
        "server_timings_median_ms": {k: median(v) for k, v in server.items()},
        "breakdown_median_ms": {
            "server_before_generator": median(pre_generation),
            "server_generator_call_to_first_token": median(
                [f - p for f, p in zip(first_token, pre_generation, strict=True)]
            ),
            "client_minus_server_first_token": median(
                [a - f for a, f in zip(ttft_a, first_token, strict=True)]
            ),
        },
        "request_log_median_ms": {
            k: median(v) for k, v in sorted(log_phases(log_path, ids).items())
        },
        "prompts": {q: {k: v for k, v in p.items() if k != "messages"} for q, p in prompts.items()},
    }


def verdict(key: str, value: float) -> tuple[str, str]:
    """(target, verdict) against the brief, or empty strings when there is no target."""
    if key not in TARGETS:
        return "", ""
    op, bound, unit = TARGETS[key]
    target = f"{op} {bound:g} {unit}".strip()
    if value != value:  # NaN
        return target, ""
    ok = value <= bound if op == "<=" else value >= bound
    return target, "met" if ok else "NOT met"


def summary_rows(fig: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(figure, value, target, verdict) rows of the final table."""
    rows: list[tuple[str, str, str, str]] = []

    def add(label: str, value: float, fmt: str, key: str = "") -> None:
        rows.append((label, format(value, fmt), *verdict(key, value)))

    s, m = fig["ask"], fig["memory"]
    add("TTFT through /ask, median ms", s["ttft_daemon_ms"]["median"], ".1f")
    add("TTFT through /ask, p90 ms", s["ttft_daemon_ms"]["p90"], ".1f")
    add("TTFT worker alone (same prompt), median ms", s["ttft_worker_ms"]["median"], ".1f")
    add("TTFT worker alone, p90 ms", s["ttft_worker_ms"]["p90"], ".1f")
    add("daemon overhead, difference of medians ms", s["overhead_diff_of_medians_ms"], ".1f")
    add(
        "daemon overhead, median of paired diffs ms",
        s["overhead_paired_median_ms"],
        ".1f",
        "overhead_ms",
    )
    add(
        "daemon overhead outside the model, paired median ms",
        s["overhead_outside_model_paired_median_ms"],
        ".1f",
        "overhead_ms",
    )
    add("TTFT ratio /ask / worker (medians)", s["ratio_daemon_to_worker"], ".3f")
    for label, value in s["breakdown_median_ms"].items():
        add(f"  {label.replace('_', ' ')}, median ms", value, ".1f")
    add("tokens/s, /ask done events (median)", s["tokens_per_s_daemon"], ".1f")
    add("tokens/s, worker alone (median)", s["tokens_per_s_worker"], ".1f")
    add("total answer time through /ask, median ms", s["total_daemon_ms"], ".0f")
    add("total answer time worker alone, median ms", s["total_worker_ms"], ".0f")
    add("prompt tokens (median)", s["prompt_tokens"], ".0f")
    add("completion tokens (median)", s["completion_tokens"], ".0f")
    add("daemon RSS idle (before the first ask), MB", m["idle"]["daemon_rss_mb"], ".1f")
    add("daemon RSS after the run, MB", m["after"]["daemon_rss_mb"], ".1f", "daemon_rss_mb")
    add("daemon peak RSS (VmHWM), MB", m["daemon_hwm_mb"], ".1f")
    add("worker RSS idle (before the first ask), MB", m["idle"]["worker_rss_mb"], ".1f")
    add("worker RSS after the run, MB", m["after"]["worker_rss_mb"], ".1f")
    add("worker peak RSS (VmHWM), MB", m["worker_hwm_mb"], ".1f")
    return rows


def report(figures: dict[str, Any], out: Path, stamp: str, logs: Path) -> None:
    """Print the details and the summary table; write the JSON file."""
    s = figures["ask"]
    print("== ragvisor ask benchmark ==")
    mach = figures["machine"]
    print(
        f"machine: {mach['cpus']} CPUs, Python {mach['python']}, {mach['mem_total_mb']:.0f} MB RAM"
    )
    sync = figures["sync"]
    print(
        f"corpus: {figures['args']['corpus']} — {sync['documents']} documents, "
        f"{sync['embeddings_computed']} embeddings in {sync['seconds']:.1f}s"
    )
    gen = figures["generator"]
    print(
        f"generator: {gen['model']} at {gen['worker_url']} (worker pid {gen['worker_pid']}), "
        f"options {gen['options']}, keep_alive {gen['keep_alive']!r}"
    )
    print(
        f"rounds: {s['rounds']} timed ({s['rounds_ok']} without errors) after "
        f"{figures['args']['warmup']} warm-up; k={figures['args']['k']}"
    )
    for error in s["errors"][:5]:
        print(f"WARNING: failed round: {error}")
    if s["prompt_token_mismatches"]:
        print(
            f"WARNING: {s['prompt_token_mismatches']} rounds had different prompt token counts "
            "through /ask and direct — the in-process messages are not the daemon's"
        )
    o = s["overhead_paired_ms"]
    print(
        f"paired overhead (ms): p10 {o['p10']:.1f}, p90 {o['p90']:.1f}; median when /ask ran "
        f"first {o['median_when_daemon_first']:.1f}, when the worker ran first "
        f"{o['median_when_worker_first']:.1f}"
    )
    print(
        "daemon phases in the done event (median ms): "
        + ", ".join(f"{k} {v:.1f}" for k, v in s["server_timings_median_ms"].items())
    )
    print(
        "daemon http.request log for /ask (median ms): "
        + ", ".join(f"{k} {v:.1f}" for k, v in s["request_log_median_ms"].items())
    )
    pe, rest = s["prompt_eval_ms"], s["ttft_minus_prompt_eval_ms"]
    print(
        f"model side: prompt eval (the worker's stats, median ms) via /ask {pe['via_ask']:.1f}, "
        f"direct {pe['direct']:.1f}, paired difference {pe['paired_diff']:.1f}; "
        f"TTFT minus prompt eval: via /ask {rest['via_ask']:.1f}, direct {rest['direct']:.1f}; "
        f"/ask's citations event after {s['citations_event_ms']:.1f} ms"
    )
    cpu = s["cpu_ms_per_ask_median"]
    print(
        "CPU per ask (median ms): via /ask daemon "
        f"{cpu['daemon_during_daemon']:.0f}, worker {cpu['worker_during_daemon']:.0f}; "
        f"direct: daemon {cpu['daemon_during_worker']:.0f}, "
        f"worker {cpu['worker_during_worker']:.0f}"
    )
    if s["rounds_without_prompt_eval"]:
        print(
            f"WARNING: {s['rounds_without_prompt_eval']} /ask answers report no prompt eval "
            "(answered without the model?) — their TTFT is not comparable"
        )
    finish_report(
        figures,
        summary_rows(figures),
        out / f"ask_bench-{stamp}.json",
        logs,
        "the paired overhead is the figure to trust, the absolute times are pessimistic",
    )


# -- main ---------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--questions", type=int, default=20, help="timed rounds (one question each)")
    p.add_argument("--warmup", type=int, default=3, help="untimed rounds first")
    p.add_argument("--num-predict", type=int, default=64, help="generator.num_predict")
    p.add_argument("--k", type=int, default=4, help="passages per question")
    p.add_argument("--corpus", type=Path, default=REPO / "docs", help="folder to sync and ask")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "out", help="output folder")
    p.add_argument("--keep", action="store_true", help="keep the temp data dir")
    args = p.parse_args(argv)
    if not 1 <= args.questions <= 1000 or not 0 <= args.warmup <= 100:
        p.error("--questions must be 1..1000 and --warmup 0..100")
    if not args.corpus.is_dir():
        p.error(f"--corpus {args.corpus} is not a folder")
    return args


def main(argv: list[str] | None = None) -> int:
    """Sync, start the daemon, ask both ways, print the figures; stop everything."""
    args = parse_args(argv)
    # The in-process services (prompt building) log warnings only, to stderr, never stdout.
    configure_logging(json=False, level="warning")
    # SIGTERM unwinds like Ctrl-C, so the `finally` blocks stop the daemon either way.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    out, stamp, logs = output_folders(args.out, "ask")
    work = Path(tempfile.mkdtemp(prefix="ragvisor-ask-bench-"))
    corpus, data_dir = args.corpus.resolve(), work / "data"
    meter = TreeLoadMeter()
    figures: dict[str, Any] = run_header(stamp, args)
    if any(k.startswith("RAGVISOR_") for k in os.environ):
        progress("note: RAGVISOR_* variables in the environment are ignored by this benchmark")
    worker: psutil.Process | None = None
    try:
        meter.mark("sync")
        progress(f"sync {corpus} into {data_dir}")
        sync = run_sync(corpus, data_dir, logs / "sync.log", timeout_s=SYNC_TIMEOUT_S)
        figures["sync"] = sync
        progress(f"synced: {sync['embeddings_computed']} embeddings in {sync['seconds']:.1f}s")

        # The pinned GGUF from the install cache, as the tests use it: no 242 MB copy per run.
        gguf = ensure_default_gguf(cache_dir())
        env = clean_env(
            **SERVE_ENV,
            RAGVISOR_GENERATOR__NUM_PREDICT=str(args.num_predict),
            RAGVISOR_WORKER__MODEL_PATH=str(gguf),
        )
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        daemon_log = logs / "serve.log"
        meter.mark("start")
        progress(f"starting ragvisor serve on port {port}")
        with running(serve_cmd(corpus, data_dir, port), env, daemon_log) as proc:
            wait_ready(port, proc, READY_TIMEOUT_S)
            readyz = httpx.get(f"{url}/readyz", timeout=10.0).json()
            generator = readyz.get("checks", {}).get("generator") or {}
            worker_url = generator.get("url")
            if not worker_url:
                raise RuntimeError(f"/readyz names no generator: {readyz}")
            worker = worker_process(readyz, proc.pid)
            meter.watched = [psutil.Process(proc.pid), *([worker] if worker else [])]
            memory: dict[str, Any] = {"idle": memory_of(proc.pid, worker)}
            progress(
                f"ready; worker {worker_url} pid {worker.pid if worker else '?'}; "
                f"idle RSS daemon {memory['idle']['daemon_rss_mb']:.0f} MB, "
                f"worker {memory['idle']['worker_rss_mb']:.0f} MB"
            )

            meter.mark("prepare")
            progress("building the daemon's prompts in-process (Answerer.prepare)")
            gen, prompts = prepare_prompts(
                corpus, data_dir, worker_url, args.num_predict, args.k, QUESTIONS
            )
            figures["generator"] = {
                **gen,
                "worker_url": worker_url,
                "worker_pid": worker.pid if worker else None,
            }

            meter.mark("warmup")

            def warmup_done() -> None:
                memory["after_warmup"] = memory_of(proc.pid, worker)
                meter.mark("timed")

            procs = {"daemon": psutil.Process(proc.pid), "worker": worker}
            rounds = run_rounds(args, url, worker_url, gen, prompts, procs, warmup_done)
            memory["after"] = memory_of(proc.pid, worker)
            memory["daemon_hwm_mb"] = hwm_mb(proc.pid)
            memory["worker_hwm_mb"] = hwm_mb(worker.pid) if worker else float("nan")
            meter.mark(None)
            figures["memory"] = memory
            figures["noise"] = meter.phases
            progress("stopping the daemon")
        make_sure_gone(worker)
        figures["ask"] = summarize(rounds, prompts, daemon_log)
        figures["rounds"] = rounds
    finally:
        make_sure_gone(worker)
        if args.keep:
            progress(f"kept the data dir in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    report(figures, out, stamp, logs)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM; the processes were stopped on the way out
        progress("interrupted")
        sys.exit(130)
