"""The answer cache: false hits and true hits per semantic threshold, and what a hit saves.

One run, on this machine:

1. writes a corpus of the notes in ``answer_cache_questions.json`` (git, Linux administration,
   databases; one note per question) beside the repo's ``docs/``, and syncs it in this process
   into a temp SQLite store with the real MiniLM;
2. per question, retrieves as `/ask` does (k = ``--k``), keeping the question's embedding and the
   retrieved chunk ids — exactly what the cache compares;
3. per threshold (0.80 … 0.98) and passage guard (off; the best passage, the two best
   passages the same as the cached answer's), replays, through ``AnswerCache``:
   - **paraphrases** against a cache of every question's answer: a hit on its own question is a
     true hit, on another question a false hit (a wrong answer served);
   - **near misses**, leave-one-out: each question and its paraphrases against a cache of every
     *other* question (its siblings in the family share most words), plus the ``unanswered``
     questions against the whole cache: any hit is a false hit;
4. with ``--http`` (default on), starts ``ragvisor serve`` (embedded worker: llama.cpp + Gemma 3
   270M) with the cache on and times, over real HTTP, a full `/ask` (a miss), the same question
   again (an exact hit), a paraphrase and the question reworded a little (semantic hits, when
   the defaults find them), reporting medians and the daemon's own counters from `/metrics`.

Figures go to stdout and ``<out>/answer_cache-<timestamp>.json``; progress to stderr. Nothing
is asserted. ``make bench-cache`` runs it.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import structlog
from bench.benchlib import (
    REPO,
    SERVE_ENV,
    clean_env,
    free_port,
    jsonable,
    output_folders,
    progress,
    run_header,
    run_sync,
    running,
    serve_cmd,
    wait_ready,
)

from ragvisor.app import build_store, corpus_spec
from ragvisor.application.sync_runner import SyncRunner
from ragvisor.config import parse_settings
from ragvisor.core.answer_cache import AnswerCache, CacheScope
from ragvisor.core.chunking import ChunkingSpec
from ragvisor.core.protocols import Vector
from ragvisor.core.retrieval import QueryLimits, Retriever
from ragvisor.embed.onnx import build_onnx_embedder
from ragvisor.llm.gguf import cache_dir, ensure_default_gguf

DATA = Path(__file__).with_name("answer_cache_questions.json")
THRESHOLDS = (0.80, 0.82, 0.84, 0.86, 0.88, 0.90, 0.92, 0.94, 0.96, 0.98)
GUARDS = (0, 1, 2)  # semantic_same_top_passages
SCOPE = CacheScope("bench", "minilm", "none")
ANSWER = {"answer": "-"}
READY_TIMEOUT_S = 180.0
ASK_TIMEOUT_S = 180.0


@dataclass(frozen=True)
class Asked:
    """One question as the cache sees it: its group, embedding and retrieved chunk ids."""

    text: str
    group: str | None  # None: no note answers it
    vector: Vector
    passages: tuple[str, ...]


def write_corpus(folder: Path, data: dict[str, Any], with_docs: bool) -> Path:
    """One Markdown note per question, under its family; the repo's docs/ beside them."""
    for group in data["groups"]:
        path = folder / "notes" / group["family"] / f"{group['id']}.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        title = group["id"].replace("-", " ")
        path.write_text(f"# {title}\n\n{group['note']}\n", encoding="utf-8")
    if with_docs:
        shutil.copytree(REPO / "docs", folder / "docs")
    return folder


def embed_all(corpus: Path, data_dir: Path, data: dict[str, Any], k: int) -> list[Asked]:
    """Sync the corpus in this process, then retrieve every question as /ask does."""
    settings = parse_settings(
        {"corpus": {"paths": [str(corpus)]}, "store": {"data_dir": str(data_dir)}}
    )
    cache = Path(os.environ.get("RAGVISOR_CACHE", Path.home() / ".cache/ragvisor"))
    embedder = build_onnx_embedder(settings.embedder, cache)
    store = build_store(settings)
    runner = SyncRunner(
        corpus=corpus_spec(settings),
        chunking=ChunkingSpec(),
        store=store,
        embedder=embedder,
        lock_path=data_dir / "sync.lock",
        log=structlog.get_logger(component="sync"),
    )
    report = runner.run(trigger="bench")
    progress(f"synced {report.chunks} chunks")
    retriever = Retriever(store, embedder, QueryLimits())
    texts = [(q, g["id"]) for g in data["groups"] for q in [g["question"], *g["paraphrases"]]]
    texts += [(q, None) for q in data["unanswered"]]
    asked = []
    for text, group in texts:
        vectors: list[Vector] = []
        found, _, _ = retriever.passages(text, k, vectors=vectors)
        asked.append(Asked(text, group, vectors[0], tuple(r.chunk_id for r, _ in found)))
    store.close()
    return asked


def filled(entries: list[Asked], threshold: float, guard: int) -> AnswerCache:
    cache = AnswerCache(len(entries) + 1, threshold, guard)
    for e in entries:
        cache.put(SCOPE, e.text, 4, ANSWER, vector=e.vector, passage_ids=e.passages, now=0.0)
    return cache


def replay(asked: list[Asked], data: dict[str, Any], threshold: float, guard: int) -> dict:
    """True and false hits of the semantic lookup at one threshold and guard."""
    canonical = {g["id"]: g["question"] for g in data["groups"]}
    entries = [a for a in asked if a.group is not None and a.text == canonical[a.group]]
    paraphrases = [a for a in asked if a.group is not None and a.text != canonical[a.group]]
    full = filled(entries, threshold, guard)
    true_hits = wrong = 0
    for p in paraphrases:
        hit = full.semantic(SCOPE, p.vector, 4, p.passages, now=0.0)
        if hit is not None:
            if hit.entry.question == canonical[p.group or ""]:
                true_hits += 1
            else:
                wrong += 1
    near_false = near_total = 0
    for group in canonical:
        others = filled([e for e in entries if e.group != group], threshold, guard)
        for q in (a for a in asked if a.group == group):
            near_total += 1
            near_false += others.semantic(SCOPE, q.vector, 4, q.passages, now=0.0) is not None
    for q in (a for a in asked if a.group is None):
        near_total += 1
        near_false += full.semantic(SCOPE, q.vector, 4, q.passages, now=0.0) is not None
    return {
        "threshold": threshold,
        "guard": guard,
        "paraphrases": len(paraphrases),
        "true_hit_rate": true_hits / len(paraphrases),
        "paraphrase_wrong_rate": wrong / len(paraphrases),
        "near_miss_lookups": near_total,
        "near_miss_false_hit_rate": near_false / near_total,
    }


def similarities(asked: list[Asked], data: dict[str, Any]) -> dict[str, float]:
    """Where the two populations lie: paraphrase-to-own-question vs. nearest other question."""
    canonical = {g["id"]: g for g in data["groups"]}
    own, nearest_other = [], []
    heads = {g: next(a for a in asked if a.text == canonical[g]["question"]) for g in canonical}
    for a in asked:
        others = [float(h.vector @ a.vector) for g, h in heads.items() if g != a.group]
        nearest_other.append(max(others))
        if a.group is not None and a.text != canonical[a.group]["question"]:
            own.append(float(heads[a.group].vector @ a.vector))
    return {
        "paraphrase_to_own_median": statistics.median(own),
        "paraphrase_to_own_p10": float(np.percentile(own, 10)),
        "nearest_other_median": statistics.median(nearest_other),
        "nearest_other_p90": float(np.percentile(nearest_other, 90)),
        "nearest_other_max": max(nearest_other),
    }


def closest_pairs(asked: list[Asked], data: dict[str, Any], top: int = 12) -> list[dict]:
    """The most similar pairs of questions that are not the same question, most similar first:
    where a false hit would come from, with whether their passages agree."""
    canonical = {g["id"]: g["question"] for g in data["groups"]}
    heads = [a for a in asked if a.group is not None and a.text == canonical[a.group]]
    pairs = []
    for a in asked:
        for h in heads:
            if h.group != a.group:
                pairs.append(
                    {
                        "question": a.text,
                        "cached": h.text,
                        "similarity": round(float(h.vector @ a.vector), 4),
                        "same_top_passage": a.passages[:1] == h.passages[:1],
                    }
                )
    return sorted(pairs, key=lambda p: -p["similarity"])[:top]


def ask(client: httpx.Client, url: str, question: str) -> tuple[float, dict[str, Any]]:
    started = time.perf_counter()
    response = client.post(f"{url}/ask", json={"question": question}, timeout=ASK_TIMEOUT_S)
    elapsed_ms = (time.perf_counter() - started) * 1000
    response.raise_for_status()
    return elapsed_ms, response.json()


def over_http(
    corpus: Path, data_dir: Path, data: dict[str, Any], logs: Path, args: argparse.Namespace
) -> dict:
    """Full /ask vs. exact and semantic hits, timed over loopback in one daemon."""
    run_sync(corpus, data_dir, logs / "sync.log", timeout_s=1800.0)  # synced: embeds nothing
    env = clean_env(
        **{**SERVE_ENV, "RAGVISOR_ASK__CACHE__ENABLED": "true"},
        RAGVISOR_GENERATOR__NUM_PREDICT=str(args.num_predict),
        RAGVISOR_WORKER__MODEL_PATH=str(ensure_default_gguf(cache_dir())),
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    groups = random.Random(15).sample(data["groups"], args.http_questions)
    times: dict[str, list[float]] = {"full": [], "exact": [], "semantic": []}
    kinds: dict[str, list[str | None]] = {"repeat": [], "paraphrase": [], "reworded": []}
    with running(serve_cmd(corpus, data_dir, port), env, logs / "serve.log") as proc:
        wait_ready(port, proc, READY_TIMEOUT_S)
        with httpx.Client() as client:
            ask(client, url, "warm-up: what is ragvisor?")
            for group in groups:
                ms, full = ask(client, url, group["question"])
                if full.get("done_reason") == "degraded":
                    progress(f"degraded, not cached: {group['id']}")
                    continue
                times["full"].append(ms)
                ms, again = ask(client, url, group["question"].upper())
                kinds["repeat"].append(again.get("cached"))
                if again.get("cached") == "exact":
                    times["exact"].append(ms)
                # A paraphrase (a semantic hit only now and then, see the replay) and the
                # question reworded a little (usually one): both time a semantic lookup.
                probes = {
                    "paraphrase": group["paraphrases"][0],
                    "reworded": group["question"].rstrip("?") + ", please?",
                }
                for probe, text in probes.items():
                    ms, answer = ask(client, url, text)
                    kinds[probe].append(answer.get("cached"))
                    if answer.get("cached") == "semantic":
                        times["semantic"].append(ms)
            metrics = [
                line
                for line in client.get(f"{url}/metrics", timeout=10).text.splitlines()
                if line.startswith("ragvisor_answer_cache_")
            ]
    return {
        "median_ms": {k: statistics.median(v) if v else None for k, v in times.items()},
        "counts": {k: len(v) for k, v in times.items()},
        "cached_kinds": kinds,
        "metrics": metrics,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--k", type=int, default=4, help="passages per question (ask.default_k)")
    parser.add_argument("--no-docs", action="store_true", help="the notes alone as the corpus")
    parser.add_argument("--no-http", action="store_true", help="skip the latency part")
    parser.add_argument("--http-questions", type=int, default=10)
    parser.add_argument("--num-predict", type=int, default=64)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out")
    cache_default = Path(os.environ.get("RAGVISOR_CACHE", Path.home() / ".cache/ragvisor"))
    parser.add_argument("--cache", type=Path, default=cache_default / "answer_cache_bench")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
    out, stamp, logs = output_folders(args.out, "answer_cache")
    data = json.loads(DATA.read_text(encoding="utf-8"))
    figures: dict[str, Any] = run_header(stamp, args)
    # Kept between runs: a second run's sync embeds nothing (content hashes).
    work = args.cache / ("notes" if args.no_docs else "notes-and-docs")
    shutil.rmtree(work / "corpus", ignore_errors=True)
    try:
        corpus = write_corpus(work / "corpus", data, with_docs=not args.no_docs)
        asked = embed_all(corpus, work / "data", data, args.k)
        figures["closest_different_questions"] = closest_pairs(asked, data)
        figures["similarities"] = similarities(asked, data)
        figures["replay"] = [replay(asked, data, t, g) for g in GUARDS for t in THRESHOLDS]
        print("similarity:", json.dumps(jsonable(figures["similarities"])))
        print(f"{'guard':>5} {'threshold':>9} {'true hits':>9} {'wrong':>6} {'false hits':>10}")
        for row in figures["replay"]:
            print(
                f"{row['guard']:>5} {row['threshold']:>9.2f} {row['true_hit_rate']:>9.1%} "
                f"{row['paraphrase_wrong_rate']:>6.1%} {row['near_miss_false_hit_rate']:>10.1%}"
            )
        if not args.no_http:
            figures["http"] = over_http(corpus, work / "data", data, logs, args)
            print("http:", json.dumps(jsonable(figures["http"]), indent=1))
    finally:
        progress(f"corpus and store kept in {work}")
    path = out / f"answer_cache-{stamp}.json"
    path.write_text(json.dumps(jsonable(figures), indent=1), encoding="utf-8")
    progress(f"figures in {path}")


if __name__ == "__main__":
    main()
