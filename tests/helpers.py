"""Builders shared by tests: documents and chunks made the way the core makes them."""

from __future__ import annotations

from collections.abc import Sequence

from ragvisor.core.hashing import chunk_id, document_id, sha256_text
from ragvisor.core.model import Chunk, SourceDocument
from ragvisor.core.protocols import Embedder, Store

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


def commit_paragraphs(
    store: Store,
    document: SourceDocument,
    embedder: Embedder,
    chunks: Sequence[Chunk] | None = None,
) -> Sequence[Chunk]:
    """Commit a document as the sync does: its chunks (one per paragraph unless given), with
    vectors for the texts the store has none for under the embedder's fingerprint."""
    chunks = paragraph_chunks(document) if chunks is None else chunks
    have = store.hashes_with_vectors(embedder.fingerprint)
    todo = sorted({c.text_sha256: c.text for c in chunks if c.text_sha256 not in have}.items())
    vectors = embedder.embed([text for _, text in todo]) if todo else []
    store.commit_document(
        document,
        chunks,
        {text_hash: v for (text_hash, _), v in zip(todo, vectors, strict=True)},
        embedder.fingerprint,
        CHUNKER,
    )
    return chunks
