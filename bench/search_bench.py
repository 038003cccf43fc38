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
import datetime as dt
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from tokenizers import Tokenizer

# bench/ is the script's folder, so the shared library imports directly.
from benchlib import (
    POLL_INTERVAL_S,
    PYTHON,
    REPO,
    SERVE_ENV,
    LoadMeter,
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
from ragvisor.app import corpus_spec
from ragvisor.config import load_settings
from ragvisor.core.chunking import ChunkingSpec, chunk_document
from ragvisor.core.documents import read_document, scan_corpus
from ragvisor.embed.onnx import TOKENIZER_FILE, build_onnx_embedder, model_dir

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
FIRST_SEARCH_TIMEOUT_S = 120.0
REQUEST_TIMEOUT_S = 10.0
SEARCH_PHASE_BUDGET_S = 600.0


# -- statistics ---------------------------------------------------------------------------------


# -- synthetic corpus ---------------------------------------------------------------------------

# Function words make the text read like prose; content words come from the tokenizer's
# vocabulary, which is pinned by sha256 (see ragvisor.embed.model_files), so the corpus is the
# same on every machine for a given seed.
_FUNCTION_WORDS_TEXT = (
    "the of and to a in is that for it as with was on be by this are or from at which an "
    "not but have has can will when if then so all more also its into only than each "
    "other these there their they we our you your it's one two some any most such very "
    "how what where why does should must may after before between during without within "
    "over under"
)
FUNCTION_WORDS = _FUNCTION_WORDS_TEXT.split()


def load_vocabulary(tokenizer_json: Path, size: int, rng: random.Random) -> list[str]:
    """Whole, lowercase alphabetic words of the tokenizer vocabulary, most frequent first.

    BERT-style vocabularies list whole words roughly by corpus frequency, so rank order doubles
    as a Zipf order. A few compounds of two words are mixed in so some words split into several
    word pieces, as real technical prose does.
    """
    vocab: dict[str, int] = json.loads(tokenizer_json.read_text(encoding="utf-8"))["model"]["vocab"]
    words = [
        w
        for w, _ in sorted(vocab.items(), key=lambda item: item[1])
        if w.isascii() and w.isalpha() and w.islower() and 3 <= len(w) <= 14
    ][:size]
    compounds = [rng.choice(words[200:]) + rng.choice(words[200:]) for _ in range(size // 20)]
    return words + compounds


class ProseGenerator:
    """Seeded Markdown prose: titles, `##` sections, paragraphs, the odd list and code span."""

    def __init__(self, vocabulary: list[str], seed: int) -> None:
        self.rng = random.Random(seed)
        self.words = vocabulary
        # Zipf-like weights over rank: frequent words recur, rare ones give queries their bite.
        self.weights = [1.0 / (rank + 20) for rank in range(len(vocabulary))]
        self._cum = list(np.cumsum(self.weights))

    def word(self) -> str:
        """One word: a function word a third of the time, else a Zipf-weighted content word."""
        if self.rng.random() < 0.33:
            return self.rng.choice(FUNCTION_WORDS)
        return self.rng.choices(self.words, cum_weights=self._cum, k=1)[0]

    def content_word(self) -> str:
        """A content word from the less frequent part of the vocabulary (for titles, queries)."""
        return self.rng.choice(self.words[100:])

    def sentence(self) -> str:
        """One sentence of 6-22 words, sometimes with a comma, number or code span."""
        n = self.rng.randint(6, 22)
        words = [self.word() for _ in range(n)]
        if self.rng.random() < 0.3:
            words.insert(self.rng.randint(1, n - 1), str(self.rng.choice([2, 3, 8, 16, 42, 100])))
        if self.rng.random() < 0.15:
            words.insert(self.rng.randint(1, n), f"`{self.content_word()}_{self.content_word()}`")
        if n > 10 and self.rng.random() < 0.4:
            words[self.rng.randint(3, n - 4)] += ","
        text = " ".join(words)
        return text[0].upper() + text[1:] + self.rng.choice(".....?!")

    def paragraph(self) -> str:
        """3-6 sentences, or now and then a short bullet list."""
        if self.rng.random() < 0.12:
            return "\n".join(f"- {self.sentence()}" for _ in range(self.rng.randint(3, 5)))
        return " ".join(self.sentence() for _ in range(self.rng.randint(3, 6)))

    def title(self) -> str:
        """A 2-5 word title."""
        words = [self.content_word() for _ in range(self.rng.randint(2, 5))]
        return " ".join(words).capitalize()

    def document(self, target_bytes: int) -> str:
        """A Markdown document of roughly ``target_bytes``: a title, an intro and sections."""
        parts = [f"# {self.title()}", self.paragraph()]
        size = sum(len(p) + 2 for p in parts)
        while size < target_bytes:
            section = [f"## {self.title()}"]
            section_size = 0
            section_target = self.rng.randint(500, 900)
            while section_size < section_target:
                paragraph = self.paragraph()
                section.append(paragraph)
                section_size += len(paragraph) + 2
            parts.extend(section)
            size += sum(len(p) + 2 for p in section)
        return "\n\n".join(parts) + "\n"

    def query(self) -> str:
        """A short query: 2-5 content words, sometimes phrased as a question."""
        words = [self.content_word() for _ in range(self.rng.randint(2, 5))]
        if self.rng.random() < 0.25:
            return f"how does {' '.join(words)} work"
        return " ".join(words)


def build_corpus(
    corpus: Path, vocabulary: list[str], target_chunks: int, seed: int, chunking: Any
) -> dict[str, Any]:
    """Write files into ``corpus`` until the real chunker counts ``target_chunks`` chunks."""
    gen = ProseGenerator(vocabulary, seed)
    corpus.mkdir(parents=True, exist_ok=True)
    chunks = files = total_bytes = 0
    per_dir = 200
    while chunks < target_chunks:
        folder = corpus / f"area-{files // per_dir:03d}"
        folder.mkdir(exist_ok=True)
        path = folder / f"note-{files:05d}.md"
        text = gen.document(gen.rng.randint(2400, 3600))
        path.write_text(text, encoding="utf-8")
        doc = read_document(corpus, path, max_file_bytes=2_000_000)
        chunks += len(chunk_document(doc, chunking))
        files += 1
        total_bytes += len(text.encode())
        if files % 500 == 0:
            progress(f"corpus: {files} files, {chunks} chunks so far")
    return {"files": files, "chunks_by_chunker": chunks, "bytes": total_bytes}


# -- processes ----------------------------------------------------------------------------------


# -- phases -------------------------------------------------------------------------------------


def raw_baseline(
    settings: Any, sample_size: int, repetitions: int
) -> tuple[dict[str, Any], list[Any]]:
    """The embedder at its best on real chunk texts: the whole sample in one call, so it can
    group every text by length; chunks/s as a median. The sync hands it smaller windows, so
    the ratio measures everything the sync adds (windows, hashing, SQLite commits)."""
    e = settings.embedder
    model_path = model_dir(settings.embedder, Path(settings.store.data_dir))
    load_started = time.perf_counter()
    embedder = build_onnx_embedder(settings.embedder, Path(settings.store.data_dir))
    load_s = time.perf_counter() - load_started
    chunking = ChunkingSpec(
        size_chars=settings.corpus.chunk_size_chars,
        overlap_chars=settings.corpus.chunk_overlap_chars,
    )
    scan = scan_corpus(corpus_spec(settings))
    all_chunks = [c for doc in scan.documents for c in chunk_document(doc, chunking)]
    # Distinct chunk texts in document order, as the sync queues them.
    seen: set[str] = set()
    sample: list[str] = []
    for chunk in all_chunks:
        if chunk.text_sha256 not in seen:
            seen.add(chunk.text_sha256)
            sample.append(chunk.text)
        if len(sample) >= sample_size:
            break
    tokenizer = Tokenizer.from_file(str(model_path / TOKENIZER_FILE))
    token_counts = [len(enc.ids) for enc in tokenizer.encode_batch(sample)]
    batch = embedder.batch_size
    embedder.embed(sample[:batch])  # first run allocates; the sync pays this once too
    rates: list[float] = []
    for rep in range(repetitions):
        started = time.perf_counter()
        embedder.embed(sample)
        seconds = time.perf_counter() - started
        rates.append(len(sample) / seconds)
        progress(f"raw embedder rep {rep + 1}/{repetitions}: {rates[-1]:.1f} chunks/s")
    result = {
        "model": embedder.fingerprint.key,
        "model_load_s": load_s,
        "batch_size": batch,
        "threads": e.threads,
        "max_tokens": e.max_tokens,
        "sample_chunks": len(sample),
        "sample_mean_chars": statistics.fmean(len(t) for t in sample),
        "sample_mean_tokens": statistics.fmean(token_counts),
        "sample_over_max_tokens": sum(1 for n in token_counts if n > e.max_tokens),
        "chunks_per_s_reps": rates,
        "chunks_per_s": median(rates),
        "corpus_documents_scanned": len(scan.documents),
        "corpus_chunks_by_chunker": len(all_chunks),
        "corpus_mean_chunk_chars": statistics.fmean(len(c.text) for c in all_chunks),
    }
    del embedder
    return result, all_chunks


STARTUP_PROBE = r"""
import json, sys, time
t = {}
s = time.perf_counter()
import ragvisor.app as app_mod
t["import_ragvisor_app"] = time.perf_counter() - s
s = time.perf_counter()
import uvicorn, fastapi, apscheduler.schedulers.background
import ragvisor.web.app
t["import_web_stack"] = time.perf_counter() - s
from pathlib import Path
from ragvisor.config import load_settings
from ragvisor.core.retrieval import SearchMode
from ragvisor.core.hashing import file_sha256
from ragvisor.embed.onnx import OnnxEmbedder
from ragvisor.store.sqlite import SqliteStore
settings = load_settings(None, {}, {"corpus": {"paths": [sys.argv[1]]},
                                    "store": {"data_dir": sys.argv[2]}})
s = time.perf_counter()
store = SqliteStore(Path(settings.store.data_dir), busy_timeout_s=settings.store.busy_timeout_s)
t["open_store"] = time.perf_counter() - s
s = time.perf_counter()
import ragvisor.embed.onnx as onnx_mod
model_dir = onnx_mod.model_dir(settings.embedder, Path(settings.store.data_dir))
t["resolve_model_dir"] = time.perf_counter() - s
s = time.perf_counter()
file_sha256(model_dir / "model.onnx")
t["sha256_model_once"] = time.perf_counter() - s
e = settings.embedder
s = time.perf_counter()
embedder = OnnxEmbedder(model_dir, name=e.model_name, batch_size=e.batch_size,
                        threads=e.threads, max_tokens=e.max_tokens)
t["load_embedder"] = time.perf_counter() - s
s = time.perf_counter()
n = store.load_index(embedder.fingerprint)
t["load_index"] = time.perf_counter() - s
s = time.perf_counter()
embedder.embed(["warm-up"])
t["warmup_embed"] = time.perf_counter() - s
retriever = app_mod.Retriever(store, embedder, app_mod.QueryLimits(
    max_query_chars=1000, max_k=50, snippet_chars=240))
s = time.perf_counter()
retriever.search(sys.argv[3], 5, SearchMode.DENSE)
t["first_search_in_process"] = time.perf_counter() - s
t["chunks_indexed"] = n
print(json.dumps(t))
"""


def startup_probe(corpus: Path, data_dir: Path, query: str, runs: int) -> dict[str, Any]:
    """Time each start-up step in a fresh interpreter (medians over ``runs``)."""
    samples: list[dict[str, float]] = []
    bare: list[float] = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([PYTHON, "-c", "pass"], check=True, env=clean_env(), timeout=60)
        bare.append(time.perf_counter() - started)
        started = time.perf_counter()
        done = subprocess.run(
            [PYTHON, "-c", STARTUP_PROBE, str(corpus), str(data_dir), query],
            check=True,
            env=clean_env(),
            capture_output=True,
            timeout=120,
            cwd=REPO,
        )
        sample = json.loads(done.stdout.decode().strip().splitlines()[-1])
        sample["probe_wall"] = time.perf_counter() - started
        samples.append(sample)
    keys = samples[0].keys()
    result = {k: median([s[k] for s in samples]) for k in keys}
    result["python_start_bare"] = median(bare)
    return result


def parse_log_times(log_path: Path, offset: int) -> dict[str, float]:
    """Wall-clock times (epoch s) of the daemon's start-up events in its JSON log."""
    events: dict[str, float] = {}
    with log_path.open("rb") as handle:
        handle.seek(offset)
        for raw in handle:
            try:
                record = json.loads(raw)
                stamp = dt.datetime.fromisoformat(record["timestamp"]).timestamp()
            except (ValueError, KeyError, TypeError):
                continue
            name = str(record.get("event", ""))
            key = {
                "app.embedder_loaded": "embedder_loaded",
                "app.ready": "ready",
                "Application startup complete.": "startup_complete",
                "http.request": "first_request_logged",
            }.get(name)
            if key is None and name.startswith("Uvicorn running on"):
                key = "listening"
            if key and key not in events:
                events[key] = stamp
                if key == "embedder_loaded":
                    events["build_services_start"] = stamp - record["duration_ms"] / 1000
    return events


def first_search(
    corpus: Path, data_dir: Path, query: str, port: int, log_path: Path
) -> dict[str, float]:
    """Seconds from just before Popen to the first 200 of /search, plus the log's phases."""
    url = f"http://127.0.0.1:{port}/search"
    offset = log_path.stat().st_size if log_path.exists() else 0
    wall0 = time.time()
    t0 = time.perf_counter()
    with running(serve_cmd(corpus, data_dir, port), clean_env(**SERVE_ENV), log_path) as proc:
        attempts = 0
        first: float | None = None
        with httpx.Client(timeout=httpx.Timeout(1.0, connect=0.2)) as client:
            while time.perf_counter() - t0 < FIRST_SEARCH_TIMEOUT_S and attempts < 10_000:
                attempts += 1
                if proc.poll() is not None:
                    raise RuntimeError(f"ragvisor serve exited {proc.returncode}; see {log_path}")
                try:
                    response = client.get(url, params={"q": query, "k": 5})
                    if response.status_code == 200:
                        first = time.perf_counter() - t0
                        break
                except httpx.TransportError:
                    pass
                time.sleep(POLL_INTERVAL_S)
        if first is None:
            raise TimeoutError(f"no 200 from {url} within {FIRST_SEARCH_TIMEOUT_S:.0f}s")
        rss = rss_mb(proc.pid)
    events = parse_log_times(log_path, offset)
    result = {"seconds": first, "attempts": attempts, "rss_at_first_search_mb": rss}
    order = [
        ("python_start_imports_settings", "build_services_start"),
        ("store_open_model_check_onnx_load", "embedder_loaded"),
        ("index_load_warmup_embed", "ready"),
        ("uvicorn_startup", "startup_complete"),
    ]
    previous = wall0
    for label, key in order:
        if key in events:
            result[label] = events[key] - previous
            previous = events[key]
    result["poll_until_first_200"] = wall0 + first - previous
    return result


def sequential_search(port: int, queries: list[str], warmup: int, k: int) -> dict[str, Any]:
    """Warm up, then one keep-alive client sends every query in turn."""
    url = f"http://127.0.0.1:{port}/search"
    latencies: list[float] = []
    server: dict[str, list[float]] = {}
    errors: list[str] = []
    empty = 0
    budget_end = time.perf_counter() + SEARCH_PHASE_BUDGET_S
    with httpx.Client(timeout=REQUEST_TIMEOUT_S) as client:
        for i in range(warmup):
            client.get(url, params={"q": queries[i % len(queries)], "k": k})
        for i, query in enumerate(queries):
            if time.perf_counter() > budget_end:
                errors.append(f"time budget of {SEARCH_PHASE_BUDGET_S:.0f}s spent after {i}")
                break
            started = time.perf_counter()
            response = client.get(url, params={"q": query, "k": k})
            latencies.append((time.perf_counter() - started) * 1000)
            if response.status_code != 200:
                errors.append(f"{response.status_code}: {response.text[:200]}")
                continue
            body = response.json()
            if not body.get("results"):
                empty += 1
            for phase, ms in body.get("timings_ms", {}).items():
                server.setdefault(phase, []).append(float(ms))
            if (i + 1) % 100 == 0:
                progress(f"sequential search: {i + 1}/{len(queries)}")
    server_total = [sum(parts) for parts in zip(*server.values(), strict=True)] if server else []
    return {
        "requests": len(latencies),
        "errors": len(errors),
        "error_examples": errors[:3],
        "empty_results": empty,
        "p50_ms": pct(latencies, 50),
        "p90_ms": pct(latencies, 90),
        "p99_ms": pct(latencies, 99),
        "mean_ms": statistics.fmean(latencies) if latencies else float("nan"),
        "max_ms": max(latencies) if latencies else float("nan"),
        "server_timings_median_ms": {p: median(v) for p, v in server.items()},
        "server_total_median_ms": median(server_total),
        "http_overhead_median_ms": median(latencies) - median(server_total),
    }


def concurrent_search(port: int, queries: list[str], threads: int, k: int) -> dict[str, Any]:
    """``threads`` clients, each with its own keep-alive connection, share the queries."""
    url = f"http://127.0.0.1:{port}/search"
    latencies: list[list[float]] = [[] for _ in range(threads)]
    errors = [0] * threads
    budget_end = time.perf_counter() + SEARCH_PHASE_BUDGET_S
    barrier = threading.Barrier(threads + 1)

    def worker(index: int) -> None:
        mine = queries[index::threads]
        with httpx.Client(timeout=REQUEST_TIMEOUT_S) as client:
            try:
                client.get(url, params={"q": mine[0], "k": k})  # open the connection
            except httpx.HTTPError:
                barrier.abort()
                raise
            barrier.wait(timeout=60)
            for query in mine:
                if time.perf_counter() > budget_end:
                    break
                started = time.perf_counter()
                try:
                    response = client.get(url, params={"q": query, "k": k})
                    ok = response.status_code == 200
                except httpx.HTTPError:
                    ok = False
                latencies[index].append((time.perf_counter() - started) * 1000)
                errors[index] += 0 if ok else 1

    pool = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(threads)]
    for thread in pool:
        thread.start()
    barrier.wait(timeout=60)
    started = time.perf_counter()
    for thread in pool:
        thread.join(timeout=SEARCH_PHASE_BUDGET_S + 60)
    wall = time.perf_counter() - started
    flat = [x for part in latencies for x in part]
    return {
        "threads": threads,
        "requests": len(flat),
        "errors": sum(errors),
        "wall_s": wall,
        "throughput_rps": len(flat) / wall if wall > 0 else float("nan"),
        "p50_ms": pct(flat, 50),
        "p99_ms": pct(flat, 99),
    }


# -- report -------------------------------------------------------------------------------------


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
