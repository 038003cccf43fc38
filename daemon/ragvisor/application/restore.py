"""`ragvisor restore`: a backup put back into the data directory — checked completely before
the data directory is touched, then swapped in whole.

It checks the manifest's own checksum, the size and SHA-256 of every file as it is copied,
SQLite's `quick_check` of the copied database and the store's counts against the manifest. It
refuses while any process has the store open — the daemon would go on serving, and writing
into, the store it already holds open, and the restore would be lost — and it replaces a data
directory that holds a store or a token only with `--force`. The new directory is built in a
`.partial` folder beside the old one; the old one is renamed aside, the new one renamed in, and
the old one deleted only then (its `models/`, rebuilt from pinned packages anyway, is moved into
the new one so the next start does not copy the model files again).

The configuration file is compared, never written: Ansible renders it, and a restore that
changed it would fight the next playbook run.
"""

from __future__ import annotations

import os
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ragvisor.admin_token import ADMIN_TOKEN_FILE
from ragvisor.application.backup import (
    DatabaseCheck,
    DatabaseCopier,
    check_entry,
    check_facts,
    read_manifest,
)
from ragvisor.application.backup_files import (
    ProgressCallback,
    copy_measured,
    fsync_dir,
    measure,
    staged_beside,
)
from ragvisor.core.backup import (
    CONFIG_FILE,
    DATABASE_FILE,
    RESTORED_FILES,
    TOKEN_FILE,
    Manifest,
)
from ragvisor.errors import BusyError, InputError

# What a data directory may hold without being worth protecting: rebuilt or rewritten by
# ragvisor itself. Anything else makes a restore ask for --force.
REBUILT = frozenset({"models", "sync.lock"})
MODELS = "models"


@dataclass(frozen=True, slots=True)
class RestoreReport:
    """What a restore did, for the command's summary and its JSON."""

    manifest: Manifest
    data_dir: Path
    replaced: bool  # a data directory was there and was replaced
    models_kept: bool  # its models/ moved into the restored one
    config_matches: bool | None  # the backup's config.toml vs the one in use; None: not known
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        """JSON shape."""
        return {
            "data_dir": str(self.data_dir),
            "replaced": self.replaced,
            "models_kept": self.models_kept,
            "config_matches": self.config_matches,
            "seconds": round(self.seconds, 3),
            "backup": self.manifest.as_dict(),
        }


def restore_backup(
    source: Path,
    database: DatabaseCopier,
    check: DatabaseCheck,
    *,
    data_dir: Path,
    force: bool,
    config_in_use: Path | None,
    log: Any,
    on_progress: ProgressCallback | None = None,
) -> RestoreReport:
    """Replace the store in `data_dir` (whose database `database` is) with the backup in
    `source`, checked on the way; the data directory is untouched unless all of it succeeds.

    Raises InputError (not a backup; a data directory that holds a store, without `force`),
    BusyError (a process has the store open), StoreError (a damaged backup, or the data
    directory cannot be replaced).
    """
    started = time.perf_counter()
    source, data_dir = source.absolute(), data_dir.absolute()
    manifest = read_manifest(source)
    _refuse_busy(database)
    if data_dir.is_mount():
        # The swap renames the data directory aside and the restored one into its place; a
        # mount point can be neither (EBUSY), and the new folder is built in its parent.
        raise InputError(
            f"{data_dir} is a mount point; a restore replaces the data directory by renaming "
            "it, which a mount point cannot be. Point store.data_dir at a folder inside the "
            "volume (for example <mount>/data) and restore there"
        )
    held = _worth_keeping(data_dir)
    if held and not force:
        raise InputError(
            f"{data_dir} already holds {', '.join(held)}; restoring replaces it: add --force "
            "(the old one is kept aside until the restore is complete, then deleted)"
        )
    for leftover in sorted(data_dir.parent.glob(f".{data_dir.name}.*.replaced")):
        # An earlier restore cut short between its two renames: this may be the only copy of
        # the data directory it replaced.
        log.warning("restore.leftover_found", path=str(leftover))
    log.info("restore.started", source=str(source), data_dir=str(data_dir), force=force)
    with staged_beside(
        data_dir,
        log,
        event="restore.failed",
        failure=f"cannot restore into {data_dir}",
        data_dir=str(data_dir),
    ) as staging:
        # Backup names -> data directory names.
        names = {DATABASE_FILE: database.path.name, TOKEN_FILE: ADMIN_TOKEN_FILE}
        entries = [e for e in map(manifest.file, RESTORED_FILES) if e is not None]
        total, done = sum(e.size_bytes for e in entries), 0
        for entry in entries:
            copied = copy_measured(
                source / entry.name, staging / names[entry.name], on_progress, done, total
            )
            check_entry(entry, *copied, source)
            done += entry.size_bytes
        check_facts(manifest, check(staging / database.path.name), source)
        log.info(
            "restore.verified",
            files=[e.name for e in entries],
            duration_ms=round((time.perf_counter() - started) * 1000, 1),
        )
        owner = restore_owner(data_dir, source, os.geteuid())
        if owner is not None:
            for path in (staging, *staging.iterdir()):
                os.chown(path, *owner)
        fsync_dir(staging)
        _refuse_busy(database)  # again: a daemon started meanwhile must not lose the restore
        replaced, models_kept = _swap_in(staging, data_dir, log)
    report = RestoreReport(
        manifest=manifest,
        data_dir=data_dir,
        replaced=replaced,
        models_kept=models_kept,
        config_matches=_config_matches(manifest, config_in_use),
        seconds=time.perf_counter() - started,
    )
    log.info(
        "restore.finished",
        data_dir=str(data_dir),
        replaced=replaced,
        commit_seq=manifest.store.commit_seq,
        documents=manifest.store.documents,
        duration_ms=round(report.seconds * 1000, 1),
    )
    return report


def _refuse_busy(database: DatabaseCopier) -> None:
    """Raises BusyError when another process has the store open."""
    if database.in_use():
        raise BusyError(
            f"{database.path} is open in another process — the daemon (`systemctl stop "
            "ragvisor`) or a `ragvisor sync`: stop it first; a restore beneath it would be lost"
        )


def _worth_keeping(data_dir: Path) -> list[str]:
    """Names in `data_dir` a restore would destroy (not `models/` nor the sync lock)."""
    try:
        return sorted(p.name for p in data_dir.iterdir() if p.name not in REBUILT)
    except FileNotFoundError:
        return []
    except NotADirectoryError:
        raise InputError(f"{data_dir} exists and is not a folder") from None


def restore_owner(data_dir: Path, source: Path, euid: int) -> tuple[int, int] | None:
    """Who should own the restored files: None (the caller) unless the caller is root; then
    the data directory's owner, or — with no data directory — the owner of the backup's
    database (the backup timer writes as the daemon's user)."""
    if euid != 0:
        return None
    for path in (data_dir, source / DATABASE_FILE):
        try:
            info = path.stat()
        except FileNotFoundError:
            continue
        return info.st_uid, info.st_gid
    return None


def _swap_in(staging: Path, data_dir: Path, log: Any) -> tuple[bool, bool]:
    """Rename `staging` to `data_dir`, the old one aside first and deleted last.

    Returns (replaced, models kept). If the second rename fails the old one is put back.
    """
    if not data_dir.exists():
        staging.rename(data_dir)
        fsync_dir(data_dir.parent)
        return False, False
    aside = data_dir.with_name(f".{data_dir.name}.{secrets.token_hex(4)}.replaced")
    data_dir.rename(aside)
    try:
        staging.rename(data_dir)
    except BaseException:
        aside.rename(data_dir)
        raise
    fsync_dir(data_dir.parent)
    log.info("restore.data_dir_replaced", data_dir=str(data_dir), old=str(aside))
    # The restore is done; what follows only tidies up, and failing at it must not report a
    # restored data directory as a failed restore.
    models_kept = False
    try:
        if (aside / MODELS).is_dir():
            (aside / MODELS).rename(data_dir / MODELS)
            models_kept = True
        shutil.rmtree(aside)
    except OSError as exc:
        log.warning("restore.old_data_dir_left", path=str(aside), error=str(exc))
    return True, models_kept


def _config_matches(manifest: Manifest, config_in_use: Path | None) -> bool | None:
    """Whether the backup's configuration is the one in use; None when either is unknown."""
    saved = manifest.file(CONFIG_FILE)
    if saved is None or config_in_use is None:
        return None
    _, sha256 = measure(config_in_use)
    return sha256 == saved.sha256
