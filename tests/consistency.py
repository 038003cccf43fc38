"""Store invariants checked straight from the database — the SQLite file or the Neo4j graph —
independent of the store's code.

Both checkers assert the same invariants, each read in its own store's terms; what does not
depend on where the rows came from (a chunk's identity, positions, the documents' hash lists, a
vector's shape and norm) is checked by the helpers they share.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ragvisor.core.hashing import chunk_id, sha256_text


def _check_chunk(cid: str, doc_id: str, position: int, text: str, text_hash: str) -> None:
    """The chunk's hash matches its text and its id is derived from (document, position, hash)."""
    assert sha256_text(text) == text_hash, f"chunk {cid} text does not match its hash"
    assert cid == chunk_id(doc_id, position, text_hash), f"chunk id {cid} not derived"


def _check_positions(by_doc: dict[str, list[int]]) -> None:
    """Every document's chunk positions are 0..n-1 with no duplicates."""
    for doc_id, positions in by_doc.items():
        assert sorted(positions) == list(range(len(positions))), f"{doc_id} positions broken"


def _check_hash_list(doc_id: str, listed: Sequence[str], actual: Sequence[str]) -> None:
    """A document's list of chunk hashes is its chunks' hashes in position order."""
    assert list(listed) == list(actual), f"{doc_id} hash list stale"


def _check_vector(dims: int, vector: np.ndarray) -> None:
    """A vector has the dimensions it states and unit norm (the embedder normalises)."""
    assert vector.shape == (dims,), f"a vector of {vector.shape} states {dims} dimensions"
    norm = float(np.linalg.norm(vector))
    assert abs(norm - 1.0) < 1e-3, f"a vector of norm {norm}"


def check_store(db_path: Path, fingerprint_key: str) -> dict[str, int]:
    """Assert every invariant a crash must not break in the SQLite file; return counts.

    - every chunk belongs to a stored document, positions are 0..n-1 with no duplicates;
    - every chunk id is derived from (document, position, text hash) and the hash matches the text;
    - every chunk's hash has exactly one vector under the fingerprint, of the stated dimensions;
    - the keyword index has exactly one row per chunk.
    """
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        docs = {row[0] for row in conn.execute("SELECT doc_id FROM documents")}
        by_doc: dict[str, list[int]] = {}
        for cid, doc_id, position, text, text_hash in conn.execute(
            "SELECT chunk_id, doc_id, position, text, text_sha256 FROM chunks"
        ):
            assert doc_id in docs, f"chunk {cid} has no document"
            _check_chunk(cid, doc_id, position, text, text_hash)
            by_doc.setdefault(doc_id, []).append(position)
        _check_positions(by_doc)
        for doc_id, listed in conn.execute("SELECT doc_id, chunk_hashes FROM documents"):
            actual = [
                h
                for (h,) in conn.execute(
                    "SELECT text_sha256 FROM chunks WHERE doc_id = ? ORDER BY position", (doc_id,)
                )
            ]
            _check_hash_list(doc_id, listed.split(",") if listed else [], actual)
        missing = conn.execute(
            "SELECT count(*) FROM chunks c LEFT JOIN vectors v ON v.text_sha256 = c.text_sha256 "
            "AND v.fingerprint = ? WHERE v.text_sha256 IS NULL",
            (fingerprint_key,),
        ).fetchone()[0]
        assert missing == 0, f"{missing} chunks without a vector under {fingerprint_key}"
        for dims, blob in conn.execute(
            "SELECT dimensions, vector FROM vectors WHERE fingerprint = ?", (fingerprint_key,)
        ):
            _check_vector(dims, np.frombuffer(blob, dtype="<f4"))
        chunks = conn.execute("SELECT count(*) FROM chunks").fetchone()[0]
        fts = conn.execute("SELECT count(*) FROM chunks_fts").fetchone()[0]
        assert fts == chunks, f"keyword index has {fts} rows for {chunks} chunks"
        return {"documents": len(docs), "chunks": chunks}
    finally:
        conn.close()


def neo4j_vector_label(fingerprint_key: str) -> str:
    """The label docs/neo4j.md gives a fingerprint's vectors (its vector index is on it):
    `Vectors_` and the first 16 hex digits of the SHA-256 of the fingerprint key."""
    return "Vectors_" + hashlib.sha256(fingerprint_key.encode()).hexdigest()[:16]


def _records(driver: Any, query: str, **params: Any) -> list[Any]:
    """The records of one read query (`driver` is a `neo4j.Driver`; the tests import the
    driver only when they use Neo4j)."""
    return list(driver.execute_query(query, params, database_="neo4j").records)


def _duplicates(values: Iterable[str]) -> list[str]:
    return [value for value, n in Counter(values).items() if n > 1]


def check_neo4j_store(driver: Any, fingerprint_key: str) -> dict[str, int]:
    """Assert every invariant a crash must not break in the Neo4j graph; return counts.

    - document ids and chunk ids are unique;
    - every Chunk hangs from exactly one node by HAS_CHUNK, and that node is the Document its
      `doc_id` names; positions are 0..n-1 with no duplicates;
    - every chunk id is derived from (document, position, text hash) and the hash matches the text;
    - each document's `chunk_hashes` is its chunks' hashes in position order;
    - every chunk carries the `words` the full-text index reads;
    - every chunk's hash has exactly one Vector under the fingerprint, of the stated dimensions
      and unit norm, and no Vector of the fingerprint lacks its label (`neo4j_vector_label`).
    """
    doc_rows = _records(
        driver, "MATCH (d:Document) RETURN d.doc_id AS doc_id, d.chunk_hashes AS hashes"
    )
    doubled_docs = _duplicates(r["doc_id"] for r in doc_rows)
    assert not doubled_docs, f"documents stored twice: {doubled_docs}"
    documents = {r["doc_id"]: r["hashes"] for r in doc_rows}
    chunks = _records(
        driver,
        "MATCH (c:Chunk) OPTIONAL MATCH (owner)-[:HAS_CHUNK]->(c) "
        "RETURN c.chunk_id AS chunk_id, c.doc_id AS doc_id, c.position AS position, "
        "c.text AS text, c.text_sha256 AS text_hash, c.words AS words, "
        "[o IN collect(owner) | "
        "CASE WHEN o:Document THEN o.doc_id ELSE '<not a Document>' END] AS owners",
    )
    assert not _duplicates(c["chunk_id"] for c in chunks), "chunk ids stored twice"
    by_doc: dict[str, list[tuple[int, str]]] = {}
    for c in chunks:
        cid, doc_id = c["chunk_id"], c["doc_id"]
        assert c["owners"] == [doc_id], f"chunk {cid} of {doc_id} hangs from {c['owners']}"
        assert doc_id in documents, f"chunk {cid} has no document"
        _check_chunk(cid, doc_id, c["position"], c["text"], c["text_hash"])
        assert isinstance(c["words"], str), f"chunk {cid} has no words for the full-text index"
        by_doc.setdefault(doc_id, []).append((c["position"], c["text_hash"]))
    _check_positions({d: [p for p, _ in rows] for d, rows in by_doc.items()})
    for doc_id, listed in documents.items():
        _check_hash_list(doc_id, listed or [], [h for _, h in sorted(by_doc.get(doc_id, []))])
    label = neo4j_vector_label(fingerprint_key)
    vectors = _records(
        driver,
        "MATCH (v:Vector {fingerprint: $fp}) RETURN v.text_sha256 AS text_hash, "
        "v.dimensions AS dims, v.embedding AS embedding, labels(v) AS labels",
        fp=fingerprint_key,
    )
    per_hash = Counter(v["text_hash"] for v in vectors)
    hashes = {c["text_hash"] for c in chunks}
    missing = [h for h in hashes if per_hash[h] == 0]
    assert not missing, f"{len(missing)} chunk hashes without a vector under {fingerprint_key}"
    doubled = _duplicates(v["text_hash"] for v in vectors)
    assert not doubled, f"{len(doubled)} chunk hashes with several vectors under {fingerprint_key}"
    for v in vectors:
        assert label in v["labels"], f"vector of {v['text_hash']} lacks its label {label}"
        _check_vector(v["dims"], np.asarray(v["embedding"], dtype=np.float32))
    return {"documents": len(documents), "chunks": len(chunks), "vectors": len(vectors)}
