"""`PUT`/`DELETE /documents/{path}`: write or remove one file of the managed corpus folder and
sync that document at once, so the answer can say it is searchable (or gone from search).

The path is checked first (`core.document_paths`: 400 for a malformed one, 403 for one the globs
leave out), then the sync runner's locks are taken — waiting at most `sync.document_wait_s` for
a running sync, then 503 with `Retry-After` — and the file is written inside them, so no other
sync reads it half-done. The write walks the folders with directory descriptors opened
`O_NOFOLLOW` (a symlink anywhere on the way is refused, and one swapped in meanwhile cannot
redirect the write), goes to a temporary file in the target folder, is fsynced, renamed over
the target and the folder fsynced: a crash leaves the old text or the new, never a torn file.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ragvisor.application.sync_runner import SyncRunner
from ragvisor.core.document_paths import path_problem, path_refusal
from ragvisor.core.documents import CorpusSpec
from ragvisor.core.model import SyncReport
from ragvisor.core.scope import scope_of
from ragvisor.errors import BusyError, DocumentNotFound, InputError, Overloaded, PathRefused

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True, slots=True)
class DocumentResult:
    """What a document request did, as its JSON answer says it."""

    path: str
    action: str  # new, changed, unchanged, deleted
    searchable: bool  # whether /search finds the document now
    at: float  # unix time the change was committed (searchable from, or gone from, search)
    sync_ms: float  # the sync of this one document, locks to commit
    skipped: str | None = None  # why a written document is not searchable (a refused chunk)

    def as_dict(self) -> dict[str, object]:
        """JSON shape."""
        body: dict[str, object] = {
            "path": self.path,
            "action": self.action,
            "searchable": self.searchable,
            "searchable_at" if self.action != "deleted" else "removed_at": self.at,
            "sync_ms": round(self.sync_ms, 1),
        }
        if self.skipped is not None:
            body["skipped"] = self.skipped
        return body


class DocumentWriter:
    """Writes and deletes documents of one corpus folder, each synced at once."""

    def __init__(
        self,
        root: Path,
        spec: CorpusSpec,
        runner: SyncRunner,
        *,
        wait_s: float,
        on_settled: Callable[[str], None] | None = None,
    ) -> None:
        self.root = root.resolve()
        self._spec = spec
        self._runner = runner
        self._wait_s = wait_s
        # Told of each path written or removed and synced here, so the folder watch does not
        # sync it a second time.
        self._on_settled = on_settled

    def check(self, path: str) -> None:
        """Raise InputError (malformed) or PathRefused (left out by the globs) for `path`."""
        problem = path_problem(path)
        if problem is not None:
            raise InputError(f"the document path {problem}")
        refusal = path_refusal(path, self._spec)
        if refusal is not None:
            raise PathRefused(f"{path}: {refusal}")

    def put(self, path: str, body: bytes) -> DocumentResult:
        """Write `body` as the document at `path` and sync it.

        Raises InputError (a malformed path, a body that is not UTF-8 text), PathRefused,
        Overloaded (a sync held the locks past `sync.document_wait_s`), and what a sync raises.
        """
        self.check(path)
        _check_text(body)
        full = self.root / path

        def write() -> None:
            _write_atomically(self.root, PurePosixPath(path), body)

        report, sync_ms = self._sync(full, write)
        counts = report.documents
        action = "new" if counts.new else "changed" if counts.changed else "unchanged"
        skipped = next((s["reason"] for s in report.skipped), None)
        return DocumentResult(path, action, skipped is None, time.time(), sync_ms, skipped)

    def delete(self, path: str) -> DocumentResult:
        """Remove the document at `path` and sync it away.

        Raises InputError, PathRefused, DocumentNotFound (no such file), Overloaded.
        """
        self.check(path)
        full = self.root / path

        def remove() -> None:
            _remove(self.root, PurePosixPath(path))

        _, sync_ms = self._sync(full, remove)
        return DocumentResult(path, "deleted", False, time.time(), sync_ms)

    def _sync(self, full: Path, change: Callable[[], None]) -> tuple[SyncReport, float]:
        started = time.perf_counter()
        try:
            report = self._runner.run(
                trigger="document",
                scope=scope_of([str(full)], [str(self.root)]),
                wait_s=self._wait_s,
                prepare=change,
            )
        except BusyError as exc:
            raise Overloaded(
                f"{exc}; waited {self._wait_s:g} s (sync.document_wait_s), nothing was written",
                retry_after_s=max(1.0, self._wait_s),
            ) from exc
        if self._on_settled is not None:
            self._on_settled(str(full))
        return report, (time.perf_counter() - started) * 1000


def _check_text(body: bytes) -> None:
    """Raise InputError unless `body` is UTF-8 text the sync would index (no NUL)."""
    if b"\0" in body:  # the sync would call it binary (a NUL in the first 8 KiB) or worse
        raise InputError("the document holds a NUL byte; send text")
    try:
        body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"the document is not valid UTF-8 (byte offset {exc.start})") from exc


@contextmanager
def _folder(root: Path, parts: tuple[str, ...], *, create: bool) -> Iterator[int]:
    """A descriptor of the folder `root/parts`, each step opened without following a symlink;
    missing folders are made when `create`. Raises PathRefused, DocumentNotFound."""
    fd = os.open(root, _DIR_FLAGS)
    try:
        for name in parts:
            if create:
                with suppress(FileExistsError):
                    os.mkdir(name, 0o755, dir_fd=fd)
            try:
                child = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError as exc:
                raise DocumentNotFound(f"no folder {name!r} on the way") from exc
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise PathRefused(f"{name!r} on the way is a symlink or not a folder") from exc
                raise
            os.close(fd)
            fd = child
        yield fd
    finally:
        os.close(fd)


def _refuse_special(name: str, fd: int) -> bool:
    """Whether `name` exists in the folder `fd`; PathRefused if it is a symlink or a folder."""
    try:
        info = os.lstat(name, dir_fd=fd)
    except FileNotFoundError:
        return False
    if stat.S_ISLNK(info.st_mode):
        raise PathRefused(f"{name!r} is a symlink; write its target instead")
    if not stat.S_ISREG(info.st_mode):
        raise PathRefused(f"{name!r} is a folder or not a regular file")
    return True


def _write_atomically(root: Path, path: PurePosixPath, body: bytes) -> None:
    """Temp file, fsync, rename over the target, fsync the folder."""
    with _folder(root, path.parts[:-1], create=True) as fd:
        _refuse_special(path.name, fd)
        # Hidden and not matching the globs: neither the scan nor the watch takes it.
        temp = f".{path.name[:200]}.{secrets.token_hex(4)}.ragvisor-tmp"
        out = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644, dir_fd=fd)
        try:
            view = memoryview(body)
            while view:
                view = view[os.write(out, view) :]
            os.fsync(out)
        except BaseException:
            os.close(out)
            os.unlink(temp, dir_fd=fd)
            raise
        os.close(out)
        os.rename(temp, path.name, src_dir_fd=fd, dst_dir_fd=fd)
        os.fsync(fd)


def _remove(root: Path, path: PurePosixPath) -> None:
    """Unlink the file, fsync its folder. Raises DocumentNotFound, PathRefused."""
    with _folder(root, path.parts[:-1], create=False) as fd:
        if not _refuse_special(path.name, fd):
            raise DocumentNotFound(f"no document {str(path)!r}")
        os.unlink(path.name, dir_fd=fd)
        os.fsync(fd)
