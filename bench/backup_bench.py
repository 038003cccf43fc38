"""`ragvisor backup` and `ragvisor restore` on a store of ``--chunks`` chunks: the copy, the
whole operation in-process, and the command from start to exit with its peak RSS — each as a
median over ``--rounds`` and as a ratio to a plain ``shutil.copyfile`` of the same database
measured in the same rounds (the box is shared and noisy; the ratios travel, the seconds don't).

The store is made by the real sync code (``SyncRunner`` into a ``SqliteStore``) from the search
benchmark's corpus (``search_corpus.build_corpus``: Markdown prose cut by the real chunker, 800/120
characters), with resync_bench's stand-in embedder in place of MiniLM: embedding 10k chunks
with the real model takes several minutes here, and a backup copies the vectors' bytes
whatever their values. The data directory also holds an admin token and the real MiniLM files
under ``models/``, as a daemon's does, and a configuration file names it.

    make bench-backup   # = .venv/bin/python bench/backup_bench.py [--chunks 10000] [--rounds 5]

Figures go to stdout and ``<out>/backup_bench-<timestamp>.json``; progress to stderr; each
command's log to ``<out>/logs-backup-<timestamp>/``. Timings are printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

# bench/ is the script's folder, so the shared library imports directly.
from benchlib import (
    PYTHON,
    RAGVISOR,
    REPO,
    LoadMeter,
    clean_env,
    finish_report,
    median,
    output_folders,
    progress,
    run_header,
)
from ragvisor.admin_token import ADMIN_TOKEN_FILE, write_new_token
from ragvisor.application.backup import write_backup
from ragvisor.application.restore import restore_backup
from ragvisor.application.sync_runner import SyncRunner
from ragvisor.config import load_settings
from ragvisor.core.chunking import ChunkingSpec
from ragvisor.core.documents import CorpusSpec
from ragvisor.embed.model_files import DEFAULT_MODEL
from ragvisor.embed.onnx import model_dir
from ragvisor.llm.gguf import DEFAULT_GGUF_BYTES
from ragvisor.store.sqlite import SqliteStore
from ragvisor.store.sqlite_backup import SqliteBackup, check_database
from ragvisor.store.sqlite_schema import DB_FILENAME

# Reused rather than copied: the search bench's corpus and the re-sync bench's stand-in model.
from resync_bench import StandInEmbedder
from search_corpus import build_corpus, load_vocabulary

MIB = 1024 * 1024
HEADER = ("figure", "median", "x copyfile", "x +fsync", "min..max", "what it times")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; the defaults are the store the docs quote."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--chunks", type=int, default=10_000, help="store size in chunks")
    p.add_argument("--rounds", type=int, default=5, help="timed repetitions of every step")
    p.add_argument("--seed", type=int, default=20240601, help="seed of the corpus")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "out", help="output folder")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = p.parse_args(argv)
    if args.chunks < 10 or args.rounds < 1:
        p.error("--chunks must be >= 10 and --rounds >= 1")
    return args


class EventLog:
    """Stands in for the structlog logger the commands are given and keeps every event, so the
    copy's own ``duration_ms`` (logged between the copy and the rest) can be read back."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def _add(self, event: str, **fields: Any) -> None:
        self.events.append((event, fields))

    info = warning = error = _add

    def seconds(self, event: str) -> float:
        """The last ``event``'s duration in seconds (NaN if it was not logged)."""
        for name, fields in reversed(self.events):
            if name == event:
                return float(fields["duration_ms"]) / 1000
        return float("nan")


def build_store(args: argparse.Namespace, work: Path) -> tuple[Path, Path, dict[str, Any]]:
    """A data directory as a daemon leaves it — store, admin token, models/ — and a config
    file naming it; returns both paths and what the store holds."""
    data, corpus, config = work / "data", work / "corpus", work / "ragvisor.toml"
    config.write_text(f'[store]\ndata_dir = "{data}"\n', encoding="utf-8")
    settings = load_settings(config, {}, {})
    chunking = ChunkingSpec(
        size_chars=settings.corpus.chunk_size_chars,
        overlap_chars=settings.corpus.chunk_overlap_chars,
    )
    # The real MiniLM files: the vocabulary comes from the tokenizer, and models/ is what a
    # restore moves from the old data directory into the new one.
    models = model_dir(settings.embedder, data)
    vocabulary = load_vocabulary(models / "tokenizer.json", 4000, random.Random(args.seed))
    progress(f"corpus of ~{args.chunks} chunks")
    built = build_corpus(corpus, vocabulary, args.chunks, args.seed, chunking)
    store = SqliteStore(data)
    runner = SyncRunner(
        corpus=CorpusSpec(roots=(corpus,)),
        chunking=chunking,
        store=store,
        embedder=StandInEmbedder(),
        lock_path=data / "sync.lock",
        log=structlog.get_logger(),
    )
    progress(f"sync of {built['files']} files (stand-in embedder, not MiniLM: see the docstring)")
    report = runner.run(trigger="bench")
    stats = store.stats()
    store.close()  # checkpoints the WAL: the database is one file, as copyfile sees it
    write_new_token(data / ADMIN_TOKEN_FILE)
    return data, config, {**built, "sync_seconds": report.seconds, "store": stats}


def models_folder_bytes() -> dict[str, int]:
    """What a daemon keeps in ``<data_dir>/models/`` with the default embedder and generator:
    the pinned files' sizes (the daemon checks each file against them)."""
    sizes = {f"{DEFAULT_MODEL.name}/{f.name}": f.size_bytes for f in DEFAULT_MODEL.files}
    sizes["gemma-3-270m-q4_k_m.gguf"] = DEFAULT_GGUF_BYTES
    return sizes


def copyfile(database: Path, target: Path, *, fsync: bool) -> float:
    """The baseline: the database copied as a file, nothing checked (with ``fsync``, also made
    durable, as the backup's copy is). Seconds."""
    started = time.perf_counter()
    shutil.copyfile(database, target)
    if fsync:
        fd = os.open(target, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    seconds = time.perf_counter() - started
    target.unlink()
    return seconds


def app_backup(data: Path, config: Path, target: Path) -> dict[str, float]:
    """`ragvisor.application.backup.write_backup` in this process: the database's copy (the
    store's online backup API, its check) and the whole backup (plus hashes, manifest, fsyncs)."""
    log = EventLog()
    started = time.perf_counter()
    write_backup(SqliteBackup(data), target, data_dir=data, config_path=config, log=log)
    return {
        "wall_s": time.perf_counter() - started,
        "copy_s": log.seconds("backup.database_copied"),
    }


def app_restore(source: Path, data: Path) -> dict[str, float]:
    """`ragvisor.application.restore.restore_backup` over a data directory holding a store and
    models/ (so `--force`, and the models kept): copying and checking, and the whole restore."""
    log = EventLog()
    started = time.perf_counter()
    report = restore_backup(
        source, SqliteBackup(data), check_database, data_dir=data, force=True,
        config_in_use=None, log=log,
    )  # fmt: skip
    if not (report.replaced and report.models_kept):
        progress("WARNING: the restore did not replace the data directory and keep its models/")
    return {
        "wall_s": time.perf_counter() - started,
        "copy_check_s": log.seconds("restore.verified"),
    }


# A child forked from this process starts with this process's peak RSS as its own (Linux keeps
# the maximum across fork and exec), so ru_maxrss of a direct child is at least ours, ~100 MB.
# A small interpreter starts the command instead and reports its child's rusage and wall time:
# the floor is then that interpreter's ~10 MB, shown by the `python -c pass` row.
LAUNCHER = """
import os, sys, time
started = time.perf_counter()
pid = os.posix_spawn(sys.argv[2], sys.argv[2:], os.environ)
_, status, usage = os.wait4(pid, 0)
wall = time.perf_counter() - started
with open(sys.argv[1], "w") as out:
    out.write(f"{wall} {usage.ru_maxrss}\\n")
sys.exit(os.waitstatus_to_exitcode(status))
"""


def command(cmd: list[str], log_path: Path) -> dict[str, Any]:
    """Run one command to its exit through LAUNCHER: wall time from spawn to exit, the child's
    own peak RSS and its last stdout line as JSON (if it is JSON)."""
    measured = log_path.with_name("launcher.out")
    with log_path.open("ab") as log:
        done = subprocess.run(
            [PYTHON, "-c", LAUNCHER, str(measured), *cmd],
            env=clean_env(), stdout=subprocess.PIPE, stderr=log, cwd=REPO, check=False,
        )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:2])} exited {done.returncode}; see {log_path}")
    wall, maxrss_kib = measured.read_text(encoding="utf-8").split()
    lines = done.stdout.decode().strip().splitlines()
    return {
        "wall_s": float(wall),
        "peak_rss_mb": int(maxrss_kib) * 1024 / 1e6,  # Linux reports KiB
        "report": json.loads(lines[-1]) if lines and lines[-1].startswith("{") else {},
    }


def logged_seconds(log_path: Path, event: str) -> float:
    """The last ``event``'s duration from a command's JSON log (NaN if absent)."""
    found = float("nan")
    for line in log_path.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("{") and f'"{event}"' in line:
            found = float(json.loads(line).get("duration_ms", "nan")) / 1000
    return found


def run_rounds(
    args: argparse.Namespace, work: Path, data: Path, config: Path, logs: Path
) -> dict[str, list[float]]:
    """Every step once per round; odd rounds run the steps in reverse (ABBA), so a drift in the
    box's load falls on all of them alike."""
    database = data / DB_FILENAME
    source = work / "backup-source"
    write_backup(SqliteBackup(data), source, data_dir=data, config_path=config, log=EventLog())
    targets = {"app": work / "restore-app", "cli": work / "restore-cli"}
    for target in targets.values():  # a data directory with a store and models/ to replace
        restore_backup(
            source, SqliteBackup(target), check_database, data_dir=target, force=True,
            config_in_use=None, log=EventLog(),
        )  # fmt: skip
        shutil.copytree(data / "models", target / "models")
    cli_log = logs / "commands.log"
    times: dict[str, list[float]] = {}

    def keep(**values: float) -> None:
        for key, value in values.items():
            times.setdefault(key, []).append(value)

    def step_copyfile(i: int) -> None:
        keep(copyfile_s=copyfile(database, work / f"copy-{i}", fsync=False))
        keep(copyfile_fsync_s=copyfile(database, work / f"copy-{i}", fsync=True))

    def step_app_backup(i: int) -> None:
        r = app_backup(data, config, work / f"app-backup-{i}")
        shutil.rmtree(work / f"app-backup-{i}")
        keep(app_backup_copy_s=r["copy_s"], app_backup_s=r["wall_s"])

    def step_app_restore(_: int) -> None:
        r = app_restore(source, targets["app"])
        keep(app_restore_copy_check_s=r["copy_check_s"], app_restore_s=r["wall_s"])

    def step_cli_backup(i: int) -> None:
        dest = work / f"cli-backup-{i}"
        cmd = [str(RAGVISOR), "backup", "--config", str(config), "--to", str(dest), "--json"]
        r = command(cmd, cli_log)
        shutil.rmtree(dest)
        keep(cli_backup_wall_s=r["wall_s"], cli_backup_rss_mb=r["peak_rss_mb"])
        keep(cli_backup_copy_s=logged_seconds(cli_log, "backup.database_copied"))
        keep(cli_backup_reported_s=float(r["report"].get("seconds", "nan")))

    def step_cli_restore(_: int) -> None:
        cmd = [str(RAGVISOR), "restore", "--data-dir", str(targets["cli"])]
        r = command([*cmd, "--from", str(source), "--force", "--json"], cli_log)
        keep(cli_restore_wall_s=r["wall_s"], cli_restore_rss_mb=r["peak_rss_mb"])
        keep(cli_restore_copy_check_s=logged_seconds(cli_log, "restore.verified"))
        keep(cli_restore_reported_s=float(r["report"].get("seconds", "nan")))

    def step_start(_: int) -> None:
        r = command([str(RAGVISOR), "--version"], cli_log)
        keep(cli_version_wall_s=r["wall_s"], cli_version_rss_mb=r["peak_rss_mb"])
        r = command([PYTHON, "-c", "pass"], cli_log)
        keep(python_start_wall_s=r["wall_s"], python_start_rss_mb=r["peak_rss_mb"])

    steps: list[Callable[[int], None]] = [
        step_copyfile, step_app_backup, step_app_restore, step_cli_backup, step_cli_restore,
        step_start,
    ]  # fmt: skip
    for i in range(args.rounds):
        for step in steps if i % 2 == 0 else steps[::-1]:
            step(i)
        progress(
            f"round {i + 1}/{args.rounds}: copyfile {times['copyfile_s'][-1]:.3f}s, backup "
            f"{times['app_backup_s'][-1]:.3f}s, restore {times['app_restore_s'][-1]:.3f}s, "
            f"commands {times['cli_backup_wall_s'][-1]:.2f}s, "
            f"{times['cli_restore_wall_s'][-1]:.2f}s"
        )
    return times


# (figure, key in the rounds, what it times); seconds, unless the key ends in _mb
ROWS = [
    ("copyfile (baseline)", "copyfile_s", "shutil.copyfile of the database file"),
    ("copyfile + fsync", "copyfile_fsync_s", "the same, made durable as the backup's copy is"),
    ("backup: database copy", "app_backup_copy_s", "online backup API, quick_check, fsync"),
    ("backup: whole", "app_backup_s", "+ SHA-256 of the files, token, config, manifest, fsyncs"),
    ("restore: copy + check", "app_restore_copy_check_s", "copy + SHA-256, fsync, quick_check"),
    ("restore: whole", "app_restore_s", "+ the swap: renames, models/ moved, old dir deleted"),
    ("`ragvisor backup` command", "cli_backup_wall_s", "start to exit, subprocess"),
    ("`ragvisor restore --force`", "cli_restore_wall_s", "start to exit, subprocess"),
    ("`ragvisor --version`", "cli_version_wall_s", "start to exit: interpreter + CLI import"),
    ("`python -c pass`", "python_start_wall_s", "the interpreter alone"),
    ("`ragvisor backup` peak RSS MB", "cli_backup_rss_mb", "ru_maxrss of the command alone"),
    ("`ragvisor restore` peak RSS MB", "cli_restore_rss_mb", "ru_maxrss of the command alone"),
    ("`ragvisor --version` peak RSS MB", "cli_version_rss_mb", "ru_maxrss of the command alone"),
    ("`python -c pass` peak RSS MB", "python_start_rss_mb", "the floor of the RSS figures"),
]  # fmt: skip


def summarise(times: dict[str, list[float]]) -> tuple[dict[str, Any], list[list[str]]]:
    """Medians, their ratios to both copyfile medians, and the table's rows. The backup's copy
    is fsynced, so copyfile + fsync is the fairer yardstick; a 20 ms copyfile alone swings more."""
    medians = {key: median(values) for key, values in times.items()}
    bases = {"copyfile": medians["copyfile_s"], "copyfile_fsync": medians["copyfile_fsync_s"]}
    ratios = {
        f"ratios_to_{name}": {k: v / base for k, v in medians.items() if k.endswith("_s")}
        for name, base in bases.items()
    }
    rows = []
    for figure, key, what in ROWS:
        fmt = "{:.0f}" if key.endswith("_mb") else "{:.3f}"
        cells = [f"{r[key]:.1f}" if key in r else "" for r in ratios.values()]
        spread = f"{fmt.format(min(times[key]))}..{fmt.format(max(times[key]))}"
        rows.append([figure, fmt.format(medians[key]), *cells, spread, what])
    return {"medians": medians, **ratios}, rows


def main(argv: list[str] | None = None) -> int:
    """Build the store, time every step over the rounds, print and save the figures."""
    args = parse_args(argv)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    out, stamp, logs = output_folders(args.out, "backup")
    work = Path(tempfile.mkdtemp(prefix="ragvisor-backup-bench-"))
    figures: dict[str, Any] = run_header(stamp, args)
    meter = LoadMeter()
    try:
        meter.mark("build_store")
        data, config, built = build_store(args, work)
        size = (data / DB_FILENAME).stat().st_size
        figures["store"] = {**built, "database_bytes": size, "embedder": "stand-in (not MiniLM)"}
        models = models_folder_bytes()
        figures["models_folder_bytes"] = {**models, "total": sum(models.values())}
        progress(f"store: {built['store']} — database {size / MIB:.1f} MiB; {args.rounds} rounds")
        meter.mark("rounds")
        times = run_rounds(args, work, data, config, logs)
        meter.mark(None)
    finally:
        if args.keep:
            progress(f"kept the temporary folder {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    figures["rounds"] = times
    summary, rows = summarise(times)
    figures.update(summary, noise=meter.phases)
    stats = built["store"]
    base = summary["medians"]["copyfile_s"]
    print(
        f"store: {stats.get('documents')} documents, {stats.get('chunks')} chunks, database "
        f"{size / MIB:.1f} MiB ({size} bytes) — filled by the real sync with a stand-in "
        "embedder (MiniLM would take minutes here; the bytes copied are the same)"
    )
    print(
        f"copyfile median {base:.3f}s = {size / MIB / base:.0f} MiB/s; backup "
        f"{size / MIB / summary['medians']['app_backup_s']:.0f} MiB/s, restore "
        f"{size / MIB / summary['medians']['app_restore_s']:.0f} MiB/s (whole, in-process)"
    )
    total = figures["models_folder_bytes"]["total"]
    print(
        f"a daemon's models/ (kept by a restore): {total / 1e6:.1f} MB = {total / MIB:.1f} MiB "
        f"({', '.join(f'{k} {v / 1e6:.1f} MB' for k, v in models.items())})"
    )
    finish_report(
        figures, rows, out / f"backup_bench-{stamp}.json", logs,
        "the seconds are pessimistic; read the ratios to copyfile", HEADER,
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
