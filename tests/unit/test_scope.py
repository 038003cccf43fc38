"""A scoped sync looks at the changed paths only: files, folders, and what is gone."""

from __future__ import annotations

from ragvisor.core.documents import CorpusSpec
from ragvisor.core.model import StoredDocument
from ragvisor.core.scope import SyncScope, in_scope, scan_scope, scope_of


def stored(root: str, path: str) -> StoredDocument:
    """A stored document at `path` below `root`."""
    return StoredDocument(f"id-{path}", root, path, "sha", "v1", ())


def test_scope_of_keeps_paths_under_roots_and_folds_children_into_folders():
    """Paths under no root and roots themselves drop out; a folder takes in its children."""
    scope = scope_of(
        ["/c/a.md", "/c/dir", "/c/dir/b.md", "/elsewhere/x.md", "/c", "/c2/y.md"], ["/c", "/c2"]
    )
    assert scope.paths == {"/c": ("a.md", "dir"), "/c2": ("y.md",)}
    assert len(scope) == 3


def test_in_scope_matches_the_path_and_what_is_below_it_only():
    """dir covers dir/b.md but not dir2/b.md; another root is out."""
    scope = SyncScope({"/c": ("dir", "a.md")})
    assert in_scope(stored("/c", "dir/b.md"), scope)
    assert in_scope(stored("/c", "a.md"), scope)
    assert not in_scope(stored("/c", "dir2/b.md"), scope)
    assert not in_scope(stored("/other", "a.md"), scope)


def test_scan_scope_reads_files_and_folders_in_scope_and_nothing_else(tmp_path):
    """A file and a folder in scope are read; a sibling, an excluded file and a gone path not."""
    root = tmp_path.resolve()
    (root / "dir").mkdir()
    (root / "dir" / "b.md").write_text("# B\n")
    (root / "dir" / "skip.py").write_text("x")
    (root / "a.md").write_text("# A\n")
    (root / "other.md").write_text("# Other\n")
    scope = SyncScope({str(root): ("a.md", "dir", "gone.md")})
    result = scan_scope(CorpusSpec(roots=(root,)), scope)
    assert sorted(d.path for d in result.documents) == ["a.md", "dir/b.md"]
    assert result.skipped == []
