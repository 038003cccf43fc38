"""Discover and read a corpus of Markdown and text files.

This is the only place that turns folders into :class:`SourceDocument` values. It walks each
corpus root deterministically, applies include/exclude globs to paths relative to the root,
follows symlinks only while they stay inside the root, and reads every file exactly once so the
content hash and the text that gets chunked always describe the same bytes. Files it cannot use
(binary, not UTF-8, too large, unreadable, vanished, a name that is not UTF-8) are reported as
skips with a short reason, never silently dropped and never fatal. Roots that do not exist are
reported separately, so a caller can never mistake an unmounted folder for "every document was
deleted".
"""

from __future__ import annotations

import os
import re
import stat
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path, PurePosixPath

from wcmatch import glob as wcglob

from ragvisor.core.chunking import MARKDOWN_SUFFIXES
from ragvisor.core.hashing import document_id, sha256_bytes
from ragvisor.core.model import SourceDocument
from ragvisor.core.titles import markdown_title, split_front_matter, title_from_stem
from ragvisor.errors import InputError

BINARY_SNIFF_BYTES = 8192
# Guards against pathological fan-out through symlinks; no real knowledge base nests this deep.
MAX_DIR_DEPTH = 64

# Receives (path, reason); a directory's path ends with "/". The path is as the file system
# gave it (an undecodable name included): pass it through `display_path` before showing it.
SkipCallback = Callable[[str, str], None]
NAME_NOT_UTF8 = "name is not valid UTF-8 (rename it, e.g. with convmv)"
FOLDER_NAME_NOT_UTF8 = "a folder name in its path is not valid UTF-8 (rename the folder)"


class DocumentSkipped(InputError):
    """A file in a corpus that cannot be indexed; ``reason`` is short and human-readable."""

    def __init__(self, path: Path | str, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{display_path(self.path)}: {reason}")


def is_utf8(path: str) -> bool:
    """Whether a path, as Python decoded it from the file system, is valid UTF-8.

    Linux file names are bytes; Python carries bytes that are not UTF-8 as lone surrogates
    (``b"\\xff"`` becomes ``"\\udcff"``), which no UTF-8 encoder accepts — not the id hash, not
    SQLite, not a JSON response. Such a file can be reported, never indexed.
    """
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def display_path(path: str) -> str:
    """``path`` safe to log, print and serve: bytes that are not UTF-8 shown as ``\\xff``.

    A valid path comes back unchanged; ``bad\\udcff.md`` (from the bytes ``bad\\xff.md``) comes
    back as the ten characters ``bad\\xff.md``.
    """
    try:
        raw = path.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate no file system produced: show its code point
        return path.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


@dataclass(frozen=True)
class CorpusSpec:
    """Which folders make up the corpus and which files in them are documents.

    Globs are matched against the POSIX path relative to each root, so a root that is itself
    inside a hidden directory (``/tmp/.x/docs``) is scanned normally; only hidden directories
    *below* the root are excluded by default.
    """

    roots: tuple[Path, ...]
    include: tuple[str, ...] = ("**/*.md", "**/*.markdown", "**/*.txt")
    exclude: tuple[str, ...] = ("**/.git/**", "**/node_modules/**", "**/.venv/**", "**/.*/**")
    max_file_bytes: int = 2_000_000


@dataclass
class ScanResult:
    """Everything one scan found: documents, per-file skips, and roots that were not there.

    ``skipped`` holds ``(path, reason)``; a directory that could not be listed appears with a
    trailing ``/`` so a sync planner can keep the documents it knew below it.
    """

    documents: list[SourceDocument] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    missing_roots: list[Path] = field(default_factory=list)
    scanned_roots: list[str] = field(default_factory=list)
    unchanged_ids: list[str] = field(default_factory=list)  # passed the quick check, not read


# wcmatch's glob: `*` and `?` never cross `/`, `**` as a whole segment matches zero or more
# directories (`**/*.md` matches `a.md` and `x/y/a.md`; `drafts/**` everything below drafts/),
# `[...]` and `[!...]` are classes, and a leading dot is matched like any other character.
GLOB_FLAGS = wcglob.GLOBSTAR | wcglob.DOTGLOB


@lru_cache(maxsize=64)
def _compile_globs(patterns: tuple[str, ...]) -> re.Pattern[str] | None:
    """All globs as one regex (wcmatch's translation of each, as one alternation), so a path is
    matched once per list, not once per glob."""
    if not patterns:
        return None
    translated, _ = wcglob.translate(list(patterns), flags=GLOB_FLAGS)
    return re.compile("|".join(f"(?:{regex})" for regex in translated))


def glob_matches(rel_posix: str, patterns: tuple[str, ...]) -> bool:
    """True when the relative POSIX path matches any of the globs in full."""
    combined = _compile_globs(patterns)
    return combined is not None and combined.fullmatch(rel_posix) is not None


def _inside(root_resolved: str, target: str) -> bool:
    return target == root_resolved or target.startswith(root_resolved.rstrip("/") + "/")


def _target_mode(entry: os.DirEntry[str]) -> int | None:
    """File mode of what the entry points to; ``None`` for a dangling or cyclic symlink."""
    try:
        return entry.stat().st_mode  # follows symlinks; served from the scandir cache otherwise
    except OSError:  # DirEntry.is_dir() would raise ELOOP for a cycle rather than say False
        return None


def _file_problem(name: str, rel: str, mode: int | None) -> str | None:
    """Why a file matching the globs is no document, or None (``mode`` None: read it to know)."""
    if not is_utf8(rel):
        return NAME_NOT_UTF8 if not is_utf8(name) else FOLDER_NAME_NOT_UTF8
    if mode is not None and not stat.S_ISREG(mode):
        return "not a regular file"
    return None


def _is_symlink(entry: os.DirEntry[str]) -> bool:
    """``entry.is_symlink()``, False when the entry vanished meanwhile (the read reports it)."""
    try:
        return entry.is_symlink()
    except OSError:
        return False


def discover(
    root: Path, spec: CorpusSpec, *, on_skip: SkipCallback | None = None
) -> Iterator[Path]:
    """Yield the document paths under ``root`` in a deterministic (sorted, depth-first) order.

    Paths are yielded below the resolved root, keeping symlinked names as they appear (a file
    reached through ``docs/link`` keeps that path). Symlinks whose target resolves outside the
    root, symlinked directories that loop back to an ancestor, non-regular files (FIFOs,
    sockets), files whose path below the root is not valid UTF-8 and unlistable directories are
    reported through ``on_skip`` and not yielded. A folder with an undecodable name is still
    walked, so each document below it is reported (and nothing that is not a document).
    Dangling symlinks that match ``include`` are yielded so :func:`read_document` reports them.
    """
    root_resolved = root.resolve()
    root_real = str(root_resolved)

    def skip(path: str, reason: str) -> None:
        if on_skip is not None:
            on_skip(path, reason)

    def walk(directory: Path, rel: str, ancestors: tuple[str, ...]) -> Iterator[Path]:
        try:
            with os.scandir(directory) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            skip(f"{directory}/", f"directory unreadable ({exc.strerror or exc})")
            return
        for entry in entries:
            entry_rel = f"{rel}{entry.name}"
            path = directory / entry.name
            mode = _target_mode(entry)
            is_dir = mode is not None and stat.S_ISDIR(mode)
            if is_dir:
                if glob_matches(entry_rel + "/", spec.exclude):
                    continue
            elif not glob_matches(entry_rel, spec.include) or glob_matches(entry_rel, spec.exclude):
                continue
            is_link = _is_symlink(entry)
            if is_link and not _inside(root_real, os.path.realpath(path)):
                skip(f"{path}/" if is_dir else str(path), "symlink points outside the corpus root")
            elif is_dir:
                real = os.path.realpath(path)
                if real in ancestors:
                    skip(f"{path}/", "symlink loop (points back to a parent directory)")
                elif len(ancestors) > MAX_DIR_DEPTH:
                    skip(f"{path}/", f"directory nested deeper than {MAX_DIR_DEPTH} levels")
                else:
                    yield from walk(path, entry_rel + "/", (*ancestors, real))
            elif (problem := _file_problem(entry.name, entry_rel, mode)) is not None:
                skip(str(path), problem)
            else:
                yield path  # dangling/looping links too: read_document says why they fail

    yield from walk(root_resolved, "", (root_real,))


def read_document(root: Path, path: Path, *, max_file_bytes: int) -> SourceDocument:
    """Read one file of the corpus into a :class:`SourceDocument`, reading its bytes once.

    ``path`` is absolute below ``root`` (as :func:`discover` yields it) or relative to it.
    ``content_sha256`` hashes the raw bytes; ``text`` is the decoded body with newlines
    normalised to ``\\n`` and Markdown front matter removed — exactly what is chunked.

    Raises:
        DocumentSkipped: the file is binary, not UTF-8, larger than ``max_file_bytes``, not a
            regular file, unreadable, vanished, a symlink leading outside the root, or its path
            is not valid UTF-8.
    """
    root_resolved = root.resolve()
    rel_posix = _relative_posix(root, root_resolved, path)
    full = root_resolved / rel_posix
    if not is_utf8(str(full)):  # its id, its stored path and every log line need UTF-8
        raise DocumentSkipped(full, NAME_NOT_UTF8)
    if not _inside(str(root_resolved), os.path.realpath(full)):
        raise DocumentSkipped(full, "symlink points outside the corpus root")
    data, info = _read_bytes_once(full, max_file_bytes)
    if b"\0" in data[:BINARY_SNIFF_BYTES]:
        raise DocumentSkipped(full, "binary file (NUL byte in the first 8 KiB)")
    try:
        raw_text = data.decode("utf-8-sig")  # strict: utf-8, with or without a BOM
    except UnicodeDecodeError as exc:
        bad = data[exc.start : exc.start + 1].hex()
        raise DocumentSkipped(
            full, f"not valid UTF-8 (byte 0x{bad} at offset {exc.start})"
        ) from exc
    text = raw_text.replace("\r\n", "\n").replace("\r", "\n")
    stem = PurePosixPath(rel_posix).stem
    title = ""
    if PurePosixPath(rel_posix).suffix.lower() in MARKDOWN_SUFFIXES:
        front_title, text = split_front_matter(text)
        title = front_title or markdown_title(text)
    return SourceDocument(
        doc_id=document_id(str(root_resolved), rel_posix),
        corpus_root=str(root_resolved),
        path=rel_posix,
        title=title or title_from_stem(stem),
        content_sha256=sha256_bytes(data),
        text=text,
        size_bytes=len(data),
        mtime_ns=info.st_mtime_ns,
        stamp=file_stamp(info),
    )


def _relative_posix(root: Path, root_resolved: Path, path: Path) -> str:
    if not path.is_absolute():
        return path.as_posix()
    for base in (root_resolved, root.absolute()):
        try:
            return path.relative_to(base).as_posix()
        except ValueError:
            continue
    raise DocumentSkipped(path, "path is not below the corpus root")


def _read_bytes_once(full: Path, max_file_bytes: int) -> tuple[bytes, os.stat_result]:
    # O_NONBLOCK: opening a FIFO named like a document must not hang the sync.
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(full, flags)
    except FileNotFoundError as exc:
        raise DocumentSkipped(full, "file vanished (or dangling symlink)") from exc
    except PermissionError as exc:
        raise DocumentSkipped(full, "permission denied") from exc
    except OSError as exc:
        raise DocumentSkipped(full, f"unreadable ({exc.strerror or exc})") from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise DocumentSkipped(full, "not a regular file")
        if info.st_size > max_file_bytes:
            raise DocumentSkipped(full, f"too large ({info.st_size} > {max_file_bytes} bytes)")
        chunks: list[bytes] = []
        remaining = max_file_bytes + 1  # one byte more reveals a file that grew since fstat
        while remaining > 0:
            block = os.read(fd, min(remaining, 1 << 20))
            if not block:
                break
            chunks.append(block)
            remaining -= len(block)
    except OSError as exc:
        raise DocumentSkipped(full, f"unreadable ({exc.strerror or exc})") from exc
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > max_file_bytes:
        raise DocumentSkipped(full, f"too large (> {max_file_bytes} bytes)")
    return data, info


STABLE_AFTER_S = 2.0


def file_stamp(info: os.stat_result, now_ns: int | None = None) -> str:
    """A quick-check stamp of a file: size, mtime, ctime and inode, as rsync and git use.

    An edit changes mtime and ctime (even one that restores mtime, like ``cp -p``, moves
    ctime), so an equal stamp means the bytes are the ones hashed last time. A file modified
    within ``STABLE_AFTER_S`` of now gets no stamp ("racily clean" in git's words): a second
    edit in the same timestamp tick would leave the stamp equal, so it is re-read next time.
    """
    now_ns = time.time_ns() if now_ns is None else now_ns
    newest = max(info.st_mtime_ns, info.st_ctime_ns)
    if now_ns - newest < STABLE_AFTER_S * 1e9:
        return ""
    return f"{info.st_size}:{info.st_mtime_ns}:{info.st_ctime_ns}:{info.st_ino}"


def scan_corpus(spec: CorpusSpec, known_stamps: Mapping[str, str] | None = None) -> ScanResult:
    """Discover and read every document under every root of ``spec``.

    A root that does not exist, is not a directory or cannot be listed goes to
    ``missing_roots`` and contributes nothing — the caller must keep what it stored for it.
    A root whose resolved path is not valid UTF-8 is a skipped folder (nothing below it could
    ever be stored). Roots that resolve to the same directory are scanned once.

    ``known_stamps`` maps document ids to the stamp their stored version was read with; a file
    whose current stamp is equal is not read again and lands in ``unchanged_ids`` (the quick
    check that keeps a re-sync of 10k unchanged files well under a second).
    """
    result = ScanResult()

    def on_skip(path: str, reason: str) -> None:
        result.skipped.append((path, reason))

    for root in spec.roots:
        try:
            resolved = root.resolve()
            with os.scandir(resolved):
                pass
        except OSError:
            result.missing_roots.append(root)
            continue
        if str(resolved) in result.scanned_roots:
            continue
        root_str = str(resolved)
        if not is_utf8(root_str):
            on_skip(f"{root_str}/", "corpus folder path is not valid UTF-8")
            continue
        result.scanned_roots.append(root_str)
        for path in discover(resolved, spec, on_skip=on_skip):
            if known_stamps:
                doc_id = document_id(root_str, str(path)[len(root_str) :].lstrip("/"))
                stamp = known_stamps.get(doc_id)
                if stamp and _current_stamp(path) == stamp:
                    result.unchanged_ids.append(doc_id)
                    continue
            try:
                document = read_document(resolved, path, max_file_bytes=spec.max_file_bytes)
            except DocumentSkipped as skipped:
                on_skip(str(path), skipped.reason)
            else:
                result.documents.append(document)
    return result


def _current_stamp(path: Path) -> str | None:
    try:
        return file_stamp(path.stat())
    except OSError:
        return None
