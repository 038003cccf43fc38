"""SQLite beside Neo4j in one run: warm /search latency, first-sync throughput, the Neo4j vector
index's recall and the memory of each, against the targets of issue 12.

One run, on this machine, with a real Neo4j 5.26 (tests/infra/neo4j_engine.py; heap and page
cache from inventory/prod) on a free port in a temporary folder:

1. real passages (docstring paragraphs of the standard library and the venv's packages) and
   their MiniLM embeddings (cached under bench/out/cache), plus held-out queries;
2. first sync of a ~``--sync-chunks`` Markdown corpus of those passages into each store
   (`ragvisor sync --json`), interleaved with the raw embedder on the same chunk texts
   (raw, sqlite, neo4j, neo4j, sqlite, raw);
3. for each of ``--sizes``: both stores filled to that many chunks straight through
   ``Store.commit_document`` (real vectors first, then perturbed copies: embedding 100k chunks
   would take an hour here), one `ragvisor serve` per store, warm `/search` over HTTP in each
   mode with the query blocks interleaved ABBA, the RSS of both daemons and of the Neo4j JVM,
   then recall@10 of the Neo4j index against an exact cosine scan.

Figures go to stdout and to ``<out>/store_bench-<timestamp>.json``; progress to stderr.
Timings are printed, never asserted. Every process started here is stopped before the script
exits. See bench/README.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

# bench/ is the script's folder, so the shared library imports directly.
from benchlib import (
    REPO,
    TreeLoadMeter,
    free_port,
    output_folders,
    progress,
    rss_mb,
    run_header,
)
from ragvisor.config import load_settings
from ragvisor.core.chunking import ChunkingSpec
from ragvisor.core.hashing import sha256_text
from ragvisor.core.model import Fingerprint
from ragvisor.core.protocols import Store
from ragvisor.embed.onnx import OnnxEmbedder
from ragvisor.store.neo4j_store import Neo4jStore
from ragvisor.store.sqlite import SqliteStore
from store_corpus import (
    CACHE,
    QUERY_MIN_WORDS,
    Passage,
    embed_cached,
    fill_store,
    fill_text,
    model_folder,
    passages,
    perturbed,
    query_of,
    write_sync_corpus,
)
from store_figures import report
from store_runs import daemons, memory, recall, search_abba, sync_comparison

sys.path.insert(0, str(REPO))  # the engine helper lives in tests/infra
from tests.infra.neo4j_engine import NEO4J_VERSION, Engine


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; ``--quick`` shrinks every size for a look in a few minutes."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="10000,100000", help="store sizes in chunks, ascending")
    p.add_argument("--real-vectors", type=int, default=10_000, help="real MiniLM embeddings")
    p.add_argument("--queries", type=int, default=300, help="held-out queries (search, recall)")
    p.add_argument("--modes", default="dense,keyword,hybrid", help="search modes to time")
    p.add_argument("--sync-chunks", type=int, default=1000, help="first-sync corpus size")
    p.add_argument("--sync-rounds", type=int, default=2, help="raw/sqlite/neo4j rounds (ABBA)")
    p.add_argument("--warmup", type=int, default=20, help="untimed requests per store and mode")
    p.add_argument("-k", type=int, default=5, help="results per /search")
    p.add_argument("--fill-document-chunks", type=int, default=100, help="chunks per document")
    p.add_argument("--fill-threads", type=int, default=2, help="threads committing the fill")
    p.add_argument("--seed", type=int, default=20240601, help="seed of the perturbed vectors")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "out", help="output folder")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder")
    p.add_argument("--quick", action="store_true", help="2k chunks, small samples (~5 min)")
    args = p.parse_args(argv)
    if args.quick:
        args.sizes, args.real_vectors, args.queries = "2000", 2000, 60
        args.sync_chunks, args.warmup = 200, 5
    args.sizes = sorted(int(s) for s in str(args.sizes).split(","))
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if args.queries < 10 or args.sync_chunks < 10 or args.sizes[0] < 100:
        p.error("--queries and --sync-chunks must be >= 10, every size >= 100")
    if args.real_vectors > args.sizes[-1]:
        args.real_vectors = args.sizes[-1]
    return args


def main(argv: list[str] | None = None) -> int:
    """Run every phase and print the figures."""
    args = parse_args(argv)
    out, stamp, logs = output_folders(args.out, "store")
    work = Path(tempfile.mkdtemp(prefix="ragvisor-store-bench-"))
    figures: dict[str, Any] = run_header(stamp, args)
    meter = TreeLoadMeter()  # the Neo4j JVM runs through every phase: its CPU is ours
    engine: Engine | None = None
    if any(k.startswith("RAGVISOR_") for k in os.environ):
        progress("note: RAGVISOR_* variables in the environment are ignored by this benchmark")
    try:
        settings = load_settings(None, {}, {})
        e = settings.embedder
        models = model_folder(work)
        embedder = OnnxEmbedder(
            models, name=e.model_name, batch_size=e.batch_size, threads=e.threads,
            max_tokens=e.max_tokens,
        )  # fmt: skip
        fingerprint = embedder.fingerprint

        # 1. texts, vectors, held-out queries
        meter.mark("texts")
        # Every step-th passage is held out, so the queries come from all over the texts, not
        # from one package; it is a query if its first sentence gives three words or more.
        step = max(2, (args.real_vectors + args.queries) // args.queries)
        found = passages(args.real_vectors + 3 * args.queries)
        items = [p for i, p in enumerate(found) if i % step != step - 1][: args.real_vectors]
        held = [p for p in found[step - 1 :: step] if len(query_of(p).split()) >= QUERY_MIN_WORDS][
            : args.queries
        ]
        queries = [query_of(p) for p in held]
        progress(f"{len(items)} passages, {len(queries)} held-out queries; embedding")
        meter.mark("embedding")
        real, embed_s = embed_cached(embedder, [p.text for p in items], CACHE)
        query_vectors, _ = embed_cached(embedder, queries, CACHE)
        total = args.sizes[-1]
        vectors = perturbed(real, total, args.seed)
        hashes = [sha256_text(fill_text(items, i)) for i in range(total)]
        fill_root = (work / "corpus-fill").resolve()
        fill_root.mkdir()
        figures["corpus"] = {
            "real_passages": len(items),
            "mean_passage_chars": sum(len(p.text) for p in items) / len(items),
            "embed_seconds": embed_s,
            "held_out_queries": len(queries),
            "held_out_every": step,
            "query_examples": queries[:5],
            "fill_document_chunks": args.fill_document_chunks,
            "fill_threads": args.fill_threads,
            "neo4j_version": NEO4J_VERSION,
        }

        # 2. the engine, then the first sync against the raw embedder
        meter.mark("neo4j_start")
        engine = Engine.in_folder(work / "neo4j", free_port())
        figures["corpus"].update(
            neo4j_heap_mb=engine.heap_mb, neo4j_pagecache_mb=engine.pagecache_mb
        )
        progress(f"starting Neo4j {NEO4J_VERSION} on {engine.uri}")
        engine.start()
        assert engine.process is not None
        meter.watched.append(psutil.Process(engine.process.pid))
        time.sleep(2.0)
        figures["neo4j_jvm_start_rss_mb"] = rss_mb(engine.process.pid)
        model_env = {"RAGVISOR_EMBEDDER__MODEL_DIR": str(models)}
        store_env = {"sqlite": model_env, "neo4j": {**model_env, **engine.daemon_env()}}
        meter.mark("first_sync")
        chunking = ChunkingSpec(
            size_chars=settings.corpus.chunk_size_chars,
            overlap_chars=settings.corpus.chunk_overlap_chars,
        )
        sync_texts, _ = write_sync_corpus(work / "corpus-sync", items, args.sync_chunks, chunking)
        progress(f"first sync: {len(sync_texts)} chunks, {args.sync_rounds} rounds")
        figures["first_sync"] = sync_comparison(
            embedder, sync_texts, work / "corpus-sync", work, logs, store_env, engine.wipe,
            args.sync_rounds,
        )  # fmt: skip
        engine.wipe()

        # 3. each size: fill, search, memory, recall
        figures["sizes"] = []
        filled = 0
        run = SizeRun(args, work, logs, engine, store_env, fill_root, items, vectors)
        for size in args.sizes:
            figures["sizes"].append(
                run.measure(filled, size, queries, query_vectors, hashes, fingerprint, meter)
            )
            filled = size
        meter.mark(None)
        figures["noise"] = meter.phases
    finally:
        if engine is not None:
            engine.stop()
        if args.keep:
            progress(f"kept the temporary folder {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    report(figures, out, stamp, logs)
    return 0


@dataclass
class SizeRun:
    """One size of the store: what it needs from the run, and :meth:`measure`."""

    args: argparse.Namespace
    work: Path
    logs: Path
    engine: Engine
    store_env: dict[str, dict[str, str]]
    fill_root: Path
    items: list[Passage]
    vectors: Any

    def fill(self, filled: int, size: int, fingerprint: Fingerprint) -> dict[str, Any]:
        """Both stores from ``filled`` to ``size`` chunks; chunks/s and counts of each."""
        figures: dict[str, Any] = {}
        stores: list[tuple[str, Store]] = [
            ("sqlite", SqliteStore(self.work / "data-sqlite")),
            ("neo4j", Neo4jStore(self.engine.uri, user="neo4j", password=self.engine.password)),
        ]
        for name, store in stores:
            progress(f"fill {name}: chunks {filled}..{size}")
            started = time.perf_counter()
            try:
                fill_store(
                    store, self.items, self.vectors, range(filled, size), fingerprint,
                    str(self.fill_root), self.args.fill_document_chunks, self.args.fill_threads,
                )  # fmt: skip
                figures[name] = {
                    "chunks_per_s": (size - filled) / (time.perf_counter() - started),
                    "stats": store.stats(),
                }
            finally:
                store.close()
        return figures

    def measure(
        self,
        filled: int,
        size: int,
        queries: list[str],
        query_vectors: Any,
        hashes: list[str],
        fingerprint: Fingerprint,
        meter: TreeLoadMeter,
    ) -> dict[str, Any]:
        """Fill to ``size``, then search (both daemons), memory, and recall at that size."""
        meter.mark(f"fill_{size}")
        fill = self.fill(filled, size, fingerprint)
        meter.mark(f"search_{size}")
        assert self.engine.process is not None
        with daemons(self.fill_root, self.work, self.logs, str(size), self.store_env) as started:
            ports = {s: port for s, (port, _) in started.items()}
            search = search_abba(ports, queries, self.args.modes, self.args.warmup, self.args.k)
            pids = {f"daemon_{s}": pid for s, (_, pid) in started.items()}
            mem = memory({**pids, "neo4j_jvm": self.engine.process.pid})
        meter.mark(f"recall_{size}")
        progress(f"recall@10 at {size} chunks")
        rec = recall(
            self.engine, self.vectors[:size], hashes[:size], query_vectors, fingerprint,
            self.work / "data-sqlite",
        )  # fmt: skip
        return {
            "chunks": size,
            "real_only": size <= len(self.items),
            "fill": fill,
            "search_by_mode": {m: {s: search[s][m] for s in search} for m in self.args.modes},
            "memory": mem,
            "recall": rec,
        }


if __name__ == "__main__":
    sys.exit(main())
