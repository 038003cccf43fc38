"""A sync of some paths only: which files to read and which stored documents to compare.

The folder watch and the document endpoints know which paths changed; reading only those (and
comparing only the stored documents at or below them) is what keeps a save searchable within
a second on a corpus of thousands of files, where a full scan stats every file. A path may name
a file or a folder (a renamed folder arrives as one event for the folder): everything stored at
or below it is in scope, and so is every document found below it now. What is in scope and no
longer on disk is deleted; what is out of scope is not looked at — a scoped sync never deletes
a document it did not look for.

`scope_of` and `in_scope` are pure; `scan_scope` reads the files, with the same rules as the
full scan (`core.documents`: globs, symlinks staying inside the root, skips with reasons).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from ragvisor.core.documents import (
    CorpusSpec,
    DocumentSkipped,
    ScanResult,
    discover,
    file_stamp,
    glob_matches,
    read_document,
)
from ragvisor.core.hashing import document_id
from ragvisor.core.model import StoredDocument


@dataclass(frozen=True, slots=True)
class SyncScope:
    """Paths relative to corpus roots, files or folders; everything at or below each is in."""

    # resolved corpus root -> relative POSIX paths ("" would be the whole root; never produced)
    paths: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def __len__(self) -> int:
        return sum(len(rels) for rels in self.paths.values())

    def describe(self) -> list[str]:
        """The paths, for a log line (at most 20)."""
        return [rel for rels in self.paths.values() for rel in rels][:20]


def scope_of(changed: Iterable[str], roots: Iterable[str]) -> SyncScope:
    """The scope of absolute paths (as the watch or an endpoint gives them) under resolved roots.

    A path under no root, or a root itself, is ignored (a root-level change is what the
    periodic full sync is for); a path below another path of the scope is folded into it.
    """
    ordered_roots = sorted({r.rstrip("/") for r in roots}, key=len, reverse=True)
    found: dict[str, set[str]] = {}
    for path in changed:
        for root in ordered_roots:
            if path.startswith(root + "/"):
                rel = path[len(root) + 1 :].strip("/")
                if rel:
                    found.setdefault(root, set()).add(rel)
                break
    folded: dict[str, tuple[str, ...]] = {}
    for root, rels in found.items():
        kept: list[str] = []
        for rel in sorted(rels):  # a parent sorts before its children
            if not any(rel.startswith(parent + "/") for parent in kept):
                kept.append(rel)
        folded[root] = tuple(kept)
    return SyncScope(folded)


def in_scope(doc: StoredDocument, scope: SyncScope) -> bool:
    """Whether a stored document is at or below a path of the scope."""
    rels = scope.paths.get(doc.corpus_root.rstrip("/"), ())
    return any(doc.path == rel or doc.path.startswith(rel + "/") for rel in rels)


def scoped_stored(
    stored: Mapping[str, StoredDocument], scope: SyncScope
) -> dict[str, StoredDocument]:
    """The stored documents a scoped sync compares (and may delete)."""
    return {doc_id: doc for doc_id, doc in stored.items() if in_scope(doc, scope)}


def included(rel: str, spec: CorpusSpec) -> bool:
    """Whether a file at `rel` would be a document by the globs: included, not excluded, and no
    folder on its way excluded (the full scan never enters an excluded folder)."""
    if not glob_matches(rel, spec.include) or glob_matches(rel, spec.exclude):
        return False
    parts = PurePosixPath(rel).parts[:-1]
    return not any(
        glob_matches("/".join(parts[: i + 1]) + "/", spec.exclude) for i in range(len(parts))
    )


def scan_scope(
    spec: CorpusSpec, scope: SyncScope, known_stamps: Mapping[str, str] | None = None
) -> ScanResult:
    """Read the documents in scope now on disk, as `scan_corpus` would have found them.

    A file path is read if the globs include it; a folder is walked (by `discover` from its
    root, keeping what lies below the folder, so symlink and glob rules are the full scan's).
    A path that is gone contributes nothing: its stored documents are deleted by the plan.
    """
    result = ScanResult()

    def on_skip(path: str, reason: str) -> None:
        result.skipped.append((path, reason))

    for root_str, rels in scope.paths.items():
        root = Path(root_str)
        result.scanned_roots.append(root_str)
        for rel in rels:
            full = root / rel
            if full.is_dir() and not full.is_symlink():
                prefix = f"{root_str}/{rel}/"

                def below(path: str, reason: str, prefix: str = prefix) -> None:
                    if path.startswith(prefix):
                        on_skip(path, reason)

                found = discover(root, spec, on_skip=below)
                paths = [p for p in found if str(p).startswith(prefix)]
            elif os.path.lexists(full) and included(rel, spec):
                paths = [full]
            else:
                continue
            for path in paths:
                doc_id = document_id(root_str, str(path)[len(root_str) :].lstrip("/"))
                stamp = (known_stamps or {}).get(doc_id)
                if stamp and _stamp(path) == stamp:
                    result.unchanged_ids.append(doc_id)
                    continue
                try:
                    result.documents.append(
                        read_document(root, path, max_file_bytes=spec.max_file_bytes)
                    )
                except DocumentSkipped as skipped:
                    if not os.path.lexists(path):  # deleted since the event: a deletion
                        continue
                    on_skip(str(path), skipped.reason)
    return result


def _stamp(path: Path) -> str | None:
    try:
        return file_stamp(path.stat())
    except OSError:
        return None
