"""Freshness: seconds from saving a file to `/search` finding it, on a corpus of ``--documents``
files, with the daemon's folder watch (`[sync] watch`, debounce 0.3 s) — beside, in the same run,
the same save followed by an explicit `POST /admin/sync?wait=true` (a full sync: what an operator
had before the watch), and `PUT /documents/{path}` (the request's own time: it answers once the
document is searchable). Each is a median over ``--rounds`` saves of a new text with a word no
other document has; search is polled every 20 ms (keyword mode, the word is exact).

    make bench-freshness   # = .venv/bin/python bench/freshness_bench.py [--documents 2000]

The daemon runs the real ONNX MiniLM and SQLite, no generator. Figures go to stdout and
``<out>/freshness_bench-<timestamp>.json``; timings are printed, never asserted. Target: the
watch's median ≤ 2 s.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

# bench/ is the script's folder, so the shared library imports directly.
from benchlib import (
    SERVE_ENV,
    TreeLoadMeter,
    clean_env,
    finish_report,
    free_port,
    median,
    output_folders,
    progress,
    run_header,
    run_sync,
    running,
    serve_cmd,
    wait_ready,
)

TARGET_S = 2.0
POLL_S = 0.02
WORDS = [
    *("swap", "memory", "model", "index", "chunk", "vector", "sync", "folder", "search"),
    *("answer", "daemon", "store", "embed", "query", "latency", "budget", "worker"),
    *("restart", "signal", "journal", "backup", "corpus", "heading", "title"),
]


def write_corpus(root: Path, documents: int, seed: int) -> None:
    """``documents`` Markdown files of a few paragraphs each, 100 to a folder."""
    rng = random.Random(seed)
    for i in range(documents):
        folder = root / f"area-{i // 100:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        paragraphs = [" ".join(rng.choices(WORDS, k=60)) for _ in range(3)]
        (folder / f"doc{i:05d}.md").write_text(f"# Document {i}\n\n" + "\n\n".join(paragraphs))


def found(client: httpx.Client, url: str, word: str) -> str | None:
    """The path of the top keyword hit for ``word``, if any."""
    results = client.get(f"{url}/search", params={"q": word, "k": 1, "mode": "keyword"}).json()
    return results["results"][0]["path"] if results.get("results") else None


def until_found(client: httpx.Client, url: str, word: str, started: float, limit_s: float) -> float:
    """Seconds from ``started`` until search finds ``word`` (polled); raises past ``limit_s``."""
    while time.perf_counter() - started < limit_s:
        if found(client, url, word):
            return time.perf_counter() - started
        time.sleep(POLL_S)
    raise TimeoutError(f"{word!r} not searchable within {limit_s:.0f} s")


def measure(corpus: Path, url: str, token: str, rounds: int) -> dict[str, list[float]]:
    """The three ways, round after round (interleaved, so drift hits all three alike)."""
    auth = {"Authorization": f"Bearer {token}"}
    figures: dict[str, list[float]] = {"watch": [], "admin_sync": [], "put": [], "sync_s": []}
    for folder in ("area-000", "area-001"):  # a corpus under 200 files has not got them all
        (corpus / folder).mkdir(exist_ok=True)
    with httpx.Client(timeout=120) as client:
        for n in range(rounds):
            # 1. Save a file; the watch alone makes it searchable.
            word = f"watchword{n}x"
            started = time.perf_counter()
            (corpus / "area-000" / f"fresh{n}.md").write_text(f"# Fresh {n}\n\n{word} saved.\n")
            figures["watch"].append(until_found(client, url, word, started, 60))
            # 2. The same with the watch's work done by an explicit full sync.
            word = f"adminword{n}x"
            time.sleep(1.0)  # let the watch go quiet: the admin sync must not find it busy
            started = time.perf_counter()
            (corpus / "area-001" / f"fresh{n}.md").write_text(f"# Fresh {n}\n\n{word} saved.\n")
            answer = client.post(f"{url}/admin/sync", params={"wait": "true"}, headers=auth)
            answer.raise_for_status()
            figures["sync_s"].append(answer.json()["report"]["seconds"])
            figures["admin_sync"].append(until_found(client, url, word, started, 120))
            # 3. PUT: searchable when the answer comes.
            word = f"putword{n}x"
            started = time.perf_counter()
            answer = client.put(
                f"{url}/documents/area-002/fresh{n}.md",
                content=f"# Fresh {n}\n\n{word} saved.\n",
                headers=auth,
            )
            answer.raise_for_status()
            figures["put"].append(time.perf_counter() - started)
            assert found(client, url, word), "PUT answered before the document was searchable"
            progress(
                f"round {n + 1}/{rounds}: watch {figures['watch'][-1]:.2f} s, admin sync "
                f"{figures['admin_sync'][-1]:.2f} s, PUT {figures['put'][-1]:.3f} s"
            )
            time.sleep(1.0)
    return figures


def main() -> None:
    """Build the corpus, sync it, start the daemon with the watch on, measure, report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out")
    args = parser.parse_args()
    out, stamp, logs = output_folders(args.out, "freshness")
    report: dict[str, Any] = run_header(stamp, args)
    with tempfile.TemporaryDirectory(prefix="ragvisor-fresh-") as tmp:
        corpus, data_dir = Path(tmp) / "corpus", Path(tmp) / "data"
        write_corpus(corpus, args.documents, args.seed)
        progress(f"corpus: {args.documents} files; first sync")
        meter = TreeLoadMeter()  # the daemon runs through the saves: its CPU is ours
        meter.mark("first_sync")
        first = run_sync(corpus, data_dir, logs / "sync.log", timeout_s=1800)
        report["first_sync_s"] = first["wall_s"]
        port = free_port()
        env = clean_env(
            **{
                **SERVE_ENV,  # its watch = false is for the other benches
                "RAGVISOR_GENERATOR__BACKEND": "none",
                "RAGVISOR_SYNC__WATCH": "true",
                "RAGVISOR_SYNC__WATCH_DEBOUNCE_S": "0.3",
            }
        )
        with running(serve_cmd(corpus, data_dir, port), env, logs / "serve.log") as proc:
            wait_ready(port, proc, 120)
            meter.watched.append(psutil.Process(proc.pid))
            token = (data_dir / "admin_token").read_text().strip()
            meter.mark("saves")
            figures = measure(corpus, f"http://127.0.0.1:{port}", token, args.rounds)
            meter.mark(None)
    report["noise"] = meter.phases
    report["figures_s"] = figures
    medians = {name: median(values) for name, values in figures.items()}
    report["medians_s"] = medians
    verdict = "ok" if medians["watch"] <= TARGET_S else "MISSED"
    rows = [
        ("save -> searchable, watch (median s)", f"{medians['watch']:.2f}", "<= 2", verdict),
        ("save -> searchable, admin full sync (s)", f"{medians['admin_sync']:.2f}", "baseline", ""),
        ("  of which the full sync itself (s)", f"{medians['sync_s']:.2f}", "", ""),
        ("PUT /documents answered, searchable (s)", f"{medians['put']:.3f}", "", ""),
    ]
    finish_report(
        report,
        rows,
        out / f"freshness_bench-{stamp}.json",
        logs,
        "the medians may be slower than on a quiet box",
    )


if __name__ == "__main__":
    main()
