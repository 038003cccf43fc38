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
import contextlib
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

from ask_figures import report, summarize
from ask_requests import ASK_TIMEOUT_S, ask_daemon, ask_worker, flush_cache, prepare_prompts

# bench/ is the script's folder, so the shared library imports directly.
from benchlib import (
    QUESTIONS,
    REPO,
    SERVE_ENV,
    TreeLoadMeter,
    clean_env,
    free_port,
    hwm_mb,
    output_folders,
    progress,
    rss_mb,
    run_header,
    run_sync,
    running,
    serve_cmd,
    wait_ready,
)
from ragvisor.llm.gguf import cache_dir, ensure_default_gguf
from ragvisor.logs import configure_logging

SYNC_TIMEOUT_S = 1800.0
READY_TIMEOUT_S = 180.0
# The token-count job starts 10 s after a start without a sync and counts in a few seconds.
TOKEN_COUNT_TIMEOUT_S = 120.0
RUN_BUDGET_S = 3600.0  # warm-up plus timed rounds, all together
STOP_TIMEOUT_S = 30.0


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


def wait_for_token_counts(url: str, timeout_s: float) -> dict[str, Any]:
    """`/status`'s `sync.token_counts` once a pass has finished; what it says at the timeout
    otherwise (None fields: the daemon has no counter)."""
    deadline = time.monotonic() + timeout_s
    counts: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        counts = httpx.get(f"{url}/status", timeout=10.0).json()["sync"].get("token_counts")
        if counts is None or (counts.get("finished_at") and not counts.get("running")):
            break
        time.sleep(0.5)
    return counts or {}


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

            # /ask packs by the token counts stored after a sync (ask.stored_token_counts); the
            # daemon counts 10 s after a start without a sync. Time /ask as it runs from then on.
            progress("waiting for the stored token counts")
            figures["token_counts"] = wait_for_token_counts(url, TOKEN_COUNT_TIMEOUT_S)
            progress(f"token counts: {figures['token_counts']}")

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
