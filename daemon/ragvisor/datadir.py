"""The data directory is private: the folder 0700, everything ragvisor writes in it 0600.

`store.data_dir` holds the whole corpus as text (chunks, the keyword index), its vectors and the
admin token; with the usual umask of 022 a plain `mkdir` and SQLite's default would leave all of
it readable by every local user. So modes are set where files are made, whatever the process
umask: `os.open(…, 0o600)` and `mkdir(mode=0o700)` (a umask can only take bits away), and a file
found wider is narrowed through its descriptor. SQLite gives its `-wal`, `-shm` and `-journal`
files the mode of the database file itself (its unix VFS copies it and `fchmod`s past the
umask), so the store creates the database file 0600 before SQLite opens it.

A data directory left wider — by an older ragvisor, a restore, or by hand — is narrowed at start
(`data_dir.mode_tightened`, one event per path) and reported by `ragvisor doctor`. Only group and
other bits are removed; symbolic links are neither followed nor changed.
"""

from __future__ import annotations

import contextlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ragvisor.errors import StoreError

DIR_MODE = 0o700
FILE_MODE = 0o600
# Group and other permission bits: any of them set means someone besides the owner gets in.
OPEN_BITS = 0o077


@dataclass(frozen=True, slots=True)
class OpenPath:
    """A path under the data directory that group or other may read, write or enter."""

    path: Path
    mode: int  # permission bits only (stat.S_IMODE)
    is_dir: bool

    @property
    def private_mode(self) -> int:
        """The same mode without group and other bits."""
        return self.mode & ~OPEN_BITS


def is_open(mode: int) -> bool:
    """Whether permission bits give group or other any access."""
    return bool(stat.S_IMODE(mode) & OPEN_BITS)


def make_private_dir(path: Path) -> Path:
    """Create `path` and any missing parent 0700; returns it.

    Parents too (unlike `mkdir -p`): `<data_dir>/models/<name>` must not leave `models/` 0755.
    An existing directory is left as it is: `tighten_data_dir` narrows it at start and logs it.
    Raises OSError when it cannot be created, or FileExistsError when a file has its name.
    """
    missing: list[Path] = []
    ancestor = path
    while not ancestor.exists() and ancestor != ancestor.parent:
        missing.append(ancestor)
        ancestor = ancestor.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=DIR_MODE)
        except FileExistsError:  # made meanwhile by another process, or a file
            if not folder.is_dir():
                raise
            continue
        folder.chmod(DIR_MODE)  # exact, even under a umask that takes owner bits away
    if not path.is_dir():
        raise FileExistsError(f"{path} exists and is not a folder")
    return path


def open_private(path: Path, flags: int) -> int:
    """`os.open(path, flags | O_CREAT)` with the file 0600: created so, or narrowed if wider.

    A file owned by someone else cannot be narrowed by us; it is opened as it is (the doctor
    reports it). Raises OSError as `os.open` does.
    """
    fd = os.open(path, flags | os.O_CREAT, FILE_MODE)
    try:
        mode = stat.S_IMODE(os.fstat(fd).st_mode)
        if is_open(mode):
            with contextlib.suppress(PermissionError):  # not ours: the doctor reports it
                os.fchmod(fd, mode & ~OPEN_BITS)
    except BaseException:
        os.close(fd)
        raise
    return fd


def touch_private(path: Path) -> None:
    """Make sure `path` exists and is 0600, leaving its content alone. Raises OSError."""
    os.close(open_private(path, os.O_RDONLY))


def find_open_paths(root: Path) -> tuple[OpenPath, ...]:
    """`root` and every path below it that group or other can access, `root` first.

    Symbolic links are skipped (their own mode means nothing; their target is not ours).
    Raises OSError when `root` or a folder below it cannot be listed.
    """
    found: list[OpenPath] = []

    def look(path: Path) -> None:
        info = path.lstat()
        if not stat.S_ISLNK(info.st_mode) and is_open(info.st_mode):
            found.append(OpenPath(path, stat.S_IMODE(info.st_mode), stat.S_ISDIR(info.st_mode)))

    look(root)
    for folder, folders, files in os.walk(root, onerror=_raise):
        for name in sorted(folders) + sorted(files):
            look(Path(folder) / name)
    return tuple(found)


def _raise(error: OSError) -> None:
    raise error


def tighten_data_dir(data_dir: Path, log: Any) -> tuple[OpenPath, ...]:
    """Create the data directory 0700 if missing, or narrow it and everything in it to
    owner-only; one `data_dir.mode_tightened` warning per path changed. Returns what it changed.

    A path we may not change (someone else's file) is logged as `data_dir.mode_not_tightened`
    and left for the operator (the doctor names it): refusing to start would not close it.
    Raises StoreError when the directory cannot be created or listed.
    """
    changed: list[OpenPath] = []
    try:
        make_private_dir(data_dir)
        wider = find_open_paths(data_dir)
    except OSError as exc:
        raise StoreError(f"cannot make the data directory {data_dir} private: {exc}") from exc
    for entry in wider:
        mode_was, mode = f"{entry.mode:04o}", f"{entry.private_mode:04o}"
        try:
            entry.path.chmod(entry.private_mode)
        except OSError as exc:
            log.warning(
                "data_dir.mode_not_tightened",
                path=str(entry.path),
                mode=mode_was,
                error=exc.strerror or str(exc),
            )
            continue
        log.warning("data_dir.mode_tightened", path=str(entry.path), mode_was=mode_was, mode=mode)
        changed.append(entry)
    return tuple(changed)
