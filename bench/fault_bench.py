"""`/ask` under a failing backend: 200 questions while 40 % of backend calls hang and 10 % fail,
against the daemon's own worker and against a real Ollama, one after the other.

Each backend in turn: the daemon runs with that generator (its llama.cpp worker, or `ollama
serve` built from source with inventory/prod's environment, tests/infra/ollama_engine.py) and a
`ragvisor faultproxy` between them decides, per generation call, to hang (never answer), to fail
(500, reset, an error line mid-stream, 503 busy — in turn), or to pass. Same supervision
settings, same seeded plan, same questions for both. Reported per backend: how many requests
were answered (a generated answer, or an extractive one marked `degraded` — counted
separately), p50/p99 latency, the longest latency beside `request_s`, and what the supervision
did (retries, timeouts by phase, breaker openings, ladder climbs and restarts), read from
`/metrics`; then one table with a column per backend.

Targets (BRIEF.md, issue 13): ≥ 99.5 % answered, ≤ 10 % extractive, none past `request_s` +
1 s. Run: `make bench-faults` or `.venv/bin/python bench/fault_bench.py [--backend both]
[--requests 200] [--hang 0.4] [--fail 0.1]`.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

# bench/ is the script's folder, so the shared library imports directly.
from benchlib import (
    QUESTIONS,
    REPO,
    TreeLoadMeter,
    finish_report,
    output_folders,
    progress,
    run_header,
    run_sync,
)
from fault_backends import BACKENDS, Rig, started
from fault_figures import read_metrics, summarize, summary_rows, verdicts
from ragvisor.faultproxy import Fault, FaultPlan
from ragvisor.logs import configure_logging

# The failing 10 %: the ways a backend breaks other than by hanging, in equal shares.
FAILURES = (Fault.HTTP_500, Fault.RESET, Fault.ERROR_LINE, Fault.BUSY_503)

SYNC_TIMEOUT_S = 1800.0


def ask_one(url: str, question: str, timeout_s: float) -> dict[str, Any]:
    """One `/ask`; the outcome and the latency the client saw."""
    started = time.monotonic()
    try:
        response = httpx.post(f"{url}/ask", json={"question": question}, timeout=timeout_s)
    except httpx.HTTPError as exc:
        return {"ok": False, "status": None, "error": repr(exc), "s": time.monotonic() - started}
    took = time.monotonic() - started
    result: dict[str, Any] = {"status": response.status_code, "s": took}
    if response.status_code != 200:
        result.update(ok=False, error=response.text[:300])
        return result
    body = response.json()
    degraded = body.get("degraded")
    result.update(
        ok=bool(body.get("answer")),
        degraded=(degraded or {}).get("answer") == "extractive",
        reason=(degraded or {}).get("reason"),
    )
    return result


def run(args: argparse.Namespace, rig: Rig) -> list[dict[str, Any]]:
    """Send the requests from `args.clients` threads, printing progress every 20."""
    lock = threading.Lock()
    done: list[dict[str, Any]] = []

    def one(i: int) -> dict[str, Any]:
        result = ask_one(rig.url, QUESTIONS[i % len(QUESTIONS)], args.request_s + 30)
        with lock:
            done.append(result)
            if len(done) % 20 == 0:
                answered = sum(r["ok"] for r in done)
                degraded = sum(bool(r.get("degraded")) for r in done)
                progress(
                    f"{rig.name} {len(done)}/{args.requests}: answered {answered}, "
                    f"degraded {degraded}, proxy {rig.proxy.stats()['by_fault']}"
                )
        return result

    with ThreadPoolExecutor(max_workers=args.clients) as pool:
        return list(pool.map(one, range(args.requests)))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--backend", choices=[*BACKENDS, "both"], default="both", help="which generator(s)"
    )
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--hang", type=float, default=0.4, help="share of backend calls that hang")
    p.add_argument("--fail", type=float, default=0.1, help="share of backend calls that fail")
    p.add_argument("--clients", type=int, default=1, help="concurrent clients (ask lane: 1)")
    p.add_argument("--request-s", type=float, default=25.0, help="generator.deadlines.request_s")
    # Above the prompt evaluation of one passage on this box (~2 s), so only hangs miss it.
    p.add_argument("--first-token-s", type=float, default=4.0, help="first_token_s deadline")
    p.add_argument("--num-predict", type=int, default=12)
    p.add_argument("--k", type=int, default=1)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--corpus", type=Path, default=REPO / "docs", help="folder to sync and ask")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "out", help="output folder")
    args = p.parse_args(argv)
    if not 0 <= args.hang + args.fail <= 1:
        p.error("--hang + --fail must be between 0 and 1")
    if not 1 <= args.requests <= 100_000 or not 1 <= args.clients <= 64:
        p.error("--requests must be 1..100000 and --clients 1..64")
    return args


def one_backend(
    name: str,
    args: argparse.Namespace,
    corpus: Path,
    data_dir: Path,
    logs: Path,
    meter: TreeLoadMeter,
) -> dict[str, Any]:
    """Start the daemon on generator `name`, send the requests under the fault plan, and
    return that backend's figures; everything started for it is stopped before the next."""
    share = args.fail / len(FAILURES)
    plan = FaultPlan(
        probabilities={Fault.HANG: args.hang, **dict.fromkeys(FAILURES, share)},
        seed=args.seed,  # the same sequence of faults for each backend
        paths=("/api/chat",),  # generation calls; inventory and unload calls pass
    )
    meter.mark(f"start-{name}")
    with started(name, args, corpus, data_dir, logs) as rig:
        meter.watched = rig.processes()
        rig.proxy.set_plan(plan)
        rig.proxy.reset_stats()
        meter.mark(f"faults-{name}")
        progress(
            f"{name}: {args.requests} /ask from {args.clients} clients; "
            f"{args.hang:.0%} of calls hang, {args.fail:.0%} fail"
        )
        begun = time.monotonic()
        results = run(args, rig)
        figures: dict[str, Any] = {"wall_s": time.monotonic() - begun}
        meter.mark(f"stop-{name}")
        figures["proxy"] = rig.proxy.stats()
        figures["status_after"] = httpx.get(f"{rig.url}/status", timeout=10).json()
        figures.update(summarize(results, read_metrics(rig.url), args.request_s))
        figures.update(rig.notes, results=results)
    progress(f"{name}: done in {figures['wall_s'] / 60:.1f} min")
    print(json.dumps({k: figures[k] for k in ("supervision", "degraded_reasons")}, indent=2))
    return figures


def main(argv: list[str] | None = None) -> int:
    """Sync once, then per backend start proxy and daemon, send the requests and stop them;
    print the figures side by side."""
    args = parse_args(argv)
    configure_logging(json=False, level="warning")
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    out, stamp, logs = output_folders(args.out, "faults")
    work = Path(tempfile.mkdtemp(prefix="ragvisor-fault-bench-"))
    corpus, data_dir = args.corpus.resolve(), work / "data"
    meter = TreeLoadMeter()
    figures: dict[str, Any] = run_header(stamp, args)
    begun = time.monotonic()
    meter.mark("sync")
    progress(f"sync {corpus} into {data_dir} (one store, asked by each backend in turn)")
    figures["sync"] = run_sync(corpus, data_dir, logs / "sync.log", timeout_s=SYNC_TIMEOUT_S)
    names = list(BACKENDS) if args.backend == "both" else [args.backend]
    runs = {name: one_backend(name, args, corpus, data_dir, logs, meter) for name in names}
    meter.mark(None)
    figures["backends"] = runs
    figures["noise"] = meter.phases
    figures["bench_wall_s"] = time.monotonic() - begun
    print(f"\nthe whole bench took {figures['bench_wall_s'] / 60:.1f} min")
    finish_report(
        figures,
        summary_rows(runs),
        out / f"fault_bench-{stamp}.json",
        logs,
        "latencies stretch on a busy box and slow prompt reads miss first_token_s like hangs; "
        "the answered share and the overrun count still hold",
        header=("figure", *runs, "target", "verdict"),
    )
    return 0 if all(all(verdicts(s).values()) for s in runs.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
