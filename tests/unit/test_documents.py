"""Tests for corpus discovery and document reading, on real files in a temporary directory."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ragvisor.core.documents import (
    CorpusSpec,
    DocumentSkipped,
    discover,
    display_path,
    glob_matches,
    is_utf8,
    read_document,
    scan_corpus,
)
from ragvisor.core.hashing import document_id, sha256_bytes
from ragvisor.errors import InputError


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def rel_paths(root: Path, spec: CorpusSpec | None = None) -> list[str]:
    spec = spec or CorpusSpec(roots=(root,))
    return [p.relative_to(root.resolve()).as_posix() for p in discover(root, spec)]


def scan(root: Path, max_file_bytes: int = 2_000_000) -> tuple[dict[str, str], dict[str, str]]:
    """Scan one root; return {rel path: title} of documents and {file name: reason} of skips."""
    result = scan_corpus(CorpusSpec(roots=(root,), max_file_bytes=max_file_bytes))
    docs = {d.path: d.title for d in result.documents}
    skips = {Path(p.rstrip("/")).name: reason for p, reason in result.skipped}
    return docs, skips


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        ("**/*.md", "a.md", True),
        ("**/*.md", "x/y/a.md", True),
        ("**/*.md", "x/a.txt", False),
        ("*.md", "x/a.md", False),
        ("a/**/b.md", "a/b.md", True),
        ("a/**/b.md", "a/x/y/b.md", True),
        ("docs/**", "docs/a/b.md", True),
        ("**/.*/**", "a/.cache/x.md", True),
        ("**/.*/**", "a/.hidden.md", False),
        ("?.md", "x/.md", False),
        ("[!ab].md", "c.md", True),
        ("[!ab].md", "a.md", False),
        ("notes/**draft.md", "notes/x/draft.md", False),  # `**` inside a segment is a `*`
        ("notes/**draft.md", "notes/first-draft.md", True),
    ],
)
def test_glob_translation(pattern: str, path: str, expected: bool) -> None:
    """Globs match whole relative paths: `*` stays in one segment, `**/` spans zero or more."""
    assert glob_matches(path, (pattern,)) is expected


def test_discover_recurses_in_sorted_order(tmp_path: Path) -> None:
    """Discovery walks every level of the tree and yields paths in a deterministic order."""
    for name in ("b.md", "a/z.txt", "a/b/c/deep.markdown", "a/a.md", "notes.rst"):
        write(tmp_path / name, "text")
    assert rel_paths(tmp_path) == ["a/a.md", "a/b/c/deep.markdown", "a/z.txt", "b.md"]


def test_include_and_exclude_globs_apply_to_relative_paths(tmp_path: Path) -> None:
    """Custom include/exclude globs select documents by their path relative to the root."""
    for name in ("keep/a.md", "keep/drafts/b.md", "keep/c.txt", "other/d.md", "e.md"):
        write(tmp_path / name, "text")
    spec = CorpusSpec(
        roots=(tmp_path,), include=("keep/**/*.md", "e.md"), exclude=("**/drafts/**",)
    )
    assert rel_paths(tmp_path, spec) == ["e.md", "keep/a.md"]


def test_hidden_and_vendored_directories_are_excluded(tmp_path: Path) -> None:
    """Hidden directories, .git and node_modules below the root are not scanned by default."""
    for name in (".git/HEAD.md", ".obsidian/x.md", "node_modules/p/README.md", "a/.cache/y.md"):
        write(tmp_path / name, "text")
    write(tmp_path / "a/.hidden-file.md", "hidden files are documents")
    write(tmp_path / "a/real.md", "text")
    assert rel_paths(tmp_path) == ["a/.hidden-file.md", "a/real.md"]


def test_root_inside_hidden_directory_is_scanned(tmp_path: Path) -> None:
    """A root that itself lives under a hidden directory still yields its documents."""
    root = tmp_path / ".x" / "docs"
    write(root / "guide.md", "# Guide\n\nHello")
    docs, skips = scan(root)
    assert docs == {"guide.md": "Guide"}
    assert skips == {}


def test_symlink_inside_root_is_followed(tmp_path: Path) -> None:
    """Symlinked files and directories whose targets stay inside the root are read."""
    write(tmp_path / "real/page.md", "# Page\n\nbody")
    (tmp_path / "alias").symlink_to(tmp_path / "real", target_is_directory=True)
    (tmp_path / "link.md").symlink_to(tmp_path / "real/page.md")
    docs, skips = scan(tmp_path)
    assert sorted(docs) == ["alias/page.md", "link.md", "real/page.md"]
    assert skips == {}


def test_symlink_outside_root_is_skipped(tmp_path: Path) -> None:
    """Symlinks leading out of the root are reported as skips and not read."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    write(outside / "secret.md", "secret")
    write(root / "ok.md", "fine")
    (root / "escape.md").symlink_to(outside / "secret.md")
    (root / "escape-dir").symlink_to(outside, target_is_directory=True)
    docs, skips = scan(root)
    assert list(docs) == ["ok.md"]
    assert skips == {
        "escape.md": "symlink points outside the corpus root",
        "escape-dir": "symlink points outside the corpus root",
    }


def test_symlink_loops_terminate_and_are_reported(tmp_path: Path) -> None:
    """A directory link back to an ancestor and a file link cycle end the walk with skips."""
    write(tmp_path / "a/page.md", "text")
    (tmp_path / "a/loop").symlink_to(tmp_path, target_is_directory=True)
    (tmp_path / "x.md").symlink_to(tmp_path / "y.md")
    (tmp_path / "y.md").symlink_to(tmp_path / "x.md")
    docs, skips = scan(tmp_path)
    assert list(docs) == ["a/page.md"]
    assert skips["loop"].startswith("symlink loop")
    assert skips["x.md"].startswith("unreadable")
    assert skips["y.md"].startswith("unreadable")


def test_binary_file_is_skipped(tmp_path: Path) -> None:
    """A file with a NUL byte in its first 8 KiB is reported as binary."""
    write(tmp_path / "image.md", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    with pytest.raises(DocumentSkipped, match="binary"):
        read_document(tmp_path, tmp_path / "image.md", max_file_bytes=1000)


def test_latin1_file_is_skipped_naming_the_file(tmp_path: Path) -> None:
    """Non-UTF-8 text is skipped, not guessed, and the error names the file."""
    path = write(tmp_path / "legacy.txt", "café crème".encode("latin-1"))
    with pytest.raises(DocumentSkipped) as caught:
        read_document(tmp_path, path, max_file_bytes=1000)
    assert "legacy.txt" in str(caught.value)
    assert caught.value.reason == "not valid UTF-8 (byte 0xe9 at offset 3)"
    assert isinstance(caught.value, InputError)


def test_oversize_file_is_skipped(tmp_path: Path) -> None:
    """A file larger than max_file_bytes is skipped before it is decoded."""
    write(tmp_path / "big.md", "x" * 101)
    write(tmp_path / "fits.md", "x" * 100)
    docs, skips = scan(tmp_path, max_file_bytes=100)
    assert list(docs) == ["fits.md"]
    assert skips == {"big.md": "too large (101 > 100 bytes)"}


def test_fifo_named_like_a_document_is_skipped_without_hanging(tmp_path: Path) -> None:
    """A FIFO called x.md is not opened for a blocking read; it is skipped as non-regular."""
    os.mkfifo(tmp_path / "pipe.md")
    docs, skips = scan(tmp_path)
    assert docs == {}
    assert skips == {"pipe.md": "not a regular file"}
    with pytest.raises(DocumentSkipped, match="not a regular file"):
        read_document(tmp_path, tmp_path / "pipe.md", max_file_bytes=100)


def test_dangling_symlink_is_reported_as_vanished(tmp_path: Path) -> None:
    """A document that disappears before it is read (here: a dangling link) is a skip."""
    (tmp_path / "gone.md").symlink_to(tmp_path / "deleted.md")
    docs, skips = scan(tmp_path)
    assert docs == {}
    assert skips == {"gone.md": "file vanished (or dangling symlink)"}


def test_unreadable_file_is_skipped(tmp_path: Path) -> None:
    """A mode-000 file is reported as "permission denied".

    Root ignores file modes, so as root the read runs in a child process whose capability
    bounding set drops CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH (util-linux ``setpriv``): a real
    EACCES from the kernel, not a mocked one.
    """
    path = write(tmp_path / "locked.md", "secret")
    path.chmod(0o000)
    if os.geteuid() != 0:
        with pytest.raises(DocumentSkipped, match="permission denied"):
            read_document(tmp_path, path, max_file_bytes=100)
        return
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root and util-linux setpriv is missing, cannot drop DAC caps")
    code = textwrap.dedent(
        f"""
        from pathlib import Path
        from ragvisor.core.documents import DocumentSkipped, read_document
        try:
            read_document(Path({str(tmp_path)!r}), Path({str(path)!r}), max_file_bytes=100)
        except DocumentSkipped as exc:
            print(exc.reason)
        """
    )
    bounding = "--bounding-set=-dac_override,-dac_read_search"
    proc = subprocess.run(
        [setpriv, bounding, sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0 and "setpriv" in proc.stderr:
        pytest.skip(f"running as root and cannot drop capabilities here: {proc.stderr.strip()}")
    assert proc.stdout.strip() == "permission denied", proc.stderr


def test_missing_roots_are_reported_not_scanned(tmp_path: Path) -> None:
    """Roots that do not exist or are files land in missing_roots and yield no documents."""
    write(tmp_path / "docs/a.md", "text")
    not_a_dir = write(tmp_path / "file.md", "text")
    spec = CorpusSpec(
        roots=(tmp_path / "docs", tmp_path / "unmounted", not_a_dir, tmp_path / "docs")
    )
    result = scan_corpus(spec)
    assert result.missing_roots == [tmp_path / "unmounted", not_a_dir]
    assert result.scanned_roots == [str((tmp_path / "docs").resolve())]
    assert [d.path for d in result.documents] == ["a.md"]


def test_title_from_front_matter_and_front_matter_removed(tmp_path: Path) -> None:
    """A quoted front-matter title wins and the front matter is not part of the text."""
    text = '---\ntags: [a, b]\ntitle: "Backup Policy"\n---\n# Heading\n\nBody.\n'
    doc = read_document(tmp_path, write(tmp_path / "p.md", text), max_file_bytes=1000)
    assert doc.title == "Backup Policy"
    assert doc.text == "# Heading\n\nBody.\n"


@pytest.mark.parametrize(
    ("name", "text", "title"),
    [
        ("a.md", "intro\n\n## Second Level\n\n# First\n", "Second Level"),
        ("b.md", "```\n# not a title\n```\nReal Title\n==========\n", "Real Title"),
        ("c.md", "---\nauthor: me\n---\nno headings here\n", "c"),
        ("my-runbook_notes.md", "plain words\n", "my runbook notes"),
        ("notes.txt", "# shell comment, not a heading\n", "notes"),
    ],
)
def test_title_fallbacks(tmp_path: Path, name: str, text: str, title: str) -> None:
    """Without front matter the title is the first Markdown heading, else the cleaned stem."""
    doc = read_document(tmp_path, write(tmp_path / name, text), max_file_bytes=1000)
    assert doc.title == title


def test_crlf_normalised_and_hash_covers_raw_bytes(tmp_path: Path) -> None:
    """Text gets \\n newlines while content_sha256 stays the hash of the bytes on disk."""
    raw = b"\xef\xbb\xbf# T\r\n\r\nline one\r\nline two\rend\r\n"
    doc = read_document(tmp_path, write(tmp_path / "w.md", raw), max_file_bytes=1000)
    assert doc.text == "# T\n\nline one\nline two\nend\n"
    assert doc.content_sha256 == sha256_bytes(raw)
    assert doc.size_bytes == len(raw)


def test_document_identity_is_deterministic(tmp_path: Path) -> None:
    """doc_id comes from the resolved root and the POSIX relative path, for any way of asking."""
    write(tmp_path / "sub/page.md", "text")
    by_abs = read_document(tmp_path, tmp_path / "sub/page.md", max_file_bytes=100)
    by_rel = read_document(tmp_path, Path("sub/page.md"), max_file_bytes=100)
    assert by_abs == by_rel
    assert by_abs.path == "sub/page.md"
    assert by_abs.corpus_root == str(tmp_path.resolve())
    assert by_abs.doc_id == document_id(str(tmp_path.resolve()), "sub/page.md")


def bad_name(directory: Path, name: bytes) -> Path:
    """Create a file whose name is the given bytes (not valid UTF-8) and return its path."""
    return write(directory / os.fsdecode(name), b"# Undecodable\n\nA note named in Latin-1.\n")


def test_file_name_not_utf8_is_skipped_and_the_rest_read(tmp_path: Path) -> None:
    """A document whose name is not UTF-8 is one skip with a reason; the others are read."""
    write(tmp_path / "good.md", "# Good\n\ntext")
    bad = bad_name(tmp_path, b"caf\xe9.md")
    result = scan_corpus(CorpusSpec(roots=(tmp_path,)))
    assert [d.path for d in result.documents] == ["good.md"]
    assert result.skipped == [(str(bad), "name is not valid UTF-8 (rename it, e.g. with convmv)")]
    with pytest.raises(DocumentSkipped, match=r"caf\\xe9\.md: name is not valid UTF-8"):
        read_document(tmp_path, bad, max_file_bytes=100)


def test_folder_name_not_utf8_skips_only_the_documents_below_it(tmp_path: Path) -> None:
    """Below a folder whose name is not UTF-8 each document is a skip, other files are ignored."""
    folder = Path(os.fsdecode(os.fsencode(tmp_path) + b"/Notizen-\xfc"))
    folder.mkdir()
    write(folder / "a.md", "text")
    write(folder / "photo.jpg", b"\xff\xd8")
    write(tmp_path / "b.md", "text")
    result = scan_corpus(CorpusSpec(roots=(tmp_path,)))
    assert [d.path for d in result.documents] == ["b.md"]
    assert result.skipped == [
        (str(folder / "a.md"), "a folder name in its path is not valid UTF-8 (rename the folder)")
    ]


def test_corpus_root_not_utf8_is_a_skipped_folder(tmp_path: Path) -> None:
    """A corpus folder whose own path is not UTF-8 is reported once, not scanned."""
    root = Path(os.fsdecode(os.fsencode(tmp_path) + b"/d\xe9p\xf4t"))
    write(root / "a.md", "text")
    result = scan_corpus(CorpusSpec(roots=(root,)))
    assert result.documents == []
    assert result.missing_roots == []
    assert result.skipped == [(f"{root}/", "corpus folder path is not valid UTF-8")]


def test_display_path_escapes_only_bytes_that_are_not_utf8() -> None:
    """Undecodable bytes show as \\xNN; valid names, accents included, come back unchanged."""
    assert display_path(os.fsdecode(b"/n/bad\xff.md")) == "/n/bad\\xff.md"
    assert display_path("/n/café.md") == "/n/café.md"
    assert display_path("/n/\ud800.md") == "/n/\\ud800.md"  # not from a file system: escaped
    assert is_utf8("/n/café.md")
    assert not is_utf8(os.fsdecode(b"bad\xff"))
