"""The store benchmark's measurements, each returning a dict of figures: the first sync on each
store against the raw embedder (interleaved), warm `/search` over HTTP on two daemons at once
(one per store, query blocks interleaved ABBA), the Neo4j vector index's recall against an
exact scan, and the RSS of the daemons and of the Neo4j JVM.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import neo4j
import numpy as np

# bench/ is the script's folder, so the shared library imports directly.
from benchlib import (
    SERVE_ENV,
    clean_env,
    free_port,
    hwm_mb,
    median,
    pct,
    progress,
    rss_mb,
    run_sync,
    running,
    serve_cmd,
    wait_ready,
)
from ragvisor.core.model import Fingerprint
from ragvisor.core.protocols import Embedder
from ragvisor.store.neo4j_store import Neo4jStore
from ragvisor.store.sqlite import SqliteStore

STORES = ("sqlite", "neo4j")
# Generous bounds so no loop can run away.
SYNC_TIMEOUT_S = 1800.0
READY_TIMEOUT_S = 300.0
REQUEST_TIMEOUT_S = 30.0
SEARCH_BUDGET_S = 900.0
RECALL_K = 10
TIE = 1e-5
WIDE_CANDIDATES = 100


# -- first sync against the raw embedder --------------------------------------------------------


def sync_comparison(
    embedder: Embedder,
    texts: Sequence[str],
    corpus: Path,
    work: Path,
    logs: Path,
    store_env: dict[str, dict[str, str]],
    wipe_neo4j: Any,
    rounds: int,
) -> dict[str, Any]:
    """raw, sqlite, neo4j, then the reverse, ``rounds`` times in all (ABBA): each sync into an
    empty store, chunks/s = embeddings_computed / the report's seconds; raw = the same distinct
    chunk texts in one ``embed`` call (its best case: it groups every text by length)."""
    embedder.embed(list(texts[:8]))  # first run allocates; the sync pays this once too
    rates: dict[str, list[float]] = {"raw": [], "sqlite": [], "neo4j": []}
    reports: list[dict[str, Any]] = []
    for r in range(rounds):
        order = ["raw", *STORES] if r % 2 == 0 else [*reversed(STORES), "raw"]
        for what in order:
            if what == "raw":
                started = time.perf_counter()
                embedder.embed(list(texts))
                rates["raw"].append(len(texts) / (time.perf_counter() - started))
            else:
                if what == "neo4j":
                    wipe_neo4j()
                data_dir = work / f"sync-{what}-{r}"
                report = run_sync(
                    corpus,
                    data_dir,
                    logs / f"sync-{what}.log",
                    timeout_s=SYNC_TIMEOUT_S,
                    env=store_env[what],
                )
                report["store"] = what
                reports.append(report)
                rates[what].append(report["embeddings_computed"] / report["seconds"])
                if report["embeddings_computed"] != len(texts):
                    progress(
                        f"WARNING: {what} sync embedded {report['embeddings_computed']} texts, "
                        f"the chunker counted {len(texts)} distinct"
                    )
            progress(f"first sync round {r + 1}/{rounds}, {what}: {rates[what][-1]:.1f} chunks/s")
    raw = median(rates["raw"])
    return {
        "chunks": len(texts),
        "mean_chars": statistics.fmean(len(t) for t in texts),
        "chunks_per_s_runs": rates,
        "raw_chunks_per_s": raw,
        **{f"{s}_chunks_per_s": median(rates[s]) for s in STORES},
        **{f"{s}_ratio_to_raw": median(rates[s]) / raw for s in STORES},
        "reports": reports,
    }


# -- daemons and warm search ----------------------------------------------------------------------


@contextlib.contextmanager
def daemons(
    corpus: Path, work: Path, logs: Path, label: str, store_env: dict[str, dict[str, str]]
) -> Iterator[dict[str, tuple[int, int]]]:
    """One `ragvisor serve` per store (no sync, no generator), ready; yields store → (port,
    pid). Both are stopped on the way out."""
    with contextlib.ExitStack() as stack:
        started: dict[str, tuple[int, int, Any]] = {}
        for store in STORES:
            port = free_port()
            env = clean_env(**SERVE_ENV, RAGVISOR_GENERATOR__BACKEND="none", **store_env[store])
            proc = stack.enter_context(
                running(
                    serve_cmd(corpus, work / f"data-{store}", port),
                    env,
                    logs / f"serve-{store}-{label}.log",
                )
            )
            started[store] = (port, proc.pid, proc)
        for store, (port, _, proc) in started.items():
            begun = time.perf_counter()
            wait_ready(port, proc, READY_TIMEOUT_S)
            progress(f"{store} daemon ready on port {port} ({time.perf_counter() - begun:.1f}s)")
        yield {store: (port, pid) for store, (port, pid, _) in started.items()}


def _timed_get(client: httpx.Client, url: str, params: dict[str, Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    response = client.get(url, params=params)
    return (time.perf_counter() - started) * 1000, response


def search_abba(
    ports: dict[str, int], queries: Sequence[str], modes: Sequence[str], warmup: int, k: int
) -> dict[str, dict[str, Any]]:
    """Per mode: `warmup` requests to each daemon, then the queries in two halves, sqlite
    first half, neo4j first half, neo4j second half, sqlite second half (ABBA), each over its
    own keep-alive client. Figures per store and mode: client p50/p99, server phase medians."""
    half = len(queries) // 2
    blocks = [("sqlite", queries[:half]), ("neo4j", queries[:half])]
    blocks += [("neo4j", queries[half:]), ("sqlite", queries[half:])]
    end = time.perf_counter() + SEARCH_BUDGET_S
    out: dict[str, dict[str, Any]] = {}
    clients = {s: httpx.Client(timeout=REQUEST_TIMEOUT_S) for s in STORES}
    try:
        for mode in modes:
            lat: dict[str, list[float]] = {s: [] for s in STORES}
            server: dict[str, dict[str, list[float]]] = {s: {} for s in STORES}
            errors: dict[str, list[str]] = {s: [] for s in STORES}
            empty = dict.fromkeys(STORES, 0)
            for store in STORES:
                url = f"http://127.0.0.1:{ports[store]}/search"
                for i in range(warmup):
                    clients[store].get(url, params={"q": queries[i % len(queries)], "k": k})
            for store, block in blocks:
                url = f"http://127.0.0.1:{ports[store]}/search"
                for query in block:
                    if time.perf_counter() > end:
                        errors[store].append(f"time budget of {SEARCH_BUDGET_S:.0f}s spent")
                        break
                    ms, response = _timed_get(
                        clients[store], url, {"q": query, "k": k, "mode": mode}
                    )
                    lat[store].append(ms)
                    if response.status_code != 200:
                        errors[store].append(f"{response.status_code}: {response.text[:200]}")
                        continue
                    body = response.json()
                    empty[store] += 0 if body.get("results") else 1
                    for phase, value in body.get("timings_ms", {}).items():
                        server[store].setdefault(phase, []).append(float(value))
            for store in STORES:
                out.setdefault(store, {})[mode] = {
                    "requests": len(lat[store]),
                    "errors": len(errors[store]),
                    "error_examples": errors[store][:3],
                    "empty_results": empty[store],
                    "p50_ms": pct(lat[store], 50),
                    "p90_ms": pct(lat[store], 90),
                    "p99_ms": pct(lat[store], 99),
                    "max_ms": max(lat[store], default=float("nan")),
                    "server_median_ms": {p: median(v) for p, v in server[store].items()},
                }
                f = out[store][mode]
                progress(
                    f"search {mode} {store}: p50 {f['p50_ms']:.1f} ms, p99 {f['p99_ms']:.1f} ms, "
                    f"server {f['server_median_ms']}"
                )
    finally:
        for client in clients.values():
            client.close()
    return out


def memory(pids: dict[str, int]) -> dict[str, dict[str, float]]:
    """RSS and peak RSS (VmHWM) in MB of each named process."""
    return {name: {"rss_mb": rss_mb(pid), "hwm_mb": hwm_mb(pid)} for name, pid in pids.items()}


# -- recall of the vector index ---------------------------------------------------------------


def _exact_top(stored: Any, query: Any, k: int) -> list[int]:
    scores = stored @ query
    top = np.argpartition(-scores, k)[:k]
    return [int(i) for i in top[np.argsort(-scores[top])]]


def recall(
    engine: Any,
    stored: Any,
    hashes: Sequence[str],
    queries: Any,
    fingerprint: Fingerprint,
    sqlite_dir: Path,
) -> dict[str, Any]:
    """Recall@10 against an exact cosine scan of ``stored`` (the vectors written, row i under
    text hash ``hashes[i]``; a result whose cosine ties the 10th best within TIE counts),
    for held-out ``queries``, four ways: the Neo4j index itself
    (`db.index.vector.queryNodes`, 10 asked), the index asked for WIDE_CANDIDATES and cut to
    10 (Lucene's HNSW search keeps as many candidates as it is asked for: what a wider beam
    buys), `Neo4jStore.dense_search(k=10)` as the daemon calls it, and
    `SqliteStore.dense_search(k=10)` (exact: a check of the scan). Also the
    in-process latency of each, from this process."""
    prefix = {h[:16]: h for h in hashes}
    row_of = {h: i for i, h in enumerate(hashes)}
    exact = [{hashes[i] for i in _exact_top(stored, q, RECALL_K)} for q in queries]
    # The 10th best exact cosine of each query: a result scoring as well (within float32
    # rounding of Neo4j's (1 + cos) / 2) is a tie with it, not a miss.
    tenth = [float(np.sort(stored @ q)[-RECALL_K]) for q in queries]
    store = Neo4jStore(engine.uri, user="neo4j", password=engine.password)
    lite = SqliteStore(sqlite_dir)
    got: dict[str, list[set[str]]] = {
        key: [] for key in ("index", "index_100", "neo4j_store", "sqlite_store")
    }
    ms: dict[str, list[float]] = {key: [] for key in [*got, "empty_read"]}
    try:
        with neo4j.GraphDatabase.driver(engine.uri, auth=("neo4j", engine.password)) as driver:
            names = driver.execute_query(
                "SHOW VECTOR INDEXES YIELD name WHERE name STARTS WITH 'ragvisor_vectors_' "
                "RETURN name"
            ).records
            index = names[0]["name"]
            cyphers = {
                key: f"CALL db.index.vector.queryNodes('{index}', {n}, $q) YIELD node, score "
                f"RETURN node.text_sha256 AS h ORDER BY score DESC LIMIT {RECALL_K}"
                for key, n in (("index", RECALL_K), ("index_100", WIDE_CANDIDATES))
            }
            for q in queries[:5]:  # warm caches and plans
                for cypher in cyphers.values():
                    driver.execute_query(cypher, q=[float(x) for x in q])
                store.dense_search(q, RECALL_K, fingerprint)
                lite.dense_search(q, RECALL_K, fingerprint)
            for _ in range(len(queries)):
                started = time.perf_counter()
                with driver.session(database="neo4j") as session:
                    session.execute_read(lambda tx: tx.run("RETURN 1").consume())
                ms["empty_read"].append((time.perf_counter() - started) * 1000)
            for q in queries:
                for key, cypher in cyphers.items():
                    started = time.perf_counter()
                    records = driver.execute_query(cypher, q=[float(x) for x in q]).records
                    ms[key].append((time.perf_counter() - started) * 1000)
                    got[key].append({r["h"] for r in records})
                for key, each in (("neo4j_store", store), ("sqlite_store", lite)):
                    started = time.perf_counter()
                    hits = each.dense_search(q, RECALL_K, fingerprint)
                    ms[key].append((time.perf_counter() - started) * 1000)
                    got[key].append({prefix[h.chunk_id.rsplit(":", 1)[1]] for h in hits})
    finally:
        store.close()
        lite.close()
    out: dict[str, Any] = {"vectors": len(hashes), "queries": len(queries), "k": RECALL_K}
    # A read transaction that does nothing, opened as the store opens its own (a session,
    # execute_read): the fixed cost every Neo4j store call pays before the engine works.
    empty = ms.pop("empty_read")
    out["empty_read_tx"] = {"p50_ms": pct(empty, 50), "p99_ms": pct(empty, 99)}
    for key, found in got.items():
        per_query = [
            max(len(f & e), sum(1 for h in f if float(stored[row_of[h]] @ q) >= t - TIE)) / RECALL_K
            for f, e, q, t in zip(found, exact, queries, tenth, strict=True)
        ]
        out[key] = {
            "recall_at_10": statistics.fmean(per_query),
            "min_recall": min(per_query),
            "queries_below_0_9": sum(1 for r in per_query if r < 0.9),
            "p50_ms": pct(ms[key], 50),
            "p99_ms": pct(ms[key], 99),
        }
    return out
