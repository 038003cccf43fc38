"""Heading-aware chunking: turn a :class:`SourceDocument` into the chunks that get embedded.

Markdown is cut into sections at ATX headings (``#`` … ``######``; ``#`` lines inside fenced
code blocks are code, not headings), and each section is packed into chunks on its own. That
independence is the point: an edit in one section leaves every chunk of every other section
byte-identical, so the sync — which reuses vectors by ``text_sha256`` — re-embeds only the
chunks of the edited section. Plain text is one section of paragraphs.

What a chunk's text is (and therefore what is hashed and embedded, byte for byte):

* every chunk opens with a context line saying where it stands: the document's title and the
  heading path (``Install guide > Debian > Bookworm``; a first heading equal to the title is
  said once), so a chunk is findable by its page and section and not only by its own words;
* a section's later chunks then carry roughly ``overlap_chars`` of the previous chunk's end
  (starting at a word boundary), followed by new text;
* every chunk, context line included, is at most ``size_chars`` characters long. A single
  word longer than the room left is cut mid-word — the only mid-word cut there is.

The first release (``md-heading-v1``, ``ChunkingSpec(title_context=False)``) had no title: a
section's first chunk began with its heading line as written (``## Debian``) and only later
chunks with the heading path. Its chunks are still produced exactly, for the evaluation's
baseline (bench/retrieval_eval.py); a store holding them re-chunks at its next sync, one document
at a time, each committed whole, so every document stays searchable throughout.

Sections with a heading and no body produce no chunk (their heading lives on in the context
line of their subsections); tiny sections are *not* merged into their neighbours, which keeps
each chunk's ``heading`` exact and edits strictly local. Lines lose trailing whitespace and runs
of blank lines collapse to one, so invisible whitespace edits do not force a re-embed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath

from ragvisor.core.hashing import chunk_id, sha256_text
from ragvisor.core.model import Chunk, SourceDocument

# Bump whenever the chunks produced for the same input change: stored chunks carry it and a
# different version makes the sync re-chunk (and re-embed what actually changed).
CHUNKER_VERSION = "md-title-v2"
# The first release's chunks: no title, the heading line as written at a section's start.
CHUNKER_VERSION_V1 = "md-heading-v1"

MARKDOWN_SUFFIXES = frozenset({".md", ".markdown", ".mdown", ".mkd"})
HEADING_PATH_SEPARATOR = " > "

_ATX_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.+?)(?:[ \t]+#+)?[ \t]*$")
_FENCE_OPEN = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_FENCE_CLOSE = re.compile(r"^ {0,3}(`{3,}|~{3,})[ \t]*$")
_SENTENCE_END = re.compile(r"[.!?][\"')\]]*(?=\s)")
_SENTENCE_START = re.compile(r"(?:[.!?][\"')\]]*[ \t]+|\n\s*)(?=\S)")
_BLANK_RUNS = re.compile(r"\n{3,}")


@dataclass(frozen=True)
class ChunkingSpec:
    """How large chunks are and how much consecutive chunks of a section share.

    The defaults fit all-MiniLM-L6-v2, which truncates at 256 wordpiece tokens: English prose
    averages about 4 characters per token, so 800 characters is roughly 200 tokens, leaving
    ~20 % margin for code, numbers and rarer words that split into more pieces. Text beyond the
    window would be silently ignored by the model, so erring small is the safe side. 120
    characters of overlap (about one sentence) keeps a fact that straddles a cut findable from
    either chunk.
    """

    size_chars: int = 800
    overlap_chars: int = 120
    # Every chunk opens with where it stands: "Title > Section > Subsection". A chunk that says
    # "set it to 0 to disable" is found for "disable the git-gc auto pack" only when it also
    # says which page and section it belongs to; measured by bench/retrieval_eval.py.
    title_context: bool = True

    @property
    def version(self) -> str:
        """What stored chunks record; a different one makes the sync re-chunk the document."""
        return CHUNKER_VERSION if self.title_context else CHUNKER_VERSION_V1

    def __post_init__(self) -> None:
        if self.size_chars < 100:
            raise ValueError(f"chunking size_chars must be >= 100, got {self.size_chars}")
        if not 0 <= self.overlap_chars < self.size_chars:
            raise ValueError(
                f"chunking overlap_chars must be >= 0 and < size_chars ({self.size_chars}), "
                f"got {self.overlap_chars}"
            )


@dataclass(frozen=True)
class Section:
    """A run of a document under one heading; ``heading_line`` is ``""`` before the first."""

    heading_path: tuple[str, ...]
    heading_line: str
    body: str


def atx_heading(line: str) -> tuple[int, str] | None:
    """``(level, title)`` when the line is an ATX heading (``## Title ##``), else ``None``."""
    match = _ATX_HEADING.match(line)
    if match is None:
        return None
    return len(match.group(1)), match.group(2).strip()


def fence_flags(lines: list[str]) -> list[bool]:
    """For each line, whether it belongs to a fenced code block (fence lines included).

    A fence closes only with the same character, at least as long, and nothing after it; an
    unclosed fence runs to the end of the document, as in CommonMark.
    """
    flags: list[bool] = []
    fence: str | None = None
    for line in lines:
        if fence is None:
            opening = _FENCE_OPEN.match(line)
            if opening:
                fence = opening.group(1)
            flags.append(fence is not None)
            continue
        flags.append(True)
        closing = _FENCE_CLOSE.match(line)
        if closing and closing.group(1)[0] == fence[0] and len(closing.group(1)) >= len(fence):
            fence = None
    return flags


def split_sections(text: str, *, markdown: bool) -> list[Section]:
    """Cut text into sections at ATX headings outside code fences (plain text: one section).

    Sections whose body is empty are dropped; the heading path is kept on the sections below.
    """
    lines = [line.rstrip() for line in text.split("\n")]
    if not markdown:
        return _nonempty([Section((), "", "\n".join(lines))])
    sections: list[Section] = []
    stack: list[tuple[int, str]] = []
    heading_line = ""
    body: list[str] = []
    for line, in_fence in zip(lines, fence_flags(lines), strict=True):
        heading = None if in_fence else atx_heading(line)
        if heading is None:
            body.append(line)
            continue
        sections.append(Section(tuple(t for _, t in stack), heading_line, "\n".join(body)))
        level, title = heading
        while stack and stack[-1][0] >= level:
            stack.pop()
        stack.append((level, title))
        heading_line, body = line.strip(), []
    sections.append(Section(tuple(t for _, t in stack), heading_line, "\n".join(body)))
    return _nonempty(sections)


def _nonempty(sections: list[Section]) -> list[Section]:
    kept = []
    for section in sections:
        body = _BLANK_RUNS.sub("\n\n", section.body).strip("\n")
        if body.strip():
            kept.append(Section(section.heading_path, section.heading_line, body))
    return kept


def chunk_document(doc: SourceDocument, spec: ChunkingSpec) -> list[Chunk]:
    """Chunk one document; the same document and spec always give the same chunks and ids.

    Empty or whitespace-only documents give no chunks. Positions run 0..n-1 across the
    document; ``Chunk.heading`` is the heading path (``"Install > Debian"``, ``""`` before the
    first heading and for plain text).
    """
    markdown = PurePosixPath(doc.path).suffix.lower() in MARKDOWN_SUFFIXES
    texts: list[tuple[str, str]] = []
    for section in split_sections(doc.text, markdown=markdown):
        heading = HEADING_PATH_SEPARATOR.join(section.heading_path)
        if spec.title_context:
            context = _context_line(breadcrumb(doc.title, section.heading_path), spec.size_chars)
            pieces = pack_text(section.body, context, spec, lead=True)
        else:
            section_text = (
                f"{section.heading_line}\n{section.body}" if section.heading_line else section.body
            )
            context = _context_line(heading, spec.size_chars)
            pieces = pack_text(section_text, context, spec)
        texts.extend((heading, text) for text in pieces)
    chunks = []
    for position, (heading, text) in enumerate(texts):
        text_sha256 = sha256_text(text)
        chunks.append(
            Chunk(
                chunk_id=chunk_id(doc.doc_id, position, text_sha256),
                doc_id=doc.doc_id,
                position=position,
                text=text,
                text_sha256=text_sha256,
                heading=heading,
                chunker_version=spec.version,
            )
        )
    return chunks


def breadcrumb(title: str, heading_path: tuple[str, ...]) -> str:
    """``Title > Section > Subsection``: the title, then the headings not repeating it (a page's
    first heading usually is its title)."""
    parts = [title.strip()] if title.strip() else []
    for heading in heading_path:
        if not parts or heading.casefold() != parts[-1].casefold():
            parts.append(heading)
    return HEADING_PATH_SEPARATOR.join(parts)


def _context_line(heading: str, size_chars: int) -> str:
    """The heading path as the first line of later chunks, capped at a quarter of a chunk."""
    if not heading:
        return ""
    limit = size_chars // 4
    if len(heading) > limit:
        heading = heading[: limit - 1].rstrip() + "…"
    return heading + "\n"


def pack_text(text: str, context: str, spec: ChunkingSpec, *, lead: bool = False) -> list[str]:
    """Pack one section's text into chunks of at most ``spec.size_chars`` characters.

    The first chunk is ``text``'s beginning (after ``context`` too when ``lead``); later ones
    are ``context`` + overlap + new text.
    Cuts fall at the last paragraph break, else sentence end or line break, else whitespace
    in the last two thirds of the room for new text; only an over-long word is cut mid-word.
    The overlap is capped at half of the room after ``context`` so every chunk makes progress.
    """
    size = spec.size_chars
    overlap = min(spec.overlap_chars, (size - len(context)) // 2)
    chunks: list[str] = []
    start = new_from = 0
    prefix = context if lead else ""
    end = len(text)
    while new_from < end:
        limit = start + size - len(prefix)
        cut = end if end <= limit else _find_cut(text, new_from, limit)
        chunks.append(prefix + text[start:cut].strip())
        new_from = cut
        while new_from < end and text[new_from].isspace():
            new_from += 1
        start = _overlap_start(text, new_from, overlap)
        prefix = context
    return chunks


def _find_cut(text: str, new_from: int, limit: int) -> int:
    """Best index to end a chunk in ``(new_from, limit]``, by preference of boundary."""
    min_cut = new_from + max(1, (limit - new_from) // 3)
    paragraph = text.rfind("\n\n", min_cut, limit + 2)
    if paragraph != -1:
        return paragraph
    line = text.rfind("\n", min_cut, limit + 1)
    sentence = max(
        (m.end() for m in _SENTENCE_END.finditer(text, min_cut, limit + 1) if m.end() <= limit),
        default=-1,
    )
    if max(line, sentence) != -1:
        return max(line, sentence)
    for index in range(limit, new_from, -1):
        if text[index].isspace():
            return index
    return limit


def _overlap_start(text: str, new_from: int, overlap: int) -> int:
    """Where the next chunk starts: up to ``overlap`` characters before ``new_from``.

    The earliest sentence start in that window wins if it still gives half the overlap (a
    whole sentence reads better to the embedder); otherwise the earliest word start.
    """
    if overlap <= 0 or new_from >= len(text):
        return new_from
    low = max(new_from - overlap, 1)
    for match in _SENTENCE_START.finditer(text, low - 1, new_from):
        if match.end() <= new_from - overlap // 2:
            return match.end()
        break
    for index in range(low, new_from):
        if text[index - 1].isspace() and not text[index].isspace():
            return index
    return new_from
