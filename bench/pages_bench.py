"""What the pages cost the daemon: `/search` latency and RSS with `[ui] enabled` against the same
daemon with it off, in the same run, and the status page's ring buffer on its own.

    make bench-pages   # = .venv/bin/python bench/pages_bench.py [--rounds 3] [--requests 400]

With the pages on, every response passes the security-headers middleware and every answered
request is recorded into the history (runtime/history.py); the pages' own routes cost nothing
until a browser asks. Each round starts a daemon per variant, interleaved — pages on and
visited by a browser, pages on and not visited, pages off — over this repository's docs/
(synced once), the real ONNX MiniLM and SQLite, no generator; warms it, sends ``--requests``
sequential `/search` requests over HTTP (a real client on loopback), loads `/`, `/ui/status`, a
script and `/status/history` once (the visited variant), and reads the daemon's RSS. Figures
are medians over rounds; the difference and the ratio are against the pages-off daemon of the
same run. The ring buffer is measured in process: its arrays' bytes at
the default size (720 samples, three processes), what tracemalloc sees while building and
filling one, and the time of `as_dict` (one `GET /status/history`) at full capacity.

Figures go to stdout and ``<out>/pages_bench-<timestamp>.json``; nothing is asserted. Targets:
the pages add ≤ 10 ms to `/search` p50, and nothing measurable to RSS.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import httpx
import psutil

# bench/ is the script's folder, so the shared library imports directly.
from benchlib import (
    REPO,
    SERVE_ENV,
    TreeLoadMeter,
    clean_env,
    finish_report,
    free_port,
    median,
    output_folders,
    pct,
    progress,
    rnd,
    rss_mb,
    run_header,
    run_sync,
    running,
    serve_cmd,
    wait_ready,
)
from ragvisor.runtime.history import History
from ragvisor.supervise.memory import MB, MemorySample

P50_TARGET_MS = 10.0
QUERIES = [
    "how does sync decide what to re-embed",
    "what does readyz check",
    "swap file and swappiness",
    "circuit breaker open",
    "restart ladder budget",
    "admin token",
    "neo4j heap size",
    "answer cache semantic hit",
    "memory guard pressure",
    "systemd watchdog",
]
PROCESSES = {"daemon": 230.0, "worker": 95.0, "ollama": 300.0}
# Interleaved in every round: the pages on with a browser's visit (the pages, a script, the
# history it polls), on with no visit (the middleware and the history alone), and off.
OFF = "pages off"
PAGE_FILES = ("/", "/ui/status", "/ui/static/search.js", "/ui/static/status.js")
VARIANTS = (
    ("pages on, visited", True, True),
    ("pages on, not visited", True, False),
    (OFF, False, False),
)


def one_daemon(
    corpus: Path,
    data_dir: Path,
    logs: Path,
    meter: TreeLoadMeter,
    *,
    ui: bool,
    requests: int,
    tag: str,
    load_pages: bool = True,
) -> dict[str, Any]:
    """Start a daemon with the pages on or off, time its searches, read its RSS, stop it."""
    port = free_port()
    env = clean_env(
        **SERVE_ENV, RAGVISOR_GENERATOR__BACKEND="none", RAGVISOR_UI__ENABLED=str(ui).lower()
    )
    url = f"http://127.0.0.1:{port}"
    with running(serve_cmd(corpus, data_dir, port), env, logs / f"daemon-{tag}.log") as proc:
        meter.watched.append(psutil.Process(proc.pid))
        wait_ready(port, proc, timeout_s=120)
        with httpx.Client(base_url=url, timeout=30) as client:
            for i in range(50):  # warm: the model's first calls, the page cache
                client.get("/search", params={"q": QUERIES[i % len(QUERIES)]})
            took: list[float] = []
            for i in range(requests):
                started = time.perf_counter()
                response = client.get("/search", params={"q": QUERIES[i % len(QUERIES)]})
                took.append((time.perf_counter() - started) * 1000)
                response.raise_for_status()
            pages = {}
            if ui and load_pages:  # what a browser adds: the pages once, the history it polls
                for path in ("/", "/ui/status", "/ui/static/search.js", "/status/history"):
                    started = time.perf_counter()
                    pages[path] = {
                        "status": client.get(path).status_code,
                        "ms": (time.perf_counter() - started) * 1000,
                    }
        time.sleep(0.5)
        return {
            "ui": ui,
            "p50_ms": pct(took, 50),
            "p99_ms": pct(took, 99),
            "rss_mb": rss_mb(proc.pid),
            "pages": pages,
        }


def status_page_open(
    corpus: Path, data_dir: Path, logs: Path, meter: TreeLoadMeter, *, polls: int
) -> dict[str, Any]:
    """A daemon whose status page stays open: after a first visit, `polls` rounds of what the
    page asks (`/status` and `/readyz` each time, `/status/history` every third, the pages
    again every 50th); RSS after the visit and after every quarter of the polls."""
    port = free_port()
    env = clean_env(**SERVE_ENV, RAGVISOR_GENERATOR__BACKEND="none")
    log = logs / "daemon-status-page-open.log"
    with running(serve_cmd(corpus, data_dir, port), env, log) as proc:
        meter.watched.append(psutil.Process(proc.pid))
        wait_ready(port, proc, timeout_s=120)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            for i in range(200):
                client.get("/search", params={"q": QUERIES[i % len(QUERIES)]})
            for path in PAGE_FILES:
                client.get(path)
            time.sleep(0.5)
            rss = [rss_mb(proc.pid)]
            for i in range(polls):
                client.get("/status")
                client.get("/readyz")
                if i % 3 == 0:
                    client.get("/status/history")
                if i % 50 == 0:
                    for path in PAGE_FILES:
                        client.get(path)
                if (i + 1) % max(1, polls // 4) == 0:
                    rss.append(rss_mb(proc.pid))
    return {"polls": polls, "rss_mb": rss}


def ring_buffer(capacity_samples: int = 720) -> dict[str, Any]:
    """The default history (an hour at 5 s), full, with three processes: its bytes, what
    tracemalloc counts for building and filling it, and `as_dict` time and JSON size."""
    sample = MemorySample(
        taken_at=0.0,
        total_bytes=4096 * MB,
        available_bytes=1500 * MB,
        swap_total_bytes=2048 * MB,
        swap_used_bytes=0,
        swap_in_bytes_per_s=0.0,
        swap_out_bytes_per_s=0.0,
        psi_some_avg10=0.0,
        psi_full_avg10=0.0,
        rss_bytes={name: int(mb * MB) for name, mb in PROCESSES.items()},
    )
    tracemalloc.start()
    history = History.for_window(3600, 5)
    for i in range(capacity_samples):
        for _ in range(20):
            history.record("search", 0.006)
        if i % 10 == 0:
            history.record("ask", 3.0)
            history.record("first_token", 0.4)
        history.sample(sample)
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    timings = []
    for _ in range(30):
        started = time.perf_counter()
        body = history.as_dict()
        timings.append((time.perf_counter() - started) * 1000)
    return {
        "capacity": history.capacity,
        "nbytes": history.nbytes(),
        "tracemalloc_current_bytes": current,
        "tracemalloc_peak_bytes": peak,
        "as_dict_ms_median": median(timings),
        "json_bytes": len(json.dumps(body)),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="daemons per setting (interleaved)")
    parser.add_argument("--requests", type=int, default=400, help="timed /search per daemon")
    parser.add_argument(
        "--polls", type=int, default=1000, help="status-page polls (720 = an hour at 5 s)"
    )
    parser.add_argument("--corpus", type=Path, default=REPO / "docs")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "out")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out, stamp, logs = output_folders(args.out, "pages")
    figures: dict[str, Any] = run_header(stamp, args)
    meter = TreeLoadMeter()
    with tempfile.TemporaryDirectory(prefix="pages-bench-") as tmp:
        data_dir = Path(tmp) / "data"
        progress(f"syncing {args.corpus} once")
        meter.mark("sync")
        run_sync(args.corpus, data_dir, logs / "sync.log", timeout_s=1800, env=SERVE_ENV)
        runs: list[dict[str, Any]] = []
        meter.mark("daemons")
        for round_no in range(args.rounds):
            for name, ui, load_pages in VARIANTS:
                progress(f"round {round_no + 1}/{args.rounds}: {name}")
                result = one_daemon(
                    args.corpus,
                    data_dir,
                    logs,
                    meter,
                    ui=ui,
                    requests=args.requests,
                    tag=f"{name.replace(' ', '-').replace(',', '')}-{round_no}",
                    load_pages=load_pages,
                )
                runs.append({"variant": name, **result})
        meter.mark("status page open")
        progress(f"status page open: {args.polls} polls")
        figures["status_page_open"] = status_page_open(
            args.corpus, data_dir, logs, meter, polls=args.polls
        )
        meter.mark("ring buffer")
        figures["ring_buffer"] = ring_buffer()
        meter.mark(None)
        figures["noise"] = meter.phases
    figures["runs"] = runs
    fig: dict[str, dict[str, float]] = {}
    for name, _, _ in VARIANTS:
        mine = [r for r in runs if r["variant"] == name]
        fig[name] = {
            "p50_ms": median([r["p50_ms"] for r in mine]),
            "p99_ms": median([r["p99_ms"] for r in mine]),
            "rss_mb": median([r["rss_mb"] for r in mine]),
            "rss_spread_mb": max(r["rss_mb"] for r in mine) - min(r["rss_mb"] for r in mine),
        }
    figures["figures"] = fig
    base = fig[OFF]
    rows = []
    for name, _, _ in VARIANTS:
        this = fig[name]
        added = this["p50_ms"] - base["p50_ms"]
        rows.append(
            (
                f"/search p50 / p99, {name}",
                f"{this['p50_ms']:.2f} / {this['p99_ms']:.2f} ms"
                + (
                    ""
                    if name == OFF
                    else f" ({added:+.2f} ms, {this['p50_ms'] / base['p50_ms']:.3f}x)"
                ),
                "" if name == OFF else f"+<= {P50_TARGET_MS:g} ms",
                "" if name == OFF else ("met" if added <= P50_TARGET_MS else "NOT MET"),
            )
        )
    for name, _, _ in VARIANTS:
        this = fig[name]
        rows.append(
            (
                f"daemon RSS after the load, {name}",
                f"{this['rss_mb']:.2f} MB"
                + ("" if name == OFF else f" ({this['rss_mb'] - base['rss_mb']:+.2f} MB)")
                + f"; spread between rounds {this['rss_spread_mb']:.2f} MB",
                "",
                "",
            )
        )
    ring = figures["ring_buffer"]
    open_page = figures["status_page_open"]["rss_mb"]
    rows += [
        (
            f"status page open, {args.polls} polls: RSS after the visit, then each quarter",
            " / ".join(f"{v:.2f}" for v in open_page)
            + f" MB ({open_page[-1] - open_page[0]:+.2f} MB)",
            "flat",
            "",
        ),
        (
            "ring buffer, full (720 samples, 3 processes)",
            f"{ring['nbytes'] / 1024:.1f} KiB arrays; tracemalloc "
            f"{ring['tracemalloc_current_bytes'] / 1024:.1f} KiB "
            f"(peak {ring['tracemalloc_peak_bytes'] / 1024:.1f} KiB)",
            "",
            "",
        ),
        (
            "GET /status/history at full capacity",
            f"as_dict {ring['as_dict_ms_median']:.2f} ms, {ring['json_bytes'] / 1024:.1f} KiB JSON",
            "",
            "",
        ),
    ]
    finish_report(
        figures,
        [tuple(str(c) for c in row) for row in rows],
        out / f"pages_bench-{stamp}.json",
        logs,
        "rerun on a quiet box",
    )
    print(
        "per daemon (p50 ms, RSS MB): "
        + ", ".join(f"{r['variant']} {rnd(r['p50_ms'], 2)} {rnd(r['rss_mb'], 1)}" for r in runs)
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
