"""The store benchmark's report: the targets of issue 12, one line per phase with the details,
then the summary table (SQLite beside Neo4j, `met` / `NOT met`) and the JSON file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# bench/ is the script's folder, so the shared library imports directly.
from benchlib import finish_report

# Issue 12's targets for the Neo4j store: key -> (comparison, bound, unit).
TARGETS: dict[str, tuple[str, float, str]] = {
    "neo4j_p50_10k": ("<=", 25.0, "ms"),
    "neo4j_p99_10k": ("<=", 100.0, "ms"),
    "neo4j_p50_100k": ("<=", 50.0, "ms"),
    "recall_at_10": (">=", 0.98, ""),
    "sync_vs_raw": (">=", 0.9, ""),
}
Row = tuple[str, str, str, str]


def verdict(key: str, value: float) -> str:
    """'met' / 'NOT met' against the target, or '' when there is none (or no value)."""
    if key not in TARGETS or value != value:  # NaN
        return ""
    op, bound, _ = TARGETS[key]
    return "met" if (value <= bound if op == "<=" else value >= bound) else "NOT met"


def _row(label: str, value: float, fmt: str, key: str = "") -> Row:
    target = ""
    if key in TARGETS:
        op, bound, unit = TARGETS[key]
        target = f"{op} {bound:g} {unit}".strip()
    return (label, format(value, fmt), target, verdict(key, value))


def _size_label(size: int) -> str:
    return f"{size // 1000}k" if size % 1000 == 0 else str(size)


def summary_rows(fig: dict[str, Any]) -> list[Row]:
    """(figure, value, target, verdict) rows of the final table."""
    rows: list[Row] = []
    s = fig["first_sync"]
    rows.append(
        _row(f"raw embedder, chunks/s ({s['chunks']} chunks)", s["raw_chunks_per_s"], ".1f")
    )
    for store in ("sqlite", "neo4j"):
        rows.append(_row(f"{store} first sync, chunks/s", s[f"{store}_chunks_per_s"], ".1f"))
        rows.append(
            _row(
                f"{store} first sync / raw embedder",
                s[f"{store}_ratio_to_raw"],
                ".3f",
                "sync_vs_raw",
            )
        )
    for size_fig in fig["sizes"]:
        size, label = size_fig["chunks"], _size_label(size_fig["chunks"])
        for mode, by_store in size_fig["search_by_mode"].items():
            for store in ("sqlite", "neo4j"):
                f = by_store[store]
                key50 = key99 = ""
                if store == "neo4j" and mode == "dense" and size == 10_000:
                    key50, key99 = "neo4j_p50_10k", "neo4j_p99_10k"
                if store == "neo4j" and mode == "dense" and size == 100_000:
                    key50 = "neo4j_p50_100k"
                rows.append(
                    _row(f"{label} {mode} /search p50, ms, {store}", f["p50_ms"], ".1f", key50)
                )
                rows.append(
                    _row(f"{label} {mode} /search p99, ms, {store}", f["p99_ms"], ".1f", key99)
                )
        r = size_fig["recall"]
        kind = "real" if size_fig["real_only"] else "real + perturbed"
        rows.append(
            _row(
                f"{label} recall@10, neo4j index ({kind})",
                r["index"]["recall_at_10"],
                ".4f",
                "recall_at_10",
            )
        )
        for key, what in (
            ("index_100", "neo4j index, 100 asked"),
            ("neo4j_store", "Neo4jStore.dense_search"),
            ("sqlite_store", "SqliteStore (exact)"),
        ):
            rows.append(_row(f"{label} recall@10, {what}", r[key]["recall_at_10"], ".4f"))
        m = size_fig["memory"]
        for name in ("daemon_sqlite", "daemon_neo4j", "neo4j_jvm"):
            rows.append(_row(f"{label} RSS after search, MB, {name}", m[name]["rss_mb"], ".0f"))
    return rows


def print_details(fig: dict[str, Any]) -> None:
    """The lines above the table: corpus, embedding, fill, per-run figures."""
    c, mach = fig["corpus"], fig["machine"]
    print("== ragvisor store benchmark: SQLite beside Neo4j ==")
    print(
        f"machine: {mach['cpus']} CPUs, Python {mach['python']}, {mach['mem_total_mb']:.0f} MB "
        f"RAM; Neo4j {c['neo4j_version']} heap {c['neo4j_heap_mb']} MB, page cache "
        f"{c['neo4j_pagecache_mb']} MB (inventory/prod)"
    )
    embedded = "read from the cache" if c["embed_seconds"] == 0 else f"{c['embed_seconds']:.0f}s"
    print(
        f"texts: {c['real_passages']} distinct docstring paragraphs of the Python {mach['python']} "
        f"standard library and the venv's packages (mean {c['mean_passage_chars']:.0f} chars), "
        f"embedded with MiniLM ({embedded}); "
        f"{c['held_out_queries']} held-out queries (first sentence of every "
        f"{c['held_out_every']}th paragraph, e.g. {c['query_examples'][0]!r})"
    )
    print(
        "fill: chunk i < "
        f"{c['real_passages']} is paragraph i with its real vector; beyond, paragraph "
        f"i mod {c['real_passages']} + ' (copy n)' with that vector moved by Gaussian noise of "
        "norm 0.4-0.8 and renormalised; written through Store.commit_document in documents of "
        f"{c['fill_document_chunks']} chunks ({c['fill_threads']} threads)"
    )
    s = fig["first_sync"]
    runs = s["chunks_per_s_runs"]
    print(
        f"first sync: {s['chunks']} distinct chunks of {s['mean_chars']:.0f} chars (real "
        f"chunker, Markdown files of the same paragraphs); chunks/s per run raw "
        f"{_list(runs['raw'])}, sqlite {_list(runs['sqlite'])}, neo4j {_list(runs['neo4j'])}"
    )
    for size_fig in fig["sizes"]:
        label = _size_label(size_fig["chunks"])
        fills = "; ".join(
            f"{k} {v['chunks_per_s']:.0f} chunks/s, then {v['stats']}"
            for k, v in size_fig["fill"].items()
        )
        print(f"{label}: fill {fills}")
        for mode, by_store in size_fig["search_by_mode"].items():
            for store, f in by_store.items():
                server = ", ".join(f"{p} {v:.1f}" for p, v in f["server_median_ms"].items())
                print(
                    f"  {mode} {store}: {f['requests']} requests, {f['errors']} errors, "
                    f"{f['empty_results']} empty, max {f['max_ms']:.0f} ms; server medians ms: "
                    f"{server}"
                )
                if f["errors"]:
                    print(f"  WARNING: {store} {mode} errors: {f['error_examples']}")
        r = size_fig["recall"]
        print(
            f"  recall@10 over {r['queries']} queries: "
            + "; ".join(
                f"{k} {r[k]['recall_at_10']:.4f} (min {r[k]['min_recall']:.1f}, "
                f"{r[k]['queries_below_0_9']} below 0.9, in-process p50 {r[k]['p50_ms']:.1f} ms "
                f"p99 {r[k]['p99_ms']:.1f} ms)"
                for k in ("index", "index_100", "neo4j_store", "sqlite_store")
            )
            + f"; an empty Neo4j read transaction p50 {r['empty_read_tx']['p50_ms']:.1f} ms "
            f"p99 {r['empty_read_tx']['p99_ms']:.1f} ms"
        )
        m = size_fig["memory"]
        print(
            "  memory MB (RSS / peak): "
            + ", ".join(f"{k} {v['rss_mb']:.0f} / {v['hwm_mb']:.0f}" for k, v in m.items())
        )
    print(f"neo4j JVM right after start (empty database): {fig['neo4j_jvm_start_rss_mb']:.0f} MB")


def _list(values: list[float]) -> str:
    return ", ".join(f"{v:.1f}" for v in values)


def report(fig: dict[str, Any], out: Path, stamp: str, logs: Path) -> None:
    """Print the details and the table; write the JSON file."""
    print_details(fig)
    finish_report(
        fig,
        summary_rows(fig),
        out / f"store_bench-{stamp}.json",
        logs,
        "those figures are pessimistic and the SQLite/Neo4j ratios less reliable — rerun on a "
        "quiet box",
    )
