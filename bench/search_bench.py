"""End-to-end benchmark of sync and search against the targets in the brief.

One run, on this machine, measures:

1. a deterministic synthetic Markdown corpus of about ``--chunks`` chunks (counted with the
   real scanner and chunker, then checked against the sync report);
2. the raw embedder's batch throughput on real chunk texts (the in-run baseline);
3. the first sync (``ragvisor sync --json``, a subprocess) and its ratio to the baseline;
4. unchanged re-syncs: the report's ``seconds`` and the whole command's wall time;
5. time to first search after a restart (``ragvisor serve`` until the first 200 of /search),
   with a breakdown of where the start-up time goes;
6. warm search latency over HTTP, sequential and with concurrent clients;
7. the daemon's RSS (and the sync process's).

Figures go to stdout and to ``<out>/search_bench-<timestamp>.json``; progress lines go to
stderr. Timings are printed, never asserted: the machine is noisy. Every request goes to
127.0.0.1, every loop is bounded in count and time, and every process started here is stopped
before the script exits. See bench/README.md.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

# bench/ is the script's folder, so the shared library imports directly.
from benchlib import (
    REPO,
    SERVE_ENV,
    LoadMeter,
    clean_env,
    finish_report,
    free_port,
    hwm_mb,
    median,
    output_folders,
    progress,
    rss_mb,
    run_header,
    run_sync,
    running,
    serve_cmd,
    wait_ready,
)
from ragvisor.config import load_settings
from ragvisor.core.chunking import ChunkingSpec
from ragvisor.embed.onnx import model_dir
from search_corpus import ProseGenerator, build_corpus, load_vocabulary
from search_runs import (
    FIRST_SEARCH_TIMEOUT_S,
    concurrent_search,
    first_search,
    raw_baseline,
    sequential_search,
    startup_probe,
)

# Targets from /work/shared/BRIEF.md ("Targets"); (label, comparison, bound, unit).
TARGETS: dict[str, tuple[str, float, str]] = {
    "search_p50_ms": ("<=", 25.0, "ms"),
    "search_p99_ms": ("<=", 100.0, "ms"),
    "first_search_s": ("<=", 2.0, "s"),
    "resync_seconds": ("<=", 1.0, "s"),
    "resync_embeddings": ("==", 0.0, ""),
    "sync_vs_raw_ratio": (">=", 0.9, ""),
    "daemon_rss_mb": ("<=", 300.0, "MB"),
}

# Generous bounds so no loop can run away.
SYNC_TIMEOUT_S = 3600.0
RESYNC_TIMEOUT_S = 300.0


def verdict(key: str, value: float) -> str:
    """'met' / 'NOT met' against the brief's target, or '' when there is none."""
    if key not in TARGETS or value != value:  # NaN
        return ""
    op, bound, _ = TARGETS[key]
    ok = {"<=": value <= bound, ">=": value >= bound, "==": value == bound}[op]
    return "met" if ok else "NOT met"


def summary_rows(fig: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(figure, value, target, verdict) rows of the final table."""
    rows: list[tuple[str, str, str, str]] = []

    def add(label: str, value: float, fmt: str, key: str = "") -> None:
        target = ""
        if key in TARGETS:
            op, bound, unit = TARGETS[key]
            target = f"{op} {bound:g} {unit}".strip()
        rows.append((label, format(value, fmt), target, verdict(key, value) if key else ""))

    b, s, r = fig["raw_embedder"], fig["first_sync"], fig["resync"]
    add("corpus chunks (sync report)", s["chunks_total"], "d")
    add("raw embedder, chunks/s (median of reps)", b["chunks_per_s"], ".1f")
    add("first sync, chunks/s", s["chunks_per_s"], ".1f")
    add("first sync / raw embedder", s["ratio_to_raw"], ".3f", "sync_vs_raw_ratio")
    add("unchanged re-sync, report seconds (median)", r["seconds_median"], ".3f", "resync_seconds")
    add("unchanged re-sync, command wall s (median)", r["wall_median_s"], ".3f")
    add(
        "unchanged re-sync, embeddings (max)",
        r["embeddings_computed_max"],
        "d",
        "resync_embeddings",
    )
    f = fig["first_search"]
    add("first search after start, s (median)", f["seconds_median"], ".3f", "first_search_s")
    q = fig["search_sequential"]
    add("warm search HTTP p50, ms", q["p50_ms"], ".2f", "search_p50_ms")
    add("warm search HTTP p90, ms", q["p90_ms"], ".2f")
    add("warm search HTTP p99, ms", q["p99_ms"], ".2f", "search_p99_ms")
    add("warm search HTTP mean, ms", q["mean_ms"], ".2f")
    add("  server total (embed+retrieve+fetch) median, ms", q["server_total_median_ms"], ".2f")
    for phase, ms in q["server_timings_median_ms"].items():
        add(f"  server {phase} median, ms", ms, ".2f")
    add("  HTTP + framework overhead (p50 - server), ms", q["http_overhead_median_ms"], ".2f")
    cc = fig["search_concurrent"]
    add(f"concurrent ({cc['threads']} clients) throughput, req/s", cc["throughput_rps"], ".1f")
    add(f"concurrent ({cc['threads']} clients) p50, ms", cc["p50_ms"], ".2f")
    add(f"concurrent ({cc['threads']} clients) p99, ms", cc["p99_ms"], ".2f")
    m = fig["memory"]
    add("daemon RSS after warm search, MB", m["daemon_rss_after_warm_mb"], ".1f", "daemon_rss_mb")
    add("daemon RSS after concurrent run, MB", m["daemon_rss_after_concurrent_mb"], ".1f")
    add("daemon peak RSS (VmHWM), MB", m["daemon_hwm_mb"], ".1f")
    add("sync process RSS at end of first sync, MB", m["sync_rss_last_mb"], ".1f")
    add("sync process peak RSS (VmHWM), MB", m["sync_hwm_mb"], ".1f")
    return rows


# -- main ---------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--chunks", type=int, default=10_000, help="target corpus size in chunks")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "out", help="output folder")
    p.add_argument("--queries", type=int, default=300, help="queries in the timed search runs")
    p.add_argument("--port", type=int, default=0, help="daemon port (0: pick a free one)")
    p.add_argument("--seed", type=int, default=20240601, help="corpus and query seed")
    p.add_argument("--baseline-chunks", type=int, default=1500, help="raw embedder sample size")
    p.add_argument("--baseline-reps", type=int, default=3)
    p.add_argument("--resyncs", type=int, default=5)
    p.add_argument("--restarts", type=int, default=3, help="time-to-first-search runs")
    p.add_argument("--warmup", type=int, default=20, help="warm-up requests before timing")
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("-k", type=int, default=5, help="results per search")
    p.add_argument("--keep", action="store_true", help="keep the corpus and data dirs")
    args = p.parse_args(argv)
    if args.chunks < 10 or args.queries < 10 or min(args.resyncs, args.restarts) < 1:
        p.error("--chunks and --queries must be >= 10, --resyncs and --restarts >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run every phase and print the figures."""
    args = parse_args(argv)
    out, stamp, logs = output_folders(args.out, "")
    work = Path(tempfile.mkdtemp(prefix="ragvisor-bench-"))
    meter = LoadMeter()
    corpus, data_dir, base_dir = work / "corpus", work / "data", work / "baseline-data"
    figures: dict[str, Any] = run_header(stamp, args)
    if any(k.startswith("RAGVISOR_") for k in os.environ):
        progress("note: RAGVISOR_* variables in the environment are ignored by this benchmark")
    try:
        settings = load_settings(
            None, {}, {"corpus": {"paths": [str(corpus)]}, "store": {"data_dir": str(base_dir)}}
        )
        chunking = ChunkingSpec(
            size_chars=settings.corpus.chunk_size_chars,
            overlap_chars=settings.corpus.chunk_overlap_chars,
        )
        # 1. corpus and queries
        meter.mark("corpus")
        model_path = model_dir(settings.embedder, Path(settings.store.data_dir))
        rng = random.Random(args.seed)
        vocabulary = load_vocabulary(model_path / "tokenizer.json", 4000, rng)
        progress(f"building a corpus of ~{args.chunks} chunks in {corpus}")
        built = build_corpus(corpus, vocabulary, args.chunks, args.seed, chunking)
        qgen = ProseGenerator(vocabulary, args.seed + 1)
        queries = [qgen.query() for _ in range(args.queries)]
        built["vocabulary_words"] = len(vocabulary)
        built["queries"] = len(queries)
        built["query_examples"] = queries[:5]
        figures["corpus"] = built
        progress(f"corpus: {built['files']} files, {built['chunks_by_chunker']} chunks")

        # 2. raw embedder baseline
        meter.mark("raw_embedder")
        progress(f"raw embedder baseline on {args.baseline_chunks} chunk texts")
        baseline, _ = raw_baseline(settings, args.baseline_chunks, args.baseline_reps)
        figures["raw_embedder"] = baseline

        # 3. first sync
        meter.mark("first_sync")
        eta = baseline["corpus_chunks_by_chunker"] / baseline["chunks_per_s"]
        progress(f"first sync into a fresh data dir (expect ~{eta:.0f}s)")
        first = run_sync(
            corpus, data_dir, logs / "sync-first.log", timeout_s=SYNC_TIMEOUT_S, watch=True
        )
        chunks_total = sum(first["chunks"].values()) - first["chunks"].get("deleted", 0)
        first_rate = first["embeddings_computed"] / first["seconds"]
        figures["first_sync"] = {
            "report": first,
            "chunks_total": chunks_total,
            "chunks_per_s": first_rate,
            "ratio_to_raw": first_rate / baseline["chunks_per_s"],
        }
        if chunks_total != baseline["corpus_chunks_by_chunker"]:
            progress(
                f"WARNING: sync stored {chunks_total} chunks, the chunker counted "
                f"{baseline['corpus_chunks_by_chunker']}"
            )

        # 4. unchanged re-syncs
        meter.mark("resync")
        resyncs = []
        for i in range(args.resyncs):
            report = run_sync(
                corpus, data_dir, logs / "sync-resync.log", timeout_s=RESYNC_TIMEOUT_S
            )
            resyncs.append(report)
            progress(
                f"re-sync {i + 1}/{args.resyncs}: {report['seconds']:.3f}s in the report, "
                f"{report['wall_s']:.3f}s wall, {report['embeddings_computed']} embeddings"
            )
        computed = [int(r["embeddings_computed"]) for r in resyncs]
        figures["resync"] = {
            "seconds": [r["seconds"] for r in resyncs],
            "wall_s": [r["wall_s"] for r in resyncs],
            "seconds_median": median([r["seconds"] for r in resyncs]),
            "wall_median_s": median([r["wall_s"] for r in resyncs]),
            "embeddings_computed": computed,
            "embeddings_computed_max": max(computed),
            "documents": resyncs[-1]["documents"],
        }

        # 5. time to first search (and where it goes)
        meter.mark("first_search")
        runs = []
        for i in range(args.restarts):
            port = args.port or free_port()
            run = first_search(corpus, data_dir, queries[i], port, logs / "serve-first.log")
            runs.append(run)
            progress(f"first search {i + 1}/{args.restarts}: {run['seconds']:.3f}s")
        not_phases = {"seconds", "attempts", "rss_at_first_search_mb"}
        phases = [k for k in runs[0] if k not in not_phases]
        figures["first_search"] = {
            "seconds": [r["seconds"] for r in runs],
            "seconds_median": median([r["seconds"] for r in runs]),
            "phases_median_s": {p: median([r[p] for r in runs if p in r]) for p in phases},
        }
        progress("start-up probe: each step in a fresh interpreter")
        meter.mark("startup_probe")
        figures["startup_probe_s"] = startup_probe(corpus, data_dir, queries[0], args.restarts)

        # 6./7. warm search and memory
        meter.mark("warm_search")
        port = args.port or free_port()
        cmd = serve_cmd(corpus, data_dir, port)
        with running(cmd, clean_env(**SERVE_ENV), logs / "serve-warm.log") as proc:
            wait_ready(port, proc, FIRST_SEARCH_TIMEOUT_S)
            progress(f"warm search: {args.warmup} warm-up + {len(queries)} sequential requests")
            seq = sequential_search(port, queries, args.warmup, args.k)
            rss_after_warm = rss_mb(proc.pid)
            progress(f"concurrent search: {args.concurrency} clients")
            conc = concurrent_search(port, queries, args.concurrency, args.k)
            rss_after_conc = rss_mb(proc.pid)
            hwm = hwm_mb(proc.pid)
        figures["search_sequential"] = seq
        figures["search_concurrent"] = conc
        meter.mark(None)
        figures["noise"] = meter.phases
        figures["memory"] = {
            "daemon_rss_after_warm_mb": rss_after_warm,
            "daemon_rss_after_concurrent_mb": rss_after_conc,
            "daemon_hwm_mb": hwm,
            "daemon_rss_at_first_search_mb_median": median(
                [r["rss_at_first_search_mb"] for r in runs]
            ),
            "sync_rss_last_mb": first.get("rss_last_mb", float("nan")),
            "sync_rss_max_sampled_mb": first.get("rss_max_sampled_mb", float("nan")),
            "sync_hwm_mb": first.get("hwm_mb", float("nan")),
        }
    finally:
        if args.keep:
            progress(f"kept corpus and data in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    report_figures(figures, out, stamp, logs)
    return 0


def report_figures(figures: dict[str, Any], out: Path, stamp: str, logs: Path) -> None:
    """Print the details and the summary table; write the JSON file."""
    c, b = figures["corpus"], figures["raw_embedder"]
    s, r = figures["first_sync"], figures["resync"]
    print("== ragvisor search benchmark ==")
    print(
        f"machine: {figures['machine']['cpus']} CPUs, Python {figures['machine']['python']}, "
        f"{figures['machine']['mem_total_mb']:.0f} MB RAM"
    )
    print(
        f"corpus: {c['files']} files, {c['bytes'] / 1e6:.1f} MB, {s['chunks_total']} chunks "
        f"(chunker counted {b['corpus_chunks_by_chunker']}), "
        f"mean chunk {b['corpus_mean_chunk_chars']:.0f} chars, {c['queries']} queries "
        f"(e.g. {c['query_examples'][0]!r})"
    )
    print(
        f"raw embedder: {b['model']}, batch {b['batch_size']}, {b['threads']} threads; "
        f"{b['sample_chunks']} chunks of {b['sample_mean_chars']:.0f} chars / "
        f"{b['sample_mean_tokens']:.0f} tokens ({b['sample_over_max_tokens']} over max_tokens); "
        f"reps {', '.join(f'{x:.1f}' for x in b['chunks_per_s_reps'])} chunks/s; "
        f"load {b['model_load_s']:.2f}s"
    )
    rep = s["report"]
    print(
        f"first sync: {rep['embeddings_computed']} embeddings in {rep['seconds']:.1f}s "
        f"(wall {rep['wall_s']:.1f}s) = {s['chunks_per_s']:.1f} chunks/s vs raw "
        f"{b['chunks_per_s']:.1f} -> ratio {s['ratio_to_raw']:.3f}"
    )
    print(
        f"re-sync x{len(r['seconds'])}: report seconds "
        f"{', '.join(f'{x:.3f}' for x in r['seconds'])}; wall "
        f"{', '.join(f'{x:.3f}' for x in r['wall_s'])}; embeddings {r['embeddings_computed']}; "
        f"documents {r['documents']}"
    )
    if r["embeddings_computed_max"] != 0:
        print(
            "WARNING: an unchanged re-sync computed embeddings "
            f"({r['embeddings_computed']}) — the hash check is not working"
        )
    f = figures["first_search"]
    print(
        "first search: "
        + ", ".join(f"{x:.3f}s" for x in f["seconds"])
        + "; phases (median s): "
        + ", ".join(f"{k} {v:.3f}" for k, v in f["phases_median_s"].items())
    )
    print(
        "start-up probe (median s, fresh interpreter): "
        + ", ".join(f"{k} {v:.3f}" for k, v in figures["startup_probe_s"].items())
    )
    q, cc = figures["search_sequential"], figures["search_concurrent"]
    print(
        f"warm search: {q['requests']} requests, {q['errors']} errors, "
        f"{q['empty_results']} empty; max {q['max_ms']:.1f} ms"
    )
    if q["errors"] or cc["errors"]:
        print(
            f"WARNING: search errors: sequential {q['error_examples']}, concurrent {cc['errors']}"
        )
    print(
        f"concurrent: {cc['requests']} requests over {cc['threads']} clients in {cc['wall_s']:.2f}s"
    )
    finish_report(
        figures,
        summary_rows(figures),
        out / f"search_bench-{stamp}.json",
        logs,
        "those figures are pessimistic — rerun on a quiet box to compare with the targets",
    )


if __name__ == "__main__":
    sys.exit(main())
