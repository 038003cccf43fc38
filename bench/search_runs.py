"""The search benchmark's measurements: the raw embedder baseline, time to first search (with
the in-process start-up probe and the daemon log's phase times), and warm search latency over
HTTP, sequential and concurrent. Each returns a dict of figures; search_bench.py reports them.
"""

from __future__ import annotations

import datetime as dt
import json
import statistics
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from tokenizers import Tokenizer

# bench/ is the script's folder, so the shared library imports directly.
from benchlib import (
    POLL_INTERVAL_S,
    PYTHON,
    REPO,
    SERVE_ENV,
    clean_env,
    median,
    pct,
    progress,
    rss_mb,
    running,
    serve_cmd,
)
from ragvisor.app import corpus_spec
from ragvisor.core.chunking import ChunkingSpec, chunk_document
from ragvisor.core.documents import scan_corpus
from ragvisor.embed.onnx import TOKENIZER_FILE, build_onnx_embedder, model_dir

# Generous bounds so no loop can run away.
FIRST_SEARCH_TIMEOUT_S = 120.0
REQUEST_TIMEOUT_S = 10.0
SEARCH_PHASE_BUDGET_S = 600.0


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
