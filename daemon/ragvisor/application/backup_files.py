"""The file work of `ragvisor backup` and `ragvisor restore`: private folders built beside
where a result belongs, files copied while they are hashed, and the fsyncs that make a rename
survive a power cut. Everything here is created 0700/0600, like the data directory."""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ragvisor.core.backup import FileEntry
from ragvisor.datadir import make_private_dir, open_private
from ragvisor.errors import StoreError

ProgressCallback = Callable[[int, int], None]  # bytes done, bytes in all
_COPY_BYTES = 1 << 20


def staging_beside(final: Path, suffix: str) -> Path:
    """A new private folder beside `final`, named so it never looks like a result.

    Raises StoreError when the folder beside it cannot be written.
    """
    try:
        make_private_dir(final.parent)
        staging = final.with_name(f".{final.name}.{secrets.token_hex(4)}.{suffix}")
        staging.mkdir(mode=0o700)
    except OSError as exc:
        raise StoreError(
            f"cannot write beside {final} in {final.parent}: {exc.strerror or exc}. The result "
            "is built there and renamed into place; run as a user who may write there (for a "
            "restore, root: the files are given to the data directory's owner)"
        ) from exc
    return staging


@contextlib.contextmanager
def staged_beside(
    final: Path, log: Any, *, event: str, failure: str, **fields: Any
) -> Iterator[Path]:
    """A new private folder beside `final` (staging_beside) for the `with` block to build in.

    Whatever fails inside — a full disk, Ctrl-C, a refused check — the folder is removed, the
    `event` logged with `fields` and the error, and an OSError raised as StoreError
    ("`failure`: why"), so neither command leaves a half-built result or a traceback.
    """
    staging = staging_beside(final, "partial")
    try:
        yield staging
    except BaseException as exc:
        shutil.rmtree(staging, ignore_errors=True)
        # The message says what failed; a traceback says nothing more.
        log.error(event, error=str(exc) or repr(exc), **fields)  # noqa: TRY400
        if isinstance(exc, OSError):
            raise StoreError(f"{failure}: {exc}") from exc
        raise


def measure(path: Path) -> tuple[int | None, str | None]:
    """Size and SHA-256 of a file; (None, None) when it is missing."""
    try:
        with path.open("rb") as stream:
            digest = hashlib.file_digest(stream, "sha256")
            return stream.tell(), digest.hexdigest()
    except FileNotFoundError:
        return None, None


def entry_of(path: Path) -> FileEntry:
    size, sha256 = measure(path)
    if size is None or sha256 is None:
        raise StoreError(f"{path} vanished while the backup was written")
    return FileEntry(path.name, size, sha256)


def copy_small(source: Path, target: Path) -> FileEntry:
    """Copy a small file (token, configuration) 0600; its entry."""
    try:
        data = source.read_bytes()
    except OSError as exc:
        raise StoreError(f"cannot read {source}: {exc.strerror or exc}") from exc
    write_new_file(target, data)
    return entry_of(target)


def copy_measured(
    source: Path, target: Path, on_progress: ProgressCallback | None, done: int, total: int
) -> tuple[int | None, str | None]:
    """Copy `source` to a new 0600 `target`, hashing what was read: size and SHA-256 of the
    bytes written, (None, None) when `source` is missing."""
    digest, size = hashlib.sha256(), 0
    try:
        reader = source.open("rb")
    except FileNotFoundError:
        return None, None
    with reader, os.fdopen(open_private(target, os.O_WRONLY | os.O_EXCL), "wb") as writer:
        while block := reader.read(_COPY_BYTES):
            digest.update(block)
            writer.write(block)
            size += len(block)
            if on_progress is not None:
                on_progress(done + size, total)
        writer.flush()
        os.fsync(writer.fileno())
    return size, digest.hexdigest()


def write_new_file(path: Path, data: bytes) -> None:
    """A new 0600 file holding `data`, on disk before its folder is renamed."""
    with os.fdopen(open_private(path, os.O_WRONLY | os.O_EXCL), "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def fsync_dir(folder: Path) -> None:
    """Make the names in `folder` (a rename into it) survive a power cut."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
