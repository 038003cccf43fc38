"""`ragvisor backup` and `ragvisor restore`: their flags, the progress bar, and the printing of
what `ragvisor.application.backup` did. Exit codes as everywhere (`cli.exits`): 0 done, 1 the
store could not be copied or the backup is damaged, 2 a bad destination, a data directory that
holds a store without `--force`, or the Neo4j store (backed up with `neo4j-admin`), 75 a process
has the store open (restore only)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ragvisor.cli.exits import EXIT_OK
from ragvisor.cli.interrupts import install_sigterm_as_interrupt
from ragvisor.cli.options import add_config_argument
from ragvisor.errors import ConfigError

if TYPE_CHECKING:
    from ragvisor.config import Settings
    from ragvisor.core.backup import Manifest

NEO4J_ADVICE = {
    "backup": "store.backend is neo4j: ragvisor backs up only its embedded SQLite store. Back up "
    "Neo4j with `neo4j-admin database dump` while the database is stopped (Neo4j Community "
    'cannot dump a running one); the commands are in docs/neo4j.md, "Backup and restore", and '
    "the Ansible role's backup timer runs them",
    "restore": "store.backend is neo4j: ragvisor restores only its embedded SQLite store. Restore "
    "Neo4j with `neo4j-admin database load --overwrite-destination` while the database is "
    'stopped; the commands are in docs/neo4j.md, "Backup and restore"',
}


def add_backup_arguments(parser: argparse.ArgumentParser) -> None:
    """`ragvisor backup --to DIR`."""
    add_config_argument(parser)
    parser.add_argument("--data-dir", type=Path, help="where the store lives (store.data_dir)")
    parser.add_argument(
        "--to",
        type=Path,
        required=True,
        metavar="DIR",
        dest="destination",
        help="the backup folder to create; it must not exist or be empty",
    )
    parser.add_argument("--json", action="store_true", help="print the manifest as one JSON object")


def add_restore_arguments(parser: argparse.ArgumentParser) -> None:
    """`ragvisor restore --from DIR`."""
    add_config_argument(parser)
    parser.add_argument("--data-dir", type=Path, help="the data directory to restore into")
    parser.add_argument(
        "--from",
        type=Path,
        required=True,
        metavar="DIR",
        dest="source",
        help="a folder written by `ragvisor backup`",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace a data directory that holds a store or an admin token",
    )
    parser.add_argument(
        "--verify-only",
        action="store_true",
        help="check the backup (manifest, checksums, SQLite's check) and change nothing",
    )
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")


def _sqlite_settings(args: argparse.Namespace) -> Settings:
    """The settings, refusing the Neo4j store (ConfigError, exit 2) with what to do instead."""
    from ragvisor.config import load_settings

    overrides = {"store": {"data_dir": str(args.data_dir)}} if args.data_dir else {}
    settings = load_settings(args.config, os.environ, overrides)
    if settings.store.backend == "neo4j":
        raise ConfigError(NEO4J_ADVICE[args.command])
    return settings


def _progress_bar(description: str) -> Any:
    """A byte counter on a terminal's stderr; silent otherwise (the log has the durations).
    `bar.advance_to(done, total)` is the `on_progress` callback both commands pass."""
    from tqdm import tqdm

    bar = tqdm(
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=description,
        file=sys.stderr,
        disable=not sys.stderr.isatty(),
        dynamic_ncols=True,
    )

    def advance_to(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    bar.advance_to = advance_to
    return bar


def run_backup(args: argparse.Namespace) -> int:
    """`ragvisor backup`: copy, then a summary (or the manifest as JSON)."""
    import structlog

    from ragvisor.application.backup import write_backup
    from ragvisor.store.sqlite_backup import SqliteBackup

    install_sigterm_as_interrupt()
    settings = _sqlite_settings(args)
    data_dir = Path(settings.store.data_dir)
    bar = _progress_bar("copying")

    try:
        manifest = write_backup(
            SqliteBackup(data_dir, busy_timeout_s=settings.store.busy_timeout_s),
            args.destination,
            data_dir=data_dir,
            config_path=args.config,
            log=structlog.get_logger(component="backup"),
            on_progress=bar.advance_to,
        )
    finally:
        bar.close()
    if args.json:
        print(json.dumps({"path": str(args.destination.absolute()), **manifest.as_dict()}))
        return EXIT_OK
    print(
        f"backup written to {args.destination.absolute()} in {manifest.seconds:.2f}s "
        f"({_size(manifest.size_bytes)})"
    )
    _print_contents(manifest)
    return EXIT_OK


def run_restore(args: argparse.Namespace) -> int:
    """`ragvisor restore`: verify (and with `--verify-only` stop there), restore, summarise."""
    import structlog

    from ragvisor.application.backup import verify_backup
    from ragvisor.application.restore import restore_backup
    from ragvisor.store.sqlite_backup import SqliteBackup, check_database

    install_sigterm_as_interrupt()
    if args.verify_only:
        manifest = verify_backup(args.source, check_database)
        if args.json:
            print(json.dumps({"verified": True, "backup": manifest.as_dict()}))
            return EXIT_OK
        print(
            f"backup {args.source.absolute()} is whole: {len(manifest.files)} "
            f"file{'s' if len(manifest.files) != 1 else ''}, "
            f"{_size(manifest.size_bytes)}, checksums and SQLite's check pass"
        )
        _print_contents(manifest)
        return EXIT_OK
    settings = _sqlite_settings(args)
    data_dir = Path(settings.store.data_dir)
    bar = _progress_bar("restoring")

    try:
        report = restore_backup(
            args.source,
            SqliteBackup(data_dir, busy_timeout_s=settings.store.busy_timeout_s),
            check_database,
            data_dir=data_dir,
            force=args.force,
            config_in_use=args.config,
            log=structlog.get_logger(component="backup"),
            on_progress=bar.advance_to,
        )
    finally:
        bar.close()
    if args.json:
        print(json.dumps(report.as_dict()))
        return EXIT_OK
    how = "into a new data directory"
    if report.replaced:
        how = "replacing the data directory" + (", its models/ kept" if report.models_kept else "")
    print(
        f"restored {args.source.absolute()} into {report.data_dir} in {report.seconds:.2f}s ({how})"
    )
    _print_contents(report.manifest)
    saved = args.source.absolute() / "config.toml"
    if report.config_matches is True:
        print(f"settings: the backup's configuration is the one in use ({args.config})")
    elif report.config_matches is False:
        print(
            f"settings: the configuration in use ({args.config}) differs from the backup's; "
            f"compare: diff {saved} {args.config}"
        )
    elif report.manifest.config_path is not None:
        print(f"settings: the backup's configuration ({report.manifest.config_path}) is in {saved}")
    print(
        "next: start the daemon (or run `ragvisor sync`); it embeds only what changed in the "
        "corpus since the backup"
    )
    return EXIT_OK


def _print_contents(manifest: Manifest) -> None:
    """What the store held, its models, and the files, as an operator reads them."""
    s = manifest.store
    print(
        f"store:    {s.documents} documents, {s.chunks} chunks, commit {s.commit_seq}, schema "
        f"{s.schema_version}, chunker {', '.join(s.chunker_versions) or '-'}"
    )
    for label in s.models() or ["- (no generation recorded)"]:
        print(f"model:    {label}")
    vectors = ", ".join(f"{n} of {key}" for key, n in s.vectors.items()) or "none"
    print(f"vectors:  {vectors}")
    print(
        f"from:     {manifest.host}:{manifest.data_dir} at {manifest.created_at}, "
        f"ragvisor {manifest.ragvisor_version}"
    )
    print("files:    " + ", ".join(f"{f.name} ({_size(f.size_bytes)})" for f in manifest.files))


def _size(size_bytes: int) -> str:
    """Bytes as people read them."""
    if size_bytes < 1024:
        return f"{size_bytes} B"
    size, unit = size_bytes / 1024, "KiB"
    for larger in ("MiB", "GiB"):
        if size < 1024:
            break
        size, unit = size / 1024, larger
    return f"{size:.1f} {unit}"
