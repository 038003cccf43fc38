"""The dense index's scale for bench/serving_bench.py: warm ``/search`` over real HTTP at 1k, 10k
and 100k chunks, beside the exact index's own cost per search measured in-process.

How the store is built (the report says it too): the serving bench's synthetic corpus, synced
for real (``--chunks``, 1,000 by default: the first size), then grown in place through
``Store.commit_document``, as a sync commits, with bench/store_corpus.py's fill — real
docstring passages of the standard library and the venv, embedded with the daemon's MiniLM
(cached under bench/out/cache), then perturbed copies of their vectors up to 100k chunks
(embedding 100k real texts would take about 45 minutes on this box). Queries are passages held
out of the fill, cut to their first sentence, and go through a real daemon on one keep-alive
HTTP connection, embedded by the daemon itself (search_runs.sequential_search).

Run as a script (``serving_scale.py BUDGET_MS SEED``), it prints `dense_costs` as JSON: what
`dense_in_child` reads from a fresh interpreter with the OpenBLAS threads it wants.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# bench/ is the script's folder, so the shared library imports directly.
from benchlib import (
    PYTHON,
    SERVE_ENV,
    clean_env,
    free_port,
    hwm_mb,
    progress,
    rss_mb,
    running,
    serve_cmd,
    wait_ready,
)
from ragvisor.config import load_settings
from ragvisor.core.model import Fingerprint
from ragvisor.embed.onnx import build_onnx_embedder
from ragvisor.store.dense_index import DenseIndex
from ragvisor.store.sqlite import SqliteStore
from search_runs import sequential_search
from store_corpus import (
    CACHE,
    QUERY_MIN_WORDS,
    Passage,
    embed_cached,
    fill_store,
    passages,
    perturbed,
    query_of,
)

SCALE_SIZES = (1_000, 10_000, 100_000)
DENSE_REPS = 200
DIMENSIONS = 384
FILL_DOCUMENT_CHUNKS = 100
FILL_THREADS = 2
START_TIMEOUT_S = 300.0  # a daemon loading 100k vectors on a busy box
# The brief's p50 targets for the embedded store, by size; sizes not named have none.
P50_TARGET_MS = {10_000: 10.0, 100_000: 25.0}
P99_TARGET_MS = {10_000: 50.0}
BUILT_HOW = (
    "synced synthetic corpus, grown through Store.commit_document with real MiniLM vectors of "
    "{real} docstring passages and perturbed copies of them (bench/store_corpus.py)"
)


@dataclass(frozen=True, slots=True)
class Fill:
    """What grows the store: passages for the texts, one vector per fill chunk, and queries."""

    items: list[Passage]
    vectors: Any
    queries: list[str]


def make_fill(
    data_dir: Path, real: int, total: int, queries: int, seed: int
) -> tuple[Fill, Fingerprint]:
    """`real` passages embedded with the daemon's own model (same settings, same data dir: the
    same fingerprint), their vectors perturbed up to `total`; `queries` held-out first
    sentences. Returns the fill and the fingerprint to commit it under."""
    settings = load_settings(None, {}, {"store": {"data_dir": str(data_dir)}})
    embedder = build_onnx_embedder(settings.embedder, data_dir)
    found = passages(real + 3 * queries)
    items, rest = found[:real], found[real:]
    asked = [q for q in map(query_of, rest) if len(q.split()) >= QUERY_MIN_WORDS][:queries]
    progress(f"scale: {len(items)} real passages for the fill (embedded once, then cached)")
    vectors, _ = embed_cached(embedder, [p.text for p in items], CACHE)
    return Fill(items, perturbed(vectors, total, seed), asked), embedder.fingerprint


def warm_http(corpus: Path, data_dir: Path, log: Path, fill: Fill, warmup: int) -> dict[str, Any]:
    """One daemon (searches only) on the store as it is: warm-up requests, then every query
    in turn on one keep-alive connection; the daemon's RSS and peak after."""
    port = free_port()
    env = clean_env(**SERVE_ENV, RAGVISOR_GENERATOR__BACKEND="none")
    with running(serve_cmd(corpus, data_dir, port), env, log) as proc:
        started = time.perf_counter()
        wait_ready(port, proc, START_TIMEOUT_S)
        ready_s = time.perf_counter() - started
        result = sequential_search(port, fill.queries, warmup, 5)
        result.update(ready_s=ready_s, rss_mb=rss_mb(proc.pid), hwm_mb=hwm_mb(proc.pid))
    return result


def http_at_scale(
    corpus: Path, data_dir: Path, logs: Path, real: int, queries: int, warmup: int, seed: int
) -> dict[str, Any]:
    """Warm `/search` p50/p99 at each of `SCALE_SIZES` (the synced store first, as it is), the
    store grown between sizes; and where the p50 would reach the 100k target, extrapolated
    linearly from the two largest sizes."""
    store = SqliteStore(data_dir)
    try:
        synced = int(store.stats()["chunks"])
    finally:
        store.close()
    sizes = [synced, *(s for s in SCALE_SIZES if s > synced)]
    fill, fingerprint = make_fill(data_dir, real, sizes[-1] - synced, queries, seed)
    fill_root = (data_dir.parent / "corpus-fill").resolve()  # the fill's documents' root
    fill_root.mkdir(exist_ok=True)
    by_size: dict[str, Any] = {}
    for size in sizes:
        grown = fill_to(data_dir, fill, fingerprint, fill_root, synced, size)
        progress(f"scale: {size} chunks, warm /search over HTTP ({len(fill.queries)} queries)")
        by_size[str(size)] = {
            "fill_s": grown,
            **warm_http(corpus, data_dir, logs / f"serve-scale-{size}.log", fill, warmup),
        }
        progress(
            f"  {size} chunks: p50 {by_size[str(size)]['p50_ms']:.2f} ms, "
            f"p99 {by_size[str(size)]['p99_ms']:.2f} ms"
        )
    return {
        "built": BUILT_HOW.format(real=len(fill.items)),
        "synced_chunks": synced,
        "by_size": by_size,
        "p50_target_reached_at_chunks": extrapolate(by_size, P50_TARGET_MS[SCALE_SIZES[-1]]),
    }


def fill_to(
    data_dir: Path, fill: Fill, fingerprint: Fingerprint, root: Path, synced: int, size: int
) -> float:
    """Grow the store to `size` chunks (fill chunks `synced`.. beyond the synced ones);
    returns the seconds it took (0 when already there)."""
    store = SqliteStore(data_dir)
    try:
        have = int(store.stats()["chunks"])
        if have >= size:
            return 0.0
        progress(f"scale: growing the store {have} -> {size} chunks")
        started = time.perf_counter()
        fill_store(
            store, fill.items, fill.vectors, range(have - synced, size - synced), fingerprint,
            str(root), FILL_DOCUMENT_CHUNKS, FILL_THREADS,
        )  # fmt: skip
        return time.perf_counter() - started
    finally:
        store.close()


def extrapolate(by_size: dict[str, Any], target_ms: float) -> int | None:
    """The chunk count at which the p50 would reach `target_ms`, linear through the two
    largest sizes; None when it does not grow with the size (within the noise)."""
    if len(by_size) < 2:
        return None
    (n1, a), (n2, b) = [(int(n), fig["p50_ms"]) for n, fig in list(by_size.items())[-2:]]
    slope = (b - a) / (n2 - n1)
    if slope <= 0:
        return None
    return int(n2 + (target_ms - b) / slope)


def dense_costs(budget_ms: float, seed: int) -> dict[str, Any]:
    """Median ms of one exact dense search (product + top-k) per index size, and the chunk
    count at which it would reach `budget_ms` (linear in chunks, from the largest size)."""
    rng = np.random.default_rng(seed)
    costs: dict[str, float] = {}
    for size in SCALE_SIZES:
        matrix = rng.standard_normal((size, DIMENSIONS), dtype=np.float32)
        matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
        index = DenseIndex(DIMENSIONS, "bench")
        index.replace_all([str(i) for i in range(size)], matrix, 0)
        queries = rng.standard_normal((DENSE_REPS, DIMENSIONS), dtype=np.float32)
        times = []
        for query in queries:
            started = time.perf_counter()
            index.search(query / np.linalg.norm(query), 10)
            times.append((time.perf_counter() - started) * 1000)
        costs[str(size)] = statistics.median(times)
        del matrix, index
        progress(f"  dense search over {size} chunks: {costs[str(size)]:.2f} ms median")
    largest = SCALE_SIZES[-1]
    per_chunk_ms = costs[str(largest)] / largest
    return {
        "median_ms": costs,
        "per_1k_chunks_ms": per_chunk_ms * 1000,
        "budget_ms": budget_ms,
        "chunks_at_budget": int(budget_ms / per_chunk_ms),
    }


def dense_in_child(budget_ms: float, seed: int, blas_threads: str) -> dict[str, Any]:
    """`dense_costs` in a fresh interpreter whose OpenBLAS has `blas_threads` threads (`1` is
    what the daemon sets, `ragvisor.cli.main`; "default" is OpenBLAS's one per core)."""
    env = clean_env()
    env.pop("OPENBLAS_NUM_THREADS", None)
    if blas_threads != "default":
        env["OPENBLAS_NUM_THREADS"] = blas_threads
    progress(f"dense index cost per search, OpenBLAS threads: {blas_threads}")
    done = subprocess.run(
        [PYTHON, __file__, str(budget_ms), str(seed)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    sys.stderr.write(done.stderr)
    return dict(json.loads(done.stdout))


if __name__ == "__main__":  # the child of `dense_in_child`
    print(json.dumps(dense_costs(float(sys.argv[1]), int(sys.argv[2]))))
