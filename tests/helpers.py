"""Builders shared by tests: documents and chunks made the way the core makes them."""

from __future__ import annotations

from ragvisor.core.hashing import chunk_id, document_id, sha256_text
from ragvisor.core.model import Chunk, SourceDocument

ROOT = "/corpus"
CHUNKER = "test-v1"


def make_document(path: str, text: str, *, root: str = ROOT, title: str = "") -> SourceDocument:
    """A SourceDocument whose hashes are computed like the real reader's."""
    return SourceDocument(
        doc_id=document_id(root, path),
        corpus_root=root,
        path=path,
        title=title or path,
        content_sha256=sha256_text(text),
        text=text,
        size_bytes=len(text.encode()),
        mtime_ns=0,
    )


def paragraph_chunks(doc: SourceDocument, version: str = CHUNKER) -> list[Chunk]:
    """One chunk per blank-line-separated paragraph: a tiny, predictable chunker for tests."""
    parts = [p.strip() for p in doc.text.split("\n\n") if p.strip()]
    return [
        Chunk(
            chunk_id=chunk_id(doc.doc_id, i, sha256_text(p)),
            doc_id=doc.doc_id,
            position=i,
            text=p,
            text_sha256=sha256_text(p),
            heading="",
            chunker_version=version,
        )
        for i, p in enumerate(parts)
    ]
