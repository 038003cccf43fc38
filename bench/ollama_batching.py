"""Query micro-batching with the Ollama embedder: /search throughput at 1, 4 and 16 clients,
batching off and on, against a real Ollama (built from source, as `make test` builds it).

With the in-process ONNX embedder a query's cost is arithmetic, which a shared call does not
share (`bench/serving_bench.py`). With `embedder.backend = "ollama"` each query is also an
HTTP request to Ollama and a hand-off to its runner; batching sends the queries that wait
together as one `/api/embed` request. This measures what that is worth, the same way:
daemons side by side, interleaved rounds, medians.

One run, on this machine:

1. starts `ollama serve` on a loopback port with the MiniLM GGUF the tests use (`all-minilm`);
2. syncs the repository's `docs/` with that embedder into a temp data directory;
3. starts one daemon per mode (batching off / on, search lane 4 and 16), searches only;
4. for 1, 4 and 16 keep-alive clients, `--rounds` interleaved runs of every mode over queries
   made of the docs' own lines; prints req/s, p50 / p99 and the on/off ratio per client count.

Figures go to stdout and to ``<out>/ollama_batching-<timestamp>.json``; progress to stderr.
Every process started here is stopped before the script exits. ~4 min on 2 cores.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchlib import (
    REPO,
    TreeLoadMeter,
    finish_report,
    output_folders,
    progress,
    run_header,
    run_sync,
)
from ollamalib import EMBED_MODEL, bench_ollama, build
from serving_bench import CLIENTS, SYNC_TIMEOUT_S, throughput

# (label, embedder.query_batch_max, embedder.query_batch_wait_ms, search lane max_concurrent)
MODES = (
    ("off, lane 4", 1, 0.0, 4),
    ("on, lane 4", 16, 0.0, 4),
    ("off, lane 16", 1, 0.0, 16),
    ("on, lane 16", 16, 0.0, 16),
)
TARGET_RATIO = 2.0  # issue 15: at least 2x at 16 clients


def queries_from(corpus: Path, count: int) -> list[str]:
    """Short queries: the first eight words of the corpus's longer lines, in a fixed order."""
    lines = [
        " ".join(line.split()[:8])
        for page in sorted(corpus.rglob("*.md"))
        for line in page.read_text(encoding="utf-8").splitlines()
        if len(line.split()) >= 6 and not line.startswith(("|", "```", "    "))
    ]
    return lines[:count]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3, help="interleaved runs per client count")
    p.add_argument("--queries", type=int, default=400, help="queries per run")
    p.add_argument("--corpus", type=Path, default=REPO / "docs", help="folder to sync")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "out", help="output folder")
    return p.parse_args(argv)


def summary_rows(figures: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """req/s per mode and client count, and the on/off ratio per lane."""
    t = figures["throughput"]
    rows: list[tuple[str, str, str, str]] = []
    for clients in (str(c) for c in CLIENTS):
        for lane in ("4", "16"):
            off = t[f"off, lane {lane}"][clients]
            on = t[f"on, lane {lane}"][clients]
            ratio = on["throughput_rps"] / off["throughput_rps"]
            target = f">= {TARGET_RATIO:g}x" if clients == "16" else ""
            verdict = ("met" if ratio >= TARGET_RATIO else "not met") if target else ""
            rows.append(
                (
                    f"{clients} clients, lane {lane}: req/s off -> on "
                    f"({off['throughput_rps']:.0f} -> {on['throughput_rps']:.0f}), "
                    f"p50 {off['p50_ms']:.1f} -> {on['p50_ms']:.1f} ms",
                    f"{ratio:.2f}x",
                    target,
                    verdict,
                )
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    """Start Ollama, sync, measure, print; stop everything."""
    args = parse_args(argv)
    out, stamp, logs = output_folders(args.out, "ollama_batching")
    work = Path(tempfile.mkdtemp(prefix="ragvisor-ollama-batching-"))
    meter = TreeLoadMeter()
    figures: dict[str, Any] = run_header(stamp, args)
    try:
        progress("building (or finding) ollama")
        build()
        with bench_ollama(work / "ollama") as server:
            env = {
                "RAGVISOR_EMBEDDER__BACKEND": "ollama",
                "RAGVISOR_EMBEDDER__URL": server.url,
                "RAGVISOR_EMBEDDER__MODEL": EMBED_MODEL,
            }
            corpus, data_dir = args.corpus.resolve(), work / "data"
            meter.mark("sync")
            progress(f"sync {corpus} through ollama's {EMBED_MODEL}")
            figures["sync"] = run_sync(
                corpus, data_dir, logs / "sync.log", timeout_s=SYNC_TIMEOUT_S, env=env
            )
            queries = queries_from(corpus, args.queries)
            meter.mark("throughput")
            progress(f"throughput: {len(MODES)} daemons, {args.rounds} interleaved rounds")
            figures["throughput"] = throughput(
                corpus, data_dir, queries, logs, args.rounds, modes=MODES, extra_env=env
            )
            meter.mark(None)
        figures["noise"] = meter.phases
        figures["ratios_at_16"] = {
            lane: figures["throughput"][f"on, lane {lane}"]["16"]["throughput_rps"]
            / figures["throughput"][f"off, lane {lane}"]["16"]["throughput_rps"]
            for lane in ("4", "16")
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    finish_report(
        figures,
        summary_rows(figures),
        out / f"ollama_batching-{stamp}.json",
        logs,
        "the ratios come from interleaved rounds and are the figures to trust",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
