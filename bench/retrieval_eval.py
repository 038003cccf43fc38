"""Retrieval quality on questions we did not write: page recall@5 and MRR@5 per mode and method.

The question sets (`bench.retrieval_sets`) come from documentation packages whose own FAQ
answers by linking other pages; the FAQ pages are not in the corpus. Two corpora are measured,
because what wins at one size can lose at the other:

* **small** — of every set, the pages that answer a question plus other pages of the same set
  chosen by a fixed seed, up to ``--small-chunks`` chunks in all;
* **large** — every page of every set (15k+ chunks).

Each corpus is synced twice, with the chunker of the first release (``md-heading-v1``: no title
in a chunk's text) and with today's, through the real sync, SQLite store and ONNX model; each
configuration then answers every question through `Retriever.search` with k = 5. A question
counts as found when one of the pages its FAQ answer links is among the five results (MRR: one
over the rank of the first such result). The *baseline* row is the naive method, measured in the
same run: dense search over first-release chunks, five chunks (not pages) returned.

Vectors are cached by text hash under the cache folder, so a second run (or another corpus with
the same chunks) embeds nothing again; search latencies are measured warm, per query.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sqlite3
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import structlog

# bench/ is the script's folder, so the shared library imports directly.
from benchlib import finish_report, output_folders, progress, run_header
from ragvisor.app import build_store, corpus_spec
from ragvisor.application.sync_runner import SyncRunner
from ragvisor.config import parse_settings
from ragvisor.core.chunking import ChunkingSpec
from ragvisor.core.model import Fingerprint
from ragvisor.core.protocols import Embedder, Matrix
from ragvisor.core.retrieval import QueryLimits, Retriever, SearchMode
from ragvisor.embed.onnx import build_onnx_embedder
from retrieval_sets import DOC_SETS, Question, build_set

K = 5


class CachedEmbedder:
    """The real model, with its vectors kept on disk by text: a bench run re-embeds nothing it
    embedded before (same model, same text), whichever corpus or store asks."""

    def __init__(self, model: Embedder, path: Path) -> None:
        self._model = model
        self._db = sqlite3.connect(path, check_same_thread=False)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS v (fp TEXT, text TEXT, vec BLOB, PRIMARY KEY (fp, text))"
        )
        self.embedded = 0

    @property
    def fingerprint(self) -> Fingerprint:
        return self._model.fingerprint

    @property
    def batch_size(self) -> int:
        return 16

    def embed(self, texts: Sequence[str]) -> Matrix:
        key = self.fingerprint.key
        found: dict[str, np.ndarray] = {}
        for text in set(texts):
            row = self._db.execute(
                "SELECT vec FROM v WHERE fp = ? AND text = ?", (key, text)
            ).fetchone()
            if row is not None:
                found[text] = np.frombuffer(row[0], dtype=np.float32)
        missing = [t for t in dict.fromkeys(texts) if t not in found]
        if missing:
            vectors = self._model.embed(missing)
            self.embedded += len(missing)
            for text, vector in zip(missing, vectors, strict=True):
                found[text] = np.asarray(vector, dtype=np.float32)
                self._db.execute(
                    "INSERT OR REPLACE INTO v VALUES (?, ?, ?)", (key, text, found[text].tobytes())
                )
            self._db.commit()
        return np.stack([found[t] for t in texts])


@dataclass(frozen=True)
class Method:
    """One way of answering: which chunks, which mode, pages or chunks, reranked or not."""

    name: str
    chunker: str  # "v1" (first release) or "current"
    mode: SearchMode
    group: str = "page"
    rerank: bool = False


METHODS = (
    Method("baseline (naive dense, v1 chunks)", "v1", SearchMode.DENSE, group="chunk"),
    Method("v1 keyword, chunks", "v1", SearchMode.KEYWORD, group="chunk"),
    Method("v1 hybrid, chunks", "v1", SearchMode.HYBRID, group="chunk"),
    Method("dense, chunks", "current", SearchMode.DENSE, group="chunk"),
    Method("dense", "current", SearchMode.DENSE),
    Method("keyword", "current", SearchMode.KEYWORD),
    Method("hybrid", "current", SearchMode.HYBRID),
)


def small_corpus(
    sets: dict[str, tuple[Path, list[Question]]], folder: Path, chunks: int, spec: ChunkingSpec
) -> Path:
    """Every answer page, plus seeded other pages of each set while its share of about
    ``chunks`` chunks lasts (a set whose answer pages alone exceed its share gets no others).

    Until 2026-12-05 the share also cut the answer pages short: 20 of Python's questions had
    no answer page in the small corpus, which capped its recall at 0.82."""
    if folder.is_dir():
        return folder
    staging = folder.with_suffix(".new")
    shutil.rmtree(staging, ignore_errors=True)
    per_set = chunks // len(sets)
    rng = random.Random(15)
    for name, (corpus, questions) in sets.items():
        wanted = sorted({p for q in questions for p in q.pages})
        others = sorted(str(p.relative_to(corpus)) for p in corpus.rglob("*.md"))
        rng.shuffle(others)
        budget = per_set
        for page in wanted + [p for p in others if p not in wanted]:
            if budget <= 0 and page not in wanted:
                break
            text = (corpus / page).read_text()
            budget -= max(1, len(text) // max(1, spec.size_chars - spec.overlap_chars))
            target = staging / name / page
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(corpus / page, target)
    staging.rename(folder)
    return folder


def sync_store(
    corpus_roots: list[Path],
    data_dir: Path,
    embedder: CachedEmbedder,
    title_context: bool,
    queries: Embedder,
) -> tuple[Retriever, int]:
    """Sync the corpus into its own SQLite store (kept between runs); returns a retriever over
    it and how many chunks it holds."""
    settings = parse_settings(
        {
            "corpus": {"paths": [str(r) for r in corpus_roots], "include": ["**/*.md"]},
            "store": {"data_dir": str(data_dir)},
            "server": {"max_k": 50},
        }
    )
    data_dir.mkdir(parents=True, exist_ok=True)
    store = build_store(settings)
    spec = ChunkingSpec(title_context=title_context)
    runner = SyncRunner(
        corpus=corpus_spec(settings),
        chunking=spec,
        store=store,
        embedder=embedder,
        lock_path=data_dir / "sync.lock",
        log=structlog.get_logger(component="sync"),
    )
    started = time.perf_counter()
    report = runner.run(trigger="bench")
    progress(
        f"synced {data_dir.name}: {report.chunks.as_dict()} chunks, "
        f"{report.embeddings_computed} embedded, {time.perf_counter() - started:.1f} s"
    )
    store.load_index(embedder.fingerprint)
    # Queries go to the model itself: their embedding is part of a search's cost.
    return Retriever(store, queries, QueryLimits(max_k=50)), store.stats()["chunks"]


def set_of(root: str) -> str:
    """The set a corpus root belongs to: its own name (small) or its parent's (large:
    ``sets/<name>/corpus``)."""
    path = Path(root)
    return path.parent.name if path.name == "corpus" else path.name


def evaluate(
    retriever: Retriever, questions: list[tuple[str, Question]], method: Method
) -> dict[str, Any]:
    """Recall@5, MRR@5 (overall and per set) and per-query latency of one method."""
    found: dict[str, list[float]] = {}
    latencies = []
    for set_name, question in questions:
        relevant = {(set_name, p) for p in question.pages}
        started = time.perf_counter()
        result = retriever.search(
            question.text, K, method.mode, group=method.group, rerank=method.rerank
        )
        latencies.append((time.perf_counter() - started) * 1000)
        ranks = [
            rank
            for rank, hit in enumerate(result.hits[:K], start=1)
            if (set_of(hit.corpus_root), hit.path) in relevant
        ]
        found.setdefault(set_name, []).append(1 / ranks[0] if ranks else 0.0)
    everything = [r for rs in found.values() for r in rs]
    return {
        "recall_at_5": round(sum(r > 0 for r in everything) / len(everything), 3),
        "mrr_at_5": round(sum(everything) / len(everything), 3),
        "recall_by_set": {n: round(sum(r > 0 for r in rs) / len(rs), 3) for n, rs in found.items()},
        "p50_ms": round(statistics.median(latencies), 2),
        "p99_ms": round(float(np.percentile(latencies, 99)), 2),
        "questions": len(everything),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cache_default = Path(os.environ.get("RAGVISOR_CACHE", Path.home() / ".cache/ragvisor"))
    parser.add_argument("--cache", type=Path, default=cache_default / "eval")
    parser.add_argument("--sets", default="git,django,python")
    parser.add_argument("--sizes", default="small,large")
    parser.add_argument("--small-chunks", type=int, default=4500)
    parser.add_argument("--methods", default="", help="comma-separated method names (all)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
    out, stamp, logs = output_folders(args.out, "retrieval")
    sets = {name: build_set(DOC_SETS[name], args.cache / "sets") for name in args.sets.split(",")}
    questions = [(name, q) for name, (_, qs) in sets.items() for q in qs]
    progress(f"{len(questions)} questions from {', '.join(sets)}")
    model = build_onnx_embedder(parse_settings({}).embedder, args.cache)
    embedder = CachedEmbedder(model, args.cache / "vectors.sqlite")
    chosen = [m for m in METHODS if not args.methods or m.name in args.methods.split(",")]
    results: list[dict[str, Any]] = []
    for size in args.sizes.split(","):
        if size == "small":
            # "-all-answers": the corpus since every answer page is in it (small_corpus).
            folder = args.cache / f"small-{args.sets}-{args.small_chunks}-all-answers"
            roots = corpus_roots(small_corpus(sets, folder, args.small_chunks, ChunkingSpec()))
        else:
            roots = [corpus for corpus, _ in sets.values()]
        retrievers: dict[str, Retriever] = {}
        chunks = 0
        for chunker, title in (("v1", False), ("current", True)):
            if not any(m.chunker == chunker for m in chosen):
                continue
            version = ChunkingSpec(title_context=title).version
            corpus_name = "small-all-answers" if size == "small" else size
            data_dir = args.cache / "stores" / f"{corpus_name}-{args.sets}-{version}"
            retrievers[chunker], chunks = sync_store(roots, data_dir, embedder, title, model)
        for method in chosen:
            figures = evaluate(retrievers[method.chunker], questions, method)
            results.append({"size": size, "chunks": chunks, "method": method.name, **figures})
            progress(f"{size} {method.name}: {figures}")
    # Latency against the default mode on the same corpus, in the same run (target: keyword
    # and hybrid within 2x of dense at 15k+ chunks).
    dense_p50 = {r["size"]: r["p50_ms"] for r in results if r["method"] == "dense"}
    for r in results:
        base = dense_p50.get(r["size"])
        r["p50_vs_dense"] = round(r["p50_ms"] / base, 2) if base else None
    rows = [
        [
            r["size"],
            str(r["chunks"]),
            r["method"],
            f"{r['recall_at_5']:.3f}",
            f"{r['mrr_at_5']:.3f}",
            " ".join(f"{k} {v:.2f}" for k, v in r["recall_by_set"].items()),
            f"{r['p50_ms']:.1f}",
            "" if r["p50_vs_dense"] is None else f"{r['p50_vs_dense']:.2f}x",
        ]
        for r in results
    ]
    figures = {**run_header(stamp, args), "results": results}
    finish_report(
        figures,
        rows,
        out / f"retrieval_eval-{stamp}.json",
        logs,
        "latencies are noisy; recall and MRR are not",
        header=HEADER,
    )


HEADER = ["corpus", "chunks", "method", "recall@5", "MRR@5", "recall by set", "p50 ms", "vs dense"]


def corpus_roots(folder: Path) -> list[Path]:
    """The small corpus's roots: one folder per set."""
    return sorted(p for p in folder.iterdir() if p.is_dir())


if __name__ == "__main__":
    main()
