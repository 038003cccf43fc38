"""Tests for heading-aware chunking: sizes, overlap, headings, determinism and edit locality."""

from __future__ import annotations

from itertools import pairwise

import pytest

from ragvisor.core.chunking import (
    CHUNKER_VERSION,
    CHUNKER_VERSION_V1,
    ChunkingSpec,
    breadcrumb,
    chunk_document,
    split_sections,
)
from ragvisor.core.hashing import chunk_id, document_id, sha256_text
from ragvisor.core.model import Chunk, SourceDocument

WORDS = (
    *("memory", "swap", "embedding", "vector", "store", "sync", "chunk", "heading", "ollama"),
    *("neo4j", "model", "daemon", "budget", "timeout", "retry", "breaker", "search", "answer"),
    *("corpus", "digest"),
)


def prose(seed: int, sentences: int) -> str:
    """Deterministic filler prose: sentences of 6-14 words drawn from a fixed vocabulary."""
    out = []
    for s in range(sentences):
        n = 6 + (seed * 7 + s * 3) % 9
        words = [WORDS[(seed * 13 + s * 5 + w * 11) % len(WORDS)] for w in range(n)]
        out.append(" ".join(words).capitalize() + ".")
    return " ".join(out)


def make_doc(text: str, path: str = "guide.md") -> SourceDocument:
    doc_id = document_id("/corpus", path)
    return SourceDocument(doc_id, "/corpus", path, "Guide", sha256_text(text), text, len(text), 0)


def body_of(chunk: Chunk) -> str:
    """The chunk's text without the context line every chunk opens with (title, headings)."""
    context = breadcrumb("Guide", tuple(chunk.heading.split(" > ")) if chunk.heading else ())
    assert chunk.text.startswith(context + "\n")
    return chunk.text[len(context) + 1 :]


def without_headings(text: str) -> str:
    """The text without its ATX heading lines: their words are in the context lines."""
    return "\n".join(line for line in text.split("\n") if not line.startswith("#"))


FIVE_SECTIONS = "\n\n".join(
    f"## Section {n}\n\n" + "\n\n".join(prose(n * 10 + p, 4) for p in range(4)) for n in range(5)
)


def test_spec_validation_names_the_problem() -> None:
    """Sizes below 100 chars and overlaps not smaller than the size are rejected."""
    with pytest.raises(ValueError, match="size_chars must be >= 100"):
        ChunkingSpec(size_chars=99)
    with pytest.raises(ValueError, match="overlap_chars must be >= 0 and < size_chars"):
        ChunkingSpec(size_chars=200, overlap_chars=200)
    with pytest.raises(ValueError, match="overlap_chars"):
        ChunkingSpec(overlap_chars=-1)


@pytest.mark.parametrize("text", ["", "   \n\n\t\n", "# Only\n\n## Headings\n"])
def test_documents_without_content_give_no_chunks(text: str) -> None:
    """Empty, whitespace-only and heading-only documents produce zero chunks."""
    assert chunk_document(make_doc(text), ChunkingSpec()) == []


@pytest.mark.parametrize("size", [100, 237, 800])
def test_every_chunk_fits_size_including_context_line(size: int) -> None:
    """No chunk text, context line included, is longer than size_chars — even a giant word's."""
    text = "# A very long heading " + "word " * 40 + "\n\n" + FIVE_SECTIONS + "\n\n" + "x" * 2000
    spec = ChunkingSpec(size_chars=size, overlap_chars=min(120, size // 3))
    chunks = chunk_document(make_doc(text), spec)
    assert chunks
    assert max(len(c.text) for c in chunks) <= size


@pytest.mark.parametrize("path", ["guide.md", "guide.txt"])
def test_no_text_is_lost(path: str) -> None:
    """Without overlap, the chunks (minus context lines) are exactly the document's words."""
    chunks = chunk_document(make_doc(FIVE_SECTIONS, path), ChunkingSpec(300, overlap_chars=0))
    assert len(chunks) > 10
    expected = without_headings(FIVE_SECTIONS) if path.endswith(".md") else FIVE_SECTIONS
    assert " ".join(body_of(c) for c in chunks).split() == expected.split()


def test_chunks_never_cut_mid_word() -> None:
    """Chunk boundaries, including overlap starts, fall between words of ordinary prose."""
    text = prose(1, 60)
    vocabulary = {w.strip(".").lower() for w in text.split()} | {"guide"}
    for chunk in chunk_document(make_doc(text, "notes.txt"), ChunkingSpec(size_chars=150)):
        assert {w.strip(".").lower() for w in chunk.text.split()} <= vocabulary


def test_long_word_is_split_when_nothing_else_fits() -> None:
    """A single word longer than a chunk is the only thing ever cut mid-word."""
    chunks = chunk_document(make_doc("y" * 250, "notes.txt"), ChunkingSpec(100, overlap_chars=10))
    assert [len(c.text) for c in chunks] == [100, 100, 68]  # "Guide\n" + 94, 94 and 62 y
    assert "".join(body_of(c) for c in chunks) == "y" * 250


def test_paragraph_boundaries_are_preferred() -> None:
    """When paragraphs fit, chunks end at paragraph ends rather than mid-paragraph."""
    paragraphs = [prose(p, 2) for p in range(6)]
    chunks = chunk_document(make_doc("\n\n".join(paragraphs), "a.txt"), ChunkingSpec(400, 0))
    for chunk in chunks:
        assert chunk.text.split("\n\n")[-1] in paragraphs


def test_consecutive_chunks_overlap() -> None:
    """A later chunk starts (after its context line) with about overlap_chars of the last one."""
    text = "## Setup\n\n" + prose(3, 30)
    chunks = chunk_document(make_doc(text), ChunkingSpec(size_chars=300, overlap_chars=80))
    assert len(chunks) > 2
    for previous, current in pairwise(chunks):
        head = body_of(current)
        shared = max(n for n in range(len(head) + 1) if previous.text.endswith(head[:n]))
        assert 40 <= shared <= 80


def test_every_chunk_opens_with_the_title_and_heading_path() -> None:
    """Each chunk's first line is "Title > Section > …", a first heading equal to the title
    said once: a chunk is findable by the page and section it belongs to."""
    text = "# Guide\n\nIntro.\n\n## Debian\n\n" + prose(5, 20) + "\n\n## Fedora\n\nUse dnf."
    chunks = chunk_document(make_doc(text), ChunkingSpec(size_chars=250, overlap_chars=50))
    debian = [c for c in chunks if c.heading == "Guide > Debian"]
    assert len(debian) > 1
    assert all(c.text.startswith("Guide > Debian\n") for c in debian)
    assert chunks[0].text == "Guide\nIntro."
    assert chunks[-1].text == "Guide > Fedora\nUse dnf."
    assert {c.chunker_version for c in chunks} == {CHUNKER_VERSION}


def test_first_release_chunks_start_with_the_heading_line_as_written() -> None:
    """With title_context off (md-heading-v1), a section's first chunk starts with its heading
    line and later ones with the heading path: the first release's chunks, byte for byte."""
    text = "# Install\n\nIntro.\n\n## Debian\n\n" + prose(5, 20) + "\n\n## Fedora\n\nUse dnf."
    spec = ChunkingSpec(size_chars=250, overlap_chars=50, title_context=False)
    chunks = chunk_document(make_doc(text), spec)
    assert {c.chunker_version for c in chunks} == {CHUNKER_VERSION_V1}
    debian = [c for c in chunks if c.heading == "Install > Debian"]
    assert len(debian) > 1
    assert debian[0].text.startswith("## Debian\n")
    assert all(c.text.startswith("Install > Debian\n") for c in debian[1:])
    assert [c.heading for c in chunks if c.heading != "Install > Debian"] == [
        "Install",
        "Install > Fedora",
    ]
    assert chunks[0].text == "# Install\nIntro."


def test_headings_inside_code_fences_are_ignored() -> None:
    """`#` lines inside ``` or ~~~ fences are code, not section breaks."""
    text = (
        "# Script\n\n```bash\n# install deps\napt install x\n```\n\n"
        "~~~\n## not a heading\n~~~\n\n# Next\n\nDone."
    )
    sections = split_sections(text, markdown=True)
    assert [s.heading_path for s in sections] == [("Script",), ("Next",)]
    assert "# install deps" in sections[0].body


def test_plain_text_is_one_section_of_paragraphs() -> None:
    """In a .txt file `#` lines are text, and chunks carry no heading."""
    text = "# not a heading\n\nfirst paragraph\n\nsecond paragraph"
    chunks = chunk_document(make_doc(text, "notes.txt"), ChunkingSpec())
    assert [(c.heading, c.text) for c in chunks] == [("", "Guide\n" + text)]


def test_chunking_is_deterministic_with_stable_ids() -> None:
    """The same document always gives equal chunks whose ids derive from doc, position, hash."""
    doc = make_doc(FIVE_SECTIONS)
    first = chunk_document(doc, ChunkingSpec(size_chars=300))
    assert first == chunk_document(doc, ChunkingSpec(size_chars=300))
    assert [c.position for c in first] == list(range(len(first)))
    for c in first:
        assert c.text_sha256 == sha256_text(c.text)
        assert c.chunk_id == chunk_id(doc.doc_id, c.position, c.text_sha256)
        assert c.chunker_version == CHUNKER_VERSION
        assert c.doc_id == doc.doc_id


def test_edit_in_one_section_changes_only_that_sections_chunks() -> None:
    """Editing one paragraph of a 5-section document re-hashes only that section's chunks."""
    spec = ChunkingSpec(size_chars=300, overlap_chars=60)
    edited_text = FIVE_SECTIONS.replace(prose(22, 4), prose(22, 4) + " Extra words were added.")
    assert edited_text != FIVE_SECTIONS
    before = chunk_document(make_doc(FIVE_SECTIONS), spec)
    after = chunk_document(make_doc(edited_text), spec)

    def hashes(chunks: list[Chunk], heading: str) -> list[str]:
        return [c.text_sha256 for c in chunks if c.heading == heading]

    for n in range(5):
        heading = f"Section {n}"
        assert len(hashes(before, heading)) > 1
        if n == 2:
            assert hashes(before, heading) != hashes(after, heading)
        else:
            assert hashes(before, heading) == hashes(after, heading)
    changed = {c.text_sha256 for c in after} - {c.text_sha256 for c in before}
    assert changed <= set(hashes(after, "Section 2"))
