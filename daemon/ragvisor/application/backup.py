"""`ragvisor backup`: the embedded store, its admin token and the configuration in use, copied
into a new folder — consistent while the daemon serves and syncs, and never half-written.

The backup is built in a `.partial` folder beside its destination and renamed into place only
when complete: a crash, Ctrl-C or a full disk leaves at most a `.<name>.<random>.partial`
folder (the backup timer's script removes those), never a backup that looks whole and is not.
How the database itself is copied and checked is the store's business
(`ragvisor.store.sqlite_backup`), reached through `DatabaseCopier`; `verify_backup` and the
checks here are shared with the restore (`ragvisor.application.restore`).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from ragvisor import __version__
from ragvisor.admin_token import ADMIN_TOKEN_FILE
from ragvisor.application.backup_files import (
    ProgressCallback,
    copy_small,
    entry_of,
    fsync_dir,
    measure,
    staged_beside,
    write_new_file,
)
from ragvisor.core.backup import (
    CONFIG_FILE,
    DATABASE_FILE,
    MANIFEST_FILE,
    TOKEN_FILE,
    FileEntry,
    Manifest,
    StoreFacts,
    check_manifest_files,
    manifest_json,
    parse_manifest,
)
from ragvisor.errors import InputError, StoreError


class DatabaseCopier(Protocol):
    """The store's database in one data directory (`ragvisor.store.sqlite_backup`)."""

    path: Path

    def exists(self) -> bool:
        """Whether there is a database."""
        ...

    def in_use(self) -> bool:
        """Whether another process has it open."""
        ...

    def snapshot(self, target: Path, on_progress: ProgressCallback | None = None) -> StoreFacts:
        """Copy it to `target` as of one instant; what it held then."""
        ...


DatabaseCheck = Callable[[Path], StoreFacts]  # a database file's facts, after SQLite's check


# -- backup ---------------------------------------------------------------------------------


def write_backup(
    database: DatabaseCopier,
    destination: Path,
    *,
    data_dir: Path,
    config_path: Path | None,
    log: Any,
    on_progress: ProgressCallback | None = None,
    clock: Callable[[], float] = time.time,
) -> Manifest:
    """Write a backup of the store in `data_dir` (through `database`), its admin token and the
    configuration file into `destination`, which must not exist or be an empty folder.

    Raises InputError for a destination that holds something, StoreError when the store cannot
    be copied or the backup cannot be written; nothing is left at `destination` then.
    """
    started = time.perf_counter()
    destination = destination.absolute()
    _refuse_occupied(destination)
    log.info("backup.started", data_dir=str(data_dir), destination=str(destination))
    with staged_beside(
        destination,
        log,
        event="backup.failed",
        failure=f"cannot write the backup {destination}",
        destination=str(destination),
    ) as staging:
        facts = database.snapshot(staging / DATABASE_FILE, on_progress)
        copied_s = time.perf_counter() - started
        log.info(
            "backup.database_copied",
            size_bytes=(staging / DATABASE_FILE).stat().st_size,
            commit_seq=facts.commit_seq,
            documents=facts.documents,
            chunks=facts.chunks,
            duration_ms=round(copied_s * 1000, 1),
        )
        files = [entry_of(staging / DATABASE_FILE)]
        if (data_dir / ADMIN_TOKEN_FILE).is_file():
            files.append(copy_small(data_dir / ADMIN_TOKEN_FILE, staging / TOKEN_FILE))
        if config_path is not None:
            files.append(copy_small(config_path, staging / CONFIG_FILE))
        manifest = Manifest(
            ragvisor_version=__version__,
            created_at=datetime.fromtimestamp(clock(), UTC).isoformat(timespec="seconds"),
            host=socket.gethostname(),
            data_dir=str(data_dir.absolute()),
            config_path=str(config_path.absolute()) if config_path is not None else None,
            store=facts,
            files=tuple(files),
            seconds=time.perf_counter() - started,
        )
        write_new_file(staging / MANIFEST_FILE, manifest_json(manifest).encode())
        fsync_dir(staging)
        staging.rename(destination)  # replaces an empty folder; atomic on one filesystem
        fsync_dir(destination.parent)
    log.info(
        "backup.finished",
        destination=str(destination),
        size_bytes=manifest.size_bytes,
        files=[f.name for f in manifest.files],
        duration_ms=round((time.perf_counter() - started) * 1000, 1),
    )
    return manifest


def _refuse_occupied(destination: Path) -> None:
    """Raises InputError unless `destination` is absent or an empty folder."""
    if not destination.exists() and not destination.is_symlink():
        return
    if not destination.is_dir() or destination.is_symlink():
        raise InputError(f"--to {destination} exists and is not a folder")
    if any(destination.iterdir()):
        raise InputError(
            f"--to {destination} is not empty; a backup never overwrites one: name a new folder"
        )


# -- verify (a restore's first step too) ---------------------------------------------------


def read_manifest(source: Path) -> Manifest:
    """The manifest of the backup in `source`, its own checksum verified.

    Raises InputError when `source` is not a backup folder, StoreError when its manifest is
    damaged or lists files a restore cannot take.
    """
    path = source / MANIFEST_FILE
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        raise InputError(f"--from {source} is not a ragvisor backup (no {MANIFEST_FILE})") from None
    except OSError as exc:
        raise StoreError(f"cannot read {path}: {exc}") from exc
    manifest = parse_manifest(text, str(path))
    check_manifest_files(manifest, str(path))
    return manifest


def verify_backup(source: Path, check: DatabaseCheck) -> Manifest:
    """Every file of the backup in `source` as its manifest says, and the database sound.

    Reads everything and writes nothing. Raises InputError or StoreError (see `read_manifest`;
    StoreError naming the first damaged file).
    """
    source = source.absolute()
    manifest = read_manifest(source)
    for entry in manifest.files:
        check_entry(entry, *measure(source / entry.name), source)
    check_facts(manifest, check(source / DATABASE_FILE), source)
    return manifest


def check_entry(entry: FileEntry, size: int | None, sha256: str | None, source: Path) -> None:
    """The file as found (size and SHA-256; None when missing) is the one the manifest lists.
    Raises StoreError naming the difference."""
    problem = entry.problem(size, sha256)
    if problem is not None:
        raise StoreError(f"the backup {source} is damaged: {problem}; nothing was changed")


def check_facts(manifest: Manifest, facts: StoreFacts, source: Path) -> None:
    """The database holds what the manifest says it held when it was copied: the checksums
    prove the bytes are the ones written, this that they are the store the manifest describes.
    Raises StoreError."""
    m = manifest.store
    expected = (m.schema_version, m.commit_seq, m.documents, m.chunks, dict(m.vectors))
    found = (
        facts.schema_version,
        facts.commit_seq,
        facts.documents,
        facts.chunks,
        dict(facts.vectors),
    )
    if expected != found:
        raise StoreError(
            f"the backup {source} is damaged: its database holds {facts.documents} documents, "
            f"{facts.chunks} chunks (commit {facts.commit_seq}), the manifest says "
            f"{m.documents}, {m.chunks} (commit {m.commit_seq}); nothing was changed"
        )
