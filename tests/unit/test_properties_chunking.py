"""Properties of the chunker on generated documents: bounds, coverage, overlap, ids, locality.

Inputs are what `read_document` hands the chunker: any Unicode text without lone surrogates
(files are decoded as strict UTF-8) and with ``\\n`` newlines (``\\r\\n`` and ``\\r`` are
normalised on reading), plus Markdown built from headings, fences and prose so that the
structural rules are exercised more often than random text would.
"""

from __future__ import annotations

from itertools import pairwise

from hypothesis import given
from hypothesis import strategies as st

from ragvisor.core.chunking import (
    CHUNKER_VERSION,
    ChunkingSpec,
    atx_heading,
    chunk_document,
    fence_flags,
    pack_text,
    split_sections,
)
from ragvisor.core.hashing import chunk_id, document_id, sha256_text
from ragvisor.core.model import SourceDocument

DECODED = st.characters(exclude_categories=["Cs"])
RAW_TEXT = st.text(DECODED).map(lambda t: t.replace("\r\n", "\n").replace("\r", "\n"))
WORD = st.text(st.characters(categories=["L", "N"]), min_size=1, max_size=12)
PROSE = st.lists(WORD, min_size=1, max_size=20).map(" ".join).map(lambda s: s + ".")
HEADING = st.builds(
    lambda level, title, closing: f"{'#' * level} {title}{closing}",
    st.integers(1, 7),
    st.lists(WORD, min_size=1, max_size=4).map(" ".join),
    st.sampled_from(["", " ##", " #"]),
)
FENCE = st.sampled_from(["```", "~~~", "````", "```bash", "   ```", "~~~~ "])
ONE_LINE = st.characters(exclude_categories=["Cs"], exclude_characters="\r\n")
LINE = st.text(ONE_LINE, max_size=60)
MARKDOWN = st.lists(
    st.one_of(HEADING, FENCE, PROSE, st.just(""), st.just("   "), LINE), max_size=40
).map("\n".join)
TEXT = st.one_of(RAW_TEXT, MARKDOWN)
SPEC = st.integers(100, 400).flatmap(
    lambda size: st.builds(ChunkingSpec, st.just(size), st.integers(0, size - 1))
)
PATH = st.sampled_from(["guide.md", "notes.txt"])


def make_doc(text: str, path: str) -> SourceDocument:
    doc_id = document_id("/corpus", path)
    return SourceDocument(doc_id, "/corpus", path, "Guide", sha256_text(text), text, len(text), 0)


def solid(text: str) -> str:
    """The text without whitespace: what chunking must keep, whatever it does to spacing."""
    return "".join(ch for ch in text if not ch.isspace())


@given(TEXT, SPEC, PATH)
def test_chunks_are_nonempty_bounded_and_identified(text: str, spec: ChunkingSpec, path: str):
    """Every chunk has text, fits size_chars, and carries the id its doc, position and hash give."""
    doc = make_doc(text, path)
    chunks = chunk_document(doc, spec)
    assert chunk_document(doc, spec) == chunks
    assert [c.position for c in chunks] == list(range(len(chunks)))
    for c in chunks:
        assert c.text.strip()
        assert c.text == c.text.strip()
        assert len(c.text) <= spec.size_chars
        assert c.text_sha256 == sha256_text(c.text)
        assert c.chunk_id == chunk_id(doc.doc_id, c.position, c.text_sha256)
        assert (c.doc_id, c.chunker_version) == (doc.doc_id, CHUNKER_VERSION)
    assert bool(chunks) == bool(text.strip()) or path.endswith(".md")


@given(TEXT, SPEC)
def test_plain_text_without_overlap_keeps_every_character(text: str, spec: ChunkingSpec):
    """Without overlap, a .txt file's chunks hold its characters in order after the title line
    each opens with; only spaces differ."""
    spec = ChunkingSpec(spec.size_chars, overlap_chars=0)
    chunks = chunk_document(make_doc(text, "notes.txt"), spec)
    assert all(c.text.startswith("Guide\n") for c in chunks)
    assert solid("".join(c.text.removeprefix("Guide\n") for c in chunks)) == solid(text)
    assert all(c.heading == "" for c in chunks)


@given(MARKDOWN)
def test_sections_keep_every_line_that_is_not_a_heading(text: str):
    """Cutting Markdown into sections loses no body line, and only headings start sections."""
    lines = text.split("\n")
    is_heading = [
        not in_fence and atx_heading(line) is not None
        for line, in_fence in zip(lines, fence_flags(lines), strict=True)
    ]
    headings = [line.strip() for line, h in zip(lines, is_heading, strict=True) if h]
    body_lines = [line for line, h in zip(lines, is_heading, strict=True) if not h]
    sections = split_sections(text, markdown=True)
    assert solid("".join(s.body for s in sections)) == solid("".join(body_lines))
    remaining = iter(headings)
    for section in sections:
        assert section.body.strip()
        if section.heading_line:
            assert section.heading_line in remaining  # in document order
            heading = atx_heading(section.heading_line)
            assert heading is not None
            assert section.heading_path[-1] == heading[1]


@given(RAW_TEXT, st.text(ONE_LINE, max_size=25), SPEC)
def test_packing_without_overlap_keeps_every_character(text: str, context: str, spec: ChunkingSpec):
    """Every later chunk starts with the context line, and the bodies are the text, in order."""
    spec = ChunkingSpec(spec.size_chars, overlap_chars=0)
    context = f"{context.strip()}\n" if context.strip() else ""
    body = text.strip()
    if not body:
        return
    chunks = pack_text(body, context, spec)
    assert all(c.startswith(context) for c in chunks[1:])
    bodies = [chunks[0], *(c[len(context) :] for c in chunks[1:])]
    assert solid("".join(bodies)) == solid(body)
    assert all(len(c) <= spec.size_chars for c in chunks)


@given(
    st.lists(st.sampled_from([" ", "  ", "\n", "\n\n", ". ", "! ", ", ", ".\n\n"]), max_size=300),
    st.sampled_from(["", "Install > Debian\n", "A rather long heading path > With parts\n"]),
    SPEC,
)
def test_overlap_repeats_whole_words_and_never_leaves_a_gap(
    separators: list[str], context: str, spec: ChunkingSpec
):
    """Consecutive chunks share a tail of whole words at most overlap_chars long, and skip none."""
    text = "".join(f"w{i}{sep}" for i, sep in enumerate(separators)) + f"w{len(separators)}"
    words = text.split()
    index = {word: i for i, word in enumerate(words)}
    chunks = pack_text(text, context, spec)
    ranges = []
    for position, chunk in enumerate(chunks):
        body = chunk[len(context) :] if position else chunk
        found = [index[word] for word in body.split()]  # KeyError: a word was cut
        assert found == list(range(found[0], found[-1] + 1))
        ranges.append((found[0], found[-1]))
    assert ranges[0][0] == 0
    assert ranges[-1][1] == len(words) - 1
    room = min(spec.overlap_chars, (spec.size_chars - len(context)) // 2)
    for (start, end), (next_start, next_end) in pairwise(ranges):
        assert start < next_start <= end + 1
        assert next_end > end
        shared = " ".join(words[next_start : end + 1])
        assert len(shared) <= room


SECTION_BODY = st.lists(PROSE, min_size=1, max_size=5).map("\n\n".join)


@given(
    st.lists(st.tuples(st.integers(1, 3), SECTION_BODY), min_size=2, max_size=5),
    st.data(),
    SPEC,
)
def test_an_edit_in_one_section_leaves_every_other_chunk_byte_identical(
    sections: list[tuple[int, str]], data: st.DataObject, spec: ChunkingSpec
):
    """Replacing one section's body changes only chunks under that section's heading."""
    edited = data.draw(st.integers(0, len(sections) - 1))
    new_body = data.draw(SECTION_BODY)

    def render(bodies: list[str]) -> str:
        return "\n\n".join(
            f"{'#' * level} Section {n}\n\n{body}"
            for n, ((level, _), body) in enumerate(zip(sections, bodies, strict=True))
        )

    bodies = [body for _, body in sections]
    before = chunk_document(make_doc(render(bodies), "guide.md"), spec)
    bodies[edited] = new_body
    after = chunk_document(make_doc(render(bodies), "guide.md"), spec)

    def others(chunks: list) -> list[str]:
        return [c.text_sha256 for c in chunks if not c.heading.endswith(f"Section {edited}")]

    assert others(before) == others(after)
