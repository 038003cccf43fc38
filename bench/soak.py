"""Soak: a mixed load on a real daemon for `--minutes`, sampling the RSS of daemon and worker.

One run, on this machine:

1. copies a corpus (default: the repo's ``docs/``) into a temp folder, syncs it into a temp data
   dir and starts ``ragvisor serve`` with its defaults (ONNX embedder in the daemon, the
   embedded ``ragvisor worker`` child with Gemma 3 270M);
2. for ``--minutes``: ``--search-clients`` threads search in every mode with varied queries and
   ``k``; ``--ask-clients`` threads ask varied questions, plain and streamed in turn (a share of
   the streamed ones hang up after the first words, as impatient users do); one editor thread
   modifies, adds, deletes and restores corpus files every ``--sync-every-s`` and runs
   ``POST /admin/sync?wait=true`` with the token from ``<data_dir>/admin_token``. The corpus
   keeps its size: what is added is deleted again, what is deleted comes back;
3. every ``--sample-s`` reads the RSS of the daemon and of its worker child (found among the
   daemon's children, so a restarted worker is followed), split into anonymous and file-backed
   pages (``/proc/PID/status``);
4. prints requests by status and p50/p99 per route, the RSS at the end of every minute, and the
   growth after the warm-up (``--warmup-min``, default 5) and over the last 10 minutes against
   the targets (issue 10: <= 3 % after warm-up, flat — <= 1 % here — over the last 10 minutes).

Figures go to stdout (the table, then one JSON line) and to ``<out>/soak-<timestamp>.json``;
progress lines go to stderr. Nothing is asserted; the exit status is 0 whatever the verdicts.
Run: ``make soak`` or ``.venv/bin/python bench/soak.py [--minutes 30]``; ``--minutes 6`` is
the shortest run that has a minute after the warm-up. See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

# bench/ is the script's folder, so the shared library imports directly.
from benchlib import (
    QUESTIONS,
    REPO,
    SERVE_ENV,
    TreeLoadMeter,
    clean_env,
    finish_report,
    free_port,
    jsonable,
    median,
    output_folders,
    pct,
    progress,
    run_header,
    run_sync,
    running,
    serve_cmd,
    wait_ready,
)
from ragvisor.llm.gguf import cache_dir, ensure_default_gguf

GROWTH_AFTER_WARMUP_PCT = 3.0  # issue 10: at most 3 % after the warm-up
FLAT_LAST_10_PCT = 1.0  # "flat" over the last 10 minutes, read as at most 1 %
LAST_WINDOW_MIN = 10
READY_TIMEOUT_S = 180.0
SYNC_TIMEOUT_S = 1800.0
REQUEST_TIMEOUT_S = 300.0  # one ask waits in the ask lane behind the others; bounded anyway
MODES = ("dense", "keyword", "hybrid")
ROUTES = ("search", "ask", "ask_stream", "admin_sync")
# Question shapes filled with the corpus's own headings, so every prompt differs.
TEMPLATES = (
    "What does the documentation say about {}?",
    "How do I configure {}?",
    "Explain {} in two sentences.",
    "What can go wrong with {}, and what do I do then?",
)
_WORD = re.compile(r"[A-Za-z][A-Za-z_.-]{2,}")


@dataclass
class Ledger:
    """Every request's route, status and latency, shared by the client threads."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    rows: list[tuple[str, str, float, float]] = field(default_factory=list)  # route, status, t, s

    def add(self, route: str, status: str, started: float, took_s: float) -> None:
        with self.lock:
            self.rows.append((route, status, started, took_s))


# -- the corpus and what to ask about it --------------------------------------------------------


@dataclass(frozen=True)
class Material:
    """Words, headings and paragraphs of the corpus: the stuff of queries, questions and edits."""

    words: list[str]
    headings: list[str]
    paragraphs: list[str]

    @classmethod
    def read(cls, corpus: Path) -> Material:
        words: set[str] = set()
        headings: list[str] = []
        paragraphs: list[str] = []
        for path in sorted(corpus.rglob("*.md")):
            text = path.read_text(encoding="utf-8")
            for raw in text.split("\n\n"):
                block = raw.strip()
                if block.startswith("#"):
                    headings.append(block.lstrip("#").strip().splitlines()[0])
                elif len(block) > 80 and not block.startswith(("```", "|")):
                    paragraphs.append(block)
            words.update(w.lower() for w in _WORD.findall(text) if len(w) < 30)
        return cls(sorted(words), headings, paragraphs)

    def query(self, rng: random.Random) -> str:
        if rng.random() < 0.3:
            return rng.choice(self.headings)
        return " ".join(rng.sample(self.words, rng.randint(1, 5)))

    def question(self, rng: random.Random) -> str:
        if rng.random() < 0.3:
            return rng.choice(QUESTIONS)
        return rng.choice(TEMPLATES).format(rng.choice(self.headings).lower())

    def document(self, rng: random.Random, title: str) -> str:
        body = "\n\n".join(rng.sample(self.paragraphs, rng.randint(2, 6)))
        return f"# {title}\n\n{body}\n"


class Editor:
    """Edits that keep the corpus's size: modify, add, delete what was added, delete, restore."""

    STEPS = ("modify", "add", "delete_added", "delete", "restore")

    def __init__(self, corpus: Path, material: Material, rng: random.Random) -> None:
        self._corpus = corpus
        self._material = material
        self._rng = rng
        self._originals = {p: p.read_text(encoding="utf-8") for p in sorted(corpus.rglob("*.md"))}
        self._added: list[Path] = []
        self._deleted: Path | None = None
        self._step = 0
        self._count = 0

    def edit(self) -> str:
        """Make the next edit; returns what was done."""
        kind = self.STEPS[self._step % len(self.STEPS)]
        self._step += 1
        self._count += 1
        if kind == "modify":
            path, text = self._rng.choice(list(self._originals.items()))
            if path.exists():
                extra = self._rng.choice(self._material.paragraphs)
                path.write_text(f"{text}\n{extra}\n\nEdit {self._count}.\n", encoding="utf-8")
        elif kind == "add":
            path = self._corpus / f"soak-{self._count}.md"
            path.write_text(self._material.document(self._rng, f"Soak note {self._count}"))
            self._added.append(path)
        elif kind == "delete_added" and self._added:
            self._added.pop(0).unlink()
        elif kind == "delete":
            self._deleted = self._rng.choice(list(self._originals))
            self._deleted.unlink(missing_ok=True)
        elif kind == "restore" and self._deleted is not None:
            self._deleted.write_text(self._originals[self._deleted], encoding="utf-8")
            self._deleted = None
        return kind


# -- the clients --------------------------------------------------------------------------------


def timed(ledger: Ledger, route: str, call: Callable[..., str], *args: Any) -> None:
    """Run one request, recording its status (or the exception's name) and latency."""
    started = time.monotonic()
    try:
        status = call(*args)
    except httpx.HTTPError as exc:
        status = type(exc).__name__
    ledger.add(route, status, started, time.monotonic() - started)


def search_client(url: str, material: Material, ledger: Ledger, stop: threading.Event, seed: int):
    """Searches in every mode, with think time between them."""
    rng = random.Random(seed)
    with httpx.Client(timeout=REQUEST_TIMEOUT_S) as client:
        while not stop.is_set():
            params = {"q": material.query(rng), "k": rng.randint(1, 10), "mode": rng.choice(MODES)}
            timed(ledger, "search", search_one, client, url, params)
            stop.wait(rng.uniform(0.05, 0.5))


def search_one(client: httpx.Client, url: str, params: dict[str, Any]) -> str:
    return str(client.get(f"{url}/search", params=params).status_code)


def extractive(answer: dict[str, Any]) -> bool:
    """Whether the daemon answered with passages instead of the model (marked `degraded`)."""
    return (answer.get("degraded") or {}).get("answer") == "extractive"


def ask_plain(client: httpx.Client, url: str, question: str) -> str:
    response = client.post(f"{url}/ask", json={"question": question})
    if response.status_code == 200 and extractive(response.json()):
        return "200 extractive"
    return str(response.status_code)


def ask_streamed(client: httpx.Client, url: str, question: str, hang_up: bool) -> str:
    """Stream an answer to its `done` event, or hang up after the first words."""
    with client.stream("POST", f"{url}/ask", json={"question": question, "stream": True}) as r:
        if r.status_code != 200:
            r.read()
            return str(r.status_code)
        for line in r.iter_lines():
            event = json.loads(line) if line.strip() else {}
            kind = event.get("type")
            if kind == "delta" and hang_up:
                return "200 hung up"
            if kind == "error":
                return "200 error event"
            if kind == "done":
                return "200 extractive" if extractive(event) else "200"
    return "200 no done event"


def ask_client(
    url: str, material: Material, ledger: Ledger, stop: threading.Event, seed: int, hang_up: float
) -> None:
    """Asks one after another, plain and streamed in turn."""
    rng = random.Random(seed)
    with httpx.Client(timeout=httpx.Timeout(REQUEST_TIMEOUT_S, connect=5.0)) as client:
        streamed = seed % 2 == 0
        while not stop.is_set():
            question = material.question(rng)
            if streamed:
                leave = rng.random() < hang_up
                timed(ledger, "ask_stream", ask_streamed, client, url, question, leave)
            else:
                timed(ledger, "ask", ask_plain, client, url, question)
            streamed = not streamed
            stop.wait(rng.uniform(0.1, 1.0))


def sync_now(client: httpx.Client, url: str) -> str:
    return str(client.post(f"{url}/admin/sync", params={"wait": "true"}).status_code)


def editor_client(
    url: str, token: str, editor: Editor, ledger: Ledger, stop: threading.Event, every_s: float
) -> None:
    """An edit, then a sync that waits for its report, every `every_s`."""
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(timeout=REQUEST_TIMEOUT_S, headers=headers) as client:
        while not stop.wait(every_s):
            editor.edit()
            timed(ledger, "admin_sync", sync_now, client, url)


# -- memory -------------------------------------------------------------------------------------


def status_kb(pid: int) -> dict[str, int]:
    """VmRSS, RssAnon, RssFile and VmHWM of a process in kB (empty if it is gone)."""
    wanted = ("VmRSS", "RssAnon", "RssFile", "VmHWM")
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return {}
    return {
        key: int(rest.split()[0])
        for key, _, rest in (line.partition(":") for line in lines)
        if key in wanted
    }


def worker_child(daemon: psutil.Process) -> psutil.Process | None:
    """The daemon's `ragvisor worker` child, if it runs."""
    try:
        for child in daemon.children():
            if "worker" in child.cmdline():
                return child
    except psutil.Error:
        pass
    return None


def sampler(daemon: psutil.Process, t0: float, every_s: float, stop: threading.Event) -> list[dict]:
    """RSS samples of daemon and worker (MB), every `every_s` until `stop`; filled in place."""
    samples: list[dict[str, Any]] = []

    def run() -> None:
        while True:
            worker = worker_child(daemon)
            d = status_kb(daemon.pid)
            w = status_kb(worker.pid) if worker else {}
            try:
                fds = daemon.num_fds()  # a leak of connections or files shows here first
            except psutil.Error:
                fds = 0
            samples.append(
                {
                    "t_s": time.monotonic() - t0,
                    "daemon_mb": d.get("VmRSS", 0) / 1000,
                    "worker_mb": w.get("VmRSS", 0) / 1000,
                    "worker_anon_mb": w.get("RssAnon", 0) / 1000,
                    "worker_file_mb": w.get("RssFile", 0) / 1000,
                    "daemon_hwm_mb": d.get("VmHWM", 0) / 1000,
                    "worker_hwm_mb": w.get("VmHWM", 0) / 1000,
                    "worker_pid": worker.pid if worker else None,
                    "daemon_fds": fds,
                }
            )
            if stop.wait(every_s):
                return

    threading.Thread(target=run, name="rss-sampler", daemon=True).start()
    return samples


def per_minute(samples: list[dict[str, Any]], minutes: int) -> list[dict[str, Any]]:
    """Each minute's median of every sampled figure, and the daemon's and worker's peak.

    A single sample per minute is noise: a sync or a batch of queries lifts the daemon by 10 to
    20 MB for a few seconds, so growth read from one sample each at minute 5 and minute 30 swings
    by ±8 % between identical runs. Minute 0 is the first sample (before any load); minute m
    holds the samples taken during it.
    """
    rows = []
    for minute in range(minutes + 1):
        lo, hi = (minute - 1) * 60 + 1.0, minute * 60 + 1.0
        mine = [s for s in samples if lo < s["t_s"] <= hi] if minute else samples[:1]
        if not mine:
            continue
        row: dict[str, Any] = {"minute": minute, "samples": len(mine)}
        for key, value in mine[-1].items():
            if key in ("t_s", "worker_pid"):
                row[key] = value
            else:
                row[key] = median([s[key] for s in mine])
        row["daemon_peak_mb"] = max(s["daemon_mb"] for s in mine)
        row["worker_peak_mb"] = max(s["worker_mb"] for s in mine)
        rows.append(row)
    return rows


def growth_pct(rows: list[dict[str, Any]], key: str, start_min: int) -> float:
    """Growth of `key` from minute `start_min` to the last minute, in percent of the first."""
    start = [r for r in rows if r["minute"] == start_min]
    if not start or not start[0][key] or rows[-1]["minute"] <= start_min:
        return float("nan")
    return 100.0 * (rows[-1][key] - start[0][key]) / start[0][key]


# -- the figures --------------------------------------------------------------------------------


def summarize(ledger: Ledger, rows: list[dict[str, Any]], args: argparse.Namespace) -> dict:
    """Requests by status, p50/p99 per route, RSS per minute and the growth figures."""
    routes: dict[str, Any] = {}
    for route in ROUTES:
        mine = [r for r in ledger.rows if r[0] == route]
        statuses: dict[str, int] = {}
        for _, status, _, _ in mine:
            statuses[status] = statuses.get(status, 0) + 1
        ok = [r[3] for r in mine if r[1].startswith("200")]
        routes[route] = {
            "requests": len(mine),
            "by_status": dict(sorted(statuses.items())),
            "p50_ms": median(ok) * 1000,
            "p99_ms": pct(ok, 99) * 1000,
        }
    last = rows[-1]["minute"] if rows else 0
    window_start = max(args.warmup_min, last - LAST_WINDOW_MIN)
    growth = {
        f"{who}_after_warmup_pct": growth_pct(rows, f"{who}_mb", args.warmup_min)
        for who in ("daemon", "worker")
    } | {
        f"{who}_last_window_pct": growth_pct(rows, f"{who}_mb", window_start)
        for who in ("daemon", "worker")
    }
    pids = {s["worker_pid"] for s in rows if s["worker_pid"]}
    return {
        "routes": routes,
        "rss_per_minute": rows,
        "growth": growth,
        "last_window_from_min": window_start,
        "worker_pids_seen": len(pids),
    }


def verdict(value: float, bound: float) -> str:
    return "n/a" if value != value else ("PASS" if value <= bound else "MISS")


def summary_rows(s: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """The table: figure, value, target, verdict."""
    rows: list[tuple[str, str, str, str]] = []
    for route, r in s["routes"].items():
        statuses = ", ".join(f"{k}: {v}" for k, v in r["by_status"].items()) or "none"
        rows.append((f"{route} requests", f"{r['requests']} ({statuses})", "", ""))
        rows.append((f"{route} p50 / p99", f"{r['p50_ms']:.0f} / {r['p99_ms']:.0f} ms", "", ""))
    g, start = s["growth"], s["last_window_from_min"]
    for who in ("daemon", "worker"):
        after = g[f"{who}_after_warmup_pct"]
        window = g[f"{who}_last_window_pct"]
        rows.append(
            (
                f"{who} RSS growth after warm-up",
                f"{after:+.1f} %",
                f"<= {GROWTH_AFTER_WARMUP_PCT:g} %",
                verdict(after, GROWTH_AFTER_WARMUP_PCT),
            )
        )
        rows.append(
            (
                f"{who} RSS growth from minute {start}",
                f"{window:+.1f} %",
                f"<= {FLAT_LAST_10_PCT:g} %",
                verdict(window, FLAT_LAST_10_PCT),
            )
        )
    rows.append(("worker processes seen", str(s["worker_pids_seen"]), "1", ""))
    return rows


def print_minutes(rows: list[dict[str, Any]]) -> None:
    print(
        "RSS per minute (MB, median of the minute's samples; peak after /): minute, "
        "daemon (its open files), worker (anonymous + file-backed)"
    )
    for r in rows:
        print(
            f"  {r['minute']:3d}  daemon {r['daemon_mb']:6.1f} / {r['daemon_peak_mb']:6.1f} "
            f"({r['daemon_fds']:3.0f} files)  worker {r['worker_mb']:6.1f} / "
            f"{r['worker_peak_mb']:6.1f} ({r['worker_anon_mb']:.1f} + {r['worker_file_mb']:.1f})"
        )


# -- main ---------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=int, default=30, help="length of the mixed load")
    p.add_argument("--warmup-min", type=int, default=5, help="minutes before growth counts")
    p.add_argument("--search-clients", type=int, default=2)
    p.add_argument("--ask-clients", type=int, default=2)
    p.add_argument("--hang-up", type=float, default=0.1, help="share of streamed asks left early")
    p.add_argument("--sync-every-s", type=float, default=45.0, help="an edit and a sync this often")
    p.add_argument("--sample-s", type=float, default=5.0, help="RSS sampling period")
    p.add_argument("--num-predict", type=int, default=64, help="generator.num_predict")
    p.add_argument("--seed", type=int, default=10)
    p.add_argument("--corpus", type=Path, default=REPO / "docs", help="folder to copy and serve")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "out", help="output folder")
    p.add_argument("--keep", action="store_true", help="keep the temp corpus and data dir")
    args = p.parse_args(argv)
    if not args.warmup_min < args.minutes <= 24 * 60:
        p.error("--minutes must be more than --warmup-min and at most a day")
    if not 0 <= args.hang_up <= 1 or args.sample_s <= 0 or args.sync_every_s <= 0:
        p.error("--hang-up must be 0..1, --sample-s and --sync-every-s positive")
    return args


def soak(args: argparse.Namespace, url: str, data_dir: Path, corpus: Path, t0: float) -> Ledger:
    """Run the clients until `args.minutes` after `t0`."""
    material = Material.read(corpus)
    editor = Editor(corpus, material, random.Random(args.seed))
    token = (data_dir / "admin_token").read_text(encoding="utf-8").strip()
    ledger, stop = Ledger(), threading.Event()
    threads = [
        threading.Thread(target=search_client, args=(url, material, ledger, stop, args.seed + i))
        for i in range(args.search_clients)
    ]
    threads += [
        threading.Thread(
            target=ask_client, args=(url, material, ledger, stop, args.seed + 100 + i, args.hang_up)
        )
        for i in range(args.ask_clients)
    ]
    threads.append(
        threading.Thread(
            target=editor_client, args=(url, token, editor, ledger, stop, args.sync_every_s)
        )
    )
    for thread in threads:
        thread.start()
    try:
        end = t0 + args.minutes * 60
        while (left := end - time.monotonic()) > 0:
            time.sleep(min(60.0, left))
            done = len(ledger.rows)
            progress(f"minute {(time.monotonic() - t0) / 60:.0f}: {done} requests")
    finally:
        stop.set()
        for thread in threads:
            thread.join(REQUEST_TIMEOUT_S)
    return ledger


def main(argv: list[str] | None = None) -> int:
    """Copy and sync the corpus, start the daemon, soak it, print the figures; stop everything."""
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    out, stamp, logs = output_folders(args.out, "soak")
    work = Path(tempfile.mkdtemp(prefix="ragvisor-soak-"))
    corpus, data_dir = work / "corpus", work / "data"
    shutil.copytree(args.corpus, corpus)
    meter = TreeLoadMeter()
    figures: dict[str, Any] = run_header(stamp, args)
    try:
        meter.mark("sync")
        progress(f"sync a copy of {args.corpus} into {data_dir}")
        figures["sync"] = run_sync(corpus, data_dir, logs / "sync.log", timeout_s=SYNC_TIMEOUT_S)
        env = clean_env(
            **SERVE_ENV,
            RAGVISOR_GENERATOR__NUM_PREDICT=str(args.num_predict),
            RAGVISOR_WORKER__MODEL_PATH=str(ensure_default_gguf(cache_dir())),
        )
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        meter.mark("start")
        progress(f"starting ragvisor serve on port {port}")
        with running(serve_cmd(corpus, data_dir, port), env, logs / "serve.log") as proc:
            wait_ready(port, proc, READY_TIMEOUT_S)
            daemon = psutil.Process(proc.pid)
            meter.watched = [daemon, *filter(None, [worker_child(daemon)])]
            meter.mark("soak")
            progress(f"{args.minutes} minutes of mixed load; the first {args.warmup_min} warm up")
            t0, stop_sampling = time.monotonic(), threading.Event()
            samples = sampler(daemon, t0, args.sample_s, stop_sampling)
            ledger = soak(args, url, data_dir, corpus, t0)
            stop_sampling.set()
            meter.mark(None)
            progress("stopping the daemon")
    finally:
        if args.keep:
            progress(f"kept the corpus and data dir in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    figures["noise"] = meter.phases
    figures.update(summarize(ledger, per_minute(samples, args.minutes), args))
    figures["samples"] = samples
    figures["requests"] = [list(r) for r in ledger.rows]
    print("== ragvisor soak ==")
    print_minutes(figures["rss_per_minute"])
    finish_report(
        figures,
        summary_rows(figures),
        out / f"soak-{stamp}.json",
        logs,
        "latencies stretch on a busy box; the RSS figures still hold",
    )
    line = {k: figures[k] for k in ("started_utc", "routes", "growth", "worker_pids_seen")}
    line["rss_per_minute"] = [
        [r["minute"], round(r["daemon_mb"], 1), round(r["worker_mb"], 1)]
        for r in figures["rss_per_minute"]
    ]
    print(json.dumps(jsonable(line)))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM; the daemon was stopped on the way out
        progress("interrupted")
        sys.exit(130)
